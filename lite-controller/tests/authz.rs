//! `pimesh authz` end to end: a real controller streams a Server, a
//! MeshTLSAuthentication admitting only shop/web and an AuthorizationPolicy
//! (applied with `pimesh apply -f`) to a real `pimesh-proxy` in front of
//! shop/api, and scrapes it every second; shop/web's requests are allowed,
//! shop/db's denied, and `pimesh authz deploy/api -n shop` shows both
//! counts on the Server's rows. An unknown workload, an unknown resource
//! kind and an unreachable controller are clear errors.

#[path = "support/mesh.rs"]
mod mesh;
mod support;

use mesh::{App, Proxy};
use pimesh_test_support::free_port;
use serde_json::Value;
use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;
use support::{eventually, Controller, TempDir};

fn policy_yaml(app_port: u16) -> String {
    format!(
        "apiVersion: policy.pimesh.io/v1alpha1
kind: Server
metadata:
  namespace: shop
  name: api-http
spec:
  podSelector:
    matchLabels:
      app: api
  port: {app_port}
---
apiVersion: policy.pimesh.io/v1alpha1
kind: MeshTLSAuthentication
metadata:
  namespace: shop
  name: web-only
spec:
  identities:
    - web.shop.serviceaccount.identity.pimesh.cluster.local
---
apiVersion: policy.pimesh.io/v1alpha1
kind: AuthorizationPolicy
metadata:
  namespace: shop
  name: api-web-only
spec:
  targetRef:
    group: policy.pimesh.io
    kind: Server
    name: api-http
  requiredAuthenticationRefs:
    - group: policy.pimesh.io
      kind: MeshTLSAuthentication
      name: web-only
"
    )
}

/// The status of `GET http://dest/` through the proxy whose outbound
/// listener is `via`.
fn get_via(via: SocketAddr, dest: SocketAddr) -> String {
    let out = Command::new("curl")
        .args([
            "-s",
            "-m",
            "10",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-x",
        ])
        .arg(format!("http://{via}"))
        .arg(format!("http://{dest}/"))
        .output()
        .expect("curl");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// The row of `rows` whose AUTHORIZATION is `authz` (`None`: denials) on
/// Server `api-http`.
fn row<'a>(rows: &'a Value, authz: Option<&str>) -> Option<&'a Value> {
    rows.as_array()?
        .iter()
        .find(|r| r["server_name"] == "api-http" && r["authz_name"].as_str() == authz)
}

