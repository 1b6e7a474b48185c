//! `pimesh service ls | get | add | rm | set`: the standalone registry and
//! per-service policy, through the operator API.
//!
//! - `format`: the tables and one-line summaries printed.

mod format;

use super::{block_on, print_json, ControllerFlag, Error, Output};
use crate::config::{parse_duration, Env};
use crate::registry::model::{AddEndpoints, ServiceInfo, SetPolicy};
use crate::registry::validate;
use clap::{Args, Subcommand, ValueEnum};
use format::{details, list_table, policy_text, summary};
use http::Method;
use pimesh_api::discovery::{ProtocolHint, ServicePolicy};
use pimesh_api::identity::Identity;
use std::collections::BTreeMap;
use std::net::SocketAddr;

/// Namespace of a service name (`-n`, default `default` as kubectl's).
#[derive(Debug, Clone, Args)]
pub struct NamespaceFlag {
    /// The service's namespace
    #[arg(short, long, value_name = "NS", default_value = "default")]
    pub namespace: String,
}

/// What the app on an endpoint speaks (`--protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Protocol {
    /// Detected by the client's proxy.
    Unknown,
    /// HTTP/1.x or HTTP/2.
    Http,
    /// Opaque TCP, never detected.
    Opaque,
}

/// The standalone service registry and per-service resilience policy.
#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// List services (NAMESPACE, NAME, PORTS, ENDPOINTS, REVISION), or
    /// show one with its endpoints and policy
    Ls {
        /// Show this service (as `get`)
        name: Option<String>,
        /// Only this namespace [default: all; `default` with a NAME]
        #[arg(short, long, value_name = "NS")]
        namespace: Option<String>,
        /// `text` (a table) or `json`
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
        #[command(flatten)]
        controller: ControllerFlag,
    },
    /// Show a service: its endpoints (address, identity, lease expiry,
    /// labels) and its policy
    Get {
        /// The service name
        name: String,
        #[command(flatten)]
        ns: NamespaceFlag,
        /// `text` or `json`
        #[arg(short, long, value_enum, default_value = "text")]
        output: Output,
        #[command(flatten)]
        controller: ControllerFlag,
    },
    /// Add endpoints outside the mesh's registration (no lease), creating
    /// the service and port if missing
    Add {
        /// The service name
        name: String,
        #[command(flatten)]
        ns: NamespaceFlag,
        /// The service port clients address
        #[arg(long, value_name = "PORT")]
        port: u16,
        /// An endpoint address (repeatable)
        #[arg(long = "endpoint", value_name = "IP:PORT")]
        endpoints: Vec<String>,
        /// Identity of the endpoints' proxies when meshed; none: plaintext
        #[arg(long, value_name = "NS/SA")]
        identity: Option<String>,
        /// A workload label KEY=VALUE (repeatable)
        #[arg(long = "label", value_name = "KEY=VALUE")]
        labels: Vec<String>,
        /// What the app speaks
        #[arg(long, value_enum, default_value = "unknown")]
        protocol: Protocol,
        /// Load-balancing weight [default: 10000]
        #[arg(long, value_name = "N")]
        weight: Option<u32>,
        #[command(flatten)]
        controller: ControllerFlag,
    },
    /// Remove a service, or only some of its endpoints
    Rm {
        /// The service name
        name: String,
        #[command(flatten)]
        ns: NamespaceFlag,
        /// Remove only this endpoint (repeatable); a registered one comes
        /// back at its proxy's next renewal
        #[arg(long = "endpoint", value_name = "IP:PORT")]
        endpoints: Vec<String>,
        #[command(flatten)]
        controller: ControllerFlag,
    },
    /// Set a service's resilience policy (timeouts, retries, circuit
    /// breaking); unset values keep their proxy-side defaults
    Set(SetArgs),
}

