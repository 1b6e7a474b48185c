//! `pimesh tap RESOURCE` and `pimesh top RESOURCE`, as `linkerd viz tap`
//! and `linkerd viz top`: the controller's tap relay (`GET /v1/tap`) read
//! as a live stream, printed one exchange per line, or aggregated by path
//! and redrawn in the terminal.

use super::{block_on, ControllerFlag, Error};
use crate::config::Env;
use clap::{Args, ValueEnum};
use pimesh_api::tap::TapEvent;
use std::collections::HashMap;
use std::io::{IsTerminal, Write};
use std::time::{Duration, Instant};

/// What to tap and how.
#[derive(Debug, Clone, Args)]
pub struct TapArgs {
    /// `deploy/NAME`, `pod/NAME`, `svc/NAME` or `ns/NAME`
    #[arg(value_name = "RESOURCE")]
    pub resource: String,
    /// Namespace of the resource
    #[arg(short = 'n', long, default_value = "default")]
    pub namespace: String,
    /// Events per second per proxy at most (1-1000)
    #[arg(long, default_value_t = pimesh_api::tap::DEFAULT_TAP_MAX_RPS)]
    pub max_rps: u32,
    /// Only requests with this method
    #[arg(long)]
    pub method: Option<String>,
    /// Only requests with this :authority / Host
    #[arg(long)]
    pub authority: Option<String>,
    /// Only requests whose path starts with this
    #[arg(long)]
    pub path: Option<String>,
    /// Stop after this long (e.g. 30s, 5m); default: until Ctrl-C
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    #[command(flatten)]
    pub controller: ControllerFlag,
}

/// `pimesh tap` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum TapOutput {
    /// One line per exchange, as `linkerd viz tap`.
    Text,
    /// The events as the API streams them (NDJSON).
    Json,
}

/// `pimesh tap`.
#[derive(Debug, Clone, Args)]
pub struct TapCommand {
    #[command(flatten)]
    pub args: TapArgs,
    /// Output format
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: TapOutput,
}

/// `pimesh top`.
#[derive(Debug, Clone, Args)]
pub struct TopCommand {
    #[command(flatten)]
    pub args: TapArgs,
    /// Redraw interval in a terminal (e.g. 1s)
    #[arg(long, value_parser = parse_duration, default_value = "1s")]
    pub interval: Duration,
    /// Output format of the final table when not in a terminal
    #[arg(short = 'o', long, value_enum, default_value = "text")]
    pub output: TapOutput,
}

use pimesh_api::text::parse_positive_duration as parse_duration;

impl TapArgs {
    fn path(&self) -> Result<String, Error> {
        if !(1..=pimesh_api::tap::MAX_TAP_MAX_RPS).contains(&self.max_rps) {
            return Err(Error::Usage {
                flag: "--max-rps",
                value: self.max_rps.to_string(),
                reason: format!("not 1..={}", pimesh_api::tap::MAX_TAP_MAX_RPS),
            });
        }
        if !self.resource.contains('/') {
            return Err(Error::Usage {
                flag: "RESOURCE",
                value: self.resource.clone(),
                reason: "expected KIND/NAME, e.g. deploy/web".into(),
            });
        }
        let mut q = format!(
            "{}?resource={}&namespace={}&max_rps={}",
            pimesh_api::tap::OPERATOR_TAP_PATH,
            encode(&self.resource),
            encode(&self.namespace),
            self.max_rps
        );
        for (k, v) in [
            ("method", &self.method),
            ("authority", &self.authority),
            ("path", &self.path),
        ] {
            if let Some(v) = v {
                q.push_str(&format!("&{k}={}", encode(v)));
            }
        }
        Ok(q)
    }

    /// Reads the stream until the duration ends (or forever), handing each
    /// event to `on_event`.
    fn follow(
        &self,
        env: &dyn Env,
        mut on_event: impl FnMut(TapEvent, &[u8]),
    ) -> Result<(), Error> {
        let path = self.path()?;
        let client = self.controller.client(env)?;
        let deadline = self.duration.map(|d| Instant::now() + d);
        block_on(async {
            let read = client.lines(&path, |line| {
                if let Ok(ev) = serde_json::from_slice::<TapEvent>(line) {
                    on_event(ev, line);
                }
                deadline.is_none_or(|d| Instant::now() < d)
            });
            match deadline {
                Some(d) => match tokio::time::timeout_at(d.into(), read).await {
                    Ok(r) => Ok(r?),
                    Err(_) => Ok(()),
                },
                None => Ok(read.await?),
            }
        })
    }
}

