//! End to end on the lab: two pods `a` and `b`, each running nginx
//! (HTTP/1.1 on 8080, h2c on 8081), the Python gRPC echo (9090), the Python
//! WebSocket echo (9091) and a raw TCP echo (9000) — apps with no proxy
//! settings. From each pod to the other, real clients (curl, h2load, the
//! grpcio client, the websockets client, a raw TCP client) go through the
//! pods' proxies (iptables redirection) over mTLS. Meanwhile tshark
//! captures the lab bridge: the capture holds TLS between the pods, no
//! plaintext HTTP but the controller's scrapes of the proxies' admin port,
//! and none of the payload markers. Needs root and tshark.

mod support;

use pimesh_lab::process::connect_in;
use pimesh_lab::{metrics, Lab, Options, PodSpec};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use support::*;

/// In every request's URL and headers and in the raw TCP payload; must
/// never appear on the bridge.
const MARKER: &str = "PIMESH-LAB-MARKER-5e1f";

const TCP_ECHO: &str = r#"import socketserver
class Echo(socketserver.StreamRequestHandler):
    def handle(self):
        for line in self.rfile:
            self.wfile.write(b"echo: " + line)
socketserver.ThreadingTCPServer.allow_reuse_address = True
socketserver.ThreadingTCPServer(("0.0.0.0", 9000), Echo).serve_forever()
"#;

/// A pod directory with nginx's config and the TCP echo; the pod's
/// command starts all four servers.
fn server_pod(name: &str, dir: &Path) -> PodSpec {
    let d = dir.display();
    std::fs::create_dir_all(dir.join("www")).unwrap();
    std::fs::write(
        dir.join("www/index.html"),
        format!("hello from nginx in {name}\n"),
    )
    .unwrap();
    std::fs::write(dir.join("tcp_echo.py"), TCP_ECHO).unwrap();
    std::fs::write(
        dir.join("nginx.conf"),
        format!(
            "daemon off; master_process off; worker_processes 1; pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off; default_type text/plain;
  client_body_temp_path {d}/body; proxy_temp_path {d}/proxy; fastcgi_temp_path {d}/fcgi;
  uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;
  server {{ listen 0.0.0.0:8080; root {d}/www; }}
  server {{ listen 0.0.0.0:8081 http2; root {d}/www; }}
}}
"
        ),
    )
    .unwrap();
    let grpc = peer("grpc_echo.py");
    let ws = peer("ws_echo.py");
    let cmd = format!(
        "nginx -p {d} -e {d}/error.log -c {d}/nginx.conf & \
         python3 {} serve --host 0.0.0.0 --port 9090 & \
         python3 {} serve --host 0.0.0.0 --port 9091 & \
         exec python3 {d}/tcp_echo.py",
        grpc.display(),
        ws.display()
    );
    let mut p = PodSpec::new(name, &[8080, 8081, 9090, 9091, 9000])
        .identity(&format!("e2e/{name}"))
        .command(&cmd);
    p.cwd = Some(dir.to_path_buf());
    p
}

/// tshark capturing on `iface` into `file` until stopped.
struct Capture {
    child: Child,
}

impl Capture {
    fn start(iface: &str, file: &Path) -> Capture {
        let mut child = Command::new("tshark")
            .args(["-i", iface, "-F", "pcap", "-q", "-w"])
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("tshark (apt-get install tshark)");
        let mut err = BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        loop {
            line.clear();
            let n = err.read_line(&mut line).unwrap();
            assert!(n > 0, "tshark ended before capturing");
            if line.contains("Capturing on") {
                break;
            }
        }
        std::thread::spawn(move || std::io::copy(&mut err, &mut std::io::sink()));
        Capture { child }
    }

