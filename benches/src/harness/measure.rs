//! Measuring one started setup: its proxies at rest, a warm-up, each
//! fixed-rate step and saturation (latency, rate, CPU from /proc, VmHWM,
//! cgroup throttling and OOM kills); and the idle-connection figure.

use super::note;
use crate::cgroup;
use crate::config::{Args, Protocol, Scenario};
use crate::error_chain;
use crate::idle;
use crate::load::{self, Load, Pool};
use crate::process;
use crate::report::BUSY_CPUS;
use crate::report::{IdleFigure, Latency, ProcIdle, ProcStep, Run, Step};
use crate::scenario::{self, Setup};
use std::time::Duration;

/// Measures one setup: RSS at rest, warm-up, each fixed rate, saturation.
pub fn measure(
    rt: &tokio::runtime::Runtime,
    args: &Args,
    mut setup: Setup,
    hwm_reset: &mut bool,
) -> Run {
    let what = format!(
        "{} {} {}",
        setup.protocol.as_str(),
        setup.scenario.as_str(),
        setup.proxy
    );
    std::thread::sleep(Duration::from_millis(300));
    let processes: Vec<ProcIdle> = setup
        .procs
        .iter()
        .map(|p| ProcIdle {
            role: p.role.into(),
            idle_rss_kib: p.proc.rss_kib(),
        })
        .collect();
    let mut run = Run {
        proxy: setup.proxy.clone(),
        scenario: setup.scenario,
        protocol: setup.protocol,
        processes,
        steps: Vec::new(),
        oom_kills: 0,
        throttling: None,
        mtls_requests: None,
        failure: None,
    };
    let rss: Vec<String> = run
        .processes
        .iter()
        .map(|p| format!("{} {:.2} MiB", p.role, p.idle_rss_kib as f64 / 1024.0))
        .collect();
    note(&format!(
        "[{what}] started; idle RSS: {}",
        if rss.is_empty() {
            "-".into()
        } else {
            rss.join(", ")
        }
    ));
    let throttle0 = throttling(&setup);
    let mut pool = match rt.block_on(Pool::connect(
        setup.target.clone(),
        args.conns,
        args.h2_conns,
    )) {
        Ok(p) => p,
        Err(e) => {
            run.failure = Some(format!("client cannot connect: {}", error_chain(&e)));
            note(&format!(
                "[{what}] FAILED: {}",
                run.failure.as_deref().unwrap_or("")
            ));
            return run;
        }
    };
    let step_time = args.step_duration();
    let drain = step_time.max(Duration::from_secs(2));
    let rates = args.sorted_rates();
    // Warm-up at the lowest rate: connections, caches, lazy allocations.
    let warm = (step_time / 2).min(Duration::from_secs(2));
    rt.block_on(load::run(&mut pool, Load::Fixed(rates[0]), warm, drain));
    let loads = rates
        .iter()
        .map(|r| Load::Fixed(*r))
        .chain([Load::Saturation]);
    for l in loads {
        let step = step(rt, &mut setup, &mut pool, l, step_time, drain, hwm_reset);
        note(&format!("[{what}] {}", progress(&step)));
        run.steps.push(step);
    }
    run.oom_kills = setup
        .procs
        .iter()
        .filter_map(|p| p.proc.cgroup.as_ref())
        .map(|c| c.oom_kills())
        .sum();
    run.throttling = throttling(&setup).zip(throttle0).map(|(a, b)| a.since(b));
    if setup.scenario == Scenario::Mesh {
        run.mtls_requests = scenario::mtls_requests(&setup);
    }
    let dead: Vec<String> = setup
        .procs
        .iter_mut()
        .filter_map(|p| {
            let how = p.proc.exited()?;
            Some(format!("{} {how}", p.proc.name))
        })
        .collect();
    if !dead.is_empty() || run.oom_kills > 0 {
        run.failure = Some(format!(
            "{} (OOM kills: {})",
            dead.join("; "),
            run.oom_kills
        ));
        note(&format!(
            "[{what}] FAILED: {}",
            run.failure.as_deref().unwrap_or("")
        ));
    }
    run
}

