//! Endpoint selection: power of two choices (p2c) over peak-EWMA load, as
//! linkerd2-proxy's balancer, with weights and circuit breaking.
//!
//! The load of each endpoint is tower's [`PeakEwma`] (the `load` feature:
//! RTT estimate with peak sensitivity, times requests in flight). The p2c
//! itself is ours, not tower's `balance::p2c::Balance`, because: that one
//! is a `Service` driven through `&mut self` (sharing it between
//! connections needs a `Buffer`: a task and a channel hop per request),
//! it has no weights, and an endpoint that is not ready makes it queue
//! rather than fail fast when all are ejected. Here the balancer is an
//! immutable snapshot shared by every connection (rebuilt when discovery
//! changes the endpoint set, endpoint state carried over); a pick locks
//! two small mutexes and allocates nothing. Weights are respected by
//! drawing the two candidates with probability proportional to weight.
//!
//! Per request for HTTP (the load handle is held until the response head),
//! per connection for TCP (held until connected; open connections are
//! compared first, see [`Balancer::pick_connection`]).

pub mod breaker;
pub(crate) mod random;

use crate::config::MeshDestination;
use crate::metrics::TargetLabels;
use breaker::{Admit, Breaker};
pub use random::{random_fraction, random_u64};
use std::convert::Infallible;
use std::future::Ready;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::time::Instant;
use tower::load::completion::TrackCompletion;
use tower::load::peak_ewma::{Cost, Handle, PeakEwma};
use tower::load::Load;
use tower::Service;

/// RTT assumed for an endpoint before its first response (linkerd2-proxy's 30 ms).
pub const DEFAULT_RTT: Duration = Duration::from_millis(30);
/// How fast the RTT estimate forgets (linkerd2-proxy's 10 s).
pub const DECAY: Duration = Duration::from_secs(10);

/// Why no endpoint was picked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PickError {
    /// The service has no endpoints.
    #[error("the service has no endpoints")]
    NoEndpoints,
    /// Every endpoint is ejected by circuit breaking.
    #[error("every endpoint is ejected by circuit breaking")]
    AllEjected,
}

/// One endpoint of a service and its state, kept across discovery updates.
pub struct Endpoint {
    /// The app's address (`Endpoint::addr` in discovery; `target_addr`).
    pub addr: SocketAddr,
    /// Where to connect: the peer proxy's inbound listener or `addr`.
    pub connect: SocketAddr,
    /// mTLS settings when the endpoint has a mesh identity; `None`: plaintext.
    pub mesh: Option<MeshDestination>,
    /// Relative weight.
    pub weight: u32,
    /// Metric labels of traffic to it (`target_addr`, `tls`, `dst_*`),
    /// built once so that requests do not format them.
    pub labels: TargetLabels,
    /// Consecutive-failure circuit breaker.
    pub breaker: Breaker,
    load: Mutex<PeakEwma<Idle, KeepHandle>>,
    /// Open TCP connections to it ([`Endpoint::open_connection`]).
    open: AtomicUsize,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("connect", &self.connect)
            .field("weight", &self.weight)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// A new endpoint with an empty load history and a closed breaker.
    pub fn new(
        addr: SocketAddr,
        mesh: Option<MeshDestination>,
        weight: u32,
        labels: TargetLabels,
        breaker: breaker::Params,
    ) -> Endpoint {
        Endpoint {
            addr,
            connect: mesh.as_ref().map_or(addr, |m| m.proxy_addr),
            mesh,
            weight,
            labels,
            breaker: Breaker::new(breaker),
            load: Mutex::new(PeakEwma::new(
                Idle,
                DEFAULT_RTT,
                DECAY.as_nanos() as f64,
                KeepHandle,
            )),
            open: AtomicUsize::new(0),
        }
    }

