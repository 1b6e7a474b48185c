//! Header handling a proxy owes the peers: the request's authority,
//! hop-by-hop headers (RFC 9110 §7.6.1), origin-form targets for explicit
//! proxy requests (RFC 9112 §3.2), and the size of a request head.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::Authority;
use http::{Method, Request, Uri, Version};

/// The request's authority: the URI's (absolute-form, authority-form,
/// HTTP/2 `:authority`), else a valid `Host` header.
pub fn authority<B>(req: &Request<B>) -> Option<Authority> {
    if let Some(a) = req.uri().authority() {
        return Some(a.clone());
    }
    let host = req.headers().get(header::HOST)?.to_str().ok()?;
    host.parse().ok()
}

/// Bytes of the request head as HTTP/2 counts them for
/// `SETTINGS_MAX_HEADER_LIST_SIZE` (RFC 9113 §6.5.2): name + value + 32 per
/// field, plus the request target's parts (counted without formatting the
/// URI: this runs on every request).
pub fn head_size<B>(req: &Request<B>) -> usize {
    let fields: usize = req
        .headers()
        .iter()
        .map(|(n, v)| n.as_str().len() + v.len() + 32)
        .sum();
    let uri = req.uri();
    let target = uri.scheme_str().map_or(0, str::len)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(0, |p| p.as_str().len());
    fields + target + req.method().as_str().len()
}

/// Whether this is a gRPC request (`content-type: application/grpc[+proto|...]`).
pub fn is_grpc(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// Whether the request asks to switch protocols: HTTP/1.1 `Connection:
/// upgrade` with an `Upgrade` header (RFC 9110 §7.8), or `CONNECT`.
pub fn is_upgrade<B>(req: &Request<B>) -> bool {
    if req.version() != Version::HTTP_11 && req.version() != Version::HTTP_10 {
        return false;
    }
    if req.method() == Method::CONNECT {
        return true;
    }
    req.headers().contains_key(header::UPGRADE) && has_token(req.headers(), "upgrade")
}

fn has_token(headers: &HeaderMap, token: &str) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

/// `grpc-status`, as a name parsed once (a `&str` name is parsed, then
/// hashed, at every look-up).
pub static GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// `grpc-message`.
pub static GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");

/// `msg` as a header value: printable ASCII, the rest (and `%`)
/// percent-encoded, as `grpc-message` requires (gRPC over HTTP/2,
/// `PROTOCOL-HTTP2.md`); `None` if it still is not a valid value.
pub fn percent_encoded(msg: &str) -> Option<HeaderValue> {
    let encoded: String = msg
        .bytes()
        .map(|b| match b {
            b' '..=b'~' if b != b'%' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    HeaderValue::from_str(&encoded).ok()
}

/// `Keep-Alive` (RFC 9112 §9.3, obsolete but still sent).
static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
/// `Proxy-Connection` (never standard, sent by old clients).
static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");

/// Whether `name` is one of the fixed hop-by-hop fields (not counting
/// those a `Connection` header names).
fn is_hop_by_hop(name: &HeaderName) -> bool {
    name == header::CONNECTION
        || name == header::TRANSFER_ENCODING
        || name == header::TE
        || name == header::UPGRADE
        || name == header::PROXY_AUTHORIZATION
        || name == KEEP_ALIVE
        || name == PROXY_CONNECTION
}

/// Removes hop-by-hop headers: those named in `Connection`, and
/// `Connection`, `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`,
/// `TE` (except `TE: trailers`, which gRPC needs), `Upgrade`. With
/// `keep_upgrade` the upgrade handshake (`Connection: upgrade`, `Upgrade`)
/// is kept; with `explicit` (the client addressed us as its proxy)
/// `Proxy-Authorization` is dropped too. Runs on every request and
/// response: one pass over the names first, as most messages carry none
/// of these (each removal hashes its name).
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool, explicit: bool) {
    if !headers.keys().any(is_hop_by_hop) {
        return;
    }
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .filter(|n| !(keep_upgrade && n == header::UPGRADE))
        .collect();
    for name in named {
        headers.remove(name);
    }
    headers.remove(header::CONNECTION);
    headers.remove(&KEEP_ALIVE);
    headers.remove(&PROXY_CONNECTION);
    headers.remove(header::TRANSFER_ENCODING);
    if headers
        .get(header::TE)
        .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        headers.remove(header::TE);
    }
    if explicit {
        headers.remove(header::PROXY_AUTHORIZATION);
    }
    if keep_upgrade && headers.contains_key(header::UPGRADE) {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else {
        headers.remove(header::UPGRADE);
    }
}

/// Rewrites an absolute-form target (`GET http://web:8080/a?b`) to origin
/// form (`/a?b`) for the origin server, and sets `Host` from the authority
/// when the client sent none.
pub fn to_origin_form<B>(req: &mut Request<B>, authority: Option<&Authority>) {
    if req.uri().authority().is_some() && req.method() != Method::CONNECT {
        let path = req
            .uri()
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        *req.uri_mut() = path.parse().unwrap_or_else(|_| Uri::from_static("/"));
    }
    if let Some(a) = authority {
        if !req.headers().contains_key(header::HOST) {
            if let Ok(v) = HeaderValue::from_str(a.as_str()) {
                req.headers_mut().insert(header::HOST, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        h.insert(header::TE, HeaderValue::from_static("trailers"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        h.insert("x-end-to-end", HeaderValue::from_static("kept"));
        strip_hop_by_hop(&mut h, false, false);
        let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["te", "x-end-to-end"]);
    }

    #[test]
    fn each_hop_by_hop_field_alone_is_stripped() {
        for name in [
            "connection",
            "keep-alive",
            "proxy-connection",
            "transfer-encoding",
            "te",
            "upgrade",
            "proxy-authorization",
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, HeaderValue::from_static("x"));
            h.insert("x-end-to-end", HeaderValue::from_static("kept"));
            strip_hop_by_hop(&mut h, false, true);
            let names: Vec<_> = h.keys().map(|k| k.as_str()).collect();
            assert_eq!(names, ["x-end-to-end"], "{name}");
        }
        // Not explicit: Proxy-Authorization is the target's business.
        let mut h = HeaderMap::new();
        h.insert(header::PROXY_AUTHORIZATION, HeaderValue::from_static("x"));
        strip_hop_by_hop(&mut h, false, false);
        assert!(h.contains_key(header::PROXY_AUTHORIZATION));
    }

    #[test]
    fn keeps_upgrade_handshake() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
        strip_hop_by_hop(&mut h, true, false);
        assert_eq!(h[header::CONNECTION], "upgrade");
        assert_eq!(h[header::UPGRADE], "websocket");
    }

    #[test]
    fn absolute_form_becomes_origin_form() {
        let mut req = Request::get("http://web.shop:8080/a/b?c=d")
            .body(())
            .unwrap();
        let a = authority(&req);
        to_origin_form(&mut req, a.as_ref());
        assert_eq!(req.uri(), "/a/b?c=d");
        assert_eq!(req.headers()[header::HOST], "web.shop:8080");
    }

    #[test]
    fn authority_from_host_header() {
        let req = Request::get("/").header("host", "web:80").body(()).unwrap();
        assert_eq!(authority(&req).unwrap().as_str(), "web:80");
        let bad = Request::get("/").header("host", "a b").body(()).unwrap();
        assert!(authority(&bad).is_none());
    }
}
