//! Text every pimesh binary reads or writes the same way: durations in
//! flags and variables, and error chains in messages.

use std::time::Duration;

/// A duration as linkerd2-proxy and kubectl write them: an integer and a
/// unit, one of `ms`, `s`, `m`, `h`, `d` (`500ms`, `10s`, `2m`, `24h`,
/// `30d`); a bare number is seconds. Zero is allowed: callers that need a
/// bound check it ([`parse_positive_duration`]). Large values saturate.
///
/// # Errors
///
/// A message naming the accepted forms (no sign, no fraction, no
/// other unit).
pub fn parse_duration(v: &str) -> Result<Duration, String> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| "not a duration such as 500ms, 10s, 2m, 24h or 30d".to_string())?;
    Ok(match unit.trim() {
        "ms" => Duration::from_millis(n),
        "" | "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n.saturating_mul(60)),
        "h" => Duration::from_secs(n.saturating_mul(3600)),
        "d" => Duration::from_secs(n.saturating_mul(24 * 3600)),
        other => return Err(format!("unknown unit {other:?} (use ms, s, m, h or d)")),
    })
}

/// [`parse_duration`], refusing zero.
///
/// # Errors
///
/// As [`parse_duration`]; "must be greater than zero".
pub fn parse_positive_duration(v: &str) -> Result<Duration, String> {
    match parse_duration(v)? {
        d if d.is_zero() => Err("must be greater than zero".into()),
        d => Ok(d),
    }
}

/// `error: source: source...` in one line, for logs and error messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        src = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("24h"), Ok(Duration::from_secs(86400)));
        assert_eq!(parse_duration("30d"), Ok(Duration::from_secs(30 * 86400)));
        assert_eq!(parse_duration("7"), Ok(Duration::from_secs(7)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        assert_eq!(
            parse_duration("99999999999999999999d").map(|_| ()),
            Err("not a duration such as 500ms, 10s, 2m, 24h or 30d".into())
        );
        assert_eq!(
            parse_duration(&format!("{}d", u64::MAX)),
            Ok(Duration::from_secs(u64::MAX))
        );
        for bad in ["-1s", "", "1y", "1.5s", "s", "1 s x"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
        assert!(parse_positive_duration("0ms").is_err());
        assert_eq!(parse_positive_duration("1ms"), Ok(Duration::from_millis(1)));
    }

    #[test]
    fn chains() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] std::io::Error);
        let e = Outer(std::io::Error::other("inner"));
        assert_eq!(error_chain(&e), "outer: inner");
    }
}
