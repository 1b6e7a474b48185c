//! Test double of the API server (tests only): kube's `Client` over
//! tower-test's mock service, whose requests a test receives one by one,
//! asserts (method, path, body) and answers — kube-rs controller-rs's
//! `fixtures.rs` pattern.

use http::{Request, Response};
use kube::client::Body;

/// The server side: receives the client's requests.
pub type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

/// A client whose requests arrive at the returned handle.
pub fn client() -> (kube::Client, Handle) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (kube::Client::new(service, "default"), handle)
}

/// Receives the next request, asserts its method and path, answers
/// `status` with `answer` (JSON); the request's query and JSON body.
pub async fn expect(
    handle: &mut Handle,
    method: &str,
    path: &str,
    status: u16,
    answer: serde_json::Value,
) -> (String, serde_json::Value) {
    let (req, send) = handle.next_request().await.expect("no request");
    assert_eq!(req.method().as_str(), method, "{}", req.uri());
    assert_eq!(req.uri().path(), path);
    let query = req.uri().query().unwrap_or_default().to_string();
    let bytes = req.into_body().collect_bytes().await.unwrap();
    let body = if bytes.is_empty() {
        serde_json::Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap()
    };
    send.send_response(
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&answer).unwrap()))
            .unwrap(),
    );
    (query, body)
}
