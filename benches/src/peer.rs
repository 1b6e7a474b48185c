//! Peer proxies run in the inbound scenario beside pimesh, so that ratios
//! come from one run: any command line given as a template
//! (`--peer-bin NAME=TEMPLATE`), or haproxy / nginx with a configuration
//! the harness writes (`--peer haproxy`).
//!
//! Template placeholders: `{listen}` (`127.0.0.1:PORT` the peer must listen
//! on), `{listen_port}`, `{upstream}` (the upstream for the protocol being
//! measured), `{upstream_h1}`, `{upstream_h2}`, `{dir}` (a scratch
//! directory), `{max_conns}`. Words are split on whitespace (no quoting);
//! leading `VAR=VALUE` words are environment variables.

use crate::config::{PeerKind, Protocol};
use crate::process::Launch;
use std::net::SocketAddr;
use std::path::Path;

/// A peer could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("peer {0}: empty command line")]
    Empty(String),
    #[error("peer {0}: cannot write its configuration")]
    Config(String, #[source] std::io::Error),
}

/// A peer proxy: its name in the report and its command-line template.
#[derive(Clone, Debug)]
pub struct Peer {
    pub name: String,
    pub template: String,
}

/// Values of the placeholders for one start.
pub struct Slots<'a> {
    pub listen: SocketAddr,
    pub protocol: Protocol,
    pub upstream_h1: SocketAddr,
    pub upstream_h2: SocketAddr,
    pub dir: &'a Path,
    /// Connections the peer must accept at once (idle-connection figure).
    pub max_conns: usize,
}

impl Slots<'_> {
    fn upstream(&self) -> SocketAddr {
        match self.protocol {
            Protocol::H1 => self.upstream_h1,
            Protocol::H2 => self.upstream_h2,
        }
    }

    /// `template` with every placeholder replaced.
    pub fn fill(&self, template: &str) -> String {
        template
            .replace("{listen}", &self.listen.to_string())
            .replace("{listen_port}", &self.listen.port().to_string())
            .replace("{upstream}", &self.upstream().to_string())
            .replace("{upstream_h1}", &self.upstream_h1.to_string())
            .replace("{upstream_h2}", &self.upstream_h2.to_string())
            .replace("{dir}", &self.dir.display().to_string())
            .replace("{max_conns}", &self.max_conns.to_string())
    }
}

impl Peer {
    /// A built-in peer: its template refers to a configuration file in
    /// `{dir}` that [`Peer::launch`] writes first.
    pub fn builtin(kind: PeerKind) -> Peer {
        let (name, template) = match kind {
            PeerKind::Haproxy => ("haproxy", "haproxy -db -f {dir}/haproxy.cfg"),
            PeerKind::Nginx => (
                "nginx",
                "nginx -p {dir} -e {dir}/error.log -c {dir}/nginx-peer.conf",
            ),
        };
        Peer {
            name: name.into(),
            template: template.into(),
        }
    }

    /// The command to start this peer with `slots` (writing a built-in
    /// peer's configuration into `slots.dir`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the built-in peer's configuration cannot be
    /// written to `slots.dir`; [`Error::Empty`] when the filled-in template has
    /// no program.
    pub fn launch(&self, slots: &Slots) -> Result<Launch, Error> {
        let config = match self.name.as_str() {
            "haproxy" if self.template.contains("{dir}/haproxy.cfg") => {
                Some(("haproxy.cfg", haproxy_config(slots)))
            }
            "nginx" if self.template.contains("{dir}/nginx-peer.conf") => {
                Some(("nginx-peer.conf", nginx_config(slots)))
            }
            _ => None,
        };
        if let Some((file, text)) = config {
            std::fs::create_dir_all(slots.dir)
                .and_then(|_| std::fs::write(slots.dir.join(file), text))
                .map_err(|e| Error::Config(self.name.clone(), e))?;
        }
        parse_command(&slots.fill(&self.template)).ok_or_else(|| Error::Empty(self.name.clone()))
    }
}

/// `VAR=VALUE ... program args...` → a [`Launch`].
fn parse_command(line: &str) -> Option<Launch> {
    let mut words = line.split_whitespace().peekable();
    let mut env = Vec::new();
    while let Some(w) = words.peek() {
        match w.split_once('=') {
            Some((k, v)) if !k.is_empty() && !k.contains('/') && !w.starts_with('-') => {
                env.push((k.to_string(), v.to_string()));
                words.next();
            }
            _ => break,
        }
    }
    let mut launch = Launch::new(words.next()?);
    for w in words {
        launch = launch.arg(w);
    }
    for (k, v) in env {
        launch = launch.env(&k, v);
    }
    Some(launch)
}

