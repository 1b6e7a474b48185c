//! What a run found, as written to `report.json` (and read back as a
//! baseline): settings, one [`Run`] per scenario × protocol × proxy with
//! its steps, the idle-connection figures, and the targets next to
//! the measured figures.

mod targets;

use crate::cgroup::Throttling;
use crate::config::{Protocol, Scenario};
use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// The whole report.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    /// `pimesh-bench VERSION`.
    pub tool: String,
    /// Start of the run, seconds since the Unix epoch.
    pub started_unix: u64,
    pub machine: Machine,
    pub settings: Settings,
    pub runs: Vec<Run>,
    pub idle_conns: Vec<IdleFigure>,
    /// The standalone controller's memory (absent from older reports, and
    /// when no `pimesh` binary was there).
    #[serde(default)]
    pub controller: Option<ControllerFigure>,
    pub targets: Vec<TargetRow>,
}

/// Where it ran.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    /// The harness's architecture (`x86_64`, `aarch64`).
    pub arch: String,
    /// CPUs available to the harness.
    pub cpus: usize,
    /// `uname -r`.
    pub kernel: String,
    /// A binary ran under qemu user-mode emulation: every timing and
    /// memory figure is meaningless (correctness only).
    pub emulated: bool,
}

/// How it ran.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    pub short: bool,
    /// Fixed rates, requests per second, ascending.
    pub rates: Vec<f64>,
    /// Seconds per step (each fixed rate, and saturation).
    pub step_seconds: f64,
    /// HTTP/1.1 connections, or HTTP/2 concurrent streams.
    pub conns: usize,
    pub h2_conns: usize,
    /// Response body bytes.
    pub payload_bytes: u64,
    /// `nginx` or `builtin`.
    pub upstream: String,
    /// `v1`, `v2`, or `None` (`--no-cgroup`: no limits).
    pub cgroup: Option<String>,
    /// Memory limit per proxy, bytes (with a cgroup).
    pub memory_bytes: u64,
    /// Memory limit during the idle-connection figure, bytes.
    pub idle_memory_bytes: u64,
    /// CPU limit per proxy, CPUs (with a cgroup).
    pub cpus: f64,
    /// Whether VmHWM was reset before each step (else peaks are since start).
    pub hwm_reset: bool,
    pub client_threads: usize,
}

/// One scenario × protocol × proxy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Run {
    /// `none` (direct), `pimesh`, or a peer's name.
    pub proxy: String,
    pub scenario: Scenario,
    pub protocol: Protocol,
    /// Proxy processes (role and VmRSS after start-up, before any traffic).
    pub processes: Vec<ProcIdle>,
    pub steps: Vec<Step>,
    /// OOM kills in the proxies' cgroups over the run.
    pub oom_kills: u64,
    /// CPU throttling of the proxies' cgroups over the run (sum).
    pub throttling: Option<Throttling>,
    /// Mesh only: requests the inbound proxy counted with `tls="true"`.
    pub mtls_requests: Option<u64>,
    /// Why the run could not start or a proxy died during it.
    pub failure: Option<String>,
}

/// A proxy process at rest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcIdle {
    /// `inbound`, `outbound` (pimesh) or `proxy` (a peer).
    pub role: String,
    pub idle_rss_kib: u64,
}

/// One load step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    /// `fixed` (open loop at `target_rps`) or `saturation` (closed loop).
    pub mode: String,
    pub target_rps: Option<f64>,
    /// Wall time until the last response, seconds.
    pub seconds: f64,
    /// Successful requests.
    pub requests: u64,
    pub errors: u64,
    /// Scheduled requests never sent (the client fell too far behind).
    pub missed: u64,
    pub achieved_rps: f64,
    pub latency_us: Latency,
    /// Proxy CPU (user + system, all proxies of the path) per successful
    /// request, microseconds; `None` without a proxy.
    pub cpu_us_per_request: Option<f64>,
    pub per_process: Vec<ProcStep>,
    /// CPU throttling during the step (sum over the proxies).
    pub throttling: Option<Throttling>,
    /// CPUs other processes on the machine kept busy during the step
    /// (from /proc/stat, the benchmark's own processes excluded): at
    /// [`BUSY_CPUS`] or more the figures are noisy.
    #[serde(default)]
    pub other_cpus: Option<f64>,
    pub first_error: Option<String>,
}

