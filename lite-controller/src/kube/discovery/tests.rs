//! Unit tests of the discovery index and the Service → record mapping.

use super::*;
use crate::kube::objects::{ServicePort, SliceEndpoint};
use crate::kube::{KubeMetrics, Status};
use pimesh_api::discovery::ProtocolHint;

fn svc(ports: &[(&str, u16)], opaque: Vec<(u16, u16)>) -> ServiceLite {
    ServiceLite {
        namespace: "shop".into(),
        name: "web".into(),
        ports: ports
            .iter()
            .map(|(n, p)| ServicePort {
                name: n.to_string(),
                port: *p,
            })
            .collect(),
        cluster_ips: vec!["10.43.0.10".parse().unwrap()],
        opaque,
    }
}

fn slice(ports: &[(&str, u16)], eps: &[(&str, Option<&str>)]) -> SliceLite {
    SliceLite {
        namespace: "shop".into(),
        service: Some("web".into()),
        ports: ports.iter().map(|(n, p)| (n.to_string(), *p)).collect(),
        endpoints: eps
            .iter()
            .map(|(ip, pod)| SliceEndpoint {
                ip: ip.parse().unwrap(),
                pod: pod.map(str::to_string),
            })
            .collect(),
    }
}

fn pod(name: &str, ip: &str, meshed: bool) -> PodLite {
    PodLite {
        name: name.into(),
        service_account: "web-sa".into(),
        meshed,
        ip: Some(ip.parse().unwrap()),
        owner: Some(("deployment", "web".into())),
        opaque: vec![],
    }
}

#[test]
fn record_maps_ports_identity_labels_and_proxy_addrs() {
    let s = svc(&[("http", 80), ("admin", 9000)], vec![(9000, 9000)]);
    let sl = slice(
        &[("http", 8080), ("admin", 9090)],
        &[
            ("10.42.0.7", Some("web-1")),
            ("10.42.0.8", Some("web-2")),
            ("10.42.0.9", None),
        ],
    );
    let p1 = pod("web-1", "10.42.0.7", true);
    let p2 = pod("web-2", "10.42.0.8", false);
    let rec = service_record(&s, [&sl].into_iter(), |n| match n {
        "web-1" => Some(&p1),
        "web-2" => Some(&p2),
        _ => None,
    });
    assert_eq!(
        rec.ports.iter().copied().collect::<Vec<_>>(),
        vec![80, 9000]
    );
    assert_eq!(
        rec.cluster_ips,
        vec!["10.43.0.10".parse::<std::net::IpAddr>().unwrap()]
    );
    let http: Vec<_> = rec.endpoints.iter().filter(|e| e.port == 80).collect();
    assert_eq!(http.len(), 3);
    let meshed = http[0];
    assert_eq!(meshed.addr, "10.42.0.7:8080".parse().unwrap());
    assert_eq!(
        meshed.identity.as_ref().map(|i| i.to_string()).as_deref(),
        Some("shop/web-sa")
    );
    assert_eq!(meshed.admin_addr, Some("10.42.0.7:4191".parse().unwrap()));
    assert_eq!(meshed.tap_addr, Some("10.42.0.7:4190".parse().unwrap()));
    assert_eq!(meshed.proxy_addr, None);
    assert_eq!(meshed.weight, 10_000);
    assert_eq!(meshed.source, Source::Kubernetes);
    assert_eq!(meshed.protocol, ProtocolHint::Unknown);
    assert_eq!(meshed.labels.get("pod").map(String::as_str), Some("web-1"));
    assert_eq!(
        meshed.labels.get("serviceaccount").map(String::as_str),
        Some("web-sa")
    );
    assert_eq!(
        meshed.labels.get("deployment").map(String::as_str),
        Some("web")
    );
    // Unmeshed: plaintext, not scraped; labels still given.
    let plain = http[1];
    assert_eq!(
        (plain.identity.clone(), plain.admin_addr, plain.tap_addr),
        (None, None, None)
    );
    assert_eq!(plain.labels.get("pod").map(String::as_str), Some("web-2"));
    // No pod behind it: no labels.
    assert!(http[2].labels.is_empty());
    // Port 9000 → target 9090, opaque by the Service's annotation.
    let admin: Vec<_> = rec.endpoints.iter().filter(|e| e.port == 9000).collect();
    assert_eq!(admin[0].addr, "10.42.0.7:9090".parse().unwrap());
    assert!(admin.iter().all(|e| e.protocol == ProtocolHint::Opaque));
}

