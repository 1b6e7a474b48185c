//! The standalone controller as a measured process: its memory at rest,
//! then with N simulated proxies ([`crate::sim_proxy`]) registered over
//! the proxy API (`PUT /v1/discovery/endpoints` with a join token, HTTP/2
//! over TLS 1.3, as pimesh-proxy registers) with their admin addresses, so
//! that the controller scrapes their `/metrics` (issue 17: ≤ 12 MiB idle,
//! ≤ 20 MiB with 100 proxies).

use crate::report::ControllerFigure;
use crate::scenario::{self, Controller};
use crate::sim_proxy::SimProxies;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use pimesh_api::discovery::{Registration, ENDPOINTS_PATH};
use pimesh_api::identity::{Identity, CONTROLLER_IDENTITY};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The controller's trust domain (its default).
const TRUST_DOMAIN: &str = "cluster.local";
/// The simulated proxies' identity (one join token for all of them).
const IDENTITY: &str = "bench/app";
/// Deployments the simulated proxies are spread over (at most).
const DEPLOYMENTS: usize = 20;
/// Points per target the controller keeps at its default scrape interval:
/// an hour (`telemetry::window::RETENTION_MS`) of 10 s rounds. The same
/// number of points makes the same windows at any interval, so a 1 s
/// interval reaches that steady state in 6 minutes instead of an hour.
pub const RING_ROUNDS: u64 = 360;

/// How the figure is taken.
#[derive(Clone, Copy, Debug)]
pub struct Plan {
    /// Simulated proxies registered and scraped.
    pub proxies: usize,
    /// Rest before the idle reading.
    pub settle: Duration,
    /// How long the proxies are scraped before the loaded reading.
    pub scraped_for: Duration,
    /// The controller's `--scrape-interval`.
    pub scrape_interval: Duration,
    /// Waiting budget for the controller's start.
    pub wait: Duration,
}

/// Could not take the figure.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the controller")]
    Controller(#[from] scenario::Error),
    #[error("the simulated proxies")]
    Sims(#[source] std::io::Error),
    #[error("cannot read the trust anchors {0}")]
    Anchors(String),
    #[error("registration {0} of {1} failed: {2}")]
    Register(usize, usize, String),
    #[error("the controller exited: {0}")]
    Exited(String),
}

/// Starts a fresh standalone controller in `dir` and measures it: idle,
/// then with `plan.proxies` simulated proxies registered and scraped.
///
/// # Errors
///
/// [`Error`] when the controller or the simulated proxies cannot start, a
/// registration is refused, or the controller dies while measured.
pub fn measure(
    rt: &tokio::runtime::Runtime,
    bin: &Path,
    dir: &Path,
    plan: &Plan,
) -> Result<ControllerFigure, Error> {
    let interval = format!("{}s", plan.scrape_interval.as_secs().max(1));
    let mut ctl = Controller::start_with(
        bin,
        dir,
        plan.wait,
        // A lease longer than the figure: registered once, never renewed.
        &["--lease-ttl", "1h", "--scrape-interval", &interval],
    )?;
    std::thread::sleep(plan.settle);
    let idle_rss_kib = ctl.proc.rss_kib();
    let idle_hwm_kib = ctl.proc.hwm_kib();
    let mut figure = ControllerFigure {
        proxies: plan.proxies,
        idle_rss_kib,
        idle_hwm_kib,
        scraped_seconds: 0.0,
        scraped: 0,
        rss_kib: None,
        rounds: 0,
        first_round_rss_kib: None,
        ring_rounds: RING_ROUNDS,
        hwm_kib: None,
        threads: crate::process::status_kib(ctl.proc.pid(), "Threads:"),
    };
    if plan.proxies == 0 {
        return Ok(figure);
    }
    let sims = SimProxies::start(plan.proxies, DEPLOYMENTS).map_err(Error::Sims)?;
    let token = ctl.token(IDENTITY)?;
    let pem = std::fs::read(ctl.anchors_path()).map_err(|e| Error::Anchors(e.to_string()))?;
    let anchors: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| Error::Anchors(e.to_string()))?;
    let regs: Vec<Registration> = sims
        .addrs
        .iter()
        .zip(&sims.sims)
        .enumerate()
        .map(|(i, (admin, sim))| registration(&token, i, *admin, sim.deployment, sim.pod))
        .collect();
    rt.block_on(register(ctl.proxy_addr, anchors, &regs))?;
    let started = Instant::now();
    let mut rss_max = 0;
    while started.elapsed() < plan.scraped_for {
        std::thread::sleep(Duration::from_millis(500));
        if let Some(how) = ctl.proc.exited() {
            return Err(Error::Exited(how));
        }
        let rss = ctl.proc.rss_kib();
        rss_max = rss_max.max(rss);
        if figure.first_round_rss_kib.is_none() && sims.rounds() >= 1 {
            figure.first_round_rss_kib = Some(rss);
        }
    }
    figure.scraped_seconds = started.elapsed().as_secs_f64();
    figure.scraped = sims.scraped();
    figure.rounds = sims.rounds();
    figure.rss_kib = Some(rss_max.max(ctl.proc.rss_kib()));
    figure.hwm_kib = Some(ctl.proc.hwm_kib());
    figure.threads = crate::process::status_kib(ctl.proc.pid(), "Threads:");
    Ok(figure)
}