/// Other processes' CPU use from which a step is flagged as noisy.
pub const BUSY_CPUS: f64 = 0.1;

impl Step {
    /// Peak RSS of the largest proxy process in the step, KiB.
    pub fn peak_rss_kib(&self) -> Option<u64> {
        self.per_process.iter().map(|p| p.peak_rss_kib).max()
    }
}

/// One proxy process during a step.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ProcStep {
    pub role: String,
    /// CPU time, milliseconds.
    pub cpu_ms: f64,
    /// VmHWM at the end of the step, KiB.
    pub peak_rss_kib: u64,
}

/// Latency percentiles, microseconds.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl Latency {
    /// Percentiles of a histogram of nanoseconds.
    pub fn from_ns(h: &Histogram<u64>) -> Latency {
        if h.is_empty() {
            return Latency::default();
        }
        let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
        Latency {
            p50: us(0.5),
            p90: us(0.9),
            p99: us(0.99),
            p999: us(0.999),
            max: h.max() as f64 / 1e3,
        }
    }
}

/// The idle-connection figure of one proxy.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdleFigure {
    pub proxy: String,
    pub requested: usize,
    /// Connections open (request answered) when `rss_kib` was read.
    pub open: usize,
    pub failed: usize,
    /// The connections' HTTP version (reports before it was recorded:
    /// HTTP/1.1).
    #[serde(default = "http1")]
    pub protocol: Protocol,
    /// What each connection did.
    pub mode: String,
    /// VmRSS before the connections, KiB.
    pub rss_before_kib: u64,
    /// VmRSS with `open` connections open, KiB (the last reading before
    /// the proxy died, if it did).
    pub rss_kib: u64,
    /// (rss - rss_before) / open, bytes.
    pub bytes_per_conn: Option<f64>,
    /// Peak memory of the cgroup (page cache and kernel memory included).
    pub cgroup_peak_bytes: Option<u64>,
    pub oom_kills: u64,
    /// How the proxy ended while connections were opened (OOM: "killed by
    /// signal 9 ...").
    #[serde(default)]
    pub died: Option<String>,
    pub first_error: Option<String>,
}

/// What an [`IdleFigure`] read from a report without `protocol` measured.
fn http1() -> Protocol {
    Protocol::H1
}

/// The standalone controller's memory: at rest, then with simulated
/// proxies registered and scraped ([`crate::controller`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ControllerFigure {
    /// Simulated proxies registered (0: the idle figure only).
    pub proxies: usize,
    /// VmRSS at rest (CA created, nothing registered), KiB.
    pub idle_rss_kib: u64,
    /// VmHWM at rest (start-up included), KiB.
    pub idle_hwm_kib: u64,
    /// Seconds the proxies were scraped before `rss_kib` was read.
    pub scraped_seconds: f64,
    /// Simulated proxies whose `/metrics` the controller fetched at least once.
    pub scraped: usize,
    /// Largest VmRSS sampled while the proxies were scraped, KiB.
    pub rss_kib: Option<u64>,
    /// Scrape rounds every proxy went through (the least-scraped one's count).
    #[serde(default)]
    pub rounds: u64,
    /// VmRSS once every proxy was scraped once, KiB: the start of the
    /// growth as the in-memory windows fill.
    #[serde(default)]
    pub first_round_rss_kib: Option<u64>,
    /// Points an hour's ring holds at the controller's default scrape
    /// interval (10 s: 360): until every proxy went through as many rounds
    /// the in-memory windows still grow, and the figure is no steady state.
    #[serde(default)]
    pub ring_rounds: u64,
    /// VmHWM at the end, KiB.
    pub hwm_kib: Option<u64>,
    /// The controller's threads at the last reading.
    pub threads: Option<u64>,
}

impl Report {
    /// The run of `proxy` in `scenario` over `protocol`.
    pub fn run(&self, proxy: &str, scenario: Scenario, protocol: Protocol) -> Option<&Run> {
        self.runs
            .iter()
            .find(|r| r.proxy == proxy && r.scenario == scenario && r.protocol == protocol)
    }
}

