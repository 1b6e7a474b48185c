//! The controller's state survives what boards do to it: SIGKILL while
//! issuing (same CA, every returned serial known, tokens intact), a
//! damaged database (refused, left untouched, never replaced by a new CA),
//! a second controller on the same directory, and SIGTERM (clean exit).

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::*;

#[test]
fn sigkill_while_issuing_keeps_the_ca_serials_and_tokens() {
    let dir = TempDir::new("sigkill");
    let mut ctl = Controller::start(&dir.path().join("data"), &[]);
    let anchors = ctl.anchors_pem();
    let token = ctl.token("shop/web", "1h");
    let other = ctl.token("shop/db", "1h");
    let (proxy, stop) = (ctl.proxy, Arc::new(AtomicBool::new(false)));
    let returned = Arc::new(Mutex::new(Vec::new()));
    let issuer = std::thread::spawn({
        let (anchors, token, stop, returned) = (
            anchors.clone(),
            token.clone(),
            stop.clone(),
            returned.clone(),
        );
        move || {
            while !stop.load(Ordering::Relaxed) {
                let req = pimesh_api::identity::CertifyRequest {
                    identity: "shop/web".parse().unwrap(),
                    token: token.clone(),
                    csr_pem: csr_pem("shop/web"),
                };
                let body = serde_json::to_vec(&req).unwrap();
                // Errors once the controller is killed mid-exchange.
                let path = pimesh_api::identity::CERTIFY_PATH;
                if let Ok((200, body)) = h2_request(proxy, &anchors, "POST", path, body) {
                    let rsp: pimesh_api::identity::CertifyResponse =
                        serde_json::from_slice(&body).unwrap();
                    returned
                        .lock()
                        .unwrap()
                        .push(serial_and_issuer(&rsp.chain_pem).0);
                }
            }
        }
    });
    assert!(
        eventually(Duration::from_secs(20), || returned.lock().unwrap().len()
            >= 15),
        "issuing too slowly:\n{}",
        ctl.log()
    );
    ctl.kill(); // SIGKILL while the loop issues
    stop.store(true, Ordering::Relaxed);
    issuer.join().unwrap();
    let returned = returned.lock().unwrap().clone();

    let ctl = ctl.restart();
    assert_eq!(
        ctl.anchors_pem(),
        anchors,
        "same anchor bytes after SIGKILL"
    );
    let known = ctl.serials();
    for serial in &returned {
        assert!(
            known.contains(serial),
            "serial {serial} returned before the kill is unknown"
        );
    }
    // Tokens intact: both still certify, on the same CA.
    for (id, t) in [("shop/web", &token), ("shop/db", &other)] {
        let rsp = ctl.certify(&anchors, id, t).expect("token survives");
        verify_chain(&rsp.chain_pem, &anchors, id).unwrap();
    }
    assert!(ctl.log().contains("CA loaded"));
    assert!(
        !ctl.log().contains("created the CA"),
        "no new CA:\n{}",
        ctl.log()
    );
}

/// Every file under `dir` with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.display().to_string(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

/// A data dir with a CA, a token and a serial, cleanly stopped; then
/// `damage` applied to each file of `DIR/db`.
fn damaged(tag: &str, damage: impl Fn(&Path)) -> (TempDir, std::path::PathBuf) {
    let dir = TempDir::new(tag);
    let data = dir.path().join("data");
    let mut ctl = Controller::start(&data, &[]);
    let token = ctl.token("a/b", "1h");
    ctl.certify(&ctl.anchors_pem(), "a/b", &token).unwrap();
    assert!(ctl.terminate().success());
    for e in std::fs::read_dir(data.join("db")).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            damage(&p);
        }
    }
    (dir, data)
}

#[test]
fn a_corrupt_database_is_refused_and_left_untouched() {
    let (_dir, data) = damaged("corrupt", |p| {
        let len = std::fs::metadata(p).unwrap().len().max(1024) as usize;
        let garbage: Vec<u8> = (0..len).map(|i| (i * 7 + 13) as u8).collect();
        std::fs::write(p, garbage).unwrap();
    });
    let before = snapshot(&data);
    let (status, log) = Controller::spawn(&data, vec![])
        .err()
        .expect("must not start");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("corrupt or unreadable"), "{log}");
    assert!(
        log.contains(&data.join("db").display().to_string()),
        "{log}"
    );
    assert!(!log.contains("created the CA"), "{log}");
    assert_eq!(snapshot(&data), before, "the data directory was changed");
}

#[test]
fn an_emptied_database_is_refused_not_replaced_by_a_new_ca() {
    // sled alone would open emptied files as a new, empty database.
    let (_dir, data) = damaged("emptied", |p| std::fs::write(p, b"").unwrap());
    let before = snapshot(&data);
    let (status, log) = Controller::spawn(&data, vec![])
        .err()
        .expect("must not start");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("missing or empty"), "{log}");
    assert!(!log.contains("created the CA"), "{log}");
    assert_eq!(snapshot(&data), before, "the data directory was changed");
}

#[test]
fn one_controller_per_data_directory() {
    let dir = TempDir::new("locked");
    let data = dir.path().join("data");
    let ctl = Controller::start(&data, &[]);
    let (status, log) = Controller::spawn(&data, vec![])
        .err()
        .expect("second must not start");
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(log.contains("in use by another process"), "{log}");
    assert_eq!(ctl.get("/ready").0, 200, "the first one is unaffected");
}

#[test]
fn sigterm_drains_flushes_and_exits_zero() {
    let dir = TempDir::new("sigterm");
    let data = dir.path().join("data");
    let mut ctl = Controller::start(&data, &[]);
    let anchors = ctl.anchors_pem();
    let status = ctl.terminate();
    assert!(status.success(), "{status:?}\n{}", ctl.log());
    assert!(ctl.log().contains("database flushed"), "{}", ctl.log());
    let ctl = Controller::start(&data, &[]);
    assert_eq!(ctl.anchors_pem(), anchors);
}

#[test]
fn a_missing_data_dir_is_created_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = TempDir::new("create");
    let data = dir.path().join("a/b/data");
    let ctl = Controller::start(&data, &[]);
    let mode = std::fs::metadata(&data).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
    assert!(data.join("db").is_dir() && data.join("initialized").is_file());
    assert_eq!(certs(&ctl.anchors_pem()).len(), 1);
}