#[test]
fn authz_shows_allowed_and_denied_requests_per_server_and_authorization() {
    let data = TempDir::new("authz");
    let api_admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let ctl = Controller::start(
        data.path(),
        &[
            "--scrape-interval",
            "1s",
            "--scrape-target",
            &api_admin.to_string(),
        ],
    );
    let anchors = data.path().join("anchors.pem");
    std::fs::write(&anchors, ctl.anchors_pem()).unwrap();
    let meshed = |identity: &str, extra: &[(&str, &str)]| {
        let token = data
            .path()
            .join(format!("{}.token", identity.replace('/', "_")));
        std::fs::write(&token, ctl.token(identity, "1h")).unwrap();
        let mut e = env(&[
            ("PIMESH_PROXY_CONTROLLER_ADDR", &ctl.proxy.to_string()),
            ("PIMESH_PROXY_TRUST_ANCHORS", anchors.to_str().unwrap()),
            ("PIMESH_PROXY_TOKEN_FILE", token.to_str().unwrap()),
            ("PIMESH_PROXY_IDENTITY", identity),
        ]);
        e.extend(env(extra));
        e
    };
    let app = App::start(Duration::ZERO, None);
    let api = Proxy::start(
        api_admin,
        &meshed(
            "shop/api",
            &[
                ("PIMESH_PROXY_INBOUND_TARGET", &app.addr.to_string()),
                ("PIMESH_PROXY_POD_LABELS", "app=api"),
                (
                    "PIMESH_PROXY_WORKLOAD_LABELS",
                    "namespace=shop,deployment=api,pod=api-1",
                ),
            ],
        ),
    );
    let dests = format!("{}=shop/api@{}", app.addr, api.inbound);
    let client = |identity: &str| {
        let admin = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        Proxy::start(
            admin,
            &meshed(identity, &[("PIMESH_PROXY_MESH_DESTINATIONS", &dests)]),
        )
    };
    let (web, db) = (client("shop/web"), client("shop/db"));

    let file = data.path().join("policy.yaml");
    std::fs::write(&file, policy_yaml(app.addr.port())).unwrap();
    ctl.cli_ok(&["apply", "-f", &file.display().to_string()]);
    // Every 403 is a denial the Server counted.
    let mut denied = 0;
    let refused = eventually(Duration::from_secs(10), || {
        let code = get_via(db.outbound, app.addr);
        denied += u64::from(code == "403");
        code == "403"
    });
    assert!(refused, "shop/db still admitted:\n{}", api.log());
    for _ in 0..2 {
        assert_eq!(get_via(db.outbound, app.addr), "403");
        denied += 1;
    }
    for _ in 0..3 {
        assert_eq!(get_via(web.outbound, app.addr), "200", "{}", api.log());
    }

    // Scraped within a second or two; bounded.
    let args = [
        "authz",
        "deploy/api",
        "-n",
        "shop",
        "-t",
        "1m",
        "-o",
        "json",
    ];
    let mut last = Value::Null;
    let seen = eventually(Duration::from_secs(20), || {
        // Until its first scrape the workload is unknown (exit 1).
        let out = ctl.cli(&args);
        if !out.status.success() {
            return false;
        }
        last = serde_json::from_slice(&out.stdout).unwrap();
        let allowed = row(&last, Some("api-web-only")).map(|r| r["allowed"].clone());
        let refused = row(&last, None).map(|r| r["denied"].clone());
        allowed == Some(3.into()) && refused == Some(denied.into())
    });
    assert!(seen, "{denied} denials, 3 allowed; authz shows {last:#}");
    let allowed = row(&last, Some("api-web-only")).unwrap();
    assert_eq!(allowed["authz_kind"], "authorizationpolicy");
    assert_eq!(allowed["denied"], 0);
    assert_eq!(allowed["protocol"], "http");
    assert!(allowed["allowed_rate"].as_f64().unwrap() > 0.0, "{last:#}");
    assert!(row(&last, None).unwrap()["denied_rate"].as_f64().unwrap() > 0.0);

    // The table, as `linkerd viz authz`.
    let table = ctl.cli_ok(&["authz", "deploy/api", "-n", "shop"]);
    let lines: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        lines[0],
        [
            "ROUTE",
            "SERVER",
            "AUTHORIZATION",
            "UNAUTHORIZED",
            "RPS",
            "ALLOWED",
            "DENIED"
        ],
        "{table}"
    );
    let find = |cols: &[&str]| lines.iter().any(|l| l.starts_with(cols));
    let allowed_row = [
        "default",
        "api-http",
        "authorizationpolicy/api-web-only",
        "0.0rps",
    ];
    assert!(find(&allowed_row), "{table}");
    assert!(
        lines.iter().any(|l| l[..2] == ["default", "api-http"]
            && l.len() == 6
            && l[4..] == ["0", &denied.to_string()[..]]),
        "the denials' row (empty AUTHORIZATION): {table}"
    );

    // Errors: no such workload, no such kind, no controller.
    let out = ctl.cli(&["authz", "deploy/nope", "-n", "shop"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("deploy/nope not found in namespace \"shop\""),
        "{err}"
    );
    let out = ctl.cli(&["authz", "bogus/api"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown resource \"bogus\""));
    let closed = format!("http://127.0.0.1:{}", free_port());
    let out = support::pimesh(&["authz", "deploy/api", "--controller", &closed]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cannot reach the controller"), "{err}");
}
