//! The lab's network: a bridge `pml-<id>-br` without an address in the
//! host's namespace, one network namespace `pml-<id>-<pod>` per pod (and
//! `pml-<id>-ctl` for the controller) with a veth `eth0` on the bridge and
//! an address in a random free 10.200–250.x.0/24; a lock file per lab under
//! /run/pimesh-lab that says the lab is alive; teardown by name, also of
//! labs whose process was killed.

use crate::process::{self, command, run};
use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// The prefix of every name a lab creates.
pub const PREFIX: &str = "pml-";
/// Where labs keep their lock files (`<id>.lock`, holding the /24).
pub const STATE_DIR: &str = "/run/pimesh-lab";
/// Time given to one `ip` command.
const IP_TIMEOUT: Duration = Duration::from_secs(20);

/// Setting up or tearing down the network failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An `ip` command failed.
    #[error(transparent)]
    Command(#[from] process::Error),
    /// The state directory or a lock file cannot be written.
    #[error("{0}")]
    State(String, #[source] std::io::Error),
    /// Another live lab holds this id.
    #[error("lab id {0} is in use by a running lab")]
    InUse(String),
    /// No free /24 in 10.200.0.0–10.250.255.0 after many tries.
    #[error("no free /24 in 10.200-250.x.0 (all in use on this host?)")]
    NoSubnet,
}

/// The names of one lab's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// 1–5 characters of `[a-z0-9]`.
    pub id: String,
}

impl Names {
    /// `pml-<id>-`: every object of this lab starts with it.
    pub fn prefix(&self) -> String {
        format!("{PREFIX}{}-", self.id)
    }
    /// The namespace of pod `pod` (or `ctl`).
    pub fn netns(&self, pod: &str) -> String {
        format!("{}{pod}", self.prefix())
    }
    /// The bridge (at most 12 characters: interface names have 15).
    pub fn bridge(&self) -> String {
        format!("{}br", self.prefix())
    }
    /// The host side of node `idx`'s veth.
    pub fn veth(&self, idx: usize) -> String {
        format!("{}v{idx}", self.prefix())
    }
    /// The lock file.
    pub fn lock(&self) -> PathBuf {
        Path::new(STATE_DIR).join(format!("{}.lock", self.id))
    }
}

/// Whether `id` is a usable lab id: 1–5 characters of `[a-z0-9]`.
pub fn valid_id(id: &str) -> bool {
    (1..=5).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
}

/// Random bytes from the kernel (falls back to time and pid).
pub fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), 0) };
    if n == 4 {
        return u32::from_ne_bytes(b);
    }
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    t ^ std::process::id().rotate_left(16)
}

/// A random 5-character id.
pub fn random_id() -> String {
    let mut x = random_u32();
    (0..5)
        .map(|_| {
            let c = b"abcdefghijklmnopqrstuvwxyz0123456789"[(x % 36) as usize];
            x /= 36;
            c as char
        })
        .collect()
}

/// A lab's 10.a.b.0/24.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet(pub u8, pub u8);

impl Subnet {
    /// The address of host `n` (1–254).
    pub fn host(self, n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, self.0, self.1, n)
    }
}

impl std::fmt::Display for Subnet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "10.{}.{}.0/24", self.0, self.1)
    }
}

/// Whether 10.a.b.0/24 overlaps `net/len` (an address or route of the host).
fn overlaps(s: Subnet, net: Ipv4Addr, len: u8) -> bool {
    let mine = u32::from(s.host(0));
    let other = u32::from(net);
    let len = u32::from(len.min(32));
    let common = len.min(24);
    let mask = if common == 0 {
        0
    } else {
        u32::MAX << (32 - common)
    };
    (mine & mask) == (other & mask)
}

/// Every IPv4 `net/len` the host's namespace has as address or route
/// (default routes excluded: they overlap everything by design).
fn host_networks() -> Vec<(Ipv4Addr, u8)> {
    let mut nets = Vec::new();
    for args in [
        &["-4", "-o", "addr", "show"][..],
        &["-4", "route", "show", "table", "all"][..],
    ] {
        let Ok(out) = command(None, None, "ip").and_then(|mut c| run(c.args(args), IP_TIMEOUT))
        else {
            continue;
        };
        for word in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            let (addr, len) = word.split_once('/').unwrap_or((word, "32"));
            if let (Ok(a), Ok(l)) = (addr.parse::<Ipv4Addr>(), len.parse::<u8>()) {
                nets.push((a, l));
            }
        }
    }
    nets
}

