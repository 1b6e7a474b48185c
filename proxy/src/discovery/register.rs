//! Registration of the pod's endpoint (`PIMESH_PROXY_SERVICE`): `PUT
//! /v1/discovery/endpoints` with the join token, renewed every third of
//! the lease, retried with backoff while the controller is away (the proxy
//! keeps serving), and `DELETE`d on graceful shutdown so that clients stop
//! picking the endpoint before it drains.

use super::client::{read_limited, Client, Error};
use crate::config::Config;
use crate::metrics::Metrics;
use bytes::Bytes;
use pimesh_api::discovery::{Lease, ProtocolHint, Registration, DEFAULT_PORT, ENDPOINTS_PATH};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// First retry after a failed registration; doubles up to [`MAX_BACKOFF`].
const MIN_BACKOFF: Duration = Duration::from_millis(500);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// Limit on one registration exchange, and on the deregistration at shutdown.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
const DEREGISTER_TIMEOUT: Duration = Duration::from_secs(2);

/// The listeners' actual addresses (port 0 resolved).
#[derive(Debug, Clone, Copy)]
pub struct Listening {
    /// The inbound listener.
    pub inbound: SocketAddr,
    /// The admin listener.
    pub admin: SocketAddr,
    /// The tap listener, when there is one.
    pub tap: Option<SocketAddr>,
}

/// Keeps the registration alive until `shutdown`, then deregisters.
pub async fn run(
    client: Arc<Client>,
    config: &Config,
    metrics: &Metrics,
    listening: Listening,
    shutdown: CancellationToken,
) {
    let Some((service, port)) = config.outbound.service.clone() else {
        return;
    };
    let port = port
        .or(config.inbound_target.map(|t| t.port()))
        .unwrap_or(DEFAULT_PORT);
    let mut backoff = MIN_BACKOFF;
    let mut registered: Option<Registration> = None;
    loop {
        let attempt = async {
            let reg = registration(&client, config, &service, port, listening).await?;
            let lease = put(&client, &reg).await?;
            Ok::<_, Error>((reg, lease))
        };
        let wait = match tokio::time::timeout(REQUEST_TIMEOUT, attempt).await {
            Ok(Ok((reg, lease))) => {
                metrics.outbound().registration("success");
                if registered.as_ref() != Some(&reg) {
                    tracing::info!(service, addr = %reg.addr, proxy_addr = ?reg.proxy_addr, ttl_secs = lease.ttl_secs, "registered");
                }
                registered = Some(reg);
                backoff = MIN_BACKOFF;
                Duration::from_secs(lease.ttl_secs.max(3) / 3)
            }
            failed => {
                let e = failed.unwrap_or(Err(Error::Timeout)).unwrap_err();
                metrics.outbound().registration(e.label());
                let level_info = !matches!(e, Error::NoIdentity);
                if level_info {
                    tracing::warn!(service, error = %crate::error_chain(&e), retry_in = ?backoff, "cannot register; retrying");
                }
                let wait = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                if matches!(e, Error::NoIdentity) {
                    Duration::from_millis(200)
                } else {
                    wait
                }
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = shutdown.cancelled() => break,
        }
    }
    if let Some(reg) = registered {
        let body = serde_json::to_vec(&reg).unwrap_or_default();
        let delete = client.send(http::Method::DELETE, ENDPOINTS_PATH, Bytes::from(body));
        match tokio::time::timeout(DEREGISTER_TIMEOUT, delete).await {
            Ok(Ok(_)) => tracing::info!(service, "deregistered"),
            Ok(Err(e)) => {
                tracing::warn!(service, error = %crate::error_chain(&e), "cannot deregister")
            }
            Err(_) => tracing::warn!(service, "deregistration timed out"),
        }
    }
}

/// The registration as of now (the token is read again each time: it may rotate).
async fn registration(
    client: &Client,
    config: &Config,
    service: &str,
    port: u16,
    listening: Listening,
) -> Result<Registration, Error> {
    let token = std::fs::read_to_string(&client.config().token_file)
        .map_err(|e| Error::Invalid(format!("cannot read the token file: {e}")))?;
    let ip: IpAddr = match config.outbound.advertise_ip {
        Some(ip) => ip,
        None => client.local_ip().await?,
    };
    let advertised = |a: SocketAddr| {
        if a.ip().is_unspecified() {
            SocketAddr::new(ip, a.port())
        } else {
            a
        }
    };
    Ok(Registration {
        token: token.trim().to_string(),
        service: service.to_string(),
        port,
        addr: SocketAddr::new(ip, port),
        // Without redirection clients must dial the inbound listener.
        proxy_addr: config.inbound_target.map(|_| advertised(listening.inbound)),
        admin_addr: Some(advertised(listening.admin)),
        tap_addr: listening.tap.map(advertised),
        protocol: ProtocolHint::Unknown,
        labels: config.workload_labels.iter().cloned().collect(),
    })
}

async fn put(client: &Client, reg: &Registration) -> Result<Lease, Error> {
    let body = serde_json::to_vec(reg).map_err(|e| Error::Invalid(e.to_string()))?;
    let rsp = client
        .send(http::Method::PUT, ENDPOINTS_PATH, Bytes::from(body))
        .await?;
    let bytes = read_limited(rsp.into_body(), 64 * 1024).await?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Invalid(e.to_string()))
}
