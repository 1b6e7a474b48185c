//! Certify end to end against the real `pimesh controller`: a token from
//! the CLI, a CSR over HTTP/2 + TLS 1.3, the chain verified against the
//! bundle by webpki; every refusal answered with its code, counted, and
//! issuing nothing.

mod support;

use pimesh_api::identity::{CertifyRequest, CERTIFY_PATH, TRUST_ANCHORS_PATH};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::*;
use x509_parser::extensions::GeneralName;

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn certify_with_a_cli_token_and_verify_the_chain() {
    let dir = TempDir::new("certify");
    let ctl = Controller::start(&dir.path().join("data"), &["--cert-lifetime", "1h"]);
    let anchors = ctl.anchors_pem();
    assert_eq!(certs(&anchors).len(), 1);
    let token = ctl.token("shop/web", "10m");

    let before = now();
    let rsp = ctl
        .certify(&anchors, "shop/web", &token)
        .expect("certified");
    assert_eq!(rsp.trust_anchors_pem, anchors);
    verify_chain(&rsp.chain_pem, &anchors, "shop/web").unwrap();
    // The leaf names exactly the requested identity, whatever the CSR asked.
    let chain = certs(&rsp.chain_pem);
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let names: Vec<String> = leaf
        .subject_alternative_name()
        .unwrap()
        .unwrap()
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => format!("uri:{u}"),
            GeneralName::DNSName(d) => format!("dns:{d}"),
            other => format!("{other:?}"),
        })
        .collect();
    assert_eq!(
        names,
        [
            "uri:spiffe://cluster.local/ns/shop/sa/web",
            "dns:web.shop.serviceaccount.identity.pimesh.cluster.local"
        ]
    );
    let not_after = leaf.validity().not_after.timestamp() as u64;
    assert_eq!(rsp.not_after_unix, not_after);
    assert!(
        (before + 3600..=now() + 3600).contains(&not_after),
        "{not_after}"
    );
    assert!(
        verify_chain(&rsp.chain_pem, &anchors, "shop/db").is_err(),
        "other names fail"
    );

    let (serial, _) = serial_and_issuer(&rsp.chain_pem);
    assert_eq!(ctl.serials(), vec![serial]);
    assert_eq!(
        ctl.metric("pimesh_controller_certificates_issued_total"),
        1.0
    );
    assert_eq!(
        ctl.metric("pimesh_controller_tokens{status=\"active\"}"),
        1.0
    );
    assert!(
        ctl.metric("pimesh_controller_issuer_expiry_timestamp_seconds")
            > (now() + 300 * 86400) as f64
    );

    // The same token works again (renewal); the bundle is on both ports.
    ctl.certify(&anchors, "shop/web", &token).expect("renewed");
    assert_eq!(ctl.serials().len(), 2);
    let (status, pem) = h2_request(ctl.proxy, &anchors, "GET", TRUST_ANCHORS_PATH, vec![]).unwrap();
    assert_eq!(
        (status, String::from_utf8(pem).unwrap()),
        (200, anchors.clone())
    );
    assert_eq!(ctl.get(TRUST_ANCHORS_PATH), (200, anchors));
}

#[test]
fn curl_speaks_http2_to_the_proxy_port() {
    let dir = TempDir::new("curl");
    let ctl = Controller::start(&dir.path().join("data"), &[]);
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, ctl.anchors_pem()).unwrap();
    let host = "pimesh-controller.pimesh.serviceaccount.identity.pimesh.cluster.local";
    let port = ctl.proxy.port();
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "10", "--http2", "--cacert"])
        .arg(&ca)
        .args(["--resolve", &format!("{host}:{port}:127.0.0.1")])
        .args(["-o", "/dev/null", "-w", "%{http_code} %{http_version}"])
        .arg(format!("https://{host}:{port}{TRUST_ANCHORS_PATH}"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "200 2", "{out:?}");
}

