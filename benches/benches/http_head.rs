//! HTTP/1.1 request head handling as the proxy does it: hyper's server
//! connection reading a head, calling the service and writing a response
//! head, driven in memory (a tokio duplex pipe, no sockets), against a
//! baseline of httparse alone parsing the same bytes — the parser hyper
//! uses, so the ratio is the share of a served request that is parsing.
//! (The proxy's own header functions, `http::headers`, are private.)
//! `parked_h1` serves each request on a fresh hyper connection that is
//! taken back once idle (`pimesh_proxy::http::park`, what a keep-alive
//! connection costs when it parks between requests), against `hyper_h1`
//! (one connection kept in hyper) in the same run.
//!
//! Run: `cargo bench -p pimesh-benches --bench http_head` (see benches/README.md).

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use http_body_util::Empty;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use pimesh_benches::criterion_ratios::{self, Pair};
use pimesh_proxy::http::park;
use std::future::Future;
use std::hint::black_box;
use std::sync::Arc;
use std::task::Poll;
use std::time::SystemTime;
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};

const GROUP: &str = "http_head";

/// A small head, as curl sends it.
const SMALL: &[u8] = b"GET /api/v1/items?id=42 HTTP/1.1\r\n\
Host: backend.default.svc.cluster.local:8080\r\n\
User-Agent: curl/8.5.0\r\n\
Accept: */*\r\n\
\r\n";

/// A browser-sized head: 14 fields, cookies, tracing headers.
const LARGE: &[u8] = b"GET /shop/cart?session=7f3a9c&lang=en HTTP/1.1\r\n\
Host: web.shop.svc.cluster.local:8080\r\n\
User-Agent: Mozilla/5.0 (X11; Linux aarch64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36\r\n\
Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8\r\n\
Accept-Language: en-GB,en;q=0.9\r\n\
Accept-Encoding: gzip, deflate, br\r\n\
Cookie: session=7f3a9c2b8e1d4f6a; theme=dark; consent=1; cart=3\r\n\
Referer: http://web.shop.svc.cluster.local:8080/shop\r\n\
X-Request-Id: 4bf92f3577b34da6a3ce929d0e0e4736\r\n\
Traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n\
X-Forwarded-For: 10.42.0.1\r\n\
X-Forwarded-Proto: http\r\n\
Cache-Control: no-cache\r\n\
Connection: keep-alive\r\n\
\r\n";

const INPUTS: [(&str, &[u8]); 2] = [("small", SMALL), ("large", LARGE)];

/// httparse: the head parsed into a fixed array of 32 fields.
fn parse(buf: &[u8]) -> usize {
    let mut headers = [httparse::EMPTY_HEADER; 32];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        other => panic!("head did not parse: {other:?}"),
    }
}

/// The client end of a kept-alive hyper HTTP/1.1 server connection.
struct Served {
    rt: tokio::runtime::Runtime,
    client: DuplexStream,
    buf: Vec<u8>,
}

impl Served {
    fn new() -> Served {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (client, server) = tokio::io::duplex(64 * 1024);
        rt.spawn(async move {
            let svc = service_fn(|_req| async {
                Ok::<_, std::convert::Infallible>(http::Response::new(Empty::<bytes::Bytes>::new()))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(server), svc)
                .await;
        });
        Served {
            rt,
            client,
            buf: vec![0; 4096],
        }
    }

    /// Sends one head and reads the whole response head (empty body);
    /// returns the response's length.
    fn round_trip(&mut self, head: &[u8]) -> usize {
        let (client, buf) = (&mut self.client, &mut self.buf);
        self.rt.block_on(async {
            client.write_all(head).await.unwrap();
            let mut n = 0;
            while !buf[..n].ends_with(b"\r\n\r\n") {
                let got = client.read(&mut buf[n..]).await.unwrap();
                assert!(got > 0, "server closed");
                n += got;
            }
            n
        })
    }
}

/// The client end of a connection that is parked after every request:
/// a new hyper connection per request, taken back (`into_parts`) once
/// `park::Gate` says it is idle, as `pimesh_proxy::http` does.
struct Parked {
    rt: tokio::runtime::Runtime,
    client: DuplexStream,
    server: Option<park::GatedIo<DuplexStream>>,
    gate: Arc<park::Gate>,
    buf: Vec<u8>,
}

impl Parked {
    fn new() -> Parked {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (client, server) = tokio::io::duplex(64 * 1024);
        let gate = Arc::new(park::Gate::default());
        Parked {
            rt,
            client,
            server: Some(park::GatedIo {
                io: server,
                prefix: bytes::Bytes::new(),
                gate: gate.clone(),
            }),
            gate,
            buf: vec![0; 4096],
        }
    }

