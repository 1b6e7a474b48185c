//! `pimesh-lab`: brings a mesh lab up (`up`, or `demo` for the emojivoto-style
//! demo), prints `pimesh stat` every `--interval` and, before it tears
//! everything down after `--duration` or on Ctrl-C / SIGTERM / SIGHUP,
//! `pimesh stat` and `pimesh edges` with the dashboard's URL;
//! `down` removes labs a killed run left behind. Exit codes: 0 after a clean
//! teardown, 1 on failure, 64 on bad usage, 130 when interrupted during setup.

use clap::{Args, Parser, Subcommand};
use pimesh_lab::kube::node::Image;
use pimesh_lab::kube_lab::KubeLab;
use pimesh_lab::loopback::LoopbackLab;
use pimesh_lab::report::Report;
use pimesh_lab::{demo, interrupt, net, spec, Bins, Lab, Options, PodSpec};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// Exit code for bad usage (sysexits.h `EX_USAGE`).
const EX_USAGE: u8 = 64;

/// The pimesh mesh lab: pods as network namespaces on a bridge, each with
/// pimesh-proxy init, a meshed pimesh-proxy (uid 65534) and an app, plus a
/// standalone controller. Needs root (or --loopback). Everything is named
/// pml-<id>-… and removed on exit, Ctrl-C, or at the next start after a kill.
#[derive(Debug, Parser)]
#[command(name = "pimesh-lab", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run pods given by --pod / --pods
    Up {
        /// Pods `pod-1`…`pod-N`, each serving a greeting on :8080
        #[arg(long, value_name = "N")]
        pods: Option<usize>,
        /// A pod: NAME[:PORT,…][@NS/SA][=COMMAND] (COMMAND runs with sh -c)
        #[arg(long = "pod", value_name = "SPEC", value_parser = parse_pod)]
        pod: Vec<PodSpec>,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Run the demo app (examples/emojivoto): web, emoji, voting, vote-bot
    Demo {
        /// Votes per second from the vote bot
        #[arg(long, default_value_t = 5.0, value_parser = parse_rate)]
        rate: f64,
        /// Where the demo's scripts are
        #[arg(long, value_name = "DIR", env = "PIMESH_LAB_DEMO_DIR")]
        demo_dir: Option<PathBuf>,
        /// Through Kubernetes: the test control plane, pimesh installed,
        /// the manifests of DEMO_DIR/k8s/emojivoto.yaml injected by the API
        /// server and run by the lab's node agent
        #[arg(long, conflicts_with = "loopback")]
        kube: bool,
        #[command(flatten)]
        run: RunArgs,
    },
    /// Remove what labs whose process is gone left behind
    Down,
    /// The test control plane: a real Kubernetes API server on loopback
    #[command(subcommand)]
    Kube(KubeCmd),
}

#[derive(Debug, Subcommand)]
enum KubeCmd {
    /// Start etcd, kube-apiserver and kube-controller-manager on free
    /// loopback ports, write DIR/kubeconfig (cluster-admin), print how to
    /// use it and run until Ctrl-C or `kube down` (no root needed)
    Up {
        /// The cluster's directory (data, certificates, kubeconfig, logs)
        #[arg(long, value_name = "DIR", default_value = DEFAULT_KUBE_DIR)]
        dir: PathBuf,
    },
    /// A one-node meshed cluster to try things on: the test control
    /// plane, pimesh installed (the controller in the lab), and the node
    /// agent running every pod the API server stores as a lab pod (needs
    /// root); prints KUBECONFIG and runs until Ctrl-C
    Node {
        /// The Node's name
        #[arg(long, default_value = pimesh_lab::kube_lab::NODE)]
        name: String,
        /// Where pimesh-proxy and pimesh are (default: next to this binary, then PATH)
        #[arg(long, value_name = "DIR", env = "PIMESH_BIN_DIR")]
        bin_dir: Option<PathBuf>,
        /// Images the agent runs from a directory: IMAGE=DIR (the
        /// container's command runs there); repeatable. The proxy image
        /// maps to pimesh-proxy itself
        #[arg(long = "image", value_name = "IMAGE=DIR", value_parser = parse_image)]
        images: Vec<(String, PathBuf)>,
    },
    /// Stop the cluster running in DIR and remove DIR
    Down {
        /// The cluster's directory
        #[arg(long, value_name = "DIR", default_value = DEFAULT_KUBE_DIR)]
        dir: PathBuf,
    },
}

