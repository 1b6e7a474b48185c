//! `pimesh-proxy init` in network namespaces the tests create: the rules it
//! writes (iptables and ip6tables) match checked-in expectations on both
//! backends, a second run changes nothing, `--remove` undoes them,
//! `--ipv6=false` leaves IPv6 alone, `auto` picks the backend that holds
//! the node's rules, IPv6 traffic is redirected both ways without looping
//! the proxy's own connections, and bad input is refused. (IPv4 traffic
//! through these rules is tested in `transparent.rs`.) Needs root.

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
        self.save_tool(&format!("iptables-{backend}-save"))
    }

    fn save6(&self, backend: &str) -> String {
        self.save_tool(&format!("ip6tables-{backend}-save"))
    }

    fn save_tool(&self, tool: &str) -> String {
        let out = run(
            cmd(Some(&self.0), tool).args(["-t", "nat"]),
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
    "10.43.0.0/16,fd00:10:43::/112",
];

#[test]
fn rules_match_the_expectation_on_both_backends_and_are_idempotent() {
    let expected = include_str!("expected/init-nat.rules");
    let expected6 = include_str!("expected/init-nat6.rules");
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
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.contains(&format!("iptables-{backend}, ip6tables-{backend}")),
                "{stdout}"
            );
        }
        assert_eq!(
            ns.save(backend),
            expected,
            "iptables-{backend}-save after two runs"
        );
        assert_eq!(
            ns.save6(backend),
            expected6,
            "ip6tables-{backend}-save after two runs"
        );
        let out = ns.init(&["--remove", "--iptables-mode", backend]);
        assert!(out.status.success());
        let left = ns.save(backend) + &ns.save6(backend);
        assert!(!left.contains("PIMESH"), "{left}");
        let out = ns.init(&["--remove", "--iptables-mode", backend]);
        assert!(String::from_utf8_lossy(&out.stdout).contains("no pimesh rules to remove"));
    }
}

#[test]
fn ipv6_false_leaves_ip6tables_alone() {
    let Some(ns) = Netns::new("no6") else { return };
    for flag in [&["--ipv6=false"][..], &["--ipv6", "no"][..]] {
        let out = ns.init(&[ARGS.as_slice(), flag, &["--iptables-mode", "nft"]].concat());
        assert!(out.status.success(), "{out:?}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("ip6tables"),
            "{out:?}"
        );
        assert_eq!(ns.save("nft"), include_str!("expected/init-nat.rules"));
        assert!(!ns.save6("nft").contains("PIMESH"));
    }
    // The variable does the same; a bad value is refused naming it.
    let mut c = cmd(Some(&ns.0), proxy_bin());
    c.args(["init", "--remove"])
        .env("PIMESH_INIT_IPV6", "false");
    assert!(run(&mut c, Duration::from_secs(20)).status.success());
    assert!(!ns.save("nft").contains("PIMESH"));
    let out = run(
        Command::new(proxy_bin()).args(["init", "--ipv6=maybe"]),
        Duration::from_secs(10),
    );
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("maybe"),
        "{out:?}"
    );
}

/// Two namespaces on a veth pair with IPv6 addresses only: `pod` has the
/// rules and a proxy (uid 65534, dual-stack listeners), `client` the peer.
#[test]
fn ipv6_traffic_is_redirected_both_ways_without_loops() {
    let Some(client) = Netns::new("c6") else {
        return;
    };
    let pod = Netns::new("p6").unwrap();
    let ip = |args: &[&str]| {
        let out = run(Command::new("ip").args(args), Duration::from_secs(20));
        assert!(out.status.success(), "ip {args:?}: {out:?}");
    };
    ip(&[
        "link", "add", "eth0", "netns", &client.0, "type", "veth", "peer", "name", "eth0", "netns",
        &pod.0,
    ]);
    for (ns, addr) in [(&client.0, "fd00:6::1/64"), (&pod.0, "fd00:6::2/64")] {
        ip(&["-n", ns, "link", "set", "lo", "up"]);
        ip(&["-n", ns, "addr", "add", addr, "dev", "eth0", "nodad"]);
        ip(&["-n", ns, "link", "set", "eth0", "up"]);
    }
    let out = pod.init(&["--proxy-uid", "65534"]);
    assert!(out.status.success(), "{out:?}");
    let _remote = Nginx::start(Some(&client.0), "[::]");
    let _app = Nginx::start(Some(&pod.0), "0.0.0.0");
    let mut proxy = Proxy::start_in(
        Some(&pod.0),
        &[
            "setpriv",
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
        ],
        &[
            ("PIMESH_PROXY_INBOUND_LISTEN_ADDR", "[::]:4143"),
            ("PIMESH_PROXY_OUTBOUND_LISTEN_ADDR", "[::]:4140"),
            ("PIMESH_PROXY_ADMIN_LISTEN_ADDR", "127.0.0.1:4191"),
        ],
    );
    // Outbound: the pod's app (curl as root) dials the other host's IPv6
    // address; the proxy (uid 65534) reaches it without being redirected.
    let (ok, out, err) = curl(Some(&pod.0), &["-g", "http://[fd00:6::1]:8080/"]);
    assert!(ok, "{err}");
    assert_eq!(out, "hello from nginx\n");
    // Inbound: the other host dials the pod's IPv6 address.
    let (ok, out, err) = curl(
        Some(&client.0),
        &["-g", "http://[fd00:6::2]:8080/", "http://[fd00:6::2]:8080/"],
    );
    assert!(ok, "{err}");
    assert_eq!(out, "hello from nginx\n".repeat(2));
    let m = proxy.metrics();
    let out_ok = [
        ("direction", "outbound"),
        ("target_addr", "[fd00:6::1]:8080"),
    ];
    assert_eq!(sum_metric(&m, "request_total", &out_ok), 1.0, "{m}");
    let in_ok = [
        ("direction", "inbound"),
        ("target_addr", "[fd00:6::2]:8080"),
    ];
    assert_eq!(sum_metric(&m, "request_total", &in_ok), 2.0, "{m}");
    // A redirect loop would show up as extra requests.
    assert_eq!(sum_metric(&m, "request_total", &[]), 3.0, "{m}");
    proxy.assert_healthy();
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
