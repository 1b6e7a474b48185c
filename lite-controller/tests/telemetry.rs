//! Telemetry end to end: a small mesh of real proxies (three workloads, one
//! hop meshed with mTLS) under a known load with a 10 % failure rate, the
//! controller scraping them every second; `pimesh stat` and `pimesh edges`
//! report what the load generator sent. Bad scrape targets (unreachable,
//! slow, huge, garbage) are stale and counted while good ones are
//! collected.

#[path = "support/mesh.rs"]
mod mesh;
mod support;

use mesh::{load, metrics_text, metrics_text_started, quantile, App, FakeProxy, Proxy};
use pimesh_test_support::free_port;
use serde_json::Value;
use std::net::SocketAddr;
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::{eventually, Controller, TempDir};

/// The `stat -o json` row of `name`.
fn row<'a>(rows: &'a Value, name: &str) -> &'a Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no row {name} in {rows:#}"))
}

fn stat(ctl: &Controller, args: &[&str]) -> Value {
    let mut all = vec!["stat"];
    all.extend_from_slice(args);
    all.extend(["-o", "json"]);
    serde_json::from_str(&ctl.cli_ok(&all)).unwrap()
}

fn within(actual: f64, expected: f64, share: f64) -> bool {
    (actual - expected).abs() <= expected * share
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn stat_and_edges_match_a_known_load() {
    let data = TempDir::new("telemetry");
    let admin = |_| -> SocketAddr { format!("127.0.0.1:{}", free_port()).parse().unwrap() };
    let (web_admin, api_admin, gen_admin) = (admin(0), admin(1), admin(2));
    let web_t = web_admin.to_string();
    let api_t = format!("{api_admin},service=api");
    let gen_t = format!("{gen_admin},identity=shop/loadgen");
    let ctl = Controller::start(
        data.path(),
        &[
            "--scrape-interval",
            "1s",
            "--scrape-target",
            &web_t,
            "--scrape-target",
            &api_t,
            "--scrape-target",
            &gen_t,
        ],
    );
    let anchors = data.path().join("anchors.pem");
    std::fs::write(&anchors, ctl.anchors_pem()).unwrap();
    let meshed = |identity: &str, labels: &str| {
        let token = data
            .path()
            .join(format!("{}.token", identity.replace('/', "_")));
        std::fs::write(&token, ctl.token(identity, "1h")).unwrap();
        env(&[
            ("PIMESH_PROXY_CONTROLLER_ADDR", &ctl.proxy.to_string()),
            ("PIMESH_PROXY_TRUST_ANCHORS", anchors.to_str().unwrap()),
            ("PIMESH_PROXY_TOKEN_FILE", token.to_str().unwrap()),
            ("PIMESH_PROXY_IDENTITY", identity),
            ("PIMESH_PROXY_WORKLOAD_LABELS", labels),
        ])
    };

    // web: 20 ms per request, every 10th a 500; reached over the mesh.
    let web_app = App::start(Duration::from_millis(20), Some(10));
    let mut web_env = meshed("shop/web", "namespace=shop,deployment=web,pod=web-1");
    web_env.extend(env(&[(
        "PIMESH_PROXY_INBOUND_TARGET",
        &web_app.addr.to_string(),
    )]));
    let web = Proxy::start(web_admin, &web_env);
    // api: plaintext clients, no failures.
    let api_app = App::start(Duration::from_millis(2), None);
    let api = Proxy::start(
        api_admin,
        &env(&[
            ("PIMESH_PROXY_INBOUND_TARGET", &api_app.addr.to_string()),
            (
                "PIMESH_PROXY_WORKLOAD_LABELS",
                "namespace=shop,deployment=api,pod=api-1",
            ),
        ]),
    );
    // loadgen: the client whose proxy carries web's traffic over mTLS.
    let mut gen_env = meshed(
        "shop/loadgen",
        "namespace=shop,deployment=loadgen,pod=loadgen-1",
    );
    gen_env.extend(env(&[(
        "PIMESH_PROXY_MESH_DESTINATIONS",
        &format!("{}=shop/web@{}", web_app.addr, web.inbound),
    )]));
    let gen = Proxy::start(gen_admin, &gen_env);

    // Every target scraped at least twice (a baseline, then deltas).
    let ready = eventually(Duration::from_secs(20), || {
        let v = stat(&ctl, &["deploy", "-n", "shop", "--window", "1m"]);
        let rows = v.as_array().unwrap();
        rows.len() == 3
            && rows
                .iter()
                .all(|r| r["meshed"] == "1/1" && r["covered_seconds"].as_f64() > Some(0.0))
    });
    assert!(ready, "targets not scraped:\n{}", ctl.log());

    // The load: 25 rps to web through the mesh, 10 rps to api, for 16 s.
    let (web_rate, api_rate, secs) = (25.0, 10.0, 16);
    let (via, origin) = (gen.outbound, web_app.addr);
    let web_load =
        std::thread::spawn(move || load(via, Some(origin), web_rate, Duration::from_secs(secs)));
    let api_in = api.inbound;
    let api_load =
        std::thread::spawn(move || load(api_in, None, api_rate, Duration::from_secs(secs)));
    // Mid-load, the last 10 s: the rates the generator keeps.
    std::thread::sleep(Duration::from_secs(13));
    let mid = stat(&ctl, &["deploy", "-n", "shop", "--window", "10s"]);
    let web_load = web_load.join().unwrap();
    let api_load = api_load.join().unwrap();
    assert_eq!(
        web_load.errors + api_load.errors,
        0,
        "load failed:\n{}",
        gen.log()
    );
    // What the generator achieved (its schedule catches up after a late
    // answer, so on a loaded machine this is steady but may be lower).
    let (web_sent_rate, api_sent_rate) = (
        web_load.done as f64 / web_load.seconds,
        api_load.done as f64 / api_load.seconds,
    );
    assert!(
        web_sent_rate > web_rate * 0.8 && api_sent_rate > api_rate * 0.8,
        "the machine is too loaded for the generator: {web_sent_rate} / {api_sent_rate} rps"
    );
    let rps = |name| row(&mid, name)["rps"].as_f64().unwrap();
    assert!(
        within(rps("web"), web_sent_rate, 0.05),
        "web rps {} vs {web_sent_rate} sent: {mid:#}",
        rps("web")
    );
    assert!(
        within(rps("api"), api_sent_rate, 0.05),
        "api rps {} vs {api_sent_rate} sent: {mid:#}",
        rps("api")
    );

    // After the load: every request counted, a tenth failed.
    let sent = web_load.done;
    let mut all = Value::Null;
    let counted = eventually(Duration::from_secs(10), || {
        all = stat(&ctl, &["deploy", "-n", "shop", "--window", "1m"]);
        row(&all, "web")["requests"].as_u64() == Some(sent)
            && row(&all, "api")["requests"].as_u64() == Some(api_load.done)
    });
    let web_row = row(&all, "web");
    assert!(
        counted,
        "requests: sent {sent} / {}, stat {all:#}",
        api_load.done
    );
    let success = web_row["success"].as_f64().unwrap();
    let sent_success = 1.0 - web_load.failed_status as f64 / sent as f64;
    assert!((0.88..=0.92).contains(&success), "{web_row:#}");
    assert!(
        within(success, sent_success, 0.05),
        "{success} vs {sent_success}"
    );
    assert_eq!(row(&all, "api")["success"].as_f64(), Some(1.0));
    // Latency: the proxy measures a part of what the client sees; both in
    // the app's 20 ms region, within a bucket (10 ms wide there).
    let client_p50 = quantile(&web_load.latencies_ms, 0.5);
    let p50 = web_row["latency_ms_p50"].as_f64().unwrap();
    let p99 = web_row["latency_ms_p99"].as_f64().unwrap();
    assert!(
        p50 >= 20.0 && (p50 - client_p50).abs() <= 10.0,
        "p50 {p50} vs client {client_p50}"
    );
    assert!(
        p99 >= p50 && p99 <= quantile(&web_load.latencies_ms, 0.99) + 30.0,
        "{web_row:#}"
    );
    assert!(row(&all, "api")["latency_ms_p50"].as_f64().unwrap() < 20.0);
    assert_eq!(web_row["meshed"], "1/1");

    // svc and pod views; a name filter.
    let svc = stat(&ctl, &["svc", "-n", "shop"]);
    assert_eq!(
        svc.as_array().unwrap().len(),
        1,
        "only api has a service: {svc:#}"
    );
    assert_eq!(row(&svc, "api")["requests"].as_u64(), Some(api_load.done));
    let pods = stat(&ctl, &["pod", "web-1", "-n", "shop"]);
    assert_eq!(row(&pods, "web-1")["requests"].as_u64(), Some(sent));
    assert_eq!(pods.as_array().unwrap().len(), 1);
    let table = ctl.cli_ok(&["stat", "deploy", "-A"]);
    assert!(
        table.starts_with("NAMESPACE  NAME     MESHED  SUCCESS  RPS"),
        "{table}"
    );

    // Edges: loadgen → web over mTLS with both identities; api's clients
    // are plaintext and unknown.
    let edges: Value =
        serde_json::from_str(&ctl.cli_ok(&["edges", "deploy", "-n", "shop", "-o", "json"]))
            .unwrap();
    let rows = edges.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{edges:#}");
    let e = &rows[0];
    assert_eq!(
        (e["src"].as_str(), e["dst"].as_str()),
        (Some("loadgen"), Some("web"))
    );
    assert_eq!(
        e["client_id"],
        "loadgen.shop.serviceaccount.identity.pimesh.cluster.local"
    );
    assert_eq!(
        e["server_id"],
        "web.shop.serviceaccount.identity.pimesh.cluster.local"
    );
    assert_eq!(e["secured"], true);
    let table = ctl.cli_ok(&["edges", "deploy", "-n", "shop"]);
    assert!(
        table.lines().nth(1).unwrap().trim_end().ends_with('✓'),
        "{table}"
    );

    // History of the last minutes, from memory until written (10 s steps
    // that have ended).
    let mut h = Value::Null;
    let mut requests = 0.0;
    let complete = eventually(Duration::from_secs(15), || {
        let (status, body) = ctl.get("/v1/history?workload=shop%2Fweb&step=10");
        assert_eq!(status, 200, "{body}");
        h = serde_json::from_str(&body).unwrap();
        requests = h["points"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["rps"].as_f64().unwrap() * 10.0)
            .sum();
        within(requests, sent as f64, 0.01)
    });
    assert!(complete, "{requests} in history vs {sent}: {h:#}");

    // The re-export for an external Prometheus.
    let exported =
        ctl.metric("pimesh_workload_requests_total{namespace=\"shop\",deployment=\"web\"}");
    assert_eq!(exported, sent as f64);
    assert!(ctl.metric("pimesh_controller_scrapes_total{result=\"success\"}") >= 6.0);

    // An unknown resource: a clear error, exit code 1.
    let out = ctl.cli(&["stat", "bogus"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("unknown resource \"bogus\""), "{err}");
    let (status, body) = ctl.get("/v1/stat?resource=bogus");
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("unknown_resource"));
    drop((web, api, gen));
}

#[test]
fn bad_targets_are_stale_and_counted_while_good_ones_are_collected() {
    let good = FakeProxy::start(|n| metrics_text("shop", "web", n * 100, None));
    let garbage = FakeProxy::start(|_| "<html><body>It works!</body></html>\n".into());
    let huge = FakeProxy::start(|_| {
        // 3 MiB of valid comments: over the 2 MiB cap.
        "# padding padding padding padding padding padding padding\n".repeat(55_000)
    });
    let slow = FakeProxy::raw(
        b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec(),
        Duration::from_secs(30),
    );
    let closed = format!("127.0.0.1:{}", free_port());
    let data = TempDir::new("telemetry-bad");
    let targets = [
        good.addr.to_string(),
        garbage.addr.to_string(),
        huge.addr.to_string(),
        slow.addr.to_string(),
        closed.clone(),
    ];
    let mut args = vec!["--scrape-interval", "1s"];
    for t in &targets {
        args.extend(["--scrape-target", t.as_str()]);
    }
    let ctl = Controller::start(data.path(), &args);
    let metric = |r: &str| {
        ctl.metric(&format!(
            "pimesh_controller_scrapes_total{{result=\"{r}\"}}"
        ))
    };
    let counted = eventually(Duration::from_secs(20), || {
        ["unreachable", "timeout", "too_large", "malformed"]
            .iter()
            .all(|r| metric(r) >= 2.0)
            && metric("success") >= 3.0
    });
    assert!(counted, "{}", ctl.get("/metrics").1);
    let (_, body) = ctl.get("/v1/targets");
    let list: Value = serde_json::from_str(&body).unwrap();
    let state = |addr: &str| {
        list.as_array()
            .unwrap()
            .iter()
            .find(|t| t["addr"] == addr)
            .unwrap_or_else(|| panic!("{addr} not in {list:#}"))
            .clone()
    };
    assert_eq!(state(&targets[0])["state"], "up", "{list:#}");
    for (t, why) in [
        (&targets[1], "malformed"),
        (&targets[2], "larger than"),
        (&targets[3], "no complete answer"),
        (&targets[4], "cannot connect"),
    ] {
        let s = state(t);
        assert_eq!(s["state"], "stale", "{s:#}");
        assert!(s["error"].as_str().unwrap().contains(why), "{s:#}");
    }
    assert_eq!(
        ctl.metric("pimesh_controller_scrape_targets{state=\"stale\"}"),
        4.0
    );
    assert_eq!(
        ctl.metric("pimesh_controller_scrape_targets{state=\"up\"}"),
        1.0
    );
    // The good target's numbers flow although the slow one never answers:
    // 100 requests per scrape, a tenth failed.
    let v = stat(&ctl, &["deploy", "-A"]);
    let web = row(&v, "web");
    assert!(web["requests"].as_u64().unwrap() >= 100, "{v:#}");
    assert_eq!(web["success"].as_f64(), Some(0.9));
    assert_eq!(web["meshed"], "1/1");
    assert_eq!(web["tcp_open_connections"].as_u64(), Some(3));
    // Stale targets show as not meshed, without numbers.
    let ghost = row(&v, &targets[4]);
    assert_eq!(ghost["meshed"], "0/1");
    assert!(ghost["rps"].is_null());
    // `pimesh dashboard` prints the URL; a bad window is bad usage.
    let url = ctl.cli_ok(&["dashboard"]);
    assert_eq!(url.trim(), format!("{}/dashboard", ctl.url()));
    let (status, page) = ctl.get("/dashboard");
    assert_eq!(status, 200);
    assert!(page.contains("/dashboard/app.js"));
    let out = ctl.cli(&["stat", "deploy", "--window", "2h"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    // The controller's memory stayed small (debug build).
    let status = std::fs::read_to_string(format!("/proc/{}/status", ctl.pid())).unwrap();
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap();
    assert!(rss_kib < 64 * 1024, "controller RSS {rss_kib} KiB");
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A proxy that served 50 requests before the controller first scraped it
/// shows them; a proxy first scraped a day after its start (the controller
/// restarted beside it) is only a baseline: its old totals are not dumped
/// into one window.
#[test]
fn a_fresh_proxys_first_scrape_counts_and_an_old_ones_is_a_baseline() {
    let client = "loadgen.shop.serviceaccount.identity.pimesh.cluster.local";
    // Started half a second before its first scrape; 50 requests then,
    // and no more after.
    let started = OnceLock::new();
    let fresh = FakeProxy::start(move |_| {
        let start = *started.get_or_init(|| unix_now() - 0.5);
        metrics_text_started("shop", "web", 50, Some(client), start)
    });
    let day_ago = unix_now() - 86_400.0;
    let old = FakeProxy::start(move |_| {
        metrics_text_started("shop", "legacy", 70, Some(client), day_ago)
    });
    let data = TempDir::new("telemetry-first");
    let (fresh_t, old_t) = (fresh.addr.to_string(), old.addr.to_string());
    let ctl = Controller::start(
        data.path(),
        &[
            "--scrape-interval",
            "2s",
            "--scrape-target",
            &fresh_t,
            "--scrape-target",
            &old_t,
        ],
    );
    // Both scraped twice: the old one's baseline and a (zero) delta.
    let scraped = eventually(Duration::from_secs(20), || {
        ctl.metric("pimesh_controller_scrapes_total{result=\"success\"}") >= 4.0
    });
    assert!(scraped, "{}", ctl.log());
    let v = stat(&ctl, &["deploy", "-n", "shop", "--window", "1m"]);
    let web = row(&v, "web");
    assert_eq!(web["requests"].as_u64(), Some(50), "{v:#}");
    assert_eq!(web["success"].as_f64(), Some(0.9), "{v:#}");
    assert!(web["rps"].as_f64() > Some(0.0), "{v:#}");
    let legacy = row(&v, "legacy");
    assert_eq!(legacy["requests"].as_u64(), Some(0), "{v:#}");
    assert_eq!(legacy["meshed"], "1/1", "{v:#}");
    // The fresh proxy's peer is an edge; the old one's first scrape shows none.
    let edges: Value =
        serde_json::from_str(&ctl.cli_ok(&["edges", "deploy", "-n", "shop", "-o", "json"]))
            .unwrap();
    let rows = edges.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{edges:#}");
    assert_eq!(rows[0]["dst"], "web", "{edges:#}");
    assert_eq!(rows[0]["client_id"], client, "{edges:#}");
    assert_eq!(rows[0]["requests"].as_u64(), Some(50), "{edges:#}");
    drop((fresh, old));
}