    /// Waits until packets `probe` makes reach the file: "Capturing on"
    /// comes before the capture really runs.
    fn wait_running(&self, file: &Path, mut probe: impl FnMut()) {
        let end = std::time::Instant::now() + Duration::from_secs(20);
        while std::fs::metadata(file).map(|m| m.len()).unwrap_or(0) <= 24 {
            assert!(std::time::Instant::now() < end, "tshark captures nothing");
            probe();
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGINT (tshark flushes the file) and wait.
    fn stop(mut self) {
        // SAFETY: signalling the tshark this test started.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `tshark -r file -Y filter EXTRA…` output lines.
fn tshark_read(file: &Path, filter: &str, extra: &[&str]) -> Vec<String> {
    let out = run(
        Command::new("tshark")
            .arg("-r")
            .arg(file)
            .args(["-Y", filter])
            .args(extra),
        Duration::from_secs(60),
    );
    assert!(out.status.success(), "tshark -Y {filter}: {out:?}");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn exec_ok(lab: &Lab, pod: &str, program: &str, args: &[&str]) -> String {
    let mut c = lab.exec(pod, program).unwrap();
    c.args(args);
    let out = run(&mut c, Duration::from_secs(60));
    assert!(
        out.status.success(),
        "{program} {args:?} in {pod}: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        lab.proxy_log(pod)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Every client from `from` to `to`'s address.
fn traffic(lab: &Lab, from: &str, to: &str) {
    let ip = lab.pod(to).ip;
    let url = format!("http://{ip}:8080/index.html?{MARKER}");
    let marker_header = format!("X-Marker: {MARKER}");
    let out = exec_ok(
        lab,
        from,
        "curl",
        &[
            "-sS",
            "--max-time",
            "10",
            "-H",
            &marker_header,
            &url,
            &url,
            &url,
        ],
    );
    assert_eq!(out, format!("hello from nginx in {to}\n").repeat(3));
    let h2 = format!("http://{ip}:8081/?{MARKER}");
    let out = exec_ok(
        lab,
        from,
        "curl",
        &["-sS", "--max-time", "10", "--http2-prior-knowledge", &h2],
    );
    assert_eq!(out, format!("hello from nginx in {to}\n"));
    let out = exec_ok(
        lab,
        from,
        "h2load",
        &["-n", "200", "-c", "2", "-m", "10", &h2],
    );
    assert!(out.contains("200 succeeded, 0 failed"), "{out}");
    let out = exec_ok(lab, from, "h2load", &["--h1", "-n", "100", "-c", "2", &url]);
    assert!(out.contains("100 succeeded, 0 failed"), "{out}");
    let grpc = peer("grpc_echo.py");
    let target = format!("{ip}:9090");
    let out = exec_ok(
        lab,
        from,
        "python3",
        &[
            grpc.to_str().unwrap(),
            "client",
            "--target",
            &target,
            "--messages",
            "20",
        ],
    );
    assert!(out.contains("\"bidi_ok\": 20"), "{out}");
    let ws = peer("ws_echo.py");
    let ws_url = format!("ws://{ip}:9091/echo");
    let out = exec_ok(
        lab,
        from,
        "python3",
        &[
            ws.to_str().unwrap(),
            "client",
            "--url",
            &ws_url,
            "--messages",
            "10",
            "--header",
            &marker_header,
        ],
    );
    assert!(out.contains("\"echoed\": 10"), "{out}");
    // Raw TCP, from a socket opened inside the pod (redirected as an app's).
    let mut s = connect_in(
        &lab.pod(from).netns,
        SocketAddr::from((ip, 9000)),
        Duration::from_secs(5),
    )
    .unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(format!("{MARKER} raw tcp\n").as_bytes())
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let mut back = String::new();
    s.read_to_string(&mut back).unwrap();
    assert_eq!(back, format!("echo: {MARKER} raw tcp\n"));
}

#[test]
fn clients_across_pods_both_ways_over_mtls_seen_on_the_bridge() {
    if !root_or_skip() {
        return;
    }
    let tmp = std::env::temp_dir().join(format!("pimesh-lab-e2e-{}", std::process::id()));
    let pods = vec![
        server_pod("a", &tmp.join("a")),
        server_pod("b", &tmp.join("b")),
    ];
    let mut lab = Lab::up(&pods, &bins(), &Options::default()).unwrap();
    let cap = tmp.join("bridge.pcap");
    let capture = Capture::start(&lab.bridge(), &cap);
    let ctl = SocketAddr::from((lab.controller_ip, 8085));
    capture.wait_running(&cap, || {
        let _ = connect_in(&lab.pod("a").netns, ctl, Duration::from_secs(1));
    });

    traffic(&lab, "a", "b");
    traffic(&lab, "b", "a");
    // Give the last segments time to be written, then stop.
    std::thread::sleep(Duration::from_millis(500));
    capture.stop();

    // Every edge crossed mTLS, counted on both sides.
    for (from, to) in [("a", "b"), ("b", "a")] {
        let out_m = lab.metrics(from).unwrap();
        let in_m = lab.metrics(to).unwrap();
        let ip = lab.pod(to).ip;
        for port in [8080, 8081, 9090, 9091] {
            let t = format!("{ip}:{port}");
            let mtls = [
                ("direction", "outbound"),
                ("target_addr", &t),
                ("tls", "true"),
            ];
            assert!(
                metrics::sum(&out_m, "request_total", &mtls) > 0.0,
                "{from}→{t}:\n{out_m}"
            );
        }
        let t = format!("{ip}:9000");
        let tcp = [
            ("direction", "outbound"),
            ("target_addr", &t),
            ("peer", "dst"),
            ("tls", "true"),
        ];
        assert_eq!(metrics::sum(&out_m, "tcp_open_total", &tcp), 1.0, "{out_m}");
        let g = metrics::Golden::of(&in_m, "inbound");
        assert!(
            g.requests >= 300.0 && g.tls_requests == g.requests,
            "{to}: {g:?}\n{in_m}"
        );
        let plain = [("direction", "inbound"), ("tls", "no_identity")];
        assert_eq!(metrics::sum(&in_m, "tcp_open_total", &plain), 0.0, "{in_m}");
    }
    lab.check().unwrap();

    // The bridge: a TLS ClientHello from each pod to each of the other's
    // ports (decoded as TLS whatever the port), and the reverse.
    let (a, b) = (lab.pod("a").ip, lab.pod("b").ip);
    let mut args = vec![
        "-T",
        "fields",
        "-e",
        "ip.src",
        "-e",
        "ip.dst",
        "-e",
        "tcp.dstport",
    ];
    let decode: Vec<String> = [8080, 8081, 9090, 9091, 9000]
        .iter()
        .map(|p| format!("tcp.port=={p},tls"))
        .collect();
    for d in &decode {
        args.extend(["-d", d.as_str()]);
    }
    let hellos = tshark_read(&cap, "tls.handshake.type == 1", &args);
    for (src, dst) in [(a, b), (b, a)] {
        for port in [8080, 8081, 9090, 9091, 9000] {
            let want = format!("{src}\t{dst}\t{port}");
            assert!(
                hellos.contains(&want),
                "no TLS ClientHello {src} → {dst}:{port} in\n{}",
                hellos.join("\n")
            );
        }
    }
    // Decoded as what the ports suggest (HTTP on 8080, …) nothing parses as
    // HTTP, but for the controller scraping each proxy's admin port (4191:
    // plaintext `GET /metrics` from the controller's .1, not the apps'
    // traffic; the lab scrapes every 2 s).
    let http = tshark_read(
        &cap,
        "(http || http2 || websocket || grpc) && !(tcp.port == 4191)",
        &[],
    );
    assert!(
        http.is_empty(),
        "plaintext on the bridge:\n{}",
        http.join("\n")
    );
    let raw = std::fs::read(&cap).unwrap();
    assert!(raw.len() > 10_000, "a capture of {} bytes", raw.len());
    for needle in [MARKER.as_bytes(), b"hello from nginx", b"echo: "] {
        assert!(
            !raw.windows(needle.len()).any(|w| w == needle),
            "{:?} crossed the bridge in clear",
            String::from_utf8_lossy(needle)
        );
    }
    drop(lab);
    let _ = std::fs::remove_dir_all(&tmp);
}