/// Percent-encodes a query value.
fn encode(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for b in v.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Runs `pimesh tap`.
///
/// # Errors
///
/// [`Error::Usage`] for a bad `--max-rps` or RESOURCE; [`Error::Client`] when
/// the controller cannot be reached or refuses (its `ApiError`);
/// [`Error::Output`] when printing fails or the runtime cannot start.
pub fn run_tap(cmd: TapCommand, env: &dyn Env) -> Result<(), Error> {
    let mut out = std::io::stdout().lock();
    let mut failed = None;
    cmd.args.follow(env, |ev, raw| {
        let r = match cmd.output {
            TapOutput::Json => out.write_all(raw).and_then(|_| out.write_all(b"\n")),
            TapOutput::Text => writeln!(out, "{}", line(&ev)),
        };
        if let Err(e) = r.and_then(|_| out.flush()) {
            failed.get_or_insert(e);
        }
    })?;
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(()),
    }
}

/// One exchange as `linkerd viz tap` prints its `rsp` line.
pub fn line(ev: &TapEvent) -> String {
    let proxy = if ev.direction == "inbound" {
        "in "
    } else {
        "out"
    };
    let mut s = format!("rsp proxy={proxy} dst={} tls={}", ev.destination, ev.tls);
    if let Some(id) = &ev.client_id {
        s.push_str(&format!(" src_id={id}"));
    }
    if let Some(id) = &ev.server_id {
        s.push_str(&format!(" dst_id={id}"));
    }
    s.push_str(&format!(
        " :method={} :authority={} :path={}",
        ev.method, ev.authority, ev.path
    ));
    match ev.status {
        Some(st) => s.push_str(&format!(" :status={st}")),
        None => s.push_str(" :status=-"),
    }
    if let Some(g) = ev.grpc_status {
        s.push_str(&format!(" grpc-status={g}"));
    }
    s.push_str(&format!(" latency={}µs", ev.latency_us));
    if let Some(e) = &ev.error {
        s.push_str(&format!(" error={e}"));
    }
    if let Some(pod) = ev.labels.get("pod") {
        s.push_str(&format!(" pod={pod}"));
    }
    if ev.skipped > 0 {
        s.push_str(&format!(" skipped={}", ev.skipped));
    }
    s
}

/// One row of `pimesh top`: the exchanges of one source, destination,
/// method and path.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TopRow {
    /// The client (identity, or `-` for plaintext inbound / outbound traffic).
    pub source: String,
    /// The pod that answered (inbound) or the target (outbound).
    pub destination: String,
    /// Request method.
    pub method: String,
    /// Request path.
    pub path: String,
    /// Exchanges seen.
    pub count: u64,
    /// Lowest latency, microseconds.
    pub best_us: u64,
    /// Highest latency, microseconds.
    pub worst_us: u64,
    /// Latest latency, microseconds.
    pub last_us: u64,
    /// Successful share, 0..=1 (5xx, gRPC errors and proxy errors fail).
    pub success_rate: f64,
    #[serde(skip)]
    successes: u64,
}

/// Folds events into rows.
#[derive(Debug, Default)]
pub struct Top {
    rows: HashMap<(String, String, String, String), TopRow>,
}

/// Distinct rows kept at most (paths can be unbounded).
const MAX_ROWS: usize = 10_000;

impl Top {
    /// Counts one exchange.
    pub fn add(&mut self, ev: &TapEvent) {
        let source = match (&ev.client_id, ev.direction.as_str()) {
            (Some(id), _) => id.clone(),
            (None, "outbound") => ev.labels.get("pod").cloned().unwrap_or_else(|| "-".into()),
            (None, _) => "-".into(),
        };
        let destination = match ev.direction.as_str() {
            "inbound" => ev
                .labels
                .get("pod")
                .cloned()
                .unwrap_or_else(|| ev.destination.clone()),
            _ => ev
                .server_id
                .clone()
                .unwrap_or_else(|| ev.destination.clone()),
        };
        let key = (source, destination, ev.method.clone(), ev.path.clone());
        if !self.rows.contains_key(&key) && self.rows.len() >= MAX_ROWS {
            return;
        }
        let ok = ev.error.is_none()
            && ev.status.is_some_and(|s| s < 500)
            && ev.grpc_status.is_none_or(|g| g == 0);
        let row = self.rows.entry(key.clone()).or_insert_with(|| TopRow {
            source: key.0,
            destination: key.1,
            method: key.2,
            path: key.3,
            count: 0,
            best_us: u64::MAX,
            worst_us: 0,
            last_us: 0,
            success_rate: 0.0,
            successes: 0,
        });
        row.count += 1;
        row.successes += u64::from(ok);
        row.best_us = row.best_us.min(ev.latency_us);
        row.worst_us = row.worst_us.max(ev.latency_us);
        row.last_us = ev.latency_us;
        row.success_rate = row.successes as f64 / row.count as f64;
    }