/// Where `pimesh-lab kube up` keeps its cluster unless told otherwise.
const DEFAULT_KUBE_DIR: &str = "/tmp/pimesh-lab-kube";

#[derive(Debug, Args)]
struct RunArgs {
    /// Stop after this long (e.g. 30s, 2m); default: run until Ctrl-C
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Print `pimesh stat` this often (0s: only at the end, with `pimesh edges`)
    #[arg(long, default_value = "10s", value_parser = parse_interval)]
    interval: Duration,
    /// How often the lab's controller scrapes the proxies (its --scrape-interval)
    #[arg(long, default_value = "2s", value_parser = parse_scrape_interval)]
    scrape_interval: Duration,
    /// Also write the final `pimesh stat` / `pimesh edges` answers as JSON
    /// to DIR/stat.json and DIR/edges.json
    #[arg(long, value_name = "DIR")]
    json_dir: Option<PathBuf>,
    /// Lab id: 1-5 characters of a-z0-9 (default: random)
    #[arg(long, value_parser = parse_id)]
    id: Option<String>,
    /// Where pimesh-proxy and pimesh are (default: next to this binary, then PATH)
    #[arg(long, value_name = "DIR", env = "PIMESH_BIN_DIR")]
    bin_dir: Option<PathBuf>,
    /// The proxies' uid (excluded from redirection)
    #[arg(long, default_value_t = 65534)]
    proxy_uid: u32,
    /// iptables backend for pimesh-proxy init
    #[arg(long, default_value = "auto", value_parser = ["auto", "legacy", "nft"])]
    iptables_mode: String,
    /// Keep the work directory (logs, tokens) after teardown
    #[arg(long)]
    keep_dir: bool,
    /// No namespaces and no root: pods on 127.0.0.1, apps use their proxy
    /// as an explicit HTTP proxy (http_proxy)
    #[arg(long)]
    loopback: bool,
}

fn parse_image(v: &str) -> Result<(String, PathBuf), String> {
    match v.split_once('=') {
        Some((i, d)) if !i.is_empty() && std::path::Path::new(d).is_dir() => {
            Ok((i.to_string(), PathBuf::from(d)))
        }
        _ => Err("IMAGE=DIR with an existing directory".into()),
    }
}

fn parse_pod(v: &str) -> Result<PodSpec, String> {
    PodSpec::parse(v).map_err(|e| e.reason)
}

fn parse_id(v: &str) -> Result<String, String> {
    if net::valid_id(v) {
        Ok(v.to_string())
    } else {
        Err("a lab id is 1-5 characters of a-z and 0-9".into())
    }
}

fn parse_rate(v: &str) -> Result<f64, String> {
    match v.parse::<f64>() {
        Ok(r) if r > 0.0 && r <= 1000.0 => Ok(r),
        _ => Err("a rate between 0 and 1000 per second".into()),
    }
}

/// `500ms`, `30s`, `2m`, `1h`; a bare number is seconds (pimesh_api::text).
fn parse_interval(v: &str) -> Result<Duration, String> {
    pimesh_api::text::parse_duration(v)
}

fn parse_scrape_interval(v: &str) -> Result<Duration, String> {
    match parse_interval(v)? {
        d if d < Duration::from_secs(1) || d > Duration::from_secs(300) => {
            Err("between 1s and 5m (the controller's limits)".into())
        }
        d => Ok(d),
    }
}

fn parse_duration(v: &str) -> Result<Duration, String> {
    match parse_interval(v)? {
        d if d.is_zero() => Err("must be greater than zero".into()),
        d => Ok(d),
    }
}

/// A running lab of any kind (one per process: its size does not matter).
#[allow(clippy::large_enum_variant)]
enum Running {
    Netns(Lab),
    Loopback(LoopbackLab),
    Kube(Box<KubeLab>),
}

impl Running {
    fn specs(&self) -> Vec<&PodSpec> {
        match self {
            Running::Netns(l) => l.pods.iter().map(|p| &p.spec).collect(),
            Running::Loopback(l) => l.pods.iter().map(|p| &p.spec).collect(),
            Running::Kube(_) => Vec::new(),
        }
    }

