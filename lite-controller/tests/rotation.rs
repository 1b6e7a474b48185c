//! Trust-anchor rotation end to end through the CLI: the bundle holds old +
//! new at once, the old issuer signs until activation (across a SIGKILL
//! restart), `--finish` is refused while old leaves are valid, then the
//! bundle holds only the new anchor and the controller serves a
//! certificate that chains to it.

mod support;

use std::time::{Duration, SystemTime, UNIX_EPOCH};
use support::*;

fn stage(ctl: &Controller) -> String {
    let json = ctl.cli_ok(&["identity", "status", "-o", "json"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    v["stage"].as_str().unwrap().to_string()
}

fn sleep_until(unix: u64) {
    let target = UNIX_EPOCH + Duration::from_secs(unix);
    if let Ok(d) = target.duration_since(SystemTime::now()) {
        std::thread::sleep(d + Duration::from_millis(50));
    }
}

#[test]
fn rotation_stages_via_the_cli() {
    let dir = TempDir::new("rotate");
    let mut ctl = Controller::start(&dir.path().join("data"), &["--cert-lifetime", "6s"]);
    let old_bundle = ctl.anchors_pem();
    let token = ctl.token("shop/web", "1h");
    let first = ctl.certify(&old_bundle, "shop/web", &token).unwrap();
    let (_, old_issuer) = serial_and_issuer(&first.chain_pem);
    assert_eq!(stage(&ctl), "stable");
    let out = ctl.cli(&["identity", "rotate", "--finish"]);
    assert_eq!(out.status.code(), Some(1), "nothing to finish: {out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no_rotation"));

    // (a) Start: old + new anchors at once; the old issuer keeps signing.
    let out = ctl.cli_ok(&["identity", "rotate", "--activate-after", "2s"]);
    assert!(out.contains("rotation started"), "{out}");
    let both = ctl.anchors_pem();
    assert_eq!(certs(&both).len(), 2);
    assert!(both.starts_with(&old_bundle), "the old anchor stays first");
    assert_eq!(stage(&ctl), "pending");
    let pending = ctl.certify(&both, "shop/web", &token).unwrap();
    assert_eq!(pending.trust_anchors_pem, both);
    assert_eq!(serial_and_issuer(&pending.chain_pem).1, old_issuer);
    verify_chain(&pending.chain_pem, &old_bundle, "shop/web").unwrap();
    let out = ctl.cli(&["identity", "rotate", "--activate-after", "0s"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("rotation_in_progress"),
        "{out:?}"
    );
    let out = ctl.cli(&["identity", "rotate", "--finish"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not_active_yet"),
        "{out:?}"
    );

    // A restart mid-rotation continues it.
    let ctl = ctl.restart();
    assert_eq!(ctl.anchors_pem(), both, "same bundle after SIGKILL");
    let status: serde_json::Value =
        serde_json::from_str(&ctl.cli_ok(&["identity", "status", "-o", "json"])).unwrap();
    let activate = status["rotation"]["activate_unix"].as_u64().unwrap();
    sleep_until(activate);
    assert_eq!(stage(&ctl), "active");

    // After activation the new issuer signs; its leaves chain to the new anchor alone.
    let new_anchor = pimesh_controller::identity::pem::pem_encode(&certs(&both)[1]);
    let active = ctl.certify(&both, "shop/web", &token).unwrap();
    let (_, new_issuer) = serial_and_issuer(&active.chain_pem);
    assert_ne!(new_issuer, old_issuer);
    verify_chain(&active.chain_pem, &new_anchor, "shop/web").unwrap();
    assert!(verify_chain(&active.chain_pem, &old_bundle, "shop/web").is_err());

    // (b) Finish waits for the old issuer's last leaf (the `pending` one).
    let out = ctl.cli(&["identity", "rotate", "--finish"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("old_leaves_valid") && err.contains("certificate(s) issued by the old issuer"),
        "{err}"
    );
    sleep_until(pending.not_after_unix);
    let out = ctl.cli_ok(&["identity", "rotate", "--finish"]);
    assert!(out.contains("rotation finished"), "{out}");
    assert_eq!(stage(&ctl), "stable");
    let after = ctl.anchors_pem();
    assert_eq!(
        certs(&after),
        certs(&new_anchor),
        "only the new anchor is left"
    );
    // Proxies holding only the new bundle reach the controller and certify.
    let rsp = ctl.certify(&after, "shop/web", &token).unwrap();
    verify_chain(&rsp.chain_pem, &after, "shop/web").unwrap();
    assert_eq!(serial_and_issuer(&rsp.chain_pem).1, new_issuer);
}

#[test]
fn forced_finish_and_immediate_activation() {
    let dir = TempDir::new("rotate-force");
    let ctl = Controller::start(&dir.path().join("data"), &["--cert-lifetime", "1h"]);
    let old = ctl.anchors_pem();
    let token = ctl.token("a/b", "1h");
    ctl.certify(&old, "a/b", &token).unwrap();
    ctl.cli_ok(&["identity", "rotate", "--activate-after", "0s"]);
    assert_eq!(stage(&ctl), "active");
    let out = ctl.cli(&["identity", "rotate", "--finish"]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("old_leaves_valid"),
        "{out:?}"
    );
    ctl.cli_ok(&["identity", "rotate", "--finish", "--force"]);
    let new = ctl.anchors_pem();
    assert_eq!(certs(&new).len(), 1);
    assert_ne!(new, old);
    // The controller's own certificate was renewed from the new issuer:
    // a client trusting only the new anchor connects.
    assert!(
        eventually(Duration::from_secs(5), || certifies(
            &ctl, &new, "a/b", &token
        )),
        "{}",
        ctl.log()
    );
}

/// Whether a certify exchange that verifies the controller against
/// `anchors` succeeds.
fn certifies(ctl: &Controller, anchors: &str, identity: &str, token: &str) -> bool {
    let req = pimesh_api::identity::CertifyRequest {
        identity: identity.parse().unwrap(),
        token: token.into(),
        csr_pem: csr_pem(identity),
    };
    let body = serde_json::to_vec(&req).unwrap();
    let path = pimesh_api::identity::CERTIFY_PATH;
    matches!(
        h2_request(ctl.proxy, anchors, "POST", path, body),
        Ok((200, _))
    )
}
