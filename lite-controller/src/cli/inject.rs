//! `pimesh inject FILE|-`: prints the YAML with its workloads meshed
//! (`inject::manifest`), a line per workload on stderr, as `linkerd
//! inject`: `pimesh inject deploy.yaml | kubectl apply -f -`.

use super::Error;
use crate::inject::manifest::{self, Mode};
use crate::inject::patch::{default_proxy_image, Params};
use clap::Args;
use std::io::{Read, Write};

/// `pimesh inject` flags.
#[derive(Debug, Clone, Args)]
pub struct InjectArgs {
    /// The YAML file (several documents, `List`s), or `-` for stdin
    #[arg(value_name = "FILE|-")]
    pub file: String,
    /// Add the proxy itself (init container, native sidecar, volumes), as
    /// the proxy injector would, instead of the annotation only
    #[arg(long)]
    pub manual: bool,
    /// --manual: the control plane's namespace
    #[arg(long, default_value = crate::kube::DEFAULT_NAMESPACE, value_name = "NS")]
    pub control_plane_namespace: String,
    /// --manual: the cluster's DNS domain
    #[arg(long, default_value = "cluster.local", value_name = "DOMAIN")]
    pub cluster_domain: String,
    /// --manual: the SPIFFE trust domain of the control plane's CA
    #[arg(long, default_value = pimesh_api::DEFAULT_TRUST_DOMAIN, value_name = "DOMAIN")]
    pub trust_domain: String,
    /// --manual: the proxy image [default: ghcr.io/pimesh/pimesh-proxy:VERSION]
    #[arg(long, value_name = "IMAGE")]
    pub proxy_image: Option<String>,
    /// --manual: the proxies' default inbound policy where the pod names
    /// none (config.pimesh.io/default-inbound-policy; a Namespace's
    /// annotation is read by the proxy injector only): all-unauthenticated,
    /// all-authenticated, cluster-unauthenticated, cluster-authenticated,
    /// deny or audit
    #[arg(long, default_value = "all-unauthenticated", value_name = "POLICY")]
    pub default_inbound_policy: pimesh_api::policy::DefaultPolicy,
    /// --manual: the cluster networks of the cluster-* policies (CIDRs)
    #[arg(long, default_value = pimesh_api::policy::DEFAULT_CLUSTER_NETWORKS, value_name = "CIDRS")]
    pub cluster_networks: pimesh_api::policy::Networks,
    /// --manual: the proxy as the first container with a postStart wait,
    /// for API servers before 1.29 (no native sidecars)
    #[arg(long)]
    pub no_native_sidecar: bool,
}

/// Runs `pimesh inject`: the stream on stdout, the report on stderr.
///
/// # Errors
///
/// [`Error::Usage`] (exit 64) when FILE cannot be read, [`Error::Input`] (exit
/// 1) naming the document and line that is not YAML.
pub fn run(args: InjectArgs) -> Result<(), Error> {
    let mut input = String::new();
    let read = if args.file == "-" {
        std::io::stdin().read_to_string(&mut input).map(|_| ())
    } else {
        std::fs::read_to_string(&args.file).map(|s| input = s)
    };
    read.map_err(|e| Error::Usage {
        flag: "FILE",
        value: args.file.clone(),
        reason: e.to_string(),
    })?;
    let mode = if args.manual {
        Mode::Manual(Params {
            controller_ns: args.control_plane_namespace,
            cluster_domain: args.cluster_domain,
            trust_domain: args.trust_domain,
            proxy_image: args.proxy_image.unwrap_or_else(default_proxy_image),
            native_sidecars: !args.no_native_sidecar,
            default_inbound_policy: args.default_inbound_policy,
            cluster_networks: args.cluster_networks,
        })
    } else {
        Mode::Annotate
    };
    let (yaml, outcomes) =
        manifest::inject(&input, &mode).map_err(|e| Error::Input(format!("{}: {e}", args.file)))?;
    std::io::stdout().write_all(yaml.as_bytes())?;
    let mut err = std::io::stderr().lock();
    for o in &outcomes {
        let (kind, name) = o.object.split_once('/').unwrap_or((&o.object, ""));
        match o.skipped {
            None => writeln!(err, "{kind} \"{name}\" injected")?,
            Some(why) => writeln!(err, "{kind} \"{name}\" skipped: {why}")?,
        }
    }
    Ok(())
}
