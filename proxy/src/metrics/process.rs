//! `process_*` series read from `/proc/self` at each scrape, as the
//! Prometheus client libraries and linkerd2-proxy export them.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Linux reports CPU times in `/proc` in USER_HZ, fixed at 100 per second
/// by the kernel's user-space ABI on every architecture we build for.
const USER_HZ: f64 = 100.0;

/// Collects `process_start_time_seconds`, `process_cpu_seconds_total`,
/// `process_resident_memory_bytes`, `process_virtual_memory_bytes`,
/// `process_open_fds` and `process_threads`. Values that cannot be read
/// (no `/proc`) are left out.
#[derive(Debug)]
pub struct ProcessCollector {
    /// Seconds since the Unix epoch at start-up.
    start_time: f64,
}

impl ProcessCollector {
    /// A collector for this process, started now.
    pub fn new() -> Self {
        let start_time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0.0, |d| d.as_secs_f64());
        ProcessCollector { start_time }
    }
}

impl Default for ProcessCollector {
    fn default() -> Self {
        Self::new()
    }
}

/// `(rss bytes, virtual bytes, threads)` from `/proc/self/status` (kB units).
fn status() -> Option<(i64, i64, i64)> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<i64> {
        let line = text.lines().find(|l| l.starts_with(name))?;
        line[name.len()..].split_whitespace().next()?.parse().ok()
    };
    Some((
        field("VmRSS:")? * 1024,
        field("VmSize:")? * 1024,
        field("Threads:")?,
    ))
}

/// User + system CPU seconds from `/proc/self/stat` (fields 14 and 15).
fn cpu_seconds() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces; fields restart after its ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: f64 = fields.next()?.parse().ok()?;
    let stime: f64 = fields.next()?.parse().ok()?;
    Some((utime + stime) / USER_HZ)
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let mut gauge = |name: &str, help: &str, value: f64| -> Result<(), std::fmt::Error> {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        };
        gauge(
            "process_start_time_seconds",
            "Start time of the process since the Unix epoch in seconds",
            self.start_time,
        )?;
        if let Some((rss, vsize, threads)) = status() {
            gauge(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                rss as f64,
            )?;
            gauge(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                vsize as f64,
            )?;
            gauge(
                "process_threads",
                "Number of OS threads in the process",
                threads as f64,
            )?;
        }
        if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
            gauge(
                "process_open_fds",
                "Number of open file descriptors",
                fds.count() as f64,
            )?;
        }
        if let Some(cpu) = cpu_seconds() {
            let c = ConstCounter::new(cpu);
            c.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds",
                None,
                c.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
