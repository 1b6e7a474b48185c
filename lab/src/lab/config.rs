//! What a lab runs with: the binaries, the options, the environment apps
//! must not inherit, and small helpers shared with the loopback lab.

use super::Error;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

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
