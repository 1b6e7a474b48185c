//! Unit tests of the controller configuration: defaults, env fallbacks, errors.

use super::*;
use clap::Parser;
use std::collections::HashMap;

#[derive(Parser)]
struct Cmd {
    #[command(flatten)]
    args: ControllerArgs,
}

fn cfg(argv: &[&str], env: &[(&'static str, &'static str)]) -> Result<Config, Error> {
    let mut full = vec!["pimesh"];
    full.extend_from_slice(argv);
    let cmd = Cmd::try_parse_from(full).unwrap();
    let env: HashMap<&str, &str> = env.iter().copied().collect();
    Config::from_args(&cmd.args, &env)
}

#[test]
fn defaults_follow_design() {
    let c = cfg(&["--standalone", "--data-dir", "/var/lib/pimesh"], &[]).unwrap();
    assert_eq!(c.proxy_addr.to_string(), "0.0.0.0:8086");
    assert_eq!(c.admin_addr.to_string(), "0.0.0.0:8085");
    assert_eq!(c.trust_domain, "cluster.local");
    assert_eq!(c.cert_lifetime, Duration::from_secs(24 * 3600));
    assert_eq!(c.data_dir, PathBuf::from("/var/lib/pimesh"));
    assert_eq!(c.import, None);
    assert_eq!(c.log, DEFAULT_LOG);
    assert_eq!(c.lease_ttl, Duration::from_secs(30));
    assert_eq!(c.max_watches, 4096);
}

#[test]
fn env_fallbacks_and_flags_win() {
    let env = [
        ("PIMESH_CONTROLLER_STANDALONE", "true"),
        ("PIMESH_CONTROLLER_DATA_DIR", "/env/dir"),
        ("PIMESH_CONTROLLER_CERT_LIFETIME", "10s"),
        ("PIMESH_CONTROLLER_TRUST_DOMAIN", "pi.lan"),
        ("PIMESH_CONTROLLER_PROXY_ADDR", "127.0.0.1:0"),
    ];
    let c = cfg(&[], &env).unwrap();
    assert!(c.standalone);
    assert_eq!(c.data_dir, PathBuf::from("/env/dir"));
    assert_eq!(c.cert_lifetime, Duration::from_secs(10));
    assert_eq!(c.trust_domain, "pi.lan");
    assert_eq!(c.proxy_addr.to_string(), "127.0.0.1:0");
    let c = cfg(&["--data-dir", "/flag", "--cert-lifetime", "2m"], &env).unwrap();
    assert_eq!(c.data_dir, PathBuf::from("/flag"));
    assert_eq!(c.cert_lifetime, Duration::from_secs(120));
}

#[test]
fn bad_values_name_the_flag_and_variable() {
    let base = ["--standalone", "--data-dir", "/d"];
    let bad = |extra: &[&str], env: &[(&'static str, &'static str)]| {
        let mut argv = base.to_vec();
        argv.extend_from_slice(extra);
        cfg(&argv, env).unwrap_err()
    };
    let e = bad(&["--cert-lifetime", "10 parsecs"], &[]);
    assert_eq!(
        (e.flag, e.value.as_str()),
        ("--cert-lifetime", "10 parsecs")
    );
    assert!(
        e.to_string().contains("PIMESH_CONTROLLER_CERT_LIFETIME"),
        "{e}"
    );
    let e = bad(&["--cert-lifetime", "500ms"], &[]);
    assert!(e.reason.contains("between"), "{e}");
    let e = bad(&[], &[("PIMESH_CONTROLLER_ADMIN_ADDR", "localhost")]);
    assert_eq!((e.flag, e.value.as_str()), ("--admin-addr", "localhost"));
    let e = bad(&["--trust-domain", "Cluster.Local"], &[]);
    assert_eq!(e.flag, "--trust-domain");
    let e = bad(&["--log", "pimesh=loud"], &[]);
    assert_eq!(e.flag, "--log");
    let e = bad(&["--issuer-pem", "/nonexistent/issuer.pem"], &[]);
    assert_eq!(e.flag, "--issuer-pem");
    assert!(e.reason.contains("cannot read"), "{e}");
    for v in ["0s", "1500ms", "2d", "soon"] {
        assert_eq!(bad(&["--lease-ttl", v], &[]).flag, "--lease-ttl", "{v}");
    }
    let e = bad(&[], &[("PIMESH_CONTROLLER_MAX_WATCHES", "0")]);
    assert_eq!((e.flag, e.value.as_str()), ("--max-watches", "0"));
    let ok = cfg(
        &["--standalone", "--data-dir", "/d", "--lease-ttl", "2s"],
        &[("PIMESH_CONTROLLER_MAX_WATCHES", "8")],
    )
    .unwrap();
    assert_eq!((ok.lease_ttl, ok.max_watches), (Duration::from_secs(2), 8));
    let e = cfg(&["--standalone"], &[]).unwrap_err();
    assert_eq!((e.flag, e.reason.as_str()), ("--data-dir", "required"));
    let e = cfg(&["--data-dir", "/d", "--namespace", "No_Such"], &[]).unwrap_err();
    assert_eq!((e.flag, e.value.as_str()), ("--namespace", "No_Such"));
    let e = cfg(
        &["--data-dir", "/d"],
        &[("PIMESH_CONTROLLER_STANDALONE", "maybe")],
    )
    .unwrap_err();
    assert_eq!((e.flag, e.value.as_str()), ("--standalone", "maybe"));
}

