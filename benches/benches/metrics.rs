//! Metric recording per inbound request: `inbound_http_authz_allow_total`,
//! `request_total`, `response_latency_ms` and `response_total`, keyed by
//! direction, target, TLS state, authority, verdict and status. Three ways:
//! `cached` (what the proxy does: the connection's handles, looked up once
//! per connection and authority by `ConnectionSeries`, then
//! `Metrics::request_in`), `lookup` (the per-request path the public API
//! still has and the proxy used before: `AuthzMetrics::record` and
//! `Metrics::request` with cloned labels, every series looked up in its
//! family), and `plain_counters`, the same four updates on unlabelled
//! prometheus-client metrics — the floor of recording anything. Inputs:
//! one connection with one authority, and 100 connections with an
//! authority each, taken in turn. Ratios printed: `lookup / cached` (the
//! gain of the cache), `plain_counters / cached`, and
//! `cached_rate_limited / cached`: `cached` plus the port's local rate
//! limit (`Authz::rate_limit`: a total and a per-identity GCRA bucket, the
//! client a mesh identity; rates so high that every request passes), the
//! limiter's cost per request; and `cached / cached_routed`: a Server with
//! two routes (per-route policy), each request matched to its route
//! (`Authz::route`, Gateway API precedence), decided on it and counted
//! through a family look-up with the route's labels, against the
//! no-routes path (`cached`, Linkerd's default route).
//!
//! Run: `cargo bench -p pimesh-benches --bench metrics` (see benches/README.md).

use criterion::{criterion_group, BenchmarkId, Criterion};
use pimesh_api::discovery::route::{PathMatch, RouteMatch};
use pimesh_api::policy::inbound::{
    Authorization, InboundPolicy, InboundRoute, InboundServer, RateLimit, RouteKind,
};
use pimesh_api::policy::{DefaultPolicy, Networks};
use pimesh_benches::criterion_ratios::{self, Pair};
use pimesh_proxy::authz::{Authz, InboundPolicies, Routed};
use pimesh_proxy::metrics::{
    ConnectionSeries, Direction, Metrics, RequestLabels, Tls, LATENCY_BUCKETS_MS,
};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Instant, SystemTime};

const GROUP: &str = "metrics";

/// Distinct authorities cycled through, per input.
const INPUTS: [(&str, usize); 2] = [("one_authority", 1), ("100_authorities", 100)];

/// The verdict an inbound request carries: the default policy
/// `all-unauthenticated` admitting a plaintext client on port 8080.
fn authz() -> Authz {
    let policies = InboundPolicies::new(DefaultPolicy::AllUnauthenticated);
    let cluster = Networks::default();
    Authz::decide(&policies, 8080, &cluster, None, [10, 42, 0, 9].into())
}

/// The verdict of a meshed client on a port whose Server has a local rate
/// limit, total and per identity, at `u32::MAX` rps (never refusing).
fn rate_limited_authz() -> Authz {
    let policies = InboundPolicies::new(DefaultPolicy::AllUnauthenticated);
    let mut srv = InboundServer::default_policy(DefaultPolicy::AllUnauthenticated);
    srv.rate_limit = Some(RateLimit {
        name: "rl".into(),
        total: Some(u32::MAX),
        identity: Some(u32::MAX),
        overrides: vec![],
    });
    let mut policy = InboundPolicy::default();
    policy.servers.insert(8080, srv);
    policies.replace(policy);
    let id = "web.shop.serviceaccount.identity.pimesh.cluster.local";
    let authz = Authz::decide(
        &policies,
        8080,
        &Networks::default(),
        Some(id),
        [10, 42, 0, 9].into(),
    );
    assert!(authz.allowed && authz.server.rate_limit.is_some());
    authz
}

/// The connection verdict of a plaintext client on a port whose Server
/// has two routes, `/public` (open to all) and `/admin` (no one).
fn routed_authz() -> Authz {
    let policies = InboundPolicies::new(DefaultPolicy::AllUnauthenticated);
    let mut srv = InboundServer::default_policy(DefaultPolicy::Deny);
    let route = |name: &str, prefix: &str, open: bool| InboundRoute {
        name: name.into(),
        kind: RouteKind::Http,
        matches: vec![RouteMatch {
            path: Some(PathMatch::PathPrefix(prefix.into())),
            ..Default::default()
        }],
        authorizations: open
            .then(|| Authorization {
                name: format!("{name}-all"),
                authentications: vec![],
            })
            .into_iter()
            .collect(),
    };
    srv.routes = vec![
        route("admin", "/admin", false),
        route("public", "/public", true),
    ];
    let mut policy = InboundPolicy::default();
    policy.servers.insert(8080, srv);
    policies.replace(policy);
    Authz::decide(
        &policies,
        8080,
        &Networks::default(),
        None,
        [10, 42, 0, 9].into(),
    )
}

fn labels(m: &Metrics, n: usize) -> Vec<RequestLabels> {
    (0..n)
        .map(|i| RequestLabels {
            target: m.target(
                Direction::Inbound,
                "10.42.0.17:8080",
                Tls::plaintext(Direction::Inbound),
            ),
            authority: m.authority(&format!("svc-{i}.shop.svc.cluster.local:8080")),
        })
        .collect()
}

