//! Children of the lab: entered into a pod's network namespace, given a
//! uid, put in their own process group (a terminal's Ctrl-C reaches the lab
//! only), killed with the lab however it ends (PR_SET_PDEATHSIG, as
//! pimesh-bench does), their output kept in a log file; short commands run
//! with a timeout; TCP connections opened from inside a pod.

use crate::interrupt;
use std::ffi::OsStr;
use std::fs::File;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// Starting, running or reaching a child failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The network namespace's file under /run/netns cannot be opened.
    #[error("network namespace {0}")]
    Netns(String, #[source] std::io::Error),
    /// The program could not be started.
    #[error("cannot run {0}")]
    Spawn(String, #[source] std::io::Error),
    /// The command ran but failed.
    #[error("{cmd} failed ({status}): {stderr}")]
    Failed {
        cmd: String,
        status: String,
        stderr: String,
    },
    /// The command did not finish in time (it was killed).
    #[error("{0} did not finish within {1:?}")]
    Timeout(String, Duration),
    /// A stop was requested while waiting.
    #[error(transparent)]
    Interrupted(#[from] interrupt::Interrupted),
}

/// `/run/netns/NAME`, where `ip netns add` keeps a namespace.
pub fn netns_path(name: &str) -> PathBuf {
    Path::new("/run/netns").join(name)
}

/// A command that runs `program` inside network namespace `netns` (when
/// given) as `uid` (when given, with gid = uid and no supplementary
/// groups), in its own process group, killed by SIGKILL when the thread
/// that spawns it ends. Spawn from the main thread (or a test's thread).
///
/// # Errors
///
/// [`Error::Netns`] when namespace `netns` cannot be opened (no such file under
/// /run/netns).
pub fn command(
    netns: Option<&str>,
    uid: Option<u32>,
    program: impl AsRef<OsStr>,
) -> Result<Command, Error> {
    command_with_mounts(netns, uid, program, &[])
}

/// A bind mount in a child's own mount namespace: `source` (a file or
/// directory of the host) seen at `target` (which must exist), read-only
/// when `read_only`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// What is mounted.
    pub source: PathBuf,
    /// Where the child sees it.
    pub target: PathBuf,
    /// Remounted read-only.
    pub read_only: bool,
}

/// As [`command`], and when `mounts` is not empty the child gets its own
/// mount namespace (private propagation: nothing leaks to the host) with
/// `mounts` applied before the uid change, as a container runtime mounts
/// a pod's volumes. A target under `/run` (or `/var/run`) gets a fresh
/// tmpfs at `/run` with the mount points made in it, as a container has a
/// `/run` of its own: nothing is created on the host.
///
/// # Errors
///
/// As [`command`]; [`Error::Spawn`] for a mount path with a NUL byte or a
/// target outside `/run` that does not exist on the host.
pub fn command_with_mounts(
    netns: Option<&str>,
    uid: Option<u32>,
    program: impl AsRef<OsStr>,
    mounts: &[Mount],
) -> Result<Command, Error> {
    use std::os::unix::ffi::OsStrExt;
    let cstr = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes()).map_err(|e| {
            Error::Spawn(
                p.display().to_string(),
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
            )
        })
    };
    // Targets under /run, rewritten onto /run (/var/run links there), and
    // the directories to make on the fresh tmpfs, parents first.
    let mut dirs: Vec<std::ffi::CString> = Vec::new();
    let mut fresh_run = false;
    let mut targets = Vec::new();
    for m in mounts {
        let under = m
            .target
            .strip_prefix("/var/run")
            .or_else(|_| m.target.strip_prefix("/run"));
        match under {
            Ok(rel) => {
                fresh_run = true;
                let mut cur = PathBuf::from("/run");
                for c in rel.components() {
                    cur.push(c);
                    let c = cstr(&cur)?;
                    if !dirs.contains(&c) {
                        dirs.push(c);
                    }
                }
                targets.push(cur);
            }
            Err(_) if !m.target.exists() => {
                return Err(Error::Spawn(
                    format!("a mount at {}", m.target.display()),
                    std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "no such mount point on this host (only /run gets a fresh one)",
                    ),
                ))
            }
            Err(_) => targets.push(m.target.clone()),
        }
    }
    let mounts: Vec<(std::ffi::CString, std::ffi::CString, bool)> = mounts
        .iter()
        .zip(&targets)
        .map(|(m, t)| Ok((cstr(&m.source)?, cstr(t)?, m.read_only)))
        .collect::<Result<_, Error>>()?;
    let root = std::ffi::CString::new("/").unwrap_or_default();
    let run_dir = std::ffi::CString::new("/run").unwrap_or_default();
    let tmpfs = std::ffi::CString::new("tmpfs").unwrap_or_default();
    let tmpfs_opts = std::ffi::CString::new("mode=755").unwrap_or_default();
    let fd = match netns {
        Some(ns) => Some(File::open(netns_path(ns)).map_err(|e| Error::Netns(ns.into(), e))?),
        None => None,
    };
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    let mut c = Command::new(program);
    c.stdin(Stdio::null());
    // SAFETY: between fork and exec the closure makes only
    // async-signal-safe system calls on values prepared before the fork.
    unsafe {
        c.pre_exec(move || {
            let fail = || Err(std::io::Error::last_os_error());
            if let Some(f) = &fd {
                if libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    return fail();
                }
            }
            if libc::setpgid(0, 0) != 0 {
                return fail();
            }
            if !mounts.is_empty() {
                if libc::unshare(libc::CLONE_NEWNS) != 0
                    || libc::mount(
                        std::ptr::null(),
                        root.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ) != 0
                {
                    return fail();
                }
                if fresh_run {
                    if libc::mount(
                        tmpfs.as_ptr(),
                        run_dir.as_ptr(),
                        tmpfs.as_ptr(),
                        0,
                        tmpfs_opts.as_ptr().cast(),
                    ) != 0
                    {
                        return fail();
                    }
                    for d in &dirs {
                        if libc::mkdir(d.as_ptr(), 0o755) != 0
                            && std::io::Error::last_os_error().raw_os_error() != Some(libc::EEXIST)
                        {
                            return fail();
                        }
                    }
                }
                for (source, target, read_only) in &mounts {
                    if libc::mount(
                        source.as_ptr(),
                        target.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ) != 0
                    {
                        return fail();
                    }
                    if *read_only
                        && libc::mount(
                            std::ptr::null(),
                            target.as_ptr(),
                            std::ptr::null(),
                            libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                            std::ptr::null(),
                        ) != 0
                    {
                        return fail();
                    }
                }
            }
            if let Some(uid) = uid {
                if libc::setgroups(0, std::ptr::null()) != 0
                    || libc::setresgid(uid, uid, uid) != 0
                    || libc::setresuid(uid, uid, uid) != 0
                {
                    return fail();
                }
            }
            // After the uid change: changing credentials clears the signal.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return fail();
            }
            if libc::getppid() != parent {
                return Err(std::io::Error::other("the lab is gone"));
            }
            Ok(())
        })
    };
    Ok(c)
}