#[test]
fn refusals_are_counted_and_issue_nothing() {
    let dir = TempDir::new("refuse");
    let ctl = Controller::start(&dir.path().join("data"), &[]);
    let anchors = ctl.anchors_pem();
    let good = ctl.token("shop/web", "1h");
    let short = ctl.token("shop/web", "1s");
    let revoked = ctl.token("shop/web", "1h");
    let revoked_id = &revoked["pmt_".len()..revoked.find('.').unwrap()];
    ctl.cli_ok(&["token", "revoke", revoked_id]);
    let ls = ctl.cli_ok(&["token", "ls"]);
    assert!(ls.starts_with("ID"), "{ls}");
    assert!(
        ls.lines()
            .any(|l| l.starts_with(revoked_id) && l.ends_with("revoked")),
        "{ls}"
    );
    std::thread::sleep(Duration::from_millis(2100)); // `short` expires

    let last = if good.ends_with('0') { "1" } else { "0" };
    let wrong_secret = format!("{}{last}", &good[..good.len() - 1]);
    let refused = |identity: &str, token: &str| ctl.certify(&anchors, identity, token).unwrap_err();
    let cases: Vec<((u16, pimesh_api::ApiError), u16, &str)> = vec![
        (
            refused("shop/web", "pmt_0123456789abcdef.00"),
            401,
            "invalid_token",
        ),
        (refused("shop/web", &wrong_secret), 401, "invalid_token"),
        (refused("shop/web", &short), 401, "token_expired"),
        (refused("shop/web", &revoked), 401, "token_revoked"),
        (refused("shop/db", &good), 403, "identity_not_allowed"),
    ];
    for ((status, err), want_status, want_code) in &cases {
        assert_eq!(
            (*status, err.error.as_str()),
            (*want_status, *want_code),
            "{err:?}"
        );
        assert!(!err.message.is_empty());
    }

    let raw = |body: Vec<u8>| {
        let (status, body) = ctl.certify_raw(&anchors, body);
        let err: pimesh_api::ApiError = serde_json::from_slice(&body).unwrap();
        (status, err.error)
    };
    assert_eq!(raw(b"{not json".to_vec()), (400, "bad_request".into()));
    assert_eq!(
        raw(br#"{"identity":"Bad/ID","token":"x","csr_pem":""}"#.to_vec()),
        (400, "bad_request".into())
    );
    let bad_csr = CertifyRequest {
        identity: "shop/web".parse().unwrap(),
        token: good.clone(),
        csr_pem: "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n"
            .into(),
    };
    assert_eq!(
        raw(serde_json::to_vec(&bad_csr).unwrap()),
        (400, "bad_csr".into())
    );
    let huge = vec![b' '; 70 * 1024];
    assert_eq!(raw(huge), (413, "payload_too_large".into()));
    let (status, _) = h2_request(ctl.proxy, &anchors, "GET", CERTIFY_PATH, vec![]).unwrap();
    assert_eq!(status, 405);

    for (reason, n) in [
        ("invalid_token", 2.0),
        ("token_expired", 1.0),
        ("token_revoked", 1.0),
        ("identity_not_allowed", 1.0),
        ("bad_request", 2.0),
        ("bad_csr", 1.0),
        ("payload_too_large", 1.0),
    ] {
        let series = format!("pimesh_controller_certify_refused_total{{reason=\"{reason}\"}}");
        assert_eq!(ctl.metric(&series), n, "{series}");
    }
    assert_eq!(
        ctl.metric("pimesh_controller_certificates_issued_total"),
        0.0
    );
    assert!(ctl.serials().is_empty(), "nothing issued");
    assert_eq!(
        ctl.metric("pimesh_controller_tokens{status=\"revoked\"}"),
        1.0
    );
    assert_eq!(
        ctl.metric("pimesh_controller_tokens{status=\"expired\"}"),
        1.0
    );
    // And the good token still works.
    ctl.certify(&anchors, "shop/web", &good).expect("certified");
    assert_eq!(ctl.serials().len(), 1);
}

#[test]
fn operator_api_json_and_errors() {
    let dir = TempDir::new("operator");
    let ctl = Controller::start(&dir.path().join("data"), &[]);
    assert_eq!(ctl.get("/live").0, 200);
    assert_eq!(ctl.get("/ready").0, 200);
    let (status, body) = http1(
        ctl.admin,
        "POST",
        "/v1/tokens",
        r#"{"identity":"a/b","service":"web","ttl_seconds":60}"#,
    );
    assert_eq!(status, 201, "{body}");
    let created: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(created["token"].as_str().unwrap().starts_with("pmt_"));
    assert_eq!(created["service"], "web");
    let json = ctl.cli_ok(&["token", "ls", "-o", "json"]);
    let list: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(list[0]["identity"], "a/b");
    assert!(
        list[0].get("token").is_none() && !json.contains("sha256"),
        "no secret listed"
    );
    let (status, body) = http1(
        ctl.admin,
        "POST",
        "/v1/tokens",
        r#"{"identity":"a/b","ttl_seconds":0}"#,
    );
    assert_eq!(
        (status, body.contains("bad_request")),
        (400, true),
        "{body}"
    );
    let (status, body) = http1(ctl.admin, "DELETE", "/v1/tokens/0123456789abcdef", "");
    assert_eq!((status, body.contains("not_found")), (404, true), "{body}");
    assert_eq!(http1(ctl.admin, "GET", "/nope", "").0, 404);
    assert_eq!(http1(ctl.admin, "PUT", "/v1/tokens", "").0, 405);
    // Usage errors of the CLI exit 64 before any request.
    let out = ctl.cli(&["token", "create", "--identity", "NotAnIdentity"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("--identity"));
    let out = ctl.cli(&["token", "create", "--identity", "a/b", "--ttl", "0s"]);
    assert_eq!(out.status.code(), Some(64), "{out:?}");
    let out = ctl.cli(&["token", "revoke", "0123456789abcdef"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not_found"),
        "{out:?}"
    );
}
