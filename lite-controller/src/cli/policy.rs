//! `pimesh apply -f FILE`, `pimesh delete -f FILE` and `pimesh policy ls`:
//! standalone mode's policy resources, the same YAML as on Kubernetes
//! (`policy.pimesh.io/v1alpha1`), kept by the controller (operator API
//! `/v1/policies`, `admin/policies.rs`). Every document of the file is
//! validated before any is sent, so a file with one bad document changes
//! nothing.

use super::{block_on, print_json, ControllerFlag, Error, Output};
use crate::admin::policies::{ApplyResult, POLICIES_PATH};
use crate::config::Env;
use crate::policy::index::PolicyStatus;
use crate::policy::stored::DEFAULT_NAMESPACE;
use crate::policy::Resource;
use clap::{Args, Subcommand};
use http::Method;
use std::fmt::Write as _;
use std::io::Read as _;

/// `-f FILE` and the controller.
#[derive(Debug, Clone, Args)]
pub struct FileArgs {
    /// The YAML file (one or more `---`-separated documents), a directory
    /// of them, or `-` for stdin
    #[arg(short = 'f', long = "filename", value_name = "FILE")]
    pub file: String,
    #[command(flatten)]
    pub controller: ControllerFlag,
}

/// `pimesh policy …`.
#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Every stored policy resource, and whether it is applied (an
    /// AuthorizationPolicy naming a missing Server or authentication is
    /// not, with the reason)
    Ls {
        /// Output format
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
        #[command(flatten)]
        controller: ControllerFlag,
    },
}

/// The file's documents as resources (no namespace: `default`).
///
/// # Errors
///
/// [`Error::Input`] naming the file, the document (1-based) and the field
/// of the first invalid one, or the YAML error.
pub fn read(file: &str, text: &str) -> Result<Vec<Resource>, Error> {
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(text)
        .map_err(|e| Error::Input(format!("{file}: not YAML: {e}")))?;
    let mut out = Vec::new();
    for (i, mut doc) in docs.into_iter().enumerate() {
        if doc.is_null() {
            continue;
        }
        if let Some(meta) = doc.get_mut("metadata").and_then(|m| m.as_object_mut()) {
            meta.entry("namespace")
                .or_insert_with(|| DEFAULT_NAMESPACE.into());
        }
        let what = format!(
            "{} {}",
            doc["kind"].as_str().unwrap_or("?"),
            doc["metadata"]["name"].as_str().unwrap_or("?")
        );
        let r = Resource::parse(doc)
            .map_err(|e| Error::Input(format!("{file}: document {} ({what}): {e}", i + 1)))?;
        out.push(r);
    }
    if out.is_empty() {
        return Err(Error::Input(format!("{file}: no resources")));
    }
    Ok(out)
}

/// The resources of `file`: a file, `-` (stdin), or a directory (its
/// `*.yaml`, `*.yml` and `*.json` files in name order, as `kubectl apply -f
/// DIR`).
fn load(file: &str) -> Result<Vec<Resource>, Error> {
    let failed = |e: std::io::Error| Error::Input(format!("{file}: {e}"));
    if file == "-" {
        let mut text = String::new();
        std::io::stdin().read_to_string(&mut text).map_err(failed)?;
        return read(file, &text);
    }
    let path = std::path::Path::new(file);
    if !path.is_dir() {
        return read(file, &std::fs::read_to_string(path).map_err(failed)?);
    }
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(path)
        .map_err(failed)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file()
                && p.extension()
                    .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let name = f.display().to_string();
        let text = std::fs::read_to_string(&f).map_err(|e| Error::Input(format!("{name}: {e}")))?;
        out.extend(read(&name, &text)?);
    }
    if out.is_empty() {
        return Err(Error::Input(format!("{file}: no resources")));
    }
    Ok(out)
}

/// kubectl's name of a resource: `server.policy.pimesh.io/api-http`,
/// `httproute.gateway.networking.k8s.io/web-split`.
fn kubectl_name(resource: &str) -> String {
    let (kind, rest) = resource.split_once(' ').unwrap_or((resource, ""));
    let name = rest.rsplit('/').next().unwrap_or(rest);
    let group = match kind {
        "HTTPRoute" | "GRPCRoute" => crate::policy::GATEWAY_GROUP,
        _ => crate::policy::GROUP,
    };
    format!("{}.{group}/{name}", kind.to_ascii_lowercase())
}

/// `pimesh apply -f FILE`.
///
/// # Errors
///
/// [`Error::Input`] for a file that cannot be read or a document that is
/// not valid (nothing is sent then); [`Error::Client`] when the controller
/// cannot be reached or refuses.
pub fn apply(args: FileArgs, env: &dyn Env) -> Result<(), Error> {
    let resources = load(&args.file)?;
    let client = args.controller.client(env)?;
    block_on(async {
        for r in &resources {
            let done: ApplyResult = client
                .call(Method::POST, POLICIES_PATH, Some(&r.to_json()))
                .await?;
            println!("{} {}", kubectl_name(&done.resource), done.result);
        }
        Ok(())
    })
}

/// `pimesh delete -f FILE`.
///
/// # Errors
///
/// As [`apply`]; a resource that is not stored is the controller's 404.
pub fn delete(args: FileArgs, env: &dyn Env) -> Result<(), Error> {
    let resources = load(&args.file)?;
    let client = args.controller.client(env)?;
    block_on(async {
        for r in &resources {
            let path = format!(
                "{POLICIES_PATH}/{}/{}/{}",
                r.namespace().unwrap_or(DEFAULT_NAMESPACE),
                r.kind(),
                r.name()
            );
            let done: ApplyResult = client.call(Method::DELETE, &path, None::<&()>).await?;
            println!("{} {}", kubectl_name(&done.resource), done.result);
        }
        Ok(())
    })
}

/// The `policy ls` table: KIND, NAMESPACE, NAME, STATUS.
pub fn table(list: &[PolicyStatus]) -> String {
    let rows: Vec<[String; 4]> = list
        .iter()
        .map(|s| {
            let status = match &s.reason {
                None => "applied".to_string(),
                Some(r) => format!("not applied: {r}"),
            };
            [s.kind.clone(), s.namespace.clone(), s.name.clone(), status]
        })
        .collect();
    let header = ["KIND", "NAMESPACE", "NAME", "STATUS"].map(String::from);
    let mut widths = header.clone().map(|h| h.len());
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let _ = writeln!(
            out,
            "{:<w0$}  {:<w1$}  {:<w2$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        );
    }
    out
}

/// Runs a `policy` command.
///
/// # Errors
///
/// [`Error::Client`] when the controller cannot be reached or refuses;
/// [`Error::Output`] when printing fails.
pub fn run(cmd: PolicyCommand, env: &dyn Env) -> Result<(), Error> {
    let PolicyCommand::Ls { output, controller } = cmd;
    let client = controller.client(env)?;
    let list: Vec<PolicyStatus> =
        block_on(async { Ok(client.call(Method::GET, POLICIES_PATH, None::<&()>).await?) })?;
    match output {
        Output::Json => print_json(&list),
        Output::Text => {
            print!("{}", table(&list));
            Ok(())
        }
    }
}
