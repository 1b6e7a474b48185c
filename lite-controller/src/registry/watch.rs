//! Watch streams (`GET /v1/discovery/watch`): what a query names
//! ([`Destination`]), and the NDJSON stream of `WatchEvent`s for it.
//!
//! Each watch is a task that re-resolves its destination whenever the
//! registry revision changes (a `tokio::sync::watch` channel: only the
//! latest revision is kept) and sends an event when the resolution
//! differs from the last one sent. It hands lines to the response body
//! through a one-slot channel, and hyper only asks the body for more when
//! the HTTP/2 flow-control window has room, so a slow watcher holds at most
//! one pending line and one window: intermediate states are skipped, never
//! queued. Every [`BOOKMARK_INTERVAL`] without an event a `BOOKMARK` goes
//! out (after a re-resolve, so that its revision never claims a change
//! that was not sent).
//!
//! A known service's resolution also carries its outbound routes
//! ([`Routes`]: the `HTTPRoute`s whose parent it is); a change of them
//! re-resolves the watch as a registry change does. Route changes do not
//! move the registry revision, so a watch resumed for a service that has
//! routes always gets its whole state (`MODIFIED`), never a `BOOKMARK`
//! (and a proxy holding routes resumes without a revision, so that it
//! learns of routes removed while it was away).

use super::model::key;
use super::Registry;
use bytes::Bytes;
use hyper::body::{Body, Frame, SizeHint};
use pimesh_api::discovery::route::HttpRoute;
use pimesh_api::discovery::{
    EventType, Resolution, ServiceName, WatchEvent, DEFAULT_CLUSTER_DOMAIN, DEFAULT_PORT,
};
use pimesh_api::query::percent_decode;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Longest quiet time on a stream: a `BOOKMARK` is sent after it (the
/// API promises one at least every 15 s).
pub const BOOKMARK_INTERVAL: Duration =
    Duration::from_secs(pimesh_api::discovery::BOOKMARK_INTERVAL_SECS);

/// What a watch resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    /// A service name and port.
    Name {
        /// `name.namespace`.
        service: ServiceName,
        /// The service port.
        port: u16,
    },
    /// An `ip:port` that may be an endpoint's `addr` or `proxy_addr`.
    Addr(SocketAddr),
}

/// A watch query: the destination and the revision to resume from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// What to resolve.
    pub destination: Destination,
    /// The last revision the caller saw, if resuming.
    pub revision: Option<u64>,
}

/// A destination's state at one revision (see [`Registry::resolve`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    /// What the watch sends.
    pub resolution: Resolution,
    /// The registry revision it is consistent with.
    pub revision: u64,
    /// The revision of the destination's last change (≤ `revision`); a
    /// watch resuming from `N ≥ modified` has nothing to catch up on.
    pub modified: u64,
}

impl Registry {
    /// The state of `dest` now. A name resolves when the service exists
    /// and has the port; an address when an endpoint has it as `addr` or
    /// `proxy_addr` (the first such service in key order), to that
    /// endpoint's service and port.
    pub fn resolve(&self, dest: &Destination) -> Snapshot {
        let st = self.read();
        let (resolution, modified) = match dest {
            Destination::Name { service, port } => {
                let k = key(&service.namespace, &service.name);
                match st.services.get(&k).filter(|s| s.ports.contains(port)) {
                    Some(s) => (s.resolution(*port, &self.cluster_domain), s.revision),
                    None => (
                        Resolution {
                            exists: false,
                            service: Some(service.fqdn(&self.cluster_domain)),
                            port: *port,
                            ..Resolution::default()
                        },
                        st.revision,
                    ),
                }
            }
            Destination::Addr(a) => {
                let found = st.services.values().find_map(|s| {
                    s.endpoints
                        .iter()
                        .find(|e| e.addr == *a || e.proxy_addr == Some(*a))
                        .map(|e| (s, e.port))
                });
                // Kubernetes mode: a Service's ClusterIP and port.
                let found = found.or_else(|| {
                    st.services
                        .values()
                        .find(|s| s.cluster_ips.contains(&a.ip()) && s.ports.contains(&a.port()))
                        .map(|s| (s, a.port()))
                });
                match found {
                    Some((s, port)) => (
                        s.resolution(port, &self.cluster_domain),
                        s.revision.max(st.addr_revision),
                    ),
                    None => (
                        Resolution {
                            exists: false,
                            port: a.port(),
                            ..Resolution::default()
                        },
                        st.revision,
                    ),
                }
            }
        };
        Snapshot {
            resolution,
            revision: st.revision,
            modified,
        }
    }
}

