use super::validate::identity_pattern;
use super::*;
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn example(file: &str) -> Value {
    let path = format!("{}/../examples/policy/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The example with `edit` applied to it, parsed.
fn parsed(file: &str, edit: impl FnOnce(&mut Value)) -> Result<Resource, Invalid> {
    let mut doc = example(file);
    edit(&mut doc);
    Resource::parse(doc)
}

/// The field `edit` makes invalid, and the reason.
fn refused(file: &str, edit: impl FnOnce(&mut Value)) -> Invalid {
    match parsed(file, edit) {
        Ok(r) => panic!("{r} accepted"),
        Err(e) => e,
    }
}

#[test]
fn the_examples_parse_as_their_kinds() {
    for (file, kind) in [
        ("server.yaml", "Server"),
        ("meshtls-authentication.yaml", "MeshTLSAuthentication"),
        ("authorization-policy.yaml", "AuthorizationPolicy"),
        ("network-authentication.yaml", "NetworkAuthentication"),
        ("ratelimit.yaml", "HTTPLocalRateLimitPolicy"),
    ] {
        let r = parsed(file, |_| {}).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(r.kind(), kind);
        assert_eq!(r.namespace(), Some("shop"));
    }
    let Ok(Resource::Server(s)) = parsed("server.yaml", |_| {}) else {
        panic!("not a Server")
    };
    assert_eq!(s.spec.port, Port::Number(8080));
    assert_eq!(s.spec.proxy_protocol, ProxyProtocol::Http1);
    // Unset: Linkerd's defaults.
    assert_eq!(s.spec.access_policy, AccessPolicy::Deny);
    let Ok(Resource::Server(s)) = parsed("server.yaml", |d| {
        d["spec"]["port"] = json!("http");
        d["spec"].as_object_mut().unwrap().remove("proxyProtocol");
        d["spec"]["accessPolicy"] = json!("cluster-authenticated");
    }) else {
        panic!("not a Server")
    };
    assert_eq!(s.spec.port, Port::Name("http".into()));
    assert_eq!(s.spec.proxy_protocol, ProxyProtocol::Unknown);
    assert_eq!(
        pimesh_api::policy::DefaultPolicy::from(s.spec.access_policy),
        pimesh_api::policy::DefaultPolicy::ClusterAuthenticated
    );
}

#[test]
fn a_linkerd_manifest_is_refused_naming_its_group() {
    let e = refused("server.yaml", |d| {
        d["apiVersion"] = json!("policy.linkerd.io/v1beta3")
    });
    assert_eq!(e.field, "apiVersion");
    assert!(e.reason.contains("Linkerd's group"), "{e}");
    let e = refused("authorization-policy.yaml", |d| {
        d["spec"]["targetRef"]["group"] = json!("policy.linkerd.io")
    });
    assert_eq!(e.field, "spec.targetRef.group");
    assert!(e.reason.contains("Linkerd's group"), "{e}");
    let e = refused("meshtls-authentication.yaml", |d| {
        d["spec"]["identities"][0] = json!("web.shop.serviceaccount.identity.linkerd.cluster.local")
    });
    assert_eq!(e.field, "spec.identities[0]");
    assert!(e.reason.contains("identity.pimesh"), "{e}");
}

#[test]
fn kind_and_name_are_checked() {
    let e = refused("server.yaml", |d| d["kind"] = json!("ServerAuthorization"));
    assert_eq!(e.field, "kind");
    let e = refused("server.yaml", |d| d["metadata"]["name"] = json!("API_http"));
    assert_eq!(e.field, "metadata.name");
    let e = refused("server.yaml", |d| {
        d["metadata"].as_object_mut().unwrap().remove("name");
    });
    assert_eq!(e.field, "metadata.name");
}

#[test]
fn a_port_out_of_range_or_a_bad_name_is_refused() {
    for bad in [json!(0), json!(-1), json!(65536)] {
        let e = refused("server.yaml", |d| d["spec"]["port"] = bad.clone());
        assert_eq!(e.field, "spec.port", "{bad}");
        assert!(e.reason.contains("1 to 65535"), "{e}");
    }
    for bad in [
        "",
        "HTTP",
        "a-very-long-port-name",
        "-http",
        "ht--tp",
        "8080",
    ] {
        let e = refused("server.yaml", |d| d["spec"]["port"] = json!(bad));
        assert_eq!(e.field, "spec.port", "{bad}");
    }
    for good in [json!(1), json!(65535), json!("admin-http"), json!("h2")] {
        parsed("server.yaml", |d| d["spec"]["port"] = good.clone())
            .unwrap_or_else(|e| panic!("{good}: {e}"));
    }
    let e = refused("server.yaml", |d| d["spec"]["port"] = json!(1.5));
    assert_eq!(e.field, "spec.port");
}

#[test]
fn an_unknown_proxy_protocol_or_access_policy_is_refused() {
    let e = refused("server.yaml", |d| {
        d["spec"]["proxyProtocol"] = json!("HTTP/3")
    });
    assert_eq!(e.field, "spec.proxyProtocol");
    assert!(e.reason.contains("HTTP/3"), "{e}");
    for p in ["unknown", "HTTP/1", "HTTP/2", "gRPC", "opaque", "TLS"] {
        parsed("server.yaml", |d| d["spec"]["proxyProtocol"] = json!(p))
            .unwrap_or_else(|e| panic!("{p}: {e}"));
    }
    let e = refused("server.yaml", |d| {
        d["spec"]["accessPolicy"] = json!("allow")
    });
    assert_eq!(e.field, "spec.accessPolicy");
    let e = refused("server.yaml", |d| {
        d["spec"]["podSelector"] = json!({"matchExpressions": [{"key": "app", "operator": "In"}]})
    });
    assert_eq!(e.field, "spec.podSelector.matchExpressions[0].values");
    let e = refused(
        "server.yaml",
        |d| {
            d["spec"]["podSelector"] =
                json!({"matchExpressions": [{"key": "app", "operator": "Exists", "values": ["x"]}]})
        },
    );
    assert_eq!(e.field, "spec.podSelector.matchExpressions[0].values");
}

#[test]
fn identity_patterns_follow_linkerds_rules() {
    for good in [
        "*",
        "web.shop.serviceaccount.identity.pimesh.cluster.local",
        "*.shop.serviceaccount.identity.pimesh.cluster.local",
        "*.cluster.local",
    ] {
        assert_eq!(identity_pattern(good), Ok(()), "{good}");
    }
    for bad in [
        "",
        "web.*.serviceaccount.identity.pimesh.cluster.local",
        "w*b.shop.serviceaccount.identity.pimesh.cluster.local",
        "*web.shop.serviceaccount.identity.pimesh.cluster.local",
        "**.cluster.local",
        "Web.shop.serviceaccount.identity.pimesh.cluster.local",
        "web..shop",
        "web.shop.",
        "-web.shop",
        "shop/web",
        "spiffe://cluster.local/ns/shop/sa/web",
    ] {
        assert!(identity_pattern(bad).is_err(), "{bad:?} accepted");
    }
    let e = refused("meshtls-authentication.yaml", |d| {
        d["spec"]["identities"] = json!(["*", "web.*.serviceaccount.identity.pimesh.cluster.local"])
    });
    assert_eq!(e.field, "spec.identities[1]");
    assert!(e.reason.contains("first label"), "{e}");
}

#[test]
fn mesh_tls_takes_identities_or_refs_to_service_accounts_and_namespaces() {
    let refs = |d: &mut Value, refs: Value| {
        let spec = d["spec"].as_object_mut().unwrap();
        spec.remove("identities");
        spec.insert("identityRefs".into(), refs);
    };
    parsed("meshtls-authentication.yaml", |d| {
        refs(
            d,
            json!([{"kind": "ServiceAccount", "name": "web"}, {"kind": "Namespace", "name": "ops"}]),
        )
    })
    .unwrap();
    let e = refused("meshtls-authentication.yaml", |d| {
        refs(
            d,
            json!([{"kind": "ServiceAccount", "name": "web"}, {"kind": "Pod", "name": "x"}]),
        )
    });
    assert_eq!(e.field, "spec.identityRefs[1].kind");
    let e = refused("meshtls-authentication.yaml", |d| {
        d["spec"]["identityRefs"] = json!([{"kind": "ServiceAccount", "name": "web"}])
    });
    assert_eq!(e.field, "spec.identityRefs");
    let e = refused("meshtls-authentication.yaml", |d| d["spec"] = json!({}));
    assert_eq!(e.field, "spec.identities");
}

#[test]
fn an_invalid_cidr_or_exception_is_refused_naming_it() {
    let nets = |d: &mut Value, n: Value| d["spec"]["networks"] = n;
    let e = refused("network-authentication.yaml", |d| {
        nets(
            d,
            json!([{"cidr": "10.42.0.0/16"}, {"cidr": "10.43.0.1/16"}]),
        )
    });
    assert_eq!(e.field, "spec.networks[1].cidr");
    assert!(e.reason.contains("host bits"), "{e}");
    for bad in ["10.42.0.0/33", "10.42.0/16", "cluster", ""] {
        let e = refused("network-authentication.yaml", |d| {
            nets(d, json!([{"cidr": bad}]))
        });
        assert_eq!(e.field, "spec.networks[0].cidr", "{bad}");
    }
    let e = refused("network-authentication.yaml", |d| {
        nets(
            d,
            json!([{"cidr": "10.42.0.0/16", "except": ["10.42.1.0/24", "10.43.0.0/24"]}]),
        )
    });
    assert_eq!(e.field, "spec.networks[0].except[1]");
    assert!(e.reason.contains("not inside"), "{e}");
    let e = refused("network-authentication.yaml", |d| {
        nets(
            d,
            json!([{"cidr": "10.42.0.0/16", "except": ["10.0.0.0/8"]}]),
        )
    });
    assert_eq!(e.field, "spec.networks[0].except[0]");
    let e = refused("network-authentication.yaml", |d| {
        nets(
            d,
            json!([{"cidr": "10.42.0.0/16", "except": ["10.42.1.1/24"]}]),
        )
    });
    assert_eq!(e.field, "spec.networks[0].except[0]");
    let e = refused("network-authentication.yaml", |d| nets(d, json!([])));
    assert_eq!(e.field, "spec.networks");
    let many: Vec<Value> = (0..=authn::MAX_NETWORKS)
        .map(|i| json!({"cidr": format!("10.0.{}.{}", i / 256, i % 256)}))
        .collect();
    let e = refused("network-authentication.yaml", |d| nets(d, json!(many)));
    assert_eq!(e.field, "spec.networks");
    parsed("network-authentication.yaml", |d| {
        nets(d, json!(many[..authn::MAX_NETWORKS]))
    })
    .unwrap();
    // A bare address is a /32 (or /128).
    parsed("network-authentication.yaml", |d| {
        nets(d, json!([{"cidr": "192.168.1.10"}, {"cidr": "::1"}]))
    })
    .unwrap();
}

#[test]
fn authorization_targets_and_authentications_are_of_the_allowed_kinds() {
    let target = |kind: &'static str, group: Value, name: &'static str| {
        move |d: &mut Value| {
            d["spec"]["targetRef"] = json!({"kind": kind, "name": name});
            if !group.is_null() {
                d["spec"]["targetRef"]["group"] = group;
            }
        }
    };
    parsed(
        "authorization-policy.yaml",
        target("HTTPRoute", json!("gateway.networking.k8s.io"), "api"),
    )
    .unwrap();
    parsed(
        "authorization-policy.yaml",
        target("GRPCRoute", json!("gateway.networking.k8s.io"), "api"),
    )
    .unwrap();
    parsed(
        "authorization-policy.yaml",
        target("Namespace", Value::Null, "shop"),
    )
    .unwrap();
    let e = refused(
        "authorization-policy.yaml",
        target("Namespace", Value::Null, "other"),
    );
    assert_eq!(e.field, "spec.targetRef.name");
    let e = refused(
        "authorization-policy.yaml",
        target("Service", Value::Null, "api"),
    );
    assert_eq!(e.field, "spec.targetRef.kind");
    let e = refused(
        "authorization-policy.yaml",
        target("Server", Value::Null, "api-http"),
    );
    assert_eq!(e.field, "spec.targetRef.group");

    let authn = |refs: Value| move |d: &mut Value| d["spec"]["requiredAuthenticationRefs"] = refs;
    parsed(
        "authorization-policy.yaml",
        authn(json!([
            {"kind": "ServiceAccount", "name": "web"},
            {"group": "policy.pimesh.io", "kind": "NetworkAuthentication", "name": "cluster-network"}
        ])),
    )
    .unwrap();
    let e = refused(
        "authorization-policy.yaml",
        authn(json!([{"kind": "Secret", "name": "x"}])),
    );
    assert_eq!(e.field, "spec.requiredAuthenticationRefs[0].kind");
    let e = refused(
        "authorization-policy.yaml",
        authn(json!([
            {"group": "policy.pimesh.io", "kind": "MeshTLSAuthentication", "name": "a"},
            {"kind": "ServiceAccount", "name": "web"}
        ])),
    );
    assert_eq!(e.field, "spec.requiredAuthenticationRefs[1]");
    let e = refused(
        "authorization-policy.yaml",
        authn(json!([
            {"group": "policy.pimesh.io", "kind": "NetworkAuthentication", "name": "a"},
            {"group": "policy.pimesh.io", "kind": "NetworkAuthentication", "name": "b"}
        ])),
    );
    assert_eq!(e.field, "spec.requiredAuthenticationRefs[1]");
    let e = refused("authorization-policy.yaml", |d| {
        d["spec"]
            .as_object_mut()
            .unwrap()
            .remove("requiredAuthenticationRefs");
    });
    assert_eq!(e.field, "spec");
    assert!(e.reason.contains("requiredAuthenticationRefs"), "{e}");
}

#[test]
fn a_rate_limit_of_zero_or_above_the_total_is_refused() {
    for (field, pointer) in [
        (
            "spec.total.requestsPerSecond",
            "/spec/total/requestsPerSecond",
        ),
        (
            "spec.identity.requestsPerSecond",
            "/spec/identity/requestsPerSecond",
        ),
        (
            "spec.overrides[0].requestsPerSecond",
            "/spec/overrides/0/requestsPerSecond",
        ),
    ] {
        for bad in [0, -5] {
            let e = refused("ratelimit.yaml", |d| {
                *d.pointer_mut(pointer).unwrap() = json!(bad)
            });
            assert_eq!(e.field, field, "{bad}");
            assert!(e.reason.contains("at least 1"), "{e}");
        }
    }
    let e = refused("ratelimit.yaml", |d| {
        d["spec"]["identity"]["requestsPerSecond"] = json!(101)
    });
    assert_eq!(e.field, "spec.identity.requestsPerSecond");
    assert!(e.reason.contains("above spec.total"), "{e}");
    // Without a total, any positive rate.
    parsed("ratelimit.yaml", |d| {
        d["spec"].as_object_mut().unwrap().remove("total");
        d["spec"]["identity"]["requestsPerSecond"] = json!(1000);
    })
    .unwrap();
    let e = refused("ratelimit.yaml", |d| {
        d["spec"]["overrides"][0]["clientRefs"][0]["kind"] = json!("Namespace")
    });
    assert_eq!(e.field, "spec.overrides[0].clientRefs[0].kind");
    let e = refused("ratelimit.yaml", |d| {
        d["spec"]["overrides"][0]["clientRefs"] = json!([])
    });
    assert_eq!(e.field, "spec.overrides[0].clientRefs");
    let e = refused("ratelimit.yaml", |d| {
        d["spec"]["targetRef"]["kind"] = json!("HTTPRoute")
    });
    assert_eq!(e.field, "spec.targetRef.kind");
}

#[test]
fn label_selectors_match_as_kubernetes() {
    let labels: BTreeMap<String, String> = [("app", "api"), ("tier", "back")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let sel = |v: Value| serde_json::from_value::<LabelSelector>(v).unwrap();
    assert!(sel(json!({})).matches(&labels));
    assert!(sel(json!({"matchLabels": {"app": "api"}})).matches(&labels));
    assert!(!sel(json!({"matchLabels": {"app": "web"}})).matches(&labels));
    assert!(sel(json!({"matchExpressions": [
        {"key": "tier", "operator": "In", "values": ["back", "mid"]},
        {"key": "canary", "operator": "DoesNotExist"},
        {"key": "app", "operator": "NotIn", "values": ["web"]}
    ]}))
    .matches(&labels));
    assert!(
        !sel(json!({"matchLabels": {"app": "api"}, "matchExpressions": [
            {"key": "canary", "operator": "Exists"}
        ]}))
        .matches(&labels)
    );
}

/// The checked-in CRDs are `pimesh install --crds`' output: regenerate with
/// `cargo run -p pimesh-controller -- install --crds > k3s/pimesh-crds.yaml`.
#[test]
fn checked_in_crds_are_generated() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../k3s/pimesh-crds.yaml");
    let checked_in = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        checked_in == crd::manifest().unwrap(),
        "{path} differs from `pimesh install --crds`; run \
         `cargo run -p pimesh-controller -- install --crds > k3s/pimesh-crds.yaml`"
    );
}

#[test]
fn the_crds_mirror_what_the_schema_can_say() {
    let crds: Vec<Value> = crd::crds()
        .iter()
        .map(|c| serde_json::to_value(c).unwrap())
        .collect();
    let names: Vec<&str> = crds
        .iter()
        .map(|c| c["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "servers.policy.pimesh.io",
            "authorizationpolicies.policy.pimesh.io",
            "meshtlsauthentications.policy.pimesh.io",
            "networkauthentications.policy.pimesh.io",
            "httplocalratelimitpolicies.policy.pimesh.io",
        ]
    );
    let spec = |i: usize| {
        &crds[i]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    };
    for c in &crds {
        assert_eq!(c["spec"]["versions"][0]["name"], "v1alpha1");
        assert_eq!(c["spec"]["scope"], "Namespaced");
    }
    let server = spec(0);
    assert_eq!(
        server["properties"]["proxyProtocol"]["enum"],
        json!(["unknown", "HTTP/1", "HTTP/2", "gRPC", "opaque", "TLS"])
    );
    assert_eq!(server["properties"]["accessPolicy"]["default"], "deny");
    assert_eq!(
        server["properties"]["port"]["x-kubernetes-int-or-string"],
        true
    );
    assert_eq!(
        spec(2)["properties"]["identities"]["items"]["pattern"],
        authn::IDENTITY_PATTERN
    );
    assert_eq!(
        spec(2)["oneOf"],
        json!([{"required": ["identities"]}, {"required": ["identityRefs"]}])
    );
    assert!(
        spec(3)["properties"]["networks"]["items"]["properties"]["cidr"]
            ["x-kubernetes-validations"][0]["rule"]
            .as_str()
            .unwrap()
            .contains("isCIDR")
    );
    assert_eq!(
        spec(4)["properties"]["total"]["properties"]["requestsPerSecond"]["minimum"],
        1.0
    );
}

fn all_examples() -> Vec<Resource> {
    [
        "server.yaml",
        "meshtls-authentication.yaml",
        "authorization-policy.yaml",
        "network-authentication.yaml",
        "ratelimit.yaml",
    ]
    .iter()
    .map(|f| parsed(f, |_| {}).unwrap())
    .collect()
}

#[test]
fn a_policy_naming_a_missing_server_or_authentication_is_not_applied() {
    let all = all_examples();
    let st = index::statuses(&all);
    assert!(st.iter().all(|s| s.applied && s.reason.is_none()), "{st:?}");

    // Without the Server: the AuthorizationPolicy and the rate limit wait.
    let st = index::statuses(&all[1..]);
    let reasons: Vec<(&str, Option<&str>)> = st
        .iter()
        .map(|s| (s.kind.as_str(), s.reason.as_deref()))
        .collect();
    assert_eq!(
        reasons,
        [
            ("MeshTLSAuthentication", None),
            (
                "AuthorizationPolicy",
                Some("Server shop/api-http not found")
            ),
            ("NetworkAuthentication", None),
            (
                "HTTPLocalRateLimitPolicy",
                Some("Server shop/api-http not found")
            ),
        ]
    );
    // Without the MeshTLSAuthentication.
    let without: Vec<Resource> = all
        .iter()
        .filter(|r| r.kind() != "MeshTLSAuthentication")
        .cloned()
        .collect();
    let authz = index::statuses(&without)
        .into_iter()
        .find(|s| s.kind == "AuthorizationPolicy")
        .unwrap();
    assert!(!authz.applied);
    assert_eq!(
        authz.reason.as_deref(),
        Some("MeshTLSAuthentication shop/web-only not found")
    );
    // A Server of the same name in another namespace does not count.
    let other = parsed("server.yaml", |d| {
        d["metadata"]["namespace"] = json!("other")
    })
    .unwrap();
    let mut moved = all.clone();
    moved[0] = other;
    let authz = index::statuses(&moved)
        .into_iter()
        .find(|s| s.kind == "AuthorizationPolicy")
        .unwrap();
    assert_eq!(
        authz.reason.as_deref(),
        Some("Server shop/api-http not found")
    );
}

#[test]
fn stored_policies_are_created_configured_listed_and_deleted() {
    use stored::{Applied, ApplyError, Policies};
    let dir = pimesh_test_support::TempDir::new("policies");
    let store = crate::store::Store::open(dir.path()).unwrap();
    let p = Policies::open(&store).unwrap();
    let doc = |f: &str| example(f);
    let (r, a) = p.apply(doc("authorization-policy.yaml")).unwrap();
    assert_eq!((r.kind(), a), ("AuthorizationPolicy", Applied::Created));
    assert_eq!(
        p.list().unwrap()[0].reason.as_deref(),
        Some("Server shop/api-http not found")
    );
    p.apply(doc("server.yaml")).unwrap();
    p.apply(doc("meshtls-authentication.yaml")).unwrap();
    assert!(p.list().unwrap().iter().all(|s| s.applied));
    assert_eq!(p.apply(doc("server.yaml")).unwrap().1, Applied::Unchanged);
    let mut changed = doc("server.yaml");
    changed["spec"]["port"] = json!("http");
    assert_eq!(p.apply(changed).unwrap().1, Applied::Configured);
    // No namespace: default's.
    let mut bare = doc("server.yaml");
    bare["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("namespace");
    assert_eq!(p.apply(bare).unwrap().0.namespace(), Some("default"));
    // Invalid: refused naming the field, nothing stored.
    let mut bad = doc("network-authentication.yaml");
    bad["spec"]["networks"][0]["cidr"] = json!("10.42.0.1/16");
    match p.apply(bad) {
        Err(ApplyError::Invalid(e)) => assert_eq!(e.field, "spec.networks[0].cidr"),
        other => panic!("{other:?}"),
    }
    assert_eq!(p.list().unwrap().len(), 4);
    assert!(p.delete("Server", "shop", "api-http").unwrap());
    assert!(!p.delete("Server", "shop", "api-http").unwrap());
    let st = p.list().unwrap();
    let authz = st.iter().find(|s| s.kind == "AuthorizationPolicy").unwrap();
    assert_eq!(
        authz.reason.as_deref(),
        Some("Server shop/api-http not found")
    );
    // Kept across a reopen.
    drop(p);
    drop(store);
    let store = crate::store::Store::open(dir.path()).unwrap();
    assert_eq!(Policies::open(&store).unwrap().list().unwrap(), st);
}
