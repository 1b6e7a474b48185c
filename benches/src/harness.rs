//! The run: finds the binaries, prepares cgroups and the upstream, then for
//! each protocol measures every scenario (direct, pimesh and the peers on
//! the inbound hop, the mesh) step by step, then the idle connections;
//! prints progress on stderr and writes the report files.

mod measure;

use crate::cgroup::{Hierarchy, Limits};
use crate::config::{Args, Protocol, Scenario, UpstreamKind};
use crate::peer::Peer;
use crate::process;
use crate::report::{Machine, Report, Run, Settings};
use crate::scenario::{self, Controller, Env, Setup};
use crate::upstream::{self, Upstream};
use crate::{baseline, cgroup, error_chain, idle, markdown, svg};
use measure::{idle_figure, measure};
use pimesh_test_support::TempDir;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// Why the benchmark could not run (runs that fail are reported instead).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A binary is missing (exit 64).
    #[error("{0} not found at {1} (build it, or pass {2})")]
    Binary(&'static str, PathBuf, &'static str),
    /// `--upstream nginx` without nginx (exit 64).
    #[error("--upstream nginx: nginx is not on the PATH")]
    NoNginx,
    /// `--baseline` unreadable (exit 64).
    #[error(transparent)]
    Baseline(#[from] baseline::Error),
    #[error("cgroups")]
    Cgroup(#[from] cgroup::Error),
    #[error("upstream")]
    Upstream(#[from] upstream::Error),
    #[error("controller")]
    Controller(#[source] scenario::Error),
    #[error("load client runtime")]
    Runtime(#[source] std::io::Error),
    #[error("cannot write {0}")]
    Output(PathBuf, #[source] std::io::Error),
}

impl Error {
    /// 64 for bad usage, 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Binary(..) | Error::NoNginx | Error::Baseline(_) => 64,
            _ => 1,
        }
    }
}

/// `name` in the directory of this executable.
fn sibling(name: &str) -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.join(name)))
        .unwrap_or_else(|| PathBuf::from(name))
}

