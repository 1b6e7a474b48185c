use super::*;
use crate::telemetry::state::TargetState;
use crate::telemetry::window::Point;

fn targets(minute: u64) -> Targets {
    let mut t = TargetState::default();
    t.listed = true;
    t.up = true;
    t.given.insert("namespace".into(), "shop".into());
    t.given.insert("deployment".into(), "web".into());
    for i in 0..60u64 {
        let mut p = Point {
            at_ms: (minute + i) * 1000 + 500,
            dt_ms: 1000,
            requests: 10,
            successes: 9,
            failures: 1,
            tcp_open: 2,
            ..Point::default()
        };
        p.buckets[7] = 10;
        t.inbound.push(p, 10_000);
    }
    [("127.0.0.1:1".parse().unwrap(), t)].into()
}

#[test]
fn writes_minutes_in_batches_and_reads_them_back() {
    let dir = pimesh_test_support::TempDir::new("history");
    let store = Store::open(dir.path()).unwrap();
    let m = 1_795_228_800; // a multiple of 60
    let mut h = History::open(&store, m + 5).unwrap();
    let ts = targets(m);
    // The minute is not complete yet: nothing written, but it shows from memory.
    let pending = h.prepare(&ts, m + 30);
    assert_eq!(h.write(pending).unwrap(), 0);
    let mut s = h.stored("shop/web", 10, m + 30).unwrap();
    assert!(s.points.is_empty());
    h.live(&mut s, &ts, m + 30);
    assert_eq!(s.points.len(), 3, "slots that ended: {s:?}");
    assert_eq!(s.points[0].rps, 10.0);
    assert_eq!(s.points[0].success, Some(0.9));
    assert_eq!(s.points[0].p50, Some(25.0));
    // A minute later it is written: one record per table.
    let pending = h.prepare(&ts, m + 61);
    let bytes = h.write(pending).unwrap();
    assert!(
        bytes > 0 && bytes < 2000,
        "{bytes} bytes for one workload-minute"
    );
    assert_eq!(h.records(), (1, 1));
    let s = h.stored("shop/web", 60, m + 61).unwrap();
    assert_eq!(s.points.len(), 1);
    assert_eq!(s.points[0].rps, 10.0);
    let s = h.stored("shop/web", 10, m + 61).unwrap();
    assert_eq!(s.points.len(), 6);
    // After a restart, history resumes after what is stored.
    drop(h);
    let h = History::open(&store, m + 70).unwrap();
    assert_eq!(h.written_until, m);
    // Expired records are pruned: 10 s after an hour, 1 min after a day.
    let mut h = h;
    let pending = h.prepare(&Targets::new(), m + RETENTION_10S + 120);
    h.write(pending).unwrap();
    assert_eq!(h.records(), (0, 1));
    let pending = h.prepare(&Targets::new(), m + RETENTION_1M + 120);
    h.write(pending).unwrap();
    assert_eq!(h.records(), (0, 0));
}
