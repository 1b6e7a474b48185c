use super::superseded;
use crate::policy::index::statuses;
use crate::policy::resource::Resource;
use serde_json::{json, Value};

/// A Server in `shop` created at second `created` (none: `None`).
fn server(name: &str, created: Option<u32>, port: Value, selector: Value) -> Resource {
    let mut doc = json!({
        "apiVersion": "policy.pimesh.io/v1alpha1",
        "kind": "Server",
        "metadata": {"name": name, "namespace": "shop"},
        "spec": {"podSelector": selector, "port": port},
    });
    if let Some(s) = created {
        doc["metadata"]["creationTimestamp"] = json!(format!("2026-12-01T00:00:{s:02}Z"));
    }
    Resource::parse(doc).unwrap()
}

fn api() -> Value {
    json!({"matchLabels": {"app": "api"}})
}

/// The reason each Server of `all` is not applied (`None`: applied).
fn reasons(all: &[Resource]) -> Vec<(String, Option<String>)> {
    statuses(all)
        .into_iter()
        .map(|s| (s.name, s.reason))
        .collect()
}

#[test]
fn the_younger_of_two_identical_servers_reports_the_older() {
    // Named so that the younger sorts first: age decides, not the name.
    let all = [
        server("a-late", Some(9), json!(8080), api()),
        server("api-http", Some(1), json!(8080), api()),
    ];
    let r = reasons(&all);
    assert_eq!(r[1], ("api-http".into(), None));
    assert_eq!(
        r[0].1.as_deref(),
        Some(
            "Conflict: port 8080 of every pod it selects is already Server shop/api-http's, \
             older (the oldest Server on a port wins)"
        )
    );
    // Without creation times (never the case once stored): by name.
    let all = [
        server("b", None, json!(8080), api()),
        server("a", None, json!(8080), api()),
    ];
    assert!(reasons(&all)[0].1.as_deref().unwrap().contains("shop/a's"));
    // A time beats none.
    let all = [
        server("a", None, json!(8080), api()),
        server("b", Some(5), json!(8080), api()),
    ];
    assert!(reasons(&all)[0].1.as_deref().unwrap().contains("shop/b's"));
}

#[test]
fn a_conflict_needs_the_older_to_select_every_pod_of_the_younger_on_the_same_port() {
    let older = |port: Value, selector: Value| server("old", Some(1), port, selector);
    let younger = |port: Value, selector: Value| {
        let Resource::Server(s) = server("young", Some(2), port, selector) else {
            unreachable!()
        };
        s
    };
    let two = json!({"matchLabels": {"app": "api", "tier": "back"}});
    let expr = json!({"matchExpressions": [{"key": "app", "operator": "In", "values": ["api"]}]});
    for (old, young, conflict) in [
        // The same port name counts as the same port.
        (
            older(json!("http"), api()),
            younger(json!("http"), api()),
            true,
        ),
        // An empty selector selects every pod.
        (
            older(json!(8080), json!({})),
            younger(json!(8080), api()),
            true,
        ),
        // Every pod with both labels has the older's one.
        (
            older(json!(8080), api()),
            younger(json!(8080), two.clone()),
            true,
        ),
        (
            older(json!(8080), expr.clone()),
            younger(json!(8080), expr.clone()),
            true,
        ),
        // The younger selects pods the older does not: it applies there.
        (older(json!(8080), two), younger(json!(8080), api()), false),
        (
            older(json!(8080), api()),
            younger(json!(8080), json!({})),
            false,
        ),
        (older(json!(8080), expr), younger(json!(8080), api()), false),
        (
            older(json!(8080), json!({"matchLabels": {"app": "web"}})),
            younger(json!(8080), api()),
            false,
        ),
        // Another port; a name and a number (pods decide: not reported).
        (
            older(json!(8081), api()),
            younger(json!(8080), api()),
            false,
        ),
        (
            older(json!("http"), api()),
            younger(json!(8080), api()),
            false,
        ),
    ] {
        let got = superseded(std::slice::from_ref(&old), &young);
        assert_eq!(got.is_some(), conflict, "{old:?} / {young:?}: {got:?}");
        // Never the other way round: the older one is not superseded.
        let Resource::Server(o) = &old else {
            unreachable!()
        };
        let back = server("young", Some(2), json!(8080), api());
        assert_eq!(superseded(&[back], o), None);
    }
    // Another namespace never conflicts.
    let mut other = server("old", Some(1), json!(8080), api()).to_json();
    other["metadata"]["namespace"] = json!("other");
    let other = Resource::parse(other).unwrap();
    assert_eq!(superseded(&[other], &younger(json!(8080), api())), None);
}
