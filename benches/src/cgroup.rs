//! Pi-like resource limits for the proxies: one cgroup per process with a
//! memory limit (no swap) and a CPU quota, on cgroup v1 (`memory` and `cpu`
//! hierarchies, nested under the harness's own groups) or v2 (unified, under
//! the root); OOM kills and CPU throttling read back; groups removed on drop.

use std::fs::{File, OpenOptions};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// Setting up a cgroup failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Neither a v2 unified hierarchy with controllers nor v1 `memory` and
    /// `cpu` hierarchies under /sys/fs/cgroup.
    #[error("no usable cgroup hierarchy under /sys/fs/cgroup (use --no-cgroup)")]
    NoHierarchy,
    /// A cgroup file could not be created or written (not root?).
    #[error("cannot write {0} (not root? use --no-cgroup)")]
    Write(PathBuf, #[source] std::io::Error),
}

/// Where groups are made.
#[derive(Clone, Debug)]
pub enum Hierarchy {
    /// cgroup v1: the parents in the `memory` and `cpu` hierarchies.
    V1 { memory: PathBuf, cpu: PathBuf },
    /// cgroup v2: the parent in the unified hierarchy.
    V2 { parent: PathBuf },
}

/// Memory and CPU limits of one group.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Bytes of memory (anonymous + page cache); swap is not allowed.
    pub memory: u64,
    /// CPUs: quota / period, enforced per 100 ms period.
    pub cpus: f64,
}

/// CFS bandwidth period, microseconds (the kernel's default).
const PERIOD_US: u64 = 100_000;

impl Hierarchy {
    /// Detects v2 (a unified hierarchy at /sys/fs/cgroup) or v1 (separate
    /// `memory` and `cpu` mounts; a v2 tree mounted beside them, "hybrid",
    /// has no controllers and is ignored).
    ///
    /// # Errors
    ///
    /// [`Error::NoHierarchy`] when neither a v2 tree with the `memory` and
    /// `cpu` controllers nor v1 `memory` and `cpu` mounts are there.
    pub fn detect() -> Result<Hierarchy, Error> {
        let root = Path::new("/sys/fs/cgroup");
        if root.join("cgroup.controllers").exists() {
            return Ok(Hierarchy::V2 {
                parent: root.to_path_buf(),
            });
        }
        let own = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
        let v1 = |controller: &str| {
            let mount = root.join(controller);
            mount
                .join("cgroup.procs")
                .exists()
                .then(|| mount.join(own_v1_path(&own, controller).trim_start_matches('/')))
        };
        match (v1("memory"), v1("cpu")) {
            (Some(memory), Some(cpu)) => Ok(Hierarchy::V1 { memory, cpu }),
            _ => Err(Error::NoHierarchy),
        }
    }

    /// "v1" or "v2", for the report.
    pub fn name(&self) -> &'static str {
        match self {
            Hierarchy::V1 { .. } => "v1",
            Hierarchy::V2 { .. } => "v2",
        }
    }

    /// Removes the groups an interrupted earlier run left behind (named
    /// `pimesh-bench-PID-...` with that PID gone; rmdir only succeeds on
    /// an empty group). Returns how many were removed.
    pub fn remove_stale(&self) -> usize {
        let parents = match self {
            Hierarchy::V1 { memory, cpu } => vec![memory.clone(), cpu.clone()],
            Hierarchy::V2 { parent } => vec![parent.clone()],
        };
        let mut removed = 0;
        for parent in parents {
            let Ok(dir) = std::fs::read_dir(&parent) else {
                continue;
            };
            for e in dir.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                let Some(pid) = stale_pid(&name) else {
                    continue;
                };
                if !Path::new(&format!("/proc/{pid}")).exists()
                    && std::fs::remove_dir(e.path()).is_ok()
                {
                    removed += 1;
                }
            }
        }
        removed
    }

    /// Creates a group named after `role` with `limits`.
    ///
    /// # Errors
    ///
    /// [`Error::Write`] naming the directory or control file that cannot be
    /// made or written (no permission, controller not delegated).
    pub fn create(&self, role: &str, limits: Limits) -> Result<Cgroup, Error> {
        static N: AtomicUsize = AtomicUsize::new(0);
        let name = format!(
            "pimesh-bench-{}-{}-{role}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let quota = ((limits.cpus * PERIOD_US as f64).round() as u64).max(1000);
        let mut cg = Cgroup {
            dirs: Vec::new(),
            v2: matches!(self, Hierarchy::V2 { .. }),
        };
        match self {
            Hierarchy::V1 { memory, cpu } => {
                let mem = mkdir(&memory.join(&name), &mut cg)?;
                write(&mem.join("memory.limit_in_bytes"), limits.memory)?;
                // With swap on, the limit alone would page out instead of OOM.
                let memsw = mem.join("memory.memsw.limit_in_bytes");
                if memsw.exists() {
                    write(&memsw, limits.memory)?;
                }
                let cpu = mkdir(&cpu.join(&name), &mut cg)?;
                write(&cpu.join("cpu.cfs_period_us"), PERIOD_US)?;
                write(&cpu.join("cpu.cfs_quota_us"), quota)?;
            }
            Hierarchy::V2 { parent } => {
                let control = parent.join("cgroup.subtree_control");
                let enabled = std::fs::read_to_string(&control).unwrap_or_default();
                for c in ["memory", "cpu"] {
                    if !enabled.split_whitespace().any(|e| e == c) {
                        std::fs::write(&control, format!("+{c}"))
                            .map_err(|e| Error::Write(control.clone(), e))?;
                    }
                }
                let dir = mkdir(&parent.join(&name), &mut cg)?;
                write(&dir.join("memory.max"), limits.memory)?;
                let swap = dir.join("memory.swap.max");
                if swap.exists() {
                    write(&swap, 0)?;
                }
                std::fs::write(dir.join("cpu.max"), format!("{quota} {PERIOD_US}"))
                    .map_err(|e| Error::Write(dir.join("cpu.max"), e))?;
            }
        }
        Ok(cg)
    }
}

