//! Child processes of the harness (proxies, controller, upstream, peers):
//! started with their stderr kept in a log, optionally inside a cgroup from
//! the first instruction, under qemu when the kernel cannot run them
//! natively (no binfmt_misc), killed on drop; and the /proc figures the
//! report is made of (CPU ticks, VmRSS, VmHWM).

use crate::cgroup::Cgroup;
use std::ffi::OsString;
use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// Starting or watching a child failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The program could not be executed.
    #[error("cannot start {0}")]
    Spawn(String, #[source] std::io::Error),
    /// The program did not print its start-up line in time.
    #[error("{name} did not print {marker:?} within {secs} s; its log:\n{log}")]
    NoStartLine {
        name: String,
        marker: &'static str,
        secs: u64,
        log: String,
    },
    /// The program's start-up line lacks an address.
    #[error("no {key} address in {line:?}")]
    NoAddress { key: String, line: String },
}

/// Set once any child had to be run under qemu: timings are meaningless.
static EMULATED: AtomicBool = AtomicBool::new(false);

/// Whether the harness itself or a child runs under qemu user-mode
/// emulation: a child had to be started through qemu, or this binary is not
/// native to the running kernel (`/proc/sys/kernel/arch`, Linux ≥ 6.1: the
/// kernel's machine, which qemu-user does not rewrite, unlike `uname -m`).
/// The second case is qemu run explicitly or through binfmt_misc, whose
/// children then start without a visible failure.
pub fn emulated() -> bool {
    static SELF_EMULATED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    EMULATED.load(Ordering::Relaxed)
        || *SELF_EMULATED.get_or_init(|| {
            std::fs::read_to_string("/proc/sys/kernel/arch")
                .is_ok_and(|k| !native(k.trim(), std::env::consts::ARCH))
        })
}

/// Whether a kernel of machine `kernel` (`uname -m` form) runs binaries of
/// Rust architecture `ours` natively (64-bit ARM and x86 kernels run their
/// 32-bit user spaces too).
fn native(kernel: &str, ours: &str) -> bool {
    match ours {
        "aarch64" => kernel == "aarch64",
        "arm" => kernel == "aarch64" || kernel.starts_with("arm"),
        "x86_64" => kernel == "x86_64",
        "x86" => kernel == "x86_64" || (kernel.starts_with('i') && kernel.ends_with("86")),
        other => kernel == other,
    }
}

/// What to run: a program, its arguments and extra environment.
#[derive(Clone, Debug)]
pub struct Launch {
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, String)>,
}

