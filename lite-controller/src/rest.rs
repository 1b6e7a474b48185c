//! JSON over HTTP, shared by the listeners: responses, [`ApiError`]
//! bodies for every non-2xx answer, size-limited JSON request bodies, and
//! the HTTP/1.1 connection driver with its graceful shutdown.

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use pimesh_api::ApiError;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// Every response body: small and complete.
pub type Body = Full<Bytes>;

/// Largest accepted request body, bytes (a CSR request is ~1 KiB).
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// A request body that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Over [`MAX_BODY_BYTES`] (HTTP 413 `payload_too_large`).
    #[error("the request body is larger than {MAX_BODY_BYTES} bytes")]
    TooLarge,
    /// The body could not be read (HTTP 400 `bad_request`).
    #[error("the request body could not be read")]
    Read,
    /// Not the expected JSON (HTTP 400 `bad_request`).
    #[error("the request body is not the expected JSON: {0}")]
    Json(#[from] serde_json::Error),
}

impl BodyError {
    /// The `ApiError` code (also a refusal metric label).
    pub fn code(&self) -> &'static str {
        match self {
            BodyError::TooLarge => "payload_too_large",
            BodyError::Read | BodyError::Json(_) => "bad_request",
        }
    }

    /// The answer to send.
    pub fn response(&self) -> Response<Body> {
        let status = match self {
            BodyError::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        error(status, self.code(), self.to_string())
    }
}

/// Reads at most [`MAX_BODY_BYTES`] of `req`'s body and parses it as JSON;
/// an empty body reads as `{}`.
///
/// # Errors
///
/// [`BodyError::TooLarge`] over the limit (declared or read),
/// [`BodyError::Read`] when the body cannot be read, [`BodyError::Json`] when
/// it is not the JSON of a `T`.
pub async fn read_json<T, B>(req: Request<B>) -> Result<T, BodyError>
where
    T: DeserializeOwned,
    B: hyper::body::Body,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(BodyError::TooLarge);
    }
    let bytes = match Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return Err(BodyError::TooLarge)
        }
        Err(_) => return Err(BodyError::Read),
    };
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        &bytes
    };
    Ok(serde_json::from_slice(bytes)?)
}

/// `value` as `application/json`.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec(value) {
        Ok(mut body) => {
            body.push(b'\n');
            with_type(status, body, "application/json")
        }
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()),
    }
}

/// An [`ApiError`] answer.
pub fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response<Body> {
    let body = ApiError {
        error: code.to_string(),
        message: message.into(),
    };
    let mut bytes = serde_json::to_vec(&body).unwrap_or_default();
    bytes.push(b'\n');
    with_type(status, bytes, "application/json")
}

/// A PEM bundle (`application/x-pem-file`).
pub fn pem(body: String) -> Response<Body> {
    with_type(StatusCode::OK, body, "application/x-pem-file")
}

/// Plain text.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    with_type(status, body, "text/plain; charset=utf-8")
}

/// `405` for a known path.
pub fn method_not_allowed() -> Response<Body> {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this path",
    )
}

/// `404`.
pub fn not_found() -> Response<Body> {
    error(StatusCode::NOT_FOUND, "not_found", "no such path")
}

fn with_type(status: StatusCode, body: impl Into<Bytes>, ty: &'static str) -> Response<Body> {
    let mut rsp = Response::new(Full::new(body.into()));
    *rsp.status_mut() = status;
    rsp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(ty));
    rsp
}

/// Serves one HTTP/1.1 connection on `io` with `service` (10 s to read a
/// request head) until it ends; when `shutdown` is cancelled first, the
/// connection finishes its request in flight (5 s at most) and closes.
/// Used by the operator port and the proxy injector.
///
/// # Errors
///
/// What hyper reports for the connection (the caller logs it).
pub async fn serve_http1<T, S>(
    io: T,
    service: S,
    shutdown: &tokio_util::sync::CancellationToken,
) -> hyper::Result<()>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    S: hyper::service::HttpService<hyper::body::Incoming>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::ResBody: 'static,
    <S::ResBody as hyper::body::Body>::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(std::time::Duration::from_secs(10))
        .serve_connection(hyper_util::rt::TokioIo::new(io), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::time::timeout(std::time::Duration::from_secs(5), conn.as_mut())
                .await
                .unwrap_or(Ok(()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, serde::Deserialize)]
    struct Msg {
        #[serde(default)]
        n: u32,
    }

    fn req(body: impl Into<Bytes>) -> Request<Full<Bytes>> {
        Request::new(Full::new(body.into()))
    }

    #[tokio::test]
    async fn reads_json_within_the_limit() {
        assert_eq!(
            read_json::<Msg, _>(req(r#"{"n":3}"#)).await.unwrap(),
            Msg { n: 3 }
        );
        assert_eq!(read_json::<Msg, _>(req("")).await.unwrap(), Msg { n: 0 });
        let e = read_json::<Msg, _>(req("{nope")).await.unwrap_err();
        assert_eq!(e.code(), "bad_request");
        assert_eq!(e.response().status(), StatusCode::BAD_REQUEST);
        let big = format!(r#"{{"n":1,"pad":"{}"}}"#, "x".repeat(MAX_BODY_BYTES));
        let e = read_json::<Msg, _>(req(big)).await.unwrap_err();
        assert!(matches!(e, BodyError::TooLarge), "{e:?}");
        assert_eq!(e.response().status(), StatusCode::PAYLOAD_TOO_LARGE);
    }

    #[tokio::test]
    async fn errors_are_api_errors() {
        let rsp = error(StatusCode::FORBIDDEN, "forbidden", "no");
        assert_eq!(rsp.headers()[header::CONTENT_TYPE], "application/json");
        let body = rsp.into_body().collect().await.unwrap().to_bytes();
        let e: ApiError = serde_json::from_slice(&body).unwrap();
        assert_eq!((e.error.as_str(), e.message.as_str()), ("forbidden", "no"));
    }
}
