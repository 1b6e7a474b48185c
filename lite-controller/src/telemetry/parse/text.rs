//! One line of the Prometheus text format 0.0.4 / OpenMetrics 1.0 text
//! (the exposition formats' ABNF): `name{label="value",...} value [timestamp]`,
//! label values with the `\\`, `\"` and `\n` escapes; `#` lines are comments
//! (`HELP`, `TYPE`, `EOF`).

use std::borrow::Cow;

/// A sample line.
#[derive(Debug, Clone, PartialEq)]
pub struct Line<'a> {
    /// Metric name (`request_total`, `response_latency_ms_bucket`).
    pub name: &'a str,
    /// Labels in order, values unescaped.
    pub labels: Vec<(&'a str, Cow<'a, str>)>,
    /// The value (`NaN`, `+Inf`, `-Inf` included).
    pub value: f64,
}

impl Line<'_> {
    /// The value of label `k`.
    pub fn label(&self, k: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(name, _)| *name == k)
            .map(|(_, v)| &**v)
    }
}

fn is_name_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c == b':'
}

fn is_name(c: u8) -> bool {
    is_name_start(c) || c.is_ascii_digit()
}

/// The sample on `line`, `Ok(None)` for a blank or comment line, or what
/// is wrong with it.
///
/// # Errors
///
/// What is wrong with the line: no metric name first, bad labels or escapes, no
/// value, a value or timestamp that is not a number, or text after them.
pub fn parse_line(line: &str) -> Result<Option<Line<'_>>, &'static str> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let b = line.as_bytes();
    if !is_name_start(b[0]) {
        return Err("a sample starts with a metric name");
    }
    let mut i = b.iter().position(|&c| !is_name(c)).unwrap_or(b.len());
    let name = &line[..i];
    let mut labels = Vec::new();
    if b.get(i) == Some(&b'{') {
        i += 1;
        loop {
            while b.get(i) == Some(&b' ') {
                i += 1;
            }
            if b.get(i) == Some(&b'}') {
                i += 1;
                break;
            }
            let start = i;
            if !b.get(i).is_some_and(|&c| is_name_start(c)) {
                return Err("a label name is expected");
            }
            while b.get(i).is_some_and(|&c| is_name(c)) {
                i += 1;
            }
            let key = &line[start..i];
            if b.get(i) != Some(&b'=') || b.get(i + 1) != Some(&b'"') {
                return Err("a label is name=\"value\"");
            }
            i += 2;
            let vstart = i;
            let mut escaped = false;
            loop {
                match b.get(i) {
                    None => return Err("a label value is not closed"),
                    Some(b'\\') => {
                        escaped = true;
                        i += 2;
                    }
                    Some(b'"') => break,
                    Some(_) => i += 1,
                }
            }
            let raw = line.get(vstart..i).ok_or("a label value is not closed")?;
            let value = if escaped {
                Cow::Owned(unescape(raw)?)
            } else {
                Cow::Borrowed(raw)
            };
            labels.push((key, value));
            i += 1;
            match b.get(i) {
                Some(b',') => i += 1,
                Some(b'}') => {
                    i += 1;
                    break;
                }
                _ => return Err("labels are separated by ','"),
            }
        }
    }
    let rest = line[i..].trim_start();
    if rest.len() == line.len() - i {
        return Err("a space must follow the name or the labels");
    }
    let mut parts = rest.split_ascii_whitespace();
    let value = parts.next().ok_or("a sample has a value")?;
    let value = parse_float(value).ok_or("the value is not a number")?;
    if let Some(ts) = parts.next() {
        ts.parse::<f64>()
            .map_err(|_| "the timestamp is not a number")?;
    }
    if parts.next().is_some() {
        return Err("unexpected text after the value");
    }
    Ok(Some(Line {
        name,
        labels,
        value,
    }))
}

fn unescape(raw: &str) -> Result<String, &'static str> {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('"') => out.push('"'),
            Some('n') => out.push('\n'),
            _ => return Err("unknown escape in a label value"),
        }
    }
    Ok(out)
}

/// A sample value as Go's `ParseFloat` reads it (`NaN`, `+Inf`, `-Inf` too).
pub fn parse_float(v: &str) -> Option<f64> {
    match v {
        "NaN" | "nan" => Some(f64::NAN),
        "+Inf" | "Inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        v => v.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn samples() {
        let l = parse_line(r#"request_total{a="x",b="1,2=3",c="q\"\\\n"} 7 1700000000000"#)
            .unwrap()
            .unwrap();
        assert_eq!(l.name, "request_total");
        assert_eq!(l.label("a"), Some("x"));
        assert_eq!(l.label("b"), Some("1,2=3"));
        assert_eq!(l.label("c"), Some("q\"\\\n"));
        assert_eq!(l.value, 7.0);
        let l = parse_line("up 1.5e3").unwrap().unwrap();
        assert!(l.labels.is_empty());
        assert_eq!(l.value, 1500.0);
        let l = parse_line(r#"x{le="+Inf",} +Inf"#).unwrap().unwrap();
        assert_eq!(l.label("le"), Some("+Inf"));
        assert!(l.value.is_infinite());
        assert!(parse_line("x{} NaN").unwrap().unwrap().value.is_nan());
        assert_eq!(parse_line("# EOF").unwrap(), None);
        assert_eq!(parse_line("   ").unwrap(), None);
        for bad in [
            "<html>",
            "x",
            "x{a=\"1\"}",
            "x{a=\"1} 2",
            "x{a=1} 2",
            "x{a=\"1\" b=\"2\"} 3",
            "x{a=\"\\q\"} 1",
            "x many",
            "x 1 2 3",
            "x 1 soon",
            "x{1=\"a\"} 1",
            "x{a=\"1\"}2",
            "é 1",
        ] {
            assert!(parse_line(bad).is_err(), "{bad}");
        }
    }
}
