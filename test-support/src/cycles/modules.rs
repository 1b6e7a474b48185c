//! A crate root's module tree (module path → file, as rustc maps them)
//! and the imports that each file's `use` trees and paths make.

use super::tokens::{tokens, without_tests, Kind, Tok};
use std::collections::{BTreeSet, HashMap};
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

/// One crate root's modules.
pub(super) struct Tree {
    /// Module path → its file and child module names.
    modules: HashMap<Vec<String>, Module>,
    /// Each file module's file and module path.
    pub(super) files: Vec<(PathBuf, Vec<String>)>,
}

struct Module {
    file: PathBuf,
    children: BTreeSet<String>,
}

impl Tree {
    pub(super) fn load(root: &Path, file: PathBuf) -> std::io::Result<Tree> {
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
    pub(super) fn imports(
        &self,
        root: &Path,
        file: &Path,
        path: &[String],
    ) -> std::io::Result<Vec<Import>> {
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
