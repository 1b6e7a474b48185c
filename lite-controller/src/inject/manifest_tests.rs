use super::*;
use serde_json::json;

const STREAM: &str = "\
# a comment
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
spec:
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
        - name: app
          image: web:1
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{port: 80}]
---
apiVersion: batch/v1
kind: CronJob
metadata: {name: report}
spec:
  schedule: '0 * * * *'
  jobTemplate:
    spec:
      template:
        spec:
          restartPolicy: Never
          containers: [{name: job, image: report:1}]
---
apiVersion: v1
kind: List
items:
  - apiVersion: v1
    kind: Pod
    metadata:
      name: quiet
      annotations: {pimesh.io/inject: disabled}
    spec:
      containers: [{name: app, image: x}]
  - apiVersion: v1
    kind: Pod
    metadata: {name: host}
    spec:
      hostNetwork: true
      containers: [{name: app, image: x}]
  - apiVersion: v1
    kind: Namespace
    metadata: {name: shop}
";

fn docs(yaml: &str) -> Vec<Value> {
    serde_saphyr::from_multiple(yaml).unwrap()
}

fn params() -> Params {
    Params {
        controller_ns: "pimesh".into(),
        cluster_domain: "cluster.local".into(),
        trust_domain: "cluster.local".into(),
        proxy_image: "ghcr.io/pimesh/pimesh-proxy:test".into(),
        native_sidecars: true,
        default_inbound_policy: Default::default(),
        cluster_networks: pimesh_api::policy::DEFAULT_CLUSTER_NETWORKS
            .parse()
            .unwrap(),
    }
}

#[test]
fn templates_get_the_annotation_and_the_rest_passes_through() {
    let (out, outcomes) = inject(STREAM, &Mode::Annotate).unwrap();
    let d = docs(&out);
    assert_eq!(d.len(), 4);
    assert_eq!(
        d[0]["spec"]["template"]["metadata"]["annotations"]["pimesh.io/inject"],
        "enabled"
    );
    assert_eq!(d[0]["spec"]["template"]["metadata"]["labels"]["app"], "web");
    assert_eq!(d[1], docs(STREAM)[1], "a Service passes through unchanged");
    assert_eq!(
        d[2]["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"]
            ["pimesh.io/inject"],
        "enabled"
    );
    let items = &d[3]["items"];
    assert_eq!(
        items[0]["metadata"]["annotations"]["pimesh.io/inject"],
        "disabled"
    );
    assert!(items[1]["metadata"]["annotations"].is_null());
    assert_eq!(
        items[2]["metadata"]["annotations"]["pimesh.io/inject"],
        "enabled"
    );
    let summary: Vec<(&str, Option<&str>)> = outcomes
        .iter()
        .map(|o| (o.object.as_str(), o.skipped))
        .collect();
    assert_eq!(
        summary,
        [
            ("deployment/web", None),
            ("cronjob/report", None),
            ("pod/quiet", Some("pimesh.io/inject: disabled")),
            ("pod/host", Some("hostNetwork: true")),
            ("namespace/shop", None),
        ]
    );
    // Twice: the same output.
    let (again, _) = inject(&out, &Mode::Annotate).unwrap();
    assert_eq!(again, out);
}

#[test]
fn manual_applies_the_webhooks_patch_once() {
    let (out, outcomes) = inject(STREAM, &Mode::Manual(params())).unwrap();
    assert!(outcomes[0].skipped.is_none());
    let d = docs(&out);
    let spec = &d[0]["spec"]["template"]["spec"];
    let inits: Vec<&str> = spec["initContainers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(inits, ["pimesh-init", "pimesh-proxy"]);
    assert_eq!(spec["initContainers"][1]["restartPolicy"], "Always");
    assert_eq!(
        spec["initContainers"][1]["image"],
        "ghcr.io/pimesh/pimesh-proxy:test"
    );
    assert_eq!(spec["containers"][0]["name"], "app");
    assert!(spec["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["name"] == "pimesh-identity-token"));
    // The same patch as the webhook's, for the same pod.
    let mut pod = docs(STREAM)[0]["spec"]["template"].clone();
    pod["metadata"]["annotations"] = json!({"pimesh.io/inject": "enabled"});
    let ops: Vec<json_patch::PatchOperation> =
        serde_json::from_value(patch::patch(&pod, "shop", &params()).into()).unwrap();
    json_patch::patch(&mut pod, &ops).unwrap();
    assert_eq!(d[0]["spec"]["template"], pod);
    // Twice: nothing more.
    let (again, outcomes) = inject(&out, &Mode::Manual(params())).unwrap();
    assert_eq!(again, out);
    assert_eq!(outcomes[0].skipped, Some("already injected"));
}

#[test]
fn garbage_names_the_document_and_line() {
    let bad = "apiVersion: v1\nkind: Pod\nmetadata: {name: a}\n---\napiVersion: v1\nkind: Pod\nmetadata: [name: b\n  oops: : :\n";
    let e = inject(bad, &Mode::Annotate).unwrap_err();
    assert_eq!(e.document, 2, "{e}");
    assert!(e.line >= 7, "{e}");
    assert!(e.to_string().starts_with("document 2, line "), "{e}");
    // Not YAML at all, and empty input.
    assert!(inject("\u{0}\u{1}{{{", &Mode::Annotate).is_err());
    assert_eq!(inject("", &Mode::Annotate).unwrap().0, "");
}

#[test]
fn kinds_without_a_template_pass_through() {
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {a: b}\n";
    let (out, outcomes) = inject(cm, &Mode::Manual(params())).unwrap();
    assert_eq!(docs(&out), docs(cm));
    assert!(outcomes.is_empty());
    let broken = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\nspec: {}\n";
    let (out, outcomes) = inject(broken, &Mode::Annotate).unwrap();
    assert_eq!(docs(&out), docs(broken));
    assert_eq!(outcomes[0].skipped, Some("no pod template"));
}
