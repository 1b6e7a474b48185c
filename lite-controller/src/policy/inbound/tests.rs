use super::*;
use pimesh_api::policy::inbound::{Client, Verdict};
use pimesh_api::policy::{DefaultPolicy, Networks, DEFAULT_CLUSTER_NETWORKS};
use serde_json::{json, Value};

const TD: &str = "cluster.local";
const WEB: &str = "web.shop.serviceaccount.identity.pimesh.cluster.local";
const DB: &str = "db.shop.serviceaccount.identity.pimesh.cluster.local";

fn doc(kind: &str, name: &str, spec: Value) -> Value {
    json!({
        "apiVersion": "policy.pimesh.io/v1alpha1",
        "kind": kind,
        "metadata": {"namespace": "shop", "name": name},
        "spec": spec,
    })
}

fn server(name: &str, app: &str, port: Value, created: &str) -> Value {
    let mut d = doc(
        "Server",
        name,
        json!({"podSelector": {"matchLabels": {"app": app}}, "port": port}),
    );
    d["metadata"]["creationTimestamp"] = json!(created);
    d
}

fn parse(docs: Vec<Value>) -> Vec<Resource> {
    docs.into_iter()
        .map(|d| Resource::parse(d).unwrap_or_else(|e| panic!("{e}")))
        .collect()
}

fn labels(s: &str) -> BTreeMap<String, String> {
    pimesh_api::policy::inbound::parse_labels(s).unwrap()
}

fn policy_of(all: &[Resource], ns: &str, l: &str) -> InboundPolicy {
    let l = labels(l);
    inbound_policy(
        all,
        &Workload {
            namespace: ns,
            labels: &l,
        },
        TD,
    )
}

/// The shop example: a Server on api's 8080, a MeshTLSAuthentication
/// admitting shop/web, an AuthorizationPolicy joining them.
fn shop() -> Vec<Value> {
    vec![
        server("api-http", "api", json!(8080), "2026-01-01T00:00:00Z"),
        doc(
            "MeshTLSAuthentication",
            "web-only",
            json!({"identities": [WEB]}),
        ),
        doc(
            "AuthorizationPolicy",
            "api-web-only",
            json!({
                "targetRef": {"group": "policy.pimesh.io", "kind": "Server", "name": "api-http"},
                "requiredAuthenticationRefs": [
                    {"group": "policy.pimesh.io", "kind": "MeshTLSAuthentication", "name": "web-only"}
                ],
            }),
        ),
    ]
}

fn verdict(p: &InboundPolicy, port: u16, identity: Option<&str>) -> Option<String> {
    let cluster: Networks = DEFAULT_CLUSTER_NETWORKS.parse().unwrap();
    let client = Client {
        identity,
        source: "10.42.0.9".parse().unwrap(),
    };
    match p.servers[&port].decide(client, &cluster) {
        Verdict::Authorized(a) => Some(a.name.clone()),
        Verdict::AccessPolicy => Some("access-policy".into()),
        Verdict::Denied => None,
    }
}

#[test]
fn a_selected_port_gets_its_server_and_authorizations() {
    let all = parse(shop());
    let p = policy_of(&all, "shop", "app=api,tier=back");
    assert_eq!(p.servers.len(), 1);
    let s = &p.servers[&8080];
    assert_eq!((s.name.as_str(), s.kind), ("api-http", ServerKind::Server));
    assert_eq!(s.access_policy, DefaultPolicy::Deny);
    assert_eq!(
        s.authorizations,
        vec![Authorization {
            name: "api-web-only".into(),
            authentications: vec![Authentication::MeshTls {
                identities: vec![WEB.into()]
            }],
        }]
    );
    assert_eq!(
        verdict(&p, 8080, Some(WEB)).as_deref(),
        Some("api-web-only")
    );
    assert_eq!(verdict(&p, 8080, Some(DB)), None);
    assert_eq!(verdict(&p, 8080, None), None);
    // Other labels, another namespace: nothing selected.
    assert!(policy_of(&all, "shop", "app=web").servers.is_empty());
    assert!(policy_of(&all, "other", "app=api").servers.is_empty());
}

