//! Test support for the lab's tests: the binaries (`pimesh-proxy` and
//! `pimesh` built on demand beside `pimesh-lab`), the root check, and what
//! a lab may leave on the host (namespaces, links, processes, lock files,
//! the host's iptables rules), to compare before and after.
#![allow(dead_code)]

use pimesh_lab::{net, Bins};
use pimesh_test_support::eventually_every;
pub use pimesh_test_support::run;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// `pimesh-lab`.
pub fn lab_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pimesh-lab")
}

/// `pimesh-proxy` and `pimesh` in the directory `pimesh-lab` was built in
/// (`cargo nextest run --workspace` builds them there), built on demand
/// when missing. Not rebuilt when present: a build with other features
/// would relink them under the feet of tests running in parallel; after
/// changing the proxy or the controller, run the workspace's tests (or
/// build them) before this package's alone.
pub fn bins() -> Bins {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        if Bins::locate(Some(bin_dir())).is_ok() {
            return;
        }
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let out = run(
            Command::new(cargo)
                .args([
                    "build",
                    "-q",
                    "-p",
                    "pimesh-proxy",
                    "-p",
                    "pimesh-controller",
                ])
                .args(["--bin", "pimesh-proxy", "--bin", "pimesh"])
                .current_dir(env!("CARGO_MANIFEST_DIR")),
            Duration::from_secs(900),
        );
        assert!(
            out.status.success(),
            "building pimesh-proxy and pimesh: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    });
    Bins::locate(Some(bin_dir())).expect("pimesh-proxy and pimesh beside pimesh-lab")
}

pub fn bin_dir() -> &'static Path {
    Path::new(lab_bin()).parent().unwrap()
}

/// Whether the lab tests can run; they need root. Without root they fail
/// unless PIMESH_SKIP_NETNS_TESTS is set (as the proxy's transparent tests).
pub fn root_or_skip() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return true;
    }
    assert!(
        std::env::var_os("PIMESH_SKIP_NETNS_TESTS").is_some(),
        "the lab tests need root (ip netns, iptables); set PIMESH_SKIP_NETNS_TESTS=1 to skip them knowingly"
    );
    eprintln!("skipping: not root and PIMESH_SKIP_NETNS_TESTS is set");
    false
}

/// Pids of processes whose environment holds `PIMESH_LAB=<id>` (every
/// child a lab starts carries it).
pub fn lab_pids(id: &str) -> Vec<u32> {
    let needle = format!("PIMESH_LAB={id}\0");
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .map(|env| env.windows(needle.len()).any(|w| w == needle.as_bytes()))
                .unwrap_or(false)
        })
        .collect()
}

/// Rule lines (`-A …`) of the host's iptables and ip6tables, both backends.
pub fn host_rule_count() -> usize {
    let mut n = 0;
    for tool in [
        "iptables-legacy-save",
        "iptables-nft-save",
        "ip6tables-legacy-save",
        "ip6tables-nft-save",
    ] {
        if let Ok(out) = Command::new(tool).output() {
            n += String::from_utf8_lossy(&out.stdout)
                .lines()
                .filter(|l| l.starts_with("-A"))
                .count();
        }
    }
    n
}

/// What lab `id` has on the host: namespaces, links, processes, lock file.
pub fn leftovers(id: &str) -> Vec<String> {
    let prefix = format!("pml-{id}-");
    let mut left: Vec<String> = net::netns_list()
        .into_iter()
        .chain(net::link_list())
        .filter(|n| n.starts_with(&prefix))
        .collect();
    left.extend(lab_pids(id).into_iter().map(|p| format!("process {p}")));
    let lock = PathBuf::from(net::STATE_DIR).join(format!("{id}.lock"));
    if lock.exists() {
        left.push(lock.display().to_string());
    }
    left
}

/// Waits (10 s at most) until lab `id` left nothing; panics listing what is left.
pub fn assert_nothing_left(id: &str, rules_before: usize) {
    let end = Instant::now() + Duration::from_secs(10);
    loop {
        let left = leftovers(id);
        if left.is_empty() {
            break;
        }
        assert!(Instant::now() < end, "lab {id} left {left:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(
        host_rule_count(),
        rules_before,
        "the host's iptables rules changed"
    );
}

/// A fresh random lab id for one test.
pub fn test_id() -> String {
    net::random_id()
}

/// `proxy/tests/peers/<name>`: the Python gRPC and WebSocket peers.
pub fn peer(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../proxy/tests/peers")
        .join(name)
        .canonicalize()
        .unwrap()
}

/// Polls `f` every 100 ms (each call starts processes in namespaces)
/// until it holds (true) or `timeout` passes (false).
pub fn eventually(timeout: Duration, f: impl FnMut() -> bool) -> bool {
    eventually_every(Duration::from_millis(100), timeout, f)
}
