//! The discovery API end to end against the real `pimesh controller`:
//! registrations with join tokens over HTTP/2 + TLS, watches over mTLS
//! (client certificates from the controller's own CA), every name form and
//! addresses, events on registration, deregistration and lease expiry,
//! resuming from a revision, and refusals (counted, nothing stored).

mod support;

use pimesh_api::discovery::{EventType, Registration, WatchEvent};
use pimesh_api::ApiError;
use std::time::Duration;
use support::discovery::*;
use support::*;

fn api_error(body: &[u8]) -> ApiError {
    serde_json::from_slice(body).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(body)))
}

/// `GET /v1/services`, without the lease deadlines: they are wall-clock
/// renderings of monotonic deadlines and may move by a second between reads.
fn services_json(ctl: &Controller) -> serde_json::Value {
    let (status, body) = ctl.get("/v1/services");
    assert_eq!(status, 200, "{body}");
    let mut v: serde_json::Value = serde_json::from_str(&body).unwrap();
    for svc in v.as_array_mut().into_iter().flatten() {
        for ep in svc["endpoints"].as_array_mut().into_iter().flatten() {
            if let Some(ep) = ep.as_object_mut() {
                ep.remove("lease_expires_unix");
            }
        }
    }
    v
}

fn endpoints_of(ev: &WatchEvent) -> Vec<String> {
    ev.object
        .as_ref()
        .expect("an object")
        .endpoints
        .iter()
        .map(|e| e.addr.to_string())
        .collect()
}

