//! The controller's one [`Config`], parsed once at start-up from the
//! `pimesh controller` flags, each with a `PIMESH_CONTROLLER_<FLAG>`
//! environment fallback (flag wins), read through the [`Env`] trait so
//! tests pass a map instead of touching the process environment.

use clap::Args;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Proxy-facing listener (mTLS, HTTP/2), DESIGN.md "control plane".
pub const DEFAULT_PROXY_ADDR: &str = "0.0.0.0:8086";
/// Operator listener (HTTP/1.1: API, `/metrics`).
pub const DEFAULT_ADMIN_ADDR: &str = "0.0.0.0:8085";
/// Kubernetes mode: the proxy injector's HTTPS listener (the Service
/// maps 443 to it).
pub const DEFAULT_WEBHOOK_ADDR: &str = "0.0.0.0:8443";
/// Lifetime of proxies' certificates (Linkerd's default: 24 h).
pub const DEFAULT_CERT_LIFETIME: Duration = Duration::from_secs(24 * 3600);
/// Shortest certificate lifetime (X.509 times have whole seconds).
pub const MIN_CERT_LIFETIME: Duration = Duration::from_secs(1);
/// Longest certificate lifetime: the issuer's own (one year).
pub const MAX_CERT_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// Log filter, `RUST_LOG` syntax.
pub const DEFAULT_LOG: &str = "warn,pimesh=info";
/// Longest lease of a registered endpoint: one day.
pub const MAX_LEASE_TTL: Duration = Duration::from_secs(24 * 3600);
/// Concurrent watch streams unless configured (a few KiB each).
pub const DEFAULT_MAX_WATCHES: usize = 4096;

pub use pimesh_api::env::{Env, OsEnv};

