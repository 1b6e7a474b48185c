//! The demo application (`examples/emojivoto/`, in the spirit of Linkerd's
//! emojivoto): `web` (HTTP/1.1) calls the `emoji` and `voting` gRPC
//! services, `vote-bot` drives traffic to `web`. Four pods, each app on
//! `$PORT` (8080 in the lab), each proxy with its own identity in the
//! `emojivoto` namespace.

use crate::spec::PodSpec;
use std::path::{Path, PathBuf};

/// The demo's identities' namespace.
pub const NAMESPACE: &str = "emojivoto";

/// `examples/emojivoto` of the source tree this binary was built from.
pub fn default_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/emojivoto")
}

/// The demo's pods, apps from `dir`, the bot voting `rate` times a second.
pub fn pods(dir: &Path, rate: f64) -> Vec<PodSpec> {
    let py = |script: &str, extra: &str| {
        let path = dir.join(script);
        format!(
            "exec python3 -u '{}' --port \"${{PORT:-8080}}\"{extra}",
            path.display()
        )
    };
    let pod = |name: &str, ports: &[u16], cmd: String| {
        let mut p = PodSpec::new(name, ports)
            .identity(&format!("{NAMESPACE}/{name}"))
            .command(&cmd);
        p.cwd = Some(dir.to_path_buf());
        p.env.push(("PORT".into(), "8080".into()));
        p
    };
    vec![
        pod("emoji", &[8080], py("emoji.py", "")),
        pod("voting", &[8080], py("voting.py", "")),
        pod("web", &[8080], py("web.py", "")),
        pod(
            "vote-bot",
            &[],
            py("vote_bot.py", &format!(" --rate {rate}")),
        ),
    ]
}

/// The image the demo's Kubernetes manifests name (`k8s/emojivoto.yaml`);
/// the node agent runs it from the scripts' directory.
pub fn kube_image() -> String {
    format!(
        "ghcr.io/pimesh/emojivoto-demo:{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// Whether `dir` holds the demo's scripts.
pub fn present(dir: &Path) -> bool {
    [
        "emoji.py",
        "voting.py",
        "web.py",
        "vote_bot.py",
        "emojivoto.py",
    ]
    .iter()
    .all(|f| dir.join(f).is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_pods_and_scripts() {
        let dir = default_dir();
        assert!(present(&dir), "{}", dir.display());
        let pods = pods(&dir, 5.0);
        let names: Vec<_> = pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["emoji", "voting", "web", "vote-bot"]);
        assert_eq!(pods[2].identity, "emojivoto/web");
        assert_eq!(pods[2].service.as_deref(), Some("web:8080"));
        assert!(pods[3].service.is_none());
        assert!(pods[3].command.as_ref().unwrap().contains("--rate 5"));
    }
}
