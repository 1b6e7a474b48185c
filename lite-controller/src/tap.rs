//! The tap relay (`GET /v1/tap` on the operator port, what `pimesh tap`
//! and `pimesh top` read): opens the tap stream of every registered proxy
//! the resource selects — over mTLS, presenting the controller's own
//! certificate, the only identity proxies accept on their tap listener —
//! and merges them into one NDJSON stream, each event labelled with its
//! proxy's workload labels. Bounded: a few relays at once, one small queue
//! per relay (events beyond it are dropped and counted in `skipped`).

use crate::cert_slot::CertSlot;
use crate::identity::Authority;
use crate::registry::model::LiveEndpoint;
use crate::registry::Registry;
use crate::rest::{self, Body};
use bytes::{Bytes, BytesMut};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Empty};
use hyper::body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};
use pimesh_api::identity::ALPN_H2;
use pimesh_api::query::percent_decode;
use pimesh_api::tap::{TapEvent, TAP_PATH};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::ServerName;
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, RootCertStore, SignatureScheme};
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Relays open at once; more are answered 503.
pub const MAX_RELAYS: usize = 8;
/// Proxies one relay opens at most.
pub const MAX_TARGETS: usize = 64;
/// Lines queued per relay before events are dropped.
const QUEUE: usize = 256;
/// Time to connect to a proxy's tap listener and get its answer head.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest line accepted from a proxy, bytes.
const MAX_LINE: usize = 64 * 1024;

/// Relays currently open (across operators).
#[derive(Debug, Default)]
pub struct Relays(AtomicUsize);

/// What the relay uses; `server` builds it, the operator port holds it.
pub struct Ctx {
    /// Registered endpoints: which proxies a resource selects, their tap
    /// addresses, identities and labels.
    pub registry: Arc<Registry>,
    /// The trust anchors that proxies' certificates chain to, and the
    /// trust domain of their names.
    pub authority: Arc<Authority>,
    /// The controller's own certificate, presented to proxies.
    pub cert: Arc<CertSlot>,
    /// Cancelled on SIGTERM/SIGINT: every relay ends.
    pub shutdown: CancellationToken,
    /// Relays open (bounded by [`MAX_RELAYS`]).
    pub relays: Relays,
}

/// A response of the relay: an error, or the merged stream.
pub type TapResponse = Response<Either<Body, LineStream>>;

/// What `GET /v1/tap` selects.
#[derive(Debug, Clone, PartialEq)]
pub struct Selector {
    /// `deploy`, `pod`, `svc` or `ns`.
    pub kind: &'static str,
    /// The resource's name.
    pub name: String,
    /// The namespace (`ns/NAME` ignores it).
    pub namespace: String,
    /// What is passed on to the proxies (`max_rps`, `method`, `authority`, `path`).
    pub filters: String,
}

impl Selector {
    /// Parses the operator query: `resource=KIND/NAME` (kinds as kubectl
    /// and linkerd spell them: `deploy`/`deployment`, `po`/`pod`,
    /// `svc`/`service`, `ns`/`namespace`), `namespace=NS` (default
    /// `default`), and the proxies' filters.
    ///
    /// # Errors
    ///
    /// A message for the operator: no or an unknown resource, an unknown
    /// parameter, a bad percent-encoding.
    pub fn parse(query: &str) -> Result<Selector, String> {
        let (mut resource, mut namespace, mut filters) = (None, None, Vec::new());
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (k, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(raw).ok_or_else(|| format!("bad encoding of {k}"))?;
            match k {
                "resource" => resource = Some(v),
                "namespace" => namespace = Some(v),
                "max_rps" | "method" | "authority" | "path" => filters.push(pair.to_string()),
                _ => return Err(format!("unknown parameter {k:?}")),
            }
        }
        let resource = resource.ok_or("resource=KIND/NAME is required")?;
        let (kind, name) = resource
            .split_once('/')
            .filter(|(_, n)| !n.is_empty())
            .ok_or_else(|| format!("resource {resource:?} is not KIND/NAME"))?;
        let kind = match kind {
            "deploy" | "deployment" | "deployments" => "deploy",
            "po" | "pod" | "pods" => "pod",
            "svc" | "service" | "services" => "svc",
            "ns" | "namespace" | "namespaces" => "ns",
            other => {
                return Err(format!(
                    "unknown resource kind {other:?} (deploy, pod, svc or ns)"
                ))
            }
        };
        Ok(Selector {
            kind,
            name: name.to_string(),
            namespace: namespace.unwrap_or_else(|| "default".into()),
            filters: filters.join("&"),
        })
    }