    /// The rows, busiest first.
    pub fn rows(&self) -> Vec<TopRow> {
        let mut rows: Vec<_> = self.rows.values().cloned().collect();
        rows.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.path.cmp(&b.path)));
        rows
    }

    /// The table as `linkerd viz top` shows it.
    pub fn table(&self) -> String {
        let ms = |us: u64| format!("{:.1}ms", us as f64 / 1000.0);
        let mut lines = vec![[
            "Source".to_string(),
            "Destination".into(),
            "Method".into(),
            "Path".into(),
            "Count".into(),
            "Best".into(),
            "Worst".into(),
            "Last".into(),
            "Success Rate".into(),
        ]];
        for r in self.rows() {
            lines.push([
                r.source,
                r.destination,
                r.method,
                r.path,
                r.count.to_string(),
                ms(r.best_us),
                ms(r.worst_us),
                ms(r.last_us),
                format!("{:.2}%", r.success_rate * 100.0),
            ]);
        }
        let mut widths = [0usize; 9];
        for l in &lines {
            for (w, c) in widths.iter_mut().zip(l) {
                *w = (*w).max(c.chars().count());
            }
        }
        let mut s = String::new();
        for l in &lines {
            for (i, (w, c)) in widths.iter().zip(l).enumerate() {
                let pad = w - c.chars().count();
                s.push_str(c);
                if i + 1 < l.len() {
                    s.push_str(&" ".repeat(pad + 2));
                }
            }
            s.push('\n');
        }
        s
    }
}

/// Runs `pimesh top`: redraws every `--interval` in a terminal; otherwise
/// prints the table (or JSON rows) once when `--duration` ends.
///
/// # Errors
///
/// As [`run_tap`]; also [`Error::Usage`] without `--duration` when the output
/// is not a terminal.
pub fn run_top(cmd: TopCommand, env: &dyn Env) -> Result<(), Error> {
    let tty = std::io::stdout().is_terminal();
    if !tty && cmd.args.duration.is_none() {
        return Err(Error::Usage {
            flag: "--duration",
            value: String::new(),
            reason: "required when the output is not a terminal (top prints once, at the end)"
                .into(),
        });
    }
    let mut top = Top::default();
    let mut drawn = Instant::now();
    cmd.args.follow(env, |ev, _| {
        top.add(&ev);
        if tty && drawn.elapsed() >= cmd.interval {
            drawn = Instant::now();
            print!("\x1b[H\x1b[2J{}", top.table());
            let _ = std::io::stdout().flush();
        }
    })?;
    match cmd.output {
        TapOutput::Json => super::print_json(&top.rows()),
        TapOutput::Text => {
            if tty {
                print!("\x1b[H\x1b[2J");
            }
            print!("{}", top.table());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(path: &str, status: u16, latency_us: u64) -> TapEvent {
        TapEvent {
            ts_ms: 0,
            direction: "inbound".into(),
            destination: "127.0.0.1:80".into(),
            tls: true,
            client_id: Some("web.shop.serviceaccount.identity.pimesh.cluster.local".into()),
            server_id: None,
            method: "GET".into(),
            authority: "emoji".into(),
            path: path.into(),
            status: Some(status),
            grpc_status: None,
            latency_us,
            error: None,
            skipped: 0,
            labels: [("pod".to_string(), "emoji-0".to_string())].into(),
        }
    }

    #[test]
    fn top_aggregates_by_path() {
        let mut top = Top::default();
        for (p, s, l) in [
            ("/a", 200, 10),
            ("/a", 500, 30),
            ("/a", 200, 20),
            ("/b", 200, 5),
        ] {
            top.add(&ev(p, s, l));
        }
        let rows = top.rows();
        assert_eq!(rows.len(), 2);
        let a = &rows[0];
        assert_eq!(
            (a.path.as_str(), a.count, a.best_us, a.worst_us, a.last_us),
            ("/a", 3, 10, 30, 20)
        );
        assert!((a.success_rate - 2.0 / 3.0).abs() < 1e-9);
        assert_eq!(a.destination, "emoji-0");
        let table = top.table();
        assert!(table.starts_with("Source"), "{table}");
        assert!(table.contains("66.67%"), "{table}");
        let l = line(&ev("/x", 200, 1500));
        assert!(l.contains(":path=/x :status=200 latency=1500µs"), "{l}");
        assert!(l.contains("src_id=web.shop."), "{l}");
    }

    #[test]
    fn durations_and_encoding() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert!(parse_duration("0s").is_err() && parse_duration("x").is_err());
        assert_eq!(encode("deploy/web a"), "deploy%2Fweb%20a");
    }
}