/// Runs `c` to completion within `timeout` (killing it otherwise);
/// `Err(Failed)` with its stderr when it exits non-zero.
///
/// # Errors
///
/// [`Error::Spawn`] when `c` cannot be started; [`Error::Timeout`] when it runs
/// past `timeout` (it is killed); [`Error::Failed`] with its stderr when it
/// exits non-zero.
pub fn run(c: &mut Command, timeout: Duration) -> Result<Output, Error> {
    let name = describe(c);
    let mut child = c
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| Error::Spawn(name.clone(), e))?;
    // Drain the pipes in threads so that a chatty command cannot block.
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    let deadline = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => {
                kill_group(&mut child);
                return Err(Error::Timeout(name, timeout));
            }
        }
    };
    let output = Output {
        status,
        stdout: out
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default(),
        stderr: err
            .map(|t| t.join().unwrap_or_default())
            .unwrap_or_default(),
    };
    if !status.success() {
        return Err(Error::Failed {
            cmd: name,
            status: status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).trim().to_string(),
        });
    }
    Ok(output)
}

fn drain(mut r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut v = Vec::new();
        let _ = r.read_to_end(&mut v);
        v
    })
}

/// `program arg arg…` for messages.
pub fn describe(c: &Command) -> String {
    std::iter::once(c.get_program())
        .chain(c.get_args())
        .map(|s| s.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A long-running child of the lab with its output in `log`.
#[derive(Debug)]
pub struct Proc {
    /// What it is, for messages (`web/proxy`).
    pub name: String,
    /// The child; its pid is also its process group id.
    pub child: Child,
    /// stdout and stderr, appended.
    pub log: PathBuf,
}

impl Proc {
    /// Spawns `c` with stdout and stderr appended to `log`.
    ///
    /// # Errors
    ///
    /// [`Error::Spawn`] when `log` cannot be opened or `c` cannot be started.
    pub fn spawn(name: &str, mut c: Command, log: &Path) -> Result<Proc, Error> {
        let f = File::options()
            .create(true)
            .append(true)
            .open(log)
            .map_err(|e| Error::Spawn(format!("{name} (log {})", log.display()), e))?;
        let f2 = f
            .try_clone()
            .map_err(|e| Error::Spawn(name.to_string(), e))?;
        let child = c
            .stdout(f)
            .stderr(f2)
            .spawn()
            .map_err(|e| Error::Spawn(format!("{name}: {}", describe(&c)), e))?;
        Ok(Proc {
            name: name.to_string(),
            child,
            log: log.to_path_buf(),
        })
    }

    /// Whether it is still running.
    pub fn running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// The log so far (lossy UTF-8; empty if unreadable).
    pub fn log_text(&self) -> String {
        std::fs::read(&self.log)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Waits up to `timeout` for a log line containing `marker`; fails
    /// early when the process exits.
    ///
    /// # Errors
    ///
    /// A message with the log when the process exits first or prints no
    /// `marker` within `timeout`, or when a stop is requested ([`interrupt`]).
    pub fn wait_for_log(&mut self, marker: &str, timeout: Duration) -> Result<(), String> {
        let end = Instant::now() + timeout;
        loop {
            if self.log_text().contains(marker) {
                return Ok(());
            }
            if !self.running() {
                return Err(format!("{} exited:\n{}", self.name, self.log_text()));
            }
            if Instant::now() > end {
                return Err(format!(
                    "{} printed no {marker:?} within {timeout:?}:\n{}",
                    self.name,
                    self.log_text()
                ));
            }
            interrupt::sleep(Duration::from_millis(50)).map_err(|e| e.to_string())?;
        }
    }

    /// SIGKILLs its whole process group and reaps it.
    pub fn kill(&mut self) {
        kill_group(&mut self.child);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

fn kill_group(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        // SAFETY: signalling a process group this lab created (the child
        // called setpgid(0, 0), so its pid is the group id).
        unsafe {
            libc::kill(-(child.id() as i32), libc::SIGKILL);
        }
        let _ = child.kill();
    }
    let _ = child.wait();
}

/// A TCP listener bound to `addr` inside network namespace `netns`: a
/// short-lived thread enters the namespace and binds; the socket stays in
/// that namespace whichever thread accepts on it.
///
/// # Errors
///
/// The namespace's file cannot be opened, entering it (`setns`) fails, or the
/// bind fails.
pub fn listen_in(netns: &str, addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let f = File::open(netns_path(netns))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on this thread only (CLONE_NEWNET is per thread);
            // the thread ends right after binding.
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            std::net::TcpListener::bind(addr)
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("listen thread panicked")))
    })
}

