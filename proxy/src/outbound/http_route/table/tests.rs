use super::*;
use pimesh_api::discovery::route::{NameValue, PathMatch, RouteRule};

fn path(p: PathMatch) -> RouteMatch {
    RouteMatch {
        path: Some(p),
        ..Default::default()
    }
}

/// A rule whose single backend is named `name` (to tell rules apart).
fn rule(name: &str, matches: Vec<RouteMatch>) -> RouteRule {
    RouteRule {
        matches,
        backends: vec![Backend {
            service: format!("{name}.shop"),
            port: Some(80),
            weight: 1,
        }],
        ..Default::default()
    }
}

fn route(name: &str, rules: Vec<RouteRule>) -> HttpRoute {
    HttpRoute {
        name: format!("shop/{name}"),
        rules,
    }
}

/// The backend of the rule a request takes, or `None` (404).
fn taken(t: &RouteTable, method: &str, uri: &str, hdrs: &[(&str, &str)]) -> Option<String> {
    let mut h = HeaderMap::new();
    for (k, v) in hdrs {
        h.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    let rule = t.find(&method.parse().unwrap(), &uri.parse().unwrap(), &h)?;
    match rule.pick(0) {
        Pick::Backend(b) => Some(b.service.trim_end_matches(".shop").to_string()),
        other => panic!("{other:?}"),
    }
}

#[test]
fn gateway_api_precedence() {
    let prefix = |p: &str| path(PathMatch::PathPrefix(p.into()));
    let t = RouteTable::new(
        &[
            route(
                "old",
                vec![
                    rule("root", vec![prefix("/")]),
                    rule("api", vec![prefix("/api")]),
                    rule("api-v1", vec![prefix("/api/v1/")]),
                    rule("exact", vec![path(PathMatch::Exact("/api/v1/x".into()))]),
                    rule(
                        "get",
                        vec![RouteMatch {
                            path: Some(PathMatch::PathPrefix("/api".into())),
                            method: Some("GET".into()),
                            ..Default::default()
                        }],
                    ),
                    rule(
                        "header",
                        vec![RouteMatch {
                            path: Some(PathMatch::PathPrefix("/api".into())),
                            method: Some("GET".into()),
                            headers: vec![NameValue {
                                name: "x-canary".into(),
                                value: "1".into(),
                            }],
                            ..Default::default()
                        }],
                    ),
                    rule(
                        "query",
                        vec![RouteMatch {
                            path: Some(PathMatch::PathPrefix("/api".into())),
                            method: Some("GET".into()),
                            headers: vec![NameValue {
                                name: "x-canary".into(),
                                value: "1".into(),
                            }],
                            query_params: vec![NameValue {
                                name: "debug".into(),
                                value: "yes".into(),
                            }],
                        }],
                    ),
                ],
            ),
            // A newer route with a tie: the older route's rule wins.
            route("new", vec![rule("new-api", vec![prefix("/api")])]),
        ],
        80,
    )
    .unwrap();
    let t = &t;
    assert_eq!(taken(t, "POST", "/", &[]).as_deref(), Some("root"));
    assert_eq!(taken(t, "POST", "/apix", &[]).as_deref(), Some("root"));
    assert_eq!(taken(t, "POST", "/api", &[]).as_deref(), Some("api"));
    assert_eq!(taken(t, "POST", "/api/z", &[]).as_deref(), Some("api"));
    assert_eq!(taken(t, "POST", "/api/v1", &[]).as_deref(), Some("api-v1"));
    assert_eq!(taken(t, "GET", "/api/v1/y", &[]).as_deref(), Some("api-v1"));
    assert_eq!(taken(t, "GET", "/api/v1/x", &[]).as_deref(), Some("exact"));
    assert_eq!(taken(t, "GET", "/api/z", &[]).as_deref(), Some("get"));
    let canary = [("X-Canary", "1")];
    assert_eq!(
        taken(t, "GET", "/api/z", &canary).as_deref(),
        Some("header")
    );
    assert_eq!(
        taken(t, "GET", "/api/z?a=b&debug=yes", &canary).as_deref(),
        Some("query")
    );
    assert_eq!(
        taken(t, "GET", "/api/z?debug=no", &canary).as_deref(),
        Some("header")
    );
}

#[test]
fn no_matching_rule_is_none_and_no_rule_matches_everything() {
    let only_api = RouteTable::new(
        &[route(
            "r",
            vec![rule("api", vec![path(PathMatch::Exact("/api".into()))])],
        )],
        80,
    )
    .unwrap();
    assert_eq!(taken(&only_api, "GET", "/other", &[]), None);
    let any = RouteTable::new(&[route("r", vec![rule("all", vec![])])], 80).unwrap();
    assert_eq!(taken(&any, "GET", "/other", &[]).as_deref(), Some("all"));
    assert!(RouteTable::new(&[], 80).is_none());
}

#[test]
fn weighted_pick() {
    let split = RouteTable::new(
        &[route(
            "r",
            vec![RouteRule {
                backends: vec![
                    Backend {
                        service: "a.shop".into(),
                        port: Some(80),
                        weight: 90,
                    },
                    Backend {
                        service: "off.shop".into(),
                        port: Some(80),
                        weight: 0,
                    },
                    Backend {
                        service: "b.shop".into(),
                        port: None,
                        weight: 10,
                    },
                ],
                ..Default::default()
            }],
        )],
        80,
    )
    .unwrap();
    let rule = &split.rules[0];
    let name = |r: u64| match rule.pick(r) {
        Pick::Backend(b) => b.service.clone(),
        other => panic!("{other:?}"),
    };
    // Exactly: picks 0..90 are a's, 90..100 b's, the weight-0 one never.
    let mut counts = std::collections::BTreeMap::<String, u32>::new();
    for r in 0..1000u64 {
        *counts.entry(name(r)).or_default() += 1;
    }
    assert_eq!(counts.get("a.shop"), Some(&900));
    assert_eq!(counts.get("b.shop"), Some(&100));
    assert_eq!(counts.get("off.shop"), None);
    let zero = RouteTable::new(
        &[route(
            "r",
            vec![RouteRule {
                backends: vec![Backend {
                    service: "a.shop".into(),
                    port: Some(80),
                    weight: 0,
                }],
                ..Default::default()
            }],
        )],
        80,
    )
    .unwrap();
    assert_eq!(zero.rules[0].pick(7), Pick::None);
    let parent = RouteTable::new(&[route("r", vec![RouteRule::default()])], 80).unwrap();
    assert_eq!(parent.rules[0].pick(7), Pick::Parent);
}

#[test]
fn a_rule_overrides_the_services_timeouts_and_retries() {
    let defaults = crate::config::Config::from_env(&std::collections::HashMap::<&str, &str>::new())
        .unwrap()
        .outbound
        .defaults;
    let base = Policy::new(&Default::default(), &defaults, None);
    let plain = Rule::new("shop/r", &RouteRule::default());
    assert!(matches!(plain.policy(&base), Cow::Borrowed(_)));
    let r = Rule::new(
        "shop/r",
        &RouteRule {
            timeout_ms: Some(200),
            backend_timeout_ms: Some(150),
            retry: Some(RouteRetry {
                limit: 2,
                http: vec!["503".into()],
                grpc: vec!["unavailable".into()],
                timeout_ms: Some(100),
            }),
            ..Default::default()
        },
    );
    let p = r.policy(&base);
    assert_eq!(p.timeout, Some(Duration::from_millis(200)));
    assert_eq!(p.per_try_timeout, Some(Duration::from_millis(100)));
    assert_eq!(p.retry_limit, 2);
    assert!(p.retryable_status(503) && !p.retryable_status(500));
    assert!(p.retryable_grpc(14));
    assert!(p.may_retry(&Method::GET, false));
    assert!(p.budget.is(&base.budget), "the service's budget is shared");
}