/// A query that cannot be used (HTTP 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct BadQuery(pub String);

impl Query {
    /// Parses `name=NAME[:PORT]` or `addr=IP:PORT`, and optional
    /// `revision=N`, from a URL query (percent-encoded or not). A bare name
    /// is in `namespace`; a missing port is 80.
    ///
    /// # Errors
    ///
    /// [`BadQuery`]: bad percent-encoding, an unknown or repeated parameter,
    /// not exactly one of `name=` and `addr=`, a bad name, port, address or
    /// revision.
    pub fn parse(query: Option<&str>, namespace: &str) -> Result<Query, BadQuery> {
        let (mut name, mut addr, mut revision) = (None, None, None);
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let v = percent_decode(v).ok_or_else(|| BadQuery(format!("bad encoding of {k}")))?;
            let slot = match k {
                "name" => &mut name,
                "addr" => &mut addr,
                "revision" => &mut revision,
                _ => return Err(BadQuery(format!("unknown parameter {k:?}"))),
            };
            if slot.replace(v).is_some() {
                return Err(BadQuery(format!("{k} given twice")));
            }
        }
        let destination = match (name, addr) {
            (Some(n), None) => {
                let (host, port) = match n.rsplit_once(':') {
                    Some((h, p)) => (
                        h,
                        p.parse::<u16>()
                            .ok()
                            .filter(|p| *p != 0)
                            .ok_or_else(|| BadQuery(format!("{p:?} is not a port")))?,
                    ),
                    None => (n.as_str(), DEFAULT_PORT),
                };
                let service = ServiceName::parse(host, namespace, DEFAULT_CLUSTER_DOMAIN)
                    .map_err(|e| BadQuery(e.to_string()))?;
                Destination::Name { service, port }
            }
            (None, Some(a)) => Destination::Addr(
                a.parse()
                    .map_err(|_| BadQuery(format!("{a:?} is not an IP:PORT address")))?,
            ),
            _ => return Err(BadQuery("give exactly one of name= and addr=".into())),
        };
        let revision = revision
            .map(|r| {
                r.parse::<u64>()
                    .map_err(|_| BadQuery(format!("{r:?} is not a revision")))
            })
            .transpose()?;
        Ok(Query {
            destination,
            revision,
        })
    }
}

/// The first event of a stream: the state (`ADDED`, or `DELETED` for an
/// unknown destination); when resuming from `N`, a `BOOKMARK` if the
/// destination has not changed since `N`, else `MODIFIED`.
pub fn first_event(snap: &Snapshot, resume: Option<u64>) -> WatchEvent {
    let kind = match (snap.resolution.exists, resume) {
        (false, _) => EventType::Deleted,
        (true, None) => EventType::Added,
        (true, Some(n)) if snap.modified <= n && n <= snap.revision => EventType::Bookmark,
        (true, Some(_)) => EventType::Modified,
    };
    event(kind, snap)
}

/// The event for a change from `last` to `snap`, if it changed.
pub fn next_event(last: &Resolution, snap: &Snapshot) -> Option<WatchEvent> {
    if *last == snap.resolution {
        return None;
    }
    let kind = match (last.exists, snap.resolution.exists) {
        (false, true) => EventType::Added,
        (true, true) => EventType::Modified,
        (_, false) => EventType::Deleted,
    };
    Some(event(kind, snap))
}

fn event(kind: EventType, snap: &Snapshot) -> WatchEvent {
    WatchEvent {
        kind,
        revision: snap.revision,
        object: (kind != EventType::Bookmark).then(|| snap.resolution.clone()),
    }
}

/// One NDJSON line.
fn line(ev: &WatchEvent) -> Bytes {
    let mut v = serde_json::to_vec(ev).unwrap_or_default();
    v.push(b'\n');
    Bytes::from(v)
}

