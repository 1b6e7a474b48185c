//! The dashboard in a real browser: headless Chromium (Debian's
//! `chromium`) driven by `playwright-core` (npm) loads it from a
//! controller scraping three fake proxies, and must show the workloads
//! with non-zero numbers, the topology of their edges and a workload's
//! charts; screenshots are saved as CI artifacts
//! (`target/ci-artifacts/dashboard*.png`, or `$PIMESH_CI_ARTIFACTS`).
//!
//! Skipped (with a message) only when Chromium or Node.js is missing *and*
//! `PIMESH_SKIP_BROWSER_TESTS=1`; otherwise missing tools fail the test.

#[path = "support/mesh.rs"]
mod mesh;
mod support;

use mesh::{metrics_text, FakeProxy};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use support::{eventually, run, Controller, TempDir};

/// The playwright-core version installed (`.ci/run` installs the same).
const PLAYWRIGHT: &str = "playwright-core@1.65.1";

fn chromium() -> PathBuf {
    std::env::var_os("PIMESH_CHROMIUM")
        .map_or_else(|| PathBuf::from("/usr/bin/chromium"), PathBuf::from)
}

fn runs(program: &str, arg: &str) -> bool {
    Command::new(program)
        .arg(arg)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Where `node_modules/playwright-core` lives: `$PIMESH_NPM_DIR`, else
/// `npm/` in the target directory; installed there with npm when missing.
fn playwright_dir() -> Result<PathBuf, String> {
    let dir = match std::env::var_os("PIMESH_NPM_DIR") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_BIN_EXE_pimesh"))
            .parent()
            .and_then(Path::parent)
            .unwrap()
            .join("npm"),
    };
    if !dir.join("node_modules/playwright-core").exists() {
        std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;
        let out = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--prefix"])
            .arg(&dir)
            .arg(PLAYWRIGHT)
            .output()
            .map_err(|e| format!("npm: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "npm install {PLAYWRIGHT}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    Ok(dir)
}

#[test]
fn dashboard_shows_workloads_and_topology_in_chromium() {
    let missing: Vec<&str> = [
        (!runs(chromium().to_str().unwrap(), "--version"))
            .then_some("chromium (apt-get install chromium)"),
        (!runs("node", "--version")).then_some("node (apt-get install nodejs npm)"),
    ]
    .into_iter()
    .flatten()
    .collect();
    if !missing.is_empty() {
        if std::env::var("PIMESH_SKIP_BROWSER_TESTS").as_deref() == Ok("1") {
            eprintln!("SKIPPED: browser test: missing {missing:?} and PIMESH_SKIP_BROWSER_TESTS=1");
            return;
        }
        panic!(
            "the browser test needs {missing:?} (or set PIMESH_SKIP_BROWSER_TESTS=1 to skip it)"
        );
    }
    let modules = playwright_dir().unwrap_or_else(|e| panic!("playwright-core: {e}"));

    // Three workloads: loadgen → web → api, meshed (client identities).
    let id = |sa: &str| format!("{sa}.shop.serviceaccount.identity.pimesh.cluster.local");
    let (lg, wb) = (id("loadgen"), id("web"));
    let web = FakeProxy::start(move |n| metrics_text("shop", "web", n * 50, Some(&lg)));
    let api = FakeProxy::start(move |n| metrics_text("shop", "api", n * 30, Some(&wb)));
    let gen = FakeProxy::start(|n| metrics_text("shop", "loadgen", n * 2, None));
    let data = TempDir::new("dashboard");
    let targets = [web.addr, api.addr, gen.addr].map(|a| a.to_string());
    let mut args = vec!["--scrape-interval", "1s"];
    for t in &targets {
        args.extend(["--scrape-target", t.as_str()]);
    }
    let ctl = Controller::start(data.path(), &args);
    let busy = eventually(Duration::from_secs(20), || {
        let (_, body) = ctl.get("/v1/stat?resource=deploy&window=1m");
        let v: Value = serde_json::from_str(&body).unwrap();
        v["rows"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["rps"].as_f64() > Some(0.0))
            .count()
            == 3
    });
    assert!(busy, "no traffic seen:\n{}", ctl.log());

    let out_dir = std::env::var_os("PIMESH_CI_ARTIFACTS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ci-artifacts"),
        PathBuf::from,
    );
    std::fs::create_dir_all(&out_dir).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.cjs");
    let mut node = Command::new("node");
    node.arg(&script)
        .arg(ctl.url())
        .arg(&out_dir)
        .env("NODE_PATH", modules.join("node_modules"))
        .env("PIMESH_CHROMIUM", chromium());
    let out = run(&mut node, Duration::from_secs(120));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dashboard script failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: Value = serde_json::from_str(stdout.lines().last().unwrap_or(""))
        .unwrap_or_else(|e| panic!("{e}: {stdout}"));

    // The overview: every workload, with numbers.
    let rows = seen["rows"].as_array().unwrap();
    let row = |name: &str| {
        rows.iter()
            .find(|r| r[1] == name)
            .unwrap_or_else(|| panic!("{name} not shown: {seen:#}"))
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let web_row = row("web");
    assert_eq!(web_row[0], "shop");
    assert_eq!(web_row[2], "1/1");
    assert_eq!(web_row[3], "90.00%", "{web_row:?}");
    let rps: f64 = web_row[4].trim_end_matches("rps").parse().unwrap();
    assert!(rps > 10.0, "{web_row:?}");
    assert_eq!(web_row[5], "25ms", "{web_row:?}");
    assert_eq!(web_row[8], "3");
    assert!(row("api")[4] != "-" && row("loadgen")[4] != "-");
    // The topology: three nodes, two secured edges.
    let nodes: Vec<&str> = seen["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n.as_str().unwrap())
        .collect();
    for n in ["shop/web", "shop/api", "shop/loadgen"] {
        assert!(nodes.contains(&n), "{n} not in the graph: {nodes:?}");
    }
    let edges = seen["edges"].as_array().unwrap();
    for (src, dst) in [("loadgen", "web"), ("web", "api")] {
        assert!(
            edges
                .iter()
                .any(|e| e["src"] == src && e["dst"] == dst && e["secured"] == true),
            "no secured edge {src} → {dst}: {edges:?}"
        );
    }
    // The workload page drew its charts; nothing but the controller was fetched.
    assert!(seen["lines"].as_u64().unwrap() >= 4, "{seen:#}");
    assert_eq!(seen["title"], "deploy/web (shop)");
    assert_eq!(seen["errors"].as_array().unwrap().len(), 0, "{seen:#}");
    assert_eq!(seen["foreign"].as_array().unwrap().len(), 0, "{seen:#}");
    for shot in ["dashboard.png", "dashboard-workload.png"] {
        let len = std::fs::metadata(out_dir.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 10_000, "{shot}: {len} bytes");
    }
}
