//! What a lab runs with: the binaries, the options, the environment apps
//! must not inherit, and small helpers shared with the loopback lab.

use super::error::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The lab's controller scrapes every proxy this often (2 s).
pub const DEFAULT_SCRAPE_INTERVAL: Duration = Duration::from_secs(2);
/// The proxy's uid in a pod (nobody), distinct from the app's.
pub const DEFAULT_PROXY_UID: u32 = 65534;
/// Environment variables an app must not inherit: apps carry no proxy
/// settings in the lab (redirection does the work).
pub const PROXY_ENV: [&str; 8] = [
    "http_proxy",
    "HTTP_PROXY",
    "https_proxy",
    "HTTPS_PROXY",
    "grpc_proxy",
    "all_proxy",
    "ALL_PROXY",
    "no_proxy",
];

/// The binaries the lab runs.
#[derive(Debug, Clone)]
pub struct Bins {
    /// `pimesh-proxy`.
    pub proxy: PathBuf,
    /// `pimesh` (controller and CLI).
    pub pimesh: PathBuf,
}

impl Bins {
    /// Both binaries in `dir`, or (without `dir`) next to the running
    /// executable, in its parent directory (a test's `deps/`) or on PATH.
    ///
    /// # Errors
    ///
    /// [`Error::Binary`] naming the first of `pimesh-proxy` and `pimesh` not
    /// found.
    pub fn locate(dir: Option<&Path>) -> Result<Bins, Error> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        match dir {
            Some(d) => dirs.push(d.to_path_buf()),
            None => {
                if let Ok(exe) = std::env::current_exe() {
                    dirs.extend(exe.parent().map(Path::to_path_buf));
                    dirs.extend(exe.parent().and_then(Path::parent).map(Path::to_path_buf));
                }
                dirs.extend(std::env::split_paths(
                    &std::env::var_os("PATH").unwrap_or_default(),
                ));
            }
        }
        let find = |name: &str| {
            dirs.iter()
                .map(|d| d.join(name))
                .find(|p| p.is_file())
                .ok_or_else(|| Error::Binary(name.to_string()))
        };
        Ok(Bins {
            proxy: find("pimesh-proxy")?,
            pimesh: find("pimesh")?,
        })
    }
}

/// How the lab runs.
#[derive(Debug, Clone)]
pub struct Options {
    /// The lab id (`pml-<id>-…`); random when `None`.
    pub id: Option<String>,
    /// The proxies' uid (excluded from redirection).
    pub proxy_uid: u32,
    /// The apps' uid; `None`: root.
    pub app_uid: Option<u32>,
    /// `pimesh-proxy init --iptables-mode`: `auto`, `legacy` or `nft`.
    pub iptables_mode: String,
    /// The proxies' `PIMESH_PROXY_LOG`.
    pub proxy_log: String,
    /// Keep the work directory (logs) after teardown.
    pub keep_dir: bool,
    /// Print each step on stdout (`pimesh-lab: …`).
    pub progress: bool,
    /// The controller's `--scrape-interval`: how soon `pimesh stat` and
    /// `pimesh edges` see traffic (a lab wants seconds, not the default 10 s).
    pub scrape_interval: Duration,
    /// Kubernetes mode: the controller discovers from a real API server and
    /// certifies ServiceAccount tokens; `None`: standalone (join tokens,
    /// registrations, static mesh destinations).
    pub kube: Option<KubeMode>,
}

/// What a lab in Kubernetes mode runs with (the API server itself is a
/// [`crate::kube::Cluster`] on the host's loopback).
#[derive(Debug, Clone)]
pub struct KubeMode {
    /// The controller's kubeconfig: its ServiceAccount's token, server
    /// `https://127.0.0.1:<api_port>`.
    pub kubeconfig: PathBuf,
    /// The API server's port on the host's 127.0.0.1; the lab forwards the
    /// same port of the controller namespace's 127.0.0.1 to it.
    pub api_port: u16,
    /// Each pod's projected ServiceAccount token (audience
    /// `identity.pimesh.io`), by pod name: its proxy's `PIMESH_PROXY_TOKEN_FILE`.
    pub tokens: std::collections::BTreeMap<String, String>,
    /// The Service ClusterIP range, routed to `eth0` in every pod so that
    /// connections to ClusterIPs reach the outbound redirect, as in a pod
    /// with a default route.
    pub service_cidr: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            id: None,
            proxy_uid: DEFAULT_PROXY_UID,
            app_uid: None,
            iptables_mode: "auto".into(),
            proxy_log: "warn,pimesh=info".into(),
            keep_dir: false,
            progress: false,
            scrape_interval: DEFAULT_SCRAPE_INTERVAL,
            kube: None,
        }
    }
}

