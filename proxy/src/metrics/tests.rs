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

/// The value of the exposition line that starts with `series{` and
/// contains every one of `parts`.
fn value(text: &str, series: &str, parts: &[&str]) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(&format!("{series}{{")) && parts.iter().all(|p| l.contains(p)))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn cached_series_count_in_the_same_series_as_labels() {
    let m = Arc::new(Metrics::new(&[]));
    let target = m.target(
        Direction::Inbound,
        "10.0.0.1:80",
        Tls::plaintext(Direction::Inbound),
    );
    let conn = ConnectionSeries::new(target.clone());
    // More authorities than the connection keeps, more outcomes than a
    // series keeps: evicted and uncached ones still count.
    let statuses: Vec<u16> = (0..12).map(|i| 200 + i).collect();
    for round in 0..3 {
        for authority in ["a:80", "b:80", "c:80", "d:80", "e:80", ""] {
            for &s in &statuses {
                m.request_in(conn.get(&m, authority), Instant::now())
                    .end(Some(s), None, "");
            }
            // Dropped without an end: a cancel, as an uncached request.
            drop(m.request_in(conn.get(&m, authority), Instant::now()));
        }
        if round == 0 {
            let labels = RequestLabels {
                target: target.clone(),
                authority: m.authority("a:80"),
            };
            m.request(labels).end(Some(200), None, "");
        }
    }
    let text = m.encode();
    let a = "authority=\"a:80\"";
    assert_eq!(value(&text, "request_total", &[a]), Some(3.0 * 13.0 + 1.0));
    let ok200 = "status_code=\"200\",classification=\"success\"";
    assert_eq!(value(&text, "response_total", &[a, ok200]), Some(4.0));
    let s211 = "status_code=\"211\"";
    assert_eq!(value(&text, "response_total", &[a, s211]), Some(3.0));
    let cancel = "classification=\"failure\",error=\"cancel\"";
    assert_eq!(value(&text, "response_total", &[a, cancel]), Some(3.0));
    let empty = "authority=\"\"";
    assert_eq!(value(&text, "request_total", &[empty]), Some(3.0 * 13.0));
    let le = "le=\"+Inf\"";
    assert_eq!(
        value(&text, "response_latency_ms_bucket", &[a, s211, le]),
        Some(3.0)
    );
    // No series before a request recorded in it.
    let _unused = conn.get(&m, "never:80");
    assert!(!m.encode().contains("never:80"));
}

#[test]
fn explicit_targets_have_their_own_series() {
    let m = Arc::new(Metrics::new(&[]));
    let conn = ConnectionSeries::new(m.target(
        Direction::Outbound,
        "127.0.0.1:4140",
        Tls::plaintext(Direction::Outbound),
    ));
    let addr: std::net::SocketAddr = "10.0.0.9:8080".parse().unwrap();
    let mut made = 0;
    for _ in 0..2 {
        let s = conn.get_explicit(&m, addr, "web:8080", || {
            made += 1;
            m.target(
                Direction::Outbound,
                "10.0.0.9:8080",
                Tls::plaintext(Direction::Outbound),
            )
        });
        m.request_in(s, Instant::now()).end(Some(200), None, "");
    }
    m.request_in(conn.get(&m, "web:8080"), Instant::now())
        .end(Some(200), None, "");
    assert_eq!(made, 1, "labels made once per target and authority");
    let text = m.encode();
    let t = "target_addr=\"10.0.0.9:8080\"";
    assert_eq!(value(&text, "request_total", &[t]), Some(2.0));
    let t = "target_addr=\"127.0.0.1:4140\"";
    assert_eq!(value(&text, "request_total", &[t]), Some(1.0));
}