#[test]
fn identity_refs_service_accounts_and_networks_resolve() {
    let mut docs = shop();
    docs[1] = doc(
        "MeshTLSAuthentication",
        "web-only",
        json!({"identityRefs": [
            {"kind": "ServiceAccount", "name": "web"},
            {"kind": "ServiceAccount", "namespace": "ops"},
            {"kind": "Namespace", "name": "batch"},
        ]}),
    );
    docs.push(doc(
        "NetworkAuthentication",
        "pods",
        json!({"networks": [{"cidr": "10.42.0.0/16", "except": ["10.42.9.0/24"]}]}),
    ));
    docs.push(doc(
        "AuthorizationPolicy",
        "all-in-ns",
        json!({
            "targetRef": {"kind": "Namespace", "name": "shop"},
            "requiredAuthenticationRefs": [
                {"group": "policy.pimesh.io", "kind": "NetworkAuthentication", "name": "pods"},
                {"kind": "ServiceAccount", "name": "db"},
            ],
        }),
    ));
    let p = policy_of(&parse(docs), "shop", "app=api");
    let s = &p.servers[&8080];
    let names: Vec<&str> = s.authorizations.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["all-in-ns", "api-web-only"]);
    assert_eq!(
        s.authorizations[1].authentications,
        vec![Authentication::MeshTls {
            identities: vec![
                WEB.into(),
                "*.ops.serviceaccount.identity.pimesh.cluster.local".into(),
                "*.batch.serviceaccount.identity.pimesh.cluster.local".into(),
            ]
        }]
    );
    assert_eq!(
        s.authorizations[0].authentications,
        vec![
            Authentication::Network {
                networks: vec![NetworkMatch {
                    cidr: "10.42.0.0/16".parse().unwrap(),
                    except: vec!["10.42.9.0/24".parse().unwrap()],
                }]
            },
            Authentication::MeshTls {
                identities: vec![DB.into()]
            },
        ]
    );
    assert_eq!(verdict(&p, 8080, Some(DB)).as_deref(), Some("all-in-ns"));
}

#[test]
fn the_oldest_server_wins_a_port() {
    let mut docs = shop();
    // Newer, but first by name: loses.
    docs.push(server(
        "aaa-new",
        "api",
        json!(8080),
        "2026-06-01T00:00:00Z",
    ));
    // Another port is its own.
    docs.push(server("admin", "api", json!(9990), "2026-06-01T00:00:00Z"));
    let p = policy_of(&parse(docs.clone()), "shop", "app=api");
    assert_eq!(p.servers[&8080].name, "api-http");
    assert_eq!(p.servers[&9990].name, "admin");
    assert!(p.servers[&9990].authorizations.is_empty());
    // Made older, it wins.
    let n = docs.len() - 2;
    docs[n]["metadata"]["creationTimestamp"] = json!("2025-01-01T00:00:00Z");
    assert_eq!(
        policy_of(&parse(docs), "shop", "app=api").servers[&8080].name,
        "aaa-new"
    );
}

#[test]
fn a_named_port_or_an_unapplied_policy_selects_nothing() {
    let mut docs = shop();
    docs[0]["spec"]["port"] = json!("http");
    assert!(policy_of(&parse(docs), "shop", "app=api")
        .servers
        .is_empty());
    // The authentication is missing: the policy is not applied, the
    // Server denies everyone.
    let mut docs = shop();
    docs.remove(1);
    let p = policy_of(&parse(docs), "shop", "app=api");
    assert!(p.servers[&8080].authorizations.is_empty());
    assert_eq!(verdict(&p, 8080, Some(WEB)), None);
}

#[test]
fn opaque_protocol_and_access_policy_are_carried() {
    let mut docs = shop();
    docs[0]["spec"]["proxyProtocol"] = json!("opaque");
    docs[0]["spec"]["accessPolicy"] = json!("all-authenticated");
    let p = policy_of(&parse(docs), "shop", "app=api");
    let s = &p.servers[&8080];
    assert_eq!(s.protocol, Protocol::Opaque);
    assert_eq!(s.access_policy, DefaultPolicy::AllAuthenticated);
    assert_eq!(
        verdict(&p, 8080, Some(DB)).as_deref(),
        Some("access-policy")
    );
    assert_eq!(verdict(&p, 8080, None), None);
}

#[test]
fn stored_resources_keep_their_first_creation_time_and_publish_changes() {
    let dir = pimesh_test_support::TempDir::new("inbound-policies");
    let store = crate::store::Store::open(dir.path()).unwrap();
    let p = super::super::stored::Policies::open(&store).unwrap();
    let mut rx = p.subscribe();
    let first = rx.borrow_and_update().revision;
    let mut srv = server("api-http", "api", json!(8080), "1999-01-01T00:00:00Z");
    let (r, _) = p.apply(srv.clone()).unwrap();
    let Resource::Server(s) = &r else { panic!() };
    let created = s.metadata.creation_timestamp.clone().unwrap();
    assert!(
        created.0.to_string().as_str() > "2020",
        "the client's value is ignored"
    );
    assert!(rx.has_changed().unwrap());
    assert_eq!(rx.borrow_and_update().resources.len(), 1);
    srv["spec"]["port"] = json!(8081);
    let (r, applied) = p.apply(srv).unwrap();
    assert_eq!(applied, super::super::stored::Applied::Configured);
    let Resource::Server(s) = &r else { panic!() };
    assert_eq!(s.metadata.creation_timestamp.as_ref(), Some(&created));
    assert!(rx.borrow_and_update().revision > first + 1);
    assert!(p.delete("Server", "shop", "api-http").unwrap());
    assert!(rx.borrow_and_update().resources.is_empty());
}