#[test]
fn registration_is_authenticated_by_the_join_token() {
    let dir = TempDir::new("disc-reg");
    let ctl = Controller::start(&dir.path().join("data"), &["--lease-ttl", "45s"]);
    let anchors = ctl.anchors_pem();
    let token = ctl.token("shop/web", "1h");

    let mut reg = registration(&token, "web", 8080, "127.0.0.1:18080");
    reg.admin_addr = Some("127.0.0.1:14191".parse().unwrap());
    reg.labels = [("pod".to_string(), "web-1".to_string())].into();
    let (status, body) = ctl.put_endpoint(&anchors, "PUT", serde_json::to_vec(&reg).unwrap());
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let lease: pimesh_api::discovery::Lease = serde_json::from_slice(&body).unwrap();
    assert_eq!(lease.ttl_secs, 45);
    assert!(lease.revision >= 1);
    // The token's identity is the endpoint's, its namespace the service's.
    let (status, body) = ctl.get("/v1/services/shop/web");
    assert_eq!(status, 200, "{body}");
    let svc: serde_json::Value = serde_json::from_str(&body).unwrap();
    let ep = &svc["endpoints"][0];
    assert_eq!(ep["identity"], "shop/web");
    assert_eq!(ep["source"], "registered");
    assert_eq!(ep["admin_addr"], "127.0.0.1:14191");
    assert_eq!(ep["labels"]["namespace"], "shop");
    assert_eq!(ep["labels"]["pod"], "web-1");
    assert!(ep["lease_expires_unix"].as_u64().is_some());
    // The telemetry list carries it too.
    let (_, body) = ctl.get("/v1/endpoints");
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(list[0]["endpoint"]["admin_addr"], "127.0.0.1:14191");
    assert_eq!(list[0]["service"], "web");

    let before = services_json(&ctl);
    let revision = svc["revision"].as_u64().unwrap();
    let refused = |reg: &Registration| {
        let (status, body) = ctl.put_endpoint(&anchors, "PUT", serde_json::to_vec(reg).unwrap());
        (status, api_error(&body).error)
    };
    // Bad, revoked, expired tokens.
    let mut bad = reg.clone();
    bad.token = format!("{}0", &token[..token.len() - 1]);
    if bad.token == token {
        bad.token = format!("{}1", &token[..token.len() - 1]);
    }
    assert_eq!(refused(&bad), (401, "invalid_token".into()));
    let revoked = ctl.token("shop/web", "1h");
    let id = &revoked[4..20];
    ctl.cli_ok(&["token", "revoke", id]);
    let mut r = reg.clone();
    r.token = revoked;
    assert_eq!(refused(&r), (401, "token_revoked".into()));
    let short = ctl.token("shop/web", "1s");
    std::thread::sleep(Duration::from_millis(2100));
    r.token = short;
    assert_eq!(refused(&r), (401, "token_expired".into()));
    // A token made for one service registers only that one.
    let only_db = ctl.service_token("shop/db", "db");
    r.token = only_db.clone();
    assert_eq!(refused(&r), (403, "service_not_allowed".into()));
    ctl.register(
        &anchors,
        &registration(&only_db, "db", 5432, "127.0.0.1:15432"),
    );

    // Malformed bodies: 400, nothing stored.
    let after_db = services_json(&ctl);
    for body in [
        b"not json".to_vec(),
        br#"{"token":"x"}"#.to_vec(),
        serde_json::to_vec(&registration(&token, "Web_1", 80, "127.0.0.1:1")).unwrap(),
        serde_json::to_vec(&registration(&token, "web", 0, "127.0.0.1:1")).unwrap(),
        serde_json::to_vec(&registration(&token, "web", 80, "0.0.0.0:80")).unwrap(),
    ] {
        let (status, rsp) = ctl.put_endpoint(&anchors, "PUT", body.clone());
        assert_eq!(status, 400, "{}", String::from_utf8_lossy(&body));
        assert_eq!(api_error(&rsp).error, "bad_request");
    }
    assert_eq!(services_json(&ctl), after_db, "nothing stored");
    assert_ne!(before, after_db);
    assert_eq!(after_db[0]["name"], "db");
    assert!(after_db[0]["revision"].as_u64().unwrap() > revision);

    let m = |reason: &str| {
        ctl.metric(&format!(
            "pimesh_controller_registration_refused_total{{reason=\"{reason}\"}}"
        ))
    };
    assert_eq!(m("invalid_token"), 1.0);
    assert_eq!(m("token_revoked"), 1.0);
    assert_eq!(m("token_expired"), 1.0);
    assert_eq!(m("service_not_allowed"), 1.0);
    assert_eq!(m("bad_request"), 5.0);
    assert_eq!(ctl.metric("pimesh_controller_registrations_total"), 2.0);
    assert_eq!(
        ctl.metric("pimesh_controller_endpoints{source=\"registered\"}"),
        2.0
    );

    // DELETE deregisters (with the same body).
    let (status, _) = ctl.put_endpoint(&anchors, "DELETE", serde_json::to_vec(&reg).unwrap());
    assert_eq!(status, 200);
    let (_, body) = ctl.get("/v1/services/shop/web");
    let svc: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(svc["endpoints"].as_array().unwrap().len(), 0);
    assert_eq!(ctl.metric("pimesh_controller_deregistrations_total"), 1.0);
}