/// A random 10.200–250.x.0/24 that no host address or route and no other
/// lab (by its lock file) uses.
///
/// # Errors
///
/// [`Error::NoSubnet`] when every candidate /24 is taken.
pub fn choose_subnet() -> Result<Subnet, Error> {
    let host = host_networks();
    let others: Vec<String> = std::fs::read_dir(STATE_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .collect();
    for _ in 0..200 {
        let r = random_u32();
        let s = Subnet(200 + (r % 51) as u8, (r >> 8) as u8);
        let taken = host.iter().any(|&(n, l)| overlaps(s, n, l))
            || others.iter().any(|o| o.trim() == s.to_string());
        if !taken {
            return Ok(s);
        }
    }
    Err(Error::NoSubnet)
}

/// The lock that says a lab is alive: an exclusive `flock` on
/// `/run/pimesh-lab/<id>.lock`, released by the kernel when the lab's
/// process dies however it dies. The file holds the lab's /24.
#[derive(Debug)]
pub struct Lock {
    file: File,
    path: PathBuf,
}

impl Lock {
    /// Takes the lock of `names.id`; `Err(InUse)` when a live lab has it.
    ///
    /// # Errors
    ///
    /// [`Error::State`] when the state directory or the lock file cannot be
    /// written; [`Error::InUse`] when a live lab holds the id.
    pub fn take(names: &Names, subnet: Subnet) -> Result<Lock, Error> {
        let state = |e| Error::State(format!("cannot write {STATE_DIR}"), e);
        std::fs::create_dir_all(STATE_DIR).map_err(state)?;
        let path = names.lock();
        let mut file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| Error::State(format!("cannot open {}", path.display()), e))?;
        // SAFETY: flock on a file descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            return Err(Error::InUse(names.id.clone()));
        }
        file.set_len(0)
            .and_then(|_| writeln!(file, "{subnet}"))
            .map_err(|e| Error::State(format!("cannot write {}", path.display()), e))?;
        Ok(Lock { file, path })
    }

    /// Releases the lock and removes the file.
    pub fn release(self) {
        let _ = std::fs::remove_file(&self.path);
        drop(self.file);
    }
}

/// Whether a live lab holds `id`'s lock.
fn alive(names: &Names) -> bool {
    let Ok(f) = File::open(names.lock()) else {
        return false;
    };
    // SAFETY: flock on a descriptor owned here; released at once if taken.
    let free = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    !free
}

fn ip(args: &[&str]) -> Result<(), Error> {
    let mut c = command(None, None, "ip")?;
    run(c.args(args), IP_TIMEOUT)?;
    Ok(())
}

/// Creates the bridge (up, no address, no IPv6 link-local address).
///
/// # Errors
///
/// [`Error::Command`] when an `ip` command fails.
pub fn add_bridge(names: &Names) -> Result<(), Error> {
    let br = names.bridge();
    ip(&["link", "add", &br, "type", "bridge"])?;
    ip(&["link", "set", "dev", &br, "addrgenmode", "none"])?;
    ip(&["link", "set", &br, "up"])
}

/// Creates namespace `ns` with `eth0` (`addr`/24) on the bridge through
/// veth `veth`, and loopback up.
///
/// # Errors
///
/// [`Error::Command`] when an `ip` command fails (the namespace or veth exists
/// already, no root).
pub fn add_node(names: &Names, ns: &str, veth: &str, addr: Ipv4Addr) -> Result<(), Error> {
    ip(&["netns", "add", ns])?;
    ip(&[
        "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns,
    ])?;
    ip(&["link", "set", "dev", veth, "addrgenmode", "none"])?;
    ip(&["link", "set", veth, "master", &names.bridge(), "up"])?;
    ip(&["-n", ns, "link", "set", "lo", "up"])?;
    ip(&[
        "-n",
        ns,
        "addr",
        "add",
        &format!("{addr}/24"),
        "dev",
        "eth0",
    ])?;
    ip(&["-n", ns, "link", "set", "eth0", "up"])
}

/// The host's network namespaces (`ip netns list`), names only.
pub fn netns_list() -> Vec<String> {
    let out =
        command(None, None, "ip").and_then(|mut c| run(c.args(["netns", "list"]), IP_TIMEOUT));
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    })
    .unwrap_or_default()
}

/// The host namespace's link names (`ip -o link`), without `@peer`.
pub fn link_list() -> Vec<String> {
    let out =
        command(None, None, "ip").and_then(|mut c| run(c.args(["-o", "link", "show"]), IP_TIMEOUT));
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter_map(|l| {
                let name = l.split(": ").nth(1)?;
                Some(name.split('@').next()?.to_string())
            })
            .collect()
    })
    .unwrap_or_default()
}

