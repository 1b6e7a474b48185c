//! Inbound authorization counters, named and labelled as linkerd2-proxy's
//! so that `linkerd viz authz`-style queries work:
//! `inbound_http_authz_allow_total`, `inbound_http_authz_deny_total` (per
//! request), `inbound_tcp_authz_allow_total`,
//! `inbound_tcp_authz_deny_total` (per opaque connection). A port a
//! `Server` selects labels `srv_group="policy.pimesh.io"`,
//! `srv_kind="server"`, `srv_name=<Server>`, and an allowed client
//! `authz_group="policy.pimesh.io"`, `authz_kind="authorizationpolicy"`,
//! `authz_name=<AuthorizationPolicy>` (or `authz_kind="default"`,
//! `authz_name=<accessPolicy>` when the Server's access policy admitted
//! it). Default policies label as Linkerd's default servers:
//! `srv_kind="default"`, `srv_name=<policy>`, `authz_kind="default"`,
//! `authz_name=<policy>`. HTTP series add the route: Linkerd's default
//! route (`route_group=""`, `route_kind="default"`, `route_name="default"`)
//! for a Server without routes, else the route the request matched
//! (`route_group="gateway.networking.k8s.io"`, `route_kind="HTTPRoute"` or
//! `"GRPCRoute"`, `route_name=<route>`); all the connection's
//! `target_addr`, `tls` and `client_id`. `inbound_http_route_not_found_total`
//! (linkerd2-proxy's) counts requests no route of their Server matched,
//! with the `srv_*` labels. `inbound_http_local_ratelimit_total` counts the
//! requests a rate limit refused, with the `srv_*` and route labels and
//! linkerd2-proxy's
//! `ratelimit_group="policy.pimesh.io"`,
//! `ratelimit_kind="HTTPLocalRateLimitPolicy"`, `ratelimit_name`,
//! `ratelimit_scope` (`total` or `identity`).

use super::labels::TargetLabels;
use crate::authz::Authz;
use pimesh_api::policy::inbound::{RouteKind, ServerKind, GATEWAY_GROUP, POLICY_GROUP};
use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::Arc;

/// Labels of one authorization series.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AuthzLabels {
    target: TargetLabels,
    /// `srv_kind`: a `Server`, or the default policy.
    srv_kind: ServerKind,
    /// `srv_name`.
    srv_name: Arc<str>,
    /// HTTP series carry the route labels: `None` the default route.
    route: Option<Option<(RouteKind, Arc<str>)>>,
    /// Allowed series carry the authorization labels: whether an
    /// AuthorizationPolicy (else the access policy) admitted, and its name.
    allowed: Option<(bool, Arc<str>)>,
}

impl EncodeLabelSet for AuthzLabels {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.target.encode(e)?;
        let (srv_group, srv_kind) = match self.srv_kind {
            ServerKind::Server => (POLICY_GROUP, "server"),
            ServerKind::Default => ("", "default"),
        };
        ("srv_group", srv_group).encode(e.encode_label())?;
        ("srv_kind", srv_kind).encode(e.encode_label())?;
        ("srv_name", &*self.srv_name).encode(e.encode_label())?;
        match &self.route {
            None => {}
            Some(None) => {
                ("route_group", "").encode(e.encode_label())?;
                ("route_kind", "default").encode(e.encode_label())?;
                ("route_name", "default").encode(e.encode_label())?;
            }
            Some(Some((kind, name))) => {
                ("route_group", GATEWAY_GROUP).encode(e.encode_label())?;
                ("route_kind", kind.as_str()).encode(e.encode_label())?;
                ("route_name", &**name).encode(e.encode_label())?;
            }
        }
        if let Some((by_policy, name)) = &self.allowed {
            let (group, kind) = if *by_policy {
                (POLICY_GROUP, "authorizationpolicy")
            } else {
                ("", "default")
            };
            ("authz_group", group).encode(e.encode_label())?;
            ("authz_kind", kind).encode(e.encode_label())?;
            ("authz_name", &**name).encode(e.encode_label())?;
        }
        Ok(())
    }
}

/// Labels of one rate-limit series: the server's, then the limit's.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RateLimitLabels {
    server: AuthzLabels,
    /// `ratelimit_name`.
    name: Arc<str>,
    /// `ratelimit_scope`.
    scope: &'static str,
}

