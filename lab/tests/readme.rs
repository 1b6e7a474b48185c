//! The READMEs as a new user follows them on a stock Debian 12: commands
//! that work on a root machine without sudo, a way to grpcio that Debian's
//! python3 accepts, the test runner and every package CI installs named.
//! (The quick start itself runs in CI as root and as `nobody` with
//! Debian's python3 and python3-grpcio: `.ci/run`, step "quick start".)

use std::path::{Path, PathBuf};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The lines inside fenced code blocks of `markdown`, with their numbers.
fn code_lines(markdown: &str) -> Vec<(usize, &str)> {
    let mut inside = false;
    let mut out = Vec::new();
    for (i, line) in markdown.lines().enumerate() {
        if line.trim_start().starts_with("```") {
            inside = !inside;
        } else if inside {
            out.push((i + 1, line));
        }
    }
    out
}

#[test]
fn commands_do_not_start_with_sudo() {
    let readmes = [
        "README.md",
        "benches/README.md",
        "images/README.md",
        "k3s/README.md",
        "ansible/README.md",
    ];
    let mut found = Vec::new();
    for path in readmes {
        let text = read(path);
        for (n, line) in code_lines(&text) {
            if line.trim_start().starts_with("sudo ") {
                found.push(format!("{path}:{n}: {line}"));
            }
        }
    }
    assert!(
        found.is_empty(),
        "commands a root machine without sudo cannot run (write them bare with `# as root`):\n{}",
        found.join("\n")
    );
}

#[test]
fn the_quick_start_says_how_to_get_grpcio_on_debian() {
    let readme = read("README.md");
    let quick =
        &readme[readme.find("## Quick start").unwrap()..readme.find("## The mesh lab").unwrap()];
    assert!(quick.contains("apt-get install python3-grpcio"), "{quick}");
    assert!(
        !quick.contains("python3 -m pip install grpcio`"),
        "pip into Debian's python3 fails: {quick}"
    );
    let script = read("examples/quickstart.sh");
    assert!(
        script.contains("apt-get install python3-grpcio"),
        "the script's hint"
    );
    // Its build shows cargo's progress: no quiet build.
    let build = script
        .lines()
        .find(|l| l.trim_start().starts_with("cargo build"))
        .unwrap();
    assert!(!build.contains(" -q"), "{build}");
}

#[test]
fn the_tests_section_names_the_runner_and_every_package_ci_installs() {
    let readme = read("README.md");
    assert!(
        readme.contains("cargo install cargo-nextest"),
        "how to get cargo-nextest"
    );
    let ci = read(".ci/run");
    let list = &ci[ci.find("readonly APT_PACKAGES=(").unwrap()..];
    let list = &list[..list.find(')').unwrap()];
    let packages: Vec<&str> = list
        .split_whitespace()
        .skip(2)
        .filter(|p| *p != "ca-certificates")
        .collect();
    assert!(packages.len() > 15, "{packages:?}");
    let missing: Vec<_> = packages
        .iter()
        .filter(|p| {
            !readme
                .split(|c: char| c.is_whitespace() || "`,()".contains(c))
                .any(|w| w == **p)
        })
        .collect();
    assert!(
        missing.is_empty(),
        "README.md does not name {missing:?}, which .ci/run installs"
    );
}