/// Pids of the processes in namespace `ns` (`ip netns pids`).
pub fn netns_pids(ns: &str) -> Vec<i32> {
    let out =
        command(None, None, "ip").and_then(|mut c| run(c.args(["netns", "pids", ns]), IP_TIMEOUT));
    out.map(|o| {
        String::from_utf8_lossy(&o.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    })
    .unwrap_or_default()
}

/// Removes everything of lab `id`: kills the processes left in its
/// namespaces, deletes its links (veths, bridge) and namespaces (with the
/// iptables rules inside them) and its lock file. Returns what it could
/// not remove (empty when all is gone).
pub fn teardown(id: &str) -> Vec<String> {
    let names = Names { id: id.to_string() };
    let prefix = names.prefix();
    let namespaces: Vec<String> = netns_list()
        .into_iter()
        .filter(|n| n.starts_with(&prefix))
        .collect();
    for ns in &namespaces {
        let end = Instant::now() + Duration::from_secs(5);
        loop {
            let pids = netns_pids(ns);
            if pids.is_empty() || Instant::now() > end {
                break;
            }
            for pid in pids {
                // SAFETY: killing processes inside this lab's namespace.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    let mut left = Vec::new();
    // Links first (a veth deleted here takes its peer along at once; the
    // kernel destroys a deleted namespace's devices asynchronously).
    let mut links: Vec<String> = link_list()
        .into_iter()
        .filter(|l| l.starts_with(&prefix))
        .collect();
    links.sort_by_key(|l| l.ends_with("-br"));
    for l in links {
        if let Err(e) = ip(&["link", "del", &l]) {
            left.push(format!("link {l}: {e}"));
        }
    }
    for ns in namespaces {
        if let Err(e) = ip(&["netns", "del", &ns]) {
            left.push(format!("netns {ns}: {e}"));
        }
    }
    let _ = std::fs::remove_file(names.lock());
    left
}

/// Ids of labs that left objects behind and whose process is gone (its
/// lock is free or missing).
pub fn stale_ids() -> Vec<String> {
    let mut ids: Vec<String> = netns_list()
        .into_iter()
        .chain(link_list())
        .filter_map(|n| {
            let id = n.strip_prefix(PREFIX)?.split('-').next()?.to_string();
            valid_id(&id).then_some(id)
        })
        .chain(
            std::fs::read_dir(STATE_DIR)
                .into_iter()
                .flatten()
                .flatten()
                .filter_map(|e| {
                    let name = e.file_name().into_string().ok()?;
                    name.strip_suffix(".lock").map(str::to_string)
                }),
        )
        .collect();
    ids.sort();
    ids.dedup();
    ids.retain(|id| !alive(&Names { id: id.clone() }));
    ids
}

/// Removes every stale lab; returns their ids.
pub fn remove_stale() -> Vec<String> {
    let ids = stale_ids();
    for id in &ids {
        for problem in teardown(id) {
            eprintln!("pimesh-lab: stale lab {id}: cannot remove {problem}");
        }
        let _ = std::fs::remove_dir_all(std::env::temp_dir().join(format!("{PREFIX}{id}")));
    }
    ids
}

/// Runs `ip` (for tests and tools): `Command` prepared to enter nothing.
///
/// # Errors
///
/// [`Error::Command`] as [`process::command`] (never with no namespace and no
/// uid, kept for its type).
pub fn ip_command() -> Result<Command, Error> {
    Ok(command(None, None, "ip")?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_fit_interface_limits() {
        let n = Names { id: "ab12z".into() };
        assert_eq!(n.bridge(), "pml-ab12z-br");
        assert!(n.veth(99).len() <= 15);
        assert_eq!(n.netns("web"), "pml-ab12z-web");
        assert!(valid_id(&random_id()));
        assert!(!valid_id("abcdef") && !valid_id("") && !valid_id("A"));
    }

    #[test]
    fn subnet_overlap() {
        let s = Subnet(210, 7);
        assert!(overlaps(s, Ipv4Addr::new(10, 210, 7, 5), 32));
        assert!(overlaps(s, Ipv4Addr::new(10, 0, 0, 0), 8));
        assert!(!overlaps(s, Ipv4Addr::new(10, 210, 8, 0), 24));
        assert!(!overlaps(s, Ipv4Addr::new(192, 168, 1, 0), 24));
        assert_eq!(s.to_string(), "10.210.7.0/24");
    }
}