/// `pimesh service set` flags.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// The service name
    pub name: String,
    #[command(flatten)]
    pub ns: NamespaceFlag,
    /// Whole-request timeout, retries included: 2s, 500ms ...
    #[arg(long, value_name = "DURATION")]
    pub timeout: Option<String>,
    /// Timeout of each try
    #[arg(long, value_name = "DURATION")]
    pub per_try_timeout: Option<String>,
    /// Retries per request after the first try (0 disables)
    #[arg(long, value_name = "N")]
    pub retries: Option<u32>,
    /// HTTP statuses retried, comma-separated: 5xx, 503, 500-504, gateway-error
    #[arg(long, value_name = "LIST")]
    pub retry_http: Option<String>,
    /// gRPC statuses retried, comma-separated: unavailable, deadline-exceeded, ...
    #[arg(long, value_name = "LIST")]
    pub retry_grpc: Option<String>,
    /// Also retry non-idempotent methods (POST, PATCH): only for safe routes
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub retry_non_idempotent: Option<bool>,
    /// Retry budget: retries as a share of requests, 0 to 1 [proxy default: 0.2]
    #[arg(long, value_name = "RATIO")]
    pub retry_budget_ratio: Option<String>,
    /// Retry budget: retries per second always allowed [proxy default: 10]
    #[arg(long, value_name = "N")]
    pub retry_budget_min_per_sec: Option<u32>,
    /// Consecutive failures that eject an endpoint [proxy default: 7]
    #[arg(long, value_name = "N")]
    pub failure_accrual: Option<u32>,
    /// Probe backoff of an ejected endpoint, MIN..MAX: 1s..60s
    #[arg(long, value_name = "MIN..MAX")]
    pub failure_accrual_backoff: Option<String>,
    /// First probe back after an ejection
    #[arg(
        long,
        value_name = "DURATION",
        conflicts_with = "failure_accrual_backoff"
    )]
    pub failure_accrual_min_backoff: Option<String>,
    /// Longest wait between probes of an ejected endpoint
    #[arg(
        long,
        value_name = "DURATION",
        conflicts_with = "failure_accrual_backoff"
    )]
    pub failure_accrual_max_backoff: Option<String>,
    /// Reset the whole policy first (alone: back to the proxies' defaults)
    #[arg(long)]
    pub clear: bool,
    /// `text` or `json`
    #[arg(short, long, value_enum, default_value = "text")]
    pub output: Output,
    #[command(flatten)]
    pub controller: ControllerFlag,
}

fn usage(flag: &'static str, value: &str, reason: impl Into<String>) -> Error {
    Error::Usage {
        flag,
        value: value.to_string(),
        reason: reason.into(),
    }
}

fn service_name(name: &str, ns: &str) -> Result<(), Error> {
    validate::label("NAME", name).map_err(|e| usage("NAME", name, e.reason))?;
    validate::label("--namespace", ns).map_err(|e| usage("--namespace", ns, e.reason))
}