/// Sum of the setup's cgroups' throttling counters (`None` without cgroups).
fn throttling(setup: &Setup) -> Option<cgroup::Throttling> {
    setup
        .procs
        .iter()
        .filter_map(|p| p.proc.cgroup.as_ref())
        .map(|c| c.throttling())
        .reduce(cgroup::Throttling::plus)
}

fn step(
    rt: &tokio::runtime::Runtime,
    setup: &mut Setup,
    pool: &mut Pool,
    l: Load,
    duration: Duration,
    drain: Duration,
    hwm_reset: &mut bool,
) -> Step {
    for p in &setup.procs {
        *hwm_reset &= p.proc.reset_hwm();
    }
    let cpu0: Vec<u64> = setup.procs.iter().map(|p| p.proc.cpu_us()).collect();
    let thr0 = throttling(setup);
    let others = OtherLoad::start();
    let out = rt.block_on(load::run(pool, l, duration, drain));
    let other_cpus = others.cpus();
    let per_process: Vec<ProcStep> = setup
        .procs
        .iter()
        .zip(&cpu0)
        .map(|(p, c0)| ProcStep {
            role: p.role.into(),
            cpu_ms: p.proc.cpu_us().saturating_sub(*c0) as f64 / 1e3,
            peak_rss_kib: p.proc.hwm_kib(),
        })
        .collect();
    let cpu_us: f64 = per_process.iter().map(|p| p.cpu_ms * 1e3).sum();
    Step {
        mode: match l {
            Load::Fixed(_) => "fixed".into(),
            Load::Saturation => "saturation".into(),
        },
        target_rps: match l {
            Load::Fixed(r) => Some(r),
            Load::Saturation => None,
        },
        seconds: out.elapsed.as_secs_f64(),
        requests: out.ok,
        errors: out.errors,
        missed: out.missed,
        achieved_rps: out.achieved_rps(),
        latency_us: Latency::from_ns(&out.hist),
        cpu_us_per_request: (!setup.procs.is_empty() && out.ok > 0).then(|| cpu_us / out.ok as f64),
        per_process,
        throttling: throttling(setup).zip(thr0).map(|(a, b)| a.since(b)),
        other_cpus,
        first_error: out.first_error,
    }
}

/// CPU used by processes outside the benchmark (a build on the same
/// machine) during a step: the whole machine's busy time (/proc/stat)
/// minus this process tree's (client, upstream, proxies, controller).
struct OtherLoad {
    started: std::time::Instant,
    system_us: Option<u64>,
    own_us: u64,
}

impl OtherLoad {
    fn start() -> OtherLoad {
        OtherLoad {
            started: std::time::Instant::now(),
            system_us: process::system_busy_us(),
            own_us: own_tree_cpu_us(),
        }
    }

    /// Average CPUs the others kept busy since `start`.
    fn cpus(&self) -> Option<f64> {
        let system = process::system_busy_us()?.checked_sub(self.system_us?)?;
        let own = own_tree_cpu_us().saturating_sub(self.own_us);
        let secs = self.started.elapsed().as_secs_f64();
        Some(system.saturating_sub(own) as f64 / 1e6 / secs.max(1e-3))
    }
}

fn own_tree_cpu_us() -> u64 {
    process::process_tree(std::process::id())
        .into_iter()
        .filter_map(process::cpu_us)
        .sum()
}

fn progress(s: &Step) -> String {
    let load = s
        .target_rps
        .map_or("saturation".into(), |r| format!("{r} rps"));
    let l = &s.latency_us;
    let mut line = format!(
        "{load}: {:.0} rps achieved, p50 {:.0} µs, p99 {:.0} µs, p99.9 {:.0} µs, {} errors",
        s.achieved_rps, l.p50, l.p99, l.p999, s.errors
    );
    if s.missed > 0 {
        line += &format!(", {} unsent", s.missed);
    }
    if let Some(c) = s.cpu_us_per_request {
        line += &format!(", proxy CPU {c:.1} µs/req");
    }
    if let Some(k) = s.peak_rss_kib() {
        line += &format!(", peak RSS {:.2} MiB", k as f64 / 1024.0);
    }
    if let Some(t) = s.throttling.filter(|t| t.throttled > 0) {
        line += &format!(", throttled {}/{} periods", t.throttled, t.periods);
    }
    if let Some(o) = s.other_cpus.filter(|o| *o >= BUSY_CPUS) {
        line += &format!(" [other processes used {o:.2} CPUs: noisy]");
    }
    if let Some(e) = &s.first_error {
        line += &format!(" (first error: {e})");
    }
    line
}

