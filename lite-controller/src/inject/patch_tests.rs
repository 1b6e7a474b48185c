use super::*;

fn params() -> Params {
    Params {
        controller_ns: "pimesh".into(),
        cluster_domain: "cluster.local".into(),
        trust_domain: "cluster.local".into(),
        proxy_image: "example/proxy:1".into(),
        native_sidecars: true,
        default_inbound_policy: Default::default(),
        cluster_networks: pimesh_api::policy::DEFAULT_CLUSTER_NETWORKS
            .parse()
            .unwrap(),
    }
}

/// Applies `add` operations (RFC 6902 §4.1) as the API server does.
fn apply(mut doc: Value, ops: &[Value]) -> Value {
    for op in ops {
        assert_eq!(op["op"], "add", "{op}");
        let path = op["path"].as_str().unwrap();
        let tokens: Vec<String> = path[1..]
            .split('/')
            .map(|t| t.replace("~1", "/").replace("~0", "~"))
            .collect();
        let (last, parents) = tokens.split_last().unwrap();
        let mut at = &mut doc;
        for t in parents {
            at = match at {
                Value::Array(a) => &mut a[t.parse::<usize>().unwrap()],
                Value::Object(o) => o.get_mut(t).unwrap_or_else(|| panic!("{path}: no {t}")),
                _ => panic!("{path}: {t} is not a container"),
            };
        }
        let value = op["value"].clone();
        match at {
            Value::Array(a) if last == "-" => a.push(value),
            Value::Array(a) => a.insert(last.parse().unwrap(), value),
            Value::Object(o) => {
                o.insert(last.clone(), value);
            }
            _ => panic!("{path}: parent is not a container"),
        }
    }
    doc
}

fn bare_pod() -> Value {
    json!({"metadata": {"name": "web"}, "spec": {"containers": [{"name": "app", "image": "app"}]}})
}

