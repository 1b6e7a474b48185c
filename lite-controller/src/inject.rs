//! The proxy injector (Kubernetes mode): a mutating admission webhook, as
//! Linkerd's proxy-injector, on its own HTTPS listener (`--webhook-addr`,
//! default 0.0.0.0:8443; HTTP/1.1, which the API server speaks).
//!
//! `POST /inject` takes an `admission.k8s.io/v1` AdmissionReview of a Pod
//! (see `review`) and answers one with the same `uid`, `allowed: true`
//! and, when the pod is meshed, a JSON Patch (see `patch`). A pod is
//! meshed when it or its namespace says `pimesh.io/inject: enabled` (the
//! Namespace is read with `get namespaces` when the pod does not decide,
//! or, for a meshed pod, when it names no
//! `config.pimesh.io/default-inbound-policy`: the namespace's, else
//! `--default-inbound-policy`, goes to the proxy); a skipped pod that asked to be meshed (or whose namespace did)
//! gets only the annotation `pimesh.io/inject-skipped: <why>`, others
//! nothing; the reason is logged. A malformed
//! review with a readable uid is answered allowed, unchanged; without one
//! 400. Every outcome is counted in
//! `pimesh_controller_injections_total{result}` (`injected`,
//! `skipped_<reason>`, `malformed`).
//!
//! Serving certificate: from the controller's CA, for
//! `pimesh-controller.NS.svc`, `pimesh-controller.NS.svc.DOMAIN` and the
//! listener's IP unless unspecified; renewed as the proxy port's (see
//! `server`). The webhook configuration's `caBundle` is the trust-anchor
//! bundle (`pimesh identity trust-anchors`).

pub mod manifest;
pub mod metrics;
pub mod patch;
pub mod review;

use crate::cert_slot::CertSlot;
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Limited};

use k8s_openapi::api::core::v1::Namespace;
pub use metrics::InjectMetrics;
use patch::{Decision, Params, Skip};
use rustls::ServerConfig;
use serde_json::{json, Value};
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The webhook's path.
pub const INJECT_PATH: &str = "/inject";
/// Largest AdmissionReview accepted (the API server's own object limit).
pub const MAX_REVIEW_BYTES: usize = 3 * 1024 * 1024;
/// How long the Namespace read may take (the API server's webhook
/// timeout defaults to 10 s).
const NAMESPACE_TIMEOUT: Duration = Duration::from_secs(5);

/// The serving certificate's names for a controller in `namespace`
/// listening on `addr`: (DNS names, IP addresses).
pub fn serving_names(
    namespace: &str,
    cluster_domain: &str,
    addr: SocketAddr,
) -> (Vec<String>, Vec<IpAddr>) {
    let svc = format!("{}.{namespace}.svc", crate::kube::access::NAME);
    let dns = vec![svc.clone(), format!("{svc}.{cluster_domain}")];
    let ips = if addr.ip().is_unspecified() {
        Vec::new()
    } else {
        vec![addr.ip()]
    };
    (dns, ips)
}

/// TLS 1.2/1.3, no client certificate, HTTP/1.1, certificate from `slot`.
///
/// # Errors
///
/// [`rustls::Error`] when the ring provider offers none of those versions.
pub fn tls_config(slot: Arc<CertSlot>) -> Result<Arc<ServerConfig>, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_cert_resolver(slot);
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The Namespace of a pod could not be read.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API answered with an error.
    #[error("cannot read namespace {0}")]
    Namespace(String, #[source] kube::Error),
    /// The API did not answer in time.
    #[error("reading namespace {0} timed out")]
    Timeout(String),
}

/// The webhook's state: the API client, what the patch adds, the series.
pub struct Injector {
    /// Reads Namespaces.
    pub client: kube::Client,
    /// Controller namespace, cluster domain, proxy image.
    pub params: Params,
    /// The outcome counter.
    pub metrics: InjectMetrics,
}

impl std::fmt::Debug for Injector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Injector")
            .field("params", &self.params)
            .finish()
    }
}

impl Injector {
    /// `{labels, annotations}` of Namespace `ns`.
    async fn namespace_meta(&self, ns: &str) -> Result<Value, Error> {
        let api: kube::Api<Namespace> = kube::Api::all(self.client.clone());
        let meta = tokio::time::timeout(NAMESPACE_TIMEOUT, api.get_metadata(ns))
            .await
            .map_err(|_| Error::Timeout(ns.into()))?
            .map_err(|e| Error::Namespace(ns.into(), e))?;
        Ok(json!({
            "labels": meta.metadata.labels.unwrap_or_default(),
            "annotations": meta.metadata.annotations.unwrap_or_default(),
        }))
    }

