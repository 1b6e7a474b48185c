//! Parsing and validation of the proxy's configuration.

use super::identity::parse_destinations;
use super::*;
use std::collections::HashMap;

fn cfg(pairs: &[(&'static str, &'static str)]) -> Result<Config, Error> {
    let env: HashMap<&str, &str> = pairs.iter().copied().collect();
    Config::from_env(&env)
}

#[test]
fn defaults_follow_design() {
    let c = cfg(&[]).unwrap();
    assert_eq!(c.inbound_addr.to_string(), "0.0.0.0:4143");
    assert_eq!(c.outbound_addr.to_string(), "127.0.0.1:4140");
    assert_eq!(c.admin_addr.to_string(), "0.0.0.0:4191");
    assert_eq!(
        c.opaque_ports,
        [25, 587, 3306, 4444, 5432, 6379, 9300, 11211]
    );
    assert_eq!(c.detect_timeout, Duration::from_secs(10));
    assert_eq!(c.threads, 1);
    assert!(c.is_opaque_port(5432) && !c.is_opaque_port(80));
}

#[test]
fn bad_values_name_the_variable() {
    let e = cfg(&[("PIMESH_PROXY_THREADS", "many")]).unwrap_err();
    assert_eq!(e.name, "PIMESH_PROXY_THREADS");
    assert!(e.to_string().contains("\"many\""), "{e}");
    let e = cfg(&[("PIMESH_PROXY_OPAQUE_PORTS", "25,abc")]).unwrap_err();
    assert_eq!(e.name, "PIMESH_PROXY_OPAQUE_PORTS");
    let e = cfg(&[("PIMESH_PROXY_DETECT_TIMEOUT", "10 parsecs")]).unwrap_err();
    assert_eq!(e.name, "PIMESH_PROXY_DETECT_TIMEOUT");
    let e = cfg(&[("PIMESH_PROXY_INBOUND_TARGET", "localhost")]).unwrap_err();
    assert_eq!(e.name, "PIMESH_PROXY_INBOUND_TARGET");
    let e = cfg(&[("PIMESH_PROXY_WORKLOAD_LABELS", "pod=\"x\"")]).unwrap_err();
    assert_eq!(e.name, "PIMESH_PROXY_WORKLOAD_LABELS");
    let e = cfg(&[("PIMESH_PROXY_LOG", "pimesh=loud")]).unwrap_err();
    assert_eq!(e.name, "PIMESH_PROXY_LOG");
    let e = cfg(&[("PIMESH_PROXY_MAX_HEADER_BYTES", "100")]).unwrap_err();
    assert!(e.reason.contains("between"), "{e}");
}

#[test]
fn parses_values() {
    let c = cfg(&[
        ("PIMESH_PROXY_OPAQUE_PORTS", "9000-9002, 25,25"),
        ("PIMESH_PROXY_WORKLOAD_LABELS", "namespace=shop, pod=web-1"),
        ("PIMESH_PROXY_INBOUND_TARGET", "127.0.0.1:8080"),
        ("PIMESH_PROXY_IDLE_TIMEOUT", "250ms"),
    ])
    .unwrap();
    assert_eq!(c.opaque_ports, [25, 9000, 9001, 9002]);
    assert_eq!(
        c.workload_labels,
        [
            ("namespace".into(), "shop".into()),
            ("pod".into(), "web-1".into())
        ]
    );
    assert_eq!(c.inbound_target, Some("127.0.0.1:8080".parse().unwrap()));
    assert_eq!(c.idle_timeout, Duration::from_millis(250));
}

#[test]
fn identity_settings_come_together() {
    let e = cfg(&[("PIMESH_PROXY_CONTROLLER_ADDR", "ctl:8086")]).unwrap_err();
    assert_eq!(e.name, "PIMESH_PROXY_TRUST_ANCHORS");
    let e = cfg(&[("PIMESH_PROXY_CONTROLLER_ADDR", "ctl")]).unwrap_err();
    assert_eq!(e.name, "PIMESH_PROXY_CONTROLLER_ADDR");
    let e = cfg(&[("PIMESH_PROXY_MESH_DESTINATIONS", "127.0.0.1:80=shop/web")]).unwrap_err();
    assert_eq!(e.name, "PIMESH_PROXY_MESH_DESTINATIONS");
    assert!(e.reason.contains("PIMESH_PROXY_CONTROLLER_ADDR"));
    assert!(parse_destinations("127.0.0.1:80=Shop/web").is_err());
    let d =
        parse_destinations("10.0.0.2:80=shop/web, 10.0.0.3:80=shop/db@127.0.0.1:14143").unwrap();
    assert_eq!(d[0].proxy_addr, d[0].addr);
    assert_eq!(d[1].proxy_addr.to_string(), "127.0.0.1:14143");
    assert_eq!(d[1].identity.to_string(), "shop/db");
}

