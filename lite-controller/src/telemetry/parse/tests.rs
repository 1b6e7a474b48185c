use super::*;

const INBOUND: &str = include_str!("inbound.txt");
const OUTBOUND: &str = include_str!("outbound.txt");

fn key(metric: Metric, inbound: bool, peer: &str) -> Key {
    Key {
        metric,
        inbound,
        tls: true,
        peer_id: Some(peer.to_string()),
        dst: None,
    }
}

const CLIENT: &str = "client.shop.serviceaccount.identity.pimesh.cluster.local";
const WEB: &str = "web.shop.serviceaccount.identity.pimesh.cluster.local";

#[test]
fn a_real_inbound_proxy() {
    // `pimesh-proxy` in front of a Python server, meshed: 5 × 200, 1 × 404.
    let p = parse(INBOUND).unwrap();
    assert_eq!(p.workload["namespace"], "shop");
    assert_eq!(p.workload["deployment"], "web");
    assert_eq!(p.workload["pod"], "web-1");
    assert!(p.start_time.unwrap() > 1.7e9);
    let v = |k: Key| p.series.get(&k).cloned();
    assert_eq!(
        v(key(Metric::Requests, true, CLIENT)),
        Some(Sample::Value(6.0))
    );
    assert_eq!(
        v(key(Metric::Successes, true, CLIENT)),
        Some(Sample::Value(6.0))
    );
    assert_eq!(v(key(Metric::Failures, true, CLIENT)), None);
    assert_eq!(
        v(key(Metric::TcpOpen, true, CLIENT)),
        Some(Sample::Value(1.0))
    );
    assert_eq!(
        v(key(Metric::ReadBytes, true, CLIENT)),
        Some(Sample::Value(226.0))
    );
    let Some(Sample::Histogram(b)) = v(key(Metric::Latency, true, CLIENT)) else {
        panic!("no latency histogram in {:?}", p.series.keys());
    };
    // Both status codes summed: 2 ≤ 3 ms, 6 in all.
    assert_eq!(b[2], 2.0);
    assert_eq!(b[BOUNDS_MS.len() - 1], 6.0);
}

#[test]
fn a_real_outbound_proxy() {
    let p = parse(OUTBOUND).unwrap();
    assert_eq!(p.workload["deployment"], "client");
    assert_eq!(
        p.series.get(&key(Metric::Requests, false, WEB)),
        Some(&Sample::Value(6.0))
    );
    // Outbound TCP series are not kept.
    assert!(p.series.keys().all(|k| k.metric != Metric::TcpOpen));
}

#[test]
fn outbound_destinations_from_discovery_labels() {
    let text = "request_total{direction=\"outbound\",tls=\"true\",server_id=\"w\",dst_namespace=\"shop\",dst_deployment=\"web\",dst_pod=\"web-1\",authority=\"web:80\"} 4\n\
                request_total{direction=\"outbound\",tls=\"true\",server_id=\"w\",dst_namespace=\"shop\",dst_deployment=\"web\",dst_pod=\"web-1\",authority=\"web.shop:80\"} 3\n";
    let p = parse(text).unwrap();
    let (k, v) = p.series.iter().next().unwrap();
    assert_eq!(p.series.len(), 1, "authorities summed");
    assert_eq!(v, &Sample::Value(7.0));
    let dst = k.dst.as_ref().unwrap();
    assert_eq!(dst.deployment.as_deref(), Some("web"));
    assert_eq!(dst.namespace.as_deref(), Some("shop"));
}

#[test]
fn garbage_is_refused_whole() {
    for bad in [
        "<html><body>hello</body></html>\n",
        "request_total{direction=\"inbound\"} many\n",
        "request_total{direction=\"inbound} 1\n",
        "{} 1\n",
        "\u{0}\u{1}\u{2}",
    ] {
        let e = parse(&format!("{INBOUND}{bad}")).unwrap_err();
        assert!(e.starts_with("line "), "{e}");
    }
    assert!(parse("").unwrap().series.is_empty());
    assert!(parse("# EOF\n").unwrap().series.is_empty());
}

