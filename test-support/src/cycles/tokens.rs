//! Rust source as tokens, enough to read `mod`, `use` and paths:
//! identifiers, strings, `::` and single characters.

#[derive(Debug, Clone)]
pub(super) struct Tok {
    pub(super) kind: Kind,
    pub(super) line: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub(super) enum Kind {
    Ident(String),
    Str(String),
    Colons,
    Sym(char),
}

/// Rust source as identifiers, string literals, `::` and other single
/// characters; comments, character literals and lifetimes' quotes dropped.
pub(super) fn tokens(text: &str) -> Vec<Tok> {
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
pub(super) fn without_tests(toks: Vec<Tok>) -> Vec<Tok> {
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
