use super::*;
use crate::telemetry::parse::parse;
use crate::telemetry::state::TargetState;

/// An `api` pod whose proxy counted `n` times: 10 allowed and 3 denied
/// HTTP requests on Server `api-http`, 1 denied TCP connection on the
/// default policy `deny`.
fn text(pod: &str, n: u64) -> String {
    let labels = format!("namespace=\"shop\",deployment=\"api\",pod=\"{pod}\",direction=\"inbound\",target_addr=\"127.0.0.1:80\"");
    let srv = "srv_group=\"policy.pimesh.io\",srv_kind=\"server\",srv_name=\"api-http\",route_group=\"\",route_kind=\"default\",route_name=\"default\"";
    format!(
        "inbound_http_authz_allow_total{{{labels},tls=\"true\",client_id=\"web\",{srv},authz_group=\"policy.pimesh.io\",authz_kind=\"authorizationpolicy\",authz_name=\"api-web-only\"}} {}\n\
         inbound_http_authz_deny_total{{{labels},tls=\"true\",client_id=\"db\",{srv}}} {}\n\
         inbound_tcp_authz_deny_total{{{labels},tls=\"no_identity\",srv_group=\"\",srv_kind=\"default\",srv_name=\"deny\"}} {n}\n\
",
        n * 10,
        n * 3
    )
}

fn listed() -> TargetState {
    let mut t = TargetState::default();
    t.listed = true;
    t
}

/// Targets scraped at 1 s, 11 s and 21 s (the first a baseline).
fn targets() -> Targets {
    let mut ts = Targets::new();
    for (i, pod) in ["api-1", "api-2"].iter().enumerate() {
        let mut t = listed();
        for (n, at) in [(1, 1_000), (2, 11_000), (4, 21_000)] {
            t.record(parse(&text(pod, n)).unwrap(), at, 10_000, 100);
        }
        ts.insert(format!("127.0.0.1:{}", i + 1).parse().unwrap(), t);
    }
    // A proxy without policy series: known, no rows.
    let mut web = listed();
    web.given.insert("namespace".into(), "shop".into());
    web.given.insert("deployment".into(), "web".into());
    web.record(
        parse("request_total{direction=\"inbound\"} 1\n").unwrap(),
        1_000,
        10_000,
        100,
    );
    assert!(web.authz.is_empty() && web.authz.capacity() == 0);
    ts.insert("127.0.0.1:3".parse().unwrap(), web);
    ts
}

fn filter(ns: &str, name: &str) -> Filter {
    Filter {
        namespace: Some(ns.into()),
        name: Some(name.into()),
    }
}

#[test]
fn rows_per_server_and_authorization_with_denials_last() {
    let ts = targets();
    let (rows, matched) = authz(
        &ts,
        Resource::Deployment,
        &filter("shop", "api"),
        21_000,
        60_000,
    );
    assert_eq!(matched, 2);
    let shown: Vec<_> = rows
        .iter()
        .map(|r| {
            (
                r.protocol.as_str(),
                r.server(),
                r.authorization(),
                r.allowed,
                r.denied,
            )
        })
        .collect();
    // Two pods, each (2 - 1) + (4 - 2) = 3 counts of the deltas.
    assert_eq!(
        shown,
        [
            (
                "http",
                "api-http".into(),
                "authorizationpolicy/api-web-only".into(),
                60,
                0
            ),
            ("http", "api-http".into(), String::new(), 0, 18),
            ("tcp", "default:deny".into(), String::new(), 0, 6),
        ]
    );
    // Rates per pod over its 20 s, summed: 2 × 30 / 20 s.
    assert_eq!(rows[0].allowed_rate, Some(3.0));
    assert_eq!(rows[0].denied_rate, Some(0.0));
    assert_eq!(rows[1].denied_rate, Some(0.9));
    assert_eq!(rows[0].covered_seconds, 20.0);
    assert_eq!(rows[0].route.as_deref(), Some("default"));
    assert_eq!(rows[2].route, None);
}

