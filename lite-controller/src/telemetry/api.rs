//! Telemetry on the operator port (8085), all `GET`, open to any client:
//!
//! | path | answer |
//! | --- | --- |
//! | `/v1/stat?resource=deploy\|svc\|pod[&namespace=NS][&name=N][&window=1m]` | [`Stat`] |
//! | `/v1/edges?resource=deploy\|pod[&namespace=NS][&window=1m]` | [`Edges`] |
//! | `/v1/authz?resource=deploy\|svc\|pod[&namespace=NS][&name=N][&window=1m]` | [`Authz`] |
//! | `/v1/history?workload=NS/NAME[&step=10\|60]` | [`Series`](super::history::Series) |
//! | `/v1/targets` | [`TargetInfo`]s: every scrape target, up or stale, and why |
//! | `/`, `/dashboard` | the dashboard (HTML; `app.js`, `style.css` beside it) |
//!
//! Errors are `ApiError`s: 400 `unknown_resource`, 400 `bad_window`,
//! 400 `bad_request`.

use super::query::authz::{self, Authz};
use super::query::{self, Edges, Filter, Resource, Stat};
use super::{lock, Telemetry};
use crate::config::parse_duration;
use crate::rest::{self, Body};
use http::{header, HeaderValue, Method, Response, StatusCode};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;

/// The dashboard's page; [`index_html`] fills in its `data-scrape-seconds`.
const INDEX_HTML: &str = include_str!("dashboard/index.html");
/// Its script (vanilla JS, SVG charts and graph).
const APP_JS: &str = include_str!("dashboard/app.js");
/// Its style sheet.
const STYLE_CSS: &str = include_str!("dashboard/style.css");

/// Shortest window, seconds.
pub const MIN_WINDOW_SECS: u64 = 1;
/// Longest window: what memory holds.
pub const MAX_WINDOW_SECS: u64 = 3600;

/// A scrape target as `/v1/targets` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TargetInfo {
    /// Admin address.
    pub addr: String,
    /// `up` or `stale`.
    pub state: String,
    /// The last error of a stale target.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Effective workload labels.
    pub labels: std::collections::BTreeMap<String, String>,
}

/// The answer for `method path?query`, or `None` when the path is not
/// telemetry's.
pub async fn handle(
    t: &Arc<Telemetry>,
    method: &Method,
    path: &str,
    query: Option<&str>,
) -> Option<Response<Body>> {
    let known = matches!(
        path,
        "/" | "/dashboard"
            | "/dashboard/"
            | "/dashboard/app.js"
            | "/dashboard/style.css"
            | "/v1/stat"
            | "/v1/edges"
            | "/v1/authz"
            | "/v1/history"
            | "/v1/targets"
    );
    if !known {
        return None;
    }
    if method != Method::GET && method != Method::HEAD {
        return Some(rest::method_not_allowed());
    }
    let q = parse_query(query.unwrap_or(""));
    Some(match path {
        "/" => {
            let mut rsp = rest::text(StatusCode::FOUND, "see /dashboard\n");
            rsp.headers_mut()
                .insert(header::LOCATION, HeaderValue::from_static("/dashboard"));
            rsp
        }
        "/dashboard" | "/dashboard/" => {
            asset(index_html(t.settings.interval), "text/html; charset=utf-8")
        }
        "/dashboard/app.js" => asset(APP_JS, "text/javascript; charset=utf-8"),
        "/dashboard/style.css" => asset(STYLE_CSS, "text/css; charset=utf-8"),
        "/v1/authz" => match params(&q) {
            Err((code, message)) => rest::error(StatusCode::BAD_REQUEST, code, message),
            Ok((resource, filter, window)) => {
                let st = lock(&t.state);
                let (rows, targets) =
                    authz::authz(&st.targets, resource, &filter, st.now_ms, window * 1000);
                rest::json(
                    StatusCode::OK,
                    &Authz {
                        window_seconds: window,
                        targets,
                        rows,
                    },
                )
            }
        },
        "/v1/stat" | "/v1/edges" => match params(&q) {
            Err((code, message)) => rest::error(StatusCode::BAD_REQUEST, code, message),
            Ok((resource, filter, window)) => {
                let st = lock(&t.state);
                let window_ms = window * 1000;
                if path == "/v1/stat" {
                    let rows = query::stat(&st.targets, resource, &filter, st.now_ms, window_ms);
                    rest::json(
                        StatusCode::OK,
                        &Stat {
                            window_seconds: window,
                            rows,
                        },
                    )
                } else {
                    let rows = query::edges(
                        &st.targets,
                        resource,
                        &filter,
                        &t.settings.trust_domain,
                        st.now_ms,
                        window_ms,
                    );
                    rest::json(
                        StatusCode::OK,
                        &Edges {
                            window_seconds: window,
                            rows,
                        },
                    )
                }
            }
        },
        "/v1/history" => {
            let Some(workload) = q.get("workload").filter(|w| w.contains('/')).cloned() else {
                return Some(rest::error(
                    StatusCode::BAD_REQUEST,
                    "bad_request",
                    "workload=NAMESPACE/NAME is required",
                ));
            };
            let step = match q.get("step").map(String::as_str) {
                None | Some("10") | Some("10s") => 10,
                Some("60") | Some("1m") => 60,
                Some(other) => {
                    return Some(rest::error(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("step {other:?}: use 10 (last hour) or 60 (last 24 hours)"),
                    ))
                }
            };
            let t = t.clone();
            match tokio::task::spawn_blocking(move || t.history(&workload, step)).await {
                Ok(Ok(series)) => rest::json(StatusCode::OK, &series),
                Ok(Err(e)) => rest::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    crate::error_chain(&e),
                ),
                Err(_) => rest::error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal"),
            }
        }
        _ => {
            let st = lock(&t.state);
            let list: Vec<TargetInfo> = st
                .targets
                .iter()
                .filter(|(_, s)| s.listed)
                .map(|(addr, s)| {
                    let mut labels = s.reported.clone();
                    labels.extend(s.given.clone());
                    TargetInfo {
                        addr: addr.to_string(),
                        state: if s.up { "up" } else { "stale" }.into(),
                        error: s.last_error.clone(),
                        labels,
                    }
                })
                .collect();
            rest::json(StatusCode::OK, &list)
        }
    })
}

