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

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};

/// The comment that takes an import out of the graph.
pub const ALLOWED: &str = "import-cycle: allowed";

/// One file's use of a module in another file of the same crate.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Import {
    /// The importing file, relative to the workspace root.
    pub from: PathBuf,
    /// The file of the module the path names (its longest module prefix).
    pub to: PathBuf,
    /// 1-based line of the path's last segment in `from`.
    pub line: usize,
    /// The path as written, anchors included (`super::server::Ctx`).
    pub path: String,
    /// The line carries the [`ALLOWED`] comment.
    pub allowed: bool,
}

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

/// One crate root's modules.
struct Tree {
    /// Module path → its file and child module names.
    modules: HashMap<Vec<String>, Module>,
    /// Each file module's file and module path.
    files: Vec<(PathBuf, Vec<String>)>,
}

struct Module {
    file: PathBuf,
    children: BTreeSet<String>,
}

impl Tree {
    fn load(root: &Path, file: PathBuf) -> std::io::Result<Tree> {
        let mut tree = Tree {
            modules: HashMap::new(),
            files: Vec::new(),
        };
        let base = file.parent().unwrap_or(Path::new("")).to_path_buf();
        tree.add_file(root, file, Vec::new(), base)?;
        Ok(tree)
    }

    /// Adds the module in `file` at `path`, whose `mod a;` children live
    /// under `base`, and its descendants.
    fn add_file(
        &mut self,
        root: &Path,
        file: PathBuf,
        path: Vec<String>,
        base: PathBuf,
    ) -> std::io::Result<()> {
        let text = std::fs::read_to_string(root.join(&file))
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", file.display())))?;
        let toks = without_tests(tokens(&text));
        self.files.push((file.clone(), path.clone()));
        self.module(&path, &file);
        let dir = file.parent().unwrap_or(Path::new("")).to_path_buf();
        let mut inline: Vec<(String, usize)> = Vec::new();
        let (mut depth, mut attr_path) = (0, None);
        let mut i = 0;
        while i < toks.len() {
            match &toks[i].kind {
                Kind::Sym('{') => depth += 1,
                Kind::Sym('}') => {
                    depth -= 1;
                    if inline.last().is_some_and(|(_, d)| *d == depth) {
                        inline.pop();
                    }
                }
                Kind::Sym('#') => {
                    if let [_, Tok {
                        kind: Kind::Sym('['),
                        ..
                    }, Tok {
                        kind: Kind::Ident(p),
                        ..
                    }, Tok {
                        kind: Kind::Sym('='),
                        ..
                    }, Tok {
                        kind: Kind::Str(s), ..
                    }, ..] = &toks[i..]
                    {
                        if p == "path" {
                            attr_path = Some(s.clone());
                        }
                    }
                }
                Kind::Ident(m) if m == "mod" => {
                    if let [_, Tok {
                        kind: Kind::Ident(name),
                        ..
                    }, Tok {
                        kind: Kind::Sym(c), ..
                    }, ..] = &toks[i..]
                    {
                        let mut child = path.clone();
                        child.extend(inline.iter().map(|(n, _)| n.clone()));
                        let parent = child.clone();
                        child.push(name.clone());
                        self.module(&parent, &file).children.insert(name.clone());
                        let inner: PathBuf = inline.iter().map(|(n, _)| n.as_str()).collect();
                        match (c, attr_path.take()) {
                            ('{', _) => {
                                self.module(&child, &file);
                                inline.push((name.clone(), depth));
                            }
                            (';', Some(p)) => {
                                let f = dir.join(&inner).join(p);
                                let b = f.parent().unwrap_or(Path::new("")).to_path_buf();
                                self.add_file(root, f, child, b)?;
                            }
                            (';', None) => {
                                let b = base.join(&inner);
                                let flat = b.join(format!("{name}.rs"));
                                let (f, cb) = if root.join(&flat).exists() {
                                    (flat, b.join(name))
                                } else {
                                    (b.join(name).join("mod.rs"), b.join(name))
                                };
                                self.add_file(root, f, child, cb)?;
                            }
                            _ => {}
                        }
                    }
                }
                Kind::Sym(';') => attr_path = None,
                _ => {}
            }
            i += 1;
        }
        Ok(())
    }

    fn module(&mut self, path: &[String], file: &Path) -> &mut Module {
        self.modules.entry(path.to_vec()).or_insert_with(|| Module {
            file: file.to_path_buf(),
            children: BTreeSet::new(),
        })
    }

