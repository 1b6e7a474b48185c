//! `pimesh-bench`'s command line (clap): what to run, under which limits,
//! and where the report goes; plus the parsers for sizes, CPU shares and
//! rate lists it accepts.

use clap::{Args as ClapArgs, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

/// Bad flag values, reported with the flag's name (exit code 64).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A size such as `32MiB` that does not parse.
    #[error("bad size {0:?} (bytes, or a number with KiB/MiB/GiB/K/M/G)")]
    Size(String),
    /// A CPU share that is not a positive number.
    #[error("bad CPU share {0:?} (a positive number of CPUs, e.g. 0.5)")]
    Cpus(String),
    /// A rate list entry that is not a positive number.
    #[error("bad rate {0:?} (requests per second, comma-separated)")]
    Rate(String),
    /// `--peer-bin` without `NAME=TEMPLATE`.
    #[error("bad --peer-bin {0:?}: expected NAME=TEMPLATE")]
    PeerBin(String),
}

/// pimesh-bench: pimesh's mesh benchmark. Starts an upstream, the proxies
/// (each in a cgroup with Pi-like limits) and a load client, then reports
/// latency, rate, CPU per request and memory against a direct connection
/// and against peer proxies.
#[derive(Debug, Parser)]
#[command(name = "pimesh-bench", version, about, long_about = None)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    #[command(flatten)]
    pub args: Args,
}

/// Internal helpers the harness starts as child processes.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The built-in upstream (HTTP/1.1 and h2c on two loopback ports); used
    /// by `--upstream builtin`, started by the harness itself
    #[command(hide = true)]
    Upstream {
        /// Response body size in bytes
        #[arg(long, default_value = "64", value_parser = parse_size)]
        payload: u64,
    },
}

/// HTTP version the load client speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1, one request at a time per connection.
    H1,
    /// HTTP/2 prior knowledge (h2c), concurrent streams.
    H2,
}

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::H1 => "h1",
            Protocol::H2 => "h2",
        }
    }
}

/// A path through (or around) the proxies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// client → upstream: the reference.
    Direct,
    /// client → one proxy's inbound listener → upstream.
    Inbound,
    /// client → outbound proxy → mTLS → inbound proxy → upstream.
    Mesh,
}

impl Scenario {
    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Direct => "direct",
            Scenario::Inbound => "inbound",
            Scenario::Mesh => "mesh",
        }
    }
}

/// Which upstream serves the requests.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum UpstreamKind {
    /// nginx when it is on the PATH, else the built-in server.
    Auto,
    /// nginx (one worker, a static file of `--payload` bytes).
    Nginx,
    /// The built-in hyper server (HTTP/1.1 and h2c).
    Builtin,
}

/// Built-in peer proxies whose configuration the harness writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum PeerKind {
    /// haproxy 2.x, one thread, HTTP mode with keep-alive to the upstream.
    Haproxy,
    /// nginx as a reverse proxy, one worker, upstream keep-alive.
    Nginx,
}

