//! `pimesh authz RESOURCE`: which servers and authorizations admitted or
//! refused a workload's inbound traffic over a window, printed as
//! `linkerd viz authz` prints it (linkerd2 `viz/cmd/authz.go`).

use super::telemetry::{query, render, resource, Scope};
use super::{block_on, print_json, Error};
use crate::config::Env;
use crate::telemetry::query::authz::{Authz, AuthzRow};
use crate::telemetry::query::Resource;
use clap::{Args, ValueEnum};
use http::Method;

/// `-o` of `authz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum AuthzOutput {
    /// Columns as `linkerd viz authz`, plus the counts.
    Table,
    /// The API's rows.
    Json,
}

/// `pimesh authz RESOURCE [NAME]`.
#[derive(Debug, Clone, Args)]
pub struct AuthzArgs {
    /// deploy, svc or pod, with its name: `deploy/web` (or `deploy web`;
    /// `deploy` alone: every deployment)
    pub resource: String,
    /// The workload, when not given as `RESOURCE/NAME`
    pub name: Option<String>,
    #[command(flatten)]
    pub scope: Scope,
    /// Output format
    #[arg(short, long, value_enum, default_value = "table")]
    pub output: AuthzOutput,
}

/// Runs `pimesh authz`.
///
/// # Errors
///
/// [`Error::UnknownResource`] (exit 1) for a resource kind that does not
/// exist; [`Error::Input`] (exit 1) for a named workload no scrape target
/// belongs to; [`Error::Usage`] for a bad `--window`; [`Error::Client`] when
/// the controller cannot be reached or refuses (its `ApiError`);
/// [`Error::Output`] when printing fails or the runtime cannot start.
pub fn authz(args: AuthzArgs, env: &dyn Env) -> Result<(), Error> {
    let (res, name) = resource(&args.resource, args.name.clone())?;
    let kind = match res {
        Resource::Deployment => "deploy",
        Resource::Service => "svc",
        Resource::Pod => "pod",
    };
    let q = query(&args.scope, kind, name.as_deref())?;
    let client = args.scope.controller.client(env)?;
    let answer: Authz = block_on(async {
        Ok(client
            .call(Method::GET, &format!("/v1/authz?{q}"), None::<&()>)
            .await?)
    })?;
    if let (Some(name), 0) = (&name, answer.targets) {
        let ns = match (&args.scope.namespace, args.scope.all_namespaces) {
            (_, true) => "any namespace".to_string(),
            (ns, false) => format!("namespace {:?}", ns.as_deref().unwrap_or("default")),
        };
        return Err(Error::Input(format!(
            "{kind}/{name} not found in {ns}: no scrape target of the controller belongs to it \
             (`pimesh stat {kind}` lists those it knows)"
        )));
    }
    match args.output {
        AuthzOutput::Json => print_json(&answer.rows),
        AuthzOutput::Table => {
            if answer.rows.is_empty() {
                eprintln!(
                    "No authorization decisions in the last {}.",
                    args.scope.window
                );
                return Ok(());
            }
            print!(
                "{}",
                authz_table(&answer.rows, name.is_none(), args.scope.all_namespaces)
            );
            Ok(())
        }
    }
}

/// The `authz` table: ROUTE, SERVER, AUTHORIZATION, UNAUTHORIZED and RPS
/// as `linkerd viz authz` (SERVER `default:POLICY` for a default policy,
/// AUTHORIZATION `KIND/NAME`, empty on the row of denials), then the
/// counts ALLOWED and DENIED; NAME first when several workloads are shown,
/// NAMESPACE before it across namespaces. HTTP rows count requests
/// (`rps`), TCP rows connections (`cps`, ROUTE `-`). Linkerd's SUCCESS and
/// latency columns are not shown: the authorization counters do not carry
/// them (`pimesh stat` does).
pub fn authz_table(rows: &[AuthzRow], names: bool, namespaces: bool) -> String {
    let mut head = vec![
        "ROUTE",
        "SERVER",
        "AUTHORIZATION",
        "UNAUTHORIZED",
        "RPS",
        "ALLOWED",
        "DENIED",
    ];
    if names || namespaces {
        head.insert(0, "NAME");
    }
    if namespaces {
        head.insert(0, "NAMESPACE");
    }
    let mut table = vec![head.iter().map(|s| s.to_string()).collect::<Vec<_>>()];
    for r in rows {
        let unit = if r.protocol == "http" { "rps" } else { "cps" };
        let rate = |v: Option<f64>| v.map_or("-".into(), |v| format!("{v:.1}{unit}"));
        let mut row = vec![
            r.route.clone().unwrap_or_else(|| "-".into()),
            r.server(),
            r.authorization(),
            rate(r.denied_rate),
            rate(r.allowed_rate),
            r.allowed.to_string(),
            r.denied.to_string(),
        ];
        if names || namespaces {
            row.insert(0, r.name.clone());
        }
        if namespaces {
            row.insert(0, r.namespace.clone());
        }
        table.push(row);
    }
    render(&table)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(
        protocol: &str,
        srv: (&str, &str),
        authz: Option<(&str, &str)>,
        counts: (u64, u64),
    ) -> AuthzRow {
        AuthzRow {
            namespace: "shop".into(),
            kind: Resource::Deployment,
            name: "api".into(),
            protocol: protocol.into(),
            route: (protocol == "http").then(|| "default".into()),
            server_kind: srv.0.into(),
            server_name: srv.1.into(),
            authz_kind: authz.map(|a| a.0.into()),
            authz_name: authz.map(|a| a.1.into()),
            allowed: counts.0,
            denied: counts.1,
            allowed_rate: Some(counts.0 as f64 / 60.0),
            denied_rate: Some(counts.1 as f64 / 60.0),
            covered_seconds: 60.0,
        }
    }

    #[test]
    fn a_table_like_linkerd_viz_authz() {
        let rows = [
            row(
                "http",
                ("server", "api-http"),
                Some(("authorizationpolicy", "api-web-only")),
                (120, 0),
            ),
            row("http", ("server", "api-http"), None, (0, 30)),
            row("tcp", ("default", "deny"), None, (0, 6)),
        ];
        assert_eq!(
            authz_table(&rows, false, false),
            "ROUTE    SERVER        AUTHORIZATION                     UNAUTHORIZED  RPS     ALLOWED  DENIED\n\
             default  api-http      authorizationpolicy/api-web-only  0.0rps        2.0rps  120      0\n\
             default  api-http                                        0.5rps        0.0rps  0        30\n\
             -        default:deny                                    0.1cps        0.0cps  0        6\n"
        );
        let t = authz_table(&rows[..1], true, true);
        assert!(t.starts_with("NAMESPACE  NAME  ROUTE"), "{t}");
        assert!(t.contains("\nshop       api   default"), "{t}");
    }
}
