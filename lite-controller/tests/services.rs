//! `pimesh service` end to end against the real controller: add / ls / get
//! / set / rm round trips seen by a watch, bad values refused with exit 64
//! (CLI) or 400 (API), and the registry across a SIGKILL restart: services,
//! endpoints, policies and revision kept, leases given a fresh TTL.

mod support;

use pimesh_api::discovery::EventType;
use std::time::Duration;
use support::discovery::*;
use support::*;

fn json(out: &str) -> serde_json::Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("{e}: {out}"))
}

#[test]
fn cli_round_trip_seen_by_a_watch() {
    let dir = TempDir::new("svc-cli");
    let ctl = Controller::start(&dir.path().join("data"), &[]);
    let anchors = ctl.anchors_pem();
    let client = ctl.client_cert(&anchors, "shop/client");
    let w = ctl.watch(&anchors, Some(&client), "name=pg:5432").unwrap();
    assert_eq!(w.next().kind, EventType::Deleted);

    let out = ctl.cli_ok(&[
        "service",
        "add",
        "pg",
        "-n",
        "shop",
        "--port",
        "5432",
        "--endpoint",
        "127.0.0.1:15432",
        "--endpoint",
        "[::1]:15432",
        "--identity",
        "shop/pg",
        "--label",
        "deployment=pg",
        "--protocol",
        "opaque",
    ]);
    assert!(
        out.contains("pg.shop.svc.cluster.local: 2 endpoint(s)"),
        "{out}"
    );
    let ev = w.next();
    assert_eq!(ev.kind, EventType::Added);
    let res = ev.object.unwrap();
    assert_eq!(res.endpoints.len(), 2);
    let ep = &res.endpoints[0];
    assert_eq!(ep.identity.as_ref().unwrap().to_string(), "shop/pg");
    assert_eq!(ep.labels["deployment"], "pg");
    assert_eq!(ep.labels["service"], "pg");
    assert_eq!(ep.protocol, pimesh_api::discovery::ProtocolHint::Opaque);

    let table = ctl.cli_ok(&["service", "ls"]);
    let mut lines = table.lines();
    assert!(lines.next().unwrap().starts_with("NAMESPACE  NAME  PORTS"));
    let row: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(row[..4], ["shop", "pg", "5432", "2"], "{table}");
    assert_eq!(
        ctl.cli_ok(&["service", "ls", "-n", "other"])
            .lines()
            .count(),
        1
    );
    let list = json(&ctl.cli_ok(&["service", "ls", "-o", "json"]));
    assert_eq!(list[0]["fqdn"], "pg.shop.svc.cluster.local");

    ctl.cli_ok(&[
        "service",
        "set",
        "pg",
        "-n",
        "shop",
        "--timeout",
        "2s",
        "--per-try-timeout",
        "500ms",
        "--retries",
        "3",
        "--retry-http",
        "5xx,429",
        "--retry-grpc",
        "unavailable,deadline-exceeded",
        "--retry-non-idempotent",
        "--retry-budget-ratio",
        "0.25",
        "--failure-accrual",
        "5",
        "--failure-accrual-backoff",
        "1s..60s",
    ]);
    let ev = w.next();
    assert_eq!(ev.kind, EventType::Modified);
    let p = ev.object.unwrap().policy;
    assert_eq!(p.timeout_ms, Some(2000));
    assert_eq!(p.per_try_timeout_ms, Some(500));
    assert_eq!(p.retry_limit, Some(3));
    assert_eq!(p.retry_http, Some(vec!["5xx".into(), "429".into()]));
    assert_eq!(
        p.retry_grpc,
        Some(vec!["unavailable".into(), "deadline-exceeded".into()])
    );
    assert_eq!(p.retry_non_idempotent, Some(true));
    assert_eq!(p.retry_budget_ratio, Some(0.25));
    assert_eq!(p.failure_accrual_consecutive, Some(5));
    assert_eq!(
        (
            p.failure_accrual_min_backoff_ms,
            p.failure_accrual_max_backoff_ms
        ),
        (Some(1000), Some(60000))
    );
    // Set merges; the same values again send nothing.
    ctl.cli_ok(&["service", "set", "pg", "-n", "shop", "--retries", "1"]);
    let p = w.next().object.unwrap().policy;
    assert_eq!((p.retry_limit, p.timeout_ms), (Some(1), Some(2000)));
    ctl.cli_ok(&["service", "set", "pg", "-n", "shop", "--retries", "1"]);

    let get = ctl.cli_ok(&["service", "get", "pg", "-n", "shop"]);
    assert!(get.contains("retry_limit=1"), "{get}");
    assert!(get.contains("[::1]:15432"), "{get}");
    assert!(get.contains("operator"), "{get}");
    assert_eq!(ctl.cli_ok(&["service", "ls", "pg", "-n", "shop"]), get);

    ctl.cli_ok(&[
        "service",
        "rm",
        "pg",
        "-n",
        "shop",
        "--endpoint",
        "[::1]:15432",
    ]);
    let ev = w.next();
    assert_eq!(ev.kind, EventType::Modified, "{ev:?}");
    assert_eq!(ev.object.unwrap().endpoints.len(), 1);
    ctl.cli_ok(&["service", "set", "pg", "-n", "shop", "--clear"]);
    assert_eq!(w.next().object.unwrap().policy, Default::default());
    ctl.cli_ok(&["service", "rm", "pg", "-n", "shop"]);
    assert_eq!(w.next().kind, EventType::Deleted);
    let out = ctl.cli(&["service", "get", "pg", "-n", "shop"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not_found"));
}

#[test]
fn bad_values_exit_64_or_400_and_store_nothing() {
    let dir = TempDir::new("svc-bad");
    let ctl = Controller::start(&dir.path().join("data"), &[]);
    ctl.cli_ok(&["service", "add", "web", "--port", "80"]);
    let before = ctl.get("/v1/services").1;
    for (args, flag) in [
        (&["set", "web", "--timeout", "2x"][..], "--timeout"),
        (&["set", "web", "--timeout", "0s"], "--timeout"),
        (
            &["set", "web", "--per-try-timeout", "soon"],
            "--per-try-timeout",
        ),
        (
            &["set", "web", "--retry-budget-ratio", "1.5"],
            "--retry-budget-ratio",
        ),
        (
            &["set", "web", "--retry-budget-ratio", "NaN"],
            "--retry-budget-ratio",
        ),
        (&["set", "web", "--retry-http", "5xx,600"], "--retry-http"),
        (&["set", "web", "--retry-grpc", "sometimes"], "--retry-grpc"),
        (
            &["set", "web", "--failure-accrual", "0"],
            "--failure-accrual",
        ),
        (
            &["set", "web", "--failure-accrual-backoff", "60s..1s"],
            "--failure-accrual-backoff",
        ),
        (
            &["set", "web", "--failure-accrual-backoff", "1s"],
            "--failure-accrual-backoff",
        ),
        (&["set", "web", "--retries=-1"], "--retries"),
        (&["set", "web"], "service set"),
        (&["set", "Web", "--retries", "1"], "NAME"),
        (
            &["add", "web", "--port", "80", "--endpoint", "nope"],
            "--endpoint",
        ),
        (
            &["add", "web", "--port", "80", "--endpoint", "0.0.0.0:80"],
            "--endpoint",
        ),
        (&["add", "web", "--port", "0"], "--port"),
        (
            &["add", "web", "--port", "80", "--label", "novalue"],
            "--label",
        ),
        (
            &["add", "web", "--port", "80", "--identity", "nobody"],
            "--identity",
        ),
        (
            &["add", "web", "-n", "Bad_NS", "--port", "80"],
            "--namespace",
        ),
        (&["rm", "web", "--endpoint", "10.0.0.1"], "--endpoint"),
        (&["ls", "-o", "yaml"], "--output"),
    ] {
        let mut all = vec!["service"];
        all.extend_from_slice(args);
        let out = ctl.cli(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(64), "{all:?}: {err}");
        assert!(err.contains(flag), "{all:?} should name {flag}: {err}");
    }
    // The API refuses the same values with 400.
    for (method, path, body) in [
        (
            "PUT",
            "/v1/services/default/web/policy",
            r#"{"policy":{"retry_budget_ratio":2.0}}"#,
        ),
        (
            "PUT",
            "/v1/services/default/web/policy",
            r#"{"policy":{"timeout_ms":"2s"}}"#,
        ),
        ("PUT", "/v1/services/default/web/policy", r#"{"nope":1}"#),
        (
            "POST",
            "/v1/services/default/web/endpoints",
            r#"{"port":80,"endpoints":["0.0.0.0:1"]}"#,
        ),
        (
            "POST",
            "/v1/services/default/web/endpoints",
            r#"{"port":0}"#,
        ),
        ("POST", "/v1/services/Bad/web/endpoints", r#"{"port":80}"#),
    ] {
        let (status, rsp) = http1(ctl.admin, method, path, body);
        assert_eq!(status, 400, "{method} {path} {body}: {rsp}");
    }
    assert_eq!(ctl.get("/v1/services").1, before, "nothing stored");
    // The controller's own flag.
    let other = TempDir::new("svc-bad-flag");
    let err = Controller::spawn(
        &other.path().join("data"),
        vec!["--lease-ttl".into(), "0s".into()],
    )
    .err()
    .expect("refused");
    assert_eq!(err.0.code(), Some(64));
    assert!(err.1.contains("--lease-ttl"), "{}", err.1);
}

#[test]
fn the_registry_survives_a_restart_and_leases_get_a_fresh_ttl() {
    let dir = TempDir::new("svc-restart");
    let mut ctl = Controller::start(&dir.path().join("data"), &["--lease-ttl", "5s"]);
    let anchors = ctl.anchors_pem();
    let token = ctl.token("shop/web", "1h");
    ctl.register(
        &anchors,
        &registration(&token, "web", 80, "127.0.0.1:18001"),
    );
    ctl.cli_ok(&[
        "service",
        "add",
        "pg",
        "-n",
        "shop",
        "--port",
        "5432",
        "--endpoint",
        "127.0.0.1:15432",
    ]);
    ctl.cli_ok(&["service", "set", "web", "-n", "shop", "--retries", "2"]);
    ctl.cli_ok(&["service", "add", "gone", "--port", "80"]);
    ctl.cli_ok(&["service", "rm", "gone"]);
    let before = json(&ctl.get("/v1/services").1);
    let revision = ctl.metric("pimesh_controller_registry_revision");
    assert_eq!(revision, 5.0);
    let client = ctl.client_cert(&anchors, "shop/client");
    let seen = ctl
        .watch(&anchors, Some(&client), "name=web")
        .unwrap()
        .next()
        .revision;

    // Down for longer than the lease, killed without a chance to flush.
    ctl.kill();
    std::thread::sleep(Duration::from_secs(6));
    let ctl = ctl.restart();
    let anchors = ctl.anchors_pem();
    let after = json(&ctl.get("/v1/services").1);
    let strip = |v: &serde_json::Value| {
        let mut v = v.clone();
        for s in v.as_array_mut().unwrap() {
            for e in s["endpoints"].as_array_mut().unwrap() {
                e.as_object_mut().unwrap().remove("lease_expires_unix");
            }
        }
        v
    };
    assert_eq!(strip(&after), strip(&before));
    assert_eq!(after[1]["name"], "web");
    assert_eq!(after[1]["endpoints"].as_array().unwrap().len(), 1, "grace");
    assert_eq!(after[1]["policy"]["retry_limit"], 2);
    assert_eq!(ctl.metric("pimesh_controller_registry_revision"), revision);
    // A proxy resuming from before the restart has nothing to catch up on.
    let w = ctl
        .watch(
            &anchors,
            Some(&client),
            &format!("name=web&revision={seen}"),
        )
        .unwrap();
    assert_eq!(w.next_any().kind, EventType::Bookmark);
    // Not renewed: gone after the fresh TTL; the revision moves on.
    let ev = w.next();
    assert_eq!(ev.kind, EventType::Modified);
    assert!(ev.object.unwrap().endpoints.is_empty());
    assert!(ev.revision > seen);
    assert_eq!(
        ctl.metric("pimesh_controller_registry_revision"),
        revision + 1.0
    );
    // Operator endpoints have no lease.
    let (_, body) = ctl.get("/v1/services/shop/pg");
    assert_eq!(json(&body)["endpoints"].as_array().unwrap().len(), 1);
}
