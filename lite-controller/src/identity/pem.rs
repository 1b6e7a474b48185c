//! PEM and X.509 helpers: certificates out of PEM bundles (checked to
//! parse), and PEM encoding of DER (RFC 7468). A leaf: it imports nothing
//! of the crate, and `ca` turns its [`Invalid`] into `ca::Error::Invalid`.

use x509_parser::pem::Pem;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Material that is not what it should be: not PEM, not a certificate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what}: {reason}")]
pub struct Invalid {
    /// Which material (e.g. `--trust-anchor-pem`, `trust anchors`), as the
    /// caller named it.
    pub what: String,
    /// What is wrong with it.
    pub reason: String,
}

impl Invalid {
    fn new(what: &str, reason: impl Into<String>) -> Invalid {
        Invalid {
            what: what.to_string(),
            reason: reason.into(),
        }
    }
}

/// The DER of every `CERTIFICATE` block in `pem` (at least one), each
/// checked to parse as X.509.
///
/// # Errors
///
/// [`Invalid`] (named `what`) when `pem` is not PEM, holds a block of
/// another label, a certificate that does not parse, or no certificate.
pub fn certs_from_pem(pem: &str, what: &str) -> Result<Vec<Vec<u8>>, Invalid> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|_| Invalid::new(what, "not PEM"))?;
        if block.label != "CERTIFICATE" {
            return Err(Invalid::new(
                what,
                format!("a PEM {:?}, not a CERTIFICATE", block.label),
            ));
        }
        parse_cert(&block.contents, what)?;
        out.push(block.contents);
    }
    if out.is_empty() {
        return Err(Invalid::new(what, "no PEM CERTIFICATE in it"));
    }
    Ok(out)
}

/// `der` parsed as one X.509 certificate (nothing after it).
///
/// # Errors
///
/// [`Invalid`] (named `what`) when `der` is not exactly one certificate.
pub fn parse_cert<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, Invalid> {
    match X509Certificate::from_der(der) {
        Ok((&[], x509)) => Ok(x509),
        _ => Err(Invalid::new(what, "not an X.509 certificate")),
    }
}

/// PEM of a DER certificate (64-character lines, RFC 7468).
pub fn pem_encode(der: &[u8]) -> String {
    pem_block("CERTIFICATE", der)
}

/// A PEM block labelled `label` around `der` (standard base64, RFC 7468).
pub fn pem_block(label: &str, der: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut b64 = Vec::with_capacity(der.len().div_ceil(3) * 4);
    for chunk in der.chunks(3) {
        let n = chunk.iter().fold(0u32, |a, b| a << 8 | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..4 {
            b64.push(if i <= chunk.len() {
                B64[(n >> (18 - 6 * i) & 63) as usize]
            } else {
                b'='
            });
        }
    }
    let mut s = format!("-----BEGIN {label}-----\n");
    for line in b64.chunks(64) {
        // Base64 output is ASCII.
        s.push_str(std::str::from_utf8(line).unwrap_or_default());
        s.push('\n');
    }
    s.push_str(&format!("-----END {label}-----\n"));
    s
}
