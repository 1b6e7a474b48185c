use super::{desired, Condition, Status, ACCEPTED};
use crate::policy::index::statuses;
use crate::policy::resource::Resource;
use serde_json::{json, Value};

fn example(file: &str) -> Value {
    let path = format!("{}/../examples/policy/{file}", env!("CARGO_MANIFEST_DIR"));
    serde_saphyr::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// The example, with `metadata.generation` 3 and `status` set.
fn with(file: &str, status: Option<&Status>, edit: impl FnOnce(&mut Value)) -> Resource {
    let mut doc = example(file);
    doc["metadata"]["generation"] = json!(3);
    doc["metadata"]["creationTimestamp"] = json!("2026-12-01T00:00:00Z");
    if let Some(s) = status {
        doc["status"] = serde_json::to_value(s).unwrap();
    }
    edit(&mut doc);
    Resource::parse(doc).unwrap()
}

/// What [`desired`] says of each of `all`, by name, at `now`.
fn each(all: &[Resource], now: &str) -> Vec<(String, Option<Status>)> {
    all.iter()
        .zip(statuses(all))
        .map(|(r, st)| (r.name().to_string(), desired(r, &st, now)))
        .collect()
}

fn accepted(status: &str, reason: &str, message: &str, at: &str) -> Status {
    Status {
        conditions: vec![Condition {
            type_: ACCEPTED.into(),
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
            observed_generation: Some(3),
            last_transition_time: at.into(),
        }],
    }
}

const T1: &str = "2026-12-06T10:00:00Z";
const T2: &str = "2026-12-06T11:00:00Z";

#[test]
fn accepted_true_then_no_write_while_nothing_changes() {
    let fresh = [with("server.yaml", None, |_| {})];
    let want = accepted("True", "Accepted", "", T1);
    assert_eq!(each(&fresh, T1), [("api-http".into(), Some(want.clone()))]);
    // The object has it: nothing to write, later too.
    let written = [with("server.yaml", Some(&want), |_| {})];
    assert_eq!(each(&written, T2), [("api-http".into(), None)]);
    // A new generation: written again, the transition time kept.
    let edited = [with("server.yaml", Some(&want), |d| {
        d["metadata"]["generation"] = json!(4)
    })];
    let mut again = want.clone();
    again.conditions[0].observed_generation = Some(4);
    assert_eq!(each(&edited, T2), [("api-http".into(), Some(again))]);
    // Serialised as Kubernetes' metav1.Condition.
    assert_eq!(
        serde_json::to_value(&want).unwrap(),
        json!({"conditions": [{
            "type": "Accepted", "status": "True", "reason": "Accepted", "message": "",
            "observedGeneration": 3, "lastTransitionTime": T1,
        }]})
    );
}

#[test]
fn a_missing_target_is_no_matching_target_until_it_exists() {
    let pending = accepted(
        "False",
        "NoMatchingTarget",
        "Server shop/api-http not found",
        T1,
    );
    let authz = |s: Option<&Status>| with("authorization-policy.yaml", s, |_| {});
    let mesh = with("meshtls-authentication.yaml", None, |_| {});
    let got = each(&[authz(None), mesh.clone()], T1);
    assert_eq!(got[0].1.as_ref(), Some(&pending));
    // Unchanged while the Server is missing.
    assert_eq!(each(&[authz(Some(&pending)), mesh.clone()], T2)[0].1, None);
    // The Server created: True, a new transition time.
    let server = with("server.yaml", None, |_| {});
    let got = each(&[authz(Some(&pending)), mesh.clone(), server.clone()], T2);
    assert_eq!(got[0].1, Some(accepted("True", "Accepted", "", T2)));
    // Another missing reference: its own reason.
    let got = each(&[authz(None), server], T1);
    assert_eq!(
        got[0].1,
        Some(accepted(
            "False",
            "RefNotFound",
            "MeshTLSAuthentication shop/web-only not found",
            T1
        ))
    );
    // A different reason while still False keeps the transition time.
    let got = each(
        &[authz(Some(&pending)), with("server.yaml", None, |_| {})],
        T2,
    );
    assert_eq!(
        got[0].1.as_ref().unwrap().conditions[0].last_transition_time,
        T1
    );
}

#[test]
fn a_second_rate_limit_and_a_conflicting_server_name_the_older() {
    let server = with("server.yaml", None, |_| {});
    let late = |name: &str, file: &str| {
        let name = name.to_string();
        with(file, None, move |d| {
            d["metadata"]["name"] = json!(name);
            d["metadata"]["creationTimestamp"] = json!("2026-12-02T00:00:00Z");
        })
    };
    let all = [
        server,
        late("a-late", "server.yaml"),
        with("ratelimit.yaml", None, |_| {}),
        late("b-limit", "ratelimit.yaml"),
    ];
    let got = each(&all, T1);
    let reason = |i: usize| {
        let c = &got[i].1.as_ref().unwrap().conditions[0];
        (c.status.as_str(), c.reason.as_str(), c.message.clone())
    };
    assert_eq!(reason(0).1, "Accepted");
    assert_eq!(reason(2).1, "Accepted");
    let (status, why, message) = reason(1);
    assert_eq!((status, why), ("False", "Conflict"));
    assert!(
        message.contains("Server shop/api-http's, older"),
        "{message}"
    );
    let (status, why, message) = reason(3);
    assert_eq!((status, why), ("False", "RateLimitReasonAlreadyExists"));
    assert!(message.contains("api-rate-limit"), "{message}");
}

/// The sample HTTPRoute (parent `shop/web:80`, backends `web-v1`,
/// `web-v2`), generation 3, with `parents` as its status (none: no status).
fn route(parents: Option<Value>, edit: impl FnOnce(&mut Value)) -> Resource {
    let path = format!(
        "{}/../examples/routes/httproute.yaml",
        env!("CARGO_MANIFEST_DIR")
    );
    let mut doc: Value = serde_saphyr::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    doc["metadata"]["generation"] = json!(3);
    if let Some(p) = parents {
        doc["status"] = json!({ "parents": p });
    }
    edit(&mut doc);
    Resource::parse(doc).unwrap()
}

/// A Gateway controller's entry, which pimesh keeps as it is.
fn foreign() -> Value {
    json!({
        "parentRef": {"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "edge"},
        "controllerName": "example.com/gateway",
        "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                        "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}],
    })
}

