//! The handles every connection task shares, built once by `server::run`:
//! configuration, metrics, shutdown, the connect step's clients and the
//! resolver. It holds only what comes after it in the flow (connect,
//! discovery) and leaves (config, metrics, tls).

use crate::authz::InboundPolicies;
use crate::config::Config;
use crate::connect::pool::Clients;
use crate::discovery::Discovery;
use crate::metrics::Metrics;
use crate::tls::CredentialStore;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// What every connection task shares.
#[derive(Debug)]
pub struct Ctx {
    /// The start-up configuration.
    pub config: Config,
    /// Where every connection and request is counted.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the proxy should drain and exit.
    pub shutdown: CancellationToken,
    /// Every connection task, so that shutdown can wait for them.
    pub tracker: TaskTracker,
    /// The proxy's certificate, once the controller issued one: inbound
    /// mTLS terminates with it.
    pub creds: Arc<CredentialStore>,
    /// Connections to targets, endpoints and peer proxies (plain and mTLS,
    /// pooled HTTP/1 and HTTP/2).
    pub clients: Clients,
    /// The resolver of outbound destinations; `None` without a controller.
    pub discovery: Option<Arc<Discovery>>,
    /// The policy of each inbound port: streamed by the controller, else
    /// the default policy.
    pub inbound_policies: Arc<InboundPolicies>,
}