/// The path of this process's group in v1 hierarchy `controller`, from
/// /proc/self/cgroup lines `ID:CONTROLLERS:PATH` (`4:memory:/a`,
/// `3:cpu,cpuacct:/`); "/" when absent.
fn own_v1_path<'a>(proc_self_cgroup: &'a str, controller: &str) -> &'a str {
    proc_self_cgroup
        .lines()
        .filter_map(|l| {
            let mut f = l.splitn(3, ':');
            let (_, list, path) = (f.next()?, f.next()?, f.next()?);
            list.split(',').any(|c| c == controller).then_some(path)
        })
        .next()
        .unwrap_or("/")
}

/// The PID in a group name `pimesh-bench-PID-N-ROLE`.
fn stale_pid(name: &str) -> Option<u32> {
    name.strip_prefix("pimesh-bench-")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

fn mkdir(dir: &Path, cg: &mut Cgroup) -> Result<PathBuf, Error> {
    std::fs::create_dir(dir).map_err(|e| Error::Write(dir.to_path_buf(), e))?;
    cg.dirs.push(dir.to_path_buf());
    Ok(dir.to_path_buf())
}

fn write(file: &Path, value: u64) -> Result<(), Error> {
    std::fs::write(file, value.to_string()).map_err(|e| Error::Write(file.to_path_buf(), e))
}

/// CPU throttling counters (cpu.stat).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Throttling {
    /// Enforcement periods (100 ms) with runnable tasks.
    pub periods: u64,
    /// Periods in which the group hit its quota.
    pub throttled: u64,
    /// Time spent throttled, microseconds.
    pub throttled_us: u64,
}

impl Throttling {
    /// `self - earlier`, for one step.
    pub fn since(self, earlier: Throttling) -> Throttling {
        Throttling {
            periods: self.periods.saturating_sub(earlier.periods),
            throttled: self.throttled.saturating_sub(earlier.throttled),
            throttled_us: self.throttled_us.saturating_sub(earlier.throttled_us),
        }
    }

    /// Sum of two groups' counters.
    pub fn plus(self, o: Throttling) -> Throttling {
        Throttling {
            periods: self.periods + o.periods,
            throttled: self.throttled + o.throttled,
            throttled_us: self.throttled_us + o.throttled_us,
        }
    }
}

/// One process's group (one directory per v1 hierarchy, or one in v2).
#[derive(Debug)]
pub struct Cgroup {
    /// v1: [memory, cpu]; v2: [the group].
    dirs: Vec<PathBuf>,
    v2: bool,
}

impl Cgroup {
    fn memory_dir(&self) -> &Path {
        &self.dirs[0]
    }

    fn cpu_dir(&self) -> &Path {
        self.dirs.last().expect("a group has a directory")
    }

    /// `cgroup.procs` of every directory, opened for writing (the child
    /// writes "0" into each between fork and exec).
    ///
    /// # Errors
    ///
    /// A `cgroup.procs` file cannot be opened for writing.
    pub fn open_procs(&self) -> std::io::Result<Vec<File>> {
        self.dirs
            .iter()
            .map(|d| OpenOptions::new().write(true).open(d.join("cgroup.procs")))
            .collect()
    }

