use super::*;
use crate::policy::validate::Invalid;
use pimesh_api::discovery::route::RouteRetry;
use serde_json::{json, Value};

fn example() -> Value {
    let path = format!(
        "{}/../examples/routes/httproute.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

fn parsed(edit: impl FnOnce(&mut Value)) -> Result<Resource, Invalid> {
    let mut doc = example();
    edit(&mut doc);
    Resource::parse(doc)
}

fn refused(edit: impl FnOnce(&mut Value)) -> Invalid {
    match parsed(edit) {
        Ok(r) => panic!("{r} accepted"),
        Err(e) => e,
    }
}

#[test]
fn the_example_resolves_for_its_parent() {
    let r = parsed(|_| {}).unwrap();
    assert_eq!(r.kind(), "HTTPRoute");
    let routes = routes_for(std::slice::from_ref(&r), "shop", "web", 80);
    assert_eq!(routes.len(), 1);
    let route = &routes[0];
    assert_eq!(route.name, "shop/web-split");
    assert_eq!(route.rules.len(), 2);
    let split = &route.rules[0];
    assert_eq!(
        split.matches[0].path,
        Some(PathMatch::PathPrefix("/api".into()))
    );
    assert_eq!(
        split.backends,
        [
            Backend {
                service: "web-v1.shop".into(),
                port: Some(80),
                weight: 90
            },
            Backend {
                service: "web-v2.shop".into(),
                port: Some(80),
                weight: 10
            }
        ]
    );
    assert_eq!(split.timeout_ms, Some(2000));
    assert_eq!(
        split.retry,
        Some(RouteRetry {
            limit: 1,
            http: vec!["5xx".into()],
            grpc: vec![],
            timeout_ms: Some(500)
        })
    );
    // The default weight is 1; the second rule matches everything.
    assert_eq!(route.rules[1].backends[0].weight, 1);
    assert!(route.rules[1].matches.is_empty());
    // Not for another port, name or namespace.
    assert!(routes_for(std::slice::from_ref(&r), "shop", "web", 81).is_empty());
    assert!(routes_for(std::slice::from_ref(&r), "shop", "db", 80).is_empty());
    assert!(routes_for(std::slice::from_ref(&r), "other", "web", 80).is_empty());
    // A parentRef without a port attaches to every port.
    let any = parsed(|d| d["spec"]["parentRefs"][0]["port"] = Value::Null).unwrap();
    assert_eq!(routes_for(&[any], "shop", "web", 81).len(), 1);
}

#[test]
fn older_routes_come_first() {
    let at = |name: &str, t: &str| {
        parsed(|d| {
            d["metadata"]["name"] = json!(name);
            d["metadata"]["creationTimestamp"] = json!(t);
        })
        .unwrap()
    };
    let all = [
        at("b", "2026-01-02T00:00:00Z"),
        at("c", "2026-01-01T00:00:00Z"),
        at("a", "2026-01-02T00:00:00Z"),
    ];
    let names: Vec<String> = routes_for(&all, "shop", "web", 80)
        .into_iter()
        .map(|r| r.name)
        .collect();
    assert_eq!(names, ["shop/c", "shop/a", "shop/b"]);
}

#[test]
fn bad_routes_are_refused_with_the_field_named() {
    type Edit = Box<dyn FnOnce(&mut Value)>;
    let cases: Vec<(Edit, &str)> = vec![
        (
            Box::new(|d| d["apiVersion"] = json!("policy.pimesh.io/v1alpha1")),
            "apiVersion",
        ),
        (
            Box::new(|d| d["spec"]["parentRefs"][0]["kind"] = json!("Gateway")),
            "spec.parentRefs[0].kind",
        ),
        (
            Box::new(|d| d["spec"]["parentRefs"] = json!([])),
            "spec.parentRefs",
        ),
        (
            // A Server parent (per-route policy) takes no port.
            Box::new(|d| {
                d["spec"]["parentRefs"][0]["group"] = json!("policy.pimesh.io");
                d["spec"]["parentRefs"][0]["kind"] = json!("Server");
            }),
            "spec.parentRefs[0].port",
        ),
        (
            Box::new(|d| {
                d["spec"]["parentRefs"][0] =
                    json!({"group": "policy.linkerd.io", "kind": "Server", "name": "api"});
            }),
            "spec.parentRefs[0].kind",
        ),
        (
            Box::new(|d| d["spec"]["parentRefs"][0]["port"] = json!(0)),
            "spec.parentRefs[0].port",
        ),
        (
            Box::new(|d| d["spec"]["rules"][0]["backendRefs"][1]["weight"] = json!(-1)),
            "spec.rules[0].backendRefs[1].weight",
        ),
        (
            Box::new(|d| d["spec"]["rules"][0]["backendRefs"][1]["port"] = Value::Null),
            "spec.rules[0].backendRefs[1].port",
        ),
        (
            Box::new(|d| d["spec"]["rules"][0]["timeouts"]["request"] = json!("2 s")),
            "spec.rules[0].timeouts.request",
        ),
        (
            Box::new(|d| d["spec"]["rules"][0]["timeouts"]["backendRequest"] = json!("3s")),
            "spec.rules[0].timeouts.backendRequest",
        ),
        (
            Box::new(|d| d["spec"]["rules"][0]["matches"][0]["path"]["value"] = json!("api")),
            "spec.rules[0].matches[0].path.value",
        ),
        (
            Box::new(|d| {
                d["spec"]["rules"][0]["matches"][0]["path"]["type"] = json!("RegularExpression")
            }),
            "spec.rules[0].matches[0].path.type",
        ),
        (
            Box::new(|d| d["spec"]["rules"][0]["matches"][0]["method"] = json!("get")),
            "spec.rules[0].matches[0].method",
        ),
        (
            Box::new(|d| {
                d["spec"]["rules"][0]["filters"] = json!([{"type": "RequestHeaderModifier"}])
            }),
            "spec.rules[0].filters",
        ),
        (
            Box::new(|d| d["metadata"]["annotations"]["retry.pimesh.io/http"] = json!("6xx")),
            "metadata.annotations[retry.pimesh.io/http]",
        ),
        (
            Box::new(|d| d["metadata"]["annotations"]["retry.pimesh.io/limit"] = json!("many")),
            "metadata.annotations[retry.pimesh.io/limit]",
        ),
        (
            Box::new(|d| d["metadata"]["annotations"]["retry.linkerd.io/http"] = json!("5xx")),
            "metadata.annotations[retry.linkerd.io/http]",
        ),
    ];
    for (edit, field) in cases {
        assert_eq!(refused(edit).field, field);
    }
}

#[test]
fn gateway_durations() {
    use std::time::Duration;
    assert_eq!(gateway_duration("200ms"), Ok(Duration::from_millis(200)));
    assert_eq!(gateway_duration("1h30m"), Ok(Duration::from_secs(5400)));
    assert_eq!(gateway_duration("0s"), Ok(Duration::ZERO));
    assert_eq!(gateway_duration("1s500ms"), Ok(Duration::from_millis(1500)));
    for bad in ["", "1", "1d", "100000s", "1h1m1s1ms1h", "-1s", "1.5s"] {
        assert!(gateway_duration(bad).is_err(), "{bad}");
    }
}

#[test]
fn unregistered_parents_and_backends_are_not_applied() {
    let r = parsed(|_| {}).unwrap();
    let all = [r];
    let fresh = || crate::policy::index::statuses(&all);
    let mut list = fresh();
    assert!(list[0].applied);
    mark_unregistered(&mut list, &all, |_, name, _| name != "web-v2");
    assert!(!list[0].applied);
    assert_eq!(
        list[0].reason.as_deref(),
        Some("backend Service shop/web-v2 port 80 not registered")
    );
    let mut list = fresh();
    mark_unregistered(&mut list, &all, |_, name, _| name != "web");
    assert_eq!(
        list[0].reason.as_deref(),
        Some("parent Service shop/web port 80 not registered")
    );
    let mut list = fresh();
    mark_unregistered(&mut list, &all, |_, _, _| true);
    assert!(list[0].applied);
}

fn grpc_example(edit: impl FnOnce(&mut Value)) -> Result<Resource, Invalid> {
    let path = format!(
        "{}/../examples/routes/grpcroute.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    edit(&mut doc);
    Resource::parse(doc)
}

#[test]
fn a_grpc_route_matches_on_the_path_of_its_service_and_method() {
    let r = grpc_example(|_| {}).unwrap();
    assert_eq!(r.kind(), "GRPCRoute");
    let all = [r];
    let routes = routes_for(&all, "shop", "cart", 8080);
    assert_eq!(routes.len(), 1);
    let rules = &routes[0].rules;
    assert_eq!(
        rules[0].matches[0].path,
        Some(PathMatch::Exact("/shop.Cart/Checkout".into()))
    );
    assert_eq!(rules[0].backends[0].service, "cart-v2.shop");
    assert_eq!(
        rules[1].matches[0].path,
        Some(PathMatch::PathPrefix("/shop.Cart".into()))
    );
    assert_eq!(rules[1].retry.as_ref().unwrap().grpc, ["unavailable"]);
    assert!(routes_for(&all, "shop", "cart", 80).is_empty());
    let mut list = crate::policy::index::statuses(&all);
    mark_unregistered(&mut list, &all, |_, name, _| name != "cart-v1");
    assert_eq!(
        list[0].reason.as_deref(),
        Some("backend Service shop/cart-v1 port 8080 not registered")
    );
    let field = |edit: fn(&mut Value)| grpc_example(edit).unwrap_err().field;
    assert_eq!(
        field(|d| d["spec"]["rules"][0]["matches"][0]["method"]["service"] = Value::Null),
        "spec.rules[0].matches[0].method.service"
    );
    assert_eq!(
        field(|d| d["spec"]["rules"][0]["matches"][0]["method"]["method"] = json!("Check out")),
        "spec.rules[0].matches[0].method.method"
    );
    assert_eq!(
        field(|d| d["spec"]["rules"][1]["backendRefs"][0]["kind"] = json!("Pod")),
        "spec.rules[1].backendRefs[0].kind"
    );
    assert_eq!(
        field(|d| d["metadata"]["annotations"]["retry.pimesh.io/grpc"] = json!("sad")),
        "metadata.annotations[retry.pimesh.io/grpc]"
    );
}