/// Runs a `service` command.
///
/// # Errors
///
/// [`Error::Usage`] naming the argument or flag that is not valid (name,
/// namespace, address, label, policy value); [`Error::Client`] when the
/// controller cannot be reached or refuses (its `ApiError`); [`Error::Output`]
/// when printing fails or the runtime cannot start.
pub fn run(cmd: ServiceCommand, env: &dyn Env) -> Result<(), Error> {
    match cmd {
        ServiceCommand::Ls {
            name: Some(name),
            namespace,
            output,
            controller,
        } => get(
            &name,
            namespace.as_deref().unwrap_or("default"),
            output,
            &controller,
            env,
        ),
        ServiceCommand::Ls {
            name: None,
            namespace,
            output,
            controller,
        } => {
            if let Some(ns) = &namespace {
                validate::label("--namespace", ns)
                    .map_err(|e| usage("--namespace", ns, e.reason))?;
            }
            let client = controller.client(env)?;
            let path = match &namespace {
                Some(ns) => format!("/v1/services?namespace={ns}"),
                None => "/v1/services".to_string(),
            };
            let list: Vec<ServiceInfo> =
                block_on(async { Ok(client.call(Method::GET, &path, None::<&()>).await?) })?;
            match output {
                Output::Json => print_json(&list),
                Output::Text => {
                    print!("{}", list_table(&list));
                    Ok(())
                }
            }
        }
        ServiceCommand::Get {
            name,
            ns,
            output,
            controller,
        } => get(&name, &ns.namespace, output, &controller, env),
        ServiceCommand::Add {
            name,
            ns,
            port,
            endpoints,
            identity,
            labels,
            protocol,
            weight,
            controller,
        } => {
            service_name(&name, &ns.namespace)?;
            validate::port("--port", port).map_err(|e| usage("--port", "0", e.reason))?;
            let mut req = AddEndpoints {
                port,
                identity: identity
                    .map(|i| {
                        i.parse::<Identity>()
                            .map_err(|e| usage("--identity", &i, e.to_string()))
                    })
                    .transpose()?,
                protocol: match protocol {
                    Protocol::Unknown => ProtocolHint::Unknown,
                    Protocol::Http => ProtocolHint::Http,
                    Protocol::Opaque => ProtocolHint::Opaque,
                },
                weight,
                ..Default::default()
            };
            if weight == Some(0) {
                return Err(usage("--weight", "0", "must be at least 1"));
            }
            for e in &endpoints {
                let a: SocketAddr = e
                    .parse()
                    .map_err(|_| usage("--endpoint", e, "not an IP:PORT address"))?;
                validate::addr("--endpoint", a).map_err(|x| usage("--endpoint", e, x.reason))?;
                req.endpoints.push(a);
            }
            req.labels = parse_labels(&labels)?;
            let client = controller.client(env)?;
            let path = format!("/v1/services/{}/{name}/endpoints", ns.namespace);
            let info: ServiceInfo =
                block_on(async { Ok(client.call(Method::POST, &path, Some(&req)).await?) })?;
            println!("{}", summary(&info));
            Ok(())
        }
        ServiceCommand::Rm {
            name,
            ns,
            endpoints,
            controller,
        } => {
            service_name(&name, &ns.namespace)?;
            let mut query = Vec::new();
            for e in &endpoints {
                let a: SocketAddr = e
                    .parse()
                    .map_err(|_| usage("--endpoint", e, "not an IP:PORT address"))?;
                query.push(format!("endpoint={}", percent_encode(&a.to_string())));
            }
            let client = controller.client(env)?;
            let mut path = format!("/v1/services/{}/{name}", ns.namespace);
            if !query.is_empty() {
                path = format!("{path}?{}", query.join("&"));
            }
            let info: ServiceInfo =
                block_on(async { Ok(client.call(Method::DELETE, &path, None::<&()>).await?) })?;
            if endpoints.is_empty() {
                println!("removed service {}.{}", info.name, info.namespace);
            } else {
                println!("{}", summary(&info));
            }
            Ok(())
        }
        ServiceCommand::Set(args) => set(args, env),
    }
}

fn get(
    name: &str,
    ns: &str,
    output: Output,
    controller: &ControllerFlag,
    env: &dyn Env,
) -> Result<(), Error> {
    service_name(name, ns)?;
    let client = controller.client(env)?;
    let path = format!("/v1/services/{ns}/{name}");
    let info: ServiceInfo =
        block_on(async { Ok(client.call(Method::GET, &path, None::<&()>).await?) })?;
    match output {
        Output::Json => print_json(&info),
        Output::Text => {
            print!("{}", details(&info));
            Ok(())
        }
    }
}

