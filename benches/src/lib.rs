//! pimesh's benchmarks: `pimesh-bench`, the mesh benchmark that runs the
//! proxies under Pi-like resource limits and reports latency, rate, CPU per
//! request and memory against a direct path and peer proxies (this library);
//! and the criterion micro-benchmarks in `benches/` (see README.md).
//!
//! Layout:
//! - `config`: the command line (clap) and its value parsers.
//! - `harness`: the run: scenarios × protocols × proxies, steps, progress, outputs.
//! - `scenario`: the paths (direct, inbound, mesh) and the standalone controller.
//! - `upstream`: nginx or the built-in hyper server at the end of the path.
//! - `peer`: peer proxies from command-line templates (haproxy, nginx built in).
//! - `load`: the open-loop / closed-loop HTTP/1.1 and HTTP/2 client (HdrHistogram).
//! - `idle`: idle connections and the file-descriptor limit.
//! - `process`: child processes, qemu fallback, /proc CPU and RSS figures.
//! - `cgroup`: cgroup v1/v2 memory and CPU limits, OOM kills, throttling.
//! - `report`: the report (report.json) and the targets of issue 7.
//! - `markdown`, `svg`: report.md and the latency plots.
//! - `baseline`: ratios against a saved report.json.
//! - `criterion_ratios`: ratio tables for the criterion benches.

pub mod baseline;
pub mod cgroup;
pub mod config;
pub mod criterion_ratios;
pub mod harness;
pub mod idle;
pub mod load;
pub mod markdown;
pub mod peer;
pub mod process;
pub mod report;
pub mod scenario;
pub mod svg;
pub mod upstream;

/// `error: source: source...` in one line.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}
