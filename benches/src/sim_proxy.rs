//! Simulated proxies for the controller's benchmarks: threads serving
//! realistic, changing Linkerd-style `/metrics` text (several authorities,
//! two status codes, latency histograms, TCP series, one counter reset
//! half-way), as `pimesh-telemetry-bench` and `pimesh-bench`'s controller
//! figure scrape them.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A simulated proxy: counters advance with every scrape.
pub struct Sim {
    /// Its deployment: `app-DEPLOYMENT`.
    pub deployment: usize,
    /// Its pod within the deployment: `app-DEPLOYMENT-POD`.
    pub pod: usize,
    /// Scrapes answered so far.
    pub scrapes: AtomicU64,
}

/// Linkerd-style `/metrics` text of `sim` at its `n`th scrape: 2 inbound
/// and 3 outbound authorities × 2 status codes, each with a 26-bucket
/// latency histogram, TCP series and process series (about 100 KB, like a
/// busy proxy's: a real one with one authority and two codes writes 22 KB).
pub fn metrics(sim: &Sim, n: u64) -> String {
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

/// Simulated proxies serving `/metrics` on loopback, each on its own
/// thread; stopped on drop.
pub struct SimProxies {
    /// Their admin addresses (`/metrics`), in order.
    pub addrs: Vec<SocketAddr>,
    /// Their counters (scrapes answered).
    pub sims: Vec<Arc<Sim>>,
    stop: Arc<AtomicBool>,
}

impl SimProxies {
    /// Starts `n` proxies spread over `deployments` deployments (round
    /// robin: proxy `i` is pod `i / deployments` of deployment
    /// `i % deployments`), each on `127.0.0.1:0`.
    ///
    /// # Errors
    ///
    /// The I/O error when a listener cannot be bound.
    pub fn start(n: usize, deployments: usize) -> std::io::Result<SimProxies> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut addrs = Vec::with_capacity(n);
        let mut sims = Vec::with_capacity(n);
        let deployments = deployments.max(1);
        for i in 0..n {
            let l = TcpListener::bind("127.0.0.1:0")?;
            addrs.push(l.local_addr()?);
            let sim = Arc::new(Sim {
                deployment: i % deployments,
                pod: i / deployments,
                scrapes: AtomicU64::new(0),
            });
            sims.push(sim.clone());
            let stop = stop.clone();
            std::thread::spawn(move || serve(l, sim, stop));
        }
        Ok(SimProxies { addrs, sims, stop })
    }

    /// Scrapes of the least-scraped proxy: the scrape rounds every proxy
    /// has been through.
    pub fn rounds(&self) -> u64 {
        self.sims
            .iter()
            .map(|s| s.scrapes.load(Ordering::Relaxed))
            .min()
            .unwrap_or(0)
    }

    /// Proxies scraped at least once.
    pub fn scraped(&self) -> usize {
        self.sims
            .iter()
            .filter(|s| s.scrapes.load(Ordering::Relaxed) > 0)
            .count()
    }
}

impl Drop for SimProxies {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_metrics_that_advance_and_reset_once() {
        let sims = SimProxies::start(2, 2).unwrap();
        let (status, body) = crate::http_get(&sims.addrs[0].to_string(), "/metrics").unwrap();
        assert_eq!(status, 200);
        assert!(
            body.contains("deployment=\"app-0\",pod=\"app-0-0\""),
            "{body}"
        );
        assert!(body.ends_with("# EOF\n"));
        assert_eq!(sims.scraped(), 1);
        assert_eq!(sims.rounds(), 0);
        let sim = &sims.sims[0];
        let first = metrics(sim, 1);
        let later = metrics(sim, 30);
        let restarted = metrics(sim, 31);
        let start = |t: &str| t.lines().nth(1).unwrap().to_string();
        assert_eq!(start(&first), start(&later));
        assert_ne!(
            start(&later),
            start(&restarted),
            "proxy 0 of deployment 0 restarts"
        );
    }
}