#[test]
fn own_ca_files_go_together() {
    let dir = pimesh_test_support::TempDir::new("cfg-pems");
    let file = dir.path().join("x.pem");
    std::fs::write(&file, "contents").unwrap();
    let f = file.to_str().unwrap();
    let base = ["--standalone", "--data-dir", "/d"];
    let with = |extra: &[&str]| {
        let mut argv = base.to_vec();
        argv.extend_from_slice(extra);
        cfg(&argv, &[])
    };
    let e = with(&["--trust-anchor-pem", f, "--issuer-pem", f]).unwrap_err();
    assert_eq!(e.flag, "--issuer-key-pem");
    let e = with(&["--issuer-key-pem", f]).unwrap_err();
    assert_eq!(e.flag, "--trust-anchor-pem");
    let c = with(&[
        "--trust-anchor-pem",
        f,
        "--issuer-pem",
        f,
        "--issuer-key-pem",
        f,
    ])
    .unwrap();
    let pems = c.import.unwrap();
    assert_eq!(pems.issuer_key, "contents");
    assert!(
        !format!("{pems:?}").contains("contents"),
        "keys are not printed"
    );
}

#[test]
fn durations() {
    assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
    assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
    assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
    assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
    assert!(parse_duration("-1s").is_err());
    assert!(parse_duration("").is_err());
    assert!(parse_duration("1y").is_err());
}

#[test]
fn kubernetes_mode_without_standalone() {
    let c = cfg(
        &["--data-dir", "/d", "--kubeconfig", "/k/config"],
        &[("PIMESH_CONTROLLER_NAMESPACE", "mesh")],
    )
    .unwrap();
    assert!(!c.standalone);
    assert_eq!(
        c.kubernetes,
        Some(crate::kube::Settings {
            kubeconfig: Some("/k/config".into()),
            namespace: "mesh".into(),
            webhook_addr: "0.0.0.0:8443".parse().unwrap(),
            proxy_image: format!("ghcr.io/pimesh/pimesh-proxy:{}", env!("CARGO_PKG_VERSION")),
            default_inbound_policy: pimesh_api::policy::DefaultPolicy::AllUnauthenticated,
            cluster_networks: pimesh_api::policy::DEFAULT_CLUSTER_NETWORKS
                .parse()
                .unwrap(),
        })
    );
    assert_eq!(c.cluster_domain, "cluster.local");
    let c = cfg(
        &["--data-dir", "/d", "--cluster-domain", "pi.lan"],
        &[("KUBECONFIG", "/a:/b")],
    )
    .unwrap();
    let k = c.kubernetes.unwrap();
    assert_eq!(k.kubeconfig.as_deref(), Some("/a:/b"));
    assert_eq!(c.cluster_domain, "pi.lan");
    let e = cfg(&["--data-dir", "/d", "--cluster-domain", "Bad_Domain"], &[]).unwrap_err();
    assert_eq!(e.flag, "--cluster-domain");
    let c = cfg(
        &["--standalone", "--data-dir", "/d"],
        &[("KUBECONFIG", "/x")],
    )
    .unwrap();
    assert_eq!(c.kubernetes, None);
}