#[test]
fn windows_pods_and_unknown_workloads() {
    let ts = targets();
    // The last 10 s: only the 21 s points.
    let (rows, _) = authz(
        &ts,
        Resource::Deployment,
        &filter("shop", "api"),
        21_000,
        10_000,
    );
    assert_eq!((rows[0].allowed, rows[1].denied), (40, 12));
    // One pod.
    let (rows, matched) = authz(&ts, Resource::Pod, &filter("shop", "api-2"), 21_000, 60_000);
    assert_eq!(matched, 1);
    assert_eq!(rows[0].allowed, 30);
    assert!(rows
        .iter()
        .all(|r| r.kind == Resource::Pod && r.name == "api-2"));
    // A workload without policy series: matched, no rows.
    let (rows, matched) = authz(
        &ts,
        Resource::Deployment,
        &filter("shop", "web"),
        21_000,
        60_000,
    );
    assert_eq!((rows.len(), matched), (0, 1));
    // No such workload, or another namespace: nothing matched.
    for f in [filter("shop", "nope"), filter("other", "api")] {
        assert_eq!(
            authz(&ts, Resource::Deployment, &f, 21_000, 60_000),
            (vec![], 0)
        );
    }
    // Services: none of these targets has a service label.
    assert_eq!(
        authz(&ts, Resource::Service, &Filter::default(), 21_000, 60_000).1,
        0
    );
}

#[test]
fn a_restart_counts_from_zero_and_rings_are_bounded() {
    let mut t = listed();
    t.record(parse(&text("api-1", 5)).unwrap(), 1_000, 10_000, 100);
    // Counters went down: a restart; the new values are the deltas.
    t.record(parse(&text("api-1", 1)).unwrap(), 11_000, 10_000, 100);
    let mut ts = Targets::new();
    ts.insert("127.0.0.1:1".parse().unwrap(), t);
    let (rows, _) = authz(
        &ts,
        Resource::Deployment,
        &Filter::default(),
        11_000,
        60_000,
    );
    assert_eq!(
        (rows[0].allowed, rows[1].denied, rows[2].denied),
        (10, 3, 1)
    );

    let mut many = String::new();
    for i in 0..crate::telemetry::state::MAX_AUTHZ_PER_TARGET + 5 {
        many.push_str(&format!(
            "inbound_tcp_authz_deny_total{{srv_kind=\"server\",srv_name=\"s{i}\"}} 1\n"
        ));
    }
    let mut t = TargetState::default();
    t.record(parse(&many).unwrap(), 1_000, 10_000, 100);
    t.record(
        parse(&many.replace("} 1", "} 2")).unwrap(),
        11_000,
        10_000,
        100,
    );
    assert_eq!(t.authz.len(), crate::telemetry::state::MAX_AUTHZ_PER_TARGET);
}

#[test]
fn a_servers_routes_are_rows_of_their_own() {
    let labels = "namespace=\"shop\",deployment=\"api\",pod=\"api-1\",direction=\"inbound\",target_addr=\"127.0.0.1:9990\",tls=\"true\"";
    let srv = "srv_group=\"policy.pimesh.io\",srv_kind=\"server\",srv_name=\"api-ops\"";
    let route = |name: &str| {
        format!("route_group=\"gateway.networking.k8s.io\",route_kind=\"HTTPRoute\",route_name=\"{name}\"")
    };
    let text = |n: u64| {
        format!(
            "inbound_http_authz_allow_total{{{labels},client_id=\"web\",{srv},{},authz_group=\"policy.pimesh.io\",authz_kind=\"authorizationpolicy\",authz_name=\"api-admin-web\"}} {n}\n\
             inbound_http_authz_deny_total{{{labels},client_id=\"db\",{srv},{}}} {n}\n",
            route("api-admin"),
            route("api-admin"),
        )
    };
    let mut t = listed();
    for (n, at) in [(1, 1_000), (3, 11_000)] {
        t.record(parse(&text(n)).unwrap(), at, 10_000, 100);
    }
    let mut ts = Targets::new();
    ts.insert("127.0.0.1:1".parse().unwrap(), t);
    let (rows, _) = authz(
        &ts,
        Resource::Deployment,
        &filter("shop", "api"),
        11_000,
        60_000,
    );
    let shown: Vec<_> = rows
        .iter()
        .map(|r| (r.route.as_deref(), r.authorization(), r.allowed, r.denied))
        .collect();
    assert_eq!(
        shown,
        [
            (
                Some("api-admin"),
                "authorizationpolicy/api-admin-web".to_string(),
                2,
                0
            ),
            (Some("api-admin"), String::new(), 0, 2),
        ]
    );
}