    /// Whether a pod skipped for `why` had asked to be meshed (itself, or
    /// its namespace): then the skip is recorded on it
    /// ([`patch::SKIPPED_ANNOTATION`]), as a user who asked expects to
    /// learn why. A skip the user chose (`disabled`), or of a pod nobody
    /// asked for, adds nothing.
    async fn asked(&self, pod: &Value, ns: &str, why: Skip) -> bool {
        match why {
            Skip::NotEnabled | Skip::Disabled | Skip::NamespaceUnavailable => false,
            Skip::KubeSystem | Skip::ControlPlane => patch::asks(pod),
            Skip::HostNetwork | Skip::AlreadyInjected => {
                patch::asks(pod)
                    || self
                        .namespace_meta(ns)
                        .await
                        .is_ok_and(|m| patch::namespace_decides(&m) == Decision::Inject)
            }
        }
    }

    /// Answers one AdmissionReview body: the response review, or `None`
    /// when it has no uid (HTTP 400). Counts the outcome.
    pub async fn review(&self, body: &[u8]) -> Option<Value> {
        let req = match review::parse(body) {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "malformed AdmissionReview: allowed unchanged");
                self.metrics.count("malformed");
                return match e {
                    review::Malformed::NoUid(_) => None,
                    review::Malformed::NotAPod { uid, .. } => Some(review::response(&uid, &[])),
                };
            }
        };
        let name = req.pod["metadata"]["name"]
            .as_str()
            .or_else(|| req.pod["metadata"]["generateName"].as_str())
            .unwrap_or("")
            .to_string();
        let mut decision = patch::decide(&req.pod, &req.namespace, &self.params.controller_ns);
        let mut ns_meta = None;
        if decision == Decision::AskNamespace {
            decision = match self.namespace_meta(&req.namespace).await {
                Ok(meta) => {
                    let d = patch::namespace_decides(&meta);
                    ns_meta = Some(meta);
                    d
                }
                Err(e) => {
                    tracing::warn!(error = %crate::error_chain(&e), pod = %format!("{}/{name}", req.namespace), "not injected");
                    Decision::Skip(Skip::NamespaceUnavailable)
                }
            };
        }
        let ops = match decision {
            Decision::Inject => {
                self.metrics.count("injected");
                tracing::info!(pod = %format!("{}/{name}", req.namespace), "injecting the proxy");
                // A pod that names no default inbound policy takes its
                // namespace's (read now if the injection did not need it);
                // unreadable: the cluster's, and a warning.
                if ns_meta.is_none() && !patch::names_inbound_policy(&req.pod) {
                    match self.namespace_meta(&req.namespace).await {
                        Ok(meta) => ns_meta = Some(meta),
                        Err(e) => {
                            tracing::warn!(error = %crate::error_chain(&e), pod = %format!("{}/{name}", req.namespace), "the cluster's default inbound policy applies")
                        }
                    }
                }
                patch::patch_in_namespace(&req.pod, &req.namespace, ns_meta.as_ref(), &self.params)
            }
            Decision::Skip(s) => {
                self.metrics.count(s.result());
                tracing::debug!(pod = %format!("{}/{name}", req.namespace), reason = s.result(), "not injected");
                if self.asked(&req.pod, &req.namespace, s).await {
                    patch::skipped(&req.pod, s)
                } else {
                    Vec::new()
                }
            }
            Decision::AskNamespace => Vec::new(),
        };
        Some(review::response(&req.uid, &ops))
    }
}

fn reply(status: StatusCode, body: Vec<u8>, json: bool) -> Response<crate::rest::Body> {
    let mut rsp = Response::new(crate::rest::Body::from(body));
    *rsp.status_mut() = status;
    let ct = if json {
        "application/json"
    } else {
        "text/plain; charset=utf-8"
    };
    rsp.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(ct),
    );
    rsp
}

async fn handle(
    injector: &Injector,
    req: http::Request<hyper::body::Incoming>,
) -> Response<crate::rest::Body> {
    if req.uri().path() != INJECT_PATH {
        return reply(StatusCode::NOT_FOUND, b"not found\n".to_vec(), false);
    }
    if req.method() != Method::POST {
        return reply(
            StatusCode::METHOD_NOT_ALLOWED,
            b"POST only\n".to_vec(),
            false,
        );
    }
    let body = match Limited::new(req.into_body(), MAX_REVIEW_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            injector.metrics.count("malformed");
            return reply(
                StatusCode::BAD_REQUEST,
                b"unreadable body\n".to_vec(),
                false,
            );
        }
    };
    match injector.review(&body).await {
        Some(v) => reply(
            StatusCode::OK,
            serde_json::to_vec(&v).unwrap_or_default(),
            true,
        ),
        None => reply(
            StatusCode::BAD_REQUEST,
            b"not an AdmissionReview with a request uid\n".to_vec(),
            false,
        ),
    }
}