/// `resource`, `namespace`/`name` filters and `window` (seconds) of a
/// stat/edges query, or the error's code and message (a 400).
fn params(q: &HashMap<String, String>) -> Result<(Resource, Filter, u64), (&'static str, String)> {
    let r = q.get("resource").map(String::as_str).unwrap_or("deploy");
    let resource = Resource::parse(r).ok_or_else(|| {
        (
            "unknown_resource",
            format!("unknown resource {r:?}: use deploy, svc or pod"),
        )
    })?;
    let w = q.get("window").map(String::as_str).unwrap_or("1m");
    let window =
        parse_window(w).map_err(|reason| ("bad_window", format!("window {w:?}: {reason}")))?;
    let filter = Filter {
        namespace: q.get("namespace").filter(|n| !n.is_empty()).cloned(),
        name: q.get("name").filter(|n| !n.is_empty()).cloned(),
    };
    Ok((resource, filter, window))
}

/// A window such as `1m`, `10m`, `1h`, `30s`: seconds, between
/// [`MIN_WINDOW_SECS`] and [`MAX_WINDOW_SECS`].
///
/// # Errors
///
/// A message for the operator: not a duration, or out of range.
pub fn parse_window(w: &str) -> Result<u64, String> {
    let secs = parse_duration(w)?.as_secs();
    if !(MIN_WINDOW_SECS..=MAX_WINDOW_SECS).contains(&secs) {
        return Err("must be between 1s and 1h".into());
    }
    Ok(secs)
}

/// The dashboard's page with the scrape interval (seconds, e.g. `10` or
/// `0.5`) in `<body data-scrape-seconds>`: its empty tables say how soon
/// data can come.
fn index_html(interval: std::time::Duration) -> String {
    INDEX_HTML.replacen(
        "data-scrape-seconds=\"\"",
        &format!("data-scrape-seconds=\"{}\"", interval.as_secs_f64()),
        1,
    )
}

fn asset(body: impl Into<bytes::Bytes>, ty: &'static str) -> Response<Body> {
    let mut rsp = rest::text(StatusCode::OK, body);
    rsp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ty));
    rsp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    rsp
}

/// `a=1&b=x%2Fy` → map (percent-decoded, `+` as space; later keys win).
pub fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (decode(k), decode(v))
        })
        .collect()
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                let hex = |c: u8| (c as char).to_digit(16);
                match (hex(b[i + 1]), hex(b[i + 2])) {
                    (Some(h), Some(l)) => {
                        out.push((h * 16 + l) as u8);
                        i += 2;
                    }
                    _ => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_and_windows() {
        let q = parse_query("resource=deploy&namespace=shop&workload=shop%2Fweb&x=%zz&y=a+b&z=%4");
        assert_eq!(q["resource"], "deploy");
        assert_eq!(q["workload"], "shop/web");
        assert_eq!(q["x"], "%zz");
        assert_eq!(q["y"], "a b");
        assert_eq!(q["z"], "%4");
        assert_eq!(parse_window("1m"), Ok(60));
        assert_eq!(parse_window("1h"), Ok(3600));
        assert_eq!(parse_window("10s"), Ok(10));
        assert!(parse_window("2h").is_err());
        assert!(parse_window("0s").is_err());
        assert!(parse_window("soon").is_err());
        let bad: HashMap<String, String> = [("resource".into(), "bogus".into())].into();
        assert_eq!(params(&bad).unwrap_err().0, "unknown_resource");
    }

    #[test]
    fn page_names_the_scrape_interval() {
        assert_eq!(INDEX_HTML.matches("data-scrape-seconds=\"\"").count(), 1);
        let page = index_html(std::time::Duration::from_millis(1500));
        assert!(
            page.contains("<body data-scrape-seconds=\"1.5\">"),
            "{page}"
        );
        let page = index_html(std::time::Duration::from_secs(10));
        assert!(page.contains("<body data-scrape-seconds=\"10\">"), "{page}");
    }
}
