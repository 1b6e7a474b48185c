//! `pimesh-bench --short` end to end, on the real binaries: every scenario
//! of both protocols completes without errors (the mesh path over mTLS, as
//! the inbound proxy's metrics prove), inside cgroups when this process
//! may create them, and report.json, report.md and the SVG plots are
//! written and well-formed; a second run with the built-in upstream
//! compares itself with the first. Figures are not judged: this is a
//! correctness test, the timings on a busy CI machine mean nothing.

use pimesh_benches::cgroup::{Hierarchy, Limits};
use pimesh_benches::config::{Protocol, Scenario};
use pimesh_benches::report::Report;
use pimesh_test_support::TempDir;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bench_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_pimesh-bench"))
}

/// `name` from `package`, beside pimesh-bench (where `cargo nextest run
/// --workspace` builds it); built on demand when missing.
fn sibling(name: &str, package: &str) -> PathBuf {
    let bin = bench_bin().parent().unwrap().join(name);
    if !bin.exists() {
        let cargo = option_env!("CARGO").unwrap_or("cargo");
        let out = Command::new(cargo)
            .args(["build", "-p", package, "--bin", name])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "building {name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    bin
}

/// Whether this process may create cgroups (root, a cgroup filesystem).
fn cgroups_usable() -> bool {
    let limits = Limits {
        memory: 32 << 20,
        cpus: 0.5,
    };
    Hierarchy::detect()
        .and_then(|h| h.create("probe", limits))
        .is_ok()
}

fn bench(args: &[&str]) -> Output {
    let mut c = Command::new(bench_bin());
    c.arg("--proxy-bin")
        .arg(sibling("pimesh-proxy", "pimesh-proxy"))
        .arg("--controller-bin")
        .arg(sibling("pimesh", "pimesh-controller"))
        .args(args);
    if !cgroups_usable() {
        c.arg("--no-cgroup");
    }
    c.output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Every Markdown table row has as many cells as its header.
fn tables_are_rectangular(md: &str) -> bool {
    let mut cols = None;
    for line in md.lines() {
        if !line.starts_with('|') {
            cols = None;
            continue;
        }
        let n = line.replace("\\|", "").matches('|').count();
        match cols {
            None => cols = Some(n),
            Some(c) if c != n => return false,
            _ => {}
        }
    }
    true
}

#[test]
fn short_mode_writes_well_formed_reports_and_compares_with_a_baseline() {
    let dir = TempDir::new("short");
    let first = dir.path().join("first");
    let out = bench(&["--short", "--out", first.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "pimesh-bench failed\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("targets:"), "{stdout}");

    // report.json: the report type itself parses it back.
    let json = std::fs::read_to_string(first.join("report.json")).unwrap();
    let report: Report = serde_json::from_str(&json).unwrap();
    assert_eq!(report.settings.cgroup.is_some(), cgroups_usable());
    for protocol in [Protocol::H1, Protocol::H2] {
        for (proxy, scenario) in [
            ("none", Scenario::Direct),
            ("pimesh", Scenario::Inbound),
            ("pimesh", Scenario::Mesh),
        ] {
            let what = format!("{protocol:?} {scenario:?}");
            let run = report
                .run(proxy, scenario, protocol)
                .unwrap_or_else(|| panic!("no {what} run\n{stderr}"));
            assert_eq!(run.failure, None, "{what}");
            assert_eq!(run.steps.len(), 4, "{what}: 3 rates and saturation");
            assert_eq!(run.oom_kills, 0, "{what}");
            for s in &run.steps {
                assert!(s.requests > 0 && s.achieved_rps > 0.0, "{what}: {s:?}");
                assert_eq!((s.errors, s.missed), (0, 0), "{what}: {s:?}");
                let l = &s.latency_us;
                assert!(
                    l.p50 > 0.0 && l.p50 <= l.p99 && l.p99 <= l.p999,
                    "{what}: {l:?}"
                );
                if proxy == "pimesh" {
                    assert!(s.cpu_us_per_request.is_some(), "{what}");
                    assert!(s.per_process.iter().all(|p| p.peak_rss_kib > 0), "{what}");
                }
            }
            if proxy == "pimesh" {
                assert!(run.processes.iter().all(|p| p.idle_rss_kib > 0), "{what}");
            }
            if scenario == Scenario::Mesh {
                assert_eq!(run.processes.len(), 2, "{what}: outbound and inbound");
                let sent: u64 = run.steps.iter().map(|s| s.requests).sum();
                let mtls = run.mtls_requests.unwrap_or(0);
                assert!(mtls >= sent, "{what}: {mtls} mTLS requests for {sent} sent");
            }
        }
    }
    // HTTP/1.1 (200 with --short), then HTTP/2 (100), each answered.
    let idle: Vec<_> = report
        .idle_conns
        .iter()
        .map(|f| (f.proxy.as_str(), f.protocol, f.open, f.failed))
        .collect();
    assert_eq!(
        idle,
        [
            ("pimesh", Protocol::H1, 200, 0),
            ("pimesh", Protocol::H2, 100, 0)
        ],
        "{:?}",
        report.idle_conns
    );
    assert!(report
        .idle_conns
        .iter()
        .all(|f| f.rss_kib > f.rss_before_kib));
    // The controller figure: idle, then 20 simulated proxies (--short)
    // registered over the proxy API, every one scraped.
    let ctl = report.controller.as_ref().expect("the controller figure");
    assert!(ctl.idle_rss_kib > 0, "{ctl:?}");
    assert_eq!((ctl.proxies, ctl.scraped), (20, 20), "{ctl:?}");
    assert!(ctl.rounds >= 1 && ctl.rss_kib.is_some(), "{ctl:?}");
    // Issue 7's rows and issue 17's: idle RSS plain and meshed, peak RSS,
    // inbound CPU (h1, h2) and its ratio to the better peer (h1, h2), mesh
    // CPU (h1, h2), mesh p99 (h1, h2), 10,000 idle connections and per
    // connection, the controller idle and with 100 proxies.
    assert_eq!(report.targets.len(), 15, "{:?}", report.targets);

    // report.md: the targets table and a row per step.
    let md = std::fs::read_to_string(first.join("report.md")).unwrap();
    for t in &report.targets {
        assert!(md.contains(&format!("| {} |", t.figure)), "{}", t.figure);
    }
    assert!(md.contains("≤ 20 µs (0.5× linkerd2-proxy)"));
    assert!(md.contains("| h2 | mesh | pimesh | saturation |"));
    assert!(tables_are_rectangular(&md), "{md}");

    // The plots: one per protocol × scenario, each a well-formed SVG with
    // a line per percentile.
    for protocol in ["h1", "h2"] {
        for scenario in ["direct", "inbound", "mesh"] {
            let name = format!("latency-{protocol}-{scenario}.svg");
            let svg = std::fs::read_to_string(first.join(&name)).unwrap();
            let doc = roxmltree::Document::parse(&svg).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(doc.root_element().tag_name().name(), "svg");
            let lines = doc
                .descendants()
                .filter(|n| n.has_tag_name("polyline"))
                .count();
            assert!(lines >= 4, "{name}: {lines} lines");
        }
    }

    // A second, smaller run on the built-in upstream against the first.
    let second = dir.path().join("second");
    let baseline = first.join("report.json");
    let out = bench(&[
        "--short",
        "--upstream",
        "builtin",
        "--scenarios",
        "direct,inbound",
        "--rates",
        "200",
        "--idle-conns",
        "20",
        "--out",
        second.to_str().unwrap(),
        "--baseline",
        baseline.to_str().unwrap(),
    ]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(
        out.status.success(),
        "second run failed\n{stdout}\n{stderr}"
    );
    let report: Report =
        serde_json::from_str(&std::fs::read_to_string(second.join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report.settings.upstream, "builtin");
    assert_eq!(report.runs.len(), 4, "h1 and h2, direct and inbound");
    assert!(report
        .runs
        .iter()
        .all(|r| r.failure.is_none() && r.steps.iter().all(|s| s.errors == 0)));
    assert!(stdout.contains("against baseline (new / old):"), "{stdout}");
    assert!(
        stdout.contains("h1 inbound pimesh saturation CPU µs/req"),
        "{stdout}"
    );
    let md = std::fs::read_to_string(second.join("report.md")).unwrap();
    assert!(md.contains("## Against baseline"), "{md}");
    assert!(tables_are_rectangular(&md));
}

#[test]
fn bad_usage_exits_64() {
    let run = |args: &[&str]| Command::new(bench_bin()).args(args).output().unwrap();
    let out = run(&["--rates", "0"]);
    assert_eq!(out.status.code(), Some(64), "{}", text(&out.stderr));
    let out = run(&["--proxy-bin", "/nonexistent/pimesh-proxy"]);
    assert_eq!(out.status.code(), Some(64));
    assert!(
        text(&out.stderr).contains("--proxy-bin"),
        "{}",
        text(&out.stderr)
    );
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("--peer-bin"));
}
