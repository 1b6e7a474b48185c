//! The balancer on tokio's paused clock: latency preference, weights,
//! ejection, avoidance of the endpoint a retry follows.

use super::breaker::{Params, Transition};
use super::*;
use crate::metrics::{Direction, Metrics, Tls};

fn endpoints(weights: &[u32], consecutive: u32) -> Vec<Arc<Endpoint>> {
    let m = Metrics::new(&[]);
    weights
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let addr: SocketAddr = format!("127.0.0.1:{}", 1000 + i).parse().unwrap();
            Arc::new(Endpoint::new(
                addr,
                None,
                *w,
                m.target(
                    Direction::Outbound,
                    &addr.to_string(),
                    Tls::plaintext(Direction::Outbound),
                ),
                Params {
                    consecutive,
                    min_backoff: Duration::from_secs(1),
                    max_backoff: Duration::from_secs(60),
                },
            ))
        })
        .collect()
}

fn index(b: &Balancer, p: &Picked) -> usize {
    b.endpoints()
        .iter()
        .position(|e| Arc::ptr_eq(e, &p.endpoint))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_fastest_gets_the_largest_share() {
    let b = Balancer::new(endpoints(&[1, 1, 1], 7));
    let rtt = [
        Duration::from_millis(5),
        Duration::from_millis(20),
        Duration::from_millis(80),
    ];
    let mut share = [0u32; 3];
    for round in 0..3000 {
        let mut p = b.pick(None).unwrap();
        let i = index(&b, &p);
        tokio::time::advance(rtt[i]).await;
        p.responded();
        if round >= 500 {
            share[i] += 1;
        }
    }
    assert!(share[0] > share[1] && share[1] > share[2], "{share:?}");
    assert!(share[0] > 1250, "fastest has the majority: {share:?}");
}

#[tokio::test(start_paused = true)]
async fn pending_requests_spread_load() {
    // Equal latency: requests in flight make an endpoint costlier, so
    // held requests spread evenly instead of piling on one.
    let b = Balancer::new(endpoints(&[1, 1, 1, 1], 7));
    let held: Vec<Picked> = (0..400).map(|_| b.pick(None).unwrap()).collect();
    let mut count = [0u32; 4];
    for p in &held {
        count[index(&b, p)] += 1;
    }
    assert!(count.iter().all(|c| (80..=120).contains(c)), "{count:?}");
}

#[tokio::test(start_paused = true)]
async fn weights_are_respected() {
    let b = Balancer::new(endpoints(&[1, 3, 0], 7));
    let mut count = [0u32; 3];
    for _ in 0..4000 {
        let mut p = b.pick(None).unwrap();
        p.responded();
        count[index(&b, &p)] += 1;
    }
    assert_eq!(count[2], 0, "weight 0 is never drawn: {count:?}");
    let heavy = f64::from(count[1]) / 4000.0;
    assert!((0.65..0.85).contains(&heavy), "{count:?}");
}

#[tokio::test(start_paused = true)]
async fn ejected_endpoints_are_skipped_then_probed() {
    let b = Balancer::new(endpoints(&[1, 1], 2));
    let bad = b.endpoints()[0].clone();
    assert_eq!(bad.breaker.failure(Instant::now()), None);
    assert_eq!(
        bad.breaker.failure(Instant::now()),
        Some(Transition::Ejected)
    );
    for _ in 0..200 {
        let p = b.pick(None).unwrap();
        assert_eq!(index(&b, &p), 1, "the ejected endpoint is never picked");
        assert!(!p.probe);
    }
    // Both ejected: fail fast.
    let good = b.endpoints()[1].clone();
    good.breaker.failure(Instant::now());
    good.breaker.failure(Instant::now());
    assert_eq!(b.pick(None).unwrap_err(), PickError::AllEjected);
    // After the backoff one probe each; a dropped probe is retried.
    tokio::time::advance(Duration::from_millis(1200)).await;
    let p1 = b.pick(None).unwrap();
    let p2 = b.pick(None).unwrap();
    assert!(p1.probe && p2.probe);
    assert_eq!(b.pick(None).unwrap_err(), PickError::AllEjected);
    drop(p1);
    let p3 = b.pick(None).unwrap();
    assert!(p3.probe, "an abandoned probe lets another one through");
    assert_eq!(p3.success(), Some(Transition::Readmitted));
    assert!(b.pick(None).is_ok());
    assert_eq!(p2.failure(), Some(Transition::Ejected));
}

#[tokio::test(start_paused = true)]
async fn retries_avoid_the_failed_endpoint() {
    let b = Balancer::new(endpoints(&[1, 1, 1], 7));
    let first = b.endpoints()[0].clone();
    for _ in 0..300 {
        let p = b.pick(Some(&first)).unwrap();
        assert!(!Arc::ptr_eq(&p.endpoint, &first));
    }
    // A single endpoint is still used rather than failing.
    let one = Balancer::new(endpoints(&[1], 7));
    let only = one.endpoints()[0].clone();
    assert!(one.pick(Some(&only)).is_ok());
    assert_eq!(
        Balancer::new(Vec::new()).pick(None).unwrap_err(),
        PickError::NoEndpoints
    );
}

#[tokio::test(start_paused = true)]
async fn connections_spread_by_open_count() {
    let b = Balancer::new(endpoints(&[1, 1, 1], 7));
    // One endpoint connects faster, but open connections come first.
    let mut open = Vec::new();
    for _ in 0..30 {
        let mut p = b.pick_connection(None).unwrap();
        let i = index(&b, &p);
        tokio::time::advance(Duration::from_millis(if i == 0 { 1 } else { 20 })).await;
        p.responded();
        open.push(p.endpoint.open_connection());
    }
    let mut count = [0u32; 3];
    for c in &open {
        let i = b
            .endpoints()
            .iter()
            .position(|e| std::ptr::eq(&**e, c.endpoint_for_test()))
            .unwrap();
        count[i] += 1;
    }
    assert!(count.iter().all(|c| (7..=13).contains(c)), "{count:?}");
}
