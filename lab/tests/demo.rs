//! `pimesh-lab demo` as the quick start runs it (non-interactive, for a
//! while, then down): it ends with `pimesh stat deploy` and `pimesh edges
//! deploy` from the lab's controller, which must show requests for every
//! demo service and mTLS on every edge (web → emoji, web → voting,
//! vote-bot → web), in the lab (root) and on loopback (the no-root
//! fallback). The `-o json` answers are checked (`--json-dir`), and the
//! printed tables. Nothing is left behind.

mod support;

use pimesh_test_support::TempDir;
use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use support::*;

/// The demo's services (scraped) and edges.
const SERVICES: [&str; 3] = ["emoji", "voting", "web"];
const EDGES: [(&str, &str); 3] = [("web", "emoji"), ("web", "voting"), ("vote-bot", "web")];

/// Runs the demo (as nobody when `as_nobody`), its JSON answers into
/// `json_dir`; returns its stdout.
fn demo(extra: &[&str], as_nobody: bool, json_dir: &Path) -> String {
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
    .arg("--json-dir")
    .arg(json_dir)
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

/// A directory for the JSON answers that uid 65534 (nobody) can write
/// to, removed on drop.
fn answers_dir() -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = TempDir::new("lab-demo");
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

fn json(dir: &Path, file: &str, out: &str) -> Vec<Value> {
    let text =
        std::fs::read_to_string(dir.join(file)).unwrap_or_else(|e| panic!("{file}: {e}\n{out}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{file}: {e}\n{text}\n{out}"))
}

/// The stat and edges answers show every service with requests (voting
/// with failures too: the demo fails votes for :doughnut:) and every edge
/// secured by mTLS; so do the printed tables.
fn assert_meshed(dir: &Path, out: &str) {
    let stat = json(dir, "stat.json", out);
    for svc in SERVICES {
        let row = stat
            .iter()
            .find(|r| r["name"] == svc && r["namespace"] == "emojivoto")
            .unwrap_or_else(|| panic!("no stat row for {svc}:\n{stat:?}\n{out}"));
        assert_eq!(row["meshed"], "1/1", "{svc}: {row}");
        assert!(row["requests"].as_u64() > Some(0), "{svc}: {row}\n{out}");
        assert!(row["rps"].as_f64() > Some(0.0), "{svc}: {row}");
        assert!(row["success"].as_f64() > Some(0.0), "{svc}: {row}");
    }
    let edges = json(dir, "edges.json", out);
    for (src, dst) in EDGES {
        let row = edges
            .iter()
            .find(|r| r["src"] == src && r["dst"] == dst)
            .unwrap_or_else(|| panic!("no edge {src} -> {dst}:\n{edges:?}\n{out}"));
        assert_eq!(row["secured"], true, "{src} -> {dst}: {row}");
        assert_eq!(
            row["client_id"],
            format!("{src}.emojivoto.serviceaccount.identity.pimesh.cluster.local"),
            "{row}"
        );
        assert!(row["requests"].as_u64() > Some(0), "{row}");
        // The printed table: the same edge, ✓ in SECURED.
        assert!(
            out.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.first() == Some(&src) && w.get(1) == Some(&dst) && w.last() == Some(&"✓")
            }),
            "no secured {src} -> {dst} line in\n{out}"
        );
    }
    for row in &edges {
        assert_eq!(row["secured"], true, "an edge without mTLS: {row}\n{out}");
    }
    // The command to try, as pasted: `pimesh` is not on PATH in a fresh
    // clone, so it is named by the absolute path of the binary that ran.
    let tried = out
        .lines()
        .find_map(|l| {
            l.strip_prefix("$ ")
                .filter(|c| c.contains(" stat deploy -n emojivoto"))
        })
        .unwrap_or_else(|| panic!("no `$ … stat deploy -n emojivoto` line in\n{out}"));
    let bin = tried.split_whitespace().next().unwrap_or_default();
    assert!(
        bin == "pimesh"
            || (std::path::Path::new(bin).is_absolute() && std::path::Path::new(bin).is_file()),
        "`{bin}` is neither on PATH nor an absolute path to the binary:\n{out}"
    );
    assert!(out.contains("/dashboard"), "{out}");
}

#[test]
fn demo_in_the_lab_has_mtls_on_every_edge() {
    if !root_or_skip() {
        return;
    }
    let _ = bins();
    let rules = host_rule_count();
    let id = test_id();
    let dir = answers_dir();
    let out = demo(&["--id", &id], false, dir.path());
    assert_meshed(dir.path(), &out);
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
    let dir = answers_dir();
    let out = demo(&["--loopback"], nobody_python, dir.path());
    assert!(out.contains("loopback mode (no root)"), "{out}");
    assert_meshed(dir.path(), &out);
}

/// `pimesh-lab demo --kube`: the same demo as Kubernetes manifests through
/// the test API server, injected by the controller's webhook and run by
/// the node agent; the same stat and edges, and the meshed Job completes
/// with its proxy stopped. Nothing is left behind (namespaces, links,
/// rules, the mount points of the pods' volumes).
#[test]
fn demo_through_kubernetes_is_meshed_and_its_job_completes() {
    if !root_or_skip() {
        return;
    }
    let _ = bins();
    let rules = host_rule_count();
    let id = test_id();
    let dir = answers_dir();
    let out = demo(&["--id", &id, "--kube"], false, dir.path());
    assert_meshed(dir.path(), &out);
    for pod in ["emoji", "voting", "web", "vote-bot"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(pod) && l.contains(" 2/2 ") && l.contains("Running")),
            "{pod} is not running with its proxy:\n{out}"
        );
    }
    let job = out
        .lines()
        .find(|l| l.contains("meshed Job vote-burst complete"))
        .unwrap_or_else(|| panic!("the Job did not complete:\n{out}"));
    assert!(job.contains("phase=Succeeded"), "{job}");
    assert!(
        job.contains("\"terminated\":{\"exitCode\":0"),
        "the Job's proxy did not stop: {job}"
    );
    assert_nothing_left(&id, rules);
    for p in ["/var/run/secrets/pimesh.io", "/var/run/pimesh"] {
        assert!(!Path::new(p).exists(), "{p} left behind");
    }
}