#[test]
fn watch_by_every_name_form_and_by_address() {
    let dir = TempDir::new("disc-names");
    let ctl = Controller::start(&dir.path().join("data"), &[]);
    let anchors = ctl.anchors_pem();
    let token = ctl.token("shop/web", "1h");
    let mut reg = registration(&token, "web", 8080, "127.0.0.1:18080");
    reg.proxy_addr = Some("127.0.0.2:4143".parse().unwrap());
    reg.labels = [
        ("deployment".to_string(), "web".to_string()),
        ("pod".to_string(), "web-1".to_string()),
    ]
    .into();
    let rev = ctl.register(&anchors, &reg);
    let client = ctl.client_cert(&anchors, "shop/client");
    let elsewhere = ctl.client_cert(&anchors, "other/client");

    for q in [
        "name=web:8080",
        "name=web.shop:8080",
        "name=web.shop.svc:8080",
        "name=web.shop.svc.cluster.local:8080",
        "name=web.shop.svc.cluster.local.%3A8080",
        "addr=127.0.0.1:18080",
        "addr=127.0.0.2:4143",
    ] {
        let w = ctl.watch(&anchors, Some(&client), q).expect(q);
        assert_eq!(w.content_type, "application/x-ndjson");
        let ev = w.next();
        assert_eq!(ev.kind, EventType::Added, "{q}");
        assert_eq!(ev.revision, rev, "{q}");
        let res = ev.object.unwrap();
        assert!(res.exists);
        assert_eq!(res.service.as_deref(), Some("web.shop.svc.cluster.local"));
        assert_eq!(res.port, 8080, "{q}");
        let ep = &res.endpoints[0];
        assert_eq!(ep.addr.to_string(), "127.0.0.1:18080");
        assert_eq!(ep.connect_addr().to_string(), "127.0.0.2:4143");
        assert_eq!(ep.identity.as_ref().unwrap().to_string(), "shop/web");
        for (k, v) in [
            ("namespace", "shop"),
            ("service", "web"),
            ("deployment", "web"),
            ("pod", "web-1"),
        ] {
            assert_eq!(ep.labels[k], v, "{q}: {k}");
        }
    }
    // A bare name is in the caller's namespace; a missing port is 80.
    for (who, q) in [
        (&elsewhere, "name=web:8080"),
        (&client, "name=web"),
        (&client, "addr=127.0.0.1:18081"),
    ] {
        let ev = ctl.watch(&anchors, Some(who), q).unwrap().next();
        assert_eq!(ev.kind, EventType::Deleted, "{q}");
        assert!(!ev.object.unwrap().exists, "{q}");
    }
    let ev = ctl
        .watch(&anchors, Some(&elsewhere), "name=web.shop:8080")
        .unwrap()
        .next();
    assert_eq!(ev.kind, EventType::Added);
    // Bad queries: 400.
    for q in [
        "name=web.example.com",
        "addr=nope",
        "",
        "name=web&revision=x",
    ] {
        let (status, body) = ctl.watch(&anchors, Some(&client), q).err().expect(q);
        assert_eq!(status, 400, "{q}: {body}");
    }
    assert_eq!(
        ctl.metric("pimesh_controller_watch_refused_total{reason=\"bad_request\"}"),
        4.0
    );
}