/// Where watches find a service's outbound routes, and learn that they
/// changed: the latest `T` (the stored policy resources) and the routes
/// of service `(namespace, name, port)` in it.
pub struct Routes<T> {
    /// The latest resources; a change re-resolves every watch.
    pub changes: tokio::sync::watch::Receiver<T>,
    /// The routes of a service in them.
    pub of: fn(&T, &str, &str, u16) -> Vec<HttpRoute>,
}

impl<T> Routes<T> {
    /// `snap` with the routes of its service, if it is a known one.
    fn attach(&self, mut snap: Snapshot) -> Snapshot {
        let r = &snap.resolution;
        let Some(fqdn) = r.service.as_deref().filter(|_| r.exists) else {
            return snap;
        };
        let mut parts = fqdn.split('.');
        let (name, ns) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
        let routes = (self.of)(&self.changes.borrow(), ns, name, r.port);
        if !routes.is_empty() {
            snap.modified = snap.revision;
            snap.resolution.routes = routes;
        }
        snap
    }
}

/// Called for every event sent (metrics), with its type.
pub type OnEvent = Arc<dyn Fn(EventType) + Send + Sync>;

/// Starts the watch of `query` and returns the response body. The stream
/// ends cleanly when `stop` is cancelled (shutdown, connection age), and
/// the task ends when the client goes away. `guard` is dropped with the
/// task (a concurrency permit, an open-watch gauge).
pub fn spawn<G: Send + 'static, T: Send + Sync + 'static>(
    registry: Arc<Registry>,
    mut routes: Routes<T>,
    query: Query,
    stop: CancellationToken,
    on_event: OnEvent,
    guard: G,
) -> WatchBody {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        let _guard = guard;
        let mut changes = registry.subscribe();
        changes.borrow_and_update();
        routes.changes.borrow_and_update();
        let snap = routes.attach(registry.resolve(&query.destination));
        let first = first_event(&snap, query.revision);
        on_event(first.kind);
        if tx.send(line(&first)).await.is_err() {
            return;
        }
        let mut last = snap.resolution;
        let mut quiet = tokio::time::interval_at(
            tokio::time::Instant::now() + BOOKMARK_INTERVAL,
            BOOKMARK_INTERVAL,
        );
        loop {
            let bookmark = tokio::select! {
                _ = stop.cancelled() => return,
                _ = tx.closed() => return,
                r = changes.changed() => {
                    if r.is_err() {
                        return;
                    }
                    changes.borrow_and_update();
                    false
                }
                r = routes.changes.changed() => {
                    if r.is_err() {
                        return;
                    }
                    routes.changes.borrow_and_update();
                    false
                }
                _ = quiet.tick() => true,
            };
            let snap = routes.attach(registry.resolve(&query.destination));
            let ev = match next_event(&last, &snap) {
                Some(ev) => ev,
                None if bookmark => event(EventType::Bookmark, &snap),
                None => continue,
            };
            on_event(ev.kind);
            if tx.send(line(&ev)).await.is_err() {
                return;
            }
            if ev.kind != EventType::Bookmark {
                last = snap.resolution;
            }
            quiet.reset();
        }
    });
    WatchBody { rx }
}

/// The body of a watch response: lines from the watch task; ends when the
/// task does.
#[derive(Debug)]
pub struct WatchBody {
    rx: mpsc::Receiver<Bytes>,
}

impl WatchBody {
    /// The body of another stream fed the same way (the inbound-policy
    /// stream): each message of `rx` one data frame.
    pub fn new(rx: mpsc::Receiver<Bytes>) -> WatchBody {
        WatchBody { rx }
    }
}

