//! The website widget: `/widget.js` (one `<script>` tag on any site), the visitor API under
//! `/widget/v1` (CORS-open, authenticated by the visitor token, never by cookies) and a demo
//! page.

use axum::extract::ws::{Message as WsMessage, WebSocket};
use axum::extract::{FromRequestParts, Path, State, WebSocketUpgrade};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json as Out, Router};
use ferrydesk_desk::blobs::Uploader;
use ferrydesk_desk::ingest::IngestOutcome;
use ferrydesk_desk::widget::{Visitor, VisitorSession};
use ferrydesk_domain::*;
use serde::Deserialize;
use tower_http::cors::{Any, CorsLayer};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Query, bearer};
use crate::files::{file_response, read_file_field};

const WIDGET_JS: &str = include_str!("../assets/widget.js");
const DEMO_HTML: &str = include_str!("../assets/demo.html");

pub fn router(state: &AppState, file_limit: usize) -> Router<AppState> {
    // The widget reads `Retry-After` and `Idempotent-Replayed` across origins; the idempotency
    // layer sits inside CORS so that its own answers (409, 422) carry the CORS headers too.
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods(Any)
        .allow_headers(Any)
        .expose_headers([header::RETRY_AFTER, crate::idempotency::REPLAYED]);
    use crate::idempotency::keyed;
    let json = Router::new()
        .route("/sessions", post(session))
        .route("/messages", get(transcript).post(send))
        .route("/files/{id}", get(download))
        .route("/ws", get(ws));
    let files = Router::new().route("/files", post(upload));
    let api = keyed(json, state, crate::JSON_LIMIT)
        .merge(keyed(files, state, file_limit))
        .layer(cors);
    Router::new()
        .route("/widget.js", get(script))
        .route("/widget/demo", get(demo))
        .nest("/widget/v1", api)
}

async fn script() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                "application/javascript; charset=utf-8",
            ),
            (header::CACHE_CONTROL, "public, max-age=300"),
        ],
        WIDGET_JS,
    )
        .into_response()
}

#[derive(Deserialize)]
struct DemoQuery {
    key: Option<String>,
}

/// A page that embeds the widget, for trying it out (`?key=` the channel's public key).
async fn demo(State(s): State<AppState>, Query(q): Query<DemoQuery>) -> ApiResult<Html<String>> {
    let key = match q.key {
        Some(k) => k,
        None => {
            let mut conn = s
                .desk
                .store()
                .read()
                .await
                .map_err(|e| ApiError(e.into()))?;
            ferrydesk_store::directory::list_channels(&mut conn)
                .await
                .map_err(|e| ApiError(e.into()))?
                .into_iter()
                .find_map(|c| c.public_key)
                .ok_or_else(|| ApiError(ferrydesk_desk::Error::not_found("widget channel")))?
        }
    };
    let key: String = key
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect();
    Ok(Html(DEMO_HTML.replace("{{KEY}}", &key)))
}

/// The visitor behind `Authorization: Bearer fdv_…` (or `?token=` where headers cannot be set:
/// WebSocket, images).
pub struct VisitorAuth(pub Visitor);

impl FromRequestParts<AppState> for VisitorAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Self::Rejection> {
        let from_query = parts.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("token="))
                .map(str::to_owned)
        });
        let token = bearer(parts)
            .map(str::to_owned)
            .or(from_query)
            .ok_or(ApiError(ferrydesk_desk::Error::Unauthenticated))?;
        Ok(VisitorAuth(
            s.desk.authenticate_visitor(&token, true).await?,
        ))
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SessionRequest {
    /// The widget channel's public key (from the `<script>` tag).
    pub key: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// Starts a visitor session; the widget keeps the token in localStorage. Limited per client
/// address (429 with `Retry-After`); the token ends after a period without use (then 401 and
/// the widget starts a new session).
#[utoipa::path(post, path = "/widget/v1/sessions", tag = "widget", request_body = SessionRequest, responses((status = 201, body = VisitorSession), (status = 404, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn session(
    State(s): State<AppState>,
    crate::auth::ClientAddr(client): crate::auth::ClientAddr,
    Json(r): Json<SessionRequest>,
) -> ApiResult<(StatusCode, Out<VisitorSession>)> {
    Ok((
        StatusCode::CREATED,
        Out(s
            .desk
            .visitor_session(&r.key, r.name.as_deref(), &client)
            .await?),
    ))
}

