//! `pimesh`: the control plane (`pimesh controller`) and the operator CLI
//! (`pimesh token ...`, `pimesh identity ...`, `pimesh service ...`, `pimesh stat ...`). Exit codes: 0 success, 1
//! runtime failure (unusable database, controller unreachable or refusing),
//! 64 bad usage or configuration (sysexits `EX_USAGE`).

use clap::{Parser, Subcommand};
use pimesh_controller::cli;
use pimesh_controller::cli::identity::IdentityCommand;
use pimesh_controller::cli::service::ServiceCommand;
use pimesh_controller::cli::token::TokenCommand;
use pimesh_controller::config::{Config, ControllerArgs, OsEnv};
use pimesh_controller::{error_chain, server};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::EnvFilter;

/// Exit code for bad usage or configuration (sysexits.h `EX_USAGE`).
const EX_USAGE: u8 = 64;

/// pimesh: a service mesh for small ARM clusters.
#[derive(Debug, Parser)]
#[command(name = "pimesh", version, about, long_about = None)]
#[command(subcommand_required = true, arg_required_else_help = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the control plane: the mesh CA on the proxy port (8086) and the
    /// operator API on the admin port (8085)
    Controller(Box<ControllerArgs>),
    /// Join tokens for proxies (standalone mode)
    #[command(subcommand)]
    Token(TokenCommand),
    /// The mesh CA: trust anchors and their rotation
    #[command(subcommand)]
    Identity(IdentityCommand),
    /// The service registry (standalone mode) and per-service policy
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Watch the requests of a resource's proxies live (as `linkerd viz tap`)
    Tap(cli::tap::TapCommand),
    /// The busiest paths of a resource, live from tap (as `linkerd viz top`)
    Top(cli::tap::TopCommand),
    /// Golden metrics of workloads: NAME, MESHED, SUCCESS, RPS, latency, TCP_CONN
    Stat(cli::telemetry::StatArgs),
    /// Edges between workloads: source, destination, identities, mTLS
    Edges(cli::telemetry::EdgesArgs),
    /// Traffic allowed and denied per server and authorization of a
    /// workload (as `linkerd viz authz`): `pimesh authz deploy/web -n shop`
    Authz(cli::authz::AuthzArgs),
    /// Print (or open) the URL of the dashboard served by the controller
    Dashboard(cli::telemetry::DashboardArgs),
    /// Print the control plane's Kubernetes manifests (as `linkerd
    /// install`): `pimesh install | kubectl apply -f -`
    Install(pimesh_controller::install::InstallArgs),
    /// Mesh the workloads of a YAML file: add `pimesh.io/inject: enabled`
    /// to their pod templates (as `linkerd inject`), or with --manual the
    /// proxy itself
    Inject(cli::inject::InjectArgs),
    /// Check the cluster (--pre) or the installed mesh, as `linkerd check`:
    /// ✔ or × per check, exit 1 on any ×
    Check(cli::check::CheckArgs),
    /// Store the policy resources of a YAML file in the controller
    /// (standalone mode; on Kubernetes: kubectl apply)
    Apply(cli::policy::FileArgs),
    /// Remove the policy resources of a YAML file from the controller
    /// (standalone mode)
    Delete(cli::policy::FileArgs),
    /// The stored policy resources and whether each is applied
    #[command(subcommand)]
    Policy(cli::policy::PolicyCommand),
    /// Print the controller's RBAC manifest (k3s/controller-rbac.yaml),
    /// generated from its rules
    #[command(hide = true)]
    ControllerRbac {
        /// The controller's namespace
        #[arg(long, default_value = pimesh_controller::kube::DEFAULT_NAMESPACE)]
        namespace: String,
    },
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    if !matches!(cli.command, Command::Controller(_)) {
        // Like other Unix tools, end quietly when a pipe reader goes away
        // (`pimesh token ls | head`); Rust ignores SIGPIPE, which makes
        // `println!` panic instead. The controller keeps ignoring it.
        // SAFETY: restores the default disposition before any thread exists.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    let result = match cli.command {
        Command::Controller(args) => return controller(&args),
        Command::ControllerRbac { namespace } => {
            print!("{}", pimesh_controller::kube::access::manifest(&namespace));
            return ExitCode::SUCCESS;
        }
        Command::Install(args) if args.crds => {
            return match pimesh_controller::policy::crd::manifest() {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pimesh install --crds: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Command::Install(args) => {
            return match pimesh_controller::install::manifests(&args) {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pimesh install: {e}");
                    ExitCode::from(EX_USAGE)
                }
            };
        }
        Command::Inject(args) => cli::inject::run(args),
        Command::Check(args) => cli::check::run(args),
        Command::Token(cmd) => cli::token::run(cmd, &OsEnv),
        Command::Identity(cmd) => cli::identity::run(cmd, &OsEnv),
        Command::Service(cmd) => cli::service::run(cmd, &OsEnv),
        Command::Apply(args) => cli::policy::apply(args, &OsEnv),
        Command::Delete(args) => cli::policy::delete(args, &OsEnv),
        Command::Policy(cmd) => cli::policy::run(cmd, &OsEnv),
        Command::Tap(cmd) => cli::tap::run_tap(cmd, &OsEnv),
        Command::Top(cmd) => cli::tap::run_top(cmd, &OsEnv),
        Command::Stat(args) => cli::telemetry::stat(args, &OsEnv),
        Command::Edges(args) => cli::telemetry::edges(args, &OsEnv),
        Command::Authz(args) => cli::authz::authz(args, &OsEnv),
        Command::Dashboard(args) => cli::telemetry::dashboard(args, &OsEnv),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pimesh: {}", error_chain(&e));
            ExitCode::from(e.exit_code())
        }
    }
}

/// `pimesh controller`: parses the configuration, then serves until
/// SIGTERM or SIGINT, drains, flushes the database and exits 0.
fn controller(args: &ControllerArgs) -> ExitCode {
    let config = match Config::from_args(args, &OsEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pimesh controller: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    // The filter was validated by Config. kube's client logs an error per
    // failed request (every watcher retry during an API server outage); the
    // controller logs each outage once itself, so kube_client is off unless
    // the filter names it.
    let mut filter = EnvFilter::new(&config.log);
    if !config.log.contains("kube_client") {
        if let Ok(d) = "kube_client=off".parse() {
            filter = filter.add_directive(d);
        }
    }
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    // One thread serves both ports; signing and flushed writes run on the
    // (small) blocking pool.
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(4)
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pimesh controller: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        tracing::info!(version = env!("CARGO_PKG_VERSION"), "config: {config}");
        let shutdown = CancellationToken::new();
        tokio::spawn(signals(shutdown.clone()));
        match server::run(config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                tracing::error!(error = %error_chain(&e), "controller failed");
                eprintln!("pimesh controller: {}", error_chain(&e));
                ExitCode::from(e.exit_code())
            }
        }
    })
}

/// Cancels `shutdown` on SIGTERM (Kubernetes, systemd) or SIGINT (Ctrl-C).
async fn signals(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::warn!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = int.recv() => tracing::info!("SIGINT received"),
    }
    shutdown.cancel();
}
