//! Test support: the real `pimesh` binary on loopback port 0 with a
//! temporary data directory, the CLI, the operator port over plain
//! HTTP/1.1, and the proxy port over HTTP/2 + TLS 1.3 (rustls, hyper),
//! with webpki verification of issued chains.
#![allow(dead_code)]

pub mod discovery;
pub mod kube;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use pimesh_api::identity::{CertifyRequest, CertifyResponse, Identity, CONTROLLER_IDENTITY};
pub use pimesh_test_support::{eventually, run, TempDir};
use pimesh_test_support::{launch, Launched};
use rustls::client::danger::ServerCertVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Output};
use std::sync::Arc;
use std::time::Duration;

pub const TD: &str = "cluster.local";

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_pimesh")
}

/// Runs `pimesh ARGS` to completion (30 s at most), without the
/// environment's `PIMESH_CONTROLLER`.
pub fn pimesh(args: &[&str]) -> Output {
    run(
        Command::new(bin())
            .args(args)
            .env_remove("PIMESH_CONTROLLER"),
        Duration::from_secs(30),
    )
}

/// A running `pimesh controller` (`--standalone`, or Kubernetes mode with
/// `--kubeconfig`), SIGKILLed on drop.
pub struct Controller {
    process: Launched,
    /// `--standalone`, or `--kubeconfig PATH` (what `restart` passes again).
    mode: Vec<String>,
    pub proxy: SocketAddr,
    pub admin: SocketAddr,
    pub data: PathBuf,
    args: Vec<String>,
}

impl Controller {
    /// Starts on `data` with `extra` flags; panics if it does not listen.
    pub fn start(data: &Path, extra: &[&str]) -> Controller {
        let args: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Controller::spawn(data, args)
            .unwrap_or_else(|(status, log)| panic!("controller exited with {status:?}:\n{log}"))
    }

    /// Starts on `data`; `Err((exit status, log))` if it exits instead of listening.
    pub fn spawn(data: &Path, extra: Vec<String>) -> Result<Controller, (ExitStatus, String)> {
        Controller::spawn_mode(vec!["--standalone".into()], data, extra)
    }

    /// Starts in Kubernetes mode (`--kubeconfig kubeconfig`, `--webhook-addr
    /// 127.0.0.1:0` unless `extra` gives one) on `data`;
    /// `Err((exit status, log))` if it exits instead of listening.
    pub fn spawn_kube(
        kubeconfig: &Path,
        data: &Path,
        extra: Vec<String>,
    ) -> Result<Controller, (ExitStatus, String)> {
        let mut mode = vec!["--kubeconfig".into(), kubeconfig.display().to_string()];
        // The injector's listener: a free loopback port unless given.
        if !extra.iter().any(|a| a == "--webhook-addr") {
            mode.extend(["--webhook-addr".into(), "127.0.0.1:0".into()]);
        }
        Controller::spawn_mode(mode, data, extra)
    }

    fn spawn_mode(
        mode: Vec<String>,
        data: &Path,
        extra: Vec<String>,
    ) -> Result<Controller, (ExitStatus, String)> {
        let mut c = Command::new(bin());
        c.arg("controller")
            .args(&mode)
            .arg("--data-dir")
            .arg(data)
            .args(["--proxy-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0"])
            .args(&extra)
            .env("PIMESH_CONTROLLER_LOG", "warn,pimesh=debug");
        let process = launch(
            &mut c,
            "pimesh controller listening",
            Duration::from_secs(30),
        )
        .map_err(|e| (e.status, e.log))?;
        Ok(Controller {
            mode,
            proxy: process.addr("proxy="),
            admin: process.addr("admin="),
            data: data.to_path_buf(),
            args: extra,
            process,
        })
    }

    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The process id (0 once killed).
    pub fn pid(&self) -> u32 {
        self.process.pid()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// SIGTERM, then the exit status (15 s at most).
    pub fn terminate(&mut self) -> ExitStatus {
        let pid = self.process.pid();
        assert_ne!(pid, 0, "the controller is not running");
        // SAFETY: signalling a child process this test started.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
        let status = self.process.wait_exit(Duration::from_secs(15));
        self.process.kill();
        status.unwrap_or_else(|| panic!("controller ignored SIGTERM:\n{}", self.log()))
    }

    /// SIGKILL, then a new controller on the same data dir and flags.
    pub fn restart(&mut self) -> Controller {
        self.kill();
        Controller::spawn_mode(self.mode.clone(), &self.data.clone(), self.args.clone())
            .unwrap_or_else(|(status, log)| panic!("controller exited with {status:?}:\n{log}"))
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.admin)
    }

    /// `pimesh ARGS --controller URL`.
    pub fn cli(&self, args: &[&str]) -> Output {
        let url = self.url();
        let mut all = args.to_vec();
        all.extend(["--controller", &url]);
        pimesh(&all)
    }

    /// `pimesh ARGS --controller URL`, which must succeed; its stdout.
    pub fn cli_ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "pimesh {args:?}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// A join token for `identity` made with the CLI.
    pub fn token(&self, identity: &str, ttl: &str) -> String {
        let out = self.cli_ok(&["token", "create", "--identity", identity, "--ttl", ttl]);
        let token = out.trim().to_string();
        assert!(
            token.starts_with("pmt_") && !token.contains(char::is_whitespace),
            "{out:?}"
        );
        token
    }

    pub fn anchors_pem(&self) -> String {
        self.cli_ok(&["identity", "trust-anchors"])
    }

