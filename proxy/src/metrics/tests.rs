//! Exposition and bounds of the proxy's metrics.

use super::*;

#[test]
fn exposition_has_linkerd_names_and_labels() {
    let m = Arc::new(Metrics::new(&[("namespace".into(), "shop".into())]));
    let target = m.target(
        Direction::Inbound,
        "10.0.0.1:80",
        Tls::plaintext(Direction::Inbound),
    );
    let labels = RequestLabels {
        target: target.clone(),
        authority: m.authority("web.shop:80"),
    };
    m.request(labels.clone()).end(Some(200), None, "");
    m.request(labels).end(Some(502), None, "connect");
    drop(m.tcp_open(TcpLabels {
        target,
        peer: Peer::Src,
    }));
    let text = m.encode();
    for want in [
        "request_total{namespace=\"shop\",direction=\"inbound\",target_addr=\"10.0.0.1:80\",tls=\"no_identity\",no_tls_reason=\"no_tls_from_remote\",authority=\"web.shop:80\"} 2",
        "status_code=\"200\",classification=\"success\"} 1",
        "status_code=\"502\",classification=\"failure\",error=\"connect\"} 1",
        "response_latency_ms_bucket{",
        "le=\"50000.0\"",
        "tcp_open_total{",
        "tcp_close_total{",
        "errno=\"\"} 1",
        "tcp_open_connections{",
        "proxy_build_info{",
        "process_cpu_seconds_total{namespace=\"shop\"} ",
        "process_resident_memory_bytes{namespace=\"shop\"} ",
        "process_start_time_seconds{",
    ] {
        assert!(text.contains(want), "missing {want:?} in\n{text}");
    }
}

#[test]
fn interned_values_are_bounded() {
    let i = Interner::default();
    for n in 0..MAX_LABEL_VALUES + 50 {
        i.get(&format!("host-{n}"));
    }
    assert_eq!(&*i.get("new-host"), "overflow");
    assert_eq!(&*i.get("host-1"), "host-1");
    assert!(i.values.lock().unwrap().len() <= MAX_LABEL_VALUES);
}
