//! Health, readiness and Prometheus metrics.

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;

use crate::AppState;
use crate::error::ApiError;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
}

/// Until the operator web app is embedded here, the root page points to what the server offers.
async fn index() -> axum::response::Html<&'static str> {
    axum::response::Html(
        "<!doctype html><html lang=en><meta charset=utf-8><title>Ferrydesk</title>\
         <body style='font:16px/1.5 system-ui,sans-serif;max-width:640px;margin:40px auto'>\
         <h1>Ferrydesk is running</h1>\
         <p>The operator and admin web app is not part of this build yet; operators work through the API.</p>\
         <ul><li><a href=/widget/demo>Website widget demo page</a></li>\
         <li><a href=/api/openapi.json>REST API (OpenAPI 3)</a> &middot; WebSocket <code>/api/v1/ws</code></li>\
         <li><a href=/healthz>/healthz</a> &middot; <a href=/readyz>/readyz</a> &middot; <a href=/metrics>/metrics</a></li></ul>",
    )
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the database answers.
async fn readyz(State(s): State<AppState>) -> impl IntoResponse {
    match sqlx_ping(&s).await {
        Ok(()) => (StatusCode::OK, "ready"),
        Err(e) => {
            tracing::warn!(error = %e, "not ready");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable")
        }
    }
}

async fn sqlx_ping(s: &AppState) -> Result<(), ferrydesk_desk::Error> {
    let mut conn = s.desk.store().read().await?;
    ferrydesk_store::settings::get(&mut conn, "ping").await?;
    Ok(())
}

async fn metrics(State(s): State<AppState>) -> impl IntoResponse {
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
