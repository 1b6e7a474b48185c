//! The controller's view of a lab's traffic: `pimesh stat deploy` and
//! `pimesh edges deploy` run against the lab's controller (which scrapes
//! every registered proxy every `--scrape-interval`), as a user would run
//! them, plus the dashboard's URL. What `pimesh-lab` prints while a lab
//! runs and before it tears down.

use crate::process::{self, run};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// Limit on one `pimesh` command.
const CLI_TIMEOUT: Duration = Duration::from_secs(30);

/// How to ask the lab's controller.
#[derive(Debug, Clone)]
pub struct Report {
    /// The `pimesh` binary.
    pub pimesh: PathBuf,
    /// The operator API as the host reaches it (`http://127.0.0.1:PORT`).
    pub url: String,
    /// The namespaces of the lab's workloads (`-n NS` when there is one,
    /// else `-A`).
    pub namespaces: Vec<String>,
    /// The workloads (deployments) whose proxies are scraped: those that
    /// register a service.
    pub scraped: Vec<String>,
}

impl Report {
    /// `-n NS` for one namespace, else `-A`.
    fn scope(&self) -> Vec<String> {
        match self.namespaces.as_slice() {
            [ns] => vec!["-n".into(), ns.clone()],
            _ => vec!["-A".into()],
        }
    }

    /// `pimesh ARGS <scope> --controller URL` as a user types it: the
    /// binary as `pimesh` when that is what `PATH` finds (or it was given
    /// bare), else by its absolute path — a fresh clone's build is in
    /// `target/release`, not on `PATH`, and the line must work when pasted.
    pub fn command_line(&self, args: &[&str]) -> String {
        let mut v: Vec<String> = vec![shown_binary(&self.pimesh, std::env::var_os("PATH"))];
        v.extend(args.iter().map(|s| s.to_string()));
        v.extend(self.scope());
        v.extend(["--controller".into(), self.url.clone()]);
        v.join(" ")
    }

    /// Runs `pimesh ARGS <scope> --controller URL`; its stdout, or why it
    /// failed (stderr, exit status).
    ///
    /// # Errors
    ///
    /// [`process::Error`]: `pimesh` cannot be started, runs past its time limit
    /// or exits non-zero (with its stderr).
    pub fn run(&self, args: &[&str]) -> Result<String, process::Error> {
        let mut c = Command::new(&self.pimesh);
        c.args(args)
            .args(self.scope())
            .arg("--controller")
            .arg(&self.url)
            .env_remove("PIMESH_CONTROLLER");
        let out = run(&mut c, CLI_TIMEOUT)?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Waits up to `timeout` until `pimesh stat deploy` shows requests for
    /// every scraped workload (a scrape after the traffic); whether it does.
    pub fn wait_for_traffic(&self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if let Ok(table) = self.run(&["stat", "deploy"]) {
                if self.scraped.iter().all(|w| has_requests(&table, w)) {
                    return true;
                }
            }
            if Instant::now() > end || crate::interrupt::sleep(Duration::from_millis(250)).is_err()
            {
                return false;
            }
        }
    }

    /// `pimesh stat deploy` and `pimesh edges deploy` as text, each after
    /// its command line; with `json_dir`, their `-o json` answers are also
    /// written to `stat.json` and `edges.json` there.
    pub fn text(&self, json_dir: Option<&Path>) -> String {
        self.section("stat", json_dir) + &self.section("edges", json_dir)
    }

    /// `pimesh <cmd> deploy` after its command line (see [`Report::text`]).
    pub fn section(&self, cmd: &str, json_dir: Option<&Path>) -> String {
        let mut s = format!("$ {}\n", self.command_line(&[cmd, "deploy"]));
        match self.run(&[cmd, "deploy"]) {
            Ok(out) if out.trim().is_empty() => s.push_str("(nothing yet)\n"),
            Ok(out) => s.push_str(&out),
            Err(e) => s.push_str(&format!("pimesh-lab: {e}\n")),
        }
        if let Some(dir) = json_dir {
            let file = dir.join(format!("{cmd}.json"));
            let written = self
                .run(&[cmd, "deploy", "-o", "json"])
                .map_err(|e| e.to_string())
                .and_then(|j| std::fs::write(&file, j).map_err(|e| e.to_string()));
            if let Err(e) = written {
                s.push_str(&format!(
                    "pimesh-lab: cannot write {}: {e}\n",
                    file.display()
                ));
            }
        }
        s
    }
}

