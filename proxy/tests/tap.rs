//! Tap end to end: `pimesh tap` / `pimesh top` against the real controller
//! relaying the tap listeners of registered proxies, with identities; the
//! tap listener refuses every identity but the controller's. Registered
//! proxies are also the controller's scrape targets (`pimesh stat`).

mod support;

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use support::outbound::{backend_proxy, client_proxy, load, Backend};
use support::{controller_bin, eventually, run, Controller};

/// The `tap=` address in a proxy's "listening" log line.
fn tap_addr(log: &str) -> SocketAddr {
    let rest = &log[log.find(" tap=").expect("no tap listener in the log") + 5..];
    rest.split_whitespace().next().unwrap().parse().unwrap()
}

/// Starts `pimesh tap|top ARGS` against `ctl`, stdout piped.
fn pimesh(ctl: &Controller, args: &[&str]) -> std::process::Child {
    Command::new(controller_bin())
        .args(args)
        .args(["--controller", &format!("http://{}", ctl.admin_addr)])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

#[test]
fn tap_shows_requests_as_they_happen_with_identities() {
    let ctl = Controller::start(&["--scrape-interval", "1s"]);
    let app = Backend::start("web");
    let labels = "namespace=default,deployment=web,pod=web-0";
    let server = backend_proxy(
        &ctl,
        "web:80",
        app.addr,
        &[("PIMESH_PROXY_WORKLOAD_LABELS", labels)],
    );
    let client = client_proxy(&ctl, &[]);
    // The endpoint is registered (with its tap listener) and resolvable.
    assert!(
        eventually(Duration::from_secs(20), || load(
            client.outbound,
            "web:80",
            1,
            1,
            Duration::ZERO
        )
        .ok()
            == 1),
        "web never answered:\n{}",
        server.log()
    );
    let mut tap = pimesh(
        &ctl,
        &[
            "tap",
            "deploy/web",
            "-n",
            "default",
            "-o",
            "json",
            "--duration",
            "30s",
        ],
    );
    // Lines arrive while the tap is open: read them as they come.
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let stdout = tap.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(25);
    let mut seen = Vec::new();
    while Instant::now() < deadline && seen.len() < 5 {
        // Requests with a marker path, sent while the tap is open.
        let t = load(client.outbound, "web:80", 1, 5, Duration::ZERO);
        assert_eq!(t.ok(), 5, "{t:?}");
        while let Ok(line) = rx.recv_timeout(Duration::from_millis(300)) {
            seen.push(line);
        }
    }
    let _ = tap.kill();
    let _ = tap.wait();
    assert!(
        seen.len() >= 5,
        "tap showed {} events: {seen:?}",
        seen.len()
    );
    let ev: serde_json::Value = serde_json::from_str(&seen[0]).unwrap();
    assert_eq!(ev["direction"], "inbound", "{ev}");
    assert_eq!(ev["tls"], true, "{ev}");
    assert_eq!(
        ev["client_id"], "client.default.serviceaccount.identity.pimesh.cluster.local",
        "{ev}"
    );
    assert_eq!(ev["status"], 200, "{ev}");
    assert_eq!(ev["method"], "GET", "{ev}");
    assert_eq!(ev["labels"]["pod"], "web-0", "{ev}");
    assert!(ev["latency_us"].as_u64().is_some(), "{ev}");

    // `pimesh top` aggregates the same stream by path (printed at the end).
    let top = pimesh(
        &ctl,
        &["top", "deploy/web", "--duration", "4s", "-o", "json"],
    );
    let sender = std::thread::spawn({
        let outbound = client.outbound;
        move || {
            let end = Instant::now() + Duration::from_secs(3);
            while Instant::now() < end {
                load(outbound, "web:80", 1, 5, Duration::ZERO);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    let out = top.wait_with_output().unwrap();
    sender.join().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let row = &rows[0];
    assert!(row["count"].as_u64().unwrap() >= 5, "{rows}");
    assert_eq!(row["success_rate"], 1.0, "{rows}");
    assert_eq!(row["destination"], "web-0", "{rows}");
    assert_eq!(
        row["source"], "client.default.serviceaccount.identity.pimesh.cluster.local",
        "{rows}"
    );

    // The registered proxy is scraped without any --scrape-target: its
    // requests show in `pimesh stat` under its deployment label.
    let stat_web = || -> Option<serde_json::Value> {
        let rows: serde_json::Value =
            serde_json::from_str(&ctl.cli(&["stat", "deploy", "-n", "default", "-o", "json"]))
                .ok()?;
        rows.as_array()?
            .iter()
            .find(|r| r["name"] == "web")
            .cloned()
    };
    assert!(
        eventually(Duration::from_secs(20), || {
            load(client.outbound, "web:80", 1, 5, Duration::ZERO);
            stat_web().is_some_and(|r| r["meshed"] == "1/1" && r["requests"].as_u64() > Some(0))
        }),
        "web never showed in stat: {:?}\n{}",
        stat_web(),
        ctl.log()
    );

    // Unknown resources are a clear error.
    let out = run(
        Command::new(controller_bin())
            .args(["tap", "deploy/nope", "--duration", "2s"])
            .args(["--controller", &format!("http://{}", ctl.admin_addr)]),
        Duration::from_secs(20),
    );
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no registered meshed proxy"), "{err}");
}

#[test]
fn the_tap_listener_refuses_everyone_but_the_controller() {
    let ctl = Controller::start(&[]);
    let app = Backend::start("web");
    let server = backend_proxy(&ctl, "web:80", app.addr, &[]);
    assert!(
        eventually(Duration::from_secs(20), || server.log().contains(" tap=")),
        "{}",
        server.log()
    );
    let tap = tap_addr(&server.log());
    assert!(eventually(Duration::from_secs(20), || {
        support::curl(
            None,
            &[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://{}/ready", server.admin),
            ],
        )
        .1 == "200"
    }));
    // A mesh identity that is not the controller's: 403.
    let dir = support::TempDir::new("tap-refused");
    let key = dir.path().join("key.pem");
    let csr = dir.path().join("csr.pem");
    let out = run(
        Command::new("openssl")
            .args([
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-nodes",
                "-subj",
                "/CN=x",
                "-keyout",
            ])
            .arg(&key)
            .arg("-out")
            .arg(&csr),
        Duration::from_secs(20),
    );
    assert!(out.status.success());
    let token = std::fs::read_to_string(ctl.token_file("default/intruder")).unwrap();
    let body = serde_json::json!({
        "identity": "default/intruder",
        "token": token.trim(),
        "csr_pem": std::fs::read_to_string(&csr).unwrap(),
    });
    let anchors = ctl.anchors_file();
    let certify = support::curl(
        None,
        &[
            "-s", "--http2", "--cacert", anchors.to_str().unwrap(),
            "--resolve",
            &format!("pimesh-controller.pimesh.serviceaccount.identity.pimesh.cluster.local:{}:127.0.0.1", ctl.proxy_addr.port()),
            "-H", "content-type: application/json",
            "-d", &body.to_string(),
            &format!("https://pimesh-controller.pimesh.serviceaccount.identity.pimesh.cluster.local:{}/v1/identity/certify", ctl.proxy_addr.port()),
        ],
    );
    let rsp: serde_json::Value =
        serde_json::from_str(&certify.1).unwrap_or_else(|_| panic!("{certify:?}"));
    let chain = dir.path().join("chain.pem");
    std::fs::write(&chain, rsp["chain_pem"].as_str().unwrap()).unwrap();
    let server_name = "web.default.serviceaccount.identity.pimesh.cluster.local";
    let url = format!("https://{server_name}:{}/v1/tap", tap.port());
    let resolve = format!("{server_name}:{}:127.0.0.1", tap.port());
    let (_, code, err) = support::curl(
        None,
        &[
            "-s",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            "--cacert",
            anchors.to_str().unwrap(),
            "--resolve",
            &resolve,
            "--cert",
            chain.to_str().unwrap(),
            "--key",
            key.to_str().unwrap(),
            &url,
        ],
    );
    assert_eq!(code, "403", "{err}");
    // No client certificate at all: the handshake fails.
    let (ok, code, _) = support::curl(
        None,
        &[
            "-s",
            "--http2",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "5",
            "--cacert",
            anchors.to_str().unwrap(),
            "--resolve",
            &resolve,
            &url,
        ],
    );
    assert!(!ok && code == "000", "{code}");
}

/// `node_modules` with playwright-core: `$PIMESH_NPM_DIR`, else `npm/` in
/// the target directory (where `.ci/run` and the dashboard test put it),
/// installed there when missing. `None`: Chromium or Node.js is missing and
/// `PIMESH_SKIP_BROWSER_TESTS=1` says to skip.
fn playwright() -> Option<std::path::PathBuf> {
    let runs = |p: &str| {
        Command::new(p)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let chromium = std::env::var("PIMESH_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !runs(&chromium) || !runs("node") {
        if std::env::var("PIMESH_SKIP_BROWSER_TESTS").as_deref() == Ok("1") {
            eprintln!(
                "SKIPPED: browser test: chromium or node missing and PIMESH_SKIP_BROWSER_TESTS=1"
            );
            return None;
        }
        panic!("the browser test needs chromium and node (or PIMESH_SKIP_BROWSER_TESTS=1)");
    }
    let dir = std::env::var_os("PIMESH_NPM_DIR").map_or_else(
        || {
            std::path::Path::new(support::proxy_bin())
                .parent()
                .and_then(std::path::Path::parent)
                .unwrap()
                .join("npm")
        },
        std::path::PathBuf::from,
    );
    if !dir.join("node_modules/playwright-core").exists() {
        std::fs::create_dir_all(&dir).unwrap();
        let out = run(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--prefix"])
                .arg(&dir)
                .arg("playwright-core@1.65.1"),
            Duration::from_secs(300),
        );
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Some(dir.join("node_modules"))
}

#[test]
fn the_dashboard_shows_a_live_tap_in_chromium() {
    let Some(modules) = playwright() else {
        return;
    };
    let ctl = Controller::start(&[]);
    let app = Backend::start("web");
    let labels = "namespace=default,deployment=web,pod=web-0";
    let _server = backend_proxy(
        &ctl,
        "web:80",
        app.addr,
        &[("PIMESH_PROXY_WORKLOAD_LABELS", labels)],
    );
    let client = client_proxy(&ctl, &[]);
    assert!(eventually(Duration::from_secs(20), || load(
        client.outbound,
        "web:80",
        1,
        1,
        Duration::ZERO
    )
    .ok()
        == 1));
    // Steady traffic while the browser taps.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sender = std::thread::spawn({
        let (stop, outbound) = (stop.clone(), client.outbound);
        move || {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                load(outbound, "web:80", 1, 3, Duration::ZERO);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    });
    let out_dir = std::env::var_os("PIMESH_CI_ARTIFACTS").map_or_else(
        || std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/ci-artifacts"),
        std::path::PathBuf::from,
    );
    std::fs::create_dir_all(&out_dir).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../lite-controller/tests/browser/tap.cjs");
    let out = run(
        Command::new("node")
            .arg(&script)
            .arg(format!("http://{}", ctl.admin_addr))
            .args(["default", "web"])
            .arg(&out_dir)
            .env("NODE_PATH", &modules),
        Duration::from_secs(120),
    );
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    sender.join().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert_eq!(seen["status"], "live", "{seen}");
    assert_eq!(seen["errors"].as_array().unwrap().len(), 0, "{seen}");
    let row = &seen["rows"][0];
    // TIME DIR PEER_ID METHOD AUTHORITY PATH STATUS LATENCY
    assert_eq!(row[1], "inbound", "{seen}");
    assert_eq!(
        row[2], "client.default.serviceaccount.identity.pimesh.cluster.local",
        "{seen}"
    );
    assert_eq!(row[3], "GET", "{seen}");
    assert_eq!(row[6], "200", "{seen}");
    let shot = std::fs::metadata(out_dir.join("dashboard-tap.png")).map_or(0, |m| m.len());
    assert!(shot > 10_000, "screenshot: {shot} bytes");
}
