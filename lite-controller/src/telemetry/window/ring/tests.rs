use super::*;
use crate::telemetry::parse::BOUNDS_MS;

/// A busy proxy's 10 s point: the shape `pimesh-bench`'s simulated
/// proxies give (about 235 requests, 12 latency buckets in use).
fn busy(at_ms: u64) -> Point {
    let mut p = Point {
        at_ms,
        dt_ms: 10_000,
        requests: 235,
        successes: 231,
        failures: 4,
        tcp_open: 6,
        read_bytes: 72_850,
        write_bytes: 145_700,
        ..Point::default()
    };
    for (i, c) in [1, 3, 6, 10, 25, 20, 15, 8, 5, 4, 2, 1].iter().enumerate() {
        p.buckets[i + 1] = c * 2;
    }
    p
}

fn packed_len(p: &impl Timed) -> usize {
    let mut out = Vec::new();
    p.pack(&mut out);
    out.len()
}

#[test]
fn points_are_packed_small() {
    // 168 bytes as a struct; the ring's record adds a gap and a length.
    assert_eq!(std::mem::size_of::<Point>(), 168);
    assert_eq!(packed_len(&busy(0)), 26);
    assert_eq!(packed_len(&Point::default()), 7, "an idle proxy's point");
    let edge = EdgePoint {
        at_ms: 0,
        dt_ms: 10_000,
        requests: 47,
        successes: 46,
        failures: 1,
    };
    assert_eq!(std::mem::size_of::<EdgePoint>(), 40);
    assert_eq!(packed_len(&edge), 3);
    // An hour at 10 s: 360 records of 3 (gap) + 1 (dt) + 1 (length) + 26
    // bytes (the first, dropped since, was 1 + 3 + 1 + 26: gap 0, dt 10 s).
    let mut r = Ring::default();
    for i in 0..400u64 {
        r.push(busy(i * 10_000), 361);
    }
    assert_eq!(r.len, 360);
    assert_eq!(r.bytes.len(), 360 * 31);
}

#[test]
fn every_value_round_trips() {
    let mut max = Point {
        at_ms: 3_000_000,
        dt_ms: u64::MAX,
        requests: u64::MAX,
        successes: u64::MAX - 1,
        failures: 1 << 63,
        tcp_open: u64::MAX,
        read_bytes: u64::MAX,
        write_bytes: 0,
        buckets: [u32::MAX; BOUNDS_MS.len()],
    };
    max.buckets[3] = 0;
    let idle = Point {
        at_ms: 1,
        ..Point::default()
    };
    let points = [busy(5_000), idle.clone(), max, busy(7_000)];
    let mut r = Ring::default();
    for p in points.clone() {
        r.push(p, 10);
    }
    // The time went back, forward and back: gaps are signed.
    assert_eq!(r.between(0, u64::MAX).collect::<Vec<_>>(), points[..]);
    assert_eq!(r.last(), Some(busy(7_000)));
    // The extremes of time (the retention keeps a point after a later one).
    let end = Point {
        at_ms: u64::MAX,
        ..busy(0)
    };
    let mut r = Ring::default();
    r.push(end.clone(), 10);
    r.push(idle.clone(), 10);
    assert_eq!(r.between(0, u64::MAX).collect::<Vec<_>>(), [end, idle]);
    let edges = [
        EdgePoint {
            at_ms: 20,
            dt_ms: u64::MAX,
            requests: u64::MAX,
            successes: 0,
            failures: 3,
        },
        EdgePoint {
            at_ms: 21,
            ..EdgePoint::default()
        },
    ];
    let mut r = Ring::default();
    for e in edges {
        r.push(e, 10);
    }
    assert_eq!(r.between(0, u64::MAX).collect::<Vec<_>>(), edges[..]);
    assert_eq!(r.last(), Some(edges[1]));
}

#[test]
fn windows_skip_records_outside_and_expiry_keeps_the_times() {
    let mut r = Ring::default();
    for i in 1..=10u64 {
        r.push(busy(i * 1000), 4);
    }
    // The cap kept 7..=10; each still has its own time.
    let at: Vec<u64> = r.between(0, u64::MAX).map(|p| p.at_ms).collect();
    assert_eq!(at, [7000, 8000, 9000, 10_000]);
    let at: Vec<u64> = r.between(7000, 9000).map(|p| p.at_ms).collect();
    assert_eq!(at, [8000, 9000]);
    assert_eq!(r.between(7000, 9000).next(), Some(busy(8000)));
    r.expire(8500);
    assert_eq!(r.between(0, u64::MAX).next(), Some(busy(9000)));
    assert_eq!(r.last(), Some(busy(10_000)));
    r.push(busy(11_000), 4);
    let at: Vec<u64> = r.between(0, u64::MAX).map(|p| p.at_ms).collect();
    assert_eq!(at, [9000, 10_000, 11_000]);
    r.expire(u64::MAX);
    assert!(r.is_empty());
    assert_eq!(r.last(), None);
    assert_eq!(r.between(0, u64::MAX).count(), 0);
    // Empty, it starts again from the next point's time.
    r.push(busy(50_000), 4);
    assert_eq!(r.between(0, u64::MAX).collect::<Vec<_>>(), [busy(50_000)]);
}

#[test]
fn varints_and_zigzag() {
    for v in [0, 1, 127, 128, 300, u64::from(u32::MAX), u64::MAX] {
        let mut out = Vec::new();
        put(&mut out, v);
        let mut r = Reader::new(out.iter().copied());
        assert_eq!(r.varint(), Some(v));
        assert_eq!(r.read, out.len());
    }
    let mut out = Vec::new();
    put(&mut out, 128);
    assert_eq!(out, [0x80, 0x01]);
    assert_eq!(
        Reader::new([0x80u8].into_iter()).varint(),
        None,
        "cut short"
    );
    for v in [0, 1, -1, 10_000, -10_000, i64::MAX, i64::MIN] {
        assert_eq!(unzigzag(zigzag(v)), v);
    }
    assert_eq!(zigzag(-1), 1);
    assert_eq!(zigzag(10_000), 20_000);
}

#[test]
fn authz_points_are_packed_small_and_round_trip() {
    assert_eq!(std::mem::size_of::<AuthzPoint>(), 32);
    let p = |at_ms, allowed, denied| AuthzPoint {
        at_ms,
        dt_ms: 10_000,
        allowed,
        denied,
    };
    assert_eq!(packed_len(&p(0, 47, 3)), 2);
    let mut r = Ring::default();
    for i in 0..400u64 {
        r.push(p(i * 10_000, 47, 3), 361);
    }
    // 3 (gap) + 1 (dt) + 1 (length) + 2 bytes a record.
    assert_eq!(r.bytes.len(), 360 * 7);
    let extremes = [p(5, u64::MAX, 0), p(6, 0, u64::MAX), p(4, 1, 1)];
    let mut r = Ring::default();
    for e in extremes {
        r.push(e, 10);
    }
    assert_eq!(r.between(0, u64::MAX).collect::<Vec<_>>(), extremes[..]);
    assert_eq!(r.last(), Some(extremes[2]));
}