    /// Whether `ep` belongs to the selected resource.
    pub fn matches(&self, ep: &LiveEndpoint) -> bool {
        let label = |k: &str| ep.endpoint.labels.get(k).map(String::as_str);
        match self.kind {
            "ns" => ep.namespace == self.name,
            "svc" => ep.namespace == self.namespace && ep.service == self.name,
            "deploy" => ep.namespace == self.namespace && label("deployment") == Some(&self.name),
            _ => ep.namespace == self.namespace && label("pod") == Some(&self.name),
        }
    }
}

/// Answers `GET /v1/tap?...`: 400 for a bad query, 404 when no registered
/// proxy with a tap listener matches, 503 when too many relays are open,
/// else 200 and the merged stream until the operator goes away.
pub fn relay(ctx: &Arc<Ctx>, query: &str) -> TapResponse {
    let err = |status, code, msg: String| rest::error(status, code, msg).map(Either::Left);
    let sel = match Selector::parse(query) {
        Ok(s) => s,
        Err(e) => return err(StatusCode::BAD_REQUEST, "bad_request", e),
    };
    let mut seen = BTreeSet::new();
    let targets: Vec<_> = ctx
        .registry
        .endpoints()
        .into_iter()
        .filter(|ep| sel.matches(ep))
        .filter_map(|ep| {
            let tap = ep.endpoint.tap_addr?;
            let identity = ep.endpoint.identity.clone()?;
            seen.insert(tap)
                .then_some((tap, identity, ep.endpoint.labels))
        })
        .take(MAX_TARGETS)
        .collect();
    if targets.is_empty() {
        return err(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no registered meshed proxy with a tap listener serves {}/{} in namespace {}",
                sel.kind, sel.name, sel.namespace
            ),
        );
    }
    if ctx.relays.0.fetch_add(1, Ordering::AcqRel) >= MAX_RELAYS {
        ctx.relays.0.fetch_sub(1, Ordering::AcqRel);
        return err(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_taps",
            format!("{MAX_RELAYS} taps are open already"),
        );
    }
    let client = client_config(ctx, ctx.cert.clone());
    let (tx, rx) = mpsc::channel(QUEUE);
    for (addr, identity, labels) in targets {
        let name = ServerName::try_from(identity.dns_name(ctx.authority.trust_domain()))
            .map(|n| n.to_owned());
        let (client, tx, filters) = (client.clone(), tx.clone(), sel.filters.clone());
        let shutdown = ctx.shutdown.clone();
        tokio::spawn(async move {
            let Ok(name) = name else { return };
            tokio::select! {
                r = follow(client, addr, name, &filters, labels, &tx) => {
                    if let Err(e) = r {
                        tracing::info!(%addr, %identity, error = %e, "tap of a proxy ended");
                    }
                }
                _ = tx.closed() => {}
                _ = shutdown.cancelled() => {}
            }
        });
    }
    let mut rsp = Response::new(Either::Right(LineStream {
        rx,
        ctx: ctx.clone(),
    }));
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/x-ndjson"),
    );
    rsp
}

/// mTLS client configuration: the controller's certificate, the current anchors.
fn client_config(ctx: &Ctx, slot: Arc<CertSlot>) -> Option<Arc<ClientConfig>> {
    let mut roots = RootCertStore::empty();
    let pem = ctx.authority.trust_anchors_pem();
    for cert in rustls_pemfile_certs(&pem) {
        let _ = roots.add(cert);
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])
        .ok()?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(ClientCert(slot)));
    config.alpn_protocols = vec![ALPN_H2.to_vec()];
    Some(Arc::new(config))
}