    /// `GET path` on the operator port: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        http1(self.admin, "GET", path, "")
    }

    /// `GET /metrics`: the sample of `series` (exact name and labels), 0 if absent.
    pub fn metric(&self, series: &str) -> f64 {
        let (status, text) = self.get("/metrics");
        assert_eq!(status, 200);
        text.lines()
            .find_map(|l| {
                l.strip_prefix(series)?
                    .strip_prefix(' ')?
                    .trim()
                    .parse()
                    .ok()
            })
            .unwrap_or(0.0)
    }

    /// Serials of every issued-certificate record.
    pub fn serials(&self) -> Vec<String> {
        let (status, body) = self.get("/v1/identity/certificates");
        assert_eq!(status, 200, "{body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        let list = v["certificates"].as_array().unwrap();
        assert_eq!(v["count"].as_u64().unwrap() as usize, list.len());
        list.iter()
            .map(|c| c["serial"].as_str().unwrap().to_string())
            .collect()
    }

    /// `POST CERTIFY_PATH` over HTTP/2 + TLS, verifying the controller's
    /// certificate against `anchors_pem`: (status, body).
    pub fn certify_raw(&self, anchors_pem: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        h2_request(
            self.proxy,
            anchors_pem,
            "POST",
            pimesh_api::identity::CERTIFY_PATH,
            body,
        )
        .unwrap_or_else(|e| panic!("certify exchange: {e}\n{}", self.log()))
    }

    /// A certify request for a fresh key; the answer parsed on 200.
    pub fn certify(
        &self,
        anchors_pem: &str,
        identity: &str,
        token: &str,
    ) -> Result<CertifyResponse, (u16, pimesh_api::ApiError)> {
        let req = CertifyRequest {
            identity: identity.parse().unwrap(),
            token: token.to_string(),
            csr_pem: csr_pem(identity),
        };
        let (status, body) = self.certify_raw(anchors_pem, serde_json::to_vec(&req).unwrap());
        if status == 200 {
            Ok(serde_json::from_slice(&body).unwrap())
        } else {
            Err((
                status,
                serde_json::from_slice(&body)
                    .unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&body))),
            ))
        }
    }
}

/// A PEM CSR for a fresh P-256 key, asking for a name the CA must ignore.
pub fn csr_pem(identity: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let _ = identity;
    rcgen::CertificateParams::new(vec!["i-want-to-be-admin.example".to_string()])
        .unwrap()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
}

/// One HTTP/1.1 request with `Connection: close`: (status, body).
pub fn http1(addr: SocketAddr, method: &str, path: &str, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut raw = String::new();
    s.read_to_string(&mut raw).unwrap();
    let status = raw.split_whitespace().nth(1).unwrap().parse().unwrap();
    let body = raw
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The certificates of a PEM bundle.
pub fn certs(pem: &str) -> Vec<CertificateDer<'static>> {
    x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
        .map(|p| CertificateDer::from(p.unwrap().contents))
        .collect()
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn roots(anchors_pem: &str) -> Arc<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(anchors_pem) {
        roots.add(c).unwrap();
    }
    Arc::new(roots)
}

/// Verifies `chain_pem` (leaf, issuer) against `anchors_pem` as webpki does
/// for a TLS server named `identity`'s DNS name and for a TLS client.
pub fn verify_chain(chain_pem: &str, anchors_pem: &str, identity: &str) -> Result<(), String> {
    let chain = certs(chain_pem);
    let (leaf, intermediates) = chain.split_first().ok_or("empty chain")?;
    let id: Identity = identity.parse().unwrap();
    let name = ServerName::try_from(id.dns_name(TD)).unwrap();
    let server =
        rustls::client::WebPkiServerVerifier::builder_with_provider(roots(anchors_pem), provider())
            .build()
            .unwrap();
    server
        .verify_server_cert(leaf, intermediates, &name, &[], UnixTime::now())
        .map_err(|e| format!("as a server: {e}"))?;
    let client =
        rustls::server::WebPkiClientVerifier::builder_with_provider(roots(anchors_pem), provider())
            .build()
            .unwrap();
    client
        .verify_client_cert(leaf, intermediates, UnixTime::now())
        .map_err(|e| format!("as a client: {e}"))?;
    Ok(())
}

/// One HTTP/2 exchange over TLS 1.3 with ALPN h2, the server verified
/// against `anchors_pem` as the controller's identity.
pub fn h2_request(
    addr: SocketAddr,
    anchors_pem: &str,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots(anchors_pem))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let controller: Identity = CONTROLLER_IDENTITY.parse().unwrap();
    let name = ServerName::try_from(controller.dns_name(TD)).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let exchange = async {
            let tcp = tokio::net::TcpStream::connect(addr)
                .await
                .map_err(|e| e.to_string())?;
            let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS: {e}"))?;
            assert_eq!(tls.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
            let (mut send, conn) =
                hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .handshake(hyper_util::rt::TokioIo::new(tls))
                    .await
                    .map_err(|e| e.to_string())?;
            tokio::spawn(conn);
            let req = http::Request::builder()
                .method(method)
                .uri(format!("https://{addr}{path}"))
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(body)))
                .unwrap();
            let rsp = send.send_request(req).await.map_err(|e| e.to_string())?;
            let status = rsp.status().as_u16();
            let bytes = rsp
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((status, bytes.to_vec()))
        };
        tokio::time::timeout(Duration::from_secs(10), exchange)
            .await
            .map_err(|_| "timed out".to_string())?
    })
}

/// The serial (lowercase hex) and issuer DER of a chain.
pub fn serial_and_issuer(chain_pem: &str) -> (String, Vec<u8>) {
    let chain = certs(chain_pem);
    assert_eq!(chain.len(), 2, "leaf + issuer");
    let (_, leaf) = x509_parser::parse_x509_certificate(&chain[0]).unwrap();
    let hex: String = leaf
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    (hex, chain[1].to_vec())
}