/// The benchmark's settings.
#[derive(Debug, ClapArgs)]
pub struct Args {
    /// Short mode for CI: 1 s per step, 200 idle connections
    #[arg(long)]
    pub short: bool,
    /// Fixed request rates, requests per second, run in ascending order
    #[arg(long, value_delimiter = ',', default_value = "100,500,1000", value_parser = parse_rate)]
    pub rates: Vec<f64>,
    /// HTTP versions to run
    #[arg(long, value_delimiter = ',', default_value = "h1,h2")]
    pub protocol: Vec<Protocol>,
    /// Scenarios to run
    #[arg(long, value_delimiter = ',', default_value = "direct,inbound,mesh")]
    pub scenarios: Vec<Scenario>,
    /// Time per fixed-rate step and for saturation [default: 10s, 1s with --short]
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Connections (HTTP/1.1) or concurrent streams (HTTP/2) of the load
    /// client, at fixed rates and at saturation
    #[arg(long, default_value = "16")]
    pub conns: usize,
    /// HTTP/2 connections the streams share
    #[arg(long, default_value = "1")]
    pub h2_conns: usize,
    /// Response body size (bytes, or with KiB/MiB)
    #[arg(long, default_value = "64", value_parser = parse_size)]
    pub payload: u64,
    /// Idle connections opened to the inbound listener for the memory
    /// figure [default: 10000, 200 with --short; 0 skips]
    #[arg(long)]
    pub idle_conns: Option<usize>,
    /// Idle HTTP/2 (h2c) connections, one request each, opened to the
    /// inbound listener for the same figure in HTTP/2 [default: 1000, 100
    /// with --short; 0 skips]
    #[arg(long)]
    pub idle_h2_conns: Option<usize>,
    /// Simulated proxies registered with, and scraped by, a standalone
    /// controller for its memory figure [default: 100, 20 with --short; 0:
    /// the idle figure only]
    #[arg(long)]
    pub controller_proxies: Option<usize>,
    /// How long the controller scrapes them before its memory is read
    /// [default: 370s: 360 rounds at 1 s, the points an hour of 10 s
    /// rounds leaves; 6s with --short]
    #[arg(long, value_parser = parse_duration)]
    pub controller_duration: Option<Duration>,
    /// The controller's --scrape-interval in its figure [default: 1s, to
    /// reach an hour's ring of 10 s points in 6 minutes; 2s with --short]
    #[arg(long, value_parser = parse_duration)]
    pub controller_scrape_interval: Option<Duration>,
    /// Memory limit of each proxy's cgroup
    #[arg(long, default_value = "32MiB", value_parser = parse_size)]
    pub memory: u64,
    /// Memory limit during the idle-connection figure (10k connections
    /// need more than a Pod's usual limit: the target is 48 MiB)
    #[arg(long, default_value = "64MiB", value_parser = parse_size)]
    pub idle_memory: u64,
    /// CPU limit of each proxy's cgroup, in CPUs
    #[arg(long, default_value = "0.5", value_parser = parse_cpus)]
    pub cpus: f64,
    /// Run the proxies without cgroups (no root, or no cgroup filesystem)
    #[arg(long)]
    pub no_cgroup: bool,
    /// The upstream server
    #[arg(long, value_enum, default_value = "auto")]
    pub upstream: UpstreamKind,
    /// pimesh-proxy binary [default: beside this binary]
    #[arg(long)]
    pub proxy_bin: Option<PathBuf>,
    /// pimesh (controller and CLI) binary [default: beside this binary]
    #[arg(long)]
    pub controller_bin: Option<PathBuf>,
    /// A built-in peer proxy to run in the inbound scenario (repeatable)
    #[arg(long, value_enum)]
    pub peer: Vec<PeerKind>,
    /// A peer proxy as NAME=TEMPLATE: a command line with {listen},
    /// {listen_port}, {upstream}, {upstream_h1}, {upstream_h2} and {dir};
    /// leading VAR=VALUE words are environment (repeatable)
    #[arg(long, value_parser = parse_peer_bin)]
    pub peer_bin: Vec<(String, String)>,
    /// Threads of the load client's runtime
    #[arg(long, default_value = "1")]
    pub client_threads: usize,
    /// Output directory for report.json, report.md and the SVG plots
    #[arg(long, default_value = "pimesh-bench-report")]
    pub out: PathBuf,
    /// A report.json from an earlier run to compare with (ratios new/old)
    #[arg(long)]
    pub baseline: Option<PathBuf>,
    /// Label every timing as meaningless (the harness runs emulated);
    /// set on its own when a binary needs qemu to run
    #[arg(long)]
    pub emulated: bool,
}

impl Args {
    /// Time per step.
    pub fn step_duration(&self) -> Duration {
        self.duration.unwrap_or(if self.short {
            Duration::from_secs(1)
        } else {
            Duration::from_secs(10)
        })
    }

    /// Idle connections to open (0: skip the figure).
    pub fn idle_conns(&self) -> usize {
        self.idle_conns
            .unwrap_or(if self.short { 200 } else { 10_000 })
    }

    /// Idle HTTP/2 connections to open (0: skip the figure).
    pub fn idle_h2_conns(&self) -> usize {
        self.idle_h2_conns
            .unwrap_or(if self.short { 100 } else { 1000 })
    }

    /// Simulated proxies of the controller figure.
    pub fn controller_proxies(&self) -> usize {
        self.controller_proxies
            .unwrap_or(if self.short { 20 } else { 100 })
    }

    /// How long the controller figure's proxies are scraped.
    pub fn controller_duration(&self) -> Duration {
        self.controller_duration.unwrap_or(if self.short {
            Duration::from_secs(6)
        } else {
            Duration::from_secs(370)
        })
    }

    /// The controller figure's scrape interval.
    pub fn controller_scrape_interval(&self) -> Duration {
        self.controller_scrape_interval
            .unwrap_or(Duration::from_secs(if self.short { 2 } else { 1 }))
    }

    /// The rates, ascending, without duplicates.
    pub fn sorted_rates(&self) -> Vec<f64> {
        let mut r = self.rates.clone();
        r.sort_by(f64::total_cmp);
        r.dedup();
        r
    }
}

