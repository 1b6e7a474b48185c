//! The label sets of the proxy's series, encoded by hand so that optional
//! labels (`status_code`, `grpc_status`, `error`, `no_tls_reason`,
//! `client_id`/`server_id`) appear only when they have a value.

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use std::sync::Arc;

/// Which side of the pod a connection is on (`direction` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Traffic to the pod's app, accepted on the inbound listener.
    Inbound,
    /// Traffic from the pod's app, accepted on the outbound listener.
    Outbound,
}

impl Direction {
    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

/// `peer` label of TCP series: the accepted side (`src`) or the side the
/// proxy connected to (`dst`), as linkerd2-proxy's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Peer {
    /// The connection the proxy accepted.
    Src,
    /// The connection the proxy opened to the target.
    Dst,
}

/// TLS state of a connection: linkerd2-proxy's `tls` label, and its
/// `no_tls_reason` when there is no mesh identity.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Tls {
    /// No mTLS; the reason as linkerd2-proxy words it
    /// (`no_tls_from_remote` inbound, `not_provided_by_service_discovery` outbound).
    NoIdentity(&'static str),
    /// Mesh mTLS with a verified peer: `tls="true"` and the peer's identity
    /// (its DNS-style name) as `client_id` (inbound) or `server_id` (outbound).
    Established {
        /// Which side the peer is on.
        direction: Direction,
        /// The peer's identity name (bounded: interned).
        peer: Arc<str>,
    },
}

impl Tls {
    /// The state of plaintext traffic in `direction` before the mesh has identities.
    pub fn plaintext(direction: Direction) -> Tls {
        match direction {
            Direction::Inbound => Tls::NoIdentity("no_tls_from_remote"),
            Direction::Outbound => Tls::NoIdentity("not_provided_by_service_discovery"),
        }
    }

    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        match self {
            Tls::NoIdentity(reason) => {
                ("tls", "no_identity").encode(e.encode_label())?;
                ("no_tls_reason", *reason).encode(e.encode_label())
            }
            Tls::Established { direction, peer } => {
                ("tls", "true").encode(e.encode_label())?;
                let key = match direction {
                    Direction::Inbound => "client_id",
                    Direction::Outbound => "server_id",
                };
                (key, &**peer).encode(e.encode_label())
            }
        }
    }
}

/// Labels shared by every series of one connection's target.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TargetLabels {
    /// `direction`.
    pub direction: Direction,
    /// `target_addr`: `ip:port` the traffic is for (bounded).
    pub target_addr: Arc<str>,
    /// `tls` / `no_tls_reason`.
    pub tls: Tls,
    /// `dst_*` labels of an outbound endpoint known to discovery.
    pub dst: Option<Arc<DstLabels>>,
}

impl TargetLabels {
    pub(super) fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("direction", self.direction.as_str()).encode(e.encode_label())?;
        ("target_addr", &*self.target_addr).encode(e.encode_label())?;
        self.tls.encode(e)?;
        if let Some(dst) = &self.dst {
            dst.encode(e)?;
        }
        Ok(())
    }
}

/// Where outbound traffic went, from the endpoint's labels in discovery:
/// linkerd2-proxy's `dst_namespace`, `dst_service`, `dst_deployment`,
/// `dst_pod` (empty values are left out). Values are interned (bounded).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct DstLabels {
    /// `dst_namespace`.
    pub namespace: Arc<str>,
    /// `dst_service`.
    pub service: Arc<str>,
    /// `dst_deployment`.
    pub deployment: Arc<str>,
    /// `dst_pod`.
    pub pod: Arc<str>,
}

impl DstLabels {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        for (k, v) in [
            ("dst_namespace", &self.namespace),
            ("dst_service", &self.service),
            ("dst_deployment", &self.deployment),
            ("dst_pod", &self.pod),
        ] {
            if !v.is_empty() {
                (k, &**v).encode(e.encode_label())?;
            }
        }
        Ok(())
    }
}

/// Labels of the `tcp_*` series.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TcpLabels {
    /// Direction, target and TLS.
    pub target: TargetLabels,
    /// `peer`: `src` or `dst`.
    pub peer: Peer,
}

impl EncodeLabelSet for TcpLabels {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.target.encode(e)?;
        let peer = match self.peer {
            Peer::Src => "src",
            Peer::Dst => "dst",
        };
        ("peer", peer).encode(e.encode_label())
    }
}

/// `tcp_close_total` labels: [`TcpLabels`] plus `errno` (empty on a clean close).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct TcpCloseLabels {
    pub(super) tcp: TcpLabels,
    pub(super) errno: &'static str,
}

impl EncodeLabelSet for TcpCloseLabels {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.tcp.encode(e)?;
        ("errno", self.errno).encode(e.encode_label())
    }
}

/// `request_total` labels: target labels plus `authority` (bounded).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RequestLabels {
    /// Direction, target and TLS.
    pub target: TargetLabels,
    /// `authority`: the request's `Host` / `:authority`, or empty.
    pub authority: Arc<str>,
}

impl EncodeLabelSet for RequestLabels {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.target.encode(e)?;
        ("authority", &*self.authority).encode(e.encode_label())
    }
}

/// How a response counts, as linkerd2-proxy classifies: 5xx, a non-zero
/// `grpc-status`, or no response at all are failures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Classification {
    /// `classification="success"`.
    Success,
    /// `classification="failure"`.
    Failure,
}

/// `response_total` labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct ResponseLabels {
    pub(super) request: RequestLabels,
    pub(super) status_code: Option<u16>,
    pub(super) grpc_status: Option<u32>,
    pub(super) classification: Classification,
    pub(super) error: &'static str,
}

impl EncodeLabelSet for ResponseLabels {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.request.encode(e)?;
        if let Some(code) = self.status_code {
            ("status_code", code as u64).encode(e.encode_label())?;
        }
        if let Some(code) = self.grpc_status {
            ("grpc_status", code as u64).encode(e.encode_label())?;
        }
        let class = match self.classification {
            Classification::Success => "success",
            Classification::Failure => "failure",
        };
        ("classification", class).encode(e.encode_label())?;
        if !self.error.is_empty() {
            ("error", self.error).encode(e.encode_label())?;
        }
        Ok(())
    }
}

/// `response_latency_ms` labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct LatencyLabels {
    pub(super) request: RequestLabels,
    pub(super) status_code: Option<u16>,
}

impl EncodeLabelSet for LatencyLabels {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        self.request.encode(e)?;
        if let Some(code) = self.status_code {
            ("status_code", code as u64).encode(e.encode_label())?;
        }
        Ok(())
    }
}

/// Labels of the per-direction error counters: just `error`.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct ErrorLabels {
    pub(super) error: &'static str,
}

impl EncodeLabelSet for ErrorLabels {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        ("error", self.error).encode(e.encode_label())
    }
}

/// `identity_cert_renewals_total` labels.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct RenewalLabels {
    pub(super) error: &'static str,
}

impl EncodeLabelSet for RenewalLabels {
    fn encode(&self, e: &mut LabelSetEncoder) -> Result<(), std::fmt::Error> {
        let result = if self.error.is_empty() {
            "success"
        } else {
            "failure"
        };
        ("result", result).encode(e.encode_label())?;
        if !self.error.is_empty() {
            ("error", self.error).encode(e.encode_label())?;
        }
        Ok(())
    }
}
