//! The checker on small synthetic crates in a temporary directory.

use super::*;
use crate::TempDir;

/// Writes `files` (path under `root`, text) and returns `root`.
fn tree(dir: &TempDir, files: &[(&str, &str)]) -> PathBuf {
    for (path, text) in files {
        let p = dir.path().join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }
    dir.path().to_path_buf()
}

/// A crate `demo`: lib.rs declares `a` (with `a/inner.rs`), `b` and `c`
/// (at `c_impl.rs` by `#[path]`); `b_text` is `b.rs`.
fn demo(dir: &TempDir, b_text: &str) -> PathBuf {
    tree(
        dir,
        &[
            ("demo/Cargo.toml", "[package]\nname = \"demo\"\n"),
            (
                "demo/src/lib.rs",
                "mod a;\npub mod b;\n#[path = \"c_impl.rs\"]\nmod c;\npub use a::A;\n",
            ),
            (
                "demo/src/a.rs",
                "use crate::{b::B, c};\npub struct A(B);\nmod inner;\n",
            ),
            (
                "demo/src/a/inner.rs",
                "pub struct I;\nfn f() -> super::super::c::C { todo!() }\n",
            ),
            ("demo/src/b.rs", b_text),
            (
                "demo/src/c_impl.rs",
                "pub struct C;\nmod view {\n    use super::*;\n    \
                 use crate::a::inner::I; // import-cycle: allowed — C's view of I\n}\n\
                 #[cfg(test)]\n#[allow(unused)]\nmod tests {\n    use crate::a::A;\n}\n",
            ),
        ],
    )
}

fn files(c: &Cycle) -> Vec<String> {
    c.files.iter().map(|f| f.display().to_string()).collect()
}

#[test]
fn a_cycle_is_reported_with_its_imports() {
    let dir = TempDir::new("cycles");
    let b = "// use crate::c::C;\npub struct B;\nconst S: &str = \"crate::c::C\";\n\
             pub fn f() -> usize { let _ = '\"'; std::mem::size_of::<super::a::A>() }\n";
    let root = demo(&dir, b);
    let imports = crate_imports(&root, "demo").unwrap();
    let found = cycles(&imports);
    assert_eq!(found.len(), 1, "{found:#?}");
    assert_eq!(files(&found[0]), ["demo/src/a.rs", "demo/src/b.rs"]);
    let ties: Vec<(String, usize, &str)> = found[0]
        .imports
        .iter()
        .map(|i| (i.from.display().to_string(), i.line, i.path.as_str()))
        .collect();
    assert_eq!(
        ties,
        [
            ("demo/src/a.rs".into(), 1, "crate::b::B"),
            ("demo/src/b.rs".into(), 4, "super::a::A"),
        ]
    );
    // Neither the comment nor the string in b.rs is an import.
    assert!(!imports
        .iter()
        .any(|i| i.from.ends_with("b.rs") && i.path.contains("c::C")));
    // The #[path] module and `super::super` resolve; the allowed import is
    // kept but marked, and breaks the loop a/inner.rs ↔ c_impl.rs.
    let to_c = |from: &str| {
        imports
            .iter()
            .find(|i| i.from.ends_with(from) && i.to.ends_with("c_impl.rs"))
    };
    assert!(
        to_c("inner.rs").is_some() && to_c("a.rs").is_some(),
        "{imports:#?}"
    );
    let allowed: Vec<&Import> = imports.iter().filter(|i| i.allowed).collect();
    assert_eq!(allowed.len(), 1, "{allowed:#?}");
    assert!(allowed[0].to.ends_with("demo/src/a/inner.rs"));
}

#[test]
fn no_cycle_without_the_back_import() {
    let dir = TempDir::new("cycles");
    let root = demo(&dir, "pub struct B;\n");
    let imports = crate_imports(&root, "demo").unwrap();
    assert_eq!(cycles(&imports), [], "{imports:#?}");
    // The test module's import of a.rs is none of the crate's.
    assert!(!imports
        .iter()
        .any(|i| i.from.ends_with("c_impl.rs") && i.to.ends_with("a.rs")));
    // Without its comment the test module's import closes a loop.
    let mut marked = imports.clone();
    marked.iter_mut().for_each(|i| i.allowed = false);
    let found = cycles(&marked);
    assert_eq!(found.len(), 1);
    assert_eq!(
        files(&found[0]),
        ["demo/src/a/inner.rs", "demo/src/c_impl.rs"]
    );
}

#[test]
fn a_missing_module_file_is_an_error() {
    let dir = TempDir::new("cycles");
    let root = tree(
        &dir,
        &[
            ("demo/Cargo.toml", "[package]\n"),
            ("demo/src/lib.rs", "mod gone;\n"),
        ],
    );
    let e = crate_imports(&root, "demo").unwrap_err();
    assert!(e.to_string().contains("gone/mod.rs"), "{e}");
}
