//! Ratio tables for the criterion benches: each bench times a subject and a
//! baseline in the same run, then prints `baseline / subject` (or the
//! reverse) from the estimates criterion saved during that run.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// One line of a ratio table: the subject and the baseline it is compared
/// with, both as criterion bench ids under `group` (`"classify/http1_get"`).
pub struct Pair<'a> {
    /// Label of the line.
    pub name: &'a str,
    /// Bench id of the thing measured.
    pub subject: String,
    /// Bench id of the reference measured beside it.
    pub baseline: String,
}

/// Prints `title`, then per pair the two times per iteration (ns) and
/// `baseline / subject` (above 1: the subject is faster). Pairs without
/// estimates written since `started` (`--test`, `--list`, a filter) are
/// left out; nothing is printed when none is left.
pub fn print(group: &str, title: &str, pairs: &[Pair], started: SystemTime) {
    let Some(dir) = criterion_dir() else { return };
    let rows: Vec<_> = pairs
        .iter()
        .filter_map(|p| {
            let time = |id: &str| typical_ns(&dir.join(group).join(id), started);
            Some((p, time(&p.subject)?, time(&p.baseline)?))
        })
        .collect();
    if rows.is_empty() {
        return;
    }
    println!("\n{group}: {title}");
    for (p, subject, baseline) in rows {
        println!(
            "  {:<24} {:<28} {:>10.1} ns   {:<28} {:>10.1} ns   ratio {:>6.2}",
            p.name,
            p.subject,
            subject,
            p.baseline,
            baseline,
            baseline / subject
        );
    }
}

/// Where criterion writes its results, searched as criterion does:
/// `$CRITERION_HOME`, `$CARGO_TARGET_DIR/criterion`, else the `criterion`
/// directory in the target directory holding this executable.
pub fn criterion_dir() -> Option<PathBuf> {
    if let Some(home) = std::env::var_os("CRITERION_HOME") {
        return Some(home.into());
    }
    if let Some(target) = std::env::var_os("CARGO_TARGET_DIR") {
        return Some(PathBuf::from(target).join("criterion"));
    }
    std::env::current_exe()
        .ok()?
        .ancestors()
        .map(|a| a.join("criterion"))
        .find(|d| d.is_dir())
}

/// The time per iteration (ns) criterion prints as the middle of
/// `time: [..]`: the slope estimate, or the mean when there is no slope.
/// Read from `<bench>/new/estimates.json` if it was written after `since`.
pub fn typical_ns(bench: &Path, since: SystemTime) -> Option<f64> {
    let file = bench.join("new").join("estimates.json");
    if std::fs::metadata(&file).ok()?.modified().ok()? < since {
        return None;
    }
    let json = std::fs::read_to_string(&file).ok()?;
    let v: serde_json::Value = serde_json::from_str(&json).ok()?;
    ["slope", "mean"]
        .iter()
        .find_map(|k| v.get(k)?.get("point_estimate")?.as_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_slope_else_mean_of_fresh_estimates() {
        let dir = std::env::temp_dir().join(format!("pimesh-bench-crit-{}", std::process::id()));
        let new = dir.join("new");
        std::fs::create_dir_all(&new).unwrap();
        let before = SystemTime::now() - std::time::Duration::from_secs(5);
        std::fs::write(
            new.join("estimates.json"),
            r#"{"mean":{"point_estimate":12.5},"slope":null}"#,
        )
        .unwrap();
        assert_eq!(typical_ns(&dir, before), Some(12.5));
        std::fs::write(
            new.join("estimates.json"),
            r#"{"mean":{"point_estimate":12.5},"slope":{"point_estimate":11.0}}"#,
        )
        .unwrap();
        assert_eq!(typical_ns(&dir, before), Some(11.0));
        let later = SystemTime::now() + std::time::Duration::from_secs(60);
        assert_eq!(typical_ns(&dir, later), None, "stale estimates are ignored");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