    /// The imports of `file`, the module at `path`, into other files.
    fn imports(&self, root: &Path, file: &Path, path: &[String]) -> std::io::Result<Vec<Import>> {
        let text = std::fs::read_to_string(root.join(file))?;
        let lines: Vec<&str> = text.lines().collect();
        let toks = without_tests(tokens(&text));
        let mut found = Vec::new();
        let mut here = path.to_vec();
        let mut inline: Vec<usize> = Vec::new();
        let mut depth = 0;
        // Names that `use` gave to modules of this crate.
        let mut aliases: HashMap<String, Vec<String>> = HashMap::new();
        let mut i = 0;
        while i < toks.len() {
            let prev = i.checked_sub(1).map(|p| &toks[p].kind);
            match &toks[i].kind {
                Kind::Sym('{') => depth += 1,
                Kind::Sym('}') => {
                    depth -= 1;
                    if inline.last() == Some(&depth) {
                        inline.pop();
                        here.pop();
                    }
                }
                Kind::Ident(m) if m == "mod" => {
                    if let [_, Tok {
                        kind: Kind::Ident(name),
                        ..
                    }, Tok {
                        kind: Kind::Sym('{'),
                        ..
                    }, ..] = &toks[i..]
                    {
                        here.push(name.clone());
                        inline.push(depth);
                        depth += 1;
                        i += 3;
                        continue;
                    }
                }
                Kind::Ident(u) if u == "use" => {
                    let mut leaves = Vec::new();
                    i = use_tree(&toks, i + 1, Vec::new(), &mut leaves);
                    for Leaf { segs, line, name } in leaves {
                        let Some(abs) = self.absolute(&here, &segs, &aliases) else {
                            continue;
                        };
                        // `use crate::a::{self}` or `use super::b as c`:
                        // a module named in later paths.
                        if let Some(name) = name.filter(|_| self.modules.contains_key(&abs)) {
                            aliases.insert(name, abs.clone());
                        }
                        found.extend(self.import(file, &abs, &segs, line, &lines));
                    }
                    continue;
                }
                Kind::Ident(first)
                    if !matches!(prev, Some(Kind::Colons) | Some(Kind::Sym('.')))
                        && !matches!(prev, Some(Kind::Ident(k)) if k == "in")
                        && matches!(toks.get(i + 1).map(|t| &t.kind), Some(Kind::Colons)) =>
                {
                    // A path in code: `first::a::b`, not `x::first` nor `in first`.
                    let mut segs = vec![first.clone()];
                    let mut j = i + 1;
                    while let (Some(Kind::Colons), Some(Kind::Ident(s))) = (
                        toks.get(j).map(|t| &t.kind),
                        toks.get(j + 1).map(|t| &t.kind),
                    ) {
                        segs.push(s.clone());
                        j += 2;
                    }
                    let line = toks[j - 1].line;
                    if let Some(abs) = self.absolute(&here, &segs, &aliases) {
                        found.extend(self.import(file, &abs, &segs, line, &lines));
                    }
                    i = j;
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
        Ok(found)
    }

    /// The absolute item path that `segs`, written in module `here`,
    /// names, if it starts in this crate: at `crate`, `self`, `super`, a
    /// child module of `here`, or a module name that a `use` made.
    fn absolute(
        &self,
        here: &[String],
        segs: &[String],
        aliases: &HashMap<String, Vec<String>>,
    ) -> Option<Vec<String>> {
        let (first, rest) = segs.split_first()?;
        let mut abs: Vec<String> = match first.as_str() {
            "crate" | "$crate" => Vec::new(),
            "self" => here.to_vec(),
            "super" => here[..here.len().checked_sub(1)?].to_vec(),
            name if self.modules.get(here)?.children.contains(name) => {
                let mut p = here.to_vec();
                p.push(name.to_string());
                p
            }
            name => aliases.get(name)?.clone(),
        };
        let mut rest = rest.iter().peekable();
        while rest.peek().is_some_and(|s| *s == "super") {
            abs.pop()?;
            rest.next();
        }
        abs.extend(rest.filter(|s| *s != "self").cloned());
        Some(abs)
    }

    /// The import of `file` that the item path `abs` (written as `segs`
    /// on `line`) makes, if its longest module prefix is in another file.
    fn import(
        &self,
        file: &Path,
        abs: &[String],
        segs: &[String],
        line: usize,
        lines: &[&str],
    ) -> Option<Import> {
        let module = (0..=abs.len())
            .rev()
            .find_map(|n| self.modules.get(&abs[..n]))?;
        let written: Vec<&str> = segs
            .iter()
            .map(String::as_str)
            .filter(|s| *s != "self" || segs.len() == 1)
            .collect();
        (module.file != file).then(|| Import {
            from: file.to_path_buf(),
            to: module.file.clone(),
            line,
            path: written.join("::"),
            allowed: lines
                .get(line.saturating_sub(1))
                .is_some_and(|l| l.contains(ALLOWED)),
        })
    }
}

/// One path of a use tree.
struct Leaf {
    segs: Vec<String>,
    /// 1-based line of its last segment.
    line: usize,
    /// The name it brings into scope: its `as` alias or last segment
    /// (`self` in braces names the prefix's last).
    name: Option<String>,
}

/// Expands the use tree at `i` (after `use`, or inside braces) below
/// `prefix` into its leaf paths; returns the index after it.
fn use_tree(toks: &[Tok], mut i: usize, mut prefix: Vec<String>, leaves: &mut Vec<Leaf>) -> usize {
    let mut line = toks.get(i).map_or(1, |t| t.line);
    let mut alias = None;
    let mut glob = false;
    while let Some(t) = toks.get(i) {
        match &t.kind {
            Kind::Ident(s) if s == "as" => {
                if let Some(Tok {
                    kind: Kind::Ident(a),
                    ..
                }) = toks.get(i + 1)
                {
                    alias = Some(a.clone());
                }
                i += 2;
            }
            Kind::Ident(s) => {
                prefix.push(s.clone());
                line = t.line;
                i += 1;
            }
            Kind::Colons => i += 1,
            Kind::Sym('*') => {
                glob = true;
                line = t.line;
                i += 1;
            }
            Kind::Sym('{') => {
                i += 1;
                while let Some(t) = toks.get(i) {
                    match t.kind {
                        Kind::Sym('}') => return i + 1,
                        Kind::Sym(',') => i += 1,
                        _ => i = use_tree(toks, i, prefix.clone(), leaves),
                    }
                }
                return i;
            }
            _ => break,
        }
    }
    if !prefix.is_empty() {
        let named = prefix.iter().rev().find(|s| *s != "self").cloned();
        let name = if glob { None } else { alias.or(named) };
        leaves.push(Leaf {
            segs: prefix,
            line,
            name,
        });
    }
    // Past the `;` that ends a whole `use`, not the `,` or `}` of a group.
    i + usize::from(matches!(toks.get(i).map(|t| &t.kind), Some(Kind::Sym(';'))))
}

#[derive(Debug, Clone)]
struct Tok {
    kind: Kind,
    line: usize,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Ident(String),
    Str(String),
    Colons,
    Sym(char),
}

/// Rust source as identifiers, string literals, `::` and other single
/// characters; comments, character literals and lifetimes' quotes dropped.
fn tokens(text: &str) -> Vec<Tok> {
    let c: Vec<char> = text.chars().collect();
    let mut out = Vec::new();
    let (mut i, mut line) = (0, 1);
    let at = |i: usize| c.get(i).copied().unwrap_or('\0');
    while i < c.len() {
        let ch = c[i];
        let start_line = line;
        if ch == '\n' {
            line += 1;
            i += 1;
        } else if ch.is_whitespace() {
            i += 1;
        } else if ch == '/' && at(i + 1) == '/' {
            while i < c.len() && c[i] != '\n' {
                i += 1;
            }
        } else if ch == '/' && at(i + 1) == '*' {
            let mut nest = 0;
            loop {
                match (at(i), at(i + 1)) {
                    ('\0', _) => break,
                    ('/', '*') => (nest, i) = (nest + 1, i + 2),
                    ('*', '/') => {
                        (nest, i) = (nest - 1, i + 2);
                        if nest == 0 {
                            break;
                        }
                    }
                    (ch, _) => {
                        line += usize::from(ch == '\n');
                        i += 1;
                    }
                }
            }
        } else if ch == '"' || ((ch == 'r' || ch == 'b') && raw_or_byte_string(&c, i).is_some()) {
            let (open, hashes) = if ch == '"' {
                (i, 0)
            } else {
                raw_or_byte_string(&c, i).unwrap_or((i, 0))
            };
            let raw = ch == 'r' || at(i + 1) == 'r';
            let mut s = String::new();
            i = open + 1;
            while i < c.len() {
                if c[i] == '\\' && !raw {
                    s.push(at(i + 1));
                    line += usize::from(at(i + 1) == '\n');
                    i += 2;
                    continue;
                }
                if c[i] == '"' && (0..hashes).all(|h| at(i + 1 + h) == '#') {
                    i += 1 + hashes;
                    break;
                }
                line += usize::from(c[i] == '\n');
                s.push(c[i]);
                i += 1;
            }
            out.push(Tok {
                kind: Kind::Str(s),
                line: start_line,
            });
        } else if ch == '\'' {
            if at(i + 1) == '\\' {
                i += 3; // the quote, the backslash and the escaped character
                while i < c.len() && c[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(i + 2) == '\'' {
                i += 3;
            } else {
                i += 1; // a lifetime: its name follows as an identifier
            }
        } else if ch.is_alphanumeric() || ch == '_' || (ch == '$' && at(i + 1).is_alphabetic()) {
            let s0 = i;
            i += 1;
            while i < c.len() && (c[i].is_alphanumeric() || c[i] == '_') {
                i += 1;
            }
            let word: String = c[s0..i].iter().collect();
            let word = word.strip_prefix("r#").map(str::to_string).unwrap_or(word);
            out.push(Tok {
                kind: Kind::Ident(word),
                line,
            });
        } else if ch == ':' && at(i + 1) == ':' {
            out.push(Tok {
                kind: Kind::Colons,
                line,
            });
            i += 2;
        } else {
            out.push(Tok {
                kind: Kind::Sym(ch),
                line,
            });
            i += 1;
        }
    }
    out
}

/// `toks` less the modules compiled for tests only (`#[cfg(test)] mod
/// a;` and `#[cfg(test)] mod a { … }`, other attributes between allowed):
/// a unit test's imports are not the crate's structure.
fn without_tests(toks: Vec<Tok>) -> Vec<Tok> {
    let is = |i: usize, k: &Kind| toks.get(i).is_some_and(|t| t.kind == *k);
    let word = |i: usize, w: &str| is(i, &Kind::Ident(w.to_string()));
    let cfg_test = |i: usize| {
        is(i, &Kind::Sym('#'))
            && is(i + 1, &Kind::Sym('['))
            && word(i + 2, "cfg")
            && is(i + 3, &Kind::Sym('('))
            && word(i + 4, "test")
            && is(i + 5, &Kind::Sym(')'))
            && is(i + 6, &Kind::Sym(']'))
    };
    // The index after the bracketed or braced group opening at `i`.
    let group_end = |mut i: usize, open: char, close: char| {
        let mut depth = 0;
        while let Some(t) = toks.get(i) {
            depth += i32::from(t.kind == Kind::Sym(open)) - i32::from(t.kind == Kind::Sym(close));
            i += 1;
            if depth == 0 {
                break;
            }
        }
        i
    };
    let mut out = Vec::with_capacity(toks.len());
    let mut i = 0;
    while i < toks.len() {
        if cfg_test(i) {
            let mut j = i + 7;
            while is(j, &Kind::Sym('#')) && is(j + 1, &Kind::Sym('[')) {
                j = group_end(j + 1, '[', ']');
            }
            if word(j, "pub") {
                j += 1;
                if is(j, &Kind::Sym('(')) {
                    j = group_end(j, '(', ')');
                }
            }
            if word(j, "mod") && matches!(toks.get(j + 1).map(|t| &t.kind), Some(Kind::Ident(_))) {
                if is(j + 2, &Kind::Sym(';')) {
                    i = j + 3;
                    continue;
                }
                if is(j + 2, &Kind::Sym('{')) {
                    i = group_end(j + 2, '{', '}');
                    continue;
                }
            }
        }
        out.push(toks[i].clone());
        i += 1;
    }
    out
}

/// For `r"`, `r#"`, `b"`, `br#"` at `i`: the index of the opening quote
/// and the number of `#`.
fn raw_or_byte_string(c: &[char], i: usize) -> Option<(usize, usize)> {
    let mut j = i + 1;
    if c[i] == 'b' && c.get(j) == Some(&'r') {
        j += 1;
    }
    let hashes = c[j..].iter().take_while(|&&h| h == '#').count();
    (c.get(j + hashes) == Some(&'"') && (c[i] == 'r' || j > i + 1 || hashes == 0))
        .then_some((j + hashes, hashes))
}

#[cfg(test)]
mod tests;