#[test]
fn pod_opaque_ports_are_target_ports() {
    let s = svc(&[("", 6379)], vec![]);
    let sl = slice(&[("", 16379)], &[("10.42.0.7", Some("redis-0"))]);
    let mut p = pod("redis-0", "10.42.0.7", true);
    p.opaque = vec![(16379, 16379)];
    let rec = service_record(&s, [&sl].into_iter(), |_| Some(&p));
    assert_eq!(rec.endpoints.len(), 1);
    assert_eq!(rec.endpoints[0].addr, "10.42.0.7:16379".parse().unwrap());
    assert_eq!(rec.endpoints[0].protocol, ProtocolHint::Opaque);
}

#[test]
fn index_recomputes_only_affected_services_and_relists() {
    let mut ix = Index::default();
    assert_eq!(
        ix.apply_service("shop/web".into(), Some(svc(&[("http", 80)], vec![]))),
        vec!["shop/web"]
    );
    // Unchanged: nothing to recompute.
    assert!(ix
        .apply_service("shop/web".into(), Some(svc(&[("http", 80)], vec![])))
        .is_empty());
    let sl = slice(&[("http", 8080)], &[("10.42.0.7", Some("web-1"))]);
    assert_eq!(
        ix.apply_slice("shop/web-abc".into(), Some(sl.clone())),
        vec!["shop/web"]
    );
    assert!(ix.apply_slice("shop/web-abc".into(), Some(sl)).is_empty());
    // A pod named by the slice affects the service; another does not.
    assert_eq!(
        ix.apply_pod("shop/web-1".into(), Some(pod("web-1", "10.42.0.7", true))),
        vec!["shop/web"]
    );
    assert!(ix
        .apply_pod("shop/other".into(), Some(pod("other", "10.42.0.99", true)))
        .is_empty());
    assert!(ix
        .apply_pod("shop/web-1".into(), Some(pod("web-1", "10.42.0.7", true)))
        .is_empty());
    let rec = ix.record("shop/web").unwrap();
    assert_eq!(rec.endpoints.len(), 1);
    assert!(rec.endpoints[0].identity.is_some());
    // Unmeshing the pod changes the record.
    assert_eq!(
        ix.apply_pod("shop/web-1".into(), Some(pod("web-1", "10.42.0.7", false))),
        vec!["shop/web"]
    );
    assert!(ix.record("shop/web").unwrap().endpoints[0]
        .identity
        .is_none());
    // A relist that no longer lists the slice drops it (and its endpoints).
    ix.relist_begin(Resource3::EndpointSlices);
    assert_eq!(ix.relist_end(Resource3::EndpointSlices), vec!["shop/web"]);
    assert!(ix.record("shop/web").unwrap().endpoints.is_empty());
    assert_eq!(ix.counts(), [1, 0, 2]);
    // A relist that lists the service keeps it.
    ix.relist_begin(Resource3::Services);
    ix.relist_seen(Resource3::Services, "shop/web");
    assert!(ix.relist_end(Resource3::Services).is_empty());
    assert_eq!(ix.apply_service("shop/web".into(), None), vec!["shop/web"]);
    assert_eq!(ix.record("shop/web"), None);
    assert!(ix.slices_by_pod.is_empty());
}

#[test]
fn nothing_is_published_before_all_three_resources_are_listed() {
    let dir = pimesh_test_support::TempDir::new("kube-publish");
    let store = crate::store::Store::open(dir.path()).unwrap();
    let registry = Arc::new(Registry::kubernetes(&store, "cluster.local").unwrap());
    let shared = Shared::new(
        registry.clone(),
        Arc::new(Status::default()),
        KubeMetrics::default(),
    );
    let mut ix = Index::default();
    let affected = ix.apply_service("shop/web".into(), Some(svc(&[("http", 80)], vec![])));
    shared.status.listed(Resource3::Services);
    shared.status.listed(Resource3::EndpointSlices);
    shared.publish(&ix, affected);
    assert!(registry.services(None).is_empty());
    assert!(!shared.status.ready());
    // The pods' list completes: every service is published at once.
    shared.status.listed(Resource3::Pods);
    shared.publish(&ix, Vec::new());
    assert_eq!(registry.services(None).len(), 1);
    assert!(shared.status.ready());
    // A failing watch makes it unready until it recovers.
    let e = std::io::Error::other("connection refused");
    shared.status.failed(Resource3::Pods, &e);
    assert!(!shared.status.ready() && shared.status.reason().contains("pods"));
    shared.status.recovered(Resource3::Pods);
    assert!(shared.status.ready());
}
