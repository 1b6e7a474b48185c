//! The `pimesh-proxy` binary: parses `PIMESH_PROXY_*` once, starts the
//! runtime (one thread by default) and serves until SIGTERM, SIGINT or
//! `POST /shutdown`. Exit codes: 0 after a drain, 1 when a listener cannot
//! be bound, 64 on bad usage or configuration (sysexits `EX_USAGE`).

use clap::Parser;
use pimesh_proxy::config::{Config, OsEnv};
use pimesh_proxy::server::{self, Listeners};
use std::process::ExitCode;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter};

/// The static musl builds (the boards') allocate with mimalloc instead of
/// musl's mallocng: 6-10 % fewer instructions per request, and 10,000 idle
/// connections in less memory (benches/README, "Allocator of
/// the musl builds"). Its options for small boards: [`musl_alloc::tune`].
#[cfg(target_env = "musl")]
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[cfg(target_env = "musl")]
mod musl_alloc {
    use std::ffi::{c_int, c_long};

    // mimalloc's own API (`mi_option_e` in include/mimalloc.h of the v3.3.2
    // sources that libmimalloc-sys 0.1.49 builds; its Rust bindings do not
    // name these two options). Check the numbers when Cargo.lock moves it.
    extern "C" {
        fn mi_option_set(option: c_int, value: c_long);
    }
    /// `mi_option_purge_delay`: ms before freed memory is returned to the OS.
    const PURGE_DELAY: c_int = 15;
    /// `mi_option_arena_reserve`: KiB of address space reserved at a time.
    const ARENA_RESERVE: c_int = 23;

    /// Sets mimalloc's options for a small board; called first in `main`,
    /// before anything allocates. Measured (benches/README):
    /// - `arena_reserve` 4 MiB instead of 1 GiB: a 1 GiB arena cost
    ///   ~150 KiB more RSS at rest (further arenas come as needed);
    /// - `purge_delay` 0 instead of 1,000 ms: freed pages go back to the OS
    ///   at once, also in a process that has gone idle (a delayed purge
    ///   waits for the next allocation): ~0.5 KiB less per idle connection.
    ///
    /// `MIMALLOC_ARENA_RESERVE` or `MIMALLOC_PURGE_DELAY` in the environment
    /// (mimalloc reads them itself) win over these.
    pub fn tune() {
        for (option, env, value) in [
            (ARENA_RESERVE, "MIMALLOC_ARENA_RESERVE", 4 * 1024),
            (PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 0),
        ] {
            // `var_os` allocates only for a variable that is set.
            if std::env::var_os(env).is_none() {
                // SAFETY: mimalloc documents `mi_option_set` as callable at
                // any time; it stores the value in its option table.
                unsafe { mi_option_set(option, value) };
            }
        }
    }
}

/// Exit code for bad usage or configuration (sysexits.h `EX_USAGE`).
const EX_USAGE: u8 = 64;

/// pimesh's sidecar proxy. Configured by PIMESH_PROXY_* environment
/// variables (see README): inbound listener (4143), outbound listener and
/// explicit HTTP proxy (4140), admin (4191: /metrics, /ready, /live,
/// POST /shutdown, /proxy-log-level).
/// What `--help` says after the commands: without a command the proxy
/// runs, configured by the environment only.
const ENV_HELP: &str = "\
Without a command it runs the proxy, configured by PIMESH_PROXY_* environment
variables read once at start (a bad value exits 64 naming the variable):
  PIMESH_PROXY_INBOUND_TARGET    app address for inbound traffic without iptables
  PIMESH_PROXY_CONTROLLER_ADDR   the controller (host:8086): mTLS identity and discovery,
                                 with PIMESH_PROXY_TRUST_ANCHORS, PIMESH_PROXY_TOKEN_FILE
                                 and PIMESH_PROXY_IDENTITY (NAMESPACE/SERVICEACCOUNT)
  PIMESH_PROXY_SERVICE           NAME[:PORT] this pod serves, registered with the controller
  PIMESH_PROXY_LOG               log filter, RUST_LOG syntax (warn,pimesh=info)
Listeners: inbound 0.0.0.0:4143, outbound and explicit HTTP proxy 127.0.0.1:4140,
admin 0.0.0.0:4191 (/metrics, /ready, /live, POST /shutdown, /proxy-log-level),
tap 0.0.0.0:4190 (with a controller). Every variable: README.md, \"Running the proxy\".";

#[derive(Debug, Parser)]
#[command(name = "pimesh-proxy", version, about, long_about = None, after_help = ENV_HELP)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Program this network namespace's iptables so that the pod's TCP
    /// goes through the proxy (an init container; needs NET_ADMIN).
    Init(pimesh_proxy::init::InitConfig),
    /// Wait until this pod's proxy is ready (its /ready answers 200), as
    /// linkerd-await: the postStart hook of a proxy that is not a native
    /// sidecar. Exit 1 after --timeout
    Await(pimesh_proxy::await_ready::AwaitConfig),
}

fn main() -> ExitCode {
    #[cfg(target_env = "musl")]
    musl_alloc::tune();
    match Cli::try_parse() {
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
        Ok(Cli {
            command: Some(Command::Init(cfg)),
        }) => {
            return match pimesh_proxy::init::run(&cfg) {
                Ok(summary) => {
                    println!("pimesh-proxy init: {summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("pimesh-proxy init: {}", pimesh_proxy::error_chain(&e));
                    ExitCode::FAILURE
                }
            };
        }
        Ok(Cli {
            command: Some(Command::Await(cfg)),
        }) => {
            return match pimesh_proxy::await_ready::run(&cfg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("pimesh-proxy await: {e}");
                    ExitCode::FAILURE
                }
            };
        }
        Ok(Cli { command: None }) => {}
    }
    let config = match Config::from_env(&OsEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pimesh-proxy: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    // The filter was validated by Config; the reload handle lets the admin
    // port change it at run time.
    let (filter, log) = reload::Layer::new(EnvFilter::new(&config.log));
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .init();

    let mut rt = if config.threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(config.threads);
        b
    };
    // DNS lookups in explicit proxy mode are the only blocking work.
    let rt = match rt.enable_all().max_blocking_threads(4).build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pimesh-proxy: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        tracing::info!(version = env!("CARGO_PKG_VERSION"), "config: {config}");
        let listeners = match Listeners::bind(&config).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("pimesh-proxy: {e}: {}", e.source);
                return ExitCode::FAILURE;
            }
        };
        let addr =
            |l: &tokio::net::TcpListener| l.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let tap = listeners.tap.as_ref().map(addr);
        tracing::info!(
            "listening inbound={} outbound={} admin={}{}",
            addr(&listeners.inbound),
            addr(&listeners.outbound),
            addr(&listeners.admin),
            tap.map(|t| format!(" tap={t}")).unwrap_or_default()
        );
        let shutdown = CancellationToken::new();
        tokio::spawn(signals(shutdown.clone()));
        server::run(config, listeners, log, shutdown).await;
        tracing::info!("drained; exiting");
        ExitCode::SUCCESS
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
