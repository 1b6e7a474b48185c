//! `pimesh-proxy --help` as a new user reads it: it says the proxy is
//! configured by `PIMESH_PROXY_*` variables and names real ones; and every
//! variable the proxy reads is documented in the README.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

/// The `PIMESH_PROXY_*` names in `text`.
fn variables(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("PIMESH_PROXY_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        // `PIMESH_PROXY_*` (the family) is not a variable.
        if name.len() > "PIMESH_PROXY_".len() {
            out.insert(name);
        }
    }
    out
}

/// The variables the proxy's source names (its unit tests excluded).
fn read_by_source(dir: &Path, out: &mut BTreeSet<String>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            read_by_source(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") && !path.ends_with("tests.rs") {
            out.extend(variables(&std::fs::read_to_string(&path).unwrap()));
        }
    }
}

#[test]
fn help_says_the_proxy_is_configured_by_its_environment() {
    let out = Command::new(env!("CARGO_BIN_EXE_pimesh-proxy"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let help = String::from_utf8(out.stdout).unwrap();
    assert!(help.contains("PIMESH_PROXY_* environment"), "{help}");
    assert!(help.contains("README.md"), "{help}");
    for port in ["4143", "4140", "4191", "4190"] {
        assert!(help.contains(port), "no port {port} in\n{help}");
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut source = BTreeSet::new();
    read_by_source(&root.join("src"), &mut source);
    let named = variables(&help);
    assert!(named.len() >= 5, "{help}");
    let unknown: Vec<_> = named.difference(&source).collect();
    assert!(
        unknown.is_empty(),
        "--help names variables the proxy does not read: {unknown:?}"
    );
}

#[test]
fn every_variable_the_proxy_reads_is_in_the_readme() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut source = BTreeSet::new();
    read_by_source(&root.join("src"), &mut source);
    assert!(source.len() > 30, "{source:?}");
    let readme = std::fs::read_to_string(root.join("../README.md")).unwrap();
    let missing: Vec<_> = source
        .iter()
        .filter(|v| !readme.contains(&format!("`{v}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md does not document {missing:?} (write each name whole, in backticks)"
    );
}