impl Launch {
    pub fn new(program: impl Into<PathBuf>) -> Launch {
        Launch {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, a: impl Into<OsString>) -> Launch {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: &str, v: impl Into<String>) -> Launch {
        self.env.push((k.into(), v.into()));
        self
    }

    fn command(&self, wrapper: Option<&str>, stdout: bool) -> Command {
        let mut c = match wrapper {
            Some(w) => {
                let mut c = Command::new(w);
                c.arg(&self.program);
                c
            }
            None => Command::new(&self.program),
        };
        c.args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("http_proxy")
            .env_remove("HTTP_PROXY")
            .stdin(Stdio::null())
            .stdout(if stdout {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stderr(Stdio::piped());
        c
    }
}

/// Runs `launch` to completion: `(Some(stdout), stderr)` when it exited 0,
/// `(None, stderr)` otherwise.
///
/// # Errors
///
/// The program cannot be started or its output cannot be read.
pub fn output(launch: &Launch) -> std::io::Result<(Option<String>, String)> {
    let out = spawn(launch, None, true)?.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    Ok((out.status.success().then_some(stdout), stderr))
}

/// A running child, killed (SIGKILL, by its pid) on drop; its cgroup is
/// removed after it.
pub struct Proc {
    pub name: String,
    child: Child,
    log: Arc<Mutex<String>>,
    pub cgroup: Option<Cgroup>,
}

impl Proc {
    /// Starts `launch` (inside `cgroup` when given) and, with a `marker`,
    /// waits up to `wait` for the stderr line containing it, returned too.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when the program (or its cgroup's `cgroup.procs`)
    /// cannot be started or opened; [`Error::NoStartLine`] with its log when it
    /// prints no `marker` line within `wait`.
    pub fn start(
        name: &str,
        launch: &Launch,
        cgroup: Option<Cgroup>,
        marker: Option<&'static str>,
        wait: Duration,
    ) -> Result<(Proc, String), Error> {
        let mut child = spawn(launch, cgroup.as_ref(), false)
            .map_err(|e| Error::Spawn(launch.program.display().to_string(), e))?;
        let stderr = child.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if marker.is_some_and(|m| line.contains(m)) {
                    let _ = tx.send(line.clone());
                }
                let mut l = log2.lock().unwrap_or_else(|e| e.into_inner());
                // Keep the log bounded: only its start matters for errors.
                if l.len() < 64 * 1024 {
                    l.push_str(&line);
                    l.push('\n');
                }
            }
        });
        let proc = Proc {
            name: name.into(),
            child,
            log,
            cgroup,
        };
        let Some(marker) = marker else {
            return Ok((proc, String::new()));
        };
        match rx.recv_timeout(wait) {
            Ok(line) => Ok((proc, strip_ansi(&line))),
            Err(_) => Err(Error::NoStartLine {
                name: name.into(),
                marker,
                secs: wait.as_secs(),
                log: proc.log(),
            }),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The child's stderr so far (first 64 KiB).
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// `None` while running, else how it ended (e.g. "signal 9").
    pub fn exited(&mut self) -> Option<String> {
        use std::os::unix::process::ExitStatusExt;
        let status = self.child.try_wait().ok()??;
        Some(match status.signal() {
            Some(sig) => format!("killed by signal {sig}"),
            None => format!("exited with {status}"),
        })
    }

    /// The process and its descendants (peers may fork workers).
    pub fn tree(&self) -> Vec<u32> {
        process_tree(self.pid())
    }

    /// User + system CPU time of the process tree, in microseconds.
    pub fn cpu_us(&self) -> u64 {
        self.tree().into_iter().filter_map(cpu_us).sum()
    }

    /// VmRSS of the process tree, KiB.
    pub fn rss_kib(&self) -> u64 {
        self.tree()
            .into_iter()
            .filter_map(|p| status_kib(p, "VmRSS:"))
            .sum()
    }

    /// VmHWM (peak RSS since start or the last [`Proc::reset_hwm`]) of the
    /// process tree, KiB.
    pub fn hwm_kib(&self) -> u64 {
        self.tree()
            .into_iter()
            .filter_map(|p| status_kib(p, "VmHWM:"))
            .sum()
    }

    /// Resets VmHWM to the current RSS (`/proc/PID/clear_refs` = 5, Linux
    /// ≥ 4.0); false when the kernel refused.
    pub fn reset_hwm(&self) -> bool {
        self.tree()
            .into_iter()
            .all(|p| std::fs::write(format!("/proc/{p}/clear_refs"), "5").is_ok())
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // The cgroup (a field) is dropped after this: it is empty by now.
    }
}

/// Spawns natively, or under `qemu-<arch>-static` when the kernel cannot
/// execute the binary (ENOEXEC: a foreign architecture and no binfmt_misc,
/// e.g. this harness itself running under qemu).
fn spawn(launch: &Launch, cgroup: Option<&Cgroup>, stdout: bool) -> std::io::Result<Child> {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let attempt = |wrapper: Option<&str>| {
        let mut c = launch.command(wrapper, stdout);
        let files = match cgroup {
            Some(cg) => cg.open_procs()?,
            None => Vec::new(),
        };
        // SAFETY: between fork and exec the closure only makes
        // async-signal-safe system calls (prctl, getppid, write) on values
        // prepared before the fork.
        unsafe {
            c.pre_exec(move || {
                // Killed with the harness, however it ends (even SIGKILL),
                // instead of running on as an orphan. (The signal follows
                // the spawning thread: children are started from the main
                // thread only.)
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("the harness is gone"));
                }
                // "0" moves the writing process (the child) into the
                // cgroup, so its first allocation is already accounted.
                for f in &files {
                    use std::os::fd::AsRawFd;
                    if libc::write(f.as_raw_fd(), b"0".as_ptr().cast(), 1) != 1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            })
        };
        c.spawn()
    };
    match attempt(None) {
        Err(e) if e.raw_os_error() == Some(libc::ENOEXEC) => {
            let Some(qemu) = qemu_for(&launch.program) else {
                return Err(e);
            };
            EMULATED.store(true, Ordering::Relaxed);
            attempt(Some(&qemu))
        }
        other => other,
    }
}

/// `qemu-<arch>-static` for an ELF binary's machine, if it is on the PATH.
pub fn qemu_for(program: &Path) -> Option<String> {
    let head = std::fs::read(program).ok()?;
    if head.len() < 20 || &head[..4] != b"\x7fELF" {
        return None;
    }
    let machine = u16::from_le_bytes([head[18], head[19]]);
    let arch = match machine {
        0xb7 => "aarch64",
        0x28 => "arm",
        0x3e => "x86_64",
        0xf3 => "riscv64",
        _ => return None,
    };
    let name = format!("qemu-{arch}-static");
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .any(|d| d.join(&name).is_file())
        .then_some(name)
}

/// Removes ANSI colour sequences from a log line.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// The address after `key` (e.g. `"inbound="`) in a start-up line, as
/// [`pimesh_test_support::line_addr`] reads it.
///
/// # Errors
///
/// [`Error::NoAddress`] when the line has no `key` or no address after it.
pub fn line_addr(line: &str, key: &str) -> Result<std::net::SocketAddr, Error> {
    pimesh_test_support::line_addr(line, key).ok_or_else(|| Error::NoAddress {
        key: key.into(),
        line: line.into(),
    })
}

/// Clock ticks per second of /proc/PID/stat times (USER_HZ, 100 on Linux).
fn clock_ticks() -> u64 {
    // SAFETY: sysconf has no preconditions.
    match unsafe { libc::sysconf(libc::_SC_CLK_TCK) } {
        n if n > 0 => n as u64,
        _ => 100,
    }
}

/// utime + stime of `pid`, microseconds (resolution 1/USER_HZ: 10 ms).
pub fn cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let ticks = parse_stat_ticks(&stat)?;
    Some(ticks * 1_000_000 / clock_ticks())
}

