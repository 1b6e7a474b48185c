//! The workspace's Rust files must not import each other in loops: every
//! crate's `src/` is scanned (`pimesh_test_support::cycles`), and the
//! cycles found must be exactly those of `tests/known_cycles.txt` (one a
//! line, its files sorted and space-separated), which lists the cycles
//! still being taken apart. A new cycle fails, naming the imports that tie
//! it; a cycle that is gone fails too, until its line is deleted. An import
//! that must stay in a loop carries `// import-cycle: allowed — <reason>`.

use pimesh_test_support::cycles::{crate_imports, cycles};
use std::collections::BTreeSet;
use std::fmt::Write;
use std::path::Path;

/// The crates scanned, as folders of the workspace.
const CRATES: [&str; 6] = [
    "api",
    "proxy",
    "lite-controller",
    "lab",
    "benches",
    "test-support",
];

#[test]
fn no_import_cycles_but_the_known_ones() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    let root = here.parent().expect("the workspace root");
    let mut found = Vec::new();
    for krate in CRATES {
        let imports = crate_imports(root, krate).unwrap_or_else(|e| panic!("{krate}: {e}"));
        found.extend(cycles(&imports));
    }
    let list = here.join("tests/known_cycles.txt");
    let text = std::fs::read_to_string(&list).unwrap_or_else(|e| panic!("{}: {e}", list.display()));
    let known: BTreeSet<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let mut problems = String::new();
    for c in found.iter().filter(|c| !known.contains(c.key().as_str())) {
        let _ = writeln!(problems, "new import cycle: {}", c.key());
        for i in &c.imports {
            let _ = writeln!(
                problems,
                "  {}:{} {} -> {}",
                i.from.display(),
                i.line,
                i.path,
                i.to.display()
            );
        }
    }
    let keys: BTreeSet<String> = found.iter().map(|c| c.key()).collect();
    for k in known.iter().filter(|k| !keys.contains(**k)) {
        let _ = writeln!(
            problems,
            "gone (delete its line from {}): {k}",
            list.display()
        );
    }
    assert!(
        problems.is_empty(),
        "{problems}\nbreak a new cycle, or mark an import that must stay with \
         `// import-cycle: allowed — <reason>`"
    );
}
