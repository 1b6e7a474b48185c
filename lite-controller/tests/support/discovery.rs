//! Test support for the discovery API: a certified client key (mTLS), one
//! HTTP/2 exchange with or without it, registrations, and watch streams
//! read line by line on their own thread.

use super::{certs, Controller, TD};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use pimesh_api::discovery::{Registration, WatchEvent, ENDPOINTS_PATH, WATCH_PATH};
use pimesh_api::identity::{CertifyRequest, CertifyResponse, Identity, CONTROLLER_IDENTITY};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use std::net::SocketAddr;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

/// A client certificate chain and its key.
#[derive(Clone)]
pub struct ClientCert {
    pub chain: Vec<CertificateDer<'static>>,
    pub key_pkcs8: Vec<u8>,
}

impl Controller {
    /// Certifies a fresh key as `identity` (with a new token): a client
    /// certificate of the mesh.
    pub fn client_cert(&self, anchors_pem: &str, identity: &str) -> ClientCert {
        let token = self.token(identity, "1h");
        self.client_cert_with(anchors_pem, identity, &token)
    }

    /// Certifies a fresh key as `identity` with `token` (a join token, or a
    /// ServiceAccount token in Kubernetes mode), which must succeed.
    pub fn client_cert_with(&self, anchors_pem: &str, identity: &str, token: &str) -> ClientCert {
        let token = token.to_string();
        let key = rcgen::KeyPair::generate().unwrap();
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let req = CertifyRequest {
            identity: identity.parse().unwrap(),
            token,
            csr_pem: csr,
        };
        let (status, body) = self.certify_raw(anchors_pem, serde_json::to_vec(&req).unwrap());
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let rsp: CertifyResponse = serde_json::from_slice(&body).unwrap();
        ClientCert {
            chain: certs(&rsp.chain_pem),
            key_pkcs8: key.serialize_der(),
        }
    }

    /// A join token for `identity` that may only register `service`.
    pub fn service_token(&self, identity: &str, service: &str) -> String {
        let out = self.cli_ok(&[
            "token",
            "create",
            "--identity",
            identity,
            "--service",
            service,
            "--ttl",
            "1h",
        ]);
        out.trim().to_string()
    }

    /// `PUT` (or `DELETE`) a registration body: (status, body).
    pub fn put_endpoint(&self, anchors: &str, method: &str, body: Vec<u8>) -> (u16, Vec<u8>) {
        h2_call(self.proxy, anchors, None, method, ENDPOINTS_PATH, body)
            .unwrap_or_else(|e| panic!("registration exchange: {e}\n{}", self.log()))
    }

    /// Registers `reg`, which must succeed; the lease's revision.
    pub fn register(&self, anchors: &str, reg: &Registration) -> u64 {
        let (status, body) = self.put_endpoint(anchors, "PUT", serde_json::to_vec(reg).unwrap());
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let lease: pimesh_api::discovery::Lease = serde_json::from_slice(&body).unwrap();
        lease.revision
    }

    /// Opens a watch with `query` (`name=web&revision=3`).
    pub fn watch(
        &self,
        anchors: &str,
        client: Option<&ClientCert>,
        query: &str,
    ) -> Result<Watch, (u16, String)> {
        Watch::open(self.proxy, anchors, client, query)
    }
}

/// A registration of `addr` for `service:port` with `token`.
pub fn registration(token: &str, service: &str, port: u16, addr: &str) -> Registration {
    Registration {
        token: token.to_string(),
        service: service.to_string(),
        port,
        addr: addr.parse().unwrap(),
        proxy_addr: None,
        admin_addr: None,
        tap_addr: None,
        protocol: Default::default(),
        labels: Default::default(),
    }
}

