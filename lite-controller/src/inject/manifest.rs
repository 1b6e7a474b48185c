//! `pimesh inject`: meshes the workloads of a YAML stream offline, as
//! `linkerd inject` does.
//!
//! Each document's pod template is found by kind: a `Pod` itself;
//! `Deployment`, `StatefulSet`, `DaemonSet`, `ReplicaSet`,
//! `ReplicationController` and `Job` at `spec.template`; `CronJob` at
//! `spec.jobTemplate.spec.template`; a `List` (or any `*List`) through
//! its `items`. A `Namespace` gets the annotation on itself. Other kinds
//! pass through unchanged.
//!
//! - Default: the template gets `pimesh.io/inject: enabled`; the proxy
//!   injector does the rest when the API server creates the pods.
//! - [`Mode::Manual`]: the template gets the injector's own JSON Patch
//!   ([`super::patch::patch`], the same code as the webhook), so the
//!   output runs meshed without the webhook.
//!
//! A template the webhook would leave alone (`pimesh.io/inject: disabled`,
//! `hostNetwork`, already injected, in `kube-system` or the control
//! plane's namespace) is left alone too and reported. Injecting twice
//! changes nothing. As with `linkerd inject`, each document comes back
//! with its keys sorted (it is re-serialized), comments dropped.

use super::patch::{self, Decision, Params, INJECT_ANNOTATION};
use serde_json::Value;

/// How far to inject.
#[derive(Debug, Clone)]
pub enum Mode {
    /// Add `pimesh.io/inject: enabled` to pod templates (and namespaces).
    Annotate,
    /// Apply the full injection patch with these parameters.
    Manual(Params),
}

/// What happened to one workload (a document, or a `List` item).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// `kind/name` (`deployment/web`), lower-case kind as kubectl prints.
    pub object: String,
    /// `None`: injected (or annotated); else why it was left alone.
    pub skipped: Option<&'static str>,
}

/// The input is not YAML.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("document {document}, line {line}, column {column}: {message}")]
pub struct ParseError {
    /// 1-based document number in the stream.
    pub document: usize,
    /// 1-based line in the input (0: unknown).
    pub line: u64,
    /// 1-based column (0: unknown).
    pub column: u64,
    /// The parser's message.
    pub message: String,
}

/// The 1-based number of the document holding `line` (documents are
/// separated by lines starting with `---`).
fn document_of(input: &str, line: u64) -> usize {
    let mut doc = 1;
    let mut seen_content = false;
    for (i, l) in input.lines().enumerate() {
        if i as u64 + 1 >= line {
            break;
        }
        if l.starts_with("---") {
            if seen_content {
                doc += 1;
            }
            seen_content = false;
        } else if !l.trim().is_empty() && !l.trim_start().starts_with('#') {
            seen_content = true;
        }
    }
    doc
}

fn set_annotation(meta: &mut Value) {
    if !meta.is_object() {
        *meta = Value::Object(Default::default());
    }
    let anns = &mut meta["annotations"];
    if !anns.is_object() {
        *anns = Value::Object(Default::default());
    }
    anns[INJECT_ANNOTATION] = Value::String("enabled".into());
}

/// Meshes one pod template (`{metadata, spec}`) of namespace `ns`.
fn template(t: &mut Value, ns: &str, mode: &Mode) -> Option<&'static str> {
    let controller_ns = match mode {
        Mode::Manual(p) => p.controller_ns.as_str(),
        Mode::Annotate => crate::kube::DEFAULT_NAMESPACE,
    };
    match patch::decide(t, ns, controller_ns) {
        Decision::Skip(s) => return Some(s.reason()),
        Decision::Inject | Decision::AskNamespace => {}
    }
    match mode {
        Mode::Annotate => set_annotation(&mut t["metadata"]),
        Mode::Manual(p) => {
            set_annotation(&mut t["metadata"]);
            let ops = patch::patch(t, ns, p);
            let ops: Vec<json_patch::PatchOperation> = match serde_json::from_value(ops.into()) {
                Ok(ops) => ops,
                Err(_) => return Some("internal error: a patch that does not parse"),
            };
            if json_patch::patch(t, &ops).is_err() {
                return Some("the pod template does not take the patch");
            }
        }
    }
    None
}

/// Meshes one object (recursing into `List`s), appending outcomes.
fn object(obj: &mut Value, mode: &Mode, out: &mut Vec<Outcome>) {
    let kind = obj["kind"].as_str().unwrap_or_default().to_string();
    if kind.ends_with("List") {
        if let Some(items) = obj["items"].as_array_mut() {
            for item in items {
                object(item, mode, out);
            }
        }
        return;
    }
    let name = obj["metadata"]["name"]
        .as_str()
        .or_else(|| obj["metadata"]["generateName"].as_str())
        .unwrap_or("<unnamed>")
        .to_string();
    let label = format!("{}/{name}", kind.to_ascii_lowercase());
    let ns = obj["metadata"]["namespace"]
        .as_str()
        .unwrap_or("default")
        .to_string();
    let skipped = match kind.as_str() {
        "Namespace" => {
            set_annotation(&mut obj["metadata"]);
            None
        }
        "Pod" => template(obj, &ns, mode),
        "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "ReplicaSet"
        | "ReplicationController"
        | "Job" => match obj.pointer_mut("/spec/template") {
            Some(t) if t.is_object() => template(t, &ns, mode),
            _ => Some("no pod template"),
        },
        "CronJob" => match obj.pointer_mut("/spec/jobTemplate/spec/template") {
            Some(t) if t.is_object() => template(t, &ns, mode),
            _ => Some("no pod template"),
        },
        _ => return,
    };
    out.push(Outcome {
        object: label,
        skipped,
    });
}

/// Meshes every workload of the YAML stream `input` (see the module doc):
/// the new stream and what happened to each workload, in order.
///
/// # Errors
///
/// [`ParseError`] naming the document and line that is not YAML; nothing is
/// written then.
pub fn inject(input: &str, mode: &Mode) -> Result<(String, Vec<Outcome>), ParseError> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(input).map_err(|e| {
        let (line, column) = e
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or_default();
        // The first line of the message, without its own "error: line L
        // column C: " prefix.
        let first = e.to_string();
        let first = first.lines().next().unwrap_or_default();
        let message = first
            .trim_start_matches("error: ")
            .split_once(&format!("column {column}: "))
            .map_or(first, |(_, m)| m)
            .to_string();
        ParseError {
            document: document_of(input, line),
            line,
            column,
            message,
        }
    })?;
    let mut outcomes = Vec::new();
    let mut out = String::new();
    for mut doc in docs {
        if doc.is_null() {
            continue;
        }
        object(&mut doc, mode, &mut outcomes);
        let yaml = serde_saphyr::to_string(&doc).map_err(|e| ParseError {
            document: 0,
            line: 0,
            column: 0,
            message: e.to_string(),
        })?;
        out.push_str("---\n");
        out.push_str(&yaml);
        if !yaml.ends_with('\n') {
            out.push('\n');
        }
    }
    Ok((out, outcomes))
}

#[cfg(test)]
#[path = "manifest_tests.rs"]
mod tests;