/// Whether the `stat` table has a row for `workload` with requests (an RPS
/// that is not `0.0rps` or `-`).
fn has_requests(table: &str, workload: &str) -> bool {
    table.lines().any(|l| {
        let w: Vec<&str> = l.split_whitespace().collect();
        w.len() >= 4
            && w[0] == workload
            && w[3]
                .strip_suffix("rps")
                .and_then(|r| r.parse::<f64>().ok())
                .is_some_and(|r| r > 0.0)
    })
}

/// How to name `bin` in a command a user pastes: its file name when it
/// has no directory or when `path` (a `PATH` value) finds that name as
/// the same file, else its absolute path.
fn shown_binary(bin: &Path, path: Option<std::ffi::OsString>) -> String {
    let Some(name) = bin.file_name() else {
        return bin.display().to_string();
    };
    if bin.parent().is_none_or(|p| p.as_os_str().is_empty()) {
        return name.to_string_lossy().into_owned();
    }
    let absolute = std::path::absolute(bin).unwrap_or_else(|_| bin.to_path_buf());
    let found = path
        .iter()
        .flat_map(std::env::split_paths)
        .map(|d| d.join(name))
        .find(|c| c.is_file());
    match (found, absolute.canonicalize()) {
        (Some(f), Ok(real)) if f.canonicalize().is_ok_and(|f| f == real) => {
            name.to_string_lossy().into_owned()
        }
        _ => absolute.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_rows_with_requests() {
        let t = "NAME    MESHED  SUCCESS  RPS      LATENCY_P50\n\
                 emoji   1/1     -        0.0rps   -\n\
                 voting  1/1     91.14%   15.8rps  2ms\n";
        assert!(has_requests(t, "voting"));
        assert!(!has_requests(t, "emoji"));
        assert!(!has_requests(t, "web"));
        assert!(!has_requests("NAME MESHED SUCCESS RPS\n", "NAME"));
    }

    #[test]
    fn scope_and_command_line() {
        let mut r = Report {
            pimesh: "pimesh".into(),
            url: "http://127.0.0.1:1".into(),
            namespaces: vec!["emojivoto".into()],
            scraped: vec![],
        };
        assert_eq!(
            r.command_line(&["stat", "deploy"]),
            "pimesh stat deploy -n emojivoto --controller http://127.0.0.1:1"
        );
        r.namespaces.push("lab".into());
        assert_eq!(
            r.command_line(&["edges", "deploy"]),
            "pimesh edges deploy -A --controller http://127.0.0.1:1"
        );
    }

    /// A build in `target/release` (not on `PATH`) is shown by its
    /// absolute path, so the printed line works when pasted; the same
    /// file found through `PATH` is shown as `pimesh`.
    #[test]
    fn a_binary_off_path_is_shown_by_its_absolute_path() {
        let dir = std::env::temp_dir().join(format!("pimesh-report-{}", std::process::id()));
        let bin_dir = dir.join("target/release");
        std::fs::create_dir_all(&bin_dir).unwrap();
        std::fs::write(bin_dir.join("pimesh"), b"").unwrap();
        let other = dir.join("elsewhere");
        std::fs::create_dir_all(&other).unwrap();

        let bin = bin_dir.join("pimesh");
        let shown = shown_binary(&bin, Some(other.clone().into_os_string()));
        assert_eq!(shown, bin.display().to_string());
        assert!(Path::new(&shown).is_absolute());
        // Relative paths become absolute.
        let rel = shown_binary(Path::new("target/release/pimesh"), None);
        assert!(
            Path::new(&rel).is_absolute() && rel.ends_with("target/release/pimesh"),
            "{rel}"
        );
        // On PATH: the bare name.
        let path = std::env::join_paths([other, bin_dir]).unwrap();
        assert_eq!(shown_binary(&bin, Some(path)), "pimesh");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
