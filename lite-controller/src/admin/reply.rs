//! Answering operator requests: database work on the blocking pool
//! ([`blocking`]) and failures as `ApiError`s with their HTTP status
//! ([`ApiFailure`], from the identity, token and registry errors).

use crate::identity::{self, ca, now_unix};
use crate::registry;
use crate::rest::{self, Body};
use crate::token;
use http::{Response, StatusCode};
use serde::Serialize;
use std::sync::Arc;

/// Runs `f` on the blocking pool (database reads and flushed writes) and
/// answers its value as JSON, or its error as an `ApiError`.
pub(super) async fn blocking<H, T, E>(
    handle: &Arc<H>,
    f: impl FnOnce(&H, u64) -> Result<T, E> + Send + 'static,
) -> Response<Body>
where
    H: Send + Sync + 'static,
    T: Serialize + Send + 'static,
    E: Into<ApiFailure> + Send + 'static,
{
    let handle = handle.clone();
    match tokio::task::spawn_blocking(move || f(&handle, now_unix())).await {
        Ok(Ok(v)) => rest::json(StatusCode::OK, &v),
        Ok(Err(e)) => e.into().response(),
        Err(e) => {
            tracing::error!(error = %e, "operator request task failed");
            rest::error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }
}

/// An operator request that failed, with its HTTP status and code.
pub struct ApiFailure {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiFailure {
    pub(super) fn response(self) -> Response<Body> {
        if self.status.is_server_error() {
            tracing::error!(code = self.code, "{}", self.message);
        }
        rest::error(self.status, self.code, self.message)
    }
}

impl From<identity::Error> for ApiFailure {
    fn from(e: identity::Error) -> Self {
        let (status, code) = match &e {
            identity::Error::Ca(ca::Error::RotationInProgress { .. }) => {
                (StatusCode::CONFLICT, "rotation_in_progress")
            }
            identity::Error::Ca(ca::Error::NoRotation) => (StatusCode::CONFLICT, "no_rotation"),
            identity::Error::Ca(ca::Error::NotActiveYet { .. }) => {
                (StatusCode::CONFLICT, "not_active_yet")
            }
            identity::Error::Ca(ca::Error::OldLeavesValid { .. }) => {
                (StatusCode::CONFLICT, "old_leaves_valid")
            }
            identity::Error::Ca(ca::Error::ClockNotSet { .. }) => {
                (StatusCode::SERVICE_UNAVAILABLE, "clock_not_set")
            }
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiFailure {
            status,
            code,
            message: crate::error_chain(&e),
        }
    }
}

impl From<token::Error> for ApiFailure {
    fn from(e: token::Error) -> Self {
        let (status, code) = match &e {
            token::Error::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            token::Error::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            token::Error::Refused(r) => (StatusCode::FORBIDDEN, r.code()),
            token::Error::Store(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiFailure {
            status,
            code,
            message: crate::error_chain(&e),
        }
    }
}

impl From<registry::Error> for ApiFailure {
    fn from(e: registry::Error) -> Self {
        ApiFailure {
            status: StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code: e.code(),
            message: crate::error_chain(&e),
        }
    }
}
