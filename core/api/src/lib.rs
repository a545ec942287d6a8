//! HTTP and WebSocket API of Ferrydesk: REST under `/api/v1`, the operator WebSocket, the
//! widget endpoints and `/widget.js`, health and metrics. Handlers translate HTTP to desk calls
//! and back; every rule (RBAC, visibility, validation) lives in the desk.

mod auth;
mod channel;
mod chats;
mod directory;
pub mod error;
mod extract;
mod files;
mod headers;
pub mod idempotency;
mod openapi;
mod ops;
mod plugins;
mod processes;
mod webapp;
mod widget;
mod ws;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use ferrydesk_desk::Desk;
use metrics_exporter_prometheus::PrometheusHandle;
use tower_http::trace::TraceLayer;

pub use auth::parse_trusted_proxies;
pub use extract::{CSRF_HEADER, SESSION_COOKIE};
pub use openapi::ApiDoc;

/// Largest JSON body.
pub const JSON_LIMIT: usize = 256 * 1024;

/// State shared by handlers.
#[derive(Clone)]
pub struct AppState {
    pub desk: Desk,
    pub plugins: ferrydesk_plugins::Plugins,
    pub engine: ferrydesk_engine::Engine,
    pub metrics: Option<PrometheusHandle>,
    /// Mark the session cookie `Secure` (behind HTTPS).
    pub secure_cookies: bool,
    /// Proxies whose `X-Forwarded-For` names the client (login and widget-session throttles).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// When set, `/metrics` answers only `Authorization: Bearer <token>`.
    pub metrics_token: Option<String>,
}

/// The whole application router.
pub fn router(state: AppState) -> Router {
    let file_limit = state.desk.options().max_file_bytes as usize + 64 * 1024;
    use idempotency::keyed;
    let json = Router::new()
        .merge(auth::router())
        .merge(chats::router())
        .merge(directory::router())
        .merge(channel::router())
        .merge(plugins::router())
        .merge(processes::router())
        .merge(ws::router());
    let api = keyed(json, &state, JSON_LIMIT)
        .merge(keyed(files::router(), &state, file_limit))
        .merge(keyed(plugins::package_router(), &state, 17 << 20))
        .merge(keyed(processes::deploy_router(), &state, 4 << 20));
    Router::new()
        .nest("/api/v1", api)
        .merge(plugins::webhook_router().layer(DefaultBodyLimit::max(4 << 20)))
        .merge(widget::router(&state, file_limit))
        .merge(ops::router())
        .merge(openapi::router())
        .merge(webapp::router())
        .fallback(webapp::page)
        .layer(axum::middleware::from_fn(headers::security_headers))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}