fn env_of(c: &Value, name: &str) -> Value {
    c["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

#[test]
fn decisions_follow_linkerds_rules() {
    let pod = |meta: Value, spec: Value| json!({"metadata": meta, "spec": spec});
    let plain = pod(json!({}), json!({"containers": []}));
    let enabled = pod(
        json!({"annotations": {INJECT_ANNOTATION: "enabled"}}),
        json!({"containers": []}),
    );
    let disabled = pod(
        json!({"annotations": {INJECT_ANNOTATION: "disabled"}}),
        json!({"containers": []}),
    );
    assert_eq!(decide(&plain, "shop", "pimesh"), Decision::AskNamespace);
    assert_eq!(decide(&enabled, "shop", "pimesh"), Decision::Inject);
    assert_eq!(
        decide(&disabled, "shop", "pimesh"),
        Decision::Skip(Skip::Disabled)
    );
    assert_eq!(
        decide(&enabled, "kube-system", "pimesh"),
        Decision::Skip(Skip::KubeSystem)
    );
    assert_eq!(
        decide(&enabled, "mesh", "mesh"),
        Decision::Skip(Skip::ControlPlane)
    );
    let host = pod(
        json!({"annotations": {INJECT_ANNOTATION: "enabled"}}),
        json!({"hostNetwork": true, "containers": []}),
    );
    assert_eq!(
        decide(&host, "shop", "pimesh"),
        Decision::Skip(Skip::HostNetwork)
    );
    let injected = pod(
        json!({}),
        json!({"initContainers": [{"name": PROXY_CONTAINER}], "containers": []}),
    );
    assert_eq!(
        decide(&injected, "shop", "pimesh"),
        Decision::Skip(Skip::AlreadyInjected)
    );
    let old = pod(
        json!({}),
        json!({"containers": [{"name": PROXY_CONTAINER}]}),
    );
    assert_eq!(
        decide(&old, "shop", "pimesh"),
        Decision::Skip(Skip::AlreadyInjected)
    );
    // The namespace: annotation, or label; anything else is not enabled.
    assert_eq!(
        namespace_decides(&json!({"annotations": {INJECT_ANNOTATION: "enabled"}})),
        Decision::Inject
    );
    assert_eq!(
        namespace_decides(&json!({"labels": {INJECT_ANNOTATION: "enabled"}})),
        Decision::Inject
    );
    assert_eq!(
        namespace_decides(&json!({})),
        Decision::Skip(Skip::NotEnabled)
    );
    assert_eq!(
        namespace_decides(&json!({"annotations": {INJECT_ANNOTATION: "yes"}})),
        Decision::Skip(Skip::NotEnabled)
    );
}

/// A pod without initContainers, volumes, labels or annotations: the
/// patch creates them; the result has the init container, the native
/// sidecar, the volumes, the env; injecting it again is skipped.
#[test]
fn patch_meshes_a_bare_pod_and_is_idempotent() {
    let pod = bare_pod();
    let out = apply(pod.clone(), &patch(&pod, "shop", &params()));
    assert_eq!(out["metadata"]["labels"][CONTROL_PLANE_NS_LABEL], "pimesh");
    assert_eq!(
        out["metadata"]["annotations"][PROXY_VERSION_ANNOTATION],
        env!("CARGO_PKG_VERSION")
    );
    let inits = out["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(inits.len(), 2);
    let init = &inits[0];
    assert_eq!(init["name"], INIT_CONTAINER);
    assert_eq!(init["image"], "example/proxy:1");
    assert_eq!(init["args"][0], "init");
    assert_eq!(
        init["securityContext"]["capabilities"]["add"],
        json!(["NET_ADMIN", "NET_RAW"])
    );
    assert_eq!(init["securityContext"]["runAsUser"], 0);
    assert_eq!(init["securityContext"]["runAsNonRoot"], false);
    let proxy = &inits[1];
    assert_eq!(proxy["name"], PROXY_CONTAINER);
    assert_eq!(proxy["restartPolicy"], "Always");
    assert_eq!(proxy["imagePullPolicy"], "IfNotPresent");
    assert_eq!(
        proxy["startupProbe"]["httpGet"],
        json!({"path": "/ready", "port": 4191})
    );
    assert_eq!(proxy["securityContext"]["runAsUser"], 2102);
    assert_eq!(proxy["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        proxy["resources"],
        json!({"requests": {"cpu": "10m", "memory": "16Mi"}, "limits": {"memory": "64Mi"}})
    );
    assert_eq!(
        env_of(proxy, "PIMESH_PROXY_CONTROLLER_ADDR")["value"],
        "pimesh-controller.pimesh.svc.cluster.local:8086"
    );
    assert_eq!(
        env_of(proxy, "PIMESH_PROXY_IDENTITY")["value"],
        "$(_pod_ns)/$(_pod_sa)"
    );
    assert_eq!(
        env_of(proxy, "_pod_sa")["valueFrom"]["fieldRef"]["fieldPath"],
        "spec.serviceAccountName"
    );
    assert_eq!(
        env_of(proxy, "PIMESH_PROXY_TRUST_ANCHORS")["value"],
        "/var/run/pimesh/identity/trust-roots/ca-bundle.crt"
    );
    assert_eq!(
        env_of(proxy, "PIMESH_PROXY_TOKEN_FILE")["value"],
        "/var/run/secrets/pimesh.io/serviceaccount/token"
    );
    assert_eq!(
        env_of(proxy, "PIMESH_PROXY_WORKLOAD_LABELS")["value"],
        "namespace=shop,pod=$(_pod_name)"
    );
    // No labels of its own: the one the patch adds.
    assert_eq!(
        env_of(proxy, "PIMESH_PROXY_POD_LABELS")["value"],
        "pimesh.io/control-plane-ns=pimesh"
    );
    assert_eq!(
        env_of(proxy, "PIMESH_PROXY_TRUST_DOMAIN")["value"],
        "cluster.local"
    );
    assert_eq!(env_of(proxy, "PIMESH_PROXY_OPAQUE_PORTS"), Value::Null);
    assert_eq!(env_of(proxy, "PIMESH_PROXY_POD_PORTS"), Value::Null);
    // Downward-API variables come before their use.
    let names: Vec<&str> = proxy["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(
        names.iter().position(|n| *n == "_pod_sa")
            < names.iter().position(|n| *n == "PIMESH_PROXY_IDENTITY")
    );
    let vols = out["spec"]["volumes"].as_array().unwrap();
    let sat = &vols[0]["projected"]["sources"][0]["serviceAccountToken"];
    assert_eq!(sat["audience"], "identity.pimesh.io");
    assert_eq!(sat["expirationSeconds"], 86400);
    assert_eq!(vols[1]["configMap"]["name"], "pimesh-identity-trust-roots");
    assert_eq!(out["spec"]["containers"].as_array().unwrap().len(), 1);
    // Twice: skipped, so nothing changes.
    assert_eq!(
        decide(&out, "shop", "other"),
        Decision::Skip(Skip::AlreadyInjected)
    );
}

/// Existing labels, annotations (with `/` in keys), init containers and
/// volumes are kept; the mesh's containers go first; config annotations
/// reach the init args, env and resources.
#[test]
fn patch_keeps_existing_fields_and_honours_config_annotations() {
    let pod = json!({
        "metadata": {
            "generateName": "web-7c9f8d6b5d-",
            "labels": {"app": "web", "pod-template-hash": "7c9f8d6b5d"},
            "annotations": {
                "config.pimesh.io/skip-inbound-ports": "25, 3306",
                "config.pimesh.io/skip-outbound-ports": "5432,8000-8100",
                "config.pimesh.io/opaque-ports": "3306",
                "config.pimesh.io/proxy-log-level": "debug",
                "config.pimesh.io/proxy-cpu-limit": "500m",
                "config.pimesh.io/proxy-memory-request": "128Mi",
                "config.pimesh.io/proxy-cpu-request": "lots",
            },
            "ownerReferences": [{"kind": "ReplicaSet", "name": "web-7c9f8d6b5d", "controller": true}],
        },
        "spec": {
            "initContainers": [{"name": "migrate"}],
            "containers": [{"name": "app"}],
            "volumes": [{"name": "data", "emptyDir": {}}],
        },
    });
    let ops = patch(&pod, "shop", &params());
    assert!(ops
        .iter()
        .any(|o| o["path"] == "/metadata/labels/pimesh.io~1control-plane-ns"));
    let out = apply(pod.clone(), &ops);
    assert_eq!(out["metadata"]["labels"]["app"], "web");
    assert_eq!(out["metadata"]["labels"][CONTROL_PLANE_NS_LABEL], "pimesh");
    let names: Vec<&str> = out["spec"]["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, [INIT_CONTAINER, PROXY_CONTAINER, "migrate"]);
    let vols: Vec<&str> = out["spec"]["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        vols,
        [
            "data",
            "pimesh-identity-token",
            "pimesh-identity-trust-roots"
        ]
    );
    let init = &out["spec"]["initContainers"][0];
    let args: Vec<&str> = init["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(
        args,
        [
            "init",
            "--incoming-proxy-port",
            "4143",
            "--outgoing-proxy-port",
            "4140",
            "--proxy-uid",
            "2102",
            "--inbound-ports-to-ignore",
            "4190,4191,25,3306",
            "--outbound-ports-to-ignore",
            "5432,8000-8100",
        ]
    );
    let proxy = &out["spec"]["initContainers"][1];
    assert_eq!(env_of(proxy, "PIMESH_PROXY_OPAQUE_PORTS")["value"], "3306");
    assert_eq!(env_of(proxy, "PIMESH_PROXY_LOG")["value"], "debug");
    assert_eq!(
        env_of(proxy, "PIMESH_PROXY_WORKLOAD_LABELS")["value"],
        "namespace=shop,pod=$(_pod_name),deployment=web"
    );
    // An invalid quantity keeps the default; a request above the default
    // limit raises it.
    assert_eq!(
        proxy["resources"],
        json!({"requests": {"cpu": "10m", "memory": "128Mi"}, "limits": {"cpu": "500m", "memory": "128Mi"}})
    );
}

#[test]
fn without_native_sidecars_the_proxy_is_the_first_container() {
    let mut pod = bare_pod();
    pod["metadata"]["annotations"] =
        json!({"config.pimesh.io/proxy-enable-native-sidecar": "false"});
    pod["metadata"]["ownerReferences"] =
        json!([{"kind": "StatefulSet", "name": "db", "controller": true}]);
    let out = apply(pod.clone(), &patch(&pod, "shop", &params()));
    let inits = out["spec"]["initContainers"].as_array().unwrap();
    assert_eq!(inits.len(), 1);
    let cs = out["spec"]["containers"].as_array().unwrap();
    assert_eq!(cs[0]["name"], PROXY_CONTAINER);
    assert!(cs[0].get("restartPolicy").is_none());
    assert_eq!(
        cs[0]["lifecycle"]["postStart"]["exec"]["command"],
        json!(["/pimesh-proxy", "await", "--timeout", "2m"])
    );
    assert_eq!(cs[1]["name"], "app");
    assert_eq!(
        env_of(&cs[0], "PIMESH_PROXY_WORKLOAD_LABELS")["value"],
        "namespace=shop,pod=$(_pod_name),statefulset=db"
    );
    assert_eq!(
        decide(&out, "shop", "pimesh"),
        Decision::Skip(Skip::AlreadyInjected)
    );
}

#[test]
fn an_old_api_server_gets_the_proxy_first_unless_the_pod_asks() {
    let old = Params {
        native_sidecars: false,
        ..params()
    };
    let pod = bare_pod();
    let out = apply(pod.clone(), &patch(&pod, "shop", &old));
    assert_eq!(out["spec"]["containers"][0]["name"], PROXY_CONTAINER);
    assert_eq!(out["spec"]["initContainers"].as_array().unwrap().len(), 1);
    let mut asks = bare_pod();
    asks["metadata"]["annotations"] =
        json!({"config.pimesh.io/proxy-enable-native-sidecar": "true"});
    let out = apply(asks.clone(), &patch(&asks, "shop", &old));
    assert_eq!(out["spec"]["initContainers"][1]["name"], PROXY_CONTAINER);
    assert_eq!(out["spec"]["initContainers"][1]["restartPolicy"], "Always");
}

#[test]
fn helpers_escape_keys_and_check_values() {
    assert_eq!(escape("pimesh.io/inject"), "pimesh.io~1inject");
    assert_eq!(escape("a~b"), "a~0b");
    assert_eq!(
        port_list("25, 3306 ,8000-8100").as_deref(),
        Some("25,3306,8000-8100")
    );
    assert_eq!(port_list("http"), None);
    assert_eq!(port_list("9-3"), None);
    assert_eq!(port_list(""), None);
    assert_eq!(quantity("64Mi"), Some(64.0 * 1024.0 * 1024.0));
    assert_eq!(quantity("10m"), Some(0.01));
    assert_eq!(quantity("1.5"), Some(1.5));
    assert_eq!(quantity("Mi"), None);
    assert_eq!(quantity("5X"), None);
}

/// The proxy's default inbound policy: the pod's annotation, else its
/// namespace's, else the cluster's (`--default-inbound-policy`); a name
/// that is not one of Linkerd's six is ignored at its level. The cluster
/// networks come from `--cluster-networks`.
#[test]
fn the_default_inbound_policy_is_the_pods_then_its_namespaces_then_the_clusters() {
    let policy_of = |pod: &Value, ns_meta: Option<&Value>, p: &Params| {
        let out = apply(pod.clone(), &patch_in_namespace(pod, "shop", ns_meta, p));
        let proxy = out["spec"]["initContainers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == PROXY_CONTAINER)
            .unwrap()
            .clone();
        (
            env_of(&proxy, "PIMESH_PROXY_INBOUND_DEFAULT_POLICY")["value"].clone(),
            env_of(&proxy, "PIMESH_PROXY_POLICY_CLUSTER_NETWORKS")["value"].clone(),
        )
    };
    let cluster = Params {
        default_inbound_policy: DefaultPolicy::AllAuthenticated,
        cluster_networks: "10.42.0.0/16".parse().unwrap(),
        ..params()
    };
    let ns = json!({"annotations": {DEFAULT_INBOUND_POLICY_ANNOTATION: "cluster-authenticated"}});
    let bad_ns = json!({"annotations": {DEFAULT_INBOUND_POLICY_ANNOTATION: "nobody"}});
    let mut pod = bare_pod();

    assert_eq!(policy_of(&pod, None, &params()).0, "all-unauthenticated");
    assert_eq!(
        policy_of(&pod, None, &cluster),
        (json!("all-authenticated"), json!("10.42.0.0/16"))
    );
    assert_eq!(
        policy_of(&pod, Some(&ns), &cluster).0,
        "cluster-authenticated"
    );
    assert_eq!(
        policy_of(&pod, Some(&bad_ns), &cluster).0,
        "all-authenticated"
    );
    assert!(!names_inbound_policy(&pod));

    pod["metadata"]["annotations"] = json!({DEFAULT_INBOUND_POLICY_ANNOTATION: "deny"});
    assert!(names_inbound_policy(&pod));
    assert_eq!(policy_of(&pod, Some(&ns), &cluster).0, "deny");
    pod["metadata"]["annotations"] = json!({DEFAULT_INBOUND_POLICY_ANNOTATION: "allow"});
    assert_eq!(
        policy_of(&pod, Some(&ns), &cluster).0,
        "cluster-authenticated"
    );
}

/// `PIMESH_PROXY_POD_LABELS`: the pod's labels at admission (and the one
/// the patch adds), in `labels_to_string`'s form, which the proxy's
/// stream query and the controller's `parse_labels` read back.
#[test]
fn pod_labels_are_passed_for_the_servers_pod_selectors() {
    let mut pod = bare_pod();
    pod["metadata"]["labels"] =
        json!({"app": "api", "pod-template-hash": "5d4f8", "app.kubernetes.io/part-of": "shop"});
    let out = apply(pod.clone(), &patch(&pod, "shop", &params()));
    let proxy = &out["spec"]["initContainers"][1];
    let value = env_of(proxy, "PIMESH_PROXY_POD_LABELS")["value"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        value,
        "app=api,app.kubernetes.io/part-of=shop,pimesh.io/control-plane-ns=pimesh,pod-template-hash=5d4f8"
    );
    let parsed = pimesh_api::policy::inbound::parse_labels(&value).unwrap();
    assert_eq!(
        parsed,
        serde_json::from_value(out["metadata"]["labels"].clone()).unwrap()
    );
}

/// `PIMESH_PROXY_POD_PORTS`: the containers' named TCP ports, by name,
/// for Servers that name their port (`port: http`); unnamed and UDP ports
/// are left out.
#[test]
fn named_container_ports_are_passed() {
    let mut pod = bare_pod();
    pod["spec"]["containers"] = json!([
        {"name": "app", "image": "a", "ports": [
            {"name": "http", "containerPort": 8080},
            {"containerPort": 8081},
            {"name": "dns", "containerPort": 53, "protocol": "UDP"},
        ]},
        {"name": "side", "image": "b", "ports": [
            {"name": "admin", "containerPort": 9090, "protocol": "TCP"},
        ]},
    ]);
    let out = apply(pod.clone(), &patch(&pod, "shop", &params()));
    let proxy = &out["spec"]["initContainers"][1];
    assert_eq!(
        env_of(proxy, "PIMESH_PROXY_POD_PORTS")["value"],
        "admin=9090,http=8080"
    );
    // What the proxy reads back.
    let value = env_of(proxy, "PIMESH_PROXY_POD_PORTS")["value"].clone();
    let ports = pimesh_api::policy::inbound::parse_ports(value.as_str().unwrap()).unwrap();
    assert_eq!(ports.get("http"), Some(&8080));
}
