//! The command line: `--version`/`--help`, exit code 64 on bad usage with a
//! message naming the flag and value, bring-your-own CA import, and a CLI
//! without a running controller.

mod support;

use support::*;

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn version_and_help() {
    let out = pimesh(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("pimesh {}", env!("CARGO_PKG_VERSION"))
    );
    let out = pimesh(&["controller", "--help"]);
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--data-dir",
        "--cert-lifetime",
        "PIMESH_CONTROLLER_CERT_LIFETIME",
        "--issuer-key-pem",
        "--kubeconfig",
        "KUBECONFIG",
        "PIMESH_CONTROLLER_NAMESPACE",
        "--cluster-domain",
    ] {
        assert!(help.contains(flag), "{flag} missing in:\n{help}");
    }
    let out = pimesh(&["identity", "rotate", "--help"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("--activate-after"));
}

#[test]
fn bad_usage_exits_64_naming_the_flag_and_value() {
    let dir = TempDir::new("usage");
    let data = dir.path().join("data");
    let d = data.to_str().unwrap();
    for (args, needle) in [
        (vec![], "Usage"),
        (vec!["frobnicate"], "frobnicate"),
        (vec!["controller", "--standalone"], "--data-dir"),
        // Kubernetes mode (no --standalone): a kubeconfig that cannot be
        // loaded is named with its flag and value.
        (
            vec![
                "controller",
                "--data-dir",
                d,
                "--kubeconfig",
                "/nonexistent/kubeconfig",
            ],
            "--kubeconfig \"/nonexistent/kubeconfig\" (env KUBECONFIG)",
        ),
        (
            vec!["controller", "--data-dir", d, "--namespace", "Bad_NS"],
            "--namespace",
        ),
        (
            vec![
                "controller",
                "--standalone",
                "--data-dir",
                d,
                "--cert-lifetime",
                "10 parsecs",
            ],
            "\"10 parsecs\"",
        ),
        (
            vec![
                "controller",
                "--standalone",
                "--data-dir",
                d,
                "--proxy-addr",
                "localhost:1",
            ],
            "--proxy-addr",
        ),
        (
            vec![
                "controller",
                "--standalone",
                "--data-dir",
                d,
                "--issuer-pem",
                "/nonexistent.pem",
            ],
            "/nonexistent.pem",
        ),
        (vec!["identity", "rotate", "--force"], "--finish"),
        (
            vec![
                "token",
                "create",
                "--identity",
                "a/b",
                "--service",
                "Bad_Name",
            ],
            "--service",
        ),
        (
            vec![
                "token",
                "create",
                "--identity",
                "a/b",
                "--controller",
                "https://x",
            ],
            "--controller",
        ),
    ] {
        let out = pimesh(&args);
        assert_eq!(out.status.code(), Some(64), "{args:?}: {}", stderr(&out));
        assert!(
            stderr(&out).contains(needle),
            "{args:?}: {needle} not in {}",
            stderr(&out)
        );
    }
    assert!(!data.exists(), "no data dir is created on bad usage");
    // The environment fallback is named too.
    let out = std::process::Command::new(bin())
        .args(["controller", "--standalone", "--data-dir", d])
        .env("PIMESH_CONTROLLER_CERT_LIFETIME", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        stderr(&out).contains("PIMESH_CONTROLLER_CERT_LIFETIME")
            && stderr(&out).contains("\"soon\"")
    );
}

#[test]
fn cli_without_a_controller_is_a_clear_error() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("http://127.0.0.1:{port}");
    for args in [
        vec!["identity", "rotate", "--controller", &url],
        vec!["identity", "trust-anchors", "--controller", &url],
        vec!["token", "ls", "--controller", &url],
    ] {
        let out = pimesh(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            stderr(&out).contains("cannot reach the controller"),
            "{}",
            stderr(&out)
        );
    }
}

#[test]
fn a_closed_pipe_ends_the_cli_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let dir = TempDir::new("pipe");
    let ctl = Controller::start(&dir.path().join("data"), &[]);
    let mut child = std::process::Command::new(bin())
        .args(["identity", "status", "--controller", &ctl.url()])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // The reader goes away before the CLI has its answer to print.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{out:?}");
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
}

/// PEM files of an operator's own CA: anchor, issuer (signed by it), issuer key.
fn own_ca(dir: &std::path::Path) -> [String; 3] {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
    let anchor_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let anchor = p.self_signed(&anchor_key).unwrap();
    let issuer_key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.distinguished_name
        .push(rcgen::DnType::CommonName, "operator issuer");
    let parent = Issuer::from_ca_cert_pem(&anchor.pem(), anchor_key).unwrap();
    let issuer = p.signed_by(&issuer_key, &parent).unwrap();
    let files = [
        ("anchor.pem", anchor.pem()),
        ("issuer.pem", issuer.pem()),
        ("issuer.key", issuer_key.serialize_pem()),
    ];
    files.map(|(name, pem)| {
        let path = dir.join(name);
        std::fs::write(&path, pem).unwrap();
        path.display().to_string()
    })
}

#[test]
fn bring_your_own_ca_is_imported_on_first_start() {
    let dir = TempDir::new("byo");
    let [anchor, issuer, key] = own_ca(dir.path());
    let data = dir.path().join("data");
    let flags = [
        "--trust-anchor-pem",
        &anchor,
        "--issuer-pem",
        &issuer,
        "--issuer-key-pem",
        &key,
    ];
    let mut ctl = Controller::start(&data, &flags);
    let bundle = ctl.anchors_pem();
    assert_eq!(
        certs(&bundle),
        certs(&std::fs::read_to_string(&anchor).unwrap())
    );
    let token = ctl.token("a/b", "1h");
    let rsp = ctl.certify(&bundle, "a/b", &token).unwrap();
    verify_chain(&rsp.chain_pem, &bundle, "a/b").unwrap();
    let (_, issuer_der) = serial_and_issuer(&rsp.chain_pem);
    assert_eq!(
        issuer_der,
        certs(&std::fs::read_to_string(&issuer).unwrap())[0].to_vec()
    );
    assert!(ctl.log().contains("imported=true"), "{}", ctl.log());
    // Restarted without the files: the same CA, from the database.
    ctl.kill();
    let ctl = Controller::start(&data, &[]);
    assert_eq!(ctl.anchors_pem(), bundle);

    // Files that do not belong together: exit 64, no CA stored.
    let other = TempDir::new("byo-other");
    let [_, _, other_key] = own_ca(other.path());
    let data2 = dir.path().join("data2");
    let flags = [
        "--trust-anchor-pem",
        &anchor,
        "--issuer-pem",
        &issuer,
        "--issuer-key-pem",
        &other_key,
    ];
    let (status, log) = Controller::spawn(&data2, flags.iter().map(|s| s.to_string()).collect())
        .err()
        .unwrap();
    assert_eq!(status.code(), Some(64), "{log}");
    assert!(log.contains("does not match"), "{log}");
}
