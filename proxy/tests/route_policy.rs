//! Per-route policy (issue 16), against a real standalone controller and
//! real proxies: the sample `examples/policy/per-route.yaml` (a Server
//! with two `HTTPRoute`s as parents' children: `/public` open to every
//! client, `/admin` only to the MeshTLS identity shop/web) applied with
//! `pimesh apply -f`. shop/db gets 200 on /public and 403 on /admin,
//! shop/web 200 on both, a path no route matches 404 from the proxy; the
//! counters carry Linkerd's `route_group`/`route_kind`/`route_name` and
//! equal the answers the test saw.

mod support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use support::outbound::{Backend, ProxyClient};
use support::*;

const WEB: &str = "web.shop.serviceaccount.identity.pimesh.cluster.local";
const DB: &str = "db.shop.serviceaccount.identity.pimesh.cluster.local";

fn example(file: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/policy");
    std::fs::read_to_string(p.join(file)).unwrap()
}

/// The status of `GET {path}` to `dest` through a client proxy, and
/// whether the proxy itself answered (`pimesh-proxy-error`).
fn get(c: &mut ProxyClient, dest: SocketAddr, path: &str) -> (u16, bool) {
    match c.request("GET", &dest.to_string(), path, b"") {
        Ok(a) => (a.status, a.head.contains("pimesh-proxy-error")),
        Err(e) => panic!("GET {path}: {e}"),
    }
}

#[test]
fn a_servers_routes_each_authorize_their_own_clients() {
    let ctl = Controller::start(&[]);
    let dir = TempDir::new("route-policy");
    let app = Backend::start("api");
    let api = meshed_proxy(
        &ctl.proxy_env("shop/api"),
        &[
            ("PIMESH_PROXY_INBOUND_TARGET", &app.addr.to_string()),
            ("PIMESH_PROXY_POD_LABELS", "app=api"),
        ],
    );
    let dest: SocketAddr = "127.0.1.1:80".parse().unwrap();
    let dests = format!("{dest}=shop/api@{}", api.inbound);
    let web = meshed_proxy(
        &ctl.proxy_env("shop/web"),
        &[("PIMESH_PROXY_MESH_DESTINATIONS", &dests)],
    );
    let db = meshed_proxy(
        &ctl.proxy_env("shop/db"),
        &[("PIMESH_PROXY_MESH_DESTINATIONS", &dests)],
    );
    let (mut web_c, mut db_c) = (
        ProxyClient::new(web.outbound),
        ProxyClient::new(db.outbound),
    );

    // The sample, its Server on the app's port.
    let sample = example("per-route.yaml");
    assert!(sample.contains("port: 9990"), "{sample}");
    let yaml = format!(
        "{}---\n{}",
        sample.replace("port: 9990", &format!("port: {}", app.addr.port())),
        example("meshtls-authentication.yaml")
    );
    let file = dir.path().join("per-route.yaml");
    std::fs::write(&file, yaml).unwrap();
    ctl.cli(&["apply", "-f", &file.display().to_string()]);

    // Pushed to the running proxy (whole: routes, their policies and the
    // authentication they name).
    let pushed = eventually(Duration::from_secs(10), || {
        get(&mut db_c, dest, "/public").0 == 200
            && get(&mut db_c, dest, "/other").0 == 404
            && get(&mut web_c, dest, "/admin").0 == 200
    });
    assert!(pushed, "the routes' policy never applied:\n{}", api.log());
    let before = api.metrics();

    // (client, path) -> (status, answered by the proxy), as seen.
    let mut seen: BTreeMap<(&str, &str), Vec<(u16, bool)>> = BTreeMap::new();
    for _ in 0..3 {
        for (who, c) in [("db", &mut db_c), ("web", &mut web_c)] {
            for path in ["/public", "/public/x", "/admin", "/other"] {
                seen.entry((who, path))
                    .or_default()
                    .push(get(c, dest, path));
            }
        }
    }
    let statuses = |who, path| -> Vec<(u16, bool)> { seen[&(who, path)].clone() };
    assert_eq!(statuses("db", "/public"), [(200, false); 3]);
    assert_eq!(statuses("db", "/public/x"), [(200, false); 3]);
    assert_eq!(statuses("db", "/admin"), [(403, true); 3]);
    assert_eq!(statuses("web", "/public"), [(200, false); 3]);
    assert_eq!(statuses("web", "/admin"), [(200, false); 3]);
    // No route matches: the proxy's 404, the app never asked.
    assert_eq!(statuses("db", "/other"), [(404, true); 3]);
    assert_eq!(statuses("web", "/other"), [(404, true); 3]);

    // The counters grew by what the test saw, on the routes' labels.
    let after = api.metrics();
    let delta = |name: &str, labels: &[(&str, &str)]| {
        sum_metric(&after, name, labels) - sum_metric(&before, name, labels)
    };
    let server = [
        ("srv_group", "policy.pimesh.io"),
        ("srv_kind", "server"),
        ("srv_name", "api-ops"),
    ];
    let route = |name: &'static str| {
        [
            ("route_group", "gateway.networking.k8s.io"),
            ("route_kind", "HTTPRoute"),
            ("route_name", name),
        ]
    };
    let allow = "inbound_http_authz_allow_total";
    let labels = |client: &'static str, r: &'static str, authz: Option<&'static str>| {
        let mut l: Vec<(&str, &str)> = server.to_vec();
        l.extend(route(r));
        l.push(("client_id", client));
        if let Some(a) = authz {
            l.extend([
                ("authz_group", "policy.pimesh.io"),
                ("authz_kind", "authorizationpolicy"),
                ("authz_name", a),
            ]);
        }
        l
    };
    for (client, who) in [(DB, "db"), (WEB, "web")] {
        let public = statuses(who, "/public").len() + statuses(who, "/public/x").len();
        assert_eq!(
            delta(allow, &labels(client, "api-public", Some("api-public-all"))),
            public as f64,
            "{after}"
        );
    }
    let web_admin = statuses("web", "/admin").len() as f64;
    assert_eq!(
        delta(allow, &labels(WEB, "api-admin", Some("api-admin-web"))),
        web_admin,
        "{after}"
    );
    let db_admin = statuses("db", "/admin").len() as f64;
    let deny = "inbound_http_authz_deny_total";
    assert_eq!(
        delta(deny, &labels(DB, "api-admin", None)),
        db_admin,
        "{after}"
    );
    assert_eq!(delta(allow, &labels(DB, "api-admin", None)), 0.0, "{after}");
    // Only the routes' series moved: nothing on the default route.
    let default_route = [("srv_name", "api-ops"), ("route_kind", "default")];
    assert_eq!(delta(allow, &default_route), 0.0, "{after}");
    assert_eq!(delta(deny, &default_route), 0.0, "{after}");
    let not_found = "inbound_http_route_not_found_total";
    for (client, who) in [(DB, "db"), (WEB, "web")] {
        let mut l = server.to_vec();
        l.push(("client_id", client));
        assert_eq!(
            delta(not_found, &l),
            statuses(who, "/other").len() as f64,
            "{after}"
        );
    }
    println!(
        "per-route policy: {} requests; api's series:\n{}",
        seen.values().map(Vec::len).sum::<usize>(),
        after
            .lines()
            .filter(|l| l.starts_with("inbound_http_")
                && l.contains("api-ops")
                && !l.contains("route_kind=\"default\""))
            .collect::<Vec<_>>()
            .join("\n")
    );
}
