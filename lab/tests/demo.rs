//! `pimesh-lab demo` as the quick start runs it (non-interactive, for a
//! while, then down): every demo service shows non-zero golden metrics,
//! over mTLS on every edge in the lab; on loopback (the no-root fallback)
//! the HTTP edges are mTLS requests and the gRPC edges mTLS connections.
//! Nothing is left behind. The lab mode needs root.

mod support;

use std::process::Command;
use std::time::Duration;
use support::*;

/// Column `col` (0-based: POD DIRECTION REQUESTS MTLS SUCCESS FAILED TCP
/// TCP_MTLS) of the last table line for `pod` and `dir`.
fn golden(out: &str, pod: &str, dir: &str, col: usize) -> f64 {
    out.lines()
        .rev()
        .find(|l| {
            let mut w = l.split_whitespace();
            w.next() == Some(pod) && w.next() == Some(dir)
        })
        .and_then(|l| l.split_whitespace().nth(col)?.parse().ok())
        .unwrap_or_else(|| panic!("no {pod} {dir} line in\n{out}"))
}

fn demo(extra: &[&str], as_nobody: bool) -> String {
    let mut c = if as_nobody {
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            lab_bin(),
        ]);
        c
    } else {
        Command::new(lab_bin())
    };
    c.args([
        "demo",
        "--duration",
        "8s",
        "--interval",
        "0s",
        "--rate",
        "20",
    ])
    .arg("--bin-dir")
    .arg(bin_dir())
    .args(extra);
    let out = run(&mut c, Duration::from_secs(180));
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("nothing left behind"), "{text}");
    text
}

#[test]
fn demo_in_the_lab_has_mtls_on_every_edge() {
    if !root_or_skip() {
        return;
    }
    let _ = bins();
    let rules = host_rule_count();
    let id = test_id();
    let out = demo(&["--id", &id], false);
    for svc in ["emoji", "voting", "web"] {
        let requests = golden(&out, svc, "inbound", 2);
        assert!(requests > 0.0, "{svc}:\n{out}");
        assert_eq!(
            golden(&out, svc, "inbound", 3),
            requests,
            "{svc} not all mTLS:\n{out}"
        );
    }
    for client in ["web", "vote-bot"] {
        let requests = golden(&out, client, "outbound", 2);
        assert!(requests > 0.0, "{client}:\n{out}");
        assert_eq!(golden(&out, client, "outbound", 3), requests, "{out}");
    }
    // The demo's deliberate failure (votes for :doughnut:) is counted.
    assert!(golden(&out, "voting", "inbound", 5) >= 0.0);
    assert_nothing_left(&id, rules);
}

#[test]
fn demo_on_loopback_without_root() {
    let _ = bins();
    // As nobody when nobody can run the demo's Python (grpcio) here; the
    // mode itself needs no privilege either way.
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let nobody_python = root
        && run(
            Command::new("setpriv").args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                "python3",
                "-c",
                "import grpc",
            ]),
            Duration::from_secs(30),
        )
        .status
        .success();
    if root && !nobody_python {
        eprintln!(
            "note: nobody cannot import grpc with this python3; running loopback mode as root"
        );
    }
    let out = demo(&["--loopback"], nobody_python);
    assert!(out.contains("loopback mode (no root)"), "{out}");
    assert!(golden(&out, "web", "inbound", 3) > 0.0, "{out}");
    assert!(golden(&out, "vote-bot", "outbound", 3) > 0.0, "{out}");
    for svc in ["emoji", "voting"] {
        assert!(golden(&out, svc, "inbound", 7) > 0.0, "{svc}:\n{out}");
    }
}