/// `pimesh controller` flags, as given (validated by [`Config::from_args`]).
#[derive(Debug, Clone, Default, Args)]
pub struct ControllerArgs {
    /// Standalone mode: no Kubernetes; proxies authenticate with join
    /// tokens (`pimesh token create`) [env: PIMESH_CONTROLLER_STANDALONE]
    #[arg(long)]
    pub standalone: bool,
    /// Kubernetes mode: kubeconfig file(s), `:`-separated [default: in a
    /// pod its ServiceAccount, else ~/.kube/config] [env: KUBECONFIG]
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<String>,
    /// Kubernetes mode: the controller's own namespace [default: the
    /// pod's, else pimesh]
    /// [env: PIMESH_CONTROLLER_NAMESPACE]
    #[arg(long, value_name = "NS")]
    pub namespace: Option<String>,
    /// Cluster DNS domain of service names [default: cluster.local]
    /// [env: PIMESH_CONTROLLER_CLUSTER_DOMAIN]
    #[arg(long, value_name = "DOMAIN")]
    pub cluster_domain: Option<String>,
    /// Kubernetes mode: the proxy injector (mutating admission webhook,
    /// HTTPS) [default: 0.0.0.0:8443] [env: PIMESH_CONTROLLER_WEBHOOK_ADDR]
    #[arg(long, value_name = "ADDR")]
    pub webhook_addr: Option<String>,
    /// Kubernetes mode: the proxy image the injector adds to pods
    /// [default: ghcr.io/pimesh/pimesh-proxy:VERSION]
    /// [env: PIMESH_CONTROLLER_PROXY_IMAGE]
    #[arg(long, value_name = "IMAGE")]
    pub proxy_image: Option<String>,
    /// Kubernetes mode: injected proxies' default inbound policy, where
    /// neither the pod nor its namespace names one
    /// (config.pimesh.io/default-inbound-policy): all-unauthenticated,
    /// all-authenticated, cluster-unauthenticated, cluster-authenticated,
    /// deny or audit, as Linkerd's [default: all-unauthenticated]
    /// [env: PIMESH_CONTROLLER_DEFAULT_INBOUND_POLICY]
    #[arg(long, value_name = "POLICY")]
    pub default_inbound_policy: Option<String>,
    /// Kubernetes mode: the cluster networks (CIDRs, comma-separated) the
    /// cluster-* policies admit [default: 10.0.0.0/8,100.64.0.0/10,
    /// 172.16.0.0/12,192.168.0.0/16,fd00::/8, Linkerd's]
    /// [env: PIMESH_CONTROLLER_CLUSTER_NETWORKS]
    #[arg(long, value_name = "CIDRS")]
    pub cluster_networks: Option<String>,
    /// Directory of the controller's database (created, mode 0700, if
    /// missing); holds the CA's keys [env: PIMESH_CONTROLLER_DATA_DIR]
    #[arg(long, value_name = "DIR")]
    pub data_dir: Option<String>,
    /// Proxy-facing listener, HTTP/2 over TLS 1.3 [default: 0.0.0.0:8086]
    /// [env: PIMESH_CONTROLLER_PROXY_ADDR]
    #[arg(long, value_name = "ADDR")]
    pub proxy_addr: Option<String>,
    /// Operator listener: API, /metrics, /ready, /live [default:
    /// 0.0.0.0:8085] [env: PIMESH_CONTROLLER_ADMIN_ADDR]
    #[arg(long, value_name = "ADDR")]
    pub admin_addr: Option<String>,
    /// SPIFFE trust domain of the identities [default: cluster.local]
    /// [env: PIMESH_CONTROLLER_TRUST_DOMAIN]
    #[arg(long, value_name = "DOMAIN")]
    pub trust_domain: Option<String>,
    /// Bring your own CA: trust anchor(s), PEM; imported on first start
    /// only, with --issuer-pem and --issuer-key-pem
    /// [env: PIMESH_CONTROLLER_TRUST_ANCHOR_PEM]
    #[arg(long, value_name = "FILE")]
    pub trust_anchor_pem: Option<String>,
    /// Bring your own CA: the issuer certificate, PEM, signed by a trust
    /// anchor [env: PIMESH_CONTROLLER_ISSUER_PEM]
    #[arg(long, value_name = "FILE")]
    pub issuer_pem: Option<String>,
    /// Bring your own CA: the issuer's PKCS#8 private key, PEM
    /// [env: PIMESH_CONTROLLER_ISSUER_KEY_PEM]
    #[arg(long, value_name = "FILE")]
    pub issuer_key_pem: Option<String>,
    /// Lifetime of proxies' certificates: 10s, 2m, 24h ... (at least 1s)
    /// [default: 24h] [env: PIMESH_CONTROLLER_CERT_LIFETIME]
    #[arg(long, value_name = "DURATION")]
    pub cert_lifetime: Option<String>,
    /// How long a proxy's endpoint registration lasts unless renewed
    /// (proxies renew every third of it): 2s, 30s, 1m ... [default: 30s]
    /// [env: PIMESH_CONTROLLER_LEASE_TTL]
    #[arg(long, value_name = "DURATION")]
    pub lease_ttl: Option<String>,
    /// Most discovery watch streams open at once, all proxies together
    /// (more are answered 503) [default: 4096]
    /// [env: PIMESH_CONTROLLER_MAX_WATCHES]
    #[arg(long, value_name = "N")]
    pub max_watches: Option<String>,
    /// Log filter, RUST_LOG syntax [default: warn,pimesh=info]
    /// [env: PIMESH_CONTROLLER_LOG]
    #[arg(long, value_name = "FILTER")]
    pub log: Option<String>,
    /// Telemetry: also scrape this proxy admin address, with workload
    /// labels (namespace, deployment, pod, service, identity); repeatable
    /// [env: PIMESH_CONTROLLER_SCRAPE_TARGETS, separated by spaces]
    #[arg(long, value_name = "ADMIN_ADDR[,label=value...]")]
    pub scrape_target: Vec<String>,
    /// Telemetry: how often every proxy's /metrics is scraped, 1s to 5m
    /// [default: 10s] [env: PIMESH_CONTROLLER_SCRAPE_INTERVAL]
    #[arg(long, value_name = "DURATION")]
    pub scrape_interval: Option<String>,
    /// Telemetry: how often history is written to the database, 1s to 1h
    /// (SD cards: fewer, larger batches wear less) [default: 5m]
    /// [env: PIMESH_CONTROLLER_HISTORY_FLUSH_INTERVAL]
    #[arg(long, value_name = "DURATION")]
    pub history_flush_interval: Option<String>,
}

