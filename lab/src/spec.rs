//! What a pod runs: its app's ports and command, the mesh identity its
//! proxy asks for and the service it serves. Parsed from `--pod` flags.

use std::path::PathBuf;

/// One pod of the lab.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodSpec {
    /// The pod's name: `[a-z0-9-]`, 1–20 characters, not `ctl`; also the
    /// last part of its namespace's name (`pml-<id>-<name>`).
    pub name: String,
    /// TCP ports the app listens on (on 0.0.0.0); reached by the other
    /// pods over mTLS. Empty for a client-only pod.
    pub ports: Vec<u16>,
    /// `NAMESPACE/SERVICEACCOUNT` its proxy is certified as.
    pub identity: String,
    /// `NAME[:PORT]` the proxy registers in the standalone registry
    /// (`PIMESH_PROXY_SERVICE`); `None` for a client-only pod.
    pub service: Option<String>,
    /// The app, run with `sh -c` (so a spec can use `$WEB_SERVICE_HOST`);
    /// `None` runs no app (tests start their own).
    pub command: Option<String>,
    /// The app's working directory (default: the pod's directory in the
    /// lab's work dir).
    pub cwd: Option<PathBuf>,
    /// Extra environment for the app.
    pub env: Vec<(String, String)>,
}

/// A `--pod` value or pod name that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid pod {value:?}: {reason}")]
pub struct Error {
    /// The value as given.
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

impl PodSpec {
    /// A pod named `name` with `ports`, identity `lab/<name>` and service
    /// `<name>:<first port>`, running no app.
    pub fn new(name: &str, ports: &[u16]) -> PodSpec {
        PodSpec {
            name: name.to_string(),
            ports: ports.to_vec(),
            identity: format!("lab/{name}"),
            service: ports.first().map(|p| format!("{name}:{p}")),
            command: None,
            cwd: None,
            env: Vec::new(),
        }
    }

    /// Sets the app command (run with `sh -c`).
    pub fn command(mut self, cmd: &str) -> PodSpec {
        self.command = Some(cmd.to_string());
        self
    }

    /// Sets the identity `NS/SA`.
    pub fn identity(mut self, id: &str) -> PodSpec {
        self.identity = id.to_string();
        self
    }

    /// The namespace of its identity (`lab` for `lab/web`).
    pub fn namespace(&self) -> &str {
        self.identity.split('/').next().unwrap_or("lab")
    }

    /// `(namespace, name)` of the service it registers, if any: the
    /// registry files it under its identity's namespace.
    pub fn registered_service(&self) -> Option<(String, String)> {
        let s = self.service.as_deref()?;
        let name = s.split(':').next().unwrap_or(s);
        Some((self.namespace().to_string(), name.to_string()))
    }

    /// `NAME[:PORT,PORT…][@NS/SA][=COMMAND]`, e.g.
    /// `web:8080@shop/web=python3 -m http.server 8080`.
    ///
    /// # Errors
    ///
    /// An [`Error`] naming the spec and why: a bad pod name, a port that is not
    /// 1–65535, an identity that is not NS/SA, an empty command after `=`.
    pub fn parse(v: &str) -> Result<PodSpec, Error> {
        let err = |reason: &str| Error {
            value: v.to_string(),
            reason: reason.to_string(),
        };
        let (head, command) = match v.split_once('=') {
            Some((h, c)) if !c.trim().is_empty() => (h, Some(c.trim().to_string())),
            Some(_) => return Err(err("empty command after '='")),
            None => (v, None),
        };
        let (head, identity) = match head.split_once('@') {
            Some((h, id)) => (h, Some(id.trim())),
            None => (head, None),
        };
        let (name, ports) = head.split_once(':').unwrap_or((head, ""));
        let name = name.trim();
        check_name(name).map_err(|r| err(&r))?;
        let ports = ports
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| match p.parse::<u16>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err(err(&format!("{p:?} is not a port (1-65535)"))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut spec = PodSpec::new(name, &ports);
        if let Some(id) = identity {
            check_identity(id).map_err(|r| err(&r))?;
            spec.identity = id.to_string();
        }
        spec.command = command;
        Ok(spec)
    }
}

/// Checks a pod name: `[a-z0-9-]`, 1–20 characters, not `ctl` (the
/// controller's namespace).
///
/// # Errors
///
/// Why the name is refused: not 1–20 characters of a-z, 0-9 and '-', or `ctl`.
pub fn check_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 20
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if !ok {
        return Err(format!(
            "pod name {name:?} must be 1-20 characters of a-z, 0-9 and '-'"
        ));
    }
    if name == "ctl" || name == "br" {
        return Err(format!("pod name {name:?} is reserved"));
    }
    Ok(())
}

/// Checks `NS/SA` the way the controller does (DNS labels).
///
/// # Errors
///
/// The identity is not two DNS labels `NAMESPACE/SERVICEACCOUNT`.
pub fn check_identity(id: &str) -> Result<(), String> {
    let label = |s: &str| {
        !s.is_empty()
            && s.len() <= 63
            && s.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    match id.split_once('/') {
        Some((ns, sa)) if label(ns) && label(sa) => Ok(()),
        _ => Err(format!("identity {id:?} is not NAMESPACE/SERVICEACCOUNT")),
    }
}

/// `n` pods `pod-1` … `pod-n`, each serving a greeting with Python's
/// http.server on port 8080.
pub fn simple_pods(n: usize) -> Vec<PodSpec> {
    (1..=n)
        .map(|i| {
            let name = format!("pod-{i}");
            PodSpec::new(&name, &[8080]).command(&format!(
                "echo 'hello from {name}' > index.html && exec python3 -m http.server 8080 --bind 0.0.0.0"
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pods_and_refuses_bad_ones() {
        let p = PodSpec::parse("web:8080,9090@shop/web=python3 app.py --port 8080").unwrap();
        assert_eq!(p.name, "web");
        assert_eq!(p.ports, [8080, 9090]);
        assert_eq!(p.identity, "shop/web");
        assert_eq!(p.service.as_deref(), Some("web:8080"));
        assert_eq!(p.command.as_deref(), Some("python3 app.py --port 8080"));
        let bot = PodSpec::parse("bot").unwrap();
        assert_eq!((bot.ports.len(), bot.service, bot.command), (0, None, None));
        assert_eq!(bot.identity, "lab/bot");
        for bad in [
            "",
            "Web",
            "ctl",
            "web:0",
            "web:http",
            "web@shop",
            "web=",
            "a-very-long-pod-name-indeed",
        ] {
            let e = PodSpec::parse(bad).unwrap_err();
            assert_eq!(e.value, bad);
        }
        assert_eq!(simple_pods(2)[1].name, "pod-2");
    }
}