    /// Counts an open TCP connection until the guard is dropped.
    pub fn open_connection(self: &Arc<Self>) -> OpenConnection {
        self.open.fetch_add(1, Ordering::Relaxed);
        OpenConnection(self.clone())
    }

    fn cost(&self) -> Cost {
        self.load.lock().unwrap_or_else(|e| e.into_inner()).load()
    }

    fn track(&self) -> Handle {
        use futures_util::FutureExt;
        let mut load = self.load.lock().unwrap_or_else(|e| e.into_inner());
        match load.call(()).now_or_never() {
            Some(Ok(handle)) => handle,
            // `Idle` answers at once and never fails.
            Some(Err(never)) => match never {},
            None => unreachable!("Idle is always ready"),
        }
    }
}

/// An open TCP connection to an endpoint, counted while it lives.
#[derive(Debug)]
pub struct OpenConnection(Arc<Endpoint>);

impl OpenConnection {
    #[cfg(test)]
    fn endpoint_for_test(&self) -> &Endpoint {
        &self.0
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The inner service of the load tracker: requests go elsewhere (hyper
/// connections), the tracker only measures them.
#[derive(Debug, Clone, Copy)]
struct Idle;

impl Service<()> for Idle {
    type Response = ();
    type Error = Infallible;
    type Future = Ready<Result<(), Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: ()) -> Self::Future {
        std::future::ready(Ok(()))
    }
}

/// Hands the load handle to the caller, who drops it when the response
/// head (HTTP) or the connection (TCP) is there.
#[derive(Debug, Clone, Copy)]
struct KeepHandle;

impl TrackCompletion<Handle, ()> for KeepHandle {
    type Output = Handle;

    fn track_completion(&self, handle: Handle, _: ()) -> Handle {
        handle
    }
}

/// A picked endpoint. Its load counts one more request until
/// [`Picked::responded`] or drop; the breaker learns the outcome from
/// [`Picked::success`] / [`Picked::failure`].
#[derive(Debug)]
pub struct Picked {
    /// The endpoint.
    pub endpoint: Arc<Endpoint>,
    /// This request probes an ejected endpoint.
    pub probe: bool,
    load: Option<Handle>,
    settled: bool,
}

impl Picked {
    /// The response head (or the connection) is there: the RTT sample ends.
    pub fn responded(&mut self) {
        self.load = None;
    }

    /// The exchange succeeded; returns a breaker transition to count.
    pub fn success(mut self) -> Option<breaker::Transition> {
        self.settled = true;
        self.endpoint.breaker.success()
    }

    /// The exchange failed; returns a breaker transition to count.
    pub fn failure(mut self) -> Option<breaker::Transition> {
        self.settled = true;
        self.endpoint.breaker.failure(Instant::now())
    }
}

impl Drop for Picked {
    fn drop(&mut self) {
        // A probe that never got an outcome (the client went away) must not
        // leave the endpoint waiting for one forever: probe again.
        if self.probe && !self.settled {
            self.endpoint.breaker.abandon_probe();
        }
    }
}

/// An immutable set of endpoints to pick from.
#[derive(Debug, Default)]
pub struct Balancer {
    endpoints: Vec<Arc<Endpoint>>,
    /// Running sums of the weights, for weighted draws.
    cumulative: Vec<u64>,
}

impl Balancer {
    /// A balancer over `endpoints` (weight-0 endpoints are never drawn
    /// unless all weights are 0, which counts as equal weights).
    pub fn new(endpoints: Vec<Arc<Endpoint>>) -> Balancer {
        let all_zero = endpoints.iter().all(|e| e.weight == 0);
        let mut sum = 0u64;
        let cumulative = endpoints
            .iter()
            .map(|e| {
                sum += if all_zero { 1 } else { u64::from(e.weight) };
                sum
            })
            .collect();
        Balancer {
            endpoints,
            cumulative,
        }
    }

    /// The endpoints.
    pub fn endpoints(&self) -> &[Arc<Endpoint>] {
        &self.endpoints
    }

    fn draw(&self) -> usize {
        let total = *self.cumulative.last().unwrap_or(&1);
        let r = random_u64() % total;
        self.cumulative.partition_point(|c| *c <= r)
    }

    /// Picks an endpoint for an HTTP request: two weighted draws, the
    /// available one with the lower peak-EWMA load wins; `avoid` (the
    /// endpoint a retry follows) is skipped when another is available.
    /// When neither draw is available, the cheapest available endpoint.
    ///
    /// # Errors
    ///
    /// No endpoints, or every endpoint ejected (fail fast).
    pub fn pick(&self, avoid: Option<&Arc<Endpoint>>) -> Result<Picked, PickError> {
        self.pick_by(avoid, |e| (0, e.cost()))
    }

    /// Picks an endpoint for a TCP connection: as [`Balancer::pick`], but
    /// the endpoint with fewer open connections wins, then the one with
    /// the lower load (connect latency, connects in progress): the load
    /// handle of a connection ends once it is established, so latency
    /// alone would send every sequential connection to the same endpoint.
    ///
    /// # Errors
    ///
    /// As [`Balancer::pick`]: no endpoints, or all ejected.
    pub fn pick_connection(&self, avoid: Option<&Arc<Endpoint>>) -> Result<Picked, PickError> {
        self.pick_by(avoid, |e| (e.open.load(Ordering::Relaxed), e.cost()))
    }

    fn pick_by(
        &self,
        avoid: Option<&Arc<Endpoint>>,
        cost: impl Fn(&Endpoint) -> (usize, Cost),
    ) -> Result<Picked, PickError> {
        let n = self.endpoints.len();
        if n == 0 {
            return Err(PickError::NoEndpoints);
        }
        let a = self.draw();
        let mut b = a;
        for _ in 0..3 {
            if b != a || n == 1 {
                break;
            }
            b = self.draw();
        }
        let avoided = |i: usize| avoid.is_some_and(|x| Arc::ptr_eq(x, &self.endpoints[i]));
        let usable = |i: usize| self.endpoints[i].breaker.available();
        let choice = match (usable(a), usable(b)) {
            (true, true) if a != b => {
                if avoided(a) {
                    Some(b)
                } else if avoided(b) {
                    Some(a)
                } else if cost(&self.endpoints[b]) < cost(&self.endpoints[a]) {
                    Some(b)
                } else {
                    Some(a)
                }
            }
            (true, _) if !avoided(a) => Some(a),
            (_, true) if !avoided(b) => Some(b),
            _ => None,
        };
        if let Some(i) = choice {
            if let Some(p) = self.admit(i) {
                return Ok(p);
            }
        }
        // Rare: both draws ejected (or avoided): the cheapest available.
        let mut best: Option<(usize, (usize, Cost))> = None;
        for (i, e) in self.endpoints.iter().enumerate() {
            if !e.breaker.available() || (avoided(i) && n > 1) {
                continue;
            }
            let c = cost(e);
            if best.is_none_or(|(_, b)| c < b) {
                best = Some((i, c));
            }
        }
        if let Some(p) = best.and_then(|(i, _)| self.admit(i)) {
            return Ok(p);
        }
        // Only the avoided endpoint is left: better than failing.
        if let Some(i) = (0..n).find(|i| avoided(*i)) {
            if let Some(p) = self.admit(i) {
                return Ok(p);
            }
        }
        Err(PickError::AllEjected)
    }

    fn admit(&self, i: usize) -> Option<Picked> {
        let endpoint = &self.endpoints[i];
        let probe = match endpoint.breaker.admit() {
            Admit::Yes => false,
            Admit::Probe => true,
            Admit::No => return None,
        };
        Some(Picked {
            load: Some(endpoint.track()),
            endpoint: endpoint.clone(),
            probe,
            settled: false,
        })
    }
}

#[cfg(test)]
mod tests;