/// The visitor's conversation so far.
#[utoipa::path(get, path = "/widget/v1/messages", tag = "widget", responses((status = 200, body = Vec<ferrydesk_domain::Message>)))]
async fn transcript(
    State(s): State<AppState>,
    VisitorAuth(v): VisitorAuth,
) -> ApiResult<Out<Vec<ferrydesk_domain::Message>>> {
    Ok(Out(s.desk.visitor_transcript(&v).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VisitorMessage {
    #[serde(default)]
    pub text: String,
    /// A client-generated id: retries with the same id are stored once.
    #[serde(default)]
    pub client_id: Option<String>,
    #[serde(default)]
    pub files: Vec<FileId>,
}

/// Sends a visitor message.
#[utoipa::path(post, path = "/widget/v1/messages", tag = "widget", request_body = VisitorMessage, responses((status = 201, body = IngestOutcome)))]
async fn send(
    State(s): State<AppState>,
    VisitorAuth(v): VisitorAuth,
    Json(m): Json<VisitorMessage>,
) -> ApiResult<(StatusCode, Out<IngestOutcome>)> {
    let out = s
        .desk
        .visitor_send(&v, &m.text, m.client_id.as_deref(), m.files)
        .await?;
    Ok((
        if out.duplicate {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        Out(out),
    ))
}

/// Uploads a visitor file (multipart field `file`).
#[utoipa::path(post, path = "/widget/v1/files", tag = "widget", request_body(content_type = "multipart/form-data", content = String), responses((status = 201, body = Attachment)))]
async fn upload(
    State(s): State<AppState>,
    VisitorAuth(v): VisitorAuth,
    crate::files::FormData(mp): crate::files::FormData,
) -> ApiResult<(StatusCode, Out<Attachment>)> {
    let (name, ct, bytes) = read_file_field(mp, s.desk.options().max_file_bytes).await?;
    Ok((
        StatusCode::CREATED,
        Out(s
            .desk
            .upload(Uploader::Visitor(&v.identity.id), &name, &ct, bytes)
            .await?),
    ))
}

#[utoipa::path(get, path = "/widget/v1/files/{id}", tag = "widget", responses((status = 200, body = Vec<u8>)))]
async fn download(
    State(s): State<AppState>,
    VisitorAuth(v): VisitorAuth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (a, bytes) = s.desk.visitor_download(&v, &FileId(id)).await?;
    Ok(file_response(&a, bytes))
}

/// The visitor's live socket: operator replies and chat completion.
#[utoipa::path(get, path = "/widget/v1/ws", tag = "widget", responses((status = 101)))]
async fn ws(
    State(s): State<AppState>,
    VisitorAuth(v): VisitorAuth,
    up: WebSocketUpgrade,
    axum::extract::RawQuery(q): axum::extract::RawQuery,
    headers: axum::http::HeaderMap,
) -> Response {
    // The token `VisitorAuth` accepted, in the same order, for the socket's re-checks.
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(|t| t.trim().to_owned())
        .or_else(|| {
            q.as_deref()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
                .map(str::to_owned)
        })
        .unwrap_or_default();
    up.on_upgrade(move |socket| serve(s, v, token, socket))
}

async fn serve(s: AppState, v: Visitor, token: String, mut socket: WebSocket) {
    let rx = s.desk.bus().subscribe();
    let me = v.identity.id.clone();
    // The session is re-checked (not renewed) while the socket is open: an idle session that
    // expires closes it.
    let recheck = crate::ws::RECHECK.min(s.desk.options().visitor_session_ttl / 2);
    crate::ws::pump(
        &mut socket,
        rx,
        |to| to.includes_visitor(&me),
        || {
            let desk = s.desk.clone();
            let token = token.clone();
            async move {
                !matches!(
                    desk.authenticate_visitor(&token, false).await,
                    Err(ferrydesk_desk::Error::Unauthenticated)
                )
            }
        },
        recheck.max(std::time::Duration::from_millis(200)),
    )
    .await;
    let _ = socket.send(WsMessage::Close(None)).await;
}
