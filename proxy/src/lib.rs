//! `pimesh-proxy`: pimesh's sidecar data plane. One process per meshed pod
//! with an inbound listener (4143), an outbound listener (4140, also an
//! explicit HTTP proxy) and an admin listener (4191); see ARCHITECTURE.md.
//!
//! Layout, in the order a connection meets it:
//! - `server`: accept — listeners, limits, target, detection, shutdown.
//! - `detect`: protocol detection on the first bytes.
//! - `inbound`: identity requirement, SNI, mesh mTLS termination, then the
//!   port's policy's verdict (`authz`, a leaf: the streamed `Server` or the
//!   default policy).
//! - `ratelimit`: local rate limits (a leaf: GCRA buckets per Server).
//! - `outbound`: outbound connections; `route`, `balanced`, `retry`,
//!   `loop_guard`, balanced `tcp`, `dst`, `policy`.
//! - `forward`: a known connection served as HTTP or TCP until idle.
//! - `http`: HTTP/1 and HTTP/2 proxying; `forward` (one request out),
//!   `orig_proto`, `replay`, `headers`, `body`, `error`.
//! - `tcp`: opaque TCP forwarding with half-close.
//! - `connect`: `tcp` (plain), `mtls` (to peer proxies), `pool` (HTTP clients).
//! - `ctx`: the handles connection tasks share; `target`: where one goes.
//! - `discovery`: the controller's watch API (resolution), registration and
//!   the inbound-policy stream (`policy`).
//! - `balance`: p2c over peak-EWMA load, weights, circuit breaking.
//! - `io`: replay of detection bytes, byte counting, splice, idle.
//! - `metrics`: Linkerd-compatible series.
//! - `identity`: the certificate from the controller, renewed.
//! - `tls`: mesh TLS configurations, peer identities, SNI.
//! - `admin`: `/metrics`, `/ready`, `/live`, `/shutdown`, `/proxy-log-level`.
//! - `tap`: live request metadata for the controller.
//! - `config`: the one `Config`, parsed from `PIMESH_PROXY_*` variables.
//! - `orig_dst`: `SO_ORIGINAL_DST` of redirected connections.
//! - `init`: `pimesh-proxy init`, the iptables redirection.
//! - `await_ready`: `pimesh-proxy await`, the postStart wait for `/ready`.

pub mod admin;
pub mod authz;
pub mod await_ready;
pub mod balance;
pub mod config;
pub mod connect;
pub mod ctx;
pub mod detect;
pub mod discovery;
pub mod forward;
pub mod http;
pub mod identity;
pub mod inbound;
pub mod init;
pub mod io;
pub mod metrics;
pub mod orig_dst;
pub mod outbound;
pub mod ratelimit;
pub mod server;
pub mod tap;
pub mod target;
pub mod tcp;
pub mod tls;

pub use pimesh_api::text::error_chain;