/// A TCP connection to `addr` opened from inside network namespace
/// `netns`: a short-lived thread enters the namespace and connects; the
/// socket stays in that namespace.
///
/// # Errors
///
/// The namespace's file cannot be opened, entering it (`setns`) fails, or the
/// connection fails or takes longer than `timeout`.
pub fn connect_in(netns: &str, addr: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let f = File::open(netns_path(netns))?;
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: setns on this thread only (CLONE_NEWNET is per thread);
            // the thread ends right after connecting.
            if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return Err(std::io::Error::last_os_error());
            }
            TcpStream::connect_timeout(&addr, timeout)
        })
        .join()
        .unwrap_or_else(|_| Err(std::io::Error::other("connect thread panicked")))
    })
}

/// `GET path` over HTTP/1.0 to `addr` (inside `netns` when given): the
/// status code and body.
///
/// # Errors
///
/// Connecting, writing or reading fails or takes longer than `timeout`, or the
/// answer has no HTTP status line.
pub fn http_get(
    netns: Option<&str>,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> std::io::Result<(u16, String)> {
    use std::io::{Read, Write};
    let mut s = match netns {
        Some(ns) => connect_in(ns, addr, timeout)?,
        None => TcpStream::connect_timeout(&addr, timeout)?,
    };
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("not an HTTP response: {head:?}")))?;
    Ok((code, body.to_string()))
}
