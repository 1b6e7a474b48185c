//! Standalone mode's policy resources end to end against the real
//! controller: `pimesh apply -f examples/policy` (the YAML the Kubernetes
//! test dry-runs), `pimesh policy ls` with each resource applied or not and
//! why (a Server in conflict with an older one too), `pimesh delete -f`, an invalid document refused naming its field
//! with nothing stored, and the resources kept across a restart.

mod support;

use std::path::PathBuf;
use support::*;

fn examples(file: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples/policy")
        .join(file)
        .display()
        .to_string()
}

/// `pimesh policy ls`' rows as (KIND, NAME, STATUS).
fn rows(table: &str) -> Vec<(String, String, String)> {
    let mut lines = table.lines();
    let header = lines.next().unwrap();
    assert!(header.starts_with("KIND"), "{table}");
    lines
        .map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols[0].into(), cols[2].into(), cols[3..].join(" "))
        })
        .collect()
}

#[test]
fn apply_ls_delete_and_a_missing_server_reported() {
    let dir = TempDir::new("policy-apply");
    let mut ctl = Controller::start(&dir.path().join("data"), &[]);

    let out = ctl.cli_ok(&["apply", "-f", &examples("")]);
    let mut lines: Vec<&str> = out.lines().collect();
    lines.sort();
    assert_eq!(
        lines,
        [
            "authorizationpolicy.policy.pimesh.io/api-admin-web created",
            "authorizationpolicy.policy.pimesh.io/api-public-all created",
            "authorizationpolicy.policy.pimesh.io/api-web-only created",
            "httplocalratelimitpolicy.policy.pimesh.io/api-rate-limit created",
            "httproute.gateway.networking.k8s.io/api-admin created",
            "httproute.gateway.networking.k8s.io/api-public created",
            "meshtlsauthentication.policy.pimesh.io/web-only created",
            "networkauthentication.policy.pimesh.io/cluster-network created",
            "server.policy.pimesh.io/api-http created",
            "server.policy.pimesh.io/api-ops created",
        ]
    );
    let ls = rows(&ctl.cli_ok(&["policy", "ls"]));
    assert_eq!(ls.len(), 10, "{ls:?}");
    assert!(ls.iter().all(|(_, _, s)| s == "applied"), "{ls:?}");
    let again = ctl.cli_ok(&["apply", "-f", &examples("server.yaml")]);
    assert_eq!(again.trim(), "server.policy.pimesh.io/api-http unchanged");

    // A younger Server with the same selector and port: the older keeps
    // the port (though the younger's name sorts first) and the younger is
    // reported, naming it. Times are stored to the second.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let late = dir.path().join("late.yaml");
    std::fs::write(
        &late,
        std::fs::read_to_string(examples("server.yaml"))
            .unwrap()
            .replace("name: api-http", "name: a-late"),
    )
    .unwrap();
    let late = late.display().to_string();
    ctl.cli_ok(&["apply", "-f", &late]);
    let ls = rows(&ctl.cli_ok(&["policy", "ls"]));
    let status = |name: &str| ls.iter().find(|(_, n, _)| n == name).unwrap().2.clone();
    assert_eq!(
        status("a-late"),
        "not applied: Conflict: port 8080 of every pod it selects is already Server \
         shop/api-http's, older (the oldest Server on a port wins)"
    );
    assert_eq!(status("api-http"), "applied");
    ctl.cli_ok(&["delete", "-f", &late]);

    // The Server gone: the policies naming it are not applied, and say why.
    let out = ctl.cli_ok(&["delete", "-f", &examples("server.yaml")]);
    assert_eq!(out.trim(), "server.policy.pimesh.io/api-http deleted");
    let ls = rows(&ctl.cli_ok(&["policy", "ls"]));
    assert_eq!(ls.len(), 9, "{ls:?}");
    for (kind, name, status) in &ls {
        let want = match (kind.as_str(), name.as_str()) {
            ("AuthorizationPolicy", "api-web-only") | ("HTTPLocalRateLimitPolicy", _) => {
                "not applied: Server shop/api-http not found"
            }
            // Per-route policy: on api-ops' routes.
            _ => "applied",
        };
        assert_eq!(status, want, "{kind} {name}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&ctl.cli_ok(&["policy", "ls", "-o", "json"])).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 9);
    // Deleting what is not there: the controller's 404, exit 1.
    let gone = ctl.cli(&["delete", "-f", &examples("server.yaml")]);
    assert_eq!(gone.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&gone.stderr).contains("not found"));

    // An invalid document: refused naming the file, document and field;
    // the valid one before it in the same file is not stored either.
    let bad = dir.path().join("bad.yaml");
    let server = std::fs::read_to_string(examples("server.yaml")).unwrap();
    let net = std::fs::read_to_string(examples("network-authentication.yaml"))
        .unwrap()
        .replace("10.43.0.0/16", "10.43.0.1/16");
    std::fs::write(&bad, format!("{server}---\n{net}")).unwrap();
    let refused = ctl.cli(&["apply", "-f", &bad.display().to_string()]);
    assert_eq!(refused.status.code(), Some(1));
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(
        err.contains("document 2 (NetworkAuthentication cluster-network)")
            && err.contains("spec.networks[1].cidr"),
        "{err}"
    );
    assert_eq!(rows(&ctl.cli_ok(&["policy", "ls"])).len(), 9);
    // The API refuses it too (422, the field named), for clients other
    // than the CLI.
    let doc: serde_json::Value = serde_saphyr::from_str(&net).unwrap();
    let (status, body) = http1(ctl.admin, "POST", "/v1/policies", &doc.to_string());
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("spec.networks[1].cidr"), "{body}");

    // Kept across a restart.
    let before = ctl.cli_ok(&["policy", "ls"]);
    let ctl = ctl.restart();
    assert_eq!(ctl.cli_ok(&["policy", "ls"]), before);
}
