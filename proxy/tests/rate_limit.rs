//! Local rate limits (`HTTPLocalRateLimitPolicy`) streamed by a real
//! standalone controller to real proxies, applied with `pimesh apply -f`:
//! a total limit of 10 rps answers a burst with 429s (gRPC:
//! `RESOURCE_EXHAUSTED`), admitting no more than GCRA allows in the
//! measured time, each refusal counted in
//! `inbound_http_local_ratelimit_total`; an identity limit throttles one
//! client identity while another passes, and an override gives its client
//! its own rate.

mod support;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};
use support::*;

const WEB: &str = "web.shop.serviceaccount.identity.pimesh.cluster.local";
const DB: &str = "db.shop.serviceaccount.identity.pimesh.cluster.local";

/// A Server on `port` open to every client (rate limits apply to admitted
/// requests), and `limit` (the spec of its HTTPLocalRateLimitPolicy).
fn policy_yaml(port: u16, limit: &str) -> String {
    format!(
        "apiVersion: policy.pimesh.io/v1alpha1
kind: Server
metadata:
  namespace: shop
  name: api-http
spec:
  podSelector:
    matchLabels:
      app: api
  port: {port}
  accessPolicy: all-unauthenticated
---
apiVersion: policy.pimesh.io/v1alpha1
kind: HTTPLocalRateLimitPolicy
metadata:
  namespace: shop
  name: api-rl
spec:
  targetRef:
    group: policy.pimesh.io
    kind: Server
    name: api-http
{limit}"
    )
}

/// The outcome of one burst: each request's status (and gRPC status) in
/// order, the connections curl opened, and the time from before the first
/// was sent to after the last was answered.
struct Burst {
    codes: Vec<String>,
    connects: usize,
    elapsed: Duration,
}

impl Burst {
    /// `n` requests back to back on one connection (curl's URL globbing):
    /// `GET http://to/?i`, through the explicit proxy `via` when given,
    /// bodies saved in `dir`, with curl's `extra` arguments.
    fn send(
        via: Option<SocketAddr>,
        to: SocketAddr,
        n: usize,
        dir: &Path,
        extra: &[&str],
    ) -> Burst {
        let url = format!("http://{to}/?[1-{n}]");
        let out = format!("{}/body-#1", dir.display());
        let mut args = vec![
            "-w",
            "%{num_connects} %{http_code} %header{grpc-status}\\n",
            "-o",
            &out,
            &url,
        ];
        let proxy = via.map(|v| format!("http://{v}"));
        if let Some(p) = &proxy {
            args.extend(["-x", p]);
        }
        args.extend(extra);
        let start = Instant::now();
        let (_, stdout, _) = curl(None, &args);
        let elapsed = start.elapsed();
        let mut connects = 0;
        let mut codes = Vec::new();
        for line in stdout.lines() {
            let (c, code) = line.split_once(' ').unwrap_or((line, ""));
            connects += c.parse::<usize>().unwrap_or(0);
            codes.push(code.trim().to_string());
        }
        assert_eq!(codes.len(), n, "{stdout}");
        Burst {
            codes,
            connects,
            elapsed,
        }
    }

    fn count(&self, code: &str) -> usize {
        self.codes.iter().filter(|c| *c == code).count()
    }

    /// The most requests a GCRA bucket of `rps` (full at the start, `rps`
    /// at once, one more every `1/rps` s) admits within the burst's time.
    fn gcra_bound(&self, rps: u32) -> usize {
        rps as usize + (f64::from(rps) * self.elapsed.as_secs_f64()).floor() as usize
    }
}

fn apply(ctl: &Controller, dir: &TempDir, yaml: &str) {
    let file = dir.path().join("policy.yaml");
    std::fs::write(&file, yaml).unwrap();
    ctl.cli(&["apply", "-f", &file.display().to_string()]);
}