/// A figure next to its target from issue 7.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct TargetRow {
    pub figure: String,
    pub measured: Option<f64>,
    pub unit: String,
    /// `≤ 3 MiB`, ...
    pub target: String,
    /// `None`: not measured, or meaningless (emulated, too few connections).
    pub met: Option<bool>,
    pub note: String,
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    fn step(rate: Option<f64>, p99: f64, cpu: Option<f64>, hwm: u64) -> Step {
        Step {
            mode: if rate.is_some() {
                "fixed"
            } else {
                "saturation"
            }
            .into(),
            target_rps: rate,
            seconds: 1.0,
            requests: 100,
            errors: 0,
            missed: 0,
            achieved_rps: 100.0,
            latency_us: Latency {
                p99,
                ..Latency::default()
            },
            cpu_us_per_request: cpu,
            per_process: vec![ProcStep {
                role: "inbound".into(),
                cpu_ms: 1.0,
                peak_rss_kib: hwm,
            }],
            throttling: None,
            other_cpus: Some(0.0),
            first_error: None,
        }
    }

    fn run(proxy: &str, scenario: Scenario, steps: Vec<Step>, idle: u64) -> Run {
        Run {
            proxy: proxy.into(),
            scenario,
            protocol: Protocol::H1,
            processes: vec![ProcIdle {
                role: "inbound".into(),
                idle_rss_kib: idle,
            }],
            steps,
            oom_kills: 0,
            throttling: None,
            mtls_requests: None,
            failure: None,
        }
    }

    /// A small report for the other modules' tests.
    pub fn sample() -> Report {
        Report {
            tool: "pimesh-bench test".into(),
            started_unix: 0,
            machine: Machine {
                arch: "x86_64".into(),
                cpus: 2,
                kernel: "6.1".into(),
                emulated: false,
            },
            settings: Settings {
                short: true,
                rates: vec![1000.0],
                step_seconds: 1.0,
                conns: 16,
                h2_conns: 1,
                payload_bytes: 64,
                upstream: "builtin".into(),
                cgroup: None,
                memory_bytes: 32 << 20,
                idle_memory_bytes: 64 << 20,
                cpus: 0.5,
                hwm_reset: true,
                client_threads: 1,
            },
            runs: vec![
                run(
                    "none",
                    Scenario::Direct,
                    vec![step(Some(1000.0), 100.0, None, 0)],
                    0,
                ),
                run(
                    "pimesh",
                    Scenario::Inbound,
                    vec![
                        step(Some(1000.0), 150.0, Some(0.0), 4096),
                        step(None, 900.0, Some(18.0), 5000),
                    ],
                    2048,
                ),
                run(
                    "haproxy",
                    Scenario::Inbound,
                    vec![step(None, 800.0, Some(24.0), 9000)],
                    7000,
                ),
                run(
                    "pimesh",
                    Scenario::Mesh,
                    vec![step(Some(1000.0), 700.0, Some(30.0), 7168)],
                    3584,
                ),
            ],
            idle_conns: vec![IdleFigure {
                proxy: "pimesh".into(),
                requested: 200,
                open: 200,
                failed: 0,
                protocol: Protocol::H1,
                mode: "one request each".into(),
                rss_before_kib: 2048,
                rss_kib: 4096,
                bytes_per_conn: Some(10485.76),
                cgroup_peak_bytes: None,
                oom_kills: 0,
                died: None,
                first_error: None,
            }],
            controller: Some(ControllerFigure {
                proxies: 100,
                idle_rss_kib: 9 * 1024,
                idle_hwm_kib: 9 * 1024,
                scraped_seconds: 60.0,
                scraped: 100,
                rss_kib: Some(22 * 1024),
                rounds: 360,
                first_round_rss_kib: Some(12 * 1024),
                ring_rounds: 360,
                hwm_kib: Some(23 * 1024),
                threads: Some(10),
            }),
            targets: Vec::new(),
        }
    }

    #[test]
    fn json_round_trips() {
        let mut r = sample();
        r.compute_targets();
        let text = serde_json::to_string_pretty(&r).unwrap();
        let back: Report = serde_json::from_str(&text).unwrap();
        assert_eq!(back.runs.len(), 4);
        assert_eq!(back.runs[3].scenario, Scenario::Mesh);
        assert!(text.contains("\"scenario\": \"mesh\""));
    }
}