/// utime + stime (fields 14 and 15) of a /proc/PID/stat line. The command
/// name (field 2) may contain spaces and parentheses: fields are counted
/// after its last `)`.
pub fn parse_stat_ticks(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state): utime is field 14 → index 11.
    Some(f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?)
}

/// Busy time of the whole machine (all CPUs) since boot, microseconds:
/// the `cpu` line of /proc/stat without idle and iowait.
pub fn system_busy_us() -> Option<u64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    Some(parse_system_busy(&stat)? * 1_000_000 / clock_ticks())
}

/// user + nice + system + irq + softirq + steal ticks of the `cpu` line
/// (guest time is already inside user).
fn parse_system_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|v| v.parse().unwrap_or(0))
        .collect();
    let at = |i: usize| f.get(i).copied().unwrap_or(0);
    Some(at(0) + at(1) + at(2) + at(5) + at(6) + at(7))
}

/// The parent pid (field 4) of a /proc/PID/stat line.
fn parse_stat_ppid(stat: &str) -> Option<u32> {
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// A `/proc/PID/status` field in KiB (`VmRSS:`, `VmHWM:`).
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, field)
}

fn parse_status_kib(status: &str, field: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with(field))?;
    line[field.len()..].split_whitespace().next()?.parse().ok()
}