    fn operator_url(&self) -> String {
        match self {
            Running::Netns(l) => l.operator_url(),
            Running::Loopback(l) => l.operator_url(),
            Running::Kube(k) => k.lab.operator_url(),
        }
    }

    /// How to ask the lab's controller about its traffic.
    fn report(&self, bins: &Bins) -> Report {
        let specs = self.specs();
        let mut namespaces: Vec<String> = specs.iter().map(|p| p.namespace().to_string()).collect();
        namespaces.sort();
        namespaces.dedup();
        Report {
            pimesh: bins.pimesh.clone(),
            url: self.operator_url(),
            namespaces,
            scraped: specs
                .iter()
                .filter(|p| p.service.is_some())
                .map(|p| p.name.clone())
                .collect(),
        }
    }

    fn check(&mut self) -> Result<(), String> {
        match self {
            Running::Netns(l) => l.check(),
            Running::Loopback(l) => l.check(),
            Running::Kube(k) => {
                k.lab.check()?;
                k.cluster.check()?;
                if k.agent.running() {
                    Ok(())
                } else {
                    Err("the node agent stopped".into())
                }
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EX_USAGE } else { 0 };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    interrupt::install();
    let (pods, run) = match cli.command {
        Cmd::Down => {
            let ids = net::remove_stale();
            println!("pimesh-lab: removed {} stale lab(s) {ids:?}", ids.len());
            return ExitCode::SUCCESS;
        }
        Cmd::Kube(k) => return kube(k),
        Cmd::Up { pods, pod, run } => {
            let mut all = spec::simple_pods(pods.unwrap_or(0));
            all.extend(pod);
            if all.is_empty() {
                eprintln!("pimesh-lab: no pods: give --pods N or --pod SPEC");
                return ExitCode::from(EX_USAGE);
            }
            (all, run)
        }
        Cmd::Demo {
            rate,
            demo_dir,
            kube,
            run,
        } => {
            let dir = demo_dir.unwrap_or_else(demo::default_dir);
            if !demo::present(&dir) {
                eprintln!(
                    "pimesh-lab: invalid --demo-dir={:?}: no emojivoto scripts there",
                    dir.display()
                );
                return ExitCode::from(EX_USAGE);
            }
            let dir = dir.canonicalize().unwrap_or(dir);
            if kube {
                return demo_kube(&dir, rate, &run);
            }
            (demo::pods(&dir, rate), run)
        }
    };
    let mut names = std::collections::HashSet::new();
    if let Some(p) = pods.iter().find(|p| !names.insert(p.name.clone())) {
        eprintln!(
            "pimesh-lab: invalid --pod={:?}: the name is used twice",
            p.name
        );
        return ExitCode::from(EX_USAGE);
    }
    let bins = match Bins::locate(run.bin_dir.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("pimesh-lab: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let opts = Options {
        id: run.id.clone(),
        proxy_uid: run.proxy_uid,
        iptables_mode: run.iptables_mode.clone(),
        keep_dir: run.keep_dir,
        progress: true,
        scrape_interval: run.scrape_interval,
        ..Options::default()
    };
    let started = if run.loopback {
        LoopbackLab::up(&pods, &bins, &opts).map(Running::Loopback)
    } else {
        Lab::up(&pods, &bins, &opts).map(Running::Netns)
    };
    let mut lab = match started {
        Ok(l) => l,
        Err(pimesh_lab::Error::Interrupted(_)) => {
            println!("pimesh-lab: interrupted during setup; everything removed");
            return ExitCode::from(130);
        }
        Err(e) => {
            eprintln!("pimesh-lab: {}", error_chain(&e));
            return ExitCode::FAILURE;
        }
    };
    let report = lab.report(&bins);
    describe(&lab, &report);
    let code = serve(&mut lab, &run, &report);
    println!("pimesh-lab: tearing down");
    drop(lab);
    println!("pimesh-lab: done; nothing left behind");
    code
}

/// `pimesh-lab demo --kube`: the demo's Kubernetes manifests through the
/// real API server, the injector and the node agent; then, as the quick
/// start, `pimesh stat` and `pimesh edges`, and the meshed Job's outcome.
fn demo_kube(dir: &std::path::Path, rate: f64, run: &RunArgs) -> ExitCode {
    let bins = match Bins::locate(run.bin_dir.as_deref()) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("pimesh-lab: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let manifest = match std::fs::read_to_string(dir.join("k8s/emojivoto.yaml")) {
        Ok(m) => m.replace("\"--rate\", \"5\"", &format!("\"--rate\", \"{rate}\"")),
        Err(e) => {
            eprintln!(
                "pimesh-lab: invalid --demo-dir={:?}: k8s/emojivoto.yaml: {e}",
                dir.display()
            );
            return ExitCode::from(EX_USAGE);
        }
    };
    let opts = Options {
        id: run.id.clone(),
        keep_dir: run.keep_dir,
        progress: true,
        scrape_interval: run.scrape_interval,
        ..Options::default()
    };
    let images = [(demo::kube_image(), Image::Dir(dir.to_path_buf()))].into();
    let kl = match start_kube_lab(&bins, &opts, images, pimesh_lab::kube_lab::NODE) {
        Ok(k) => k,
        Err(code) => return code,
    };
    if let Err(e) = kl.cluster.apply(&manifest) {
        eprintln!(
            "pimesh-lab: applying the demo's manifests: {}",
            error_chain(&e)
        );
        return ExitCode::FAILURE;
    }
    println!(
        "pimesh-lab: applied {}",
        dir.join("k8s/emojivoto.yaml").display()
    );
    if let Err(e) = kl.wait_deployments("emojivoto", Duration::from_secs(180)) {
        eprintln!("pimesh-lab: {}", error_chain(&e));
        return ExitCode::FAILURE;
    }
    let pods = kl
        .cluster
        .kubectl(&["get", "pods", "-n", "emojivoto", "-o", "wide"])
        .unwrap_or_default();
    println!("pimesh-lab: every deployment is ready, meshed:\n{pods}");
    let report = Report {
        pimesh: bins.pimesh.clone(),
        url: kl.lab.operator_url(),
        namespaces: vec!["emojivoto".into()],
        scraped: ["emoji", "voting", "web"].map(String::from).to_vec(),
    };
    let mut lab = Running::Kube(Box::new(kl));
    describe(&lab, &report);
    let mut code = serve(&mut lab, run, &report);
    if let Running::Kube(k) = &lab {
        let job = k.cluster.kubectl(&[
            "wait",
            "--for=condition=complete",
            "job/vote-burst",
            "-n",
            "emojivoto",
            "--timeout=60s",
        ]);
        let pod = k
            .cluster
            .kubectl(&[
                "get",
                "pods",
                "-n",
                "emojivoto",
                "-l",
                "job-name=vote-burst",
                "-o",
                "jsonpath={.items[0].metadata.name} phase={.items[0].status.phase} \
                 sidecar={.items[0].status.initContainerStatuses[1].state}",
            ])
            .unwrap_or_default();
        match job {
            Ok(_) => println!("pimesh-lab: meshed Job vote-burst complete: {pod}"),
            Err(e) => {
                eprintln!("pimesh-lab: the meshed Job did not complete: {e}\n{pod}");
                code = ExitCode::FAILURE;
            }
        }
    }
    println!("pimesh-lab: tearing down");
    drop(lab);
    println!("pimesh-lab: done; nothing left behind");
    code
}

/// Prints where things are and how to try them.
fn describe(lab: &Running, report: &Report) {
    match lab {
        Running::Netns(l) => {
            println!("pimesh-lab: pods (namespace, address, identity):");
            for p in &l.pods {
                println!(
                    "  {:<10} {:<18} {:<15} {}",
                    p.spec.name, p.netns, p.ip, p.spec.identity
                );
            }
            // The demo's frontend if there is one, else the first server.
            let server = l
                .pods
                .iter()
                .find(|p| p.spec.name == "web" && p.addr().is_some())
                .or_else(|| l.pods.iter().find(|p| p.addr().is_some()));
            if let Some(server) = server {
                let client = l
                    .pods
                    .iter()
                    .find(|p| p.spec.name != server.spec.name)
                    .unwrap_or(server);
                println!(
                    "pimesh-lab: try  ip netns exec {} curl -s http://{}/  (plaintext in the pod, mTLS on the bridge {})",
                    client.netns,
                    server.addr().map(|a| a.to_string()).unwrap_or_default(),
                    l.bridge()
                );
            }
            println!("pimesh-lab: logs in {}", l.dir.display());
            println!(
                "pimesh-lab: the controller's operator API is in {}; from the host (while the lab runs): {}",
                l.names.netns("ctl"),
                l.operator_url()
            );
        }
        Running::Kube(k) => {
            println!(
                "pimesh-lab: Kubernetes: export KUBECONFIG={}  (kubectl: {})",
                k.cluster.kubeconfig.display(),
                k.cluster.bins.kubectl.display()
            );
            println!(
                "pimesh-lab: try  kubectl get pods -n emojivoto -o wide;  pimesh check --kubeconfig {}",
                k.cluster.kubeconfig.display()
            );
            println!("pimesh-lab: pods' logs in {}", k.pods_dir().display());
        }
        Running::Loopback(l) => {
            println!("pimesh-lab: loopback mode (no root): explicit proxy mode, no iptables; apps use http_proxy");
            for p in &l.pods {
                println!(
                    "  {:<10} app {:<21} proxy inbound {} admin {}",
                    p.spec.name,
                    p.app.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
                    p.inbound,
                    p.admin
                );
            }
            println!("pimesh-lab: logs in {}", l.dir.display());
        }
    }
    println!(
        "pimesh-lab: dashboard (while the lab runs): {}/dashboard",
        report.url
    );
    println!(
        "pimesh-lab: try  {}   (or edges, tap, top)",
        report.command_line(&["stat", "deploy"])
    );
}

/// Runs until `--duration` passes or a signal arrives, printing `pimesh
/// stat`; then prints `pimesh stat` and `pimesh edges` once the controller
/// scraped the traffic (waiting at most two scrape intervals and a bit).
fn serve(lab: &mut Running, run: &RunArgs, report: &Report) -> ExitCode {
    let start = Instant::now();
    let mut last = Instant::now();
    println!(
        "pimesh-lab: running{}",
        match run.duration {
            Some(d) => format!(" for {d:?}"),
            None => "; Ctrl-C stops and removes everything".into(),
        }
    );
    let code = loop {
        if interrupt::requested() {
            println!("pimesh-lab: stop requested");
            break ExitCode::SUCCESS;
        }
        if run.duration.is_some_and(|d| start.elapsed() >= d) {
            break ExitCode::SUCCESS;
        }
        if let Err(e) = lab.check() {
            eprintln!("pimesh-lab: a child died:\n{e}");
            break ExitCode::FAILURE;
        }
        if !run.interval.is_zero() && last.elapsed() >= run.interval {
            println!(
                "pimesh-lab: after {}s, the controller's view:\n{}",
                start.elapsed().as_secs(),
                report.section("stat", None)
            );
            last = Instant::now();
        }
        let _ = interrupt::sleep(Duration::from_millis(200));
    };
    if !interrupt::requested()
        && !report.wait_for_traffic(run.scrape_interval * 2 + Duration::from_secs(3))
    {
        println!("pimesh-lab: not every workload shows requests yet");
    }
    println!(
        "pimesh-lab: golden metrics and edges, from the controller (it scrapes every registered proxy every {:?}):\n{}",
        run.scrape_interval,
        report.text(run.json_dir.as_deref())
    );
    println!(
        "pimesh-lab: dashboard (until the teardown below): {}/dashboard",
        report.url
    );
    code
}

/// [`KubeLab::up`], its failure printed: the exit code then (130 when
/// interrupted, 1 otherwise).
fn start_kube_lab(
    bins: &Bins,
    opts: &Options,
    images: std::collections::BTreeMap<String, Image>,
    node: &str,
) -> Result<KubeLab, ExitCode> {
    KubeLab::up(bins, opts, images, node).map_err(|e| {
        if interrupt::requested() {
            println!("pimesh-lab: interrupted during setup; everything removed");
            ExitCode::from(130)
        } else {
            eprintln!("pimesh-lab: {}", error_chain(&e));
            ExitCode::FAILURE
        }
    })
}

/// `pimesh-lab kube node`: see [`KubeCmd::Node`].
fn kube_node(
    name: &str,
    bin_dir: Option<&std::path::Path>,
    images: Vec<(String, PathBuf)>,
) -> ExitCode {
    let bins = match Bins::locate(bin_dir) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("pimesh-lab: {e}");
            return ExitCode::from(EX_USAGE);
        }
    };
    let images = images
        .into_iter()
        .map(|(i, d)| (i, Image::Dir(d.canonicalize().unwrap_or(d))))
        .collect();
    let opts = Options {
        progress: true,
        ..Options::default()
    };
    let mut kl = match start_kube_lab(&bins, &opts, images, name) {
        Ok(k) => k,
        Err(code) => return code,
    };
    println!("export KUBECONFIG={}", kl.cluster.kubeconfig.display());
    println!("kubectl: {}", kl.cluster.bins.kubectl.display());
    println!(
        "pimesh-lab: node {name} runs the pods the API server stores (logs in {}); pimesh's operator API: {}",
        kl.pods_dir().display(),
        kl.lab.operator_url()
    );
    println!("pimesh-lab: Ctrl-C stops and removes everything");
    let code = loop {
        if interrupt::requested() {
            break ExitCode::SUCCESS;
        }
        let broken = kl
            .cluster
            .check()
            .err()
            .or_else(|| kl.lab.check().err())
            .or_else(|| (!kl.agent.running()).then(|| "the node agent stopped".to_string()));
        if let Some(e) = broken {
            eprintln!("pimesh-lab: {e}");
            break ExitCode::FAILURE;
        }
        let _ = interrupt::sleep(Duration::from_millis(500));
    };
    println!("pimesh-lab: tearing down");
    drop(kl);
    println!("pimesh-lab: done; nothing left behind");
    code
}

/// `pimesh-lab kube up|node|down`.
fn kube(cmd: KubeCmd) -> ExitCode {
    match cmd {
        KubeCmd::Node {
            name,
            bin_dir,
            images,
        } => kube_node(&name, bin_dir.as_deref(), images),
        KubeCmd::Down { dir } => match pimesh_lab::kube::down(&dir) {
            Ok(true) => {
                println!(
                    "pimesh-lab: stopped the cluster in {} and removed it",
                    dir.display()
                );
                ExitCode::SUCCESS
            }
            Ok(false) => {
                println!(
                    "pimesh-lab: no cluster running in {}; removed it",
                    dir.display()
                );
                ExitCode::SUCCESS
            }
            Err(e @ pimesh_lab::kube::Error::NotOurs(_)) => {
                eprintln!("pimesh-lab: {e}");
                ExitCode::from(EX_USAGE)
            }
            Err(e) => {
                eprintln!("pimesh-lab: {}", error_chain(&e));
                ExitCode::FAILURE
            }
        },
        KubeCmd::Up { dir } => {
            let dir = std::path::absolute(&dir).unwrap_or(dir);
            let opts = pimesh_lab::kube::Options {
                dir: Some(dir),
                keep_dir: false,
                progress: true,
            };
            let mut cluster = match pimesh_lab::kube::Cluster::up(&opts) {
                Ok(c) => c,
                Err(pimesh_lab::kube::Error::Interrupted(_)) => {
                    println!("pimesh-lab: interrupted during setup; everything removed");
                    return ExitCode::from(130);
                }
                Err(
                    e
                    @ (pimesh_lab::kube::Error::Busy { .. } | pimesh_lab::kube::Error::NotOurs(_)),
                ) => {
                    eprintln!("pimesh-lab: {e}");
                    return ExitCode::from(EX_USAGE);
                }
                Err(e) => {
                    eprintln!("pimesh-lab: {}", error_chain(&e));
                    return ExitCode::FAILURE;
                }
            };
            println!("export KUBECONFIG={}", cluster.kubeconfig.display());
            println!("kubectl: {}", cluster.bins.kubectl.display());
            println!(
                "pimesh-lab: Kubernetes {} running; Ctrl-C or `pimesh-lab kube down --dir {}` stops it",
                pimesh_lab::kube::versions().0,
                cluster.dir.display()
            );
            loop {
                if interrupt::requested() {
                    println!("pimesh-lab: stopping the cluster");
                    return ExitCode::SUCCESS;
                }
                if let Err(e) = cluster.check() {
                    eprintln!("pimesh-lab: {e}");
                    return ExitCode::FAILURE;
                }
                let _ = interrupt::sleep(Duration::from_millis(500));
            }
        }
    }
}

use pimesh_api::text::error_chain;