/// Runs the whole benchmark and writes report.json, report.md and the
/// SVGs into `args.out`. Returns the report (its runs may hold failures).
///
/// # Errors
///
/// [`Error::Binary`] when `pimesh-proxy` or `pimesh` is missing;
/// [`Error::Baseline`] for an unreadable baseline; [`Error::NoNginx`] when
/// nginx is asked for and not installed; [`Error::Cgroup`] when limits are
/// asked for and no group can be made; [`Error::Output`] when the scratch or
/// output files cannot be written; [`Error::Runtime`], [`Error::Upstream`] or
/// [`Error::Controller`] when the runtime, the upstream or the controller
/// cannot start. A failing scenario is no error: it is recorded in its run.
pub fn run(args: &Args) -> Result<Report, Error> {
    let proxy_bin = args
        .proxy_bin
        .clone()
        .unwrap_or_else(|| sibling("pimesh-proxy"));
    let controller_bin = args
        .controller_bin
        .clone()
        .unwrap_or_else(|| sibling("pimesh"));
    if !proxy_bin.is_file() {
        return Err(Error::Binary("pimesh-proxy", proxy_bin, "--proxy-bin"));
    }
    let mesh = args.scenarios.contains(&Scenario::Mesh);
    if mesh && !controller_bin.is_file() {
        return Err(Error::Binary("pimesh", controller_bin, "--controller-bin"));
    }
    let old = args.baseline.as_deref().map(baseline::load).transpose()?;
    let use_nginx = match args.upstream {
        UpstreamKind::Nginx if !upstream::nginx_present() => return Err(Error::NoNginx),
        UpstreamKind::Nginx => true,
        UpstreamKind::Auto => upstream::nginx_present(),
        UpstreamKind::Builtin => false,
    };
    let cgroups = if args.no_cgroup {
        None
    } else {
        let h = Hierarchy::detect()?;
        let stale = h.remove_stale();
        if stale > 0 {
            note(&format!(
                "pimesh-bench: removed {stale} cgroup(s) left by an interrupted run"
            ));
        }
        // Fail now, not in the middle: can this process make groups?
        drop(h.create("probe", limits(args))?);
        Some(h)
    };
    let idle_conns = args.idle_conns();
    let nofile = idle::raise_nofile(idle_conns.max(args.idle_h2_conns()) as u64 * 3 + 4096);
    let scratch = TempDir::create("bench").map_err(|e| Error::Output(std::env::temp_dir(), e))?;

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads.max(1))
        .enable_all()
        .build()
        .map_err(Error::Runtime)?;
    let upstream = if use_nginx {
        Upstream::nginx(&scratch.path().join("nginx"), args.payload, idle_conns)?
    } else {
        Upstream::builtin(args.payload)?
    };
    // Under emulation everything starts slowly.
    let wait = Duration::from_secs(if args.emulated || process::emulated() {
        120
    } else {
        30
    });
    let controller = if mesh {
        let dir = scratch.path().join("controller");
        Some(Controller::start(&controller_bin, &dir, wait).map_err(Error::Controller)?)
    } else {
        None
    };
    let env = Env {
        proxy_bin: &proxy_bin,
        cgroups: cgroups.as_ref(),
        limits: limits(args),
        upstream: &upstream,
        dir: scratch.path(),
        wait,
    };
    let mut peers: Vec<Peer> = args.peer.iter().map(|k| Peer::builtin(*k)).collect();
    peers.extend(args.peer_bin.iter().map(|(name, template)| Peer {
        name: name.clone(),
        template: template.clone(),
    }));

    let started_unix = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let emulated = || args.emulated || process::emulated();
    note(&format!(
        "pimesh-bench: upstream {}, {}, {} s per step, rates {:?}{}",
        upstream.kind,
        cgroups
            .as_ref()
            .map_or("no cgroups".to_string(), |h| format!(
                "cgroup {}: {} MiB, {} CPU per proxy",
                h.name(),
                args.memory >> 20,
                args.cpus
            )),
        args.step_duration().as_secs_f64(),
        args.sorted_rates(),
        if emulated() {
            " (EMULATED: timings meaningless)"
        } else {
            ""
        }
    ));
    let mut hwm_reset = true;
    let mut runs = Vec::new();
    let mut measure_or_fail = |setup: Result<Setup, scenario::Error>, what: String| -> Run {
        match setup {
            Ok(s) => measure(&rt, args, s, &mut hwm_reset),
            Err(e) => {
                let (proxy, scenario, protocol) = parse_what(&what);
                note(&format!("[{what}] FAILED to start: {}", error_chain(&e)));
                Run {
                    proxy,
                    scenario,
                    protocol,
                    processes: Vec::new(),
                    steps: Vec::new(),
                    oom_kills: 0,
                    throttling: None,
                    mtls_requests: None,
                    failure: Some(error_chain(&e)),
                }
            }
        }
    };
    for &protocol in &args.protocol {
        let p = protocol.as_str();
        for &scenario in &[Scenario::Direct, Scenario::Inbound, Scenario::Mesh] {
            if !args.scenarios.contains(&scenario) {
                continue;
            }
            match scenario {
                Scenario::Direct => runs.push(measure_or_fail(
                    Ok(env.direct(protocol, args.payload)),
                    format!("{p} direct none"),
                )),
                Scenario::Inbound => {
                    let s = env.inbound(protocol, args.payload, env.limits, None);
                    runs.push(measure_or_fail(s, format!("{p} inbound pimesh")));
                    for peer in &peers {
                        let s = env.peer(peer, protocol, args.payload, env.limits, 1024);
                        runs.push(measure_or_fail(s, format!("{p} inbound {}", peer.name)));
                    }
                }
                Scenario::Mesh => {
                    let ctl = controller.as_ref().expect("started for the mesh scenario");
                    runs.push(measure_or_fail(
                        env.mesh(ctl, protocol, args.payload),
                        format!("{p} mesh pimesh"),
                    ));
                }
            }
        }
    }

    let mut idle_figures = Vec::new();
    let idle_runs = [
        (Protocol::H1, idle_conns),
        (Protocol::H2, args.idle_h2_conns()),
    ];
    for (protocol, n) in idle_runs.into_iter().filter(|&(_, n)| n > 0) {
        let mut figure_limits = env.limits;
        figure_limits.memory = args.idle_memory;
        let max = n + 1000;
        let mut setups = vec![(
            "pimesh".to_string(),
            env.inbound(protocol, args.payload, figure_limits, Some(max)),
        )];
        for peer in &peers {
            let s = env.peer(peer, protocol, args.payload, figure_limits, max);
            setups.push((peer.name.clone(), s));
        }
        for (name, setup) in setups {
            match setup {
                Ok(mut s) => idle_figures.push(idle_figure(&rt, &mut s, n, nofile)),
                Err(e) => note(&format!(
                    "[idle {name} {}] FAILED to start: {}",
                    protocol.as_str(),
                    error_chain(&e)
                )),
            }
        }
    }

    let controller_figure = if controller_bin.is_file() {
        // The mesh scenario's controller is done with: it would skew the figure.
        drop(controller);
        let plan = crate::controller::Plan {
            proxies: args.controller_proxies(),
            settle: Duration::from_secs(3),
            scraped_for: args.controller_duration(),
            scrape_interval: args.controller_scrape_interval(),
            wait,
        };
        let dir = scratch.path().join("controller-figure");
        match crate::controller::measure(&rt, &controller_bin, &dir, &plan) {
            Ok(f) => Some(f),
            Err(e) => {
                note(&format!("[controller] FAILED: {}", error_chain(&e)));
                None
            }
        }
    } else {
        None
    };

    let mut report = Report {
        tool: format!("pimesh-bench {}", env!("CARGO_PKG_VERSION")),
        started_unix,
        machine: Machine {
            arch: std::env::consts::ARCH.into(),
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .unwrap_or_default()
                .trim()
                .into(),
            emulated: emulated(),
        },
        settings: Settings {
            short: args.short,
            rates: args.sorted_rates(),
            step_seconds: args.step_duration().as_secs_f64(),
            conns: args.conns,
            h2_conns: args.h2_conns,
            payload_bytes: args.payload,
            upstream: upstream.kind.into(),
            cgroup: cgroups.as_ref().map(|h| h.name().to_string()),
            memory_bytes: args.memory,
            idle_memory_bytes: args.idle_memory,
            cpus: args.cpus,
            hwm_reset,
            client_threads: args.client_threads,
        },
        runs,
        idle_conns: idle_figures,
        controller: controller_figure,
        targets: Vec::new(),
    };
    report.compute_targets();
    let compared = old.as_ref().map(|o| baseline::compare(o, &report));
    write_outputs(
        &args.out,
        &report,
        args.baseline.as_deref(),
        compared.as_deref(),
    )?;
    print_summary(&report, compared.as_deref());
    Ok(report)
}

