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
