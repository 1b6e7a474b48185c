//! `admission.k8s.io/v1` AdmissionReview, the fields the injector uses:
//!
//! ```text
//! request:  {"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",
//!            "request":{"uid":"…","kind":{"kind":"Pod",…},"namespace":"shop",
//!                       "operation":"CREATE","object":{Pod}}}
//! response: {"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",
//!            "response":{"uid":"…","allowed":true[,"patchType":"JSONPatch","patch":"<base64>"]}}
//! ```
//!
//! Source: Kubernetes' "Dynamic Admission Control" (webhook request and
//! response).

use serde_json::{json, Value};

/// The review's `apiVersion`.
pub const API_VERSION: &str = "admission.k8s.io/v1";

/// A request the injector can look at.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// `request.uid`, echoed in the response.
    pub uid: String,
    /// `request.namespace` (else the object's `metadata.namespace`).
    pub namespace: String,
    /// `request.object`: the Pod.
    pub pod: Value,
}

/// An AdmissionReview that cannot be used.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Malformed {
    /// Not JSON, or no `request.uid`: nothing to answer (HTTP 400).
    #[error("not an AdmissionReview with a request uid: {0}")]
    NoUid(String),
    /// A uid but no usable Pod: answered allowed, unchanged.
    #[error("AdmissionReview {uid}: {reason}")]
    NotAPod {
        /// `request.uid`.
        uid: String,
        /// What is missing.
        reason: &'static str,
    },
}

/// Parses an AdmissionReview body.
///
/// # Errors
///
/// [`Malformed::NoUid`] (answer 400), [`Malformed::NotAPod`] (answer allowed,
/// unchanged, with the uid).
pub fn parse(body: &[u8]) -> Result<Request, Malformed> {
    let v: Value = serde_json::from_slice(body).map_err(|e| Malformed::NoUid(e.to_string()))?;
    let req = &v["request"];
    let uid = req["uid"]
        .as_str()
        .filter(|u| !u.is_empty())
        .ok_or_else(|| Malformed::NoUid("no request.uid".into()))?
        .to_string();
    let bad = |reason| Malformed::NotAPod {
        uid: uid.clone(),
        reason,
    };
    if v["apiVersion"] != API_VERSION || v["kind"] != "AdmissionReview" {
        return Err(bad("not an admission.k8s.io/v1 AdmissionReview"));
    }
    if req["kind"]["kind"] != "Pod" {
        return Err(bad("request.kind is not Pod"));
    }
    let pod = &req["object"];
    if !pod.is_object() || !pod["spec"].is_object() || !pod["spec"]["containers"].is_array() {
        return Err(bad("request.object is not a Pod with spec.containers"));
    }
    let namespace = req["namespace"]
        .as_str()
        .or_else(|| pod["metadata"]["namespace"].as_str())
        .filter(|n| !n.is_empty())
        .ok_or_else(|| bad("no namespace"))?
        .to_string();
    Ok(Request {
        uid,
        namespace,
        pod: pod.clone(),
    })
}

/// The response review: allowed, with `patch` (JSON Patch operations) when
/// there are any.
pub fn response(uid: &str, patch: &[Value]) -> Value {
    let mut rsp = json!({"uid": uid, "allowed": true});
    if !patch.is_empty() {
        let bytes = serde_json::to_vec(patch).unwrap_or_default();
        rsp["patchType"] = json!("JSONPatch");
        rsp["patch"] = json!(base64(&bytes));
    }
    json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "response": rsp})
}

/// Standard base64 with padding (RFC 4648 §4), as JSON carries `[]byte`.
pub fn base64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let n = chunk.iter().fold(0u32, |n, b| (n << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64(plain.as_bytes()), enc);
        }
        assert_eq!(base64(&[0xfb, 0xff]), "+/8=");
    }

    fn review(req: Value) -> Vec<u8> {
        serde_json::to_vec(
            &json!({"apiVersion": API_VERSION, "kind": "AdmissionReview", "request": req}),
        )
        .unwrap()
    }

    #[test]
    fn parses_a_pod_review_and_refuses_the_rest() {
        let pod = json!({"metadata": {}, "spec": {"containers": [{"name": "app"}]}});
        let r = parse(&review(
            json!({"uid": "u1", "kind": {"kind": "Pod"}, "namespace": "shop", "object": pod}),
        ))
        .unwrap();
        assert_eq!((r.uid.as_str(), r.namespace.as_str()), ("u1", "shop"));
        assert!(matches!(parse(b"{"), Err(Malformed::NoUid(_))));
        assert!(matches!(
            parse(&review(json!({"kind": {"kind": "Pod"}}))),
            Err(Malformed::NoUid(_))
        ));
        for req in [
            json!({"uid": "u2", "kind": {"kind": "Service"}, "namespace": "shop", "object": pod}),
            json!({"uid": "u2", "kind": {"kind": "Pod"}, "namespace": "shop", "object": 7}),
            json!({"uid": "u2", "kind": {"kind": "Pod"}, "object": pod}),
        ] {
            assert!(
                matches!(parse(&review(req)), Err(Malformed::NotAPod { ref uid, .. }) if uid == "u2")
            );
        }
    }

    #[test]
    fn response_carries_uid_and_a_base64_patch_only_when_there_is_one() {
        let r = response("u1", &[]);
        assert_eq!(r["response"], json!({"uid": "u1", "allowed": true}));
        let r = response("u1", &[json!({"op": "add", "path": "/a", "value": 1})]);
        assert_eq!(r["response"]["patchType"], "JSONPatch");
        assert_eq!(
            r["response"]["patch"],
            base64(br#"[{"op":"add","path":"/a","value":1}]"#)
        );
        assert_eq!(r["apiVersion"], API_VERSION);
    }
}