fn set(a: SetArgs, env: &dyn Env) -> Result<(), Error> {
    service_name(&a.name, &a.ns.namespace)?;
    let ms = |flag: &'static str, v: &Option<String>| -> Result<Option<u64>, Error> {
        v.as_ref()
            .map(|s| {
                let d = parse_duration(s).map_err(|r| usage(flag, s, r))?;
                Ok(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            })
            .transpose()
    };
    let list = |v: &Option<String>| {
        v.as_ref().map(|s| {
            s.split(',')
                .map(|x| x.trim().to_string())
                .filter(|x| !x.is_empty())
                .collect::<Vec<_>>()
        })
    };
    let (mut min, mut max) = (
        ms(
            "--failure-accrual-min-backoff",
            &a.failure_accrual_min_backoff,
        )?,
        ms(
            "--failure-accrual-max-backoff",
            &a.failure_accrual_max_backoff,
        )?,
    );
    if let Some(b) = &a.failure_accrual_backoff {
        let (lo, hi) = b.split_once("..").ok_or_else(|| {
            usage(
                "--failure-accrual-backoff",
                b,
                "expected MIN..MAX, e.g. 1s..60s",
            )
        })?;
        min = ms("--failure-accrual-backoff", &Some(lo.to_string()))?;
        max = ms("--failure-accrual-backoff", &Some(hi.to_string()))?;
    }
    let ratio = a
        .retry_budget_ratio
        .as_ref()
        .map(|r| {
            r.parse::<f64>()
                .map_err(|_| usage("--retry-budget-ratio", r, "not a number between 0 and 1"))
        })
        .transpose()?;
    let policy = ServicePolicy {
        timeout_ms: ms("--timeout", &a.timeout)?,
        per_try_timeout_ms: ms("--per-try-timeout", &a.per_try_timeout)?,
        retry_limit: a.retries,
        retry_http: list(&a.retry_http),
        retry_grpc: list(&a.retry_grpc),
        retry_non_idempotent: a.retry_non_idempotent,
        retry_budget_ratio: ratio,
        retry_budget_min_per_sec: a.retry_budget_min_per_sec,
        failure_accrual_consecutive: a.failure_accrual,
        failure_accrual_min_backoff_ms: min,
        failure_accrual_max_backoff_ms: max,
    };
    if let Err(e) = validate::policy(&policy) {
        let (flag, value) = flag_of(e.field, &a);
        return Err(usage(flag, &value, e.reason));
    }
    if policy == ServicePolicy::default() && !a.clear {
        return Err(usage(
            "service set",
            &a.name,
            "nothing to set: give at least one policy flag, or --clear",
        ));
    }
    let client = a.controller.client(env)?;
    let path = format!("/v1/services/{}/{}/policy", a.ns.namespace, a.name);
    let req = SetPolicy {
        clear: a.clear,
        policy,
    };
    let info: ServiceInfo =
        block_on(async { Ok(client.call(Method::PUT, &path, Some(&req)).await?) })?;
    match a.output {
        Output::Json => print_json(&info),
        Output::Text => {
            println!("{}: policy {}", info.fqdn, policy_text(&info.policy));
            Ok(())
        }
    }
}

/// The flag (and its value) behind a policy field `validate` refused.
fn flag_of(field: &str, a: &SetArgs) -> (&'static str, String) {
    let v = |o: &Option<String>| o.clone().unwrap_or_default();
    let backoff = |o: &Option<String>, flag| match &a.failure_accrual_backoff {
        Some(b) => ("--failure-accrual-backoff", b.clone()),
        None => (flag, v(o)),
    };
    match field {
        "timeout_ms" => ("--timeout", v(&a.timeout)),
        "per_try_timeout_ms" => ("--per-try-timeout", v(&a.per_try_timeout)),
        "retry_http" => ("--retry-http", v(&a.retry_http)),
        "retry_grpc" => ("--retry-grpc", v(&a.retry_grpc)),
        "retry_budget_ratio" => ("--retry-budget-ratio", v(&a.retry_budget_ratio)),
        "failure_accrual_consecutive" => (
            "--failure-accrual",
            a.failure_accrual.map(|n| n.to_string()).unwrap_or_default(),
        ),
        "failure_accrual_max_backoff_ms" => backoff(
            &a.failure_accrual_max_backoff,
            "--failure-accrual-max-backoff",
        ),
        _ => backoff(
            &a.failure_accrual_min_backoff,
            "--failure-accrual-min-backoff",
        ),
    }
}

fn parse_labels(labels: &[String]) -> Result<BTreeMap<String, String>, Error> {
    let mut out = BTreeMap::new();
    for l in labels {
        let (k, v) = l
            .split_once('=')
            .ok_or_else(|| usage("--label", l, "expected KEY=VALUE"))?;
        out.insert(k.to_string(), v.to_string());
    }
    validate::labels(&out).map_err(|e| usage("--label", &labels.join(","), e.reason))?;
    Ok(out)
}

/// Percent-encodes everything but RFC 3986 unreserved characters.
fn percent_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_query_values() {
        assert_eq!(percent_encode("[::1]:80"), "%5B%3A%3A1%5D%3A80");
        assert_eq!(percent_encode("10.0.0.1:80"), "10.0.0.1%3A80");
    }
}