impl Body for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.rx.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(s: &str) -> Result<Query, BadQuery> {
        Query::parse(Some(s), "shop")
    }

    fn name(n: &str, ns: &str, port: u16) -> Destination {
        Destination::Name {
            service: ServiceName {
                name: n.into(),
                namespace: ns.into(),
            },
            port,
        }
    }

    #[test]
    fn queries() {
        for (s, dest) in [
            ("name=web", name("web", "shop", 80)),
            ("name=web:8080", name("web", "shop", 8080)),
            ("name=web.other", name("web", "other", 80)),
            ("name=web.other.svc:81", name("web", "other", 81)),
            (
                "name=web.other.svc.cluster.local:82",
                name("web", "other", 82),
            ),
            (
                "name=web.other.svc.cluster.local%3A83",
                name("web", "other", 83),
            ),
            (
                "addr=10.0.0.1:80",
                Destination::Addr("10.0.0.1:80".parse().unwrap()),
            ),
            (
                "addr=%5B%3A%3A1%5D%3A80",
                Destination::Addr("[::1]:80".parse().unwrap()),
            ),
        ] {
            assert_eq!(q(s).unwrap().destination, dest, "{s}");
        }
        assert_eq!(q("name=web&revision=7").unwrap().revision, Some(7));
        for bad in [
            "",
            "name=web&addr=10.0.0.1:80",
            "name=web:0",
            "name=web:x",
            "name=web.example.com",
            "name=10.0.0.1",
            "addr=web:80",
            "addr=10.0.0.1",
            "name=web&revision=-1",
            "name=web&name=db",
            "name=web&x=1",
            "name=%zz",
        ] {
            assert!(q(bad).is_err(), "{bad}");
        }
        assert!(Query::parse(None, "shop").is_err());
    }

    #[test]
    fn first_and_next_events() {
        let known = Resolution {
            exists: true,
            port: 80,
            ..Default::default()
        };
        let snap = |resolution: Resolution, revision, modified| Snapshot {
            resolution,
            revision,
            modified,
        };
        let s = snap(known.clone(), 9, 5);
        assert_eq!(first_event(&s, None).kind, EventType::Added);
        assert_eq!(first_event(&s, Some(5)).kind, EventType::Bookmark);
        assert_eq!(first_event(&s, Some(5)).object, None);
        assert_eq!(first_event(&s, Some(9)).kind, EventType::Bookmark);
        assert_eq!(first_event(&s, Some(4)).kind, EventType::Modified);
        // A revision from another history (ahead of ours): a snapshot.
        assert_eq!(first_event(&s, Some(10)).kind, EventType::Modified);
        let unknown = snap(Resolution::default(), 9, 9);
        assert_eq!(first_event(&unknown, None).kind, EventType::Deleted);
        assert_eq!(first_event(&unknown, Some(9)).kind, EventType::Deleted);

        assert_eq!(next_event(&known, &s), None);
        let mut changed = known.clone();
        changed.policy.retry_limit = Some(1);
        let c = snap(changed, 10, 10);
        assert_eq!(next_event(&known, &c).unwrap().kind, EventType::Modified);
        assert_eq!(
            next_event(&Resolution::default(), &c).unwrap().kind,
            EventType::Added
        );
        assert_eq!(
            next_event(&known, &unknown).unwrap().kind,
            EventType::Deleted
        );
    }

    #[test]
    fn routes_ride_with_a_known_services_resolution() {
        let (_tx, rx) = tokio::sync::watch::channel(vec![HttpRoute {
            name: "shop/r".into(),
            rules: vec![],
        }]);
        let routes = Routes {
            changes: rx,
            of: |v: &Vec<HttpRoute>, ns: &str, name: &str, port: u16| {
                if (ns, name, port) == ("shop", "web", 80) {
                    v.clone()
                } else {
                    vec![]
                }
            },
        };
        let known = Snapshot {
            resolution: Resolution {
                exists: true,
                service: Some("web.shop.svc.cluster.local".into()),
                port: 80,
                ..Default::default()
            },
            revision: 9,
            modified: 5,
        };
        let s = routes.attach(known.clone());
        assert_eq!(s.resolution.routes.len(), 1);
        // Resumed: the whole state, since routes do not move revisions.
        assert_eq!(first_event(&s, Some(5)).kind, EventType::Modified);
        let mut other_port = known.clone();
        other_port.resolution.port = 81;
        let s = routes.attach(other_port);
        assert!(s.resolution.routes.is_empty());
        assert_eq!(first_event(&s, Some(5)).kind, EventType::Bookmark);
        let mut unknown = known;
        unknown.resolution.exists = false;
        assert!(routes.attach(unknown).resolution.routes.is_empty());
    }
}