/// Serves the webhook until `shutdown`; open connections finish their
/// request.
pub async fn serve(
    listener: TcpListener,
    tls: Arc<ServerConfig>,
    injector: Arc<Injector>,
    shutdown: CancellationToken,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    let tracker = TaskTracker::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "webhook accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let acceptor = acceptor.clone();
        let injector = injector.clone();
        let shutdown = shutdown.clone();
        tracker.spawn(async move {
            let tls =
                match tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await {
                    Ok(Ok(s)) => s,
                    Ok(Err(e)) => {
                        return tracing::debug!(%peer, error = %e, "webhook TLS handshake failed")
                    }
                    Err(_) => return tracing::debug!(%peer, "webhook TLS handshake timed out"),
                };
            let service = hyper::service::service_fn(move |req| {
                let injector = injector.clone();
                async move { Ok::<_, Infallible>(handle(&injector, req).await) }
            });
            let result = crate::rest::serve_http1(tls, service, &shutdown).await;
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "webhook connection failed");
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

#[cfg(test)]
mod tests {
    use super::patch::default_proxy_image;
    use super::*;
    use crate::kube::mock;
    use prometheus_client::registry::Registry as Prometheus;

    fn injector(client: kube::Client) -> Injector {
        let mut reg = Prometheus::default();
        Injector {
            client,
            params: Params {
                controller_ns: "pimesh".into(),
                cluster_domain: "cluster.local".into(),
                trust_domain: "cluster.local".into(),
                proxy_image: default_proxy_image(),
                native_sidecars: true,
                default_inbound_policy: Default::default(),
                cluster_networks: pimesh_api::policy::DEFAULT_CLUSTER_NETWORKS
                    .parse()
                    .unwrap(),
            },
            metrics: InjectMetrics::register(&mut reg),
        }
    }

    fn body(uid: &str, ns: &str, annotations: Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "apiVersion": review::API_VERSION, "kind": "AdmissionReview",
            "request": {"uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
                "namespace": ns, "operation": "CREATE",
                "object": {"metadata": {"name": "p", "annotations": annotations},
                           "spec": {"containers": [{"name": "app"}]}}}
        }))
        .unwrap()
    }

    fn count(i: &Injector, result: &'static str) -> u64 {
        i.metrics.get(result)
    }

    /// The namespace is read only when the pod does not decide, or names
    /// no default inbound policy; every outcome is counted; the uid comes
    /// back.
    #[tokio::test]
    async fn reviews_ask_the_namespace_only_when_needed_and_count() {
        let (client, mut server) = mock::client();
        let i = Arc::new(injector(client));
        let rsp = i
            .review(&body(
                "u1",
                "shop",
                json!({"pimesh.io/inject": "enabled", "config.pimesh.io/default-inbound-policy": "deny"}),
            ))
            .await
            .unwrap();
        assert_eq!(rsp["response"]["uid"], "u1");
        assert_eq!(rsp["response"]["patchType"], "JSONPatch");
        // Meshed, no policy of its own: the namespace's is read and used.
        let i2 = i.clone();
        let call = tokio::spawn(async move {
            i2.review(&body("u0", "shop", json!({"pimesh.io/inject": "enabled"})))
                .await
        });
        mock::expect(
            &mut server,
            "GET",
            "/api/v1/namespaces/shop",
            200,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop",
                "annotations": {"config.pimesh.io/default-inbound-policy": "cluster-authenticated"}}}),
        )
        .await;
        let rsp = call.await.unwrap().unwrap();
        assert_eq!(rsp["response"]["uid"], "u0");
        let i2 = i.clone();
        let call = tokio::spawn(async move { i2.review(&body("u2", "plain", json!({}))).await });
        mock::expect(
            &mut server,
            "GET",
            "/api/v1/namespaces/plain",
            200,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "plain"}}),
        )
        .await;
        let rsp = call.await.unwrap().unwrap();
        assert_eq!(rsp["response"], json!({"uid": "u2", "allowed": true}));
        let rsp = i.review(br#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"u3"}}"#).await;
        assert_eq!(
            rsp.unwrap()["response"],
            json!({"uid": "u3", "allowed": true})
        );
        assert!(i.review(b"garbage").await.is_none());
        assert_eq!(count(&i, "injected"), 2);
        assert_eq!(count(&i, "skipped_not_enabled"), 1);
        assert_eq!(count(&i, "malformed"), 2);
    }

    #[test]
    fn serving_names_include_a_specific_ip_only() {
        let (dns, ips) = serving_names("pimesh", "cluster.local", "0.0.0.0:8443".parse().unwrap());
        assert_eq!(
            dns,
            [
                "pimesh-controller.pimesh.svc",
                "pimesh-controller.pimesh.svc.cluster.local"
            ]
        );
        assert!(ips.is_empty());
        let (_, ips) = serving_names("pimesh", "cluster.local", "127.0.0.1:9".parse().unwrap());
        assert_eq!(ips, ["127.0.0.1".parse::<IpAddr>().unwrap()]);
    }
}