impl EncodeLabelSet for RateLimitLabels {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.server.encode(e)?;
        ("ratelimit_group", POLICY_GROUP).encode(e.encode_label())?;
        ("ratelimit_kind", "HTTPLocalRateLimitPolicy").encode(e.encode_label())?;
        ("ratelimit_name", &*self.name).encode(e.encode_label())?;
        ("ratelimit_scope", self.scope).encode(e.encode_label())
    }
}

/// The four authorization families, the route-not-found one and the
/// rate-limit one.
#[derive(Debug, Default)]
pub struct AuthzMetrics {
    http_allow: Family<AuthzLabels, Counter>,
    http_deny: Family<AuthzLabels, Counter>,
    http_route_not_found: Family<AuthzLabels, Counter>,
    tcp_allow: Family<AuthzLabels, Counter>,
    tcp_deny: Family<AuthzLabels, Counter>,
    http_ratelimit: Family<RateLimitLabels, Counter>,
}

impl AuthzMetrics {
    pub(super) fn register(&self, r: &mut Registry) {
        r.register(
            "inbound_http_authz_allow",
            "Inbound HTTP requests authorized, by server and authorization",
            self.http_allow.clone(),
        );
        r.register(
            "inbound_http_authz_deny",
            "Inbound HTTP requests denied, by server",
            self.http_deny.clone(),
        );
        r.register(
            "inbound_http_route_not_found",
            "Inbound HTTP requests that could not be associated with a route, by server",
            self.http_route_not_found.clone(),
        );
        r.register(
            "inbound_tcp_authz_allow",
            "Inbound TCP connections authorized, by server and authorization",
            self.tcp_allow.clone(),
        );
        r.register(
            "inbound_tcp_authz_deny",
            "Inbound TCP connections denied, by server",
            self.tcp_deny.clone(),
        );
        r.register(
            "inbound_http_local_ratelimit",
            "Inbound HTTP requests refused by a local rate limit, by server and limit",
            self.http_ratelimit.clone(),
        );
    }

    /// Counts one HTTP request that `authz`'s server's rate limit refused
    /// for being over its `scope` limit (`total` or `identity`).
    pub fn record_rate_limited(&self, target: &TargetLabels, authz: &Authz, scope: &'static str) {
        let name = authz.server.rate_limit.as_ref().map(|r| r.name.clone());
        let labels = RateLimitLabels {
            server: AuthzLabels {
                allowed: None,
                ..Self::labels(target, authz, true)
            },
            name: name.unwrap_or_else(|| "".into()),
            scope,
        };
        self.http_ratelimit.get_or_create(&labels).inc();
    }

    /// Counts one HTTP request that no route of `authz`'s server matched.
    pub fn record_route_not_found(&self, target: &TargetLabels, authz: &Authz) {
        let labels = AuthzLabels {
            allowed: None,
            route: None,
            ..Self::labels(target, authz, false)
        };
        self.http_route_not_found.get_or_create(&labels).inc();
    }

    /// Counts one HTTP request (`http`) or one opaque connection by the
    /// verdict `authz`, on the connection labelled `target`.
    pub fn record(&self, target: &TargetLabels, authz: &Authz, http: bool) {
        self.family(http, authz.allowed)
            .get_or_create(&Self::labels(target, authz, http))
            .inc();
    }

    /// The counter [`AuthzMetrics::record`] increments for these labels, to
    /// keep for a connection whose requests all get the verdict `authz`.
    pub fn counter(&self, target: &TargetLabels, authz: &Authz, http: bool) -> Counter {
        self.family(http, authz.allowed)
            .get_or_create_owned(&Self::labels(target, authz, http))
    }

    fn labels(target: &TargetLabels, authz: &Authz, http: bool) -> AuthzLabels {
        let srv = &authz.server;
        let allowed = authz.allowed.then(|| match authz.authorization {
            Some(i) => (
                true,
                authz
                    .authorization_names()
                    .get(i)
                    .cloned()
                    .unwrap_or_else(|| "".into()),
            ),
            None => (false, srv.spec.access_policy.as_str().into()),
        });
        let route = http.then(|| authz.route_names().map(|r| (r.kind, r.name.clone())));
        AuthzLabels {
            target: target.clone(),
            srv_kind: srv.spec.kind,
            srv_name: srv.name.clone(),
            route,
            allowed,
        }
    }

    fn family(&self, http: bool, allowed: bool) -> &Family<AuthzLabels, Counter> {
        match (http, allowed) {
            (true, true) => &self.http_allow,
            (true, false) => &self.http_deny,
            (false, true) => &self.tcp_allow,
            (false, false) => &self.tcp_deny,
        }
    }
}