/// The registration of simulated proxy `i`: service `app-DEPLOYMENT`, a
/// workload address of its own, its `/metrics` at `admin`.
fn registration(
    token: &str,
    i: usize,
    admin: SocketAddr,
    deployment: usize,
    pod: usize,
) -> Registration {
    let addr = SocketAddr::from(([127, 1, (i / 250) as u8, (i % 250 + 1) as u8], 8080));
    Registration {
        token: token.to_string(),
        service: format!("app-{deployment}"),
        port: 8080,
        addr,
        proxy_addr: None,
        admin_addr: Some(admin),
        tap_addr: None,
        protocol: Default::default(),
        labels: [
            ("deployment".to_string(), format!("app-{deployment}")),
            ("pod".to_string(), format!("app-{deployment}-{pod}")),
        ]
        .into(),
    }
}

/// `PUT`s every registration over one HTTP/2 connection to the proxy port,
/// the controller authenticated by `anchors` (TLS 1.3, no client certificate:
/// the join token in the body authenticates the proxy).
async fn register(
    addr: SocketAddr,
    anchors: Vec<CertificateDer<'static>>,
    regs: &[Registration],
) -> Result<(), Error> {
    let fail = |i: usize, e: String| Error::Register(i + 1, regs.len(), e);
    let mut roots = rustls::RootCertStore::empty();
    for c in anchors {
        roots.add(c).map_err(|e| fail(0, e.to_string()))?;
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .map_err(|e| fail(0, e.to_string()))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let controller: Identity = CONTROLLER_IDENTITY
        .parse()
        .map_err(|e| fail(0, format!("{e:?}")))?;
    let name = ServerName::try_from(controller.dns_name(TRUST_DOMAIN))
        .map_err(|e| fail(0, e.to_string()))?;
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| fail(0, e.to_string()))?;
    let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(name, tcp)
        .await
        .map_err(|e| fail(0, format!("TLS: {e}")))?;
    let (mut send, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake::<_, Full<Bytes>>(hyper_util::rt::TokioIo::new(tls))
            .await
            .map_err(|e| fail(0, format!("h2: {e}")))?;
    let conn = tokio::spawn(conn);
    for (i, reg) in regs.iter().enumerate() {
        let body = serde_json::to_vec(reg).map_err(|e| fail(i, e.to_string()))?;
        let req = http::Request::put(format!("https://{addr}{ENDPOINTS_PATH}"))
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| fail(i, e.to_string()))?;
        let rsp = send
            .send_request(req)
            .await
            .map_err(|e| fail(i, e.to_string()))?;
        let status = rsp.status();
        let body = rsp
            .into_body()
            .collect()
            .await
            .map_err(|e| fail(i, e.to_string()))?
            .to_bytes();
        if !status.is_success() {
            return Err(fail(
                i,
                format!("{status}: {}", String::from_utf8_lossy(&body)),
            ));
        }
    }
    drop(send);
    conn.abort();
    Ok(())
}
