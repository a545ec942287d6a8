//! Health, readiness and Prometheus metrics.

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;

use crate::AppState;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when this node can write: the storage watchdog finds the database reachable and a
/// one-row write commits within [`READY_DEADLINE`]. Otherwise 503 with the reason, at once.
async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    let store = s.desk.store();
    let verdict = match store.available() {
        Err(e) => Err(e.to_string()),
        Ok(()) => match tokio::time::timeout(READY_DEADLINE, store.probe_write()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(e
                .unavailable()
                .map(|u| u.describe().to_owned())
                .unwrap_or_else(|| format!("the database refused a write: {e}"))),
            Err(_) => Err(format!(
                "the database did not take a write within {} ms",
                READY_DEADLINE.as_millis()
            )),
        },
    };
    match verdict {
        Ok(()) => (StatusCode::OK, "ready".to_owned()).into_response(),
        Err(why) => {
            tracing::warn!(reason = %why, "not ready");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                [(header::RETRY_AFTER, "2")],
                why,
            )
                .into_response()
        }
    }
}

/// How long `/readyz` waits for its write.
const READY_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2);

async fn metrics(State(s): State<AppState>, headers: HeaderMap) -> impl IntoResponse {
    if let Some(token) = &s.metrics_token {
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if !constant_time_eq(given.as_bytes(), token.as_bytes()) {
            return (
                StatusCode::UNAUTHORIZED,
                [(header::WWW_AUTHENTICATE, "Bearer")],
                "metrics require a bearer token",
            )
                .into_response();
        }
    }
    match &s.metrics {
        Some(h) => (
            StatusCode::OK,
            [("content-type", "text/plain; version=0.0.4")],
            h.render(),
        )
            .into_response(),
        None => (StatusCode::NOT_FOUND, "metrics disabled").into_response(),
    }
}

pub async fn not_found() -> ApiError {
    ApiError(ferrydesk_desk::Error::not_found("route"))
}

/// Compares without an early exit, so the time taken does not tell how much of a guess matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}
