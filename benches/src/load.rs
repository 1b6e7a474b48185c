//! The load client: HTTP/1.1 or HTTP/2 over hyper's client connections,
//! driven open-loop at a fixed rate (wrk2-style: each lane has its own
//! schedule and latency counts from the intended send time, so a stalled
//! server cannot hide its stall — no coordinated omission) or closed-loop
//! as fast as the lanes go (saturation). Latencies go into HdrHistograms.

use crate::config::Protocol;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http::header::{HeaderValue, HOST};
use http::{Request, Uri};
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Time limit of one connect or one request (head and body).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request did not count as a success.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("connect to {0}")]
    Connect(SocketAddr, #[source] std::io::Error),
    #[error("HTTP")]
    Http(#[from] hyper::Error),
    #[error("no response within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout,
    #[error("status {0} ({1})")]
    Status(u16, String),
    #[error("body of {got} bytes, expected {want}")]
    Length { got: u64, want: u64 },
}

/// Where and what the client requests.
#[derive(Clone, Debug)]
pub struct Target {
    /// The address the client connects to (upstream, a proxy's inbound or
    /// outbound listener).
    pub connect: SocketAddr,
    pub protocol: Protocol,
    /// Request target: origin-form (`/payload`) or, to an explicit proxy,
    /// absolute-form (`http://upstream/payload`); HTTP/2 always absolute
    /// (`:authority` = the upstream).
    pub uri: Uri,
    /// `Host` of HTTP/1.1 requests: the upstream's address.
    pub host: HeaderValue,
    /// Body bytes every response must carry.
    pub payload: u64,
}

impl Target {
    /// Requests for `upstream` sent to `connect`; `absolute` when `connect`
    /// is an explicit proxy (HTTP/2 is always absolute).
    pub fn new(
        connect: SocketAddr,
        upstream: SocketAddr,
        protocol: Protocol,
        absolute: bool,
        payload: u64,
    ) -> Target {
        let uri = if absolute || protocol == Protocol::H2 {
            format!("http://{upstream}/payload")
        } else {
            "/payload".to_string()
        };
        Target {
            connect,
            protocol,
            uri: uri.parse().expect("a valid URI"),
            host: HeaderValue::from_str(&upstream.to_string()).expect("an address is a valid Host"),
            payload,
        }
    }
}

/// A client connection's request handle (its driver runs as a task).
pub enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

/// One connection to `target` (its driver runs as a task).
pub(crate) async fn connect(target: &Target) -> Result<Sender, Error> {
    let fut = async {
        let tcp = TcpStream::connect(target.connect)
            .await
            .map_err(|e| Error::Connect(target.connect, e))?;
        let _ = tcp.set_nodelay(true);
        let io = TokioIo::new(tcp);
        Ok(match target.protocol {
            Protocol::H1 => {
                let (s, conn) = http1::handshake(io).await?;
                tokio::spawn(conn);
                Sender::H1(s)
            }
            Protocol::H2 => {
                let (s, conn) = http2::Builder::new(TokioExecutor::new())
                    .timer(TokioTimer::new())
                    .handshake(io)
                    .await?;
                tokio::spawn(conn);
                Sender::H2(s)
            }
        })
    };
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .map_err(|_| Error::Timeout)?
}

/// One request and its whole body.
pub(crate) async fn request(sender: &mut Sender, target: &Target) -> Result<(), Error> {
    let fut = async {
        let mut req = Request::builder().uri(target.uri.clone());
        if target.protocol == Protocol::H1 {
            req = req.header(HOST, target.host.clone());
        }
        let req = req.body(Empty::new()).expect("a valid request");
        let resp = match sender {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let status = resp.status();
        let why = resp
            .headers()
            .get("pimesh-proxy-error")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let mut body = resp.into_body();
        let mut got = 0u64;
        while let Some(frame) = body.frame().await {
            if let Some(d) = frame?.data_ref() {
                got += d.len() as u64;
            }
        }
        if !status.is_success() {
            return Err(Error::Status(status.as_u16(), why));
        }
        if got != target.payload {
            return Err(Error::Length {
                got,
                want: target.payload,
            });
        }
        Ok(())
    };
    tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .map_err(|_| Error::Timeout)?
}

/// The client's connections: one lane per HTTP/1.1 connection, or lanes as
/// concurrent streams sharing HTTP/2 connections. Kept across steps, as an
/// app keeps its connections.
pub struct Pool {
    target: Arc<Target>,
    lanes: Vec<Option<Sender>>,
}

impl Pool {
    /// Opens the connections: `lanes` for HTTP/1.1, `h2_conns` shared by
    /// `lanes` streams for HTTP/2.
    ///
    /// # Errors
    ///
    /// [`Error::Connect`] when a TCP connection cannot be opened;
    /// [`Error::Http`] when an HTTP/1.1 or HTTP/2 handshake fails.
    pub async fn connect(target: Target, lanes: usize, h2_conns: usize) -> Result<Pool, Error> {
        let lanes = lanes.max(1);
        let mut senders = Vec::with_capacity(lanes);
        match target.protocol {
            Protocol::H1 => {
                for _ in 0..lanes {
                    senders.push(Some(connect(&target).await?));
                }
            }
            Protocol::H2 => {
                let mut conns = Vec::new();
                for _ in 0..h2_conns.clamp(1, lanes) {
                    conns.push(connect(&target).await?);
                }
                for i in 0..lanes {
                    let Sender::H2(s) = &conns[i % conns.len()] else {
                        unreachable!("HTTP/2 connections")
                    };
                    senders.push(Some(Sender::H2(s.clone())));
                }
            }
        }
        Ok(Pool {
            target: Arc::new(target),
            lanes: senders,
        })
    }
}

/// How hard to push.
#[derive(Clone, Copy, Debug)]
pub enum Load {
    /// Open loop: this many requests per second in total.
    Fixed(f64),
    /// Closed loop: every lane sends its next request when the last ends.
    Saturation,
}

/// What one step measured.
pub struct Outcome {
    /// Latency of successful requests, nanoseconds.
    pub hist: Histogram<u64>,
    /// Successful requests.
    pub ok: u64,
    /// Failed requests (connect errors, HTTP errors, non-2xx, short bodies, timeouts).
    pub errors: u64,
    /// Scheduled requests never sent: the lanes were still behind when the
    /// drain time after the step ran out (fixed rate only).
    pub missed: u64,
    /// From the step's start until its last response.
    pub elapsed: Duration,
    /// The first error, for the progress line.
    pub first_error: Option<String>,
}

impl Outcome {
    fn new() -> Outcome {
        Outcome {
            hist: Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid bounds"),
            ok: 0,
            errors: 0,
            missed: 0,
            elapsed: Duration::ZERO,
            first_error: None,
        }
    }

    fn merge(&mut self, o: Outcome) {
        let _ = self.hist.add(&o.hist);
        self.ok += o.ok;
        self.errors += o.errors;
        self.missed += o.missed;
        self.elapsed = self.elapsed.max(o.elapsed);
        if self.first_error.is_none() {
            self.first_error = o.first_error;
        }
    }

    /// Successful requests per second.
    pub fn achieved_rps(&self) -> f64 {
        let s = self.elapsed.as_secs_f64();
        if s > 0.0 {
            self.ok as f64 / s
        } else {
            0.0
        }
    }
}

/// Where a request's latency starts: at its intended send time when the
/// lane was still busy with the previous request then (the system under
/// test delayed it: that wait is latency), else when it was actually sent
/// (the lane was free, so any lateness is the client's own timer, which
/// has millisecond granularity, and must not count).
pub fn latency_origin(intended: Instant, lane_free: Instant, sent: Instant) -> Instant {
    if lane_free > intended {
        intended
    } else {
        sent
    }
}

/// Runs `load` on every lane of `pool` for `duration`. Fixed-rate lanes
/// that fall behind keep sending (each late request measured from its
/// intended time) for at most `drain` after the step.
pub async fn run(pool: &mut Pool, load: Load, duration: Duration, drain: Duration) -> Outcome {
    let lanes = pool.lanes.len();
    let start = Instant::now() + Duration::from_millis(5);
    let end = start + duration;
    let mut tasks = Vec::with_capacity(lanes);
    for (i, sender) in pool.lanes.iter_mut().enumerate() {
        let schedule = match load {
            Load::Fixed(rate) => Some((
                start + Duration::from_secs_f64(i as f64 / rate),
                Duration::from_secs_f64(lanes as f64 / rate),
            )),
            Load::Saturation => None,
        };
        let target = pool.target.clone();
        let sender = sender.take();
        tasks.push(tokio::spawn(lane(
            target,
            sender,
            schedule,
            start,
            end,
            end + drain,
        )));
    }
    let mut total = Outcome::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if let Ok((o, sender)) = t.await {
            total.merge(o);
            pool.lanes[i] = sender;
        }
    }
    total
}

/// One lane: `schedule` = (first intended send, interval) for a fixed
/// rate, `None` for saturation.
async fn lane(
    target: Arc<Target>,
    mut sender: Option<Sender>,
    schedule: Option<(Instant, Duration)>,
    start: Instant,
    end: Instant,
    hard_end: Instant,
) -> (Outcome, Option<Sender>) {
    let mut out = Outcome::new();
    tokio::time::sleep_until(start).await;
    let mut k: u32 = 0;
    loop {
        let lane_free = Instant::now();
        let origin = match schedule {
            Some((first, interval)) => {
                let intended = first + interval * k;
                if intended >= end {
                    break;
                }
                if lane_free > hard_end {
                    let left = (end - intended).as_secs_f64() / interval.as_secs_f64();
                    out.missed += left.ceil() as u64;
                    break;
                }
                k += 1;
                tokio::time::sleep_until(intended).await;
                latency_origin(intended, lane_free, Instant::now())
            }
            None => {
                if lane_free >= end {
                    break;
                }
                lane_free
            }
        };
        let result = match sender.as_mut() {
            Some(s) => request(s, &target).await,
            None => match connect(&target).await {
                Ok(mut s) => {
                    let r = request(&mut s, &target).await;
                    sender = Some(s);
                    r
                }
                Err(e) => {
                    // Do not spin on a refusing listener.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    Err(e)
                }
            },
        };
        match result {
            Ok(()) => {
                let ns = origin.elapsed().as_nanos().min(u64::MAX as u128) as u64;
                out.hist.saturating_record(ns.max(1));
                out.ok += 1;
            }
            Err(e) => {
                out.errors += 1;
                if out.first_error.is_none() {
                    out.first_error = Some(crate::error_chain(&e));
                }
                if matches!(target.protocol, Protocol::H1) || !matches!(e, Error::Status(..)) {
                    sender = None;
                }
            }
        }
    }
    out.elapsed = Instant::now().saturating_duration_since(start);
    (out, sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_counts_from_the_intended_time_only_when_the_lane_was_busy() {
        let t = Instant::now();
        let ms = Duration::from_millis;
        // Lane busy until 5 ms past the intended time: the wait counts.
        assert_eq!(latency_origin(t, t + ms(5), t + ms(5)), t);
        // Lane free before; the timer fired 1 ms late: only from the send.
        assert_eq!(latency_origin(t + ms(2), t, t + ms(3)), t + ms(3));
    }

    #[test]
    fn absolute_form_for_explicit_proxies_and_h2() {
        let up: SocketAddr = "127.0.0.1:8080".parse().unwrap();
        let px: SocketAddr = "127.0.0.1:4140".parse().unwrap();
        let t = Target::new(up, up, Protocol::H1, false, 1);
        assert_eq!(t.uri, "/payload");
        assert_eq!(t.host, "127.0.0.1:8080");
        let t = Target::new(px, up, Protocol::H1, true, 1);
        assert_eq!(t.uri, "http://127.0.0.1:8080/payload");
        let t = Target::new(up, up, Protocol::H2, false, 1);
        assert_eq!(t.uri.authority().unwrap(), "127.0.0.1:8080");
    }

    /// Against a server that answers after 20 ms, 200 rps over 2 lanes
    /// (each lane can do 50 rps): the lanes fall behind, and the measured
    /// latency grows far beyond the 20 ms service time instead of hiding
    /// the queue (coordinated omission would report ~20 ms).
    #[test]
    fn a_slow_server_shows_in_open_loop_latency() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = l.local_addr().unwrap();
            tokio::spawn(async move {
                loop {
                    let (s, _) = l.accept().await.unwrap();
                    let svc = hyper::service::service_fn(|_req| async {
                        tokio::time::sleep(Duration::from_millis(20)).await;
                        Ok::<_, std::convert::Infallible>(http::Response::new(
                            http_body_util::Full::new(Bytes::from_static(b"abc")),
                        ))
                    });
                    tokio::spawn(
                        hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(s), svc),
                    );
                }
            });
            let target = Target::new(addr, addr, Protocol::H1, false, 3);
            let mut pool = Pool::connect(target, 2, 1).await.unwrap();
            let slow = run(
                &mut pool,
                Load::Fixed(200.0),
                Duration::from_millis(500),
                Duration::from_secs(5),
            )
            .await;
            assert_eq!(slow.errors, 0);
            assert!(slow.ok >= 90, "{} requests", slow.ok);
            // The last requests waited ~half the step behind the schedule.
            assert!(slow.hist.max() > 150_000_000, "max {} ns", slow.hist.max());
            let easy = run(
                &mut pool,
                Load::Fixed(20.0),
                Duration::from_millis(500),
                Duration::from_secs(5),
            )
            .await;
            assert!(easy.hist.value_at_quantile(0.5) < 60_000_000);
            let sat = run(
                &mut pool,
                Load::Saturation,
                Duration::from_millis(300),
                Duration::ZERO,
            )
            .await;
            // At most 15 per lane (20 ms each); at least a few even on a busy machine.
            assert!(sat.ok >= 4 && sat.ok <= 32, "{} requests", sat.ok);
        });
    }
}