fn rate_limit(name: &str, server: &str, created: &str, spec: Value) -> Value {
    let mut spec = spec;
    spec["targetRef"] = json!({"group": "policy.pimesh.io", "kind": "Server", "name": server});
    let mut d = doc("HTTPLocalRateLimitPolicy", name, spec);
    d["metadata"]["creationTimestamp"] = json!(created);
    d
}

#[test]
fn a_servers_rate_limit_is_attached_with_its_overrides_resolved() {
    let mut docs = shop();
    docs.push(server("admin", "api", json!(9990), "2026-01-01T00:00:00Z"));
    docs.push(rate_limit(
        "api-rl",
        "api-http",
        "2026-02-01T00:00:00Z",
        json!({
            "total": {"requestsPerSecond": 100},
            "identity": {"requestsPerSecond": 20},
            "overrides": [
                {"requestsPerSecond": 25, "clientRefs": [
                    {"kind": "ServiceAccount", "name": "db"},
                    {"kind": "ServiceAccount", "namespace": "", "name": "web"},
                    {"kind": "ServiceAccount", "namespace": "ops", "name": "cron"},
                ]},
                {"requestsPerSecond": 100, "clientRefs": [{"kind": "ServiceAccount", "name": "x"}]},
            ],
        }),
    ));
    let p = policy_of(&parse(docs.clone()), "shop", "app=api");
    assert_eq!(p.servers[&9990].rate_limit, None, "another Server");
    let rl = p.servers[&8080].rate_limit.clone().unwrap();
    assert_eq!(rl.name, "api-rl");
    assert_eq!((rl.total, rl.identity), (Some(100), Some(20)));
    assert_eq!(rl.overrides.len(), 2);
    assert_eq!(rl.overrides[0].requests_per_second, 25);
    assert_eq!(
        rl.overrides[0].identities,
        [
            DB,
            WEB,
            "cron.ops.serviceaccount.identity.pimesh.cluster.local"
        ]
    );
    assert_eq!(
        rl.overrides[1].identities,
        ["x.shop.serviceaccount.identity.pimesh.cluster.local"]
    );
    // Only a total: no identity limit, no overrides; a rate above the
    // wire's u32 is clamped, not wrapped.
    let n = docs.len() - 1;
    docs[n]["spec"] = json!({
        "targetRef": {"group": "policy.pimesh.io", "kind": "Server", "name": "api-http"},
        "total": {"requestsPerSecond": 1_i64 << 40},
    });
    let p = policy_of(&parse(docs.clone()), "shop", "app=api");
    let rl = p.servers[&8080].rate_limit.clone().unwrap();
    assert_eq!((rl.total, rl.identity), (Some(u32::MAX), None));
    assert!(rl.overrides.is_empty());
    // Another namespace's limit naming the same Server name: not this one.
    docs[n]["metadata"]["namespace"] = json!("other");
    let p = policy_of(&parse(docs), "shop", "app=api");
    assert_eq!(p.servers[&8080].rate_limit, None);
}

#[test]
fn of_two_rate_limits_on_a_server_the_oldest_applies_and_the_other_says_why() {
    let mut docs = shop();
    let total = |rps: u32| json!({"total": {"requestsPerSecond": rps}});
    docs.push(rate_limit(
        "zz-old",
        "api-http",
        "2026-01-01T00:00:00Z",
        total(5),
    ));
    // Newer, first by name: loses.
    docs.push(rate_limit(
        "aa-new",
        "api-http",
        "2026-03-01T00:00:00Z",
        total(7),
    ));
    let all = parse(docs.clone());
    let rl = policy_of(&all, "shop", "app=api").servers[&8080]
        .rate_limit
        .clone();
    assert_eq!(
        rl.map(|r| (r.name, r.total)),
        Some(("zz-old".into(), Some(5)))
    );
    let st = super::super::index::statuses(&all);
    let of = |name: &str| st.iter().find(|s| s.name == name).unwrap().clone();
    assert!(of("zz-old").applied && of("zz-old").reason.is_none());
    let lost = of("aa-new");
    assert!(!lost.applied);
    let reason = lost.reason.unwrap();
    assert!(
        reason.starts_with("RateLimitReasonAlreadyExists"),
        "{reason}"
    );
    assert!(reason.contains("zz-old"), "{reason}");
    // Same age: by name.
    let n = docs.len() - 1;
    docs[n]["metadata"]["creationTimestamp"] = json!("2026-01-01T00:00:00Z");
    let rl = policy_of(&parse(docs), "shop", "app=api").servers[&8080]
        .rate_limit
        .clone();
    assert_eq!(rl.map(|r| r.name), Some("aa-new".into()));
}