#[test]
fn a_total_limit_answers_429_above_it_and_counts_each() {
    let ctl = Controller::start(&[]);
    let dir = TempDir::new("rate-limit-total");
    let nginx = Nginx::start(None, "127.0.0.1");
    let api = meshed_proxy(
        &ctl.proxy_env("shop/api"),
        &[
            (
                "PIMESH_PROXY_INBOUND_TARGET",
                &format!("127.0.0.1:{}", nginx.port),
            ),
            ("PIMESH_PROXY_POD_LABELS", "app=api"),
        ],
    );
    apply(
        &ctl,
        &dir,
        &policy_yaml(nginx.port, "  total:\n    requestsPerSecond: 10\n"),
    );
    // Every 429 the client sees, to compare with the counter.
    let mut refused = 0;
    let limited = eventually(Duration::from_secs(10), || {
        let b = Burst::send(None, api.inbound, 30, dir.path(), &[]);
        refused += b.count("429");
        b.count("429") > 0
    });
    assert!(limited, "no 429 for 30 requests at once:\n{}", api.log());

    // Well above the limit: 100 requests back to back, on a full bucket
    // (a second after the last request took a token).
    std::thread::sleep(Duration::from_millis(1100));
    let b = Burst::send(None, api.inbound, 100, dir.path(), &[]);
    let (ok, limited) = (b.count("200"), b.count("429"));
    refused += limited;
    assert_eq!(ok + limited, 100, "{:?}", b.codes);
    let bound = b.gcra_bound(10);
    println!(
        "total 10 rps: 100 requests in {:?}: {ok} x 200 (GCRA bound {bound}), {limited} x 429",
        b.elapsed
    );
    assert!(
        (1..=bound).contains(&ok),
        "{ok} admitted in {:?}",
        b.elapsed
    );
    assert!(limited > 0, "{:?}", b.codes);
    // The refusal's short body names the policy and the limit.
    let i = b.codes.iter().position(|c| c == "429").unwrap() + 1;
    let body = std::fs::read_to_string(dir.path().join(format!("body-{i}"))).unwrap();
    assert!(
        body.contains("too many requests") && body.contains("api-rl"),
        "{body}"
    );

    // gRPC clients (by their content type) get RESOURCE_EXHAUSTED (8) in
    // a trailers-only answer, never a 429. HTTP/1.1 on one connection: the
    // requests the limit admits go to nginx (405 to a POST), which speaks
    // HTTP/1 only on that port.
    let grpc = ["-H", "content-type: application/grpc", "-d", ""];
    let g = Burst::send(None, api.inbound, 40, dir.path(), &grpc);
    let exhausted = g.count("200 8");
    refused += exhausted;
    assert!(exhausted > 0, "{:?}", g.codes);
    assert_eq!(g.count("429"), 0, "{:?}", g.codes);

    // Refused requests with a body: the proxy reads it, so the connection
    // stays usable and every answer comes on it (nginx answers the
    // admitted POSTs 405).
    let upload = dir.path().join("upload");
    std::fs::write(&upload, vec![b'x'; 32 * 1024]).unwrap();
    let data = format!("@{}", upload.display());
    let p = Burst::send(None, api.inbound, 30, dir.path(), &["--data-binary", &data]);
    refused += p.count("429");
    assert!(p.count("429") > 0, "{:?}", p.codes);
    assert_eq!(p.count("429") + p.count("405"), 30, "{:?}", p.codes);
    assert_eq!(p.connects, 1, "{:?}", p.codes);

    let labels = [
        ("srv_group", "policy.pimesh.io"),
        ("srv_kind", "server"),
        ("srv_name", "api-http"),
        ("ratelimit_group", "policy.pimesh.io"),
        ("ratelimit_kind", "HTTPLocalRateLimitPolicy"),
        ("ratelimit_name", "api-rl"),
        ("ratelimit_scope", "total"),
    ];
    let counted = api.metric("inbound_http_local_ratelimit_total", &labels);
    assert_eq!(counted, refused as f64, "{}", api.metrics());
}

#[test]
fn an_identity_limit_throttles_one_client_and_an_override_frees_another() {
    let ctl = Controller::start(&[]);
    let dir = TempDir::new("rate-limit-identity");
    let nginx = Nginx::start(None, "127.0.0.1");
    let api = meshed_proxy(
        &ctl.proxy_env("shop/api"),
        &[
            (
                "PIMESH_PROXY_INBOUND_TARGET",
                &format!("127.0.0.1:{}", nginx.port),
            ),
            ("PIMESH_PROXY_POD_LABELS", "app=api"),
        ],
    );
    let dest: SocketAddr = "127.0.1.1:80".parse().unwrap();
    let dests = format!("{dest}=shop/api@{}", api.inbound);
    let client = |id: &str| {
        meshed_proxy(
            &ctl.proxy_env(id),
            &[("PIMESH_PROXY_MESH_DESTINATIONS", &dests)],
        )
    };
    let (web, db) = (client("shop/web"), client("shop/db"));
    apply(
        &ctl,
        &dir,
        &policy_yaml(
            nginx.port,
            "  identity:
    requestsPerSecond: 5
  overrides:
    - requestsPerSecond: 50
      clientRefs:
        - kind: ServiceAccount
          name: db
",
        ),
    );
    // shop/web: bursts until the limit (pushed by the stream) refuses.
    let (mut web_sent, mut web_refused) = (0, 0);
    let limited = eventually(Duration::from_secs(10), || {
        let b = Burst::send(Some(web.outbound), dest, 40, dir.path(), &[]);
        web_sent += 40;
        web_refused += b.count("429");
        b.count("429") > 0
    });
    assert!(limited, "shop/web never limited:\n{}", api.log());
    // Under the limit from its first request on, on a full bucket: bounded
    // by GCRA.
    std::thread::sleep(Duration::from_millis(1100));
    let b = Burst::send(Some(web.outbound), dest, 40, dir.path(), &[]);
    web_sent += 40;
    web_refused += b.count("429");
    let web_ok = b.count("200");
    assert_eq!(web_ok + b.count("429"), 40, "{:?}", b.codes);
    let bound = b.gcra_bound(5);
    assert!(
        (1..=bound).contains(&web_ok),
        "{web_ok} admitted in {:?}",
        b.elapsed
    );

    // shop/db has its own bucket, and its override's 50 rps: 40 at once
    // pass where the identity limit (5) would refuse 35.
    let b = Burst::send(Some(db.outbound), dest, 40, dir.path(), &[]);
    assert_eq!(b.count("200"), 40, "{:?}\n{}", b.codes, api.log());
    println!(
        "identity 5 rps: shop/web {web_ok} of 40 x 200 ({web_refused} x 429 in all); \
         shop/db (override 50 rps) 40 x 200 in {:?}",
        b.elapsed
    );

    let text = api.metrics();
    let of = |id: &str| {
        sum_metric(
            &text,
            "inbound_http_local_ratelimit_total",
            &[
                ("srv_name", "api-http"),
                ("ratelimit_name", "api-rl"),
                ("ratelimit_scope", "identity"),
                ("client_id", id),
            ],
        )
    };
    assert_eq!(of(WEB), web_refused as f64, "{text}");
    assert_eq!(of(DB), 0.0, "{text}");
    // Refused requests were admitted first: authorization counts them.
    assert!(
        sum_metric(
            &text,
            "inbound_http_authz_allow_total",
            &[("client_id", WEB)]
        ) >= f64::from(web_sent),
        "{text}"
    );
}
