//! The controller's watch streams (endpoints, inbound policy) as the proxy
//! reads them: one JSON event per line (newline-delimited JSON, as the
//! Kubernetes API's watches), split out of the body's frames.

use bytes::BytesMut;
use serde::de::DeserializeOwned;

/// Longest event line accepted, bytes (endpoint sets and port policies
/// are small).
pub const MAX_LINE: usize = 1024 * 1024;

/// The complete event lines at the front of `buf` (consumed), blank lines
/// skipped; a partial line stays for the next frame.
///
/// # Errors
///
/// A message when a line is not a `T`, or when `buf` holds more than
/// [`MAX_LINE`] bytes without a newline.
pub fn events<T: DeserializeOwned>(buf: &mut BytesMut) -> Result<Vec<T>, String> {
    let mut out = Vec::new();
    while let Some(nl) = buf.iter().position(|b| *b == b'\n') {
        let line = buf.split_to(nl + 1);
        let line = &line[..nl];
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        out.push(serde_json::from_slice(line).map_err(|e| e.to_string())?);
    }
    if buf.len() > MAX_LINE {
        return Err(format!("event longer than {MAX_LINE} bytes"));
    }
    if buf.is_empty() && buf.capacity() > 16 * 1024 {
        *buf = BytesMut::new(); // release the capacity of a big event
    }
    Ok(out)
}