/// Connections opened between two RSS readings of the idle figure.
const IDLE_CHUNK: usize = 500;

/// Opens `n` idle connections to the setup's proxy, `IDLE_CHUNK` at a
/// time, and reads its RSS once they are all open (1 s later). RSS is also
/// read after every chunk, so that a proxy killed on the way (OOM) still
/// leaves its last figure and the connection count it held.
pub fn idle_figure(
    rt: &tokio::runtime::Runtime,
    setup: &mut Setup,
    n: usize,
    nofile: u64,
) -> IdleFigure {
    let name = setup.proxy.clone();
    let target = setup.target.clone();
    std::thread::sleep(Duration::from_millis(300));
    let before = setup.procs[0].proc.rss_kib();
    if nofile < n as u64 * 2 + 1000 {
        note(&format!(
            "[idle {name} {}] RLIMIT_NOFILE is {nofile}: some of {n} connections may fail",
            target.protocol.as_str()
        ));
    }
    let mut conns = Vec::with_capacity(n);
    let (mut failed, mut first_error) = (0, None);
    let mut sample = (0, before);
    let mut died = None;
    while conns.len() + failed < n {
        let chunk = (n - conns.len() - failed).min(IDLE_CHUNK);
        let more = rt.block_on(idle::open(&target, chunk));
        conns.extend(more.conns);
        failed += more.failed;
        first_error = first_error.or(more.first_error);
        if more.failed > 0 {
            // A proxy being killed resets connections before it is reaped.
            std::thread::sleep(Duration::from_millis(200));
        }
        let p = &mut setup.procs[0].proc;
        if let Some(how) = p.exited() {
            died = Some(format!("{how} with {} connections open", conns.len()));
            break;
        }
        // A process on its way out has no VmRSS any more: keep the last figure.
        let rss = p.rss_kib();
        if rss > 0 {
            sample = (conns.len(), rss);
        }
    }
    if died.is_none() {
        std::thread::sleep(Duration::from_secs(1));
        let p = &mut setup.procs[0].proc;
        match p.exited() {
            Some(how) => died = Some(format!("{how} with {} connections open", conns.len())),
            None if p.rss_kib() > 0 => sample = (conns.len(), p.rss_kib()),
            None => {}
        }
    }
    let (open, rss) = sample;
    let cg = setup.procs[0].proc.cgroup.as_ref();
    let fig = IdleFigure {
        proxy: name.clone(),
        requested: n,
        open,
        failed,
        protocol: target.protocol,
        mode: match target.protocol {
            Protocol::H1 => "one HTTP/1.1 request, response read, then kept open",
            Protocol::H2 => "one HTTP/2 (h2c) request, response read, then kept open",
        }
        .into(),
        rss_before_kib: before,
        rss_kib: rss,
        bytes_per_conn: (open > 0)
            .then(|| (rss.saturating_sub(before) * 1024) as f64 / open as f64),
        cgroup_peak_bytes: cg.and_then(|c| c.memory_peak()),
        oom_kills: cg.map_or(0, |c| c.oom_kills()),
        died: died.clone(),
        first_error: first_error.clone(),
    };
    note(&format!(
        "[idle {name} {}] {open}/{n} connections open: RSS {:.2} MiB (before {:.2} MiB){}{}",
        target.protocol.as_str(),
        rss as f64 / 1024.0,
        before as f64 / 1024.0,
        died.map_or(String::new(), |d| format!(
            ", proxy {d} (OOM kills: {})",
            fig.oom_kills
        )),
        first_error.map_or(String::new(), |e| format!(", first error: {e}"))
    ));
    drop(conns);
    fig
}