/// `<NAME>_SERVICE_HOST` / `_PORT` pairs for `(name, addr)`.
pub fn service_env<'a>(pods: impl Iterator<Item = (&'a str, SocketAddr)>) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for (name, addr) in pods {
        let key = name.to_ascii_uppercase().replace('-', "_");
        env.push((format!("{key}_SERVICE_HOST"), addr.ip().to_string()));
        env.push((format!("{key}_SERVICE_PORT"), addr.port().to_string()));
    }
    env
}

pub(crate) fn mkdir(dir: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir)
        .and_then(|_| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)))
        .map_err(|e| Error::Write(dir.to_path_buf(), e))
}

/// Writes `text` to `path` with `mode`, owned by `owner` (uid = gid) when given.
pub(crate) fn write_file(
    path: &Path,
    text: &str,
    mode: u32,
    owner: Option<u32>,
) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    let err = |e| Error::Write(path.to_path_buf(), e);
    std::fs::write(path, text).map_err(err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
    if let Some(uid) = owner {
        std::os::unix::fs::chown(path, Some(uid), Some(uid)).map_err(err)?;
    }
    Ok(())
}

/// The controller's `--scrape-interval` value for `d` (at least 1 s, the
/// controller's minimum).
pub(crate) fn scrape_interval_arg(d: Duration) -> String {
    format!("{}ms", d.as_millis().max(1000))
}

/// The services of `wanted` (`(namespace, name)`) that the `pimesh service
/// ls` table `table` does not list with at least one endpoint (columns
/// NAMESPACE NAME PORTS ENDPOINTS …).
pub(crate) fn unregistered<'a>(table: &str, wanted: &'a [(String, String)]) -> Vec<&'a str> {
    wanted
        .iter()
        .filter(|(ns, name)| {
            !table.lines().any(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                w.len() >= 4
                    && w[0] == ns
                    && w[1] == name
                    && w[3].parse::<u32>().is_ok_and(|n| n > 0)
            })
        })
        .map(|(_, name)| name.as_str())
        .collect()
}

/// Waits until the registry lists every service of `wanted` with an
/// endpoint (`ls` runs `pimesh service ls`), up to `timeout`: the
/// controller scrapes what is registered, so `pimesh stat` counts a pod's
/// traffic only once its proxy registered. Errors: a service still missing
/// (`NotReady` with the last table), an interruption.
pub(crate) fn wait_registered(
    ls: impl Fn() -> Result<String, Error>,
    wanted: &[(String, String)],
    timeout: Duration,
) -> Result<(), Error> {
    let end = std::time::Instant::now() + timeout;
    loop {
        let table = ls()?;
        let missing = unregistered(&table, wanted);
        if missing.is_empty() {
            return Ok(());
        }
        if std::time::Instant::now() > end {
            return Err(Error::NotReady {
                what: format!("services not registered after {timeout:?}: {missing:?}"),
                log: table,
            });
        }
        crate::interrupt::sleep(Duration::from_millis(200))?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unregistered_services() {
        let table = "NAMESPACE  NAME    PORTS  ENDPOINTS  REVISION\n\
                     emojivoto  emoji   8080   1          1\n\
                     emojivoto  voting  8080   0          2\n";
        let wanted = [
            ("emojivoto".to_string(), "emoji".to_string()),
            ("emojivoto".to_string(), "voting".to_string()),
            ("emojivoto".to_string(), "web".to_string()),
            ("other".to_string(), "emoji".to_string()),
        ];
        assert_eq!(unregistered(table, &wanted), ["voting", "web", "emoji"]);
        assert_eq!(scrape_interval_arg(Duration::from_millis(10)), "1000ms");
        assert_eq!(scrape_interval_arg(Duration::from_secs(2)), "2000ms");
    }
}
