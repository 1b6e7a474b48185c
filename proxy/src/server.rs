//! Accept: the listeners and the first steps of each accepted connection —
//! find its target (`SO_ORIGINAL_DST`, the configured inbound target, or
//! explicit proxy mode), detect its protocol (`detect`), and hand it to
//! `inbound` or `outbound`.
//! Shutdown: stop accepting, let HTTP connections finish gracefully, give
//! everything the grace period, then return.

use crate::config::{Config, TcpUpstream};
use crate::connect::pool::{Clients, Http1Pool, SharedH2Pool};
use crate::connect::tcp::Dialer;
use crate::ctx::Ctx;
use crate::detect::{self, Protocol};
use crate::discovery::{self, Discovery};
use crate::io::PrefixedIo;
use crate::metrics::{Direction, Metrics};
use crate::target::Target;
use crate::tls::CredentialStore;
use crate::{admin, forward, inbound, outbound, tap};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The three bound listeners. Binding is separate from serving so that
/// callers (tests, the binary's log line) learn the actual ports.
#[derive(Debug)]
pub struct Listeners {
    /// Inbound: connections redirected to the pod's ports.
    pub inbound: TcpListener,
    /// Outbound: the app's connections (transparent or explicit proxy).
    pub outbound: TcpListener,
    /// Admin: metrics, probes, shutdown, log level.
    pub admin: TcpListener,
    /// `PIMESH_PROXY_TCP_UPSTREAMS`: local listeners for named services.
    pub tcp_upstreams: Vec<(TcpUpstream, TcpListener)>,
    /// Tap (with an identity only): request metadata for the controller.
    pub tap: Option<TcpListener>,
}

impl Listeners {
    /// Binds the configured addresses (port 0 picks a free port).
    ///
    /// # Errors
    ///
    /// The address and the OS error of the first bind that fails.
    pub async fn bind(config: &Config) -> Result<Listeners, BindError> {
        let bind = |addr: SocketAddr| async move {
            TcpListener::bind(addr)
                .await
                .map_err(|source| BindError { addr, source })
        };
        let mut tcp_upstreams = Vec::new();
        for up in &config.outbound.tcp_upstreams {
            tcp_upstreams.push((up.clone(), bind(up.listen).await?));
        }
        Ok(Listeners {
            inbound: bind(config.inbound_addr).await?,
            outbound: bind(config.outbound_addr).await?,
            admin: bind(config.admin_addr).await?,
            tcp_upstreams,
            tap: match &config.identity {
                Some(id) => Some(bind(id.tap_addr).await?),
                None => None,
            },
        })
    }
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Serves until `shutdown` is cancelled (by the caller, a signal handler or
/// `POST /shutdown`), then drains for at most the grace period.
pub async fn run(
    config: Config,
    listeners: Listeners,
    log: admin::LogHandle,
    shutdown: CancellationToken,
) {
    let metrics = Arc::new(Metrics::new(&config.workload_labels));
    let grace = config.shutdown_grace_period;
    let creds = Arc::new(CredentialStore::default());
    let mut client = None;
    if let Some(id) = config.identity.clone() {
        client = Some(Arc::new(discovery::Client::new(id.clone(), creds.clone())));
        tokio::spawn(crate::identity::run(
            id,
            creds.clone(),
            metrics.clone(),
            shutdown.clone(),
        ));
    }
    // Watches end with `shutdown`; registration is withdrawn at shutdown
    // and must finish before draining, so it gets its own token.
    let discovery = client.as_ref().map(|c| {
        Arc::new(Discovery::new(
            c.clone(),
            &config,
            metrics.clone(),
            shutdown.clone(),
        ))
    });
    let listening = discovery::register::Listening {
        inbound: listeners
            .inbound
            .local_addr()
            .unwrap_or(config.inbound_addr),
        admin: listeners.admin.local_addr().unwrap_or(config.admin_addr),
        tap: listeners.tap.as_ref().and_then(|l| l.local_addr().ok()),
    };
    let inbound_policies = Arc::new(crate::authz::InboundPolicies::new(
        config.inbound_default_policy,
    ));
    if let Some(c) = &client {
        tokio::spawn(discovery::policy::run(
            c.clone(),
            config.pod_labels.clone(),
            config.pod_ports.clone(),
            inbound_policies.clone(),
            shutdown.clone(),
        ));
    }
    let tracker = TaskTracker::new();
    let ctx = Arc::new(Ctx {
        clients: Clients {
            dialer: Dialer {
                timeout: config.connect_timeout,
                metrics: metrics.clone(),
                creds: creds.clone(),
            },
            tracker: tracker.clone(),
            h1: Http1Pool::default(),
            h2: SharedH2Pool::default(),
            mesh: SharedH2Pool::default(),
        },
        config,
        metrics,
        shutdown: shutdown.clone(),
        tracker,
        creds,
        discovery,
        inbound_policies,
    });
    let registration = client.map(|c| {
        let ctx = ctx.clone();
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            discovery::register::run(c, &ctx.config, &ctx.metrics, listening, shutdown).await
        })
    });
    let admin_state = Arc::new(admin::Admin {
        metrics: ctx.metrics.clone(),
        shutdown: ctx.shutdown.clone(),
        creds: ctx.config.identity.as_ref().map(|_| ctx.creds.clone()),
    });
    let admin = tokio::spawn(admin::serve(listeners.admin, admin_state, log));
    for (up, l) in listeners.tcp_upstreams {
        tracing::info!(listen = %up.listen, service = %up.service, port = up.port, "TCP upstream listening");
        tokio::spawn(outbound::tcp::serve_upstream(ctx.clone(), l, up));
    }
    let tap = match (listeners.tap, &ctx.config.identity) {
        (Some(l), Some(id)) => {
            let state = Arc::new(tap::Tap {
                metrics: ctx.metrics.clone(),
                creds: ctx.creds.clone(),
                controller: id.controller_identity.clone(),
                shutdown: ctx.shutdown.clone(),
            });
            Some(tokio::spawn(tap::serve(l, state)))
        }
        _ => None,
    };
    tokio::join!(
        accept_loop(ctx.clone(), Direction::Inbound, listeners.inbound),
        accept_loop(ctx.clone(), Direction::Outbound, listeners.outbound),
    );
    if let Some(r) = registration {
        // Deregistration is bounded inside; this only guards against a hang.
        let _ = tokio::time::timeout(Duration::from_secs(5), r).await;
    }
    // Idle pooled connections would keep the drain waiting for the grace period.
    ctx.clients.clear();
    ctx.tracker.close();
    let open = ctx.tracker.len();
    tracing::info!(open, grace = ?grace, "shutting down: draining connections");
    if tokio::time::timeout(grace, ctx.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            open = ctx.tracker.len(),
            "grace period over; closing remaining connections"
        );
    }
    admin.abort();
    if let Some(tap) = tap {
        tap.abort();
    }
}