#[test]
fn durations() {
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
    assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
    assert!(parse_duration("0s").is_err());
    assert!(parse_duration("-1s").is_err());
    assert!(parse_duration("").is_err());
}

/// The identity variables of a proxy with a controller (real files).
fn with_controller(
    dir: &std::path::Path,
    extra: &[(&'static str, &'static str)],
) -> Result<Config, Error> {
    let key = rcgen::KeyPair::generate().unwrap();
    let ca = rcgen::CertificateParams::new(Vec::<String>::new())
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let anchors = dir.join("anchors.pem");
    std::fs::write(&anchors, ca.pem()).unwrap();
    let token = dir.join("token");
    std::fs::write(&token, "pmt_x").unwrap();
    let anchors = anchors.display().to_string();
    let token = token.display().to_string();
    let mut env: HashMap<&str, &str> = extra.iter().copied().collect();
    env.insert("PIMESH_PROXY_CONTROLLER_ADDR", "127.0.0.1:8086");
    env.insert("PIMESH_PROXY_TRUST_ANCHORS", &anchors);
    env.insert("PIMESH_PROXY_TOKEN_FILE", &token);
    env.insert("PIMESH_PROXY_IDENTITY", "shop/web");
    Config::from_env(&env)
}

#[test]
fn outbound_settings() {
    let dir = std::env::temp_dir().join(format!("pimesh-config-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let c = with_controller(&dir, &[]).unwrap();
    let o = &c.outbound;
    assert_eq!(o.service, None);
    assert_eq!(o.defaults.retry_limit, 0);
    assert_eq!(o.defaults.failure_accrual_consecutive, 7);
    assert_eq!(o.discovery_wait, Duration::from_secs(1));
    let c = with_controller(
        &dir,
        &[
            ("PIMESH_PROXY_SERVICE", "web:8080"),
            ("PIMESH_PROXY_ADVERTISE_ADDR", "10.0.0.7"),
            (
                "PIMESH_PROXY_TCP_UPSTREAMS",
                "127.0.0.1:15432=db:5432, 127.0.0.1:16379=cache.other:6379",
            ),
            ("PIMESH_PROXY_OUTBOUND_RETRY_HTTP", "gateway-error,429"),
            ("PIMESH_PROXY_OUTBOUND_PER_TRY_TIMEOUT", "250ms"),
        ],
    )
    .unwrap();
    let o = &c.outbound;
    assert_eq!(o.service, Some(("web".into(), Some(8080))));
    assert_eq!(o.advertise_ip, Some("10.0.0.7".parse().unwrap()));
    assert_eq!(
        o.tcp_upstreams[0].service.to_string(),
        "db.shop",
        "bare names: the proxy's namespace"
    );
    assert_eq!(o.tcp_upstreams[1].service.to_string(), "cache.other");
    assert_eq!(o.tcp_upstreams[1].port, 6379);
    assert_eq!(o.defaults.per_try_timeout, Some(Duration::from_millis(250)));
    for (name, value) in [
        ("PIMESH_PROXY_SERVICE", "web.shop"),
        ("PIMESH_PROXY_SERVICE", "web:0"),
        ("PIMESH_PROXY_ADVERTISE_ADDR", "0.0.0.0"),
        ("PIMESH_PROXY_TCP_UPSTREAMS", "127.0.0.1:15432=db"),
        (
            "PIMESH_PROXY_TCP_UPSTREAMS",
            "127.0.0.1:1=a:1,127.0.0.1:1=b:2",
        ),
        ("PIMESH_PROXY_OUTBOUND_RETRY_HTTP", "9xx"),
        ("PIMESH_PROXY_OUTBOUND_RETRY_GRPC", "sometimes"),
        ("PIMESH_PROXY_OUTBOUND_RETRY_LIMIT", "11"),
        ("PIMESH_PROXY_OUTBOUND_RETRY_BUDGET_RATIO", "-1"),
        ("PIMESH_PROXY_FAILURE_ACCRUAL_MIN_BACKOFF", "2m"),
        ("PIMESH_PROXY_DISCOVERY_MAX_WATCHES", "0"),
        ("PIMESH_PROXY_CLUSTER_DOMAIN", "Cluster..local"),
    ] {
        let e = with_controller(&dir, &[(name, value)]).unwrap_err();
        assert_eq!(e.name, name, "{value}: {e}");
    }
    // Registration and upstream listeners need discovery.
    let e = cfg(&[("PIMESH_PROXY_SERVICE", "web")]).unwrap_err();
    assert_eq!(e.name, "PIMESH_PROXY_SERVICE");
    assert!(e.reason.contains("PIMESH_PROXY_CONTROLLER_ADDR"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
