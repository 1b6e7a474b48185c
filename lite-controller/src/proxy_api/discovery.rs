//! The discovery API on the proxy port: endpoint registration with the join
//! token (`PUT`/`DELETE` `ENDPOINTS_PATH`) and watches (`GET`
//! `WATCH_PATH`, client certificate required). Every outcome is counted
//! (`pimesh_controller_registrations_total`, `..._registration_refused_total{reason}`,
//! `..._watch_refused_total{reason}`, `..._watches`).

use crate::identity::now_unix;
use crate::registry::metrics::DiscoveryMetrics;
use crate::registry::watch::WatchBody;
use crate::registry::{self, watch, Registry};
use crate::rest::{self, Body};
use crate::token::{self, Tokens};
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Either;
use hyper::body::Incoming;
use pimesh_api::discovery::{Lease, Registration};
use pimesh_api::identity::Identity;
use prometheus_client::metrics::gauge::Gauge;
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// What the discovery API uses; `server` builds it.
pub struct Ctx {
    /// The service registry: registrations, leases, watch streams.
    pub registry: Arc<Registry>,
    /// Join tokens: a registration's token is checked as certify checks it.
    pub tokens: Arc<Tokens>,
    /// Watch streams still allowed (`--max-watches` in all).
    pub watch_slots: Arc<Semaphore>,
    /// The discovery role's series.
    pub metrics: DiscoveryMetrics,
    /// The policy resources of either source (sled, or the watched
    /// resources in Kubernetes mode): the `HTTPRoute`s a watched
    /// service's resolution carries.
    pub policies: crate::policy::snapshot::Snapshots,
}

/// A response: a complete body, or a watch stream (the proxy port's
/// `ProxyBody`).
type ProxyBody = Either<Body, WatchBody>;

/// Why a registration was refused.
#[derive(Debug, thiserror::Error)]
enum Refused {
    #[error(transparent)]
    Token(#[from] token::Error),
    #[error("the token only allows registering service {allowed:?}")]
    ServiceNotAllowed { allowed: String },
    #[error(transparent)]
    Registry(#[from] registry::Error),
}

impl Refused {
    fn status_code(&self) -> (u16, &'static str) {
        match self {
            Refused::Token(token::Error::Refused(r)) => (r.status(), r.code()),
            Refused::Token(_) => (500, "internal"),
            Refused::ServiceNotAllowed { .. } => (403, "service_not_allowed"),
            Refused::Registry(e) => (e.status(), e.code()),
        }
    }
}

/// `PUT` (register or renew) or, with `deregister`, `DELETE` a
/// [`Registration`]: the token is checked as certify checks it, its
/// identity is the endpoint's and its namespace the service's; a token
/// made with `--service NAME` registers only NAME. Answers a [`Lease`]
/// (`ttl_secs` 0 for a deregistration).
pub async fn register(
    ctx: &Arc<Ctx>,
    req: Request<Incoming>,
    deregister: bool,
) -> Response<ProxyBody> {
    let m = &ctx.metrics;
    let reg: Registration = match rest::read_json(req).await {
        Ok(r) => r,
        Err(e) => {
            m.registration_refused(e.code());
            return e.response().map(Either::Left);
        }
    };
    if let Err(e) = ctx.registry.standalone_only("endpoint registration") {
        m.registration_refused(e.code());
        let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::CONFLICT);
        return rest::error(status, e.code(), e.to_string()).map(Either::Left);
    }
    let c = ctx.clone();
    let result = tokio::task::spawn_blocking(move || -> Result<Lease, Refused> {
        registry::validate::label("service", &reg.service).map_err(registry::Error::from)?;
        let record = c.tokens.check(&reg.token, now_unix())?;
        if let Some(allowed) = record.service.filter(|s| *s != reg.service) {
            return Err(Refused::ServiceNotAllowed { allowed });
        }
        if deregister {
            let revision = c.registry.deregister(&reg, &record.identity)?;
            tracing::info!(identity = %record.identity, service = %reg.service, port = reg.port, addr = %reg.addr, "deregistered");
            Ok(Lease {
                ttl_secs: 0,
                revision,
            })
        } else {
            Ok(c.registry
                .register(&reg, &record.identity, &record.id, Instant::now())?)
        }
    })
    .await;
    let rsp = match result {
        Ok(Ok(lease)) => {
            if deregister {
                m.deregistrations.inc();
            } else {
                m.registrations.inc();
            }
            rest::json(StatusCode::OK, &lease)
        }
        Ok(Err(e)) => {
            let (status, code) = e.status_code();
            m.registration_refused(code);
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
            if status.is_server_error() {
                tracing::error!(error = %crate::error_chain(&e), "registration failed");
                rest::error(
                    status,
                    code,
                    "the controller cannot register now; see its log",
                )
            } else {
                tracing::info!(reason = code, "registration refused");
                rest::error(status, code, crate::error_chain(&e))
            }
        }
        Err(e) => {
            m.registration_refused("internal");
            tracing::error!(error = %e, "registration task failed");
            rest::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    };
    rsp.map(Either::Left)
}

/// `GET WATCH_PATH?name=…|addr=…[&revision=N]`: 401 without a client
/// certificate of the mesh, 400 for a bad query, 503 over `--max-watches`;
/// else an `application/x-ndjson` stream that ends when `stop` is cancelled.
pub fn watch(
    ctx: &Arc<Ctx>,
    req: &Request<Incoming>,
    peer: Option<&Identity>,
    stop: CancellationToken,
) -> Response<ProxyBody> {
    let m = &ctx.metrics;
    let Some(peer) = peer else {
        m.watch_refused("unauthenticated");
        return rest::error(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            "watches need a client certificate of the mesh (certify first, then present it)",
        )
        .map(Either::Left);
    };
    let query = match watch::Query::parse(req.uri().query(), peer.namespace()) {
        Ok(q) => q,
        Err(e) => {
            m.watch_refused("bad_request");
            return rest::error(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
                .map(Either::Left);
        }
    };
    let Ok(permit) = ctx.watch_slots.clone().try_acquire_owned() else {
        m.watch_refused("too_many_watches");
        tracing::warn!("watch limit reached; refusing a watch");
        return rest::error(
            StatusCode::SERVICE_UNAVAILABLE,
            "too_many_watches",
            "the controller serves no more watches now (--max-watches); retry later",
        )
        .map(Either::Left);
    };
    tracing::debug!(peer = %peer, query = ?query, "watch");
    let gauge = OpenWatch::new(m.watches.clone());
    let events = ctx.metrics.clone();
    let routes = watch::Routes {
        changes: ctx.policies.subscribe(),
        of: |s: &crate::policy::snapshot::Snapshot, ns, name, port| {
            crate::policy::outbound::routes_for(&s.resources, ns, name, port)
        },
    };
    let body = watch::spawn(
        ctx.registry.clone(),
        routes,
        query,
        stop,
        Arc::new(move |kind| events.watch_event(kind)),
        (permit, gauge),
    );
    let mut rsp = Response::new(Either::Right(body));
    rsp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-ndjson"),
    );
    rsp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    rsp
}

/// Counts an open watch in the gauge for as long as it lives.
struct OpenWatch(Gauge);

impl OpenWatch {
    fn new(g: Gauge) -> OpenWatch {
        g.inc();
        OpenWatch(g)
    }
}

impl Drop for OpenWatch {
    fn drop(&mut self) {
        self.0.dec();
    }
}