/// haproxy: one thread (as pimesh's one runtime thread), HTTP mode,
/// keep-alive both sides, connections to the upstream reused; h2c on both
/// sides when measuring HTTP/2. haproxy reserves two descriptors per
/// connection and refuses to start when `maxconn` needs more than
/// RLIMIT_NOFILE allows, so `maxconn` is capped to fit.
fn haproxy_config(s: &Slots) -> String {
    let fit = (crate::idle::nofile().saturating_sub(100) / 2) as usize;
    let (bind_proto, server_proto) = match s.protocol {
        Protocol::H1 => ("", ""),
        Protocol::H2 => (" proto h2", " proto h2"),
    };
    format!(
        "global
  nbthread 1
  maxconn {maxconn}
defaults
  mode http
  timeout connect 1s
  timeout client 300s
  timeout server 300s
  timeout http-keep-alive 300s
  option http-keep-alive
frontend bench
  bind {listen}{bind_proto}
  default_backend upstream
backend upstream
  http-reuse always
  server up {upstream}{server_proto}
",
        maxconn = (s.max_conns + 1000).min(fit),
        listen = s.listen,
        upstream = s.upstream(),
    )
}

/// nginx as a reverse proxy: one worker, keep-alive to the upstream over
/// HTTP/1.1 (nginx cannot proxy to an h2c upstream: with HTTP/2 it accepts
/// h2c and forwards HTTP/1.1).
fn nginx_config(s: &Slots) -> String {
    let d = s.dir.display();
    let http2 = match s.protocol {
        Protocol::H1 => "",
        Protocol::H2 => " http2",
    };
    let conns = s.max_conns + 1024;
    format!(
        "daemon off; master_process off; worker_processes 1; pid {d}/nginx-peer.pid;
worker_rlimit_nofile {nofile};
error_log {d}/error.log warn;
events {{ worker_connections {conns}; }}
http {{
  access_log off;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  keepalive_requests 10000000; keepalive_timeout 300s;
  upstream up {{ server {up}; keepalive 64; keepalive_requests 10000000; }}
  server {{ listen {listen}{http2};
    location / {{ proxy_pass http://up; proxy_http_version 1.1; proxy_set_header Connection \"\"; }} }}
}}
",
        nofile = conns * 3,
        listen = s.listen,
        up = s.upstream_h1,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slots(dir: &Path) -> Slots<'_> {
        Slots {
            listen: "127.0.0.1:7000".parse().unwrap(),
            protocol: Protocol::H2,
            upstream_h1: "127.0.0.1:8001".parse().unwrap(),
            upstream_h2: "127.0.0.1:8002".parse().unwrap(),
            dir,
            max_conns: 10,
        }
    }

    #[test]
    fn templates_fill_and_split() {
        let dir = Path::new("/tmp/x");
        let s = slots(dir);
        let peer = Peer {
            name: "socat".into(),
            template: "A=1 B=two socat TCP-LISTEN:{listen_port},fork TCP:{upstream} {dir}".into(),
        };
        let l = peer.launch(&s).unwrap();
        assert_eq!(l.program, Path::new("socat"));
        assert_eq!(
            l.args,
            ["TCP-LISTEN:7000,fork", "TCP:127.0.0.1:8002", "/tmp/x"]
        );
        assert_eq!(
            l.env,
            [("A".into(), "1".into()), ("B".into(), "two".into())]
        );
        let empty = Peer {
            name: "e".into(),
            template: "X=1".into(),
        };
        assert!(empty.launch(&s).is_err());
    }

    #[test]
    fn builtin_configs_name_the_listen_and_upstream_addresses() {
        let dir = std::env::temp_dir().join(format!("pimesh-bench-peer-{}", std::process::id()));
        let s = slots(&dir);
        let l = Peer::builtin(PeerKind::Haproxy).launch(&s).unwrap();
        assert_eq!(l.program, Path::new("haproxy"));
        let cfg = std::fs::read_to_string(dir.join("haproxy.cfg")).unwrap();
        assert!(cfg.contains("bind 127.0.0.1:7000 proto h2"), "{cfg}");
        assert!(cfg.contains("server up 127.0.0.1:8002 proto h2"), "{cfg}");
        Peer::builtin(PeerKind::Nginx).launch(&s).unwrap();
        let cfg = std::fs::read_to_string(dir.join("nginx-peer.conf")).unwrap();
        assert!(cfg.contains("listen 127.0.0.1:7000 http2;"), "{cfg}");
        assert!(cfg.contains("server 127.0.0.1:8001;"), "{cfg}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
