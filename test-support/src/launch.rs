//! [`launch`]: a server process (the proxy, the controller) started and
//! waited for up to the log line that says where it listens, its stderr
//! kept as a log for failure messages.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::RecvTimeoutError;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A process started by [`launch`]: SIGKILLed and reaped on drop.
#[derive(Debug)]
pub struct Launched {
    /// `None` once [`Launched::kill`] took it.
    child: Option<Child>,
    /// The first stderr line holding the launch's marker: where it listens.
    line: String,
    /// Everything the process wrote to stderr so far, line by line: what a
    /// failing test prints.
    log: Arc<Mutex<String>>,
}

/// A process that exited before it printed its marker line.
#[derive(Debug)]
pub struct Exited {
    pub status: ExitStatus,
    /// Its stderr.
    pub log: String,
}

/// Spawns `c` (stdin and stdout from/to /dev/null, stderr captured) and
/// waits up to `timeout` for a stderr line containing `marker` (e.g.
/// `"listening inbound="`).
///
/// # Errors
///
/// [`Exited`] with the exit status and the log when the process exits
/// before printing the marker (a refused configuration, as tests expect).
///
/// # Panics
///
/// When the program cannot be started, or prints no marker within
/// `timeout` (the process is killed first): a test cannot go on then.
pub fn launch(c: &mut Command, marker: &str, timeout: Duration) -> Result<Launched, Exited> {
    let mut child = crate::command::spawn(c, Stdio::null());
    let log = Arc::new(Mutex::new(String::new()));
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = child.stderr.take().map(|stderr| {
        let (log, marker) = (log.clone(), marker.to_string());
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if line.contains(&marker) {
                    let _ = tx.send(line.clone());
                }
                let mut l = log.lock().unwrap_or_else(|e| e.into_inner());
                l.push_str(&line);
                l.push('\n');
            }
        })
    });
    let text = |log: &Arc<Mutex<String>>| log.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let deadline = Instant::now() + timeout;
    loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(line) => {
                return Ok(Launched {
                    child: Some(child),
                    line,
                    log,
                })
            }
            Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {}
        }
        if let Ok(Some(status)) = child.try_wait() {
            // The reader takes the last lines until the pipe closes (1 s at
            // most: a grandchild may hold it open).
            let end = Instant::now() + Duration::from_secs(1);
            while reader.as_ref().is_some_and(|r| !r.is_finished()) && Instant::now() < end {
                std::thread::sleep(Duration::from_millis(10));
            }
            // A marker printed just before exiting still counts as exited.
            return Err(Exited {
                status,
                log: text(&log),
            });
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{c:?} printed no {marker:?} within {timeout:?}:\n{}",
                text(&log)
            );
        }
    }
}

impl Launched {
    /// The marker line.
    pub fn line(&self) -> &str {
        &self.line
    }

    /// The address after `key` in the marker line (see [`line_addr`]).
    /// Panics naming the key and the line when there is none.
    pub fn addr(&self, key: &str) -> SocketAddr {
        line_addr(&self.line, key).unwrap_or_else(|| panic!("no {key} address in {}", self.line))
    }

    /// The process's stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The process id; 0 once killed.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The exit status if the process has exited (not waiting).
    pub fn try_exit(&mut self) -> Option<ExitStatus> {
        self.child.as_mut()?.try_wait().ok().flatten()
    }

    /// Waits up to `timeout` for the process to exit: its status, or
    /// `None` when it still runs (or was killed with [`Launched::kill`]).
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(s) = self.try_exit() {
                return Some(s);
            }
            if self.child.is_none() || Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL (no chance to flush anything) and reap; idempotent.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Launched {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The socket address after `key` (e.g. `" inbound="`, `"admin="`) in a
/// log line such as `listening inbound=127.0.0.1:4143 admin=…`: up to the
/// next white space or comma, quotes trimmed. `None` when `key` is absent
/// or what follows is no address.
pub fn line_addr(line: &str, key: &str) -> Option<SocketAddr> {
    let start = line.find(key)? + key.len();
    line[start..]
        .split(|c: char| c.is_whitespace() || c == ',')
        .next()?
        .trim_matches('"')
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_in_a_line() {
        let line = "INFO listening inbound=127.0.0.1:1 outbound=\"127.0.0.1:2\", admin=[::1]:3";
        assert_eq!(
            line_addr(line, " inbound="),
            Some(([127, 0, 0, 1], 1).into())
        );
        assert_eq!(line_addr(line, "outbound=").map(|a| a.port()), Some(2));
        assert_eq!(line_addr(line, "admin=").map(|a| a.port()), Some(3));
        assert_eq!(line_addr(line, "proxy="), None);
        assert_eq!(line_addr("proxy=nowhere", "proxy="), None);
    }

    #[test]
    fn waits_for_the_marker_and_keeps_the_log() {
        let mut p = launch(
            Command::new("sh").args([
                "-c",
                "echo one >&2; echo 'up at=127.0.0.1:9' >&2; exec sleep 30",
            ]),
            "up at=",
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(p.addr("at=").port(), 9);
        assert!(p.log().contains("one\n"));
        assert!(p.pid() > 0);
        assert_eq!(p.wait_exit(Duration::from_millis(50)), None);
        p.kill();
        assert_eq!(p.pid(), 0);
    }

    #[test]
    fn an_early_exit_is_an_error_with_the_log() {
        let e = launch(
            Command::new("sh").args(["-c", "echo refused >&2; exit 64"]),
            "listening",
            Duration::from_secs(10),
        )
        .unwrap_err();
        assert_eq!(e.status.code(), Some(64));
        assert_eq!(e.log, "refused\n");
    }
}