fn ours(accepted: (&str, &str, &str), resolved: (&str, &str, &str), at: &str) -> Value {
    let c = |t: &str, (status, reason, message): (&str, &str, &str)| {
        json!({"type": t, "status": status, "reason": reason, "message": message,
               "observedGeneration": 3, "lastTransitionTime": at})
    };
    json!({
        "parentRef": {"group": "", "kind": "Service", "name": "web", "port": 80},
        "controllerName": "pimesh.io/policy-controller",
        "conditions": [c("Accepted", accepted), c("ResolvedRefs", resolved)],
    })
}

#[test]
fn a_route_gets_an_entry_per_parent_of_pimesh_and_keeps_the_others() {
    use super::desired_route;
    let all_known = |_: &str, _: &str, _: Option<u16>| true;
    let ok = ("True", "Accepted", "");
    let resolved = ("True", "ResolvedRefs", "");
    let r = route(Some(json!([foreign()])), |_| {});
    let want = desired_route(&r, std::slice::from_ref(&r), &all_known, T1).unwrap();
    assert_eq!(want.parents, [foreign(), ours(ok, resolved, T1)]);
    // Written: nothing to do.
    let r = route(Some(json!(want.parents)), |_| {});
    assert_eq!(
        desired_route(&r, std::slice::from_ref(&r), &all_known, T2),
        None
    );
    // A backend gone: ResolvedRefs turns, Accepted keeps its time.
    let no_v2 = |_: &str, name: &str, _: Option<u16>| name != "web-v2";
    let want = desired_route(&r, std::slice::from_ref(&r), &no_v2, T2).unwrap();
    let mut changed = ours(
        ok,
        (
            "False",
            "BackendNotFound",
            "backend Service shop/web-v2 not registered",
        ),
        T1,
    );
    changed["conditions"][1]["lastTransitionTime"] = json!(T2);
    assert_eq!(want.parents, [foreign(), changed]);
    // The parent Service's port not registered.
    let no_web = |_: &str, name: &str, port: Option<u16>| name != "web" || port != Some(80);
    let want = desired_route(&r, std::slice::from_ref(&r), &no_web, T1).unwrap();
    assert_eq!(
        want.parents[1]["conditions"][0],
        json!({"type": "Accepted", "status": "False", "reason": "NoMatchingParent",
               "message": "parent Service shop/web port 80 not registered",
               "observedGeneration": 3, "lastTransitionTime": T1})
    );
}
