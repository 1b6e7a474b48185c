//! `pimesh-proxy init` in network namespaces the tests create: the rules it
//! writes match a checked-in expectation on both iptables backends, a
//! second run changes nothing, `--remove` undoes them, `auto` picks the
//! backend that holds the node's rules, and bad input is refused. (Traffic
//! through these rules, with the proxy's uid not looped back, is tested in
//! `transparent.rs`.) Needs root.

mod support;

use std::process::{Command, Output};
use std::time::Duration;
use support::*;

/// A network namespace, deleted on drop.
struct Netns(String);

impl Netns {
    fn new(tag: &str) -> Option<Netns> {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .map(|o| o.stdout.starts_with(b"0\n"))
            .unwrap_or(false);
        if !root {
            assert!(
                std::env::var_os("PIMESH_SKIP_NETNS_TESTS").is_some(),
                "init tests need root; set PIMESH_SKIP_NETNS_TESTS=1 to skip them knowingly"
            );
            return None;
        }
        let name = format!("pmi-{tag}-{}", std::process::id());
        assert!(Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .unwrap()
            .success());
        Some(Netns(name))
    }

    fn init(&self, args: &[&str]) -> Output {
        run(
            cmd(Some(&self.0), proxy_bin()).arg("init").args(args),
            Duration::from_secs(20),
        )
    }

    fn save(&self, backend: &str) -> String {
        let out = run(
            cmd(Some(&self.0), &format!("iptables-{backend}-save")).args(["-t", "nat"]),
            Duration::from_secs(20),
        );
        assert!(out.status.success());
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

const ARGS: [&str; 6] = [
    "--proxy-uid",
    "65534",
    "--outbound-ports-to-ignore",
    "8086",
    "--subnets-to-ignore",
    "10.43.0.0/16",
];

#[test]
fn rules_match_the_expectation_on_both_backends_and_are_idempotent() {
    let expected = include_str!("expected/init-nat.rules");
    for backend in ["legacy", "nft"] {
        let Some(ns) = Netns::new(backend) else {
            return;
        };
        let mode = ["--iptables-mode", backend];
        for _ in 0..2 {
            let out = ns.init(&[ARGS.as_slice(), &mode].concat());
            assert!(
                out.status.success(),
                "{backend}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("iptables-{backend}")));
        }
        assert_eq!(
            ns.save(backend),
            expected,
            "iptables-{backend}-save after two runs"
        );
        let out = ns.init(&["--remove", "--iptables-mode", backend]);
        assert!(out.status.success());
        let left = ns.save(backend);
        assert!(!left.contains("PIMESH"), "{left}");
        let out = ns.init(&["--remove", "--iptables-mode", backend]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("no pimesh rules to remove"));
    }
}

#[test]
fn auto_uses_the_backend_that_holds_the_nodes_rules() {
    let Some(ns) = Netns::new("auto") else { return };
    // Empty everywhere: nft.
    let out = ns.init(&ARGS);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("iptables-nft"),
        "{out:?}"
    );
    assert!(ns.init(&["--remove"]).status.success());
    // A node whose CNI wrote legacy rules: legacy.
    for rule in ["-A INPUT -j ACCEPT", "-A FORWARD -j ACCEPT"] {
        let mut c = cmd(Some(&ns.0), "iptables-legacy");
        c.args(rule.split_whitespace());
        assert!(run(&mut c, Duration::from_secs(10)).status.success());
    }
    let out = ns.init(&ARGS);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("iptables-legacy"),
        "{out:?}"
    );
    assert_eq!(ns.save("legacy"), include_str!("expected/init-nat.rules"));
    assert!(!ns.save("nft").contains("PIMESH"));
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    // A bad port in a flag or in the environment: exit 64 naming it.
    let out = run(
        Command::new(proxy_bin()).args(["init", "--inbound-ports-to-ignore", "4191,abc"]),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--inbound-ports-to-ignore") && err.contains("abc"),
        "{err}"
    );
    let out = run(
        Command::new(proxy_bin())
            .arg("init")
            .env("PIMESH_INIT_OUTBOUND_PORTS_TO_IGNORE", "70000"),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("70000"));
    let out = run(
        Command::new(proxy_bin()).args(["init", "--subnets-to-ignore", "10.0.0.0/40"]),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(64));
    // Neither backend on PATH: a clear error, nothing changed.
    let out = run(
        Command::new(proxy_bin())
            .arg("init")
            .env("PATH", "/nonexistent"),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no usable iptables backend"),
        "{out:?}"
    );
}
