//! Inbound authorization counters, named and labelled as linkerd2-proxy's
//! so that `linkerd viz authz`-style queries work:
//! `inbound_http_authz_allow_total`, `inbound_http_authz_deny_total` (per
//! request), `inbound_tcp_authz_allow_total`,
//! `inbound_tcp_authz_deny_total` (per opaque connection). Default
//! policies label as Linkerd's default servers: `srv_kind="default"`,
//! `srv_name=<policy>`, `authz_kind="default"`, `authz_name=<policy>`,
//! `route_kind="default"`, `route_name="default"`; plus the connection's
//! `target_addr`, `tls` and `client_id`.

use super::labels::TargetLabels;
use crate::authz::Authz;
use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

/// Labels of one authorization series.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct AuthzLabels {
    target: TargetLabels,
    policy: &'static str,
    /// HTTP series carry the route labels.
    http: bool,
    /// Allowed series carry the authorization labels.
    allowed: bool,
}

impl EncodeLabelSet for AuthzLabels {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.target.encode(e)?;
        ("srv_group", "").encode(e.encode_label())?;
        ("srv_kind", "default").encode(e.encode_label())?;
        ("srv_name", self.policy).encode(e.encode_label())?;
        if self.http {
            ("route_group", "").encode(e.encode_label())?;
            ("route_kind", "default").encode(e.encode_label())?;
            ("route_name", "default").encode(e.encode_label())?;
        }
        if self.allowed {
            ("authz_group", "").encode(e.encode_label())?;
            ("authz_kind", "default").encode(e.encode_label())?;
            ("authz_name", self.policy).encode(e.encode_label())?;
        }
        Ok(())
    }
}

/// The four authorization families.
#[derive(Debug, Default)]
pub struct AuthzMetrics {
    http_allow: Family<AuthzLabels, Counter>,
    http_deny: Family<AuthzLabels, Counter>,
    tcp_allow: Family<AuthzLabels, Counter>,
    tcp_deny: Family<AuthzLabels, Counter>,
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
            "inbound_tcp_authz_allow",
            "Inbound TCP connections authorized, by server and authorization",
            self.tcp_allow.clone(),
        );
        r.register(
            "inbound_tcp_authz_deny",
            "Inbound TCP connections denied, by server",
            self.tcp_deny.clone(),
        );
    }

    /// Counts one HTTP request (`http`) or one opaque connection by the
    /// verdict `authz`, on the connection labelled `target`.
    pub fn record(&self, target: &TargetLabels, authz: Authz, http: bool) {
        self.family(http, authz.allowed)
            .get_or_create(&Self::labels(target, authz, http))
            .inc();
    }

    /// The counter [`AuthzMetrics::record`] increments for these labels, to
    /// keep for a connection whose requests all get the verdict `authz`.
    pub fn counter(&self, target: &TargetLabels, authz: Authz, http: bool) -> Counter {
        self.family(http, authz.allowed)
            .get_or_create_owned(&Self::labels(target, authz, http))
    }

    fn labels(target: &TargetLabels, authz: Authz, http: bool) -> AuthzLabels {
        AuthzLabels {
            target: target.clone(),
            policy: authz.policy.as_str(),
            http,
            allowed: authz.allowed,
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
