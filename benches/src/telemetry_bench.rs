//! `pimesh-telemetry-bench`: the controller's telemetry cost (issue 5). It
//! starts N simulated proxies (threads serving realistic, changing
//! Linkerd-style `/metrics` text: several authorities, two status codes,
//! latency histograms, TCP series, one counter reset half-way), runs the
//! real `pimesh controller` scraping them for a few minutes, and reports
//! the controller's memory (VmRSS, VmHWM) and the bytes it wrote per hour
//! (`/proc/<pid>/io` `write_bytes`: what reached the block layer, and the
//! data directory's growth) next to the targets. Not a test: figures, no
//! pass/fail on timing. Exit codes: 0 done, 1 it could not run, 64 bad usage.

use clap::Parser;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
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

/// A simulated proxy: counters advance with every scrape.
struct Sim {
    deployment: usize,
    pod: usize,
    scrapes: AtomicU64,
}

/// Linkerd-style `/metrics` text of `sim` at its `n`th scrape: 2 inbound
/// and 3 outbound authorities × 2 status codes, each with a 26-bucket
/// latency histogram, TCP series and process series (about 100 KB, like a
/// busy proxy's: a real one with one authority and two codes writes 22 KB).
fn metrics(sim: &Sim, n: u64) -> String {
    use std::fmt::Write as _;
    // One proxy restarts after 30 scrapes: its counters start again.
    let restarted = sim.deployment == 0 && sim.pod == 0 && n > 30;
    let n = if restarted { n - 30 } else { n };
    let base = format!(
        "namespace=\"bench\",deployment=\"app-{}\",pod=\"app-{}-{}\"",
        sim.deployment, sim.deployment, sim.pod
    );
    let start = if restarted { 2 } else { 1 };
    let mut t = String::with_capacity(48 * 1024);
    let _ = writeln!(t, "# TYPE process_start_time_seconds gauge");
    let _ = writeln!(t, "process_start_time_seconds{{{base}}} 179522867{start}");
    let buckets = [
        "1.0", "2.0", "3.0", "4.0", "5.0", "10.0", "20.0", "30.0", "40.0", "50.0", "100.0",
        "200.0", "300.0", "400.0", "500.0", "1000.0", "2000.0", "3000.0", "4000.0", "5000.0",
        "10000.0", "20000.0", "30000.0", "40000.0", "50000.0", "+Inf",
    ];
    // Two authorities served, three services called.
    for (dir, authorities) in [("inbound", 2u64), ("outbound", 3)] {
        for a in 0..authorities {
            let peer = if dir == "inbound" {
                format!("tls=\"true\",client_id=\"app-{}.bench.serviceaccount.identity.pimesh.cluster.local\"", (sim.deployment + 1) % 20)
            } else {
                format!("tls=\"true\",server_id=\"app-{}.bench.serviceaccount.identity.pimesh.cluster.local\"", (sim.deployment + 2) % 20)
            };
            let l = format!(
                "{base},direction=\"{dir}\",target_addr=\"10.42.0.{a}:8080\",{peer},authority=\"svc-{a}.bench.svc.cluster.local:8080\""
            );
            let req = n * (20 + a * 7);
            let fail = req / 50;
            let _ = writeln!(t, "request_total{{{l}}} {req}");
            for (code, class, v) in [("200", "success", req - fail), ("503", "failure", fail)] {
                let _ = writeln!(
                    t,
                    "response_total{{{l},status_code=\"{code}\",classification=\"{class}\"}} {v}"
                );
                let mut cum = 0;
                for (i, le) in buckets.iter().enumerate() {
                    cum += v * [
                        0, 1, 3, 6, 10, 25, 20, 15, 8, 5, 4, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
                        0, 0,
                    ][i] / 100;
                    let c = if *le == "+Inf" { v } else { cum.min(v) };
                    let _ = writeln!(
                        t,
                        "response_latency_ms_bucket{{{l},status_code=\"{code}\",le=\"{le}\"}} {c}"
                    );
                }
                let _ = writeln!(
                    t,
                    "response_latency_ms_sum{{{l},status_code=\"{code}\"}} {}",
                    v * 17
                );
                let _ = writeln!(
                    t,
                    "response_latency_ms_count{{{l},status_code=\"{code}\"}} {v}"
                );
            }
            for peer_side in ["src", "dst"] {
                let _ = writeln!(t, "tcp_open_total{{{l},peer=\"{peer_side}\"}} {}", n + a);
                let _ = writeln!(
                    t,
                    "tcp_open_connections{{{l},peer=\"{peer_side}\"}} {}",
                    1 + a % 3
                );
                let _ = writeln!(
                    t,
                    "tcp_read_bytes_total{{{l},peer=\"{peer_side}\"}} {}",
                    req * 310
                );
                let _ = writeln!(
                    t,
                    "tcp_write_bytes_total{{{l},peer=\"{peer_side}\"}} {}",
                    req * 1900
                );
            }
        }
    }
    let _ = writeln!(t, "process_resident_memory_bytes{{{base}}} 5800000.0");
    let _ = writeln!(t, "# EOF");
    t
}

/// Serves `sim` on `listener` until `stop`.
fn serve(listener: TcpListener, sim: Arc<Sim>, stop: Arc<AtomicBool>) {
    listener.set_nonblocking(true).expect("nonblocking");
    while !stop.load(Ordering::Relaxed) {
        let Ok((s, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(5));
            continue;
        };
        let _ = s.set_nonblocking(false);
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        let mut w = match s.try_clone() {
            Ok(w) => w,
            Err(_) => continue,
        };
        let mut r = BufReader::new(s);
        let mut line = String::new();
        while r.read_line(&mut line).is_ok_and(|n| n > 0) && line != "\r\n" {
            line.clear();
        }
        let n = sim.scrapes.fetch_add(1, Ordering::Relaxed) + 1;
        let body = metrics(&sim, n);
        let _ = write!(
            w,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
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
    let stop = Arc::new(AtomicBool::new(false));
    let mut targets = Vec::new();
    for i in 0..args.proxies {
        let l = TcpListener::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
        let addr: SocketAddr = l.local_addr().map_err(|e| e.to_string())?;
        let sim = Arc::new(Sim {
            deployment: i % args.deployments.max(1),
            pod: i / args.deployments.max(1),
            scrapes: AtomicU64::new(0),
        });
        let stop = stop.clone();
        std::thread::spawn(move || serve(l, sim, stop));
        targets.push(addr.to_string());
    }
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
    stop.store(true, Ordering::Relaxed);
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