/// The DER certificates of a PEM bundle.
fn rustls_pemfile_certs(pem: &str) -> Vec<rustls::pki_types::CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    rustls::pki_types::CertificateDer::pem_slice_iter(pem.as_bytes())
        .filter_map(Result::ok)
        .collect()
}

/// Presents the controller's current certificate as a client.
#[derive(Debug)]
struct ClientCert(Arc<CertSlot>);

impl ResolvesClientCert for ClientCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Why following one proxy's tap ended.
#[derive(Debug, thiserror::Error)]
enum FollowError {
    #[error("no TLS configuration")]
    NoConfig,
    #[error("timed out connecting")]
    Timeout,
    #[error("connect: {0}")]
    Io(#[from] std::io::Error),
    #[error("HTTP/2: {0}")]
    Http(#[from] hyper::Error),
    #[error("the proxy answered {0}")]
    Status(StatusCode),
}

/// Streams one proxy's tap into `tx`, labelling each event.
async fn follow(
    client: Option<Arc<ClientConfig>>,
    addr: SocketAddr,
    name: ServerName<'static>,
    filters: &str,
    labels: std::collections::BTreeMap<String, String>,
    tx: &mpsc::Sender<Bytes>,
) -> Result<(), FollowError> {
    let client = client.ok_or(FollowError::NoConfig)?;
    let connect = async {
        let tcp = tokio::net::TcpStream::connect(addr).await?;
        let _ = tcp.set_nodelay(true);
        let tls = tokio_rustls::TlsConnector::from(client)
            .connect(name, tcp)
            .await?;
        let (mut sender, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tls)).await?;
        tokio::spawn(conn);
        let uri = format!("https://{addr}{TAP_PATH}?{filters}");
        let req = Request::get(uri)
            .body(Empty::<Bytes>::new())
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        Ok::<_, FollowError>(sender.send_request(req).await?)
    };
    let rsp = tokio::time::timeout(CONNECT_TIMEOUT, connect)
        .await
        .map_err(|_| FollowError::Timeout)??;
    if rsp.status() != StatusCode::OK {
        return Err(FollowError::Status(rsp.status()));
    }
    let mut body = rsp.into_body();
    let mut buf = BytesMut::new();
    let mut dropped = 0u64;
    while let Some(frame) = body.frame().await {
        let Ok(data) = frame?.into_data() else {
            continue;
        };
        buf.extend_from_slice(&data);
        while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
            let line = buf.split_to(nl + 1);
            let Ok(mut ev) = serde_json::from_slice::<TapEvent>(&line[..nl]) else {
                continue;
            };
            ev.labels = labels.clone();
            ev.skipped += dropped;
            let Ok(mut out) = serde_json::to_vec(&ev) else {
                continue;
            };
            out.push(b'\n');
            match tx.try_send(Bytes::from(out)) {
                Ok(()) => dropped = 0,
                Err(mpsc::error::TrySendError::Full(_)) => dropped += 1,
                Err(mpsc::error::TrySendError::Closed(_)) => return Ok(()),
            }
        }
        if buf.len() > MAX_LINE {
            buf.clear();
        }
    }
    Ok(())
}

/// The merged stream; frees its relay slot when dropped.
pub struct LineStream {
    rx: mpsc::Receiver<Bytes>,
    ctx: Arc<Ctx>,
}

impl Drop for LineStream {
    fn drop(&mut self) {
        self.ctx.relays.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl hyper::body::Body for LineStream {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors() {
        let s = Selector::parse("resource=deploy%2Fweb&namespace=shop&max_rps=5").unwrap();
        assert_eq!(
            (s.kind, s.name.as_str(), s.namespace.as_str()),
            ("deploy", "web", "shop")
        );
        assert_eq!(s.filters, "max_rps=5");
        assert_eq!(
            Selector::parse("resource=po/web-1").unwrap().namespace,
            "default"
        );
        for bad in [
            "",
            "resource=web",
            "resource=cronjob/x",
            "resource=deploy/",
            "x=1&resource=ns/a",
        ] {
            assert!(Selector::parse(bad).is_err(), "{bad}");
        }
    }
}
