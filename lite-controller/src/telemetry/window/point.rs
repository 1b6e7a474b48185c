//! What the in-memory series hold: one [`Point`] per target per successful
//! scrape, one [`EdgePoint`] per edge and one [`AuthzPoint`] per
//! (server, route, authorization), kept for [`RETENTION_MS`] (a leaf,
//! so that the packed ring can name them without importing the windows).

use crate::telemetry::parse::BOUNDS_MS;

/// How long points are kept in memory, milliseconds.
pub const RETENTION_MS: u64 = 3600 * 1000;

/// Deltas of one target between two successful scrapes (golden metrics of
/// its inbound side).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Point {
    /// When the later scrape answered, Unix milliseconds.
    pub at_ms: u64,
    /// Milliseconds since the previous successful scrape: the time the
    /// deltas cover.
    pub dt_ms: u64,
    /// `request_total` delta.
    pub requests: u64,
    /// `response_total{classification="success"}` delta.
    pub successes: u64,
    /// `response_total{classification="failure"}` delta.
    pub failures: u64,
    /// Responses per latency bucket (not cumulative), over [`BOUNDS_MS`].
    pub buckets: [u32; BOUNDS_MS.len()],
    /// Open client connections at the scrape (a gauge).
    pub tcp_open: u64,
    /// Bytes read from clients.
    pub read_bytes: u64,
    /// Bytes written to clients.
    pub write_bytes: u64,
}

/// Deltas of one edge (a peer of one target) between two scrapes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EdgePoint {
    /// As [`Point::at_ms`].
    pub at_ms: u64,
    /// As [`Point::dt_ms`].
    pub dt_ms: u64,
    /// Requests.
    pub requests: u64,
    /// Successful responses.
    pub successes: u64,
    /// Failed responses.
    pub failures: u64,
}

/// Deltas of one (server, route, authorization) of a target between two
/// scrapes: `inbound_{http,tcp}_authz_{allow,deny}_total` increases.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuthzPoint {
    /// As [`Point::at_ms`].
    pub at_ms: u64,
    /// As [`Point::dt_ms`].
    pub dt_ms: u64,
    /// Requests (HTTP) or connections (TCP) allowed.
    pub allowed: u64,
    /// Requests or connections denied.
    pub denied: u64,
}