fn client_config(anchors_pem: &str, client: Option<&ClientCert>) -> rustls::ClientConfig {
    let mut roots = rustls::RootCertStore::empty();
    for c in certs(anchors_pem) {
        roots.add(c).unwrap();
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots);
    let mut config = match client {
        Some(c) => builder
            .with_client_auth_cert(
                c.chain.clone(),
                PrivateKeyDer::Pkcs8(c.key_pkcs8.clone().into()),
            )
            .unwrap(),
        None => builder.with_no_client_auth(),
    };
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

type Sender = hyper::client::conn::http2::SendRequest<Full<Bytes>>;

async fn connect(
    addr: SocketAddr,
    anchors_pem: &str,
    client: Option<&ClientCert>,
) -> Result<Sender, String> {
    let config = client_config(anchors_pem, client);
    let controller: Identity = CONTROLLER_IDENTITY.parse().unwrap();
    let name = ServerName::try_from(controller.dns_name(TD)).unwrap();
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| format!("TLS: {e}"))?;
    // A small stream window (RFC 9113 §6.9.2's initial 65,535 bytes) so that
    // a watch that is not read holds the server back soon.
    let (send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .initial_stream_window_size(65_535)
            .handshake(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| format!("h2: {e}"))?;
    tokio::spawn(conn);
    Ok(send)
}

fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> http::Request<Full<Bytes>> {
    http::Request::builder()
        .method(method)
        .uri(format!("https://{addr}{path}"))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

/// One HTTP/2 exchange over TLS 1.3, with `client`'s certificate if given.
pub fn h2_call(
    addr: SocketAddr,
    anchors_pem: &str,
    client: Option<&ClientCert>,
    method: &str,
    path: &str,
    body: Vec<u8>,
) -> Result<(u16, Vec<u8>), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let exchange = async {
            let mut send = connect(addr, anchors_pem, client).await?;
            let rsp = send
                .send_request(request(addr, method, path, body))
                .await
                .map_err(|e| e.to_string())?;
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

/// An open watch stream, read on its own thread; closed on drop.
pub struct Watch {
    lines: mpsc::Receiver<String>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// Starts reading a watch opened paused.
    resume: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
    pub content_type: String,
}

impl Watch {
    /// `GET WATCH_PATH?query`; `Err((status, body))` unless 200 (status 0:
    /// the connection failed, body the reason).
    pub fn open(
        addr: SocketAddr,
        anchors_pem: &str,
        client: Option<&ClientCert>,
        query: &str,
    ) -> Result<Watch, (u16, String)> {
        let mut w = Watch::open_paused(addr, anchors_pem, client, query)?;
        w.resume();
        Ok(w)
    }

    /// Reads a watch opened by [`Watch::open_paused`] from now on.
    pub fn resume(&mut self) {
        if let Some(r) = self.resume.take() {
            let _ = r.send(());
        }
    }

    /// As [`Watch::open`], but the body is not read (so the HTTP/2 window
    /// is not released) until [`Watch::resume`]: a slow watcher.
    pub fn open_paused(
        addr: SocketAddr,
        anchors_pem: &str,
        client: Option<&ClientCert>,
        query: &str,
    ) -> Result<Watch, (u16, String)> {
        Watch::open_path(addr, anchors_pem, client, &format!("{WATCH_PATH}?{query}"))
    }

    /// An NDJSON stream at `path` (with its query), opened paused: the
    /// discovery watch, or the inbound-policy stream
    /// (`INBOUND_POLICY_PATH?labels=…`, read with [`Watch::next_line`]).
    pub fn open_path(
        addr: SocketAddr,
        anchors_pem: &str,
        client: Option<&ClientCert>,
        path: &str,
    ) -> Result<Watch, (u16, String)> {
        let (resume, resumed) = tokio::sync::oneshot::channel::<()>();
        let (ready_tx, ready_rx) = mpsc::channel::<Result<String, (u16, String)>>();
        let (line_tx, lines) = mpsc::channel();
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let anchors = anchors_pem.to_string();
        let client = client.cloned();
        let path = path.to_string();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let opened = tokio::time::timeout(Duration::from_secs(10), async {
                    let mut send = connect(addr, &anchors, client.as_ref()).await?;
                    send.send_request(request(addr, "GET", &path, Vec::new()))
                        .await
                        .map_err(|e| e.to_string())
                })
                .await;
                let rsp = match opened {
                    Ok(Ok(rsp)) => rsp,
                    Ok(Err(e)) => return drop(ready_tx.send(Err((0, e)))),
                    Err(_) => return drop(ready_tx.send(Err((0, "timed out".into())))),
                };
                let status = rsp.status().as_u16();
                let ty = rsp
                    .headers()
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                let mut body = rsp.into_body();
                if status != 200 {
                    let bytes = tokio::time::timeout(Duration::from_secs(10), body.collect())
                        .await
                        .ok()
                        .and_then(Result::ok)
                        .map(|b| b.to_bytes())
                        .unwrap_or_default();
                    let text = String::from_utf8_lossy(&bytes).into_owned();
                    return drop(ready_tx.send(Err((status, text))));
                }
                let _ = ready_tx.send(Ok(ty));
                tokio::select! {
                    _ = &mut stopped => return,
                    r = resumed => if r.is_err() { return },
                }
                let mut buf = Vec::new();
                loop {
                    let frame = tokio::select! {
                        _ = &mut stopped => return,
                        f = body.frame() => f,
                    };
                    let Some(Ok(frame)) = frame else { return };
                    if let Ok(data) = frame.into_data() {
                        buf.extend_from_slice(&data);
                        while let Some(i) = buf.iter().position(|b| *b == b'\n') {
                            let line: Vec<u8> = buf.drain(..=i).collect();
                            let line = String::from_utf8_lossy(&line).trim().to_string();
                            if line_tx.send(line).is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        });
        let content_type = match ready_rx.recv_timeout(Duration::from_secs(20)) {
            Ok(Ok(ty)) => ty,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => panic!("watch did not open"),
        };
        Ok(Watch {
            lines,
            stop: Some(stop),
            resume: Some(resume),
            thread: Some(thread),
            content_type,
        })
    }

    /// The next line, within `timeout`.
    pub fn next_line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    /// The next event that is not a keep-alive `BOOKMARK`, within 15 s;
    /// panics otherwise.
    pub fn next(&self) -> WatchEvent {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let ev = self.next_within(left).expect("a watch event within 15 s");
            if ev.kind != pimesh_api::discovery::EventType::Bookmark {
                return ev;
            }
        }
    }

    /// The next event, whatever it is, within 10 s; panics otherwise.
    pub fn next_any(&self) -> WatchEvent {
        self.next_within(Duration::from_secs(10))
            .expect("a watch event within 10 s")
    }

    /// The next event within `timeout`, if any.
    pub fn next_within(&self, timeout: Duration) -> Option<WatchEvent> {
        self.next_line(timeout).map(|l| {
            serde_json::from_str(&l).unwrap_or_else(|e| panic!("not a WatchEvent: {e}: {l}"))
        })
    }

    /// Whether the stream ended (the server closed it) within `timeout`.
    pub fn ended_within(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            match self.lines.recv_timeout(Duration::from_millis(100)) {
                Err(mpsc::RecvTimeoutError::Disconnected) => return true,
                _ if std::time::Instant::now() > deadline => return false,
                _ => {}
            }
        }
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
