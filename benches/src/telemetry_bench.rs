//! `pimesh-telemetry-bench`: the controller's telemetry cost (issue 5). It
//! starts N simulated proxies ([`pimesh_benches::sim_proxy`]: threads
//! serving realistic, changing Linkerd-style `/metrics` text), runs the
//! real `pimesh controller` scraping them for a few minutes, and reports
//! the controller's memory (VmRSS, VmHWM) and the bytes it wrote per hour
//! (`/proc/<pid>/io` `write_bytes`: what reached the block layer, and the
//! data directory's growth) next to the targets. Not a test: figures, no
//! pass/fail on timing. Exit codes: 0 done, 1 it could not run, 64 bad usage.

use clap::Parser;
use pimesh_benches::sim_proxy::{metrics, Sim, SimProxies};
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

/// Target: bytes written per hour at 20 proxies (SD cards).
const WRITE_TARGET_BYTES_PER_HOUR: f64 = 1024.0 * 1024.0;
/// Target (stated here): what telemetry adds to the controller's peak RSS
/// at 20 proxies — a tenth of Prometheus' ~5 MB per meshed pod.
const RSS_TARGET_KIB: u64 = 10 * 1024;

/// The controller's telemetry cost at N simulated proxies.
#[derive(Debug, Parser)]
#[command(name = "pimesh-telemetry-bench", version, about)]
struct Args {
    /// The `pimesh` binary [default: beside this one]
    #[arg(long)]
    pimesh: Option<PathBuf>,
    /// Simulated proxies (scrape targets)
    #[arg(long, default_value_t = 20)]
    proxies: usize,
    /// Deployments they belong to (20 proxies in 20 deployments is the
    /// history's worst case: one series each)
    #[arg(long, default_value_t = 20)]
    deployments: usize,
    /// How long the controller runs, minutes
    #[arg(long, default_value_t = 3.0)]
    minutes: f64,
    /// CI mode: 30 s, scrapes every 2 s, history written every 10 s (the
    /// write figure then says little about an hour)
    #[arg(long)]
    short: bool,
    /// The controller's --scrape-interval
    #[arg(long, default_value = "10s")]
    scrape_interval: String,
    /// The controller's --history-flush-interval
    #[arg(long, default_value = "5m")]
    history_flush_interval: String,
    /// Where to write telemetry-report.json
    #[arg(long)]
    out: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = match Args::try_parse() {
        Ok(a) => a,
        Err(e) => {
            let code = if e.use_stderr() { 64 } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pimesh-telemetry-bench: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `key` of `/proc/PID/status` (kB) or `/proc/PID/io` (bytes).
fn proc_field(pid: u32, file: &str, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

/// Bytes of the files under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return 0;
    };
    rd.flatten()
        .map(|e| match e.metadata() {
            Ok(m) if m.is_dir() => dir_bytes(&e.path()),
            Ok(m) => m.len(),
            Err(_) => 0,
        })
        .sum()
}

fn run(args: &Args) -> Result<(), String> {
    let pimesh = match &args.pimesh {
        Some(p) => p.clone(),
        None => std::env::current_exe()
            .map_err(|e| e.to_string())?
            .with_file_name("pimesh"),
    };
    if !pimesh.exists() {
        return Err(format!(
            "{} not found (cargo build --release -p pimesh-controller, or --pimesh PATH)",
            pimesh.display()
        ));
    }
    let (duration, interval, flush) = if args.short {
        (Duration::from_secs(30), "2s".to_string(), "10s")
    } else {
        (
            Duration::from_secs_f64(args.minutes * 60.0),
            args.scrape_interval.clone(),
            args.history_flush_interval.as_str(),
        )
    };
    let sims = SimProxies::start(args.proxies, args.deployments).map_err(|e| e.to_string())?;
    let targets: Vec<String> = sims.addrs.iter().map(ToString::to_string).collect();
    let sample = metrics(
        &Sim {
            deployment: 1,
            pod: 1,
            scrapes: AtomicU64::new(0),
        },
        100,
    );
    // The controller alone first: what telemetry adds is the difference.
    let idle_dir = std::env::temp_dir().join(format!(
        "pimesh-telemetry-bench-idle-{}",
        std::process::id()
    ));
    let (mut idle, idle_pid, _) = start_controller(&pimesh, &idle_dir, &[])?;
    std::thread::sleep(Duration::from_secs(5));
    let idle_hwm = proc_field(idle_pid, "status", "VmHWM:");
    let _ = idle.kill();
    let _ = idle.wait();
    let _ = std::fs::remove_dir_all(&idle_dir);

    let data = std::env::temp_dir().join(format!("pimesh-telemetry-bench-{}", std::process::id()));
    let mut extra: Vec<String> = vec![
        "--scrape-interval".into(),
        interval.clone(),
        "--history-flush-interval".into(),
        flush.into(),
    ];
    for t in &targets {
        extra.extend(["--scrape-target".to_string(), t.clone()]);
    }
    let (mut child, pid, admin) = start_controller(&pimesh, &data, &extra)?;
    // Start-up writes (the CA) are not telemetry's: measure from here.
    std::thread::sleep(Duration::from_secs(2));
    let (w0, c0, d0) = (
        proc_field(pid, "io", "write_bytes:"),
        proc_field(pid, "io", "wchar:"),
        dir_bytes(&data),
    );
    let started = Instant::now();
    println!(
        "pimesh-telemetry-bench: {} simulated proxies ({} deployments, {} bytes of /metrics each), \
         scraped every {interval} for {:.0} s, history written every {flush}",
        args.proxies,
        args.deployments,
        sample.len(),
        duration.as_secs_f64()
    );
    let mut rss_max = 0;
    while started.elapsed() < duration {
        std::thread::sleep(Duration::from_secs(1));
        rss_max = rss_max.max(proc_field(pid, "status", "VmRSS:"));
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the controller exited: {status}"));
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let (w1, c1, d1) = (
        proc_field(pid, "io", "write_bytes:"),
        proc_field(pid, "io", "wchar:"),
        dir_bytes(&data),
    );
    let rss = proc_field(pid, "status", "VmRSS:");
    let hwm = proc_field(pid, "status", "VmHWM:");
    let metrics_text = http_get(&admin, "/metrics").unwrap_or_default();
    let metric = |name: &str| {
        metrics_text
            .lines()
            .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let scrapes_ok = metric("pimesh_controller_scrapes_total{result=\"success\"}");
    let history_bytes = metric("pimesh_controller_history_bytes_total");
    let stat = http_get(&admin, "/v1/stat?resource=deploy&window=1m").unwrap_or_default();
    let workloads = stat.matches("\"kind\"").count();
    // SIGTERM: the controller writes its last history and exits.
    // SAFETY: signalling the child this process started.
    unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    let _ = child.wait();
    drop(sims);
    let _ = std::fs::remove_dir_all(&data);

    let per_hour = |b: u64| b as f64 * 3600.0 / elapsed;
    let mib = |b: f64| b / (1024.0 * 1024.0);
    let share = hwm.saturating_sub(idle_hwm);
    let rows = [
        (
            "telemetry's share: VmHWM − the idle controller's".to_string(),
            format!(
                "{:.1} MiB ({:.1} − {:.1})",
                share as f64 / 1024.0,
                hwm as f64 / 1024.0,
                idle_hwm as f64 / 1024.0
            ),
            format!("≤ {} MiB", RSS_TARGET_KIB / 1024),
            share <= RSS_TARGET_KIB,
        ),
        (
            "controller VmHWM (peak RSS)".to_string(),
            format!("{:.1} MiB", hwm as f64 / 1024.0),
            "-".to_string(),
            true,
        ),
        (
            "controller VmRSS at the end (max sampled)".to_string(),
            format!(
                "{:.1} MiB ({:.1} MiB)",
                rss as f64 / 1024.0,
                rss_max as f64 / 1024.0
            ),
            "-".to_string(),
            true,
        ),
        (
            "write_bytes per hour (/proc/<pid>/io)".to_string(),
            format!("{:.3} MiB", mib(per_hour(w1.saturating_sub(w0)))),
            "≤ 1 MiB".to_string(),
            per_hour(w1.saturating_sub(w0)) <= WRITE_TARGET_BYTES_PER_HOUR,
        ),
        (
            "wchar per hour (every write(2), sockets and logs included)".to_string(),
            format!("{:.3} MiB", mib(per_hour(c1.saturating_sub(c0)))),
            "-".to_string(),
            true,
        ),
        (
            "data directory growth per hour".to_string(),
            format!("{:.3} MiB", mib(per_hour(d1.saturating_sub(d0)))),
            "-".to_string(),
            true,
        ),
        (
            "history keys+values per hour (pimesh_controller_history_bytes_total)".to_string(),
            format!("{:.3} MiB", mib(history_bytes * 3600.0 / elapsed)),
            "-".to_string(),
            true,
        ),
    ];
    println!();
    println!("| figure | measured | target | met |");
    println!("| --- | --- | --- | --- |");
    for (f, m, t, ok) in &rows {
        let met = if t == "-" {
            "-"
        } else if *ok {
            "yes"
        } else {
            "**no**"
        };
        println!("| {f} | {m} | {t} | {met} |");
    }
    println!();
    println!(
        "{scrapes_ok:.0} successful scrapes in {elapsed:.0} s, {workloads} workloads in stat; \
         per-hour figures extrapolate {elapsed:.0} s{}",
        if args.short {
            " (--short: too short for the write figure to mean much)"
        } else {
            ""
        }
    );
    if let Some(out) = &args.out {
        std::fs::create_dir_all(out).map_err(|e| e.to_string())?;
        let json = serde_json::json!({
            "proxies": args.proxies,
            "deployments": args.deployments,
            "metrics_bytes_per_proxy": sample.len(),
            "scrape_interval": interval,
            "seconds": elapsed,
            "vm_hwm_kib": hwm,
            "idle_vm_hwm_kib": idle_hwm,
            "vm_rss_kib": rss,
            "write_bytes_per_hour": per_hour(w1.saturating_sub(w0)),
            "wchar_per_hour": per_hour(c1.saturating_sub(c0)),
            "data_dir_growth_per_hour": per_hour(d1.saturating_sub(d0)),
            "history_bytes_per_hour": history_bytes * 3600.0 / elapsed,
            "successful_scrapes": scrapes_ok,
            "short": args.short,
        });
        std::fs::write(
            out.join("telemetry-report.json"),
            serde_json::to_vec_pretty(&json).unwrap_or_default(),
        )
        .map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Starts `pimesh controller` on `data` with `extra` flags; its process,
/// pid and operator address. Its log is drained in the background.
fn start_controller(
    pimesh: &Path,
    data: &Path,
    extra: &[String],
) -> Result<(Child, u32, String), String> {
    let _ = std::fs::remove_dir_all(data);
    // Natively, or under qemu-<arch>-static when the kernel cannot run the
    // binary (an aarch64 build checked on x86_64 without binfmt_misc).
    let spawn = |wrapper: Option<&str>| {
        let mut cmd = match wrapper {
            Some(w) => {
                let mut c = Command::new(w);
                c.arg(pimesh);
                c
            }
            None => Command::new(pimesh),
        };
        // SAFETY: prctl in the child before exec, async-signal-safe: the
        // controller dies with this process instead of running on as an orphan.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        cmd.args(["controller", "--standalone", "--data-dir"])
            .arg(data)
            .args(["--proxy-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
            .args(extra)
            .env("PIMESH_CONTROLLER_LOG", "warn,pimesh=info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
    };
    let spawned = match spawn(None) {
        Err(e) if e.raw_os_error() == Some(libc::ENOEXEC) => {
            match pimesh_benches::process::qemu_for(pimesh) {
                Some(qemu) => spawn(Some(&qemu)),
                None => Err(e),
            }
        }
        other => other,
    };
    let mut child = spawned.map_err(|e| format!("{}: {e}", pimesh.display()))?;
    let pid = child.id();
    let mut err = BufReader::new(child.stderr.take().ok_or("no stderr")?);
    let mut line = String::new();
    let mut admin = None;
    while err.read_line(&mut line).is_ok_and(|n| n > 0) {
        if let Some(i) = line.find("admin=") {
            admin = line[i + 6..].split_whitespace().next().map(str::to_string);
            break;
        }
        line.clear();
    }
    let Some(admin) = admin else {
        let _ = child.kill();
        return Err(format!("the controller did not start: {line}"));
    };
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = err.read_to_string(&mut sink);
    });
    Ok((child, pid, admin))
}

/// `GET path` on `addr`: the body.
fn http_get(addr: &str, path: &str) -> Option<String> {
    pimesh_benches::http_get(addr, path).map(|(_, body)| body)
}