/// Parses `32MiB`, `512KiB`, `1G`, `64` (bytes).
///
/// # Errors
///
/// [`Error::Size`] for no number, an unknown unit or a size past `u64`.
pub fn parse_size(s: &str) -> Result<u64, Error> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().map_err(|_| Error::Size(s.into()))?;
    let mul: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" | "k" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        _ => return Err(Error::Size(s.into())),
    };
    n.checked_mul(mul).ok_or_else(|| Error::Size(s.into()))
}

/// Parses a positive CPU share (`0.5`, `2`).
///
/// # Errors
///
/// [`Error::Cpus`] for anything but a finite number of at least 0.01.
pub fn parse_cpus(s: &str) -> Result<f64, Error> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v >= 0.01 => Ok(v),
        _ => Err(Error::Cpus(s.into())),
    }
}

/// Parses one positive rate (requests per second).
///
/// # Errors
///
/// [`Error::Rate`] for anything but a positive finite number.
pub fn parse_rate(s: &str) -> Result<f64, Error> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 => Ok(v),
        _ => Err(Error::Rate(s.into())),
    }
}

/// `500ms`, `10s`, `2m` ([`pimesh_api::text`]'s form), greater than zero.
pub use pimesh_api::text::parse_positive_duration as parse_duration;

/// Parses `NAME=TEMPLATE`.
///
/// # Errors
///
/// [`Error::PeerBin`] without `=`, with an empty name or template, or a name
/// with white space.
pub fn parse_peer_bin(s: &str) -> Result<(String, String), Error> {
    match s.split_once('=') {
        Some((name, template))
            if !name.trim().is_empty()
                && !template.trim().is_empty()
                && !name.contains(char::is_whitespace) =>
        {
            Ok((name.trim().into(), template.trim().into()))
        }
        _ => Err(Error::PeerBin(s.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("32MiB").unwrap(), 32 << 20);
        assert_eq!(parse_size("512K").unwrap(), 512 << 10);
        assert_eq!(parse_size("64").unwrap(), 64);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert!(parse_size("12XB").is_err());
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("99999999999G").is_err());
    }

    #[test]
    fn cpus_rates_durations() {
        assert_eq!(parse_cpus("0.5").unwrap(), 0.5);
        assert!(parse_cpus("0").is_err());
        assert!(parse_cpus("-1").is_err());
        assert_eq!(parse_rate("1000").unwrap(), 1000.0);
        assert!(parse_rate("0").is_err());
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("10").unwrap(), Duration::from_secs(10));
        assert!(parse_duration("0s").is_err());
    }

    #[test]
    fn peer_bin() {
        let (n, t) = parse_peer_bin("socat=socat TCP-LISTEN:{listen_port} TCP:{upstream}").unwrap();
        assert_eq!(n, "socat");
        assert_eq!(t, "socat TCP-LISTEN:{listen_port} TCP:{upstream}");
        assert!(parse_peer_bin("noequals").is_err());
        assert!(parse_peer_bin("=cmd").is_err());
    }

    #[test]
    fn defaults_and_short_mode() {
        let cli = Cli::try_parse_from(["pimesh-bench", "--rates", "1000,100,500,100"]).unwrap();
        assert_eq!(cli.args.sorted_rates(), vec![100.0, 500.0, 1000.0]);
        assert_eq!(cli.args.step_duration(), Duration::from_secs(10));
        assert_eq!(cli.args.idle_conns(), 10_000);
        assert_eq!(cli.args.idle_h2_conns(), 1000);
        assert_eq!(cli.args.memory, 32 << 20);
        assert_eq!(cli.args.protocol, vec![Protocol::H1, Protocol::H2]);
        assert_eq!(cli.args.controller_proxies(), 100);
        assert_eq!(cli.args.controller_duration(), Duration::from_secs(370));
        assert_eq!(
            cli.args.controller_scrape_interval(),
            Duration::from_secs(1)
        );
        let cli = Cli::try_parse_from(["pimesh-bench", "--short", "--protocol", "h2"]).unwrap();
        assert_eq!(cli.args.step_duration(), Duration::from_secs(1));
        assert_eq!(cli.args.idle_conns(), 200);
        assert_eq!(cli.args.idle_h2_conns(), 100);
        assert_eq!(cli.args.controller_proxies(), 20);
        assert_eq!(cli.args.controller_duration(), Duration::from_secs(6));
        assert_eq!(
            cli.args.controller_scrape_interval(),
            Duration::from_secs(2)
        );
        assert_eq!(cli.args.protocol, vec![Protocol::H2]);
        assert!(Cli::try_parse_from(["pimesh-bench", "--memory", "lots"]).is_err());
    }
}