#[test]
fn series_are_bounded() {
    let mut text = String::new();
    for i in 0..MAX_SERIES + 10 {
        text.push_str(&format!(
            "request_total{{direction=\"inbound\",tls=\"true\",client_id=\"c{i}\"}} 1\n"
        ));
    }
    let p = parse(&text).unwrap();
    assert_eq!(p.series.len(), MAX_SERIES);
    assert_eq!(p.dropped, 10);
}

fn authz_key(
    http: bool,
    srv: (&str, &str),
    route: Option<&str>,
    authz: Option<(&str, &str)>,
) -> AuthzKey {
    AuthzKey {
        http,
        srv_kind: srv.0.into(),
        srv_name: srv.1.into(),
        route: route.map(Into::into),
        authz_kind: authz.map(|a| a.0.into()),
        authz_name: authz.map(|a| a.1.into()),
    }
}

#[test]
fn authorization_counters_of_linkerd2_proxy() {
    // linkerd2-proxy 2.14's series (no `direction`, no workload labels:
    // Prometheus adds those); clients and target addresses summed.
    let p = parse(include_str!("authz_linkerd.txt")).unwrap();
    let web = authz_key(true, ("server", "web-http"), Some("default"), None);
    let by_vote = AuthzKey {
        authz_kind: Some("authorizationpolicy".into()),
        authz_name: Some("web-from-vote".into()),
        ..web.clone()
    };
    assert_eq!(p.authz.get(&(by_vote, true)), Some(&150.0));
    assert_eq!(p.authz.get(&(web, false)), Some(&7.0));
    let probe = authz_key(
        true,
        ("default", "all-unauthenticated"),
        Some("probe"),
        Some(("default", "probe")),
    );
    assert_eq!(p.authz.get(&(probe, true)), Some(&14.0));
    let db = authz_key(
        false,
        ("server", "db"),
        None,
        Some(("serverauthorization", "db-clients")),
    );
    assert_eq!(p.authz.get(&(db, true)), Some(&3.0));
    let db = authz_key(false, ("server", "db"), None, None);
    assert_eq!(p.authz.get(&(db, false)), Some(&2.0));
    // `*_terminate_total` is not one of them.
    assert_eq!(p.authz.len(), 5, "{:?}", p.authz);
    // The golden series are read as before.
    assert_eq!(p.series.len(), 1);
}

#[test]
fn authorization_counters_of_pimesh_proxy() {
    let p = parse(include_str!("authz_pimesh.txt")).unwrap();
    assert_eq!(p.workload["deployment"], "api");
    let api = authz_key(true, ("server", "api-http"), Some("default"), None);
    // Two denied clients (mTLS, plaintext) summed.
    assert_eq!(p.authz.get(&(api.clone(), false)), Some(&5.0));
    let allowed = AuthzKey {
        authz_kind: Some("authorizationpolicy".into()),
        authz_name: Some("api-web-only".into()),
        ..api
    };
    assert_eq!(p.authz.get(&(allowed, true)), Some(&9.0));
    let tcp = authz_key(false, ("default", "all-authenticated"), None, None);
    assert_eq!(p.authz.get(&(tcp, false)), Some(&3.0));
    assert_eq!(p.authz.len(), 4);
    // Without them, nothing is kept (and nothing allocated).
    assert!(parse(INBOUND).unwrap().authz.is_empty());
}

#[test]
fn authorization_series_are_bounded() {
    let mut text = String::new();
    for i in 0..MAX_AUTHZ_SERIES + 3 {
        text.push_str(&format!(
            "inbound_tcp_authz_deny_total{{srv_kind=\"server\",srv_name=\"s{i}\"}} 1\n"
        ));
    }
    let p = parse(&text).unwrap();
    assert_eq!(p.authz.len(), MAX_AUTHZ_SERIES);
    assert_eq!(p.dropped, 3);
}
