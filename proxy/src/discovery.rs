//! The discovery client: resolves destinations (service names and
//! `ip:port`s) through the controller's watch API and registers the
//! service this pod serves (api `discovery`).
//!
//! One watch per distinct destination, shared by every connection,
//! started on first use and closed after an idle period; the number of
//! watches is bounded. A watch keeps its last state while the controller
//! is unreachable and resumes from its last revision when it is back.
//! The first request to a destination waits (bounded) for the first answer.
//!
//! Layout: `client` (the mTLS HTTP/2 connection to the controller),
//! `watch` (one destination's watch loop), `register` (registration with
//! a lease, renewed, and deregistration on shutdown).

pub mod client;
pub mod register;
mod watch;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::outbound::{Dst, DstBuilder};
use pimesh_api::discovery::{ServiceName, WATCH_PATH};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch as channel;
use tokio_util::sync::CancellationToken;

pub use client::Client;

/// A destination as the watch API resolves it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DstKey {
    /// A service name and port (`?name=NAME.NS:PORT`).
    Name(ServiceName, u16),
    /// An address, e.g. a transparent connection's original destination (`?addr=`).
    Addr(SocketAddr),
}

impl DstKey {
    /// The watch path and query, resuming after `revision`.
    fn query(&self, revision: Option<u64>) -> String {
        let mut q = match self {
            DstKey::Name(n, port) => format!("{WATCH_PATH}?name={n}:{port}"),
            // IPv6 brackets percent-encoded (RFC 3986 query characters).
            DstKey::Addr(a) => format!(
                "{WATCH_PATH}?addr={}",
                a.to_string().replace('[', "%5B").replace(']', "%5D")
            ),
        };
        if let Some(r) = revision {
            q.push_str(&format!("&revision={r}"));
        }
        q
    }
}

impl fmt::Display for DstKey {
    /// `web.shop:80` or `10.0.0.1:80`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DstKey::Name(n, port) => write!(f, "{n}:{port}"),
            DstKey::Addr(a) => write!(f, "{a}"),
        }
    }
}

/// What a destination resolves to now.
#[derive(Debug, Clone)]
pub enum Resolved {
    /// The controller answered; `Dst::exists` says whether it is a service.
    Answered(Arc<Dst>),
    /// No answer (yet): the controller is unreachable, or the watch could
    /// not be started (the reason is a metric label).
    Unavailable(&'static str),
}

/// One destination's watch, as requests see it.
struct Watch {
    rx: channel::Receiver<Option<Arc<Dst>>>,
    /// Milliseconds since [`Discovery::epoch`] of the last use, for the idle expiry.
    last_used: AtomicU64,
    /// A request already waited for the first answer in vain: later ones
    /// do not wait again (a controller that is away must not slow every
    /// connection down by the wait).
    waited: AtomicBool,
}

/// The resolver shared by every connection.
pub struct Discovery {
    client: Arc<Client>,
    builder: DstBuilder,
    watches: Mutex<HashMap<DstKey, Arc<Watch>>>,
    wait: Duration,
    idle: Duration,
    max_watches: usize,
    epoch: Instant,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
}

impl fmt::Debug for Discovery {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Discovery")
            .field("max_watches", &self.max_watches)
            .finish_non_exhaustive()
    }
}

impl Discovery {
    /// A resolver using `client`; watches end at `shutdown`.
    pub fn new(
        client: Arc<Client>,
        config: &Config,
        metrics: Arc<Metrics>,
        shutdown: CancellationToken,
    ) -> Discovery {
        let o = &config.outbound;
        Discovery {
            builder: DstBuilder::new(config, metrics.clone()),
            client,
            watches: Mutex::new(HashMap::new()),
            wait: o.discovery_wait,
            idle: o.discovery_idle_timeout,
            max_watches: o.discovery_max_watches,
            epoch: Instant::now(),
            metrics,
            shutdown,
        }
    }

    /// The namespace bare names resolve in (the proxy's identity's).
    pub fn namespace(&self) -> &str {
        self.client.config().identity.namespace()
    }

    /// The cluster domain of fully-qualified names.
    pub fn cluster_domain(&self) -> &str {
        &self.builder.cluster_domain
    }

    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Resolves `key`: the watch's current state, or, on first use, its
    /// first answer within the configured wait.
    pub async fn resolve(self: &Arc<Self>, key: &DstKey) -> Resolved {
        let Some(w) = self.watch(key) else {
            return Resolved::Unavailable("discovery_limit");
        };
        w.last_used.store(self.now_ms(), Ordering::Relaxed);
        if let Some(dst) = w.rx.borrow().as_ref() {
            return Resolved::Answered(dst.clone());
        }
        if w.waited.load(Ordering::Relaxed) {
            return Resolved::Unavailable("discovery_unavailable");
        }
        let mut rx = w.rx.clone();
        let answered = tokio::time::timeout(self.wait, rx.wait_for(Option::is_some))
            .await
            .is_ok();
        if !answered {
            w.waited.store(true, Ordering::Relaxed);
        }
        let current = rx.borrow().clone();
        match current {
            Some(dst) => Resolved::Answered(dst),
            None => Resolved::Unavailable("discovery_unavailable"),
        }
    }

    /// The watch of `key`, started if there is none; `None` over the limit.
    fn watch(self: &Arc<Self>, key: &DstKey) -> Option<Arc<Watch>> {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(w) = watches.get(key) {
            return Some(w.clone());
        }
        if watches.len() >= self.max_watches || self.shutdown.is_cancelled() {
            return None;
        }
        let (tx, rx) = channel::channel(None);
        let w = Arc::new(Watch {
            rx,
            last_used: AtomicU64::new(self.now_ms()),
            waited: AtomicBool::new(false),
        });
        watches.insert(key.clone(), w.clone());
        tokio::spawn(watch::run(self.clone(), key.clone(), w.clone(), tx));
        Some(w)
    }

    /// When `w` expires if nobody uses it, and whether it has.
    fn idle_deadline(&self, w: &Watch) -> (tokio::time::Instant, bool) {
        let last = w.last_used.load(Ordering::Relaxed);
        let expires_ms = last.saturating_add(self.idle.as_millis() as u64);
        let now = self.now_ms();
        let left = Duration::from_millis(expires_ms.saturating_sub(now));
        (tokio::time::Instant::now() + left, now >= expires_ms)
    }

    /// Forgets `key`'s watch if it is still `w` (its task ended).
    fn remove(&self, key: &DstKey, w: &Arc<Watch>) {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        if watches.get(key).is_some_and(|x| Arc::ptr_eq(x, w)) {
            watches.remove(key);
        }
    }
}
