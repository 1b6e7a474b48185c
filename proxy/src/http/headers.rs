//! Header handling a proxy owes the peers: the request's authority,
//! hop-by-hop headers (RFC 9110 §7.6.1), origin-form targets for explicit
//! proxy requests (RFC 9112 §3.2), and the size of a request head.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery};
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

/// The fixed hop-by-hop fields (not counting those a `Connection` header
/// names), one bit each in a field set: bit `i` is `HOP_BY_HOP[i]`.
const HOP_BY_HOP: [&HeaderName; 7] = [
    &header::CONNECTION,
    &KEEP_ALIVE,
    &PROXY_CONNECTION,
    &header::TRANSFER_ENCODING,
    &header::TE,
    &header::UPGRADE,
    &header::PROXY_AUTHORIZATION,
];
/// `Connection`'s bit in a set of [`HOP_BY_HOP`] fields.
const CONNECTION_BIT: u8 = 1;
/// `Keep-Alive`'s bit.
const KEEP_ALIVE_BIT: u8 = 1 << 1;
/// `Proxy-Connection`'s bit.
const PROXY_CONNECTION_BIT: u8 = 1 << 2;
/// `Transfer-Encoding`'s bit.
const TRANSFER_ENCODING_BIT: u8 = 1 << 3;
/// `TE`'s bit.
const TE_BIT: u8 = 1 << 4;
/// `Upgrade`'s bit.
const UPGRADE_BIT: u8 = 1 << 5;
/// `Proxy-Authorization`'s bit.
const PROXY_AUTHORIZATION_BIT: u8 = 1 << 6;

/// `name`'s bit among the [`HOP_BY_HOP`] fields; 0 when it is none of
/// them.
fn hop_by_hop_bit(name: &HeaderName) -> u8 {
    if name == header::CONNECTION {
        CONNECTION_BIT
    } else if name == KEEP_ALIVE {
        KEEP_ALIVE_BIT
    } else if name == PROXY_CONNECTION {
        PROXY_CONNECTION_BIT
    } else if name == header::TRANSFER_ENCODING {
        TRANSFER_ENCODING_BIT
    } else if name == header::TE {
        TE_BIT
    } else if name == header::UPGRADE {
        UPGRADE_BIT
    } else if name == header::PROXY_AUTHORIZATION {
        PROXY_AUTHORIZATION_BIT
    } else {
        0
    }
}

