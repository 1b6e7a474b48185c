use super::*;
use pimesh_api::policy::inbound::RateLimitOverride;

const WEB: &str = "web.shop.serviceaccount.identity.pimesh.cluster.local";
const DB: &str = "db.shop.serviceaccount.identity.pimesh.cluster.local";
const MS: u64 = 1_000_000;

fn limit(
    total: Option<u32>,
    identity: Option<u32>,
    overrides: &[(u32, &[&str])],
) -> LocalRateLimit {
    LocalRateLimit::new(RateLimit {
        name: "rl".into(),
        total,
        identity,
        overrides: overrides
            .iter()
            .map(|(rps, ids)| RateLimitOverride {
                requests_per_second: *rps,
                identities: ids.iter().map(|i| i.to_string()).collect(),
            })
            .collect(),
    })
}

/// How many of `n` requests at `now` pass.
fn admitted(l: &LocalRateLimit, id: Option<&str>, n: usize, now: u64) -> usize {
    (0..n).filter(|_| l.check_at(id, now).is_ok()).count()
}

#[test]
fn a_full_bucket_admits_rps_at_once_then_one_per_interval() {
    let l = limit(Some(10), None, &[]);
    assert_eq!(admitted(&l, None, 50, 0), 10);
    assert_eq!(l.check_at(None, 0), Err(Limited::Total(10)));
    assert_eq!(admitted(&l, None, 5, 99 * MS), 0, "before one interval");
    assert_eq!(admitted(&l, None, 5, 100 * MS), 1);
    assert_eq!(admitted(&l, None, 50, 400 * MS), 3);
    // A second later the bucket is full again.
    assert_eq!(admitted(&l, None, 50, 2_000 * MS), 10);
}

#[test]
fn admitted_requests_never_exceed_the_gcra_bound() {
    // Pseudo-random arrivals: over any run from t0 to t, at most
    // rps + rps * (t - t0) requests pass (what the integration test checks
    // against the measured elapsed time), and the bound is reached when
    // requests keep coming.
    for rps in [1u32, 3, 10, 250] {
        let l = limit(Some(rps), None, &[]);
        let (mut now, mut seed, mut passed) = (5 * MS, 7u64, 0u64);
        let t0 = now;
        for _ in 0..20_000 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            now += (seed >> 33) % (3 * MS);
            passed += u64::from(l.check_at(None, now).is_ok());
            let bound = u64::from(rps) + u64::from(rps) * (now - t0) / NANOS_PER_SEC;
            assert!(passed <= bound, "rps {rps}: {passed} > {bound} at {now}");
        }
        let bound = u64::from(rps) + u64::from(rps) * (now - t0) / NANOS_PER_SEC;
        assert!(
            passed + 1 >= bound.min(20_000),
            "rps {rps}: only {passed} of {bound}"
        );
    }
}

#[test]
fn each_identity_has_its_bucket_and_clients_without_one_share_one() {
    let l = limit(None, Some(3), &[]);
    assert_eq!(admitted(&l, Some(WEB), 10, 0), 3);
    assert_eq!(l.check_at(Some(WEB), 0), Err(Limited::PerIdentity(3)));
    assert_eq!(admitted(&l, Some(DB), 10, 0), 3, "another identity passes");
    assert_eq!(admitted(&l, None, 10, 0), 3, "the unauthenticated bucket");
    assert_eq!(admitted(&l, None, 10, 0), 0, "shared by all of them");
}

#[test]
fn an_override_replaces_the_identity_limit_and_total_comes_first() {
    let l = limit(Some(100), Some(2), &[(20, &[DB, "ops.x"])]);
    assert_eq!(admitted(&l, Some(WEB), 10, 0), 2);
    assert_eq!(
        admitted(&l, Some(DB), 15, 0),
        15,
        "above the identity limit"
    );
    // The override's bucket is shared by the identities it names.
    assert_eq!(admitted(&l, Some("ops.x"), 10, 0), 5);
    assert_eq!(l.check_at(Some("ops.x"), 0), Err(Limited::Override(20)));
    assert_eq!(Limited::Override(20).scope(), "identity");
    // Total is checked first, for every client: WEB's 3 leave DB 1 of 4.
    let l = limit(Some(4), Some(3), &[]);
    assert_eq!(admitted(&l, Some(WEB), 3, 0), 3);
    assert_eq!(admitted(&l, Some(DB), 3, 0), 1);
    let e = l.check_at(Some(DB), 0).unwrap_err();
    assert_eq!((e, e.scope()), (Limited::Total(4), "total"));
    assert_eq!(e.to_string(), "total rate limit exceeded: 4rps");
}

#[test]
fn no_rate_panics_and_zero_means_no_limit() {
    let l = limit(Some(0), Some(0), &[(0, &[WEB])]);
    assert_eq!(admitted(&l, Some(WEB), 100, 0), 100);
    for rps in [1, 2, 999_999_999, 1_000_000_000, 1_000_000_001, u32::MAX] {
        let l = limit(Some(rps), Some(rps), &[(rps, &[WEB])]);
        for now in [0, 1, u64::MAX / 2, u64::MAX - 1, u64::MAX] {
            let _ = l.check_at(Some(WEB), now);
            let _ = l.check_at(None, now);
        }
        let fresh = limit(Some(rps), Some(rps), &[(rps, &[WEB])]);
        assert_eq!(fresh.check(Some(WEB)), Ok(()));
    }
}

#[test]
fn identity_buckets_stay_bounded() {
    let l = limit(None, Some(1), &[]);
    for i in 0..(3 * MAX_IDENTITY_BUCKETS) {
        // Each client's bucket is full again after a second.
        let now = (i as u64 / 100) * NANOS_PER_SEC;
        assert!(l.check_at(Some(&format!("c{i}")), now).is_ok());
    }
    let Some(k) = &l.identity else { panic!() };
    let len = k.tats.lock().unwrap().1.len();
    assert!(len <= MAX_IDENTITY_BUCKETS, "{len}");
}

#[test]
fn equal_specs_are_equal_limiters() {
    let a = limit(Some(10), None, &[]);
    let b = limit(Some(10), None, &[]);
    assert_eq!(admitted(&a, None, 10, 0), 10);
    assert_eq!(a, b, "the buckets' state is not compared");
    assert_ne!(a, limit(Some(11), None, &[]));
    assert_eq!(&*a.name, "rl");
    assert_eq!(a.spec().total, Some(10));
}