/// A flag or variable that could not be used. The binary prints it and
/// exits with code 64.
#[derive(Debug, thiserror::Error)]
#[error("invalid {flag} {value:?} (env {env}): {reason}")]
pub struct Error {
    /// The flag, e.g. `--cert-lifetime`.
    pub flag: &'static str,
    /// Its environment variable, e.g. `PIMESH_CONTROLLER_CERT_LIFETIME`.
    pub env: &'static str,
    /// The value as given (empty when missing).
    pub value: String,
    /// What is wrong with it.
    pub reason: String,
}

/// The operator's own CA, read from the three PEM files.
#[derive(Clone, PartialEq, Eq)]
pub struct ImportPems {
    /// `--trust-anchor-pem` contents.
    pub anchors: String,
    /// `--issuer-pem` contents.
    pub issuer: String,
    /// `--issuer-key-pem` contents (a private key: never printed).
    pub issuer_key: String,
}

impl fmt::Debug for ImportPems {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ImportPems { .. }")
    }
}

/// Everything `pimesh controller` needs, parsed and validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// `--standalone`: join tokens instead of Kubernetes ServiceAccount tokens.
    pub standalone: bool,
    /// Kubernetes mode (no `--standalone`): `--kubeconfig`, `--namespace`.
    pub kubernetes: Option<crate::kube::Settings>,
    /// `--cluster-domain`: the DNS domain of fully-qualified service names.
    pub cluster_domain: String,
    /// `--data-dir`: the database directory.
    pub data_dir: PathBuf,
    /// `--proxy-addr`: where proxies certify (mTLS port).
    pub proxy_addr: SocketAddr,
    /// `--admin-addr`: where operators and the CLI connect.
    pub admin_addr: SocketAddr,
    /// `--trust-domain`: the SPIFFE trust domain.
    pub trust_domain: String,
    /// The three bring-your-own-CA files, read; imported on first start only.
    pub import: Option<ImportPems>,
    /// `--cert-lifetime`: leaves' validity (and the controller's own).
    pub cert_lifetime: Duration,
    /// `--lease-ttl`: lease of registered endpoints (whole seconds).
    pub lease_ttl: Duration,
    /// `--max-watches`: concurrent watch streams at most (memory bound).
    pub max_watches: usize,
    /// `--log`: log filter.
    pub log: String,
    /// `--scrape-*`, `--history-flush-interval`: the telemetry role.
    pub telemetry: crate::telemetry::Settings,
}