fn limits(args: &Args) -> Limits {
    Limits {
        memory: args.memory,
        cpus: args.cpus,
    }
}

/// Progress and notes go to stderr.
fn note(line: &str) {
    eprintln!("{line}");
}

/// `"h1 inbound haproxy"` → its parts (for a run that failed to start).
fn parse_what(what: &str) -> (String, Scenario, Protocol) {
    let mut w = what.split(' ');
    let protocol = if w.next() == Some("h2") {
        Protocol::H2
    } else {
        Protocol::H1
    };
    let scenario = match w.next() {
        Some("direct") => Scenario::Direct,
        Some("mesh") => Scenario::Mesh,
        _ => Scenario::Inbound,
    };
    (w.next().unwrap_or("pimesh").to_string(), scenario, protocol)
}

fn write_outputs(
    out: &Path,
    report: &Report,
    baseline_file: Option<&Path>,
    compared: Option<&[baseline::CompareRow]>,
) -> Result<(), Error> {
    let write = |name: &str, text: &str| {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|e| Error::Output(path, e))
    };
    std::fs::create_dir_all(out).map_err(|e| Error::Output(out.to_path_buf(), e))?;
    let json = serde_json::to_string_pretty(report).expect("a report serializes");
    write("report.json", &(json + "\n"))?;
    let file = baseline_file
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let md = markdown::render(report, compared.map(|c| (file.as_str(), c)));
    write("report.md", &md)?;
    for (name, svg) in svg::charts(report) {
        write(&name, &svg)?;
    }
    note(&format!(
        "pimesh-bench: wrote {}",
        out.join("report.{json,md}").display()
    ));
    Ok(())
}

fn print_summary(report: &Report, compared: Option<&[baseline::CompareRow]>) {
    println!(
        "targets{}:",
        if report.machine.emulated {
            " (EMULATED: meaningless)"
        } else {
            ""
        }
    );
    for t in &report.targets {
        let measured = t
            .measured
            .map_or("—".into(), |v| format!("{} {}", markdown::num(v), t.unit));
        let met = match t.met {
            Some(true) => "met",
            Some(false) => "MISSED",
            None => "-",
        };
        println!(
            "  {:<68} {:>12}   target {:<28} {met}",
            t.figure, measured, t.target
        );
    }
    if let Some(rows) = compared {
        println!("against baseline (new / old):");
        for c in rows {
            println!(
                "  {:<58} {:>10} → {:>10}   ratio {:.2}",
                c.figure,
                markdown::num(c.old),
                markdown::num(c.new),
                c.ratio()
            );
        }
    }
}
