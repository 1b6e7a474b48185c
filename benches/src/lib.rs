//! pimesh's benchmarks: `pimesh-bench`, the mesh benchmark that runs the
//! proxies under Pi-like resource limits and reports latency, rate, CPU per
//! request and memory against a direct path and peer proxies (this library);
//! and the criterion micro-benchmarks in `benches/` (see README.md).
//!
//! Layout:
//! - `config`: the command line (clap) and its value parsers.
//! - `harness`: the run: scenarios × protocols × proxies, steps, progress, outputs.
//! - `scenario`: the paths (direct, inbound, mesh) and the standalone controller.
//! - `controller`: the standalone controller's memory, idle and with N proxies.
//! - `sim_proxy`: simulated proxies serving Linkerd-style `/metrics`.
//! - `upstream`: nginx or the built-in hyper server at the end of the path.
//! - `peer`: peer proxies from command-line templates (haproxy, nginx built in).
//! - `load`: the open-loop / closed-loop HTTP/1.1 and HTTP/2 client (HdrHistogram).
//! - `idle`: idle connections and the file-descriptor limit.
//! - `process`: child processes, qemu fallback, /proc CPU and RSS figures.
//! - `cgroup`: cgroup v1/v2 memory and CPU limits, OOM kills, throttling.
//! - `report`: the report (report.json) and the targets of issues 7 and 17.
//! - `markdown`, `svg`: report.md and the latency plots.
//! - `baseline`: ratios against a saved report.json.
//! - `criterion_ratios`: ratio tables for the criterion benches.
//! - `kube_objects`: the Kubernetes objects of `pimesh-kube-bench`'s scenarios.

pub mod baseline;
pub mod cgroup;
pub mod config;
pub mod controller;
pub mod criterion_ratios;
pub mod harness;
pub mod idle;
pub mod kube_objects;
pub mod load;
pub mod markdown;
pub mod peer;
pub mod process;
pub mod report;
pub mod scenario;
pub mod sim_proxy;
pub mod svg;
pub mod upstream;

pub use pimesh_api::text::error_chain;

/// `GET path` on `addr` (HTTP/1.0, 10 s read timeout): the status code and
/// the whole body; `None` when the request fails or the answer is not HTTP.
pub fn http_get(addr: &str, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let raw = String::from_utf8_lossy(&raw);
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}
