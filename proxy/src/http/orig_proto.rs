//! HTTP/1 across the mesh's HTTP/2 hop, as linkerd2-proxy's
//! `l5d-orig-proto`: the outbound proxy sends an HTTP/1 request as HTTP/2
//! marked with its version in `pimesh-orig-proto`; the inbound proxy
//! hands it to its app as HTTP/1 again.

use super::error::Error;
use super::headers;
use http::header::HeaderName;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderValue, Request, Uri, Version};
use std::net::SocketAddr;

/// The header carrying an HTTP/1 request's version across the HTTP/2 hop
/// (a constant name: neither parsed nor allocated per request).
pub static ORIG_PROTO: HeaderName = HeaderName::from_static("pimesh-orig-proto");

/// Outbound: turns an HTTP/1 request into an HTTP/2 one marked with its
/// version, with an absolute URI (`authority`, else `addr`); HTTP/2
/// requests are left as they are.
///
/// # Errors
///
/// [`Error::NoTarget`] when the authority and path make no valid URI.
pub fn to_h2<B>(
    req: &mut Request<B>,
    authority: Option<&Authority>,
    addr: SocketAddr,
) -> Result<(), Error> {
    let version = req.version();
    if version == Version::HTTP_2 {
        return Ok(());
    }
    // Built from the parsed parts (reference-counted clones), not
    // formatted and parsed again.
    let authority = match authority {
        Some(a) => a.clone(),
        None => Authority::try_from(addr.to_string()).map_err(|_| Error::NoTarget)?,
    };
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::builder()
        .scheme(Scheme::HTTP)
        .authority(authority)
        .path_and_query(path)
        .build()
        .map_err(|_| Error::NoTarget)?;
    let orig = if version == Version::HTTP_10 {
        "HTTP/1.0"
    } else {
        "HTTP/1.1"
    };
    let h = req.headers_mut();
    h.remove(http::header::HOST);
    h.insert(&ORIG_PROTO, HeaderValue::from_static(orig));
    *req.version_mut() = Version::HTTP_2;
    Ok(())
}

/// Inbound: a request marked by [`to_h2`] becomes the HTTP/1 request it
/// was, in origin form; `false` (and unchanged) when it is not marked.
pub fn from_h2<B>(req: &mut Request<B>, authority: Option<&Authority>) -> bool {
    let Some(orig) = req.headers_mut().remove(&ORIG_PROTO) else {
        return false;
    };
    *req.version_mut() = if orig == "HTTP/1.0" {
        Version::HTTP_10
    } else {
        Version::HTTP_11
    };
    headers::to_origin_form(req, authority);
    true
}