async fn accept_loop(ctx: Arc<Ctx>, direction: Direction, listener: TcpListener) {
    let limit = Arc::new(Semaphore::new(ctx.config.max_connections));
    loop {
        let accepted = tokio::select! {
            biased;
            _ = ctx.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(%e, ?direction, "accept failed");
                ctx.metrics.accept_error(direction, "accept");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(permit) = limit.clone().try_acquire_owned() else {
            ctx.metrics.accept_error(direction, "connection_limit");
            tracing::debug!(%peer, ?direction, "connection limit reached; closing");
            drop(stream);
            continue;
        };
        let ctx2 = ctx.clone();
        ctx.tracker.spawn(async move {
            serve_connection(ctx2, direction, stream).await;
            drop(permit);
        });
    }
}

async fn serve_connection(ctx: Arc<Ctx>, direction: Direction, mut stream: TcpStream) {
    let _ = stream.set_nodelay(true);
    let Ok(local) = stream.local_addr() else {
        return;
    };
    let orig_dst = crate::orig_dst::original_dst(&stream)
        .ok()
        .filter(|dst| *dst != local);
    let target = match (direction, orig_dst) {
        (Direction::Inbound, Some(dst)) => {
            Target::Fixed(SocketAddr::from((Ipv4Addr::LOCALHOST, dst.port())))
        }
        (Direction::Inbound, None) => match ctx.config.inbound_target {
            Some(t) => Target::Fixed(t),
            None => {
                ctx.metrics.accept_error(direction, "no_target");
                tracing::info!(
                    "inbound connection without original destination and no PIMESH_PROXY_INBOUND_TARGET; closing"
                );
                return;
            }
        },
        (Direction::Outbound, Some(dst)) => Target::Fixed(dst),
        (Direction::Outbound, None) => Target::Explicit(local),
    };
    let label_addr = match target {
        Target::Fixed(t) => orig_dst.unwrap_or(t),
        Target::Explicit(local) => local,
    };
    let opaque_port = match target {
        Target::Fixed(_) => ctx.config.is_opaque_port(label_addr.port()),
        Target::Explicit(_) => false,
    };
    let cfg = &ctx.config;
    let (protocol, prefix) = if opaque_port {
        (Protocol::Opaque, bytes::BytesMut::new())
    } else {
        // Boxed: its timer and buffer are gone once it has decided, so that
        // a parked connection's task holds only what it still needs.
        let detect = detect::detect(&mut stream, cfg.detect_buffer_bytes, cfg.detect_timeout);
        match Box::pin(detect).await {
            Ok(d) => {
                if let Some(reason) = d.fallback.filter(|r| *r != "detect_eof") {
                    ctx.metrics.accept_error(direction, reason);
                }
                (d.protocol, d.buffered)
            }
            Err(e) => {
                tracing::debug!(%e, "connection failed during detection");
                ctx.metrics.accept_error(direction, "io");
                return;
            }
        }
    };
    // Boxed: once it returns, its states are freed; an HTTP/1 connection
    // parked between requests then costs this task only `resume`'s state.
    let parked = match direction {
        Direction::Inbound => {
            Box::pin(inbound::serve(
                ctx, stream, prefix, protocol, target, label_addr,
            ))
            .await
        }
        Direction::Outbound => {
            let io = PrefixedIo::new(prefix.freeze(), stream);
            Box::pin(outbound::serve(ctx, io, protocol, target, label_addr)).await
        }
    };
    if let Some(parked) = parked {
        forward::resume(parked).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The size of the futures `f` returns, without making one.
    fn future_size<A, B, C, F: std::future::Future>(_: fn(A, B, C) -> F) -> usize {
        std::mem::size_of::<F>()
    }

    /// A connection's task is this future (and its permit): what an idle
    /// HTTP/1 connection keeps while parked (`forward::resume` inline, the
    /// rest boxed and freed by then), besides its socket and service.
    #[test]
    fn a_connection_task_is_small() {
        let task = future_size(serve_connection);
        let parked = std::mem::size_of::<forward::ParkedTcp>();
        println!("serve_connection: {task} bytes, ParkedTcp: {parked} bytes");
        assert!(task <= 1024, "serve_connection's future is {task} bytes");
    }
}
