//! Query strings of the API's `GET` routes (watch, tap, the operator API):
//! `key=value` pairs joined by `&`, values percent-encoded (RFC 3986
//! §2.1; `+` is a space, as HTML forms send it).

/// Decodes one query value: `%XX` escapes and `+` as a space.
///
/// `None` when an escape is cut short or not hex, or the bytes are not UTF-8.
pub fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_values() {
        assert_eq!(
            percent_decode("deploy%2Fweb+a").as_deref(),
            Some("deploy/web a")
        );
        assert_eq!(percent_decode("plain").as_deref(), Some("plain"));
        for bad in ["%", "%2", "%zz", "%ff"] {
            assert_eq!(percent_decode(bad), None, "{bad}");
        }
    }
}