#[test]
fn watch_needs_a_mesh_client_certificate_and_certify_does_not() {
    let dir = TempDir::new("disc-mtls");
    let ctl = Controller::start(&dir.path().join("data"), &[]);
    let anchors = ctl.anchors_pem();
    let (status, body) = ctl.watch(&anchors, None, "name=web").err().unwrap();
    assert_eq!(status, 401);
    assert_eq!(api_error(body.as_bytes()).error, "unauthenticated");
    assert_eq!(
        ctl.metric("pimesh_controller_watch_refused_total{reason=\"unauthenticated\"}"),
        1.0
    );
    // Certify and registration still work without a client certificate.
    let token = ctl.token("shop/web", "1h");
    ctl.certify(&anchors, "shop/web", &token)
        .expect("certified");
    ctl.register(
        &anchors,
        &registration(&token, "web", 80, "127.0.0.1:18080"),
    );
    // A certificate from another CA is refused in the handshake.
    let key = rcgen::KeyPair::generate().unwrap();
    let foreign = rcgen::CertificateParams::new(vec!["client.example".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let stranger = ClientCert {
        chain: vec![foreign.der().clone()],
        key_pkcs8: key.serialize_der(),
    };
    let err = ctl
        .watch(&anchors, Some(&stranger), "name=web")
        .err()
        .unwrap();
    assert_ne!(err.0, 200, "{err:?}");
    // The mesh's own certificate works.
    let client = ctl.client_cert(&anchors, "shop/client");
    let ev = ctl
        .watch(&anchors, Some(&client), "name=web")
        .unwrap()
        .next();
    assert_eq!(ev.kind, EventType::Added);
}

#[test]
fn events_on_registration_deregistration_and_lease_expiry() {
    let dir = TempDir::new("disc-events");
    let ctl = Controller::start(&dir.path().join("data"), &["--lease-ttl", "3s"]);
    let anchors = ctl.anchors_pem();
    let client = ctl.client_cert(&anchors, "shop/client");
    let w = ctl.watch(&anchors, Some(&client), "name=web").unwrap();
    // Unknown: DELETED exists:false, and the stream stays open.
    let ev = w.next();
    assert_eq!(ev.kind, EventType::Deleted);
    assert!(!ev.object.unwrap().exists);

    let token = ctl.token("shop/web", "1h");
    let a = registration(&token, "web", 80, "127.0.0.1:18001");
    let b = registration(&token, "web", 80, "127.0.0.1:18002");
    ctl.register(&anchors, &a);
    let ev = w.next();
    assert_eq!(ev.kind, EventType::Added);
    assert_eq!(endpoints_of(&ev), ["127.0.0.1:18001"]);
    let rev_b = ctl.register(&anchors, &b);
    let ev = w.next();
    assert_eq!(ev.kind, EventType::Modified);
    assert_eq!(ev.revision, rev_b);
    assert_eq!(endpoints_of(&ev), ["127.0.0.1:18001", "127.0.0.1:18002"]);
    let (status, _) = ctl.put_endpoint(&anchors, "DELETE", serde_json::to_vec(&a).unwrap());
    assert_eq!(status, 200);
    let ev = w.next();
    assert_eq!(ev.kind, EventType::Modified);
    assert_eq!(endpoints_of(&ev), ["127.0.0.1:18002"]);
    // b is not renewed: its lease runs out after 3 s.
    let ev = w.next();
    assert_eq!(ev.kind, EventType::Modified);
    assert!(endpoints_of(&ev).is_empty());
    assert!(ev.object.unwrap().exists, "the service stays");
    // The counter is bumped right after the watchers are told, not with
    // them: a scrape may see the event first.
    assert!(eventually(Duration::from_secs(5), || ctl
        .metric("pimesh_controller_lease_expirations_total")
        == 1.0));
    // Renewals keep an endpoint.
    ctl.register(&anchors, &a);
    assert_eq!(w.next().kind, EventType::Modified);
    for _ in 0..8 {
        std::thread::sleep(Duration::from_millis(500));
        ctl.register(&anchors, &a);
    }
    assert_eq!(ctl.metric("pimesh_controller_lease_expirations_total"), 1.0);
    // Removing the service: DELETED.
    ctl.cli_ok(&["service", "rm", "web", "-n", "shop"]);
    let ev = w.next();
    assert_eq!(ev.kind, EventType::Deleted, "{ev:?}");
    assert_eq!(ctl.metric("pimesh_controller_watches"), 1.0);
    drop(w);
    assert!(eventually(Duration::from_secs(15), || ctl
        .metric("pimesh_controller_watches")
        == 0.0));
}

#[test]
fn resume_from_a_revision() {
    let dir = TempDir::new("disc-resume");
    let ctl = Controller::start(&dir.path().join("data"), &[]);
    let anchors = ctl.anchors_pem();
    let client = ctl.client_cert(&anchors, "shop/client");
    let token = ctl.token("shop/web", "1h");
    ctl.register(
        &anchors,
        &registration(&token, "web", 80, "127.0.0.1:18001"),
    );
    let seen = {
        let w = ctl.watch(&anchors, Some(&client), "name=web").unwrap();
        w.next().revision
    };
    // Another service changes: nothing to catch up on for web.
    let db = ctl.token("shop/db", "1h");
    ctl.register(&anchors, &registration(&db, "db", 5432, "127.0.0.1:15432"));
    let w = ctl
        .watch(
            &anchors,
            Some(&client),
            &format!("name=web&revision={seen}"),
        )
        .unwrap();
    let ev = w.next_any();
    assert_eq!(ev.kind, EventType::Bookmark);
    assert_eq!(ev.object, None);
    assert!(ev.revision > seen);
    drop(w);
    // Changed while disconnected: MODIFIED with the new state.
    ctl.cli_ok(&["service", "set", "web", "-n", "shop", "--timeout", "2s"]);
    let w = ctl
        .watch(
            &anchors,
            Some(&client),
            &format!("name=web&revision={seen}"),
        )
        .unwrap();
    let ev = w.next_any();
    assert_eq!(ev.kind, EventType::Modified);
    assert_eq!(ev.object.unwrap().policy.timeout_ms, Some(2000));
    // A quiet stream gets BOOKMARKs (at least every 15 s).
    let ev = w.next_within(Duration::from_secs(16)).expect("a bookmark");
    assert_eq!(ev.kind, EventType::Bookmark);
    // On SIGTERM open streams end cleanly and the controller exits 0.
    let mut ctl = ctl;
    assert!(ctl.terminate().success());
    assert!(w.ended_within(Duration::from_secs(5)));
}

#[test]
fn a_slow_watcher_gets_the_latest_state_not_every_state() {
    let dir = TempDir::new("disc-slow");
    let ctl = Controller::start(&dir.path().join("data"), &[]);
    let anchors = ctl.anchors_pem();
    let client = ctl.client_cert(&anchors, "shop/client");
    // Big events (~40 KB): a 64 KiB stream window holds one or two.
    let addrs: Vec<String> = (0..100)
        .map(|i| format!("\"127.0.1.1:{}\"", 20000 + i))
        .collect();
    let body = format!(
        r#"{{"port":80,"endpoints":[{}],"labels":{{"pad":"{}"}}}}"#,
        addrs.join(","),
        "x".repeat(250)
    );
    let (status, rsp) = http1(ctl.admin, "POST", "/v1/services/shop/big/endpoints", &body);
    assert_eq!(status, 200, "{rsp}");
    let mut w = Watch::open_paused(ctl.proxy, &anchors, Some(&client), "name=big").unwrap();
    const CHANGES: u32 = 60;
    for i in 1..=CHANGES {
        let body = format!(r#"{{"policy":{{"retry_limit":{i}}}}}"#);
        let (status, rsp) = http1(ctl.admin, "PUT", "/v1/services/shop/big/policy", &body);
        assert_eq!(status, 200, "{rsp}");
    }
    w.resume();
    let first = w.next();
    assert_eq!(first.kind, EventType::Added);
    let mut events = 1;
    let mut last = first.object.unwrap().policy.retry_limit;
    while last != Some(CHANGES) {
        let ev = w.next();
        assert_eq!(ev.kind, EventType::Modified);
        let res = ev.object.unwrap();
        assert_eq!(res.endpoints.len(), 100);
        last = res.policy.retry_limit;
        events += 1;
    }
    // Intermediate states were skipped, not queued.
    assert!(events < 10, "{events} events for {CHANGES} changes");
}

#[test]
fn concurrent_watches_are_capped() {
    let dir = TempDir::new("disc-cap");
    let ctl = Controller::start(&dir.path().join("data"), &["--max-watches", "2"]);
    let anchors = ctl.anchors_pem();
    let client = ctl.client_cert(&anchors, "shop/client");
    let a = ctl.watch(&anchors, Some(&client), "name=a").unwrap();
    let b = ctl.watch(&anchors, Some(&client), "name=b").unwrap();
    assert_eq!(a.next().kind, EventType::Deleted);
    assert_eq!(b.next().kind, EventType::Deleted);
    let (status, body) = ctl.watch(&anchors, Some(&client), "name=c").err().unwrap();
    assert_eq!(status, 503);
    assert_eq!(api_error(body.as_bytes()).error, "too_many_watches");
    assert_eq!(
        ctl.metric("pimesh_controller_watch_refused_total{reason=\"too_many_watches\"}"),
        1.0
    );
    // A closed watch frees its slot.
    drop(a);
    assert!(eventually(Duration::from_secs(15), || {
        ctl.metric("pimesh_controller_watches") == 1.0
    }));
    let c = ctl.watch(&anchors, Some(&client), "name=c").unwrap();
    assert_eq!(c.next().kind, EventType::Deleted);
}

/// `addr (via proxy_addr)` of each endpoint of a watch event.
fn endpoints_via(ev: &WatchEvent) -> Vec<String> {
    ev.object
        .as_ref()
        .expect("an object")
        .endpoints
        .iter()
        .map(|e| {
            format!(
                "{} via {}",
                e.addr,
                e.proxy_addr.map_or("-".into(), |p| p.to_string())
            )
        })
        .collect()
}

/// Three replicas on one host register the same `addr`, each behind its own
/// proxy (inbound port): three endpoints, in the service and in a watch.
/// A renewal changes nothing; a deregistration removes only its own; the
/// same endpoint registered by another identity is refused (409, naming
/// the holder), not silently taken over.
#[test]
fn replicas_sharing_an_address_keep_their_own_endpoints() {
    let dir = TempDir::new("disc-replicas");
    let ctl = Controller::start(&dir.path().join("data"), &[]);
    let anchors = ctl.anchors_pem();
    let client = ctl.client_cert(&anchors, "shop/client");
    let w = ctl.watch(&anchors, Some(&client), "name=web").unwrap();
    assert_eq!(w.next().kind, EventType::Deleted);

    let token = ctl.token("shop/web", "1h");
    let replica = |port: u16| {
        let mut r = registration(&token, "web", 80, "127.0.0.1:18080");
        r.proxy_addr = Some(format!("127.0.0.1:{port}").parse().unwrap());
        r
    };
    let (r1, r2, r3) = (replica(14143), replica(14144), replica(14145));
    let via = |ports: &[u16]| -> Vec<String> {
        ports
            .iter()
            .map(|p| format!("127.0.0.1:18080 via 127.0.0.1:{p}"))
            .collect()
    };
    ctl.register(&anchors, &r1);
    let ev = w.next();
    assert_eq!(ev.kind, EventType::Added);
    assert_eq!(endpoints_via(&ev), via(&[14143]));
    ctl.register(&anchors, &r2);
    assert_eq!(endpoints_via(&w.next()), via(&[14143, 14144]));
    let rev = ctl.register(&anchors, &r3);
    let ev = w.next();
    assert_eq!((ev.kind, ev.revision), (EventType::Modified, rev));
    assert_eq!(endpoints_via(&ev), via(&[14143, 14144, 14145]));
    let service = |ctl: &Controller| {
        let (status, body) = ctl.get("/v1/services/shop/web");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["endpoints"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| {
                format!(
                    "{} via {}",
                    e["addr"].as_str().unwrap(),
                    e["proxy_addr"].as_str().unwrap()
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(service(&ctl), via(&[14143, 14144, 14145]));

    // Renewals: the same revision, no event.
    assert_eq!(ctl.register(&anchors, &r2), rev);
    assert_eq!(ctl.register(&anchors, &r1), rev);
    assert!(w.next_within(Duration::from_millis(1500)).is_none());

    // Another identity's proxy claiming r1's endpoint: refused, naming the holder.
    let other = ctl.token("shop/impostor", "1h");
    let mut taken = replica(14143);
    taken.token = other;
    let (status, body) = ctl.put_endpoint(&anchors, "PUT", serde_json::to_vec(&taken).unwrap());
    assert_eq!(status, 409, "{}", String::from_utf8_lossy(&body));
    let e = api_error(&body);
    assert_eq!(e.error, "endpoint_conflict");
    assert!(
        e.message.contains("127.0.0.1:18080") && e.message.contains("registered by shop/web"),
        "{e:?}"
    );
    assert_eq!(
        ctl.metric("pimesh_controller_registration_refused_total{reason=\"endpoint_conflict\"}"),
        1.0
    );
    assert_eq!(service(&ctl), via(&[14143, 14144, 14145]));

    // Deregistering r2 removes only r2.
    let (status, _) = ctl.put_endpoint(&anchors, "DELETE", serde_json::to_vec(&r2).unwrap());
    assert_eq!(status, 200);
    let ev = w.next();
    assert_eq!(ev.kind, EventType::Modified);
    assert_eq!(endpoints_via(&ev), via(&[14143, 14145]));
    assert_eq!(service(&ctl), via(&[14143, 14145]));
    // `pimesh service ls`: NAMESPACE NAME PORTS ENDPOINTS REVISION.
    let table = ctl.cli_ok(&["service", "ls", "-n", "shop"]);
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.split_whitespace().nth(1) == Some("web"))
        .unwrap_or_else(|| panic!("{table}"))
        .split_whitespace()
        .collect();
    assert_eq!(row[3], "2", "{table}");
}
