//! The one place where errors become HTTP responses: `{code, message, field?}` with a stable
//! code. Store and internal errors are logged with an id and shown only as that id.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use ferrydesk_desk::Error;
use serde::Serialize;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `invalid`, `chat_taken`, `not_found`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The offending field or JSON pointer, for validation errors.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
}

#[derive(Debug)]
pub struct ApiError(pub Error);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(e)
    }
}

impl ApiError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> ApiError {
        ApiError(Error::invalid(field, message))
    }
}

pub type ApiResult<T> = Result<T, ApiError>;

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, message, field) = match self.0 {
            Error::NotFound { what } => (
                StatusCode::NOT_FOUND,
                "not_found".to_owned(),
                format!("{what} not found"),
                None,
            ),
            Error::Unauthenticated => (
                StatusCode::UNAUTHORIZED,
                "unauthenticated".into(),
                "authentication required".into(),
                None,
            ),
            Error::Forbidden(m) => (StatusCode::FORBIDDEN, "forbidden".into(), m, None),
            Error::Conflict { code, message } => {
                (StatusCode::CONFLICT, code.to_owned(), message, None)
            }
            Error::Invalid { field, message } => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid".into(),
                format!("{field}: {message}"),
                Some(field),
            ),
            e @ Error::TooLarge { .. } => (
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large".into(),
                e.to_string(),
                None,
            ),
            Error::RateLimited { retry_after } => {
                let mut r = (
                    StatusCode::TOO_MANY_REQUESTS,
                    axum::Json(ErrorBody {
                        code: "rate_limited".into(),
                        message: format!(
                            "too many attempts; retry in {} s",
                            retry_after.as_secs().max(1)
                        ),
                        field: None,
                    }),
                )
                    .into_response();
                if let Ok(v) = HeaderValue::from_str(&retry_after.as_secs().max(1).to_string()) {
                    r.headers_mut().insert(header::RETRY_AFTER, v);
                }
                return r;
            }
            Error::Store(e) if e.unavailable().is_some() => {
                let u = e
                    .unavailable()
                    .unwrap_or(ferrydesk_store::Unavailable::Unreachable);
                tracing::warn!(error = %e, "storage unavailable: answering 503");
                let mut r = (
                    StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(ErrorBody {
                        code: "storage_unavailable".into(),
                        message: format!("{}; retry in {STORAGE_RETRY_AFTER} s", u.describe()),
                        field: None,
                    }),
                )
                    .into_response();
                r.headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from(STORAGE_RETRY_AFTER));
                return r;
            }
            e @ (Error::Store(_) | Error::Blob(_) | Error::Internal(_)) => {
                let id = uuid_like();
                tracing::error!(error = %e, error_id = %id, "internal error");
                let busy = matches!(&e, Error::Store(s) if s.is_retryable());
                let status = if busy {
                    StatusCode::SERVICE_UNAVAILABLE
                } else {
                    StatusCode::INTERNAL_SERVER_ERROR
                };
                (
                    status,
                    "internal".into(),
                    format!("internal error (reference {id})"),
                    None,
                )
            }
        };
        (
            status,
            axum::Json(ErrorBody {
                code,
                message,
                field,
            }),
        )
            .into_response()
    }
}

/// Seconds a client waits before retrying a call the storage could not serve.
pub const STORAGE_RETRY_AFTER: u32 = 2;

fn uuid_like() -> String {
    use std::time::{SystemTime, UNIX_EPOCH};
    let n = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("{:x}", n & 0xffff_ffff_ffff)
}
