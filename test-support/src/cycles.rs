//! The import-cycle checker: file → file imports of a crate's `src/`
//! (`use` trees and paths in code starting with `crate::`, `super::`,
//! `self::` or a child module's name), and the files that import each
//! other in a loop (strongly connected components, Tarjan 1972).
//!
//! Modules map to files as rustc maps them: `mod a;` in a root or
//! `mod.rs` file is `a.rs` or `a/mod.rs` beside it, in any other `x.rs`
//! it is `x/a.rs` or `x/a/mod.rs`; `#[path = "p"]` is relative to the
//! declaring file's folder, and a file loaded so places its own children
//! like a `mod.rs`. Inline `mod a { … }` stays in its file. Modules for
//! tests only (`#[cfg(test)]`) are left out, as farm-studio leaves tests
//! out. An import whose line carries `// import-cycle: allowed —
//! <reason>` is no edge.
//!
//! Layout: `modules` (a root's module tree and each file's imports),
//! `tokens` (Rust source as the tokens those need), `tests`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

mod modules;
mod tokens;

use modules::Tree;
pub use modules::{Import, ALLOWED};

/// Files that import each other in a loop, and the imports that tie them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cycle {
    /// Two or more, sorted as text.
    pub files: Vec<PathBuf>,
    /// The imports between files of the cycle.
    pub imports: Vec<Import>,
}

impl Cycle {
    /// `a.rs b.rs …`: the files, space-separated (a `known_cycles.txt` line).
    pub fn key(&self) -> String {
        let names: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        names.join(" ")
    }
}

/// The imports of crate folder `krate` (relative to `root`, e.g. `proxy`):
/// its roots are `src/lib.rs`, `src/main.rs` and every `path = "src/….rs"`
/// of its Cargo.toml (binaries), each with its own module tree.
///
/// # Errors
///
/// A file that cannot be read: a root, or a declared module's file
/// (missing as `a.rs` and as `a/mod.rs`).
pub fn crate_imports(root: &Path, krate: &str) -> std::io::Result<Vec<Import>> {
    let dir = Path::new(krate);
    let mut roots = vec![dir.join("src/lib.rs"), dir.join("src/main.rs")];
    let manifest = std::fs::read_to_string(root.join(dir).join("Cargo.toml"))?;
    for line in manifest.lines() {
        if let Some(p) = line.trim().strip_prefix("path = \"src/") {
            if let Some(p) = p.strip_suffix(".rs\"") {
                roots.push(dir.join(format!("src/{p}.rs")));
            }
        }
    }
    roots.dedup();
    let mut imports = BTreeSet::new();
    for r in roots.into_iter().filter(|r| root.join(r).exists()) {
        let tree = Tree::load(root, r)?;
        for (file, module) in &tree.files {
            imports.extend(tree.imports(root, file, module)?);
        }
    }
    Ok(imports.into_iter().collect())
}

/// The cycles of `imports` (allowed ones left out), sorted by their files.
pub fn cycles(imports: &[Import]) -> Vec<Cycle> {
    let edges: Vec<&Import> = imports.iter().filter(|i| !i.allowed).collect();
    let mut next: BTreeMap<&Path, BTreeSet<&Path>> = BTreeMap::new();
    for i in &edges {
        next.entry(&i.from).or_default().insert(&i.to);
        next.entry(&i.to).or_default();
    }
    let mut found: Vec<Cycle> = tarjan(&next)
        .into_iter()
        .filter(|c| c.len() > 1)
        .map(|mut files| {
            // As text (`a.rs` before `a/b.rs`), as `sort` orders the lines.
            files.sort_by_key(|f| f.to_string_lossy().into_owned());
            let imports = edges
                .iter()
                .filter(|i| files.contains(&i.from.as_path()) && files.contains(&i.to.as_path()))
                .map(|i| (*i).clone())
                .collect();
            Cycle {
                files: files.into_iter().map(Path::to_path_buf).collect(),
                imports,
            }
        })
        .collect();
    found.sort_by_key(Cycle::key);
    found
}

/// Strongly connected components (Tarjan's algorithm, iterative).
fn tarjan<'a>(next: &BTreeMap<&'a Path, BTreeSet<&'a Path>>) -> Vec<Vec<&'a Path>> {
    let nodes: Vec<&Path> = next.keys().copied().collect();
    let id: HashMap<&Path, usize> = nodes.iter().enumerate().map(|(i, n)| (*n, i)).collect();
    let succ: Vec<Vec<usize>> = nodes
        .iter()
        .map(|n| next[n].iter().map(|m| id[m]).collect())
        .collect();
    let (mut index, mut low) = (vec![usize::MAX; nodes.len()], vec![0; nodes.len()]);
    let (mut on_stack, mut stack, mut out) = (vec![false; nodes.len()], Vec::new(), Vec::new());
    let mut counter = 0;
    for start in 0..nodes.len() {
        if index[start] != usize::MAX {
            continue;
        }
        // (node, next successor to visit)
        let mut work = vec![(start, 0)];
        while let Some(&mut (v, ref mut k)) = work.last_mut() {
            if *k == 0 && index[v] == usize::MAX {
                (index[v], low[v]) = (counter, counter);
                counter += 1;
                stack.push(v);
                on_stack[v] = true;
            }
            if let Some(&w) = succ[v].get(*k) {
                *k += 1;
                if index[w] == usize::MAX {
                    work.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            work.pop();
            if let Some(&(u, _)) = work.last() {
                low[u] = low[u].min(low[v]);
            }
            if low[v] == index[v] {
                let mut scc = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    scc.push(nodes[w]);
                    if w == v {
                        break;
                    }
                }
                out.push(scc);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
