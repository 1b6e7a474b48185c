//! PEM and X.509 helpers: certificates out of PEM bundles (checked to
//! parse), and PEM encoding of DER (RFC 7468).

use super::ca::Error;
use x509_parser::pem::Pem;
use x509_parser::prelude::{FromDer, X509Certificate};

/// The DER of every `CERTIFICATE` block in `pem` (at least one).
pub fn certs_from_pem(pem: &str, what: &str) -> Result<Vec<Vec<u8>>, Error> {
    let mut out = Vec::new();
    for block in Pem::iter_from_buffer(pem.as_bytes()) {
        let block = block.map_err(|_| Error::invalid(what, "not PEM"))?;
        if block.label != "CERTIFICATE" {
            return Err(Error::invalid(
                what,
                format!("a PEM {:?}, not a CERTIFICATE", block.label),
            ));
        }
        parse_cert(&block.contents, what)?;
        out.push(block.contents);
    }
    if out.is_empty() {
        return Err(Error::invalid(what, "no PEM CERTIFICATE in it"));
    }
    Ok(out)
}

pub fn parse_cert<'a>(der: &'a [u8], what: &str) -> Result<X509Certificate<'a>, Error> {
    match X509Certificate::from_der(der) {
        Ok((&[], x509)) => Ok(x509),
        _ => Err(Error::invalid(what, "not an X.509 certificate")),
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
