//! Unit tests of the registry: registration and renewal, leases and their
//! grace at start, operator changes, resolution, and the revision across
//! reopening the store.

use super::*;
use model::{AddEndpoints, SetPolicy};
use pimesh_api::discovery::{ServiceName, ServicePolicy};
use pimesh_test_support::TempDir;
use watch::Destination;

const TTL: Duration = Duration::from_secs(30);

fn open(dir: &TempDir, now: Instant) -> Registry {
    Registry::open(&Store::open(dir.path()).unwrap(), TTL, "cluster.local", now).unwrap()
}

fn reg(service: &str, port: u16, addr: &str) -> Registration {
    Registration {
        token: "unused".into(),
        service: service.into(),
        port,
        addr: addr.parse().unwrap(),
        proxy_addr: None,
        admin_addr: Some("127.0.0.1:4191".parse().unwrap()),
        tap_addr: None,
        protocol: Default::default(),
        labels: [("pod".to_string(), "web-1".to_string())].into(),
    }
}

fn id(s: &str) -> Identity {
    s.parse().unwrap()
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
fn register_renew_expire() {
    let dir = TempDir::new("reg-lease");
    let t0 = Instant::now();
    let r = open(&dir, t0);
    assert_eq!(r.revision(), 0);
    let lease = r
        .register(&reg("web", 80, "10.0.0.1:80"), &id("shop/web"), "t1", t0)
        .unwrap();
    assert_eq!(
        lease,
        Lease {
            ttl_secs: 30,
            revision: 1
        }
    );
    // A renewal that changes nothing keeps the revision (and writes nothing).
    let lease = r
        .register(
            &reg("web", 80, "10.0.0.1:80"),
            &id("shop/web"),
            "t1",
            t0 + Duration::from_secs(20),
        )
        .unwrap();
    assert_eq!(lease.revision, 1);
    let snap = r.resolve(&name("web", "shop", 80));
    assert!(snap.resolution.exists);
    assert_eq!(snap.modified, 1);
    let ep = &snap.resolution.endpoints[0];
    assert_eq!(ep.identity, Some(id("shop/web")));
    assert_eq!(ep.labels["namespace"], "shop");
    assert_eq!(ep.labels["service"], "web");
    assert_eq!(ep.labels["pod"], "web-1");
    assert_eq!(
        snap.resolution.service.as_deref(),
        Some("web.shop.svc.cluster.local")
    );
    // Another port of the service is not known; another namespace neither.
    assert!(!r.resolve(&name("web", "shop", 81)).resolution.exists);
    assert!(!r.resolve(&name("web", "other", 80)).resolution.exists);

    // Expiry counts from the renewal.
    assert_eq!(r.expire(t0 + Duration::from_secs(40)).unwrap(), 0);
    assert_eq!(r.expire(t0 + Duration::from_secs(51)).unwrap(), 1);
    let snap = r.resolve(&name("web", "shop", 80));
    assert!(snap.resolution.exists, "the service stays, empty");
    assert!(snap.resolution.endpoints.is_empty());
    assert_eq!(snap.revision, 2);
    assert_eq!(r.endpoints().len(), 0);
}

#[test]
fn revision_and_leases_survive_reopen() {
    let dir = TempDir::new("reg-reopen");
    let t0 = Instant::now();
    {
        let r = open(&dir, t0);
        r.register(&reg("web", 80, "10.0.0.1:80"), &id("shop/web"), "t", t0)
            .unwrap();
        r.register(&reg("db", 5432, "10.0.0.2:5432"), &id("shop/db"), "t", t0)
            .unwrap();
        r.set_policy(
            "shop",
            "web",
            &SetPolicy {
                clear: false,
                policy: ServicePolicy {
                    retry_limit: Some(2),
                    ..Default::default()
                },
            },
        )
        .unwrap();
        // Removing the service with the highest revision: the counter is kept.
        r.remove("shop", "web", &[]).unwrap();
        assert_eq!(r.revision(), 4);
        r.add_endpoints(
            "shop",
            "web",
            &AddEndpoints {
                port: 80,
                endpoints: vec!["192.168.1.5:80".parse().unwrap()],
                ..Default::default()
            },
        )
        .unwrap();
        r.set_policy(
            "shop",
            "web",
            &SetPolicy {
                clear: false,
                policy: ServicePolicy {
                    timeout_ms: Some(2000),
                    ..Default::default()
                },
            },
        )
        .unwrap();
        r.remove("shop", "web", &[]).unwrap();
        assert_eq!(r.revision(), 7);
    }
    // Long after every lease would have run out: a fresh TTL at start.
    let later = t0 + Duration::from_secs(3600);
    let r = open(&dir, later);
    assert_eq!(r.revision(), 7, "never backwards");
    assert_eq!(r.expire(later + Duration::from_secs(29)).unwrap(), 0);
    let db = r.service("shop", "db").unwrap();
    assert_eq!(db.endpoints.len(), 1);
    assert!(db.endpoints[0].lease_expires_unix.is_some());
    assert!(r.service("shop", "web").is_none());
    assert_eq!(r.expire(later + Duration::from_secs(31)).unwrap(), 1);
    assert_eq!(r.revision(), 8);
}

#[test]
fn operator_endpoints_policy_and_addresses() {
    let dir = TempDir::new("reg-op");
    let t0 = Instant::now();
    let r = open(&dir, t0);
    let add = AddEndpoints {
        port: 5432,
        endpoints: vec!["192.168.1.5:5432".parse().unwrap()],
        identity: None,
        labels: [("deployment".to_string(), "pg".to_string())].into(),
        ..Default::default()
    };
    let info = r.add_endpoints("data", "pg", &add).unwrap();
    assert_eq!(info.ports, vec![5432]);
    assert_eq!(info.endpoints[0].source, Source::Operator);
    assert_eq!(info.endpoints[0].lease_expires_unix, None);
    let rev = r.revision();
    // The same again changes nothing.
    r.add_endpoints("data", "pg", &add).unwrap();
    assert_eq!(r.revision(), rev);
    // No lease: never expires.
    assert_eq!(r.expire(t0 + Duration::from_secs(1_000_000)).unwrap(), 0);

    // By address (addr or proxy_addr), to the endpoint's service and port.
    let snap = r.resolve(&Destination::Addr("192.168.1.5:5432".parse().unwrap()));
    assert!(snap.resolution.exists);
    assert_eq!(snap.resolution.port, 5432);
    let mut web = reg("web", 80, "10.0.0.1:8080");
    web.proxy_addr = Some("10.0.0.1:4143".parse().unwrap());
    r.register(&web, &id("shop/web"), "t", t0).unwrap();
    let snap = r.resolve(&Destination::Addr("10.0.0.1:4143".parse().unwrap()));
    assert_eq!(
        snap.resolution.service.as_deref(),
        Some("web.shop.svc.cluster.local")
    );
    assert_eq!(snap.resolution.port, 80);
    assert!(
        !r.resolve(&Destination::Addr("10.0.0.1:9999".parse().unwrap()))
            .resolution
            .exists
    );

    // Policy: merged, validated, cleared; unknown service → NotFound.
    let set = |clear, policy| SetPolicy { clear, policy };
    let p = r
        .set_policy(
            "data",
            "pg",
            &set(
                false,
                ServicePolicy {
                    timeout_ms: Some(2000),
                    ..Default::default()
                },
            ),
        )
        .unwrap()
        .policy;
    assert_eq!(p.timeout_ms, Some(2000));
    let p = r
        .set_policy(
            "data",
            "pg",
            &set(
                false,
                ServicePolicy {
                    retry_limit: Some(3),
                    ..Default::default()
                },
            ),
        )
        .unwrap()
        .policy;
    assert_eq!((p.timeout_ms, p.retry_limit), (Some(2000), Some(3)));
    let rev = r.revision();
    let bad = ServicePolicy {
        retry_budget_ratio: Some(2.0),
        ..Default::default()
    };
    assert!(matches!(
        r.set_policy("data", "pg", &set(false, bad)),
        Err(Error::Invalid(_))
    ));
    assert_eq!(r.revision(), rev, "nothing stored");
    let p = r
        .set_policy("data", "pg", &set(true, ServicePolicy::default()))
        .unwrap()
        .policy;
    assert_eq!(p, ServicePolicy::default());
    assert!(matches!(
        r.set_policy("data", "nope", &set(true, ServicePolicy::default())),
        Err(Error::NotFound(_))
    ));

    // Removing one endpoint; an unknown one is NotFound.
    assert!(matches!(
        r.remove("data", "pg", &["192.168.1.9:5432".parse().unwrap()]),
        Err(Error::NotFound(_))
    ));
    let info = r
        .remove("data", "pg", &["192.168.1.5:5432".parse().unwrap()])
        .unwrap();
    assert!(info.endpoints.is_empty());
}

#[test]
fn bad_registrations_store_nothing_and_owners_deregister() {
    let dir = TempDir::new("reg-bad");
    let t0 = Instant::now();
    let r = open(&dir, t0);
    let web = id("shop/web");
    for bad in [
        reg("Web", 80, "10.0.0.1:80"),
        reg("web", 0, "10.0.0.1:80"),
        reg("web", 80, "0.0.0.0:80"),
        reg("web", 80, "10.0.0.1:0"),
    ] {
        assert!(
            matches!(r.register(&bad, &web, "t", t0), Err(Error::Invalid(_))),
            "{bad:?}"
        );
    }
    let mut labels = reg("web", 80, "10.0.0.1:80");
    labels.labels.insert("bad key".into(), "v".into());
    assert!(r.register(&labels, &web, "t", t0).is_err());
    assert_eq!(r.revision(), 0);
    assert!(r.services(None).is_empty());

    let ok = reg("web", 80, "10.0.0.1:80");
    r.register(&ok, &web, "t", t0).unwrap();
    // Another identity of the namespace cannot drop it.
    assert!(matches!(
        r.deregister(&ok, &id("shop/other")),
        Err(Error::NotOwner)
    ));
    assert_eq!(r.deregister(&ok, &web).unwrap(), 2);
    // Idempotent.
    assert_eq!(r.deregister(&ok, &web).unwrap(), 2);
    assert!(r.service("shop", "web").unwrap().endpoints.is_empty());
}

#[test]
fn kubernetes_records_are_in_memory_and_change_only_when_different() {
    let dir = TempDir::new("registry-kube");
    let store = Store::open(dir.path()).unwrap();
    let r = Registry::kubernetes(&store, "cluster.local").unwrap();
    let mut changes = r.subscribe();
    let mut rec = ServiceRecord::new("shop", "web", 0);
    rec.ports.insert(80);
    rec.cluster_ips = vec!["10.43.0.10".parse().unwrap()];
    rec.upsert(EndpointRecord {
        port: 80,
        addr: "10.42.0.7:8080".parse().unwrap(),
        proxy_addr: None,
        admin_addr: None,
        tap_addr: None,
        identity: Some(id("shop/web")),
        weight: Endpoint::DEFAULT_WEIGHT,
        protocol: Default::default(),
        labels: Default::default(),
        source: Source::Kubernetes,
        token_id: None,
    });
    assert_eq!(
        r.set_kubernetes_service("shop/web", Some(rec.clone())),
        Some(1)
    );
    assert!(changes.has_changed().unwrap());
    changes.borrow_and_update();
    // The same record again: no revision, no notification.
    assert_eq!(
        r.set_kubernetes_service("shop/web", Some(rec.clone())),
        None
    );
    assert!(!changes.has_changed().unwrap());
    // Resolves by name, by endpoint address and by ClusterIP:port.
    let by_name = r.resolve(&name("web", "shop", 80));
    assert!(by_name.resolution.exists);
    assert_eq!(
        by_name.resolution.endpoints[0].identity,
        Some(id("shop/web"))
    );
    for a in ["10.42.0.7:8080", "10.43.0.10:80"] {
        let snap = r.resolve(&Destination::Addr(a.parse().unwrap()));
        assert!(snap.resolution.exists, "{a}");
        assert_eq!(snap.resolution.port, 80, "{a}");
    }
    assert!(
        !r.resolve(&Destination::Addr("10.43.0.10:81".parse().unwrap()))
            .resolution
            .exists
    );
    // Nothing was written: standalone's tables stay empty.
    assert!(store
        .table::<ServiceRecord>("services")
        .unwrap()
        .all()
        .unwrap()
        .is_empty());
    // Standalone changes are refused.
    let e = r.register(
        &reg("web", 80, "10.0.0.9:80"),
        &id("shop/web"),
        "t",
        Instant::now(),
    );
    assert_eq!(e.unwrap_err().code(), "kubernetes_mode");
    let e = r.add_endpoints(
        "shop",
        "web",
        &AddEndpoints {
            port: 80,
            ..Default::default()
        },
    );
    assert_eq!(e.unwrap_err().status(), 409);
    assert_eq!(r.set_kubernetes_service("shop/web", None), Some(2));
    assert!(!r.resolve(&name("web", "shop", 80)).resolution.exists);
}

#[test]
fn replicas_sharing_an_address_have_their_own_leases() {
    let dir = TempDir::new("reg-replicas");
    let t0 = Instant::now();
    let r = open(&dir, t0);
    let replica = |proxy: &str| {
        let mut g = reg("web", 80, "10.0.0.1:80");
        g.proxy_addr = Some(proxy.parse().unwrap());
        g
    };
    let (a, b) = (replica("10.0.0.1:4143"), replica("10.0.0.1:4144"));
    r.register(&a, &id("shop/web"), "t1", t0).unwrap();
    let rev = r.register(&b, &id("shop/web"), "t1", t0).unwrap().revision;
    assert_eq!(r.service("shop", "web").unwrap().endpoints.len(), 2);
    // Only `a` renews: `b`'s lease runs out alone.
    let half = t0 + TTL / 2;
    assert_eq!(
        r.register(&a, &id("shop/web"), "t1", half)
            .unwrap()
            .revision,
        rev
    );
    assert_eq!(r.expire(t0 + TTL + Duration::from_secs(1)).unwrap(), 1);
    let left = r.service("shop", "web").unwrap().endpoints;
    assert_eq!(left.len(), 1);
    assert_eq!(left[0].endpoint.proxy_addr, a.proxy_addr);
    assert!(left[0].lease_expires_unix.is_some());
    // Another identity on `a`'s (port, addr, proxy_addr): a conflict.
    let e = r.register(&a, &id("shop/other"), "t2", half).unwrap_err();
    assert_eq!((e.code(), e.status()), ("endpoint_conflict", 409));
    assert!(e.to_string().contains("shop/web"), "{e}");
    // An operator endpoint at the address replaces the registered ones.
    r.add_endpoints(
        "shop",
        "web",
        &AddEndpoints {
            port: 80,
            endpoints: vec!["10.0.0.1:80".parse().unwrap()],
            ..AddEndpoints::default()
        },
    )
    .unwrap();
    let eps = r.service("shop", "web").unwrap().endpoints;
    assert_eq!(eps.len(), 1);
    assert_eq!(
        (eps[0].source, eps[0].lease_expires_unix),
        (Source::Operator, None)
    );
}
