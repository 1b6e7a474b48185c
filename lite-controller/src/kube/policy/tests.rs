//! The policy index: relists swap in whole, missing CRDs count as listed
//! and empty, and nothing is published before every kind is known.

use super::*;
use serde_json::json;

fn server(name: &str, port: u16) -> Policy {
    Policy::parse(json!({
        "apiVersion": "policy.pimesh.io/v1alpha1",
        "kind": "Server",
        "metadata": {"name": name, "namespace": "shop",
                     "creationTimestamp": "2026-01-01T00:00:00Z"},
        "spec": {"podSelector": {"matchLabels": {"app": "api"}}, "port": port},
    }))
    .unwrap()
}

fn names(i: &Index) -> Vec<String> {
    i.resources().iter().map(|r| r.to_string()).collect()
}

#[test]
fn relist_swaps_in_whole_and_drops_what_it_did_not_list() {
    let mut i = Index::default();
    assert!(!i.apply(0, Change::Init));
    assert!(!i.apply(0, Change::InitApply("shop/a".into(), Some(server("a", 80)))));
    assert!(names(&i).is_empty(), "nothing before the list ends");
    assert!(i.apply(0, Change::InitDone));
    assert_eq!(names(&i), ["Server shop/a"]);
    assert!(!i.all_known(), "four kinds not listed yet");

    assert!(i.apply(0, Change::Apply("shop/b".into(), Some(server("b", 81)))));
    assert!(
        !i.apply(0, Change::Apply("shop/b".into(), Some(server("b", 81)))),
        "unchanged"
    );
    assert!(i.apply(0, Change::Apply("shop/b".into(), Some(server("b", 82)))));
    // A relist listing only b: a is gone at its end.
    i.apply(0, Change::Init);
    i.apply(0, Change::InitApply("shop/b".into(), Some(server("b", 82))));
    assert_eq!(names(&i).len(), 2);
    assert!(i.apply(0, Change::InitDone));
    assert_eq!(names(&i), ["Server shop/b"]);
    // The same relist again changes nothing.
    i.apply(0, Change::Init);
    i.apply(0, Change::InitApply("shop/b".into(), Some(server("b", 82))));
    assert!(!i.apply(0, Change::InitDone));
    // Invalid (None) and deleted objects are absent.
    assert!(i.apply(0, Change::Apply("shop/b".into(), None)));
    assert!(names(&i).is_empty());
    assert!(!i.apply(0, Change::Delete("shop/b".into())));
}

#[test]
fn a_missing_crd_counts_as_listed_and_empty_until_it_is_listed() {
    let mut i = Index::default();
    for k in 0..N {
        assert!(!i.all_known());
        assert!(i.not_installed(k));
    }
    assert!(i.all_known() && i.any_missing() && i.routes_missing());
    assert!(!i.not_installed(0), "still missing: no change");
    // A retry's `Init` does not prove the CRD is there.
    i.apply(0, Change::Init);
    assert!(i.any_missing());
    for k in 0..N {
        i.apply(k, Change::Init);
        if k == 0 {
            i.apply(k, Change::InitApply("shop/a".into(), Some(server("a", 80))));
        }
        assert!(i.apply(k, Change::InitDone), "kind {k} installed");
    }
    assert!(!i.any_missing() && !i.routes_missing());
    assert_eq!(names(&i), ["Server shop/a"]);
    assert_eq!(i.counts(), [1, 0, 0, 0, 0, 0, 0]);
    // The CRD deleted: its objects go.
    assert!(i.not_installed(0));
    assert!(names(&i).is_empty());
}

#[tokio::test]
async fn snapshots_are_published_once_every_kind_is_known() {
    let shared = Shared::new(KubeMetrics::default());
    let snaps = shared.snapshots();
    let mut rx = snaps.subscribe();
    shared.update(|i| {
        i.apply(0, Change::Init);
        i.apply(0, Change::InitApply("shop/a".into(), Some(server("a", 80))));
        i.apply(0, Change::InitDone)
    });
    assert_eq!(snaps.latest().revision, 0, "the other kinds unknown");
    for k in 1..N {
        shared.update(|i| i.not_installed(k));
    }
    assert!(rx.has_changed().unwrap());
    let s = rx.borrow_and_update().clone();
    assert_eq!(s.revision, 1);
    assert_eq!(s.resources.len(), 1);
    assert_eq!(snaps.statuses()[0].name, "a");
    // An unchanged update publishes nothing.
    shared.update(|i| i.apply(0, Change::Apply("shop/a".into(), Some(server("a", 80)))));
    assert!(!rx.has_changed().unwrap());
    shared.update(|i| i.apply(0, Change::Delete("shop/a".into())));
    assert_eq!(rx.borrow_and_update().resources.len(), 0);
}
