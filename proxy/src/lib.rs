//! `pimesh-proxy`: pimesh's sidecar data plane. One process per meshed pod
//! with an inbound listener (4143), an outbound listener (4140, also an
//! explicit HTTP proxy) and an admin listener (4191); see ARCHITECTURE.md.
//!
//! Layout:
//! - `config`: the one `Config`, parsed from `PIMESH_PROXY_*` variables.
//! - `server`: listeners, per-connection dispatch, limits, shutdown.
//! - `init`: `pimesh-proxy init`, the iptables redirection.
//! - `await_ready`: `pimesh-proxy await`, the postStart wait for `/ready`.
//! - `orig_dst`: `SO_ORIGINAL_DST` of redirected connections.
//! - `detect`: protocol detection on the first bytes.
//! - `http`: HTTP/1 and HTTP/2 proxying (upgrades, CONNECT, trailers).
//! - `tcp`: opaque TCP forwarding with half-close.
//! - `mesh`: mTLS between proxies (inbound termination, outbound origination).
//! - `discovery`: the controller's watch API (resolution) and registration.
//! - `outbound`: routing with discovery, policies, retries' bodies, balanced TCP.
//! - `balance`: p2c over peak-EWMA load, weights, circuit breaking.
//! - `io`: replay of detection bytes and byte counting.
//! - `metrics`: Linkerd-compatible series.
//! - `identity`: the certificate from the controller, renewed.
//! - `tls`: mesh TLS configurations, peer identities, SNI.
//! - `admin`: `/metrics`, `/ready`, `/live`, `/shutdown`, `/proxy-log-level`.

pub mod admin;
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
pub mod server;
pub mod tap;
pub mod target;
pub mod tcp;
pub mod tls;

pub use pimesh_api::text::error_chain;
