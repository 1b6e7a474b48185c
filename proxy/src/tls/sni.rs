//! The server name (SNI, RFC 6066 §3) of a TLS ClientHello read from the
//! first bytes of a connection, without consuming them: the inbound side
//! terminates TLS addressed to its own identity and passes any other TLS
//! through untouched, as linkerd2-proxy does.

/// What the buffered bytes tell.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// The ClientHello is not complete yet: read more.
    Incomplete,
    /// A complete ClientHello, with its SNI host name if it sent one.
    ServerName(Option<String>),
    /// Not a well-formed TLS ClientHello.
    Invalid,
}

/// Parses the ClientHello (RFC 8446 §4.1.2) in the first TLS record of `buf`.
pub fn parse(buf: &[u8]) -> Parsed {
    // Record: type(1)=22, version(2), length(2).
    if buf.len() < 5 {
        return Parsed::Incomplete;
    }
    if buf[0] != 22 {
        return Parsed::Invalid;
    }
    let record_len = u16::from_be_bytes([buf[3], buf[4]]) as usize;
    let Some(record) = buf.get(5..5 + record_len) else {
        return Parsed::Incomplete;
    };
    match client_hello_sni(record) {
        Some(sni) => Parsed::ServerName(sni),
        None => Parsed::Invalid,
    }
}

/// A cursor over a byte slice whose reads fail at the end instead of panicking.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u8(&mut self) -> Option<usize> {
        Some(self.take(1)?[0] as usize)
    }

    fn u16(&mut self) -> Option<usize> {
        let b = self.take(2)?;
        Some(u16::from_be_bytes([b[0], b[1]]) as usize)
    }

    fn u24(&mut self) -> Option<usize> {
        let b = self.take(3)?;
        Some(((b[0] as usize) << 16) | ((b[1] as usize) << 8) | b[2] as usize)
    }

    /// A sub-reader over a length-prefixed block.
    fn block(&mut self, len: usize) -> Option<Reader<'a>> {
        Some(Reader(self.take(len)?))
    }
}

/// `Some(sni)` for a ClientHello handshake message, `None` if malformed.
/// A ClientHello split over several records is treated as malformed (the
/// first record of real ClientHellos holds the whole message).
fn client_hello_sni(record: &[u8]) -> Option<Option<String>> {
    let mut r = Reader(record);
    if r.u8()? != 1 {
        return None; // not a ClientHello
    }
    let len = r.u24()?;
    let mut hello = r.block(len)?;
    hello.take(2 + 32)?; // legacy_version, random
    let n = hello.u8()?;
    hello.take(n)?; // legacy_session_id
    let n = hello.u16()?;
    hello.take(n)?; // cipher_suites
    let n = hello.u8()?;
    hello.take(n)?; // legacy_compression_methods
    if hello.0.is_empty() {
        return Some(None); // no extensions at all
    }
    let n = hello.u16()?;
    let mut exts = hello.block(n)?;
    while !exts.0.is_empty() {
        let kind = exts.u16()?;
        let n = exts.u16()?;
        let mut ext = exts.block(n)?;
        if kind != 0 {
            continue; // not server_name
        }
        let n = ext.u16()?;
        let mut list = ext.block(n)?;
        while !list.0.is_empty() {
            let name_type = list.u8()?;
            let n = list.u16()?;
            let name = list.take(n)?;
            if name_type == 0 {
                return Some(std::str::from_utf8(name).ok().map(str::to_ascii_lowercase));
            }
        }
        return Some(None);
    }
    Some(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A ClientHello as rustls sends it, for `name`.
    fn client_hello(name: &str) -> Vec<u8> {
        use std::io::Write;
        let roots = rustls::RootCertStore::empty();
        let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_protocol_versions(&[&rustls::version::TLS13])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
        let mut conn = rustls::ClientConnection::new(std::sync::Arc::new(config), name).unwrap();
        let mut out = Vec::new();
        conn.write_tls(&mut out).unwrap();
        out.flush().unwrap();
        out
    }

    #[test]
    fn reads_sni_of_a_real_client_hello() {
        let hello = client_hello("web.shop.serviceaccount.identity.pimesh.cluster.local");
        assert_eq!(
            parse(&hello),
            Parsed::ServerName(Some(
                "web.shop.serviceaccount.identity.pimesh.cluster.local".into()
            ))
        );
        for cut in [0, 3, 5, 40, hello.len() - 1] {
            assert_eq!(parse(&hello[..cut]), Parsed::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn garbage_is_invalid_not_a_panic() {
        assert_eq!(
            parse(b"\x16\x03\x01\x00\x04\x01\x00\x00\x09"),
            Parsed::Invalid
        );
        assert_eq!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Invalid);
        let mut hello = client_hello("a.b");
        // Corrupt every byte in turn: never a panic.
        for i in 5..hello.len() {
            let saved = hello[i];
            hello[i] = 0xff;
            let _ = parse(&hello);
            hello[i] = saved;
        }
    }
}