fn bench_metrics(c: &mut Criterion) {
    let mut group = c.benchmark_group(GROUP);
    for (name, n) in INPUTS {
        let metrics = Arc::new(Metrics::new(&[("namespace".into(), "shop".into())]));
        let sets = labels(&metrics, n);
        let verdict = authz();
        // Check the subject records what it should before timing it.
        metrics.request(sets[0].clone()).end(Some(200), None, "");
        let text = metrics.encode();
        assert!(
            text.lines().any(|l| l.starts_with("response_total{")
                && l.contains("classification=\"success\"")
                && l.ends_with(" 1")),
            "no response recorded:\n{text}"
        );
        let mut i = 0;
        group.bench_function(BenchmarkId::new("lookup", name), |b| {
            b.iter(|| {
                i = (i + 1) % sets.len();
                metrics.authz().record(&sets[i].target, &verdict, true);
                metrics
                    .request(black_box(sets[i].clone()))
                    .end(Some(200), None, "")
            })
        });
        // One connection per authority, as the proxy keeps them.
        let conns: Vec<_> = sets
            .iter()
            .map(|l| {
                let authz = metrics.authz().counter(&l.target, &verdict, true);
                (ConnectionSeries::new(l.target.clone()), authz)
            })
            .collect();
        let authorities: Vec<String> = sets.iter().map(|l| l.authority.to_string()).collect();
        group.bench_function(BenchmarkId::new("cached", name), |b| {
            b.iter(|| {
                i = (i + 1) % sets.len();
                let (conn, authz) = &conns[i];
                authz.inc();
                let series = conn.get(&metrics, black_box(&authorities[i]));
                metrics
                    .request_in(series, Instant::now())
                    .end(Some(200), None, "")
            })
        });
        let limited = rate_limited_authz();
        assert_eq!(limited.rate_limit(), Ok(()));
        group.bench_function(BenchmarkId::new("cached_rate_limited", name), |b| {
            b.iter(|| {
                i = (i + 1) % sets.len();
                let (conn, authz) = &conns[i];
                authz.inc();
                if black_box(&limited).rate_limit().is_err() {
                    return;
                }
                let series = conn.get(&metrics, black_box(&authorities[i]));
                metrics
                    .request_in(series, Instant::now())
                    .end(Some(200), None, "")
            })
        });
        let routed = routed_authz();
        let cluster = Networks::default();
        let (method, uri) = (http::Method::GET, http::Uri::from_static("/public/items"));
        let headers = http::HeaderMap::new();
        let routed_verdict = match routed.route(&method, &uri, &headers, &cluster) {
            Routed::Route(a) => {
                assert!(a.allowed && a.route_names().is_some());
                a
            }
            other => panic!("{other:?}"),
        };
        group.bench_function(BenchmarkId::new("cached_routed", name), |b| {
            b.iter(|| {
                i = (i + 1) % sets.len();
                let (conn, _) = &conns[i];
                let Routed::Route(a) = black_box(&routed).route(&method, &uri, &headers, &cluster)
                else {
                    return;
                };
                metrics.authz().record(conn.target(), &a, true);
                let series = conn.get(&metrics, black_box(&authorities[i]));
                metrics
                    .request_in(series, Instant::now())
                    .end(Some(200), None, "")
            })
        });
        let text = metrics.encode();
        let first = format!("authority=\"{}\"", authorities[0]);
        assert!(
            text.lines()
                .any(|l| l.starts_with("inbound_http_authz_allow_total{")
                    && l.contains("target_addr=\"10.42.0.17:8080\"")),
            "no authorization counted:\n{text}"
        );
        assert!(
            text.lines()
                .any(|l| l.starts_with("request_total{") && l.contains(&first)),
            "no request counted:\n{text}"
        );
        // The routed path counts into its route's own series (route_*
        // labels), the others into the Server's.
        let authz_total = metrics
            .authz()
            .counter(&sets[0].target, &verdict, true)
            .get()
            + metrics
                .authz()
                .counter(&sets[0].target, &routed_verdict, true)
                .get();
        let mut requests = 0;
        for l in text.lines().filter(|l| l.starts_with("request_total{")) {
            requests += l
                .rsplit(' ')
                .next()
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
        }
        // All paths count into the same series: every request once (plus
        // the check's request above, which had no verdict).
        assert_eq!(authz_total + 1, requests, "authz and request counts differ");
        let (requests, responses) = (Counter::<u64>::default(), Counter::<u64>::default());
        let allowed = Counter::<u64>::default();
        let latency = Histogram::new(LATENCY_BUCKETS_MS);
        group.bench_function(BenchmarkId::new("plain_counters", name), |b| {
            b.iter(|| {
                allowed.inc();
                requests.inc();
                latency.observe(black_box(0.42));
                responses.inc();
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench_metrics);

fn main() {
    let started = SystemTime::now();
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    let pairs = |baseline: &str| -> Vec<Pair> {
        INPUTS
            .iter()
            .map(|(name, _)| Pair {
                name,
                subject: format!("cached/{name}"),
                baseline: format!("{baseline}/{name}"),
            })
            .collect()
    };
    criterion_ratios::print(
        GROUP,
        "time per request, lookup / cached (per-request family look-ups against the connection's cached handles)",
        &pairs("lookup"),
        started,
    );
    criterion_ratios::print(
        GROUP,
        "time per request, plain_counters / cached (the share that is counting itself)",
        &pairs("plain_counters"),
        started,
    );
    let limiter: Vec<Pair> = INPUTS
        .iter()
        .map(|(name, _)| Pair {
            name,
            subject: format!("cached_rate_limited/{name}"),
            baseline: format!("cached/{name}"),
        })
        .collect();
    criterion_ratios::print(
        GROUP,
        "time per request, cached / cached_rate_limited (below 1: the local rate limit's share)",
        &limiter,
        started,
    );
    let routed: Vec<Pair> = INPUTS
        .iter()
        .map(|(name, _)| Pair {
            name,
            subject: format!("cached_routed/{name}"),
            baseline: format!("cached/{name}"),
        })
        .collect();
    criterion_ratios::print(
        GROUP,
        "time per request, cached / cached_routed (below 1: per-route policy's share: the route match, its verdict, a labelled look-up)",
        &routed,
        started,
    );
}