/// `pid` and its descendants, from the ppid of every /proc entry.
pub fn process_tree(pid: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(p) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) {
                if let Some(pp) = parse_stat_ppid(&stat) {
                    parents.push((p, pp));
                }
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_architectures() {
        assert!(native("x86_64", "x86_64"));
        assert!(native("aarch64", "aarch64"));
        // A Pi with a 64-bit kernel and 32-bit Raspberry Pi OS.
        assert!(native("aarch64", "arm"));
        assert!(native("armv7l", "arm"));
        assert!(native("x86_64", "x86"));
        // qemu-user on an x86_64 machine.
        assert!(!native("x86_64", "aarch64"));
        assert!(!native("x86_64", "arm"));
        assert!(!native("armv7l", "aarch64"));
        // The machine running this test is native to its kernel.
        assert!(!emulated());
    }

    #[test]
    fn stat_fields_after_a_tricky_name() {
        let stat =
            "1234 (a) b (c)) S 1 1234 1234 0 -1 4194560 100 0 0 0 25 7 0 0 20 0 1 0 100 1000 200";
        assert_eq!(parse_stat_ticks(stat), Some(32));
        assert_eq!(parse_stat_ppid(stat), Some(1));
        assert_eq!(parse_stat_ticks("garbage"), None);
    }

    #[test]
    fn system_busy_time() {
        let stat = "cpu  100 5 50 9000 40 3 2 1 0 0\ncpu0 50 2 25 4500 20 1 1 0 0 0\n";
        assert_eq!(parse_system_busy(stat), Some(161));
        assert!(system_busy_us().unwrap() > 0);
    }

    #[test]
    fn status_fields() {
        let s = "Name:\tx\nVmHWM:\t    4321 kB\nVmRSS:\t    1234 kB\n";
        assert_eq!(parse_status_kib(s, "VmRSS:"), Some(1234));
        assert_eq!(parse_status_kib(s, "VmHWM:"), Some(4321));
        assert_eq!(parse_status_kib(s, "VmSwap:"), None);
    }

    #[test]
    fn own_process_figures() {
        let me = std::process::id();
        assert!(status_kib(me, "VmRSS:").unwrap() > 0);
        assert!(process_tree(me).contains(&me));
        // Burn a little CPU so that at least one tick is counted.
        let start = std::time::Instant::now();
        let mut x = 0u64;
        while start.elapsed() < Duration::from_millis(50) {
            x = std::hint::black_box(x.wrapping_add(1));
        }
        assert!(cpu_us(me).unwrap() > 0);
    }

    #[test]
    fn start_line_addresses() {
        let line = "\x1b[2m2026\x1b[0m INFO pimesh: listening inbound=127.0.0.1:4143 outbound=127.0.0.1:1 admin=127.0.0.1:2";
        let line = strip_ansi(line);
        assert_eq!(
            line_addr(&line, " inbound=").unwrap(),
            "127.0.0.1:4143".parse().unwrap()
        );
        assert_eq!(line_addr(&line, "admin=").unwrap().port(), 2);
        assert!(line_addr(&line, "proxy=").is_err());
    }

    #[test]
    fn start_waits_for_the_marker_and_reports_its_absence() {
        let l = Launch::new("sh")
            .arg("-c")
            .arg("echo one >&2; echo 'ready x=1' >&2; sleep 5");
        let (p, line) = Proc::start("sh", &l, None, Some("ready"), Duration::from_secs(5)).unwrap();
        assert_eq!(line, "ready x=1");
        assert!(p.log().contains("one"));
        let l = Launch::new("sh").arg("-c").arg("echo nope >&2");
        let err = Proc::start("sh", &l, None, Some("ready"), Duration::from_millis(300))
            .err()
            .unwrap();
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