impl Config {
    /// Validates `args`, falling back to `env` for flags not given; the
    /// first bad value is returned as an [`Error`] naming flag and variable.
    ///
    /// # Errors
    ///
    /// [`Error`] naming the flag, its variable and the value, for the first
    /// that is missing (`--data-dir`), does not parse, is out of range or
    /// cannot be read (the CA files), or does not go with the others.
    pub fn from_args(args: &ControllerArgs, env: &dyn Env) -> Result<Config, Error> {
        let p = Resolver { env };
        let standalone = args.standalone
            || p.parse_opt(
                "--standalone",
                "PIMESH_CONTROLLER_STANDALONE",
                None,
                parse_bool,
            )?
            .unwrap_or(false);
        let kubernetes = if standalone {
            None
        } else {
            let namespace = p.parse_opt(
                "--namespace",
                "PIMESH_CONTROLLER_NAMESPACE",
                args.namespace.as_deref(),
                parse_label,
            )?;
            let namespace = namespace
                .or_else(|| {
                    std::fs::read_to_string(crate::kube::SERVICE_ACCOUNT_NAMESPACE_FILE)
                        .ok()
                        .and_then(|ns| parse_label(ns.trim()).ok())
                })
                .unwrap_or_else(|| crate::kube::DEFAULT_NAMESPACE.into());
            Some(crate::kube::Settings {
                kubeconfig: p.parse_opt(
                    "--kubeconfig",
                    "KUBECONFIG",
                    args.kubeconfig.as_deref(),
                    |v| Ok(v.to_string()),
                )?,
                namespace,
                webhook_addr: p.parse(
                    "--webhook-addr",
                    "PIMESH_CONTROLLER_WEBHOOK_ADDR",
                    args.webhook_addr.as_deref(),
                    DEFAULT_WEBHOOK_ADDR,
                    parse_addr,
                )?,
                proxy_image: p.parse(
                    "--proxy-image",
                    "PIMESH_CONTROLLER_PROXY_IMAGE",
                    args.proxy_image.as_deref(),
                    &crate::inject::patch::default_proxy_image(),
                    |v| {
                        if v.trim().is_empty() || v.chars().any(char::is_whitespace) {
                            Err("not an image reference".into())
                        } else {
                            Ok(v.to_string())
                        }
                    },
                )?,
                default_inbound_policy: p.parse(
                    "--default-inbound-policy",
                    "PIMESH_CONTROLLER_DEFAULT_INBOUND_POLICY",
                    args.default_inbound_policy.as_deref(),
                    pimesh_api::policy::DefaultPolicy::default().as_str(),
                    str::parse,
                )?,
                cluster_networks: p.parse(
                    "--cluster-networks",
                    "PIMESH_CONTROLLER_CLUSTER_NETWORKS",
                    args.cluster_networks.as_deref(),
                    pimesh_api::policy::DEFAULT_CLUSTER_NETWORKS,
                    str::parse,
                )?,
            })
        };
        let data_dir = p
            .parse_opt(
                "--data-dir",
                "PIMESH_CONTROLLER_DATA_DIR",
                args.data_dir.as_deref(),
                |v| Ok(PathBuf::from(v)),
            )?
            .ok_or_else(|| Error {
                flag: "--data-dir",
                env: "PIMESH_CONTROLLER_DATA_DIR",
                value: String::new(),
                reason: "required".into(),
            })?;
        let pem = |flag, var, given: &Option<String>| {
            p.parse_opt(flag, var, given.as_deref(), |path| {
                std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))
            })
        };
        let anchors = pem(
            "--trust-anchor-pem",
            "PIMESH_CONTROLLER_TRUST_ANCHOR_PEM",
            &args.trust_anchor_pem,
        )?;
        let issuer = pem(
            "--issuer-pem",
            "PIMESH_CONTROLLER_ISSUER_PEM",
            &args.issuer_pem,
        )?;
        let issuer_key = pem(
            "--issuer-key-pem",
            "PIMESH_CONTROLLER_ISSUER_KEY_PEM",
            &args.issuer_key_pem,
        )?;
        let import = match (anchors, issuer, issuer_key) {
            (Some(anchors), Some(issuer), Some(issuer_key)) => Some(ImportPems {
                anchors,
                issuer,
                issuer_key,
            }),
            (None, None, None) => None,
            (a, i, _) => {
                let (flag, env) = if a.is_none() {
                    ("--trust-anchor-pem", "PIMESH_CONTROLLER_TRUST_ANCHOR_PEM")
                } else if i.is_none() {
                    ("--issuer-pem", "PIMESH_CONTROLLER_ISSUER_PEM")
                } else {
                    ("--issuer-key-pem", "PIMESH_CONTROLLER_ISSUER_KEY_PEM")
                };
                return Err(Error {
                    flag,
                    env,
                    value: String::new(),
                    reason: "--trust-anchor-pem, --issuer-pem and --issuer-key-pem go together"
                        .into(),
                });
            }
        };
        let telemetry = telemetry_settings(&p, args)?;
        let mut config = Config {
            telemetry,
            standalone,
            kubernetes,
            cluster_domain: p.parse(
                "--cluster-domain",
                "PIMESH_CONTROLLER_CLUSTER_DOMAIN",
                args.cluster_domain.as_deref(),
                pimesh_api::discovery::DEFAULT_CLUSTER_DOMAIN,
                parse_trust_domain,
            )?,
            data_dir,
            proxy_addr: p.parse(
                "--proxy-addr",
                "PIMESH_CONTROLLER_PROXY_ADDR",
                args.proxy_addr.as_deref(),
                DEFAULT_PROXY_ADDR,
                parse_addr,
            )?,
            admin_addr: p.parse(
                "--admin-addr",
                "PIMESH_CONTROLLER_ADMIN_ADDR",
                args.admin_addr.as_deref(),
                DEFAULT_ADMIN_ADDR,
                parse_addr,
            )?,
            trust_domain: p.parse(
                "--trust-domain",
                "PIMESH_CONTROLLER_TRUST_DOMAIN",
                args.trust_domain.as_deref(),
                pimesh_api::DEFAULT_TRUST_DOMAIN,
                parse_trust_domain,
            )?,
            import,
            cert_lifetime: p.parse(
                "--cert-lifetime",
                "PIMESH_CONTROLLER_CERT_LIFETIME",
                args.cert_lifetime.as_deref(),
                "24h",
                |v| {
                    let d = parse_duration(v)?;
                    if d < MIN_CERT_LIFETIME || d > MAX_CERT_LIFETIME {
                        return Err("must be between 1s and 365d".into());
                    }
                    Ok(d)
                },
            )?,
            lease_ttl: p.parse(
                "--lease-ttl",
                "PIMESH_CONTROLLER_LEASE_TTL",
                args.lease_ttl.as_deref(),
                &format!("{}s", pimesh_api::discovery::DEFAULT_LEASE_TTL_SECS),
                |v| {
                    let d = parse_duration(v)?;
                    if d.subsec_nanos() != 0 || d < Duration::from_secs(1) || d > MAX_LEASE_TTL {
                        return Err("must be whole seconds between 1s and 24h".into());
                    }
                    Ok(d)
                },
            )?,
            max_watches: p.parse(
                "--max-watches",
                "PIMESH_CONTROLLER_MAX_WATCHES",
                args.max_watches.as_deref(),
                &DEFAULT_MAX_WATCHES.to_string(),
                |v| match v.parse::<usize>() {
                    Ok(n) if (1..=65536).contains(&n) => Ok(n),
                    _ => Err("not a number between 1 and 65536".into()),
                },
            )?,
            log: p.parse(
                "--log",
                "PIMESH_CONTROLLER_LOG",
                args.log.as_deref(),
                DEFAULT_LOG,
                |v| {
                    tracing_subscriber::EnvFilter::try_new(v)
                        .map(|_| v.to_string())
                        .map_err(|e| e.to_string())
                },
            )?,
        };
        config.telemetry.trust_domain = config.trust_domain.clone();
        Ok(config)
    }
}