    /// OOM kills in the group so far (v1 `memory.oom_control` `oom_kill`,
    /// kernels ≥ 4.13; v2 `memory.events` `oom_kill`).
    pub fn oom_kills(&self) -> u64 {
        let file = if self.v2 {
            "memory.events"
        } else {
            "memory.oom_control"
        };
        let text = std::fs::read_to_string(self.memory_dir().join(file)).unwrap_or_default();
        keyed(&text, "oom_kill").unwrap_or(0)
    }

    /// Peak memory use of the group, bytes (v1 `memory.max_usage_in_bytes`,
    /// v2 `memory.peak` on kernels ≥ 5.19), page cache and kernel included.
    pub fn memory_peak(&self) -> Option<u64> {
        let file = if self.v2 {
            "memory.peak"
        } else {
            "memory.max_usage_in_bytes"
        };
        std::fs::read_to_string(self.memory_dir().join(file))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// CPU throttling so far (cpu.stat: v1 `throttled_time` in ns, v2
    /// `throttled_usec`).
    pub fn throttling(&self) -> Throttling {
        let text = std::fs::read_to_string(self.cpu_dir().join("cpu.stat")).unwrap_or_default();
        parse_cpu_stat(&text)
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        for dir in self.dirs.iter().rev() {
            // The processes were killed just before; rmdir fails (EBUSY)
            // until the kernel has reaped them.
            for _ in 0..100 {
                if std::fs::remove_dir(dir).is_ok() || !dir.exists() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

/// The value of `key` in a `key value` per line file.
fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|l| {
        let (k, v) = l.split_once(' ')?;
        (k == key).then(|| v.trim().parse().ok())?
    })
}

/// Throttling from cpu.stat of either version.
pub fn parse_cpu_stat(text: &str) -> Throttling {
    let throttled_us = keyed(text, "throttled_usec")
        .or_else(|| keyed(text, "throttled_time").map(|ns| ns / 1000))
        .unwrap_or(0);
    Throttling {
        periods: keyed(text, "nr_periods").unwrap_or(0),
        throttled: keyed(text, "nr_throttled").unwrap_or(0),
        throttled_us,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_stat_v1_and_v2() {
        let v1 = "nr_periods 120\nnr_throttled 30\nthrottled_time 4500000\n";
        assert_eq!(
            parse_cpu_stat(v1),
            Throttling {
                periods: 120,
                throttled: 30,
                throttled_us: 4500
            }
        );
        let v2 = "usage_usec 100\nuser_usec 60\nsystem_usec 40\nnr_periods 7\nnr_throttled 2\nthrottled_usec 900\n";
        assert_eq!(
            parse_cpu_stat(v2),
            Throttling {
                periods: 7,
                throttled: 2,
                throttled_us: 900
            }
        );
        let d = parse_cpu_stat(v1).since(parse_cpu_stat(v2));
        assert_eq!(d.periods, 113);
    }

    #[test]
    fn oom_counters() {
        let v1 = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed(v1, "oom_kill"), Some(3));
        let v2 = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed(v2, "oom_kill"), Some(1));
        assert_eq!(keyed("", "oom_kill"), None);
    }

    #[test]
    fn stale_group_names() {
        assert_eq!(stale_pid("pimesh-bench-4242-3-inbound"), Some(4242));
        assert_eq!(stale_pid("pimesh-bench-x-3-inbound"), None);
        assert_eq!(stale_pid("system.slice"), None);
    }

    #[test]
    fn own_paths_in_v1() {
        let s =
            "9:name=systemd:/\n4:memory:/process_api/abc\n2:cpuacct:/\n1:cpu,cpuacct:/x\n0::/\n";
        assert_eq!(own_v1_path(s, "memory"), "/process_api/abc");
        assert_eq!(own_v1_path(s, "cpu"), "/x");
        assert_eq!(own_v1_path(s, "pids"), "/");
    }

    /// With root and a cgroup filesystem: a child started in a 16 MiB group
    /// that allocates 64 MiB is OOM-killed and counted.
    #[test]
    fn limits_are_enforced_when_available() {
        let Ok(h) = Hierarchy::detect() else { return };
        let limits = Limits {
            memory: 16 << 20,
            cpus: 0.5,
        };
        let Ok(cg) = h.create("test", limits) else {
            return; // not root
        };
        let launch = crate::process::Launch::new("python3")
            .arg("-c")
            .arg("x = bytearray(64 << 20); print(len(x))");
        let Ok((mut p, _)) =
            crate::process::Proc::start("python3", &launch, Some(cg), None, Duration::from_secs(5))
        else {
            return; // no python3
        };
        let ended =
            pimesh_test_support::eventually(Duration::from_secs(20), || p.exited().is_some());
        assert!(ended, "the allocation finished under a 16 MiB limit");
        assert_eq!(p.exited().unwrap(), "killed by signal 9");
        assert!(p.cgroup.as_ref().unwrap().oom_kills() >= 1);
    }
}
