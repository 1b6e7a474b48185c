//! `--baseline FILE`: the figures of this run against a saved
//! `report.json`, matched by protocol, scenario, proxy and step, as
//! new / old ratios (below 1: this run is faster or smaller).

use crate::config::Protocol;
use crate::report::{IdleFigure, Report};
use std::path::Path;

/// The baseline file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read baseline {0}")]
    Read(String, #[source] std::io::Error),
    #[error("baseline {0} is not a pimesh-bench report.json")]
    Parse(String, #[source] serde_json::Error),
}

/// Reads a saved report.
///
/// # Errors
///
/// [`Error::Read`] when the file cannot be read; [`Error::Parse`] when it is
/// not a report's JSON.
pub fn load(path: &Path) -> Result<Report, Error> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| Error::Read(name.clone(), e))?;
    serde_json::from_str(&text).map_err(|e| Error::Parse(name, e))
}

/// One figure in both runs.
#[derive(Clone, Debug, PartialEq)]
pub struct CompareRow {
    pub figure: String,
    pub old: f64,
    pub new: f64,
}

impl CompareRow {
    /// new / old.
    pub fn ratio(&self) -> f64 {
        if self.old == 0.0 {
            f64::NAN
        } else {
            self.new / self.old
        }
    }
}

/// Every figure present (and non-zero) in both reports.
pub fn compare(old: &Report, new: &Report) -> Vec<CompareRow> {
    let mut rows = Vec::new();
    let mut push = |figure: String, old: Option<f64>, new: Option<f64>| {
        if let (Some(o), Some(n)) = (old, new) {
            if o > 0.0 && n > 0.0 {
                rows.push(CompareRow {
                    figure,
                    old: o,
                    new: n,
                });
            }
        }
    };
    for run in &new.runs {
        let Some(before) = old.run(&run.proxy, run.scenario, run.protocol) else {
            continue;
        };
        let name = format!(
            "{} {} {}",
            run.protocol.as_str(),
            run.scenario.as_str(),
            run.proxy
        );
        let idle = |r: &crate::report::Run| {
            r.processes
                .iter()
                .map(|p| p.idle_rss_kib)
                .max()
                .map(|k| k as f64 / 1024.0)
        };
        push(format!("{name} idle RSS MiB"), idle(before), idle(run));
        for st in &run.steps {
            let Some(prev) = before
                .steps
                .iter()
                .find(|s| s.mode == st.mode && s.target_rps == st.target_rps)
            else {
                continue;
            };
            let load = st
                .target_rps
                .map_or("saturation".into(), |r| format!("{r} rps"));
            push(
                format!("{name} {load} p50 µs"),
                Some(prev.latency_us.p50),
                Some(st.latency_us.p50),
            );
            push(
                format!("{name} {load} p99 µs"),
                Some(prev.latency_us.p99),
                Some(st.latency_us.p99),
            );
            push(
                format!("{name} {load} CPU µs/req"),
                prev.cpu_us_per_request,
                st.cpu_us_per_request,
            );
            push(
                format!("{name} {load} peak RSS MiB"),
                prev.peak_rss_kib().map(|k| k as f64 / 1024.0),
                st.peak_rss_kib().map(|k| k as f64 / 1024.0),
            );
            if st.target_rps.is_none() {
                push(
                    format!("{name} saturation rps"),
                    Some(prev.achieved_rps),
                    Some(st.achieved_rps),
                );
            }
        }
    }
    for f in &new.idle_conns {
        let same = |p: &&IdleFigure| p.proxy == f.proxy && p.protocol == f.protocol;
        if let Some(prev) = old.idle_conns.iter().find(same) {
            let what = match f.protocol {
                Protocol::H1 => "",
                Protocol::H2 => " (h2)",
            };
            push(
                format!("{} idle connections{what} RSS MiB", f.proxy),
                Some(prev.rss_kib as f64 / 1024.0),
                Some(f.rss_kib as f64 / 1024.0),
            );
        }
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_runs_and_steps() {
        let old = crate::report::tests::sample();
        let mut new = old.clone();
        new.runs[1].steps[1].cpu_us_per_request = Some(9.0);
        new.runs.remove(2); // a peer only in the old run: ignored
        let rows = compare(&old, &new);
        let row = rows
            .iter()
            .find(|r| r.figure == "h1 inbound pimesh saturation CPU µs/req")
            .unwrap();
        assert_eq!((row.old, row.new, row.ratio()), (18.0, 9.0, 0.5));
        let p99 = rows
            .iter()
            .find(|r| r.figure == "h1 mesh pimesh 1000 rps p99 µs")
            .unwrap();
        assert_eq!(p99.ratio(), 1.0);
        assert!(!rows.iter().any(|r| r.figure.contains("haproxy")));
        assert!(rows
            .iter()
            .any(|r| r.figure == "pimesh idle connections RSS MiB"));
    }

    #[test]
    fn bad_files_are_reported() {
        let dir = std::env::temp_dir().join(format!("pimesh-bench-bl-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("report.json");
        std::fs::write(&f, "{\"not\": \"a report\"}").unwrap();
        assert!(matches!(load(&f), Err(Error::Parse(..))));
        assert!(matches!(load(&dir.join("none.json")), Err(Error::Read(..))));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