    /// As [`Served::round_trip`], on a fresh hyper connection parked after.
    fn round_trip(&mut self, head: &[u8]) -> usize {
        let (client, buf, gate) = (&mut self.client, &mut self.buf, &self.gate);
        let io = self.server.take().expect("parked between requests");
        let (io, n) = self.rt.block_on(async {
            gate.reset();
            let g = gate.clone();
            let svc = service_fn(move |req| {
                let in_flight = g.request(&req);
                async move {
                    let rsp = http::Response::new(Empty::<bytes::Bytes>::new());
                    Ok::<_, std::convert::Infallible>(park::track(rsp, in_flight))
                }
            });
            let mut conn = Box::new(
                hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(io), svc)
                    .with_upgrades(),
            );
            let n = {
                let server =
                    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *conn).poll(cx) {
                        Poll::Ready(r) => panic!("server ended: {r:?}"),
                        Poll::Pending if gate.is_idle() => Poll::Ready(()),
                        Poll::Pending => Poll::Pending,
                    });
                let reply = async {
                    client.write_all(head).await.unwrap();
                    let mut n = 0;
                    while !buf[..n].ends_with(b"\r\n\r\n") {
                        let got = client.read(&mut buf[n..]).await.unwrap();
                        assert!(got > 0, "server closed");
                        n += got;
                    }
                    n
                };
                tokio::join!(server, reply).1
            };
            let parts = conn.into_parts().expect("not upgraded");
            let mut io = parts.io.into_inner();
            assert!(parts.read_buf.is_empty(), "nothing read ahead");
            io.prefix = bytes::Bytes::new();
            (io, n)
        });
        self.server = Some(io);
        n
    }
}

fn bench_heads(c: &mut Criterion) {
    let mut group = c.benchmark_group(GROUP);
    for (name, head) in INPUTS {
        assert_eq!(parse(head), head.len(), "{name} parses whole");
        let mut served = Served::new();
        let n = served.round_trip(head);
        assert!(
            served.buf[..n].starts_with(b"HTTP/1.1 200 OK\r\n"),
            "{name}: 200"
        );
        group.throughput(Throughput::Bytes(head.len() as u64));
        group.bench_function(BenchmarkId::new("hyper_h1", name), |b| {
            b.iter(|| served.round_trip(black_box(head)))
        });
        let mut parked = Parked::new();
        let n = parked.round_trip(head);
        assert!(
            parked.buf[..n].starts_with(b"HTTP/1.1 200 OK\r\n"),
            "{name}: 200 parked"
        );
        group.bench_function(BenchmarkId::new("parked_h1", name), |b| {
            b.iter(|| parked.round_trip(black_box(head)))
        });
        group.bench_function(BenchmarkId::new("httparse", name), |b| {
            b.iter(|| parse(black_box(head)))
        });
    }
    group.finish();
}

criterion_group!(benches, bench_heads);

fn main() {
    let started = SystemTime::now();
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
    let pairs: Vec<Pair> = INPUTS
        .iter()
        .map(|(name, _)| Pair {
            name,
            subject: format!("hyper_h1/{name}"),
            baseline: format!("httparse/{name}"),
        })
        .collect();
    criterion_ratios::print(
        GROUP,
        "time per head, httparse / hyper_h1 (the share of a served request that is parsing)",
        &pairs,
        started,
    );
    let parked: Vec<Pair> = INPUTS
        .iter()
        .map(|(name, _)| Pair {
            name,
            subject: format!("parked_h1/{name}"),
            baseline: format!("hyper_h1/{name}"),
        })
        .collect();
    criterion_ratios::print(
        GROUP,
        "time per request, hyper_h1 / parked_h1 (below 1: what parking after every request costs)",
        &parked,
        started,
    );
}