/// The documents of `examples/policy/FILE` (one or more).
fn example_docs(file: &str) -> Vec<Value> {
    let path = format!("{}/../examples/policy/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_saphyr::from_multiple(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn a_servers_routes_carry_their_matches_and_authorizations() {
    use pimesh_api::discovery::route::{PathMatch, RouteMatch};
    use pimesh_api::policy::inbound::{InboundRoute, RouteKind};
    let mut docs = example_docs("per-route.yaml");
    docs.extend(example_docs("meshtls-authentication.yaml"));
    // A GRPCRoute on the same Server, a policy on the Server (every
    // route's), a route of another Server and a policy on a missing route.
    docs.push(json!({
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "GRPCRoute",
        "metadata": {"namespace": "shop", "name": "api-grpc"},
        "spec": {
            "parentRefs": [{"group": "policy.pimesh.io", "kind": "Server", "name": "api-ops"}],
            "rules": [{"matches": [{"method": {"service": "shop.Ops", "method": "Drain"}}]}],
        },
    }));
    docs.push(doc(
        "AuthorizationPolicy",
        "ops-db",
        json!({
            "targetRef": {"group": "policy.pimesh.io", "kind": "Server", "name": "api-ops"},
            "requiredAuthenticationRefs": [{"kind": "ServiceAccount", "name": "db"}],
        }),
    ));
    docs.push(doc(
        "AuthorizationPolicy",
        "orphan",
        json!({
            "targetRef": {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "name": "nope"},
            "requiredAuthenticationRefs": [],
        }),
    ));
    let all = parse(docs);
    let p = policy_of(&all, "shop", "app=api");
    let s = &p.servers[&9990];
    assert_eq!(s.name, "api-ops");
    let names: Vec<&str> = s.authorizations.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["ops-db"], "the Server's own, not the routes'");
    let prefix = |p: &str| RouteMatch {
        path: Some(PathMatch::PathPrefix(p.into())),
        ..Default::default()
    };
    let by_name: BTreeMap<&str, &InboundRoute> =
        s.routes.iter().map(|r| (r.name.as_str(), r)).collect();
    assert_eq!(by_name.len(), 3, "{:?}", s.routes);
    let public = by_name["api-public"];
    assert_eq!(
        (public.kind, &public.matches),
        (RouteKind::Http, &vec![prefix("/public")])
    );
    assert_eq!(
        public.authorizations,
        [Authorization {
            name: "api-public-all".into(),
            authentications: vec![],
        }]
    );
    let admin = by_name["api-admin"];
    assert_eq!(admin.matches, [prefix("/admin")]);
    assert_eq!(
        admin.authorizations,
        [Authorization {
            name: "api-admin-web".into(),
            authentications: vec![Authentication::MeshTls {
                identities: vec![WEB.into()]
            }],
        }]
    );
    let grpc = by_name["api-grpc"];
    assert_eq!(grpc.kind, RouteKind::Grpc);
    assert_eq!(
        grpc.matches,
        [RouteMatch {
            path: Some(PathMatch::Exact("/shop.Ops/Drain".into())),
            ..Default::default()
        }]
    );
    assert!(grpc.authorizations.is_empty());
    // Statuses: the routes and their policies applied, the orphan not.
    let st = super::super::index::statuses(&all);
    let reason = |name: &str| {
        st.iter()
            .find(|s| s.name == name)
            .map(|s| s.reason.clone())
            .unwrap()
    };
    for name in [
        "api-public",
        "api-admin",
        "api-grpc",
        "api-admin-web",
        "ops-db",
    ] {
        assert_eq!(reason(name), None, "{name}");
    }
    assert_eq!(
        reason("orphan").as_deref(),
        Some("HTTPRoute shop/nope not found")
    );
    // Without its Server, a route is not applied and says why; the
    // Service-parent check does not apply to it.
    let without: Vec<Resource> = all
        .iter()
        .filter(|r| r.name() != "api-ops")
        .cloned()
        .collect();
    let st = super::super::index::statuses(&without);
    let admin = st.iter().find(|s| s.name == "api-admin").unwrap();
    assert_eq!(
        admin.reason.as_deref(),
        Some("Server shop/api-ops not found")
    );
    let mut st = super::super::index::statuses(&all);
    super::super::outbound::mark_unregistered(&mut st, &all, |_, _, _| false);
    assert!(
        st.iter()
            .filter(|s| s.kind.ends_with("Route"))
            .all(|s| s.applied),
        "{st:?}"
    );
}