/// Removes hop-by-hop headers: those named in `Connection`, and
/// `Connection`, `Keep-Alive`, `Proxy-Connection`, `Transfer-Encoding`,
/// `TE` (except `TE: trailers`, which gRPC needs), `Upgrade`. With
/// `keep_upgrade` the upgrade handshake (`Connection: upgrade`, `Upgrade`)
/// is kept; with `explicit` (the client addressed us as its proxy)
/// `Proxy-Authorization` is dropped too. Runs on every request and
/// response, so it looks at the names once and removes only the fixed
/// fields that are there (each removal hashes its name): most messages
/// carry none, and an HTTP/1 response mostly only `Connection:
/// keep-alive`.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool, explicit: bool) {
    let present = headers.keys().fold(0, |set, n| set | hop_by_hop_bit(n));
    if present == 0 {
        return;
    }
    // These go whenever they are there.
    let mut strip =
        present & (CONNECTION_BIT | KEEP_ALIVE_BIT | PROXY_CONNECTION_BIT | TRANSFER_ENCODING_BIT);
    if present & CONNECTION_BIT != 0 {
        let mut named = Vec::new();
        for token in headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
        {
            let Ok(name) = HeaderName::from_bytes(token.trim().as_bytes()) else {
                continue;
            };
            if keep_upgrade && name == header::UPGRADE {
                continue;
            }
            match hop_by_hop_bit(&name) {
                0 => named.push(name),
                bit => strip |= bit & present,
            }
        }
        for name in named {
            headers.remove(name);
        }
    }
    if present & TE_BIT != 0
        && headers
            .get(header::TE)
            .is_some_and(|v| !v.as_bytes().eq_ignore_ascii_case(b"trailers"))
    {
        strip |= TE_BIT;
    }
    if explicit {
        strip |= present & PROXY_AUTHORIZATION_BIT;
    }
    let upgrading = keep_upgrade && present & UPGRADE_BIT != 0;
    if !upgrading {
        strip |= present & UPGRADE_BIT;
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if strip & (1 << i) != 0 {
            headers.remove(*name);
        }
    }
    if upgrading {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// Rewrites an absolute-form target (`GET http://web:8080/a?b`) to origin
/// form (`/a?b`) for the origin server, and sets `Host` from the authority
/// when the client sent none.
pub fn to_origin_form<B>(req: &mut Request<B>, authority: Option<&Authority>) {
    if req.uri().authority().is_some() && req.method() != Method::CONNECT {
        // The parsed path is kept as it is (a reference-counted clone).
        let path = req
            .uri()
            .path_and_query()
            .cloned()
            .unwrap_or_else(|| PathAndQuery::from_static("/"));
        *req.uri_mut() = Uri::from(path);
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

    /// Every subset of the fixed hop-by-hop fields, with `Connection`
    /// naming nothing, a fixed field, `upgrade` or an end-to-end field,
    /// and `TE` saying `trailers` or not: the fields that are left are
    /// those left by removing each hop-by-hop name one by one (the code
    /// before the field set, 17e6df6^).
    #[test]
    fn strips_as_removing_each_name() {
        fn remove_each(h: &mut HeaderMap, keep_upgrade: bool, explicit: bool) {
            let named: Vec<HeaderName> = h
                .get_all(header::CONNECTION)
                .iter()
                .flat_map(|v| v.to_str().unwrap().split(','))
                .map(|t| HeaderName::from_bytes(t.trim().as_bytes()).unwrap())
                .filter(|n| !(keep_upgrade && n == header::UPGRADE))
                .collect();
            for name in named.iter().chain([&header::CONNECTION, &KEEP_ALIVE]) {
                h.remove(name);
            }
            h.remove(&PROXY_CONNECTION);
            h.remove(header::TRANSFER_ENCODING);
            if h.get(header::TE).is_some_and(|v| v != "trailers") {
                h.remove(header::TE);
            }
            if explicit {
                h.remove(header::PROXY_AUTHORIZATION);
            }
            if keep_upgrade && h.contains_key(header::UPGRADE) {
                h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            } else {
                h.remove(header::UPGRADE);
            }
        }
        let connection = ["keep-alive", "te, x-hop", "Upgrade", "x-hop, upgrade"];
        for fields in 0..1u8 << HOP_BY_HOP.len() {
            for (conn, te, keep_upgrade, explicit) in cases(&connection) {
                let mut h = HeaderMap::new();
                h.insert("x-end-to-end", HeaderValue::from_static("kept"));
                h.insert("x-hop", HeaderValue::from_static("named"));
                for (i, name) in HOP_BY_HOP.iter().enumerate() {
                    if fields & (1 << i) != 0 {
                        let value = if *name == header::CONNECTION {
                            conn
                        } else if *name == header::TE {
                            te
                        } else {
                            "x"
                        };
                        h.insert(*name, HeaderValue::from_static(value));
                    }
                }
                let mut want = h.clone();
                remove_each(&mut want, keep_upgrade, explicit);
                strip_hop_by_hop(&mut h, keep_upgrade, explicit);
                assert_eq!(
                    h, want,
                    "{fields:07b} {conn:?} {te:?} {keep_upgrade} {explicit}"
                );
            }
        }
        /// Every combination of a `Connection` value, a `TE` value and the
        /// two flags.
        fn cases<'a>(
            connection: &'a [&'static str],
        ) -> impl Iterator<Item = (&'static str, &'static str, bool, bool)> + 'a {
            connection.iter().flat_map(|&c| {
                ["trailers", "gzip"].into_iter().flat_map(move |t| {
                    [(false, false), (false, true), (true, false), (true, true)]
                        .into_iter()
                        .map(move |(k, e)| (c, t, k, e))
                })
            })
        }
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