impl fmt::Display for Config {
    /// One line for the start-up log: the effective configuration.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "standalone={} kubeconfig={} namespace={} cluster_domain={} data_dir={} proxy_addr={} admin_addr={} trust_domain={} \
             own_ca_files={} cert_lifetime={:?} lease_ttl={:?} max_watches={} scrape_targets={} \
             scrape_interval={:?} history_flush_interval={:?}",
            self.standalone,
            self.kubernetes
                .as_ref()
                .map_or("-", |k| k.kubeconfig.as_deref().unwrap_or("(inferred)")),
            self.kubernetes.as_ref().map_or("-", |k| k.namespace.as_str()),
            self.cluster_domain,
            self.data_dir.display(),
            self.proxy_addr,
            self.admin_addr,
            self.trust_domain,
            self.import.is_some(),
            self.cert_lifetime,
            self.lease_ttl,
            self.max_watches,
            self.telemetry.static_targets.len(),
            self.telemetry.interval,
            self.telemetry.flush_interval,
        )
    }
}

/// The telemetry settings: targets from the flags, else the variable
/// (space-separated); intervals bounded.
fn telemetry_settings(
    p: &Resolver<'_>,
    args: &ControllerArgs,
) -> Result<crate::telemetry::Settings, Error> {
    use crate::telemetry::{targets::parse_target, Settings};
    const TARGETS_ENV: &str = "PIMESH_CONTROLLER_SCRAPE_TARGETS";
    let given: Vec<String> = if args.scrape_target.is_empty() {
        p.env
            .get(TARGETS_ENV)
            .map(|v| v.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    } else {
        args.scrape_target.clone()
    };
    let mut targets = Vec::new();
    for v in given {
        targets.push(parse_target(&v).map_err(|reason| Error {
            flag: "--scrape-target",
            env: TARGETS_ENV,
            value: v.clone(),
            reason,
        })?);
    }
    let bounded = |min: u64, max: u64, what: &'static str| {
        move |v: &str| {
            let d = parse_duration(v)?;
            if d < Duration::from_secs(min) || d > Duration::from_secs(max) {
                return Err(format!("must be between {what}"));
            }
            Ok(d)
        }
    };
    let interval = p.parse(
        "--scrape-interval",
        "PIMESH_CONTROLLER_SCRAPE_INTERVAL",
        args.scrape_interval.as_deref(),
        "10s",
        bounded(1, 300, "1s and 5m"),
    )?;
    let mut settings = Settings::new(targets, interval, pimesh_api::DEFAULT_TRUST_DOMAIN);
    settings.flush_interval = p.parse(
        "--history-flush-interval",
        "PIMESH_CONTROLLER_HISTORY_FLUSH_INTERVAL",
        args.history_flush_interval.as_deref(),
        "5m",
        bounded(1, 3600, "1s and 1h"),
    )?;
    Ok(settings)
}

