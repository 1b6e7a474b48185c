//! Linkerd's default inbound policies (`PIMESH_PROXY_INBOUND_DEFAULT_POLICY`)
//! enforced by real proxies with identities from a real standalone
//! controller: every policy × every kind of client × HTTP, gRPC and opaque
//! TCP, each cell allowed or denied as Linkerd documents it
//! (linkerd.io/2/reference/authorization-policy, "Default policies").
//! HTTP is refused with 403, gRPC with `PERMISSION_DENIED`, TCP by closing
//! the connection before the app sees a byte; each verdict is counted in
//! `inbound_{http,tcp}_authz_{allow,deny}_total`.
//!
//! The cluster networks are `127.0.0.0/25`: meshed clients' proxies and
//! the plaintext client "in the cluster" connect from 127.0.0.1, the one
//! "outside" from 127.0.0.200 (all of 127/8 is local on Linux).

mod support;

use socket2::{Domain, Socket, Type};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;
use support::*;

const CLUSTER_NETWORKS: &str = "127.0.0.0/25";
const INSIDE: &str = "127.0.0.1";
const OUTSIDE: &str = "127.0.0.200";

const POLICIES: [&str; 6] = [
    "all-unauthenticated",
    "all-authenticated",
    "cluster-unauthenticated",
    "cluster-authenticated",
    "deny",
    "audit",
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Client {
    /// A meshed client in the server's namespace (shop/web), in the cluster.
    Meshed,
    /// A meshed client of another namespace (other/web), in the cluster.
    MeshedOtherNamespace,
    /// Plaintext from an address in the cluster networks.
    PlaintextInCluster,
    /// Plaintext from an address outside them.
    PlaintextOutside,
}

const CLIENTS: [Client; 4] = [
    Client::Meshed,
    Client::MeshedOtherNamespace,
    Client::PlaintextInCluster,
    Client::PlaintextOutside,
];

#[derive(Clone, Copy, Debug, PartialEq)]
enum Proto {
    Http,
    Grpc,
    Tcp,
}

const PROTOS: [Proto; 3] = [Proto::Http, Proto::Grpc, Proto::Tcp];

/// Linkerd's documentation, written out (not computed by the code under
/// test): all-unauthenticated and audit admit everyone; all-authenticated
/// meshed clients from anywhere; cluster-unauthenticated anyone in the
/// cluster networks; cluster-authenticated meshed clients in them; deny
/// no one. A policy decides the same for every protocol.
fn linkerd_documents(policy: &str, client: Client) -> bool {
    use Client::*;
    match (policy, client) {
        ("all-unauthenticated" | "audit", _) => true,
        ("all-authenticated", Meshed | MeshedOtherNamespace) => true,
        ("all-authenticated", _) => false,
        ("cluster-unauthenticated", PlaintextOutside) => false,
        ("cluster-unauthenticated", _) => true,
        ("cluster-authenticated", Meshed | MeshedOtherNamespace) => true,
        ("cluster-authenticated", _) => false,
        ("deny", _) => false,
        _ => unreachable!("{policy}"),
    }
}

/// One server proxy: a policy in front of one protocol's app, and the
/// address meshed clients use for it (a mesh destination key).
struct Server {
    policy: &'static str,
    proto: Proto,
    proxy: Proxy,
    dest: SocketAddr,
}

/// A TCP connection to `to` from the local address `from`.
fn connect_from(from: &str, to: SocketAddr) -> TcpStream {
    let s = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let src: SocketAddr = format!("{from}:0").parse().unwrap();
    s.bind(&src.into()).unwrap();
    s.connect_timeout(&to.into(), Duration::from_secs(5))
        .unwrap();
    let s: TcpStream = s.into();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    s
}

/// Sends `payload`, half-closes, reads to EOF (or a reset: nothing).
fn echo_over(mut s: TcpStream, payload: &[u8]) -> Vec<u8> {
    let _ = s.write_all(payload);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// A gRPC unary call's request body: one uncompressed message (gRPC over
/// HTTP/2: flag, 4-byte big-endian length, bytes).
fn grpc_body(dir: &std::path::Path) -> String {
    let path = dir.join("grpc-request.bin");
    let msg = b"policy";
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(msg);
    std::fs::write(&path, body).unwrap();
    format!("@{}", path.display())
}

/// The `grpc-status` curl saw (headers or trailers, from its `-v` log).
fn grpc_status(stderr: &str) -> Option<u32> {
    stderr
        .lines()
        .filter_map(|l| l.strip_prefix("< grpc-status: "))
        .filter_map(|v| v.trim().parse().ok())
        .next_back()
}

struct Clients {
    meshed: Proxy,
    other_ns: Proxy,
    grpc_body: String,
}

impl Clients {
    /// Whether `client` got through `server` to its app, and asserts that
    /// a refusal looks as it must (403, `PERMISSION_DENIED`, a closed
    /// connection), not like some other failure.
    fn attempt(&self, server: &Server, client: Client) -> bool {
        let via = match client {
            Client::Meshed => Some(&self.meshed),
            Client::MeshedOtherNamespace => Some(&self.other_ns),
            _ => None,
        };
        let source = if client == Client::PlaintextOutside {
            OUTSIDE
        } else {
            INSIDE
        };
        let cell = format!("{} {:?} {:?}", server.policy, server.proto, client);
        match server.proto {
            Proto::Http => {
                let url;
                let mut args = vec!["-o", "/dev/null", "-w", "%{http_code}"];
                let proxy;
                match via {
                    Some(p) => {
                        proxy = format!("http://{}", p.outbound);
                        url = format!("http://{}/", server.dest);
                        args.extend(["-x", &proxy]);
                    }
                    None => {
                        url = format!("http://{}/", server.proxy.inbound);
                        args.extend(["--interface", source]);
                    }
                }
                args.push(&url);
                let (_, code, err) = curl(None, &args);
                match code.as_str() {
                    "200" => true,
                    "403" => false,
                    other => panic!("{cell}: HTTP {other:?} {err}\n{}", server.proxy.log()),
                }
            }
            Proto::Grpc => {
                let connect_to;
                let url;
                let mut args = vec![
                    "-v",
                    "--http2-prior-knowledge",
                    "-o",
                    "/dev/null",
                    "-H",
                    "content-type: application/grpc",
                    "-H",
                    "te: trailers",
                    "--data-binary",
                    &self.grpc_body,
                ];
                match via {
                    Some(p) => {
                        // HTTP/2 to the client's proxy, :authority the destination.
                        connect_to = format!(
                            "{}:{}:{}:{}",
                            server.dest.ip(),
                            server.dest.port(),
                            p.outbound.ip(),
                            p.outbound.port()
                        );
                        args.extend(["--connect-to", &connect_to]);
                        url = format!("http://{}/pimesh.test.Echo/Unary", server.dest);
                    }
                    None => {
                        args.extend(["--interface", source]);
                        url = format!("http://{}/pimesh.test.Echo/Unary", server.proxy.inbound);
                    }
                }
                args.push(&url);
                let (_, _, err) = curl(None, &args);
                match grpc_status(&err) {
                    Some(0) => true,
                    Some(7) => false,
                    other => panic!(
                        "{cell}: grpc-status {other:?}\n{err}\n{}",
                        server.proxy.log()
                    ),
                }
            }
            Proto::Tcp => {
                let payload = format!("hello from {cell}\n").into_bytes();
                let echoed = match via {
                    Some(p) => {
                        let mut s = connect_from(INSIDE, p.outbound);
                        let head =
                            format!("CONNECT {0} HTTP/1.1\r\nHost: {0}\r\n\r\n", server.dest);
                        s.write_all(head.as_bytes()).unwrap();
                        let mut got = Vec::new();
                        let mut byte = [0u8; 1];
                        while !got.ends_with(b"\r\n\r\n") {
                            match s.read(&mut byte) {
                                Ok(1) => got.push(byte[0]),
                                _ => panic!("{cell}: no CONNECT answer: {got:?}"),
                            }
                        }
                        let head = String::from_utf8_lossy(&got);
                        assert!(head.starts_with("HTTP/1.1 200"), "{cell}: {head}");
                        echo_over(s, &payload)
                    }
                    None => echo_over(connect_from(source, server.proxy.inbound), &payload),
                };
                if echoed == payload {
                    true
                } else {
                    assert!(
                        echoed.is_empty(),
                        "{cell}: a refusal must send nothing: {echoed:?}"
                    );
                    false
                }
            }
        }
    }
}

#[test]
fn default_policies_admit_clients_as_linkerd_documents() {
    let ctl = Controller::start(&[]);
    let dir = TempDir::new("policy");
    let nginx = Nginx::start(None, "127.0.0.1");
    let grpc = PyPeer::start("grpc_echo.py");
    let tcp = TcpEcho::start(None);
    let apps = [
        (Proto::Http, format!("127.0.0.1:{}", nginx.port)),
        (Proto::Grpc, format!("127.0.0.1:{}", grpc.port)),
        (Proto::Tcp, tcp.addr.to_string()),
    ];

    let mut servers = Vec::new();
    for (i, policy) in POLICIES.iter().enumerate() {
        for (j, (proto, app)) in apps.iter().enumerate() {
            let proxy = meshed_proxy(
                &ctl.proxy_env("shop/api"),
                &[
                    ("PIMESH_PROXY_INBOUND_TARGET", app),
                    ("PIMESH_PROXY_INBOUND_DEFAULT_POLICY", policy),
                    ("PIMESH_PROXY_POLICY_CLUSTER_NETWORKS", CLUSTER_NETWORKS),
                ],
            );
            // A key for meshed clients: nothing listens there, their
            // proxies send it over mTLS to this proxy.
            let dest: SocketAddr = format!("127.0.1.{}:80", 1 + i * PROTOS.len() + j)
                .parse()
                .unwrap();
            servers.push(Server {
                policy,
                proto: *proto,
                proxy,
                dest,
            });
        }
    }
    let dests: Vec<String> = servers
        .iter()
        .map(|s| format!("{}=shop/api@{}", s.dest, s.proxy.inbound))
        .collect();
    let dests = dests.join(",");
    let clients = Clients {
        meshed: meshed_proxy(
            &ctl.proxy_env("shop/web"),
            &[("PIMESH_PROXY_MESH_DESTINATIONS", &dests)],
        ),
        other_ns: meshed_proxy(
            &ctl.proxy_env("other/web"),
            &[("PIMESH_PROXY_MESH_DESTINATIONS", &dests)],
        ),
        grpc_body: grpc_body(dir.path()),
    };

    let mut table =
        String::from("policy                   proto  client                  expected  got\n");
    let mut wrong = 0;
    for server in &servers {
        let mut allowed = 0.0;
        for client in CLIENTS {
            let want = linkerd_documents(server.policy, client);
            let got = clients.attempt(server, client);
            if want != got {
                wrong += 1;
            }
            if got {
                allowed += 1.0;
            }
            let verdict = |b: bool| if b { "allow" } else { "deny" };
            table.push_str(&format!(
                "{:<24} {:<6} {:<23} {:<9} {}{}\n",
                server.policy,
                format!("{:?}", server.proto),
                format!("{client:?}"),
                verdict(want),
                verdict(got),
                if want == got { "" } else { "   <-- wrong" }
            ));
        }
        // Counted as Linkerd counts: per request (HTTP, gRPC), per
        // connection (TCP), labelled with the policy as the server.
        let kind = if server.proto == Proto::Tcp {
            "tcp"
        } else {
            "http"
        };
        let text = server.proxy.metrics();
        let labels = [("srv_kind", "default"), ("srv_name", server.policy)];
        let allow = sum_metric(&text, &format!("inbound_{kind}_authz_allow_total"), &labels);
        let deny = sum_metric(&text, &format!("inbound_{kind}_authz_deny_total"), &labels);
        assert_eq!(
            (allow, deny),
            (allowed, CLIENTS.len() as f64 - allowed),
            "{} {:?}: counters\n{text}",
            server.policy,
            server.proto
        );
        if allowed > 0.0 {
            let authz = [("authz_kind", "default"), ("authz_name", server.policy)];
            assert_eq!(
                sum_metric(&text, &format!("inbound_{kind}_authz_allow_total"), &authz),
                allowed,
                "{text}"
            );
        }
    }
    println!("{table}");
    assert_eq!(wrong, 0, "cells unlike Linkerd's documentation:\n{table}");
    assert_eq!(servers.len() * CLIENTS.len(), 72);
}

#[test]
fn a_bad_policy_name_or_network_is_refused_at_start() {
    for (name, value) in [
        ("PIMESH_PROXY_INBOUND_DEFAULT_POLICY", "allow-all"),
        ("PIMESH_PROXY_POLICY_CLUSTER_NETWORKS", "10.0.0.1/8"),
        ("PIMESH_PROXY_POLICY_CLUSTER_NETWORKS", "10.0.0.0/8,banana"),
    ] {
        let out = run(
            std::process::Command::new(proxy_bin()).env(name, value),
            Duration::from_secs(10),
        );
        assert_eq!(out.status.code(), Some(64), "{name}={value}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(name), "{err}");
    }
}