struct Resolver<'a> {
    env: &'a dyn Env,
}

impl Resolver<'_> {
    /// The flag's value, else the variable's, else `default`, parsed.
    fn parse<T>(
        &self,
        flag: &'static str,
        env: &'static str,
        given: Option<&str>,
        default: &str,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<T, Error> {
        match self.parse_opt(flag, env, given, &f)? {
            Some(v) => Ok(v),
            None => f(default).map_err(|reason| Error {
                flag,
                env,
                value: default.into(),
                reason,
            }),
        }
    }

    /// The flag's value, else the variable's, parsed; `None` if neither.
    fn parse_opt<T>(
        &self,
        flag: &'static str,
        env: &'static str,
        given: Option<&str>,
        f: impl Fn(&str) -> Result<T, String>,
    ) -> Result<Option<T>, Error> {
        let Some(value) = given.map(str::to_string).or_else(|| self.env.get(env)) else {
            return Ok(None);
        };
        f(value.trim()).map(Some).map_err(|reason| Error {
            flag,
            env,
            value,
            reason,
        })
    }
}

fn parse_bool(v: &str) -> Result<bool, String> {
    match v {
        "1" | "true" | "yes" => Ok(true),
        "0" | "false" | "no" => Ok(false),
        _ => Err("not a boolean (true or false)".into()),
    }
}

/// A namespace: one RFC 1123 label.
fn parse_label(v: &str) -> Result<String, String> {
    match pimesh_api::identity::Identity::new(v, "x") {
        Ok(_) => Ok(v.to_string()),
        Err(_) => Err("not a namespace (an RFC 1123 label)".into()),
    }
}

fn parse_addr(v: &str) -> Result<SocketAddr, String> {
    v.parse()
        .map_err(|_| "not an IP:PORT socket address".to_string())
}

/// A DNS name of RFC 1123 labels (`cluster.local`), at most 253 characters.
fn parse_trust_domain(v: &str) -> Result<String, String> {
    let ok = !v.is_empty()
        && v.len() <= 253
        && v.split('.').all(|label| {
            pimesh_api::identity::Identity::new(label, "x").is_ok() // an RFC 1123 label
        });
    if ok {
        Ok(v.to_string())
    } else {
        Err("not a DNS name of lowercase RFC 1123 labels".into())
    }
}

/// Durations of flags and `PIMESH_CONTROLLER_*` variables:
/// [`pimesh_api::text`]'s form (zero allowed; callers bound it).
pub use pimesh_api::text::parse_duration;

#[cfg(test)]
mod tests;
