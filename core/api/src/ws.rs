//! The operator WebSocket `/api/v1/ws`: pushes the events addressed to the signed-in user.
//!
//! Audiences are resolved when the event is committed, so a transfer away from an operator
//! stops their socket from receiving that chat's messages at once. The socket re-checks its
//! session or API token when the user's credentials change (`credentials_changed`, sent by
//! every node), after missed events, and every 30 s; it closes when the credential has ended.

use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use axum::routing::get;
use ferrydesk_desk::Principal;
use tokio::sync::broadcast::error::RecvError;

use crate::AppState;
use crate::error::{ApiError, ApiResult};
use crate::extract::Auth;

pub fn router() -> Router<AppState> {
    Router::new().route("/ws", get(upgrade))
}

/// Upgrades to the event socket. Messages are JSON objects with a `type` (see `EventBody`).
#[utoipa::path(get, path = "/api/v1/ws", tag = "events", responses((status = 101, description = "WebSocket of events")))]
async fn upgrade(
    State(s): State<AppState>,
    Auth(p): Auth,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> ApiResult<Response> {
    // Browsers send cookies on cross-site WebSocket handshakes: refuse foreign origins.
    if let ferrydesk_desk::auth::Via::Session { .. } = p.via
        && let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok())
    {
        let host = headers
            .get(header::HOST)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let origin_host = origin.split("://").nth(1).unwrap_or_default();
        if origin_host != host {
            return Err(ApiError(ferrydesk_desk::Error::forbidden(
                "cross-origin WebSocket refused",
            )));
        }
    }
    // A token socket re-checks its own token (a session socket its session).
    let token_hash = match p.via {
        ferrydesk_desk::auth::Via::Token => headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(|t| ferrydesk_desk::auth::hash_secret(t.trim())),
        ferrydesk_desk::auth::Via::Session { .. } => None,
    };
    Ok(ws.on_upgrade(move |socket| serve(s, p, token_hash, socket)))
}

async fn serve(s: AppState, p: Principal, token_hash: Option<String>, mut socket: WebSocket) {
    let rx = s.desk.bus().subscribe();
    metrics::gauge!("ferrydesk_ws_connections").increment(1.0);
    let hello = serde_json::json!({ "type": "hello", "user_id": p.id(), "status": p.user.status });
    if socket
        .send(Message::Text(hello.to_string().into()))
        .await
        .is_ok()
    {
        let user = p.id().clone();
        pump(
            &mut socket,
            rx,
            |to| to.includes_user(&user),
            || s.desk.credential_valid(&p, token_hash.as_deref()),
            RECHECK,
        )
        .await;
    }
    let _ = socket.send(Message::Close(None)).await;
    metrics::gauge!("ferrydesk_ws_connections").decrement(1.0);
}

/// How often an open socket re-checks its credential without being asked.
pub(crate) const RECHECK: Duration = Duration::from_secs(30);

/// Forwards the bus events `wants` accepts to the socket as JSON, sends `resync` when the
/// socket fell behind, and asks `valid` whether to go on: when a `credentials_changed` event
/// for it arrives (not forwarded), after missed events, and every `recheck` (with a ping).
/// Returns when the client leaves, the socket fails or `valid` says no. Shared by operator and
/// visitor sockets.
pub(crate) async fn pump<W, V, F>(
    socket: &mut WebSocket,
    mut rx: tokio::sync::broadcast::Receiver<std::sync::Arc<ferrydesk_desk::Event>>,
    wants: W,
    valid: V,
    recheck: Duration,
) where
    W: Fn(&ferrydesk_desk::Audience) -> bool,
    V: Fn() -> F,
    F: std::future::Future<Output = bool>,
{
    use ferrydesk_desk::EventBody;
    let mut recheck = tokio::time::interval(recheck);
    recheck.tick().await;
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) if wants(&ev.to) => {
                    // A credential may have ended (or, after missed events, may have).
                    let ended = matches!(
                        ev.body,
                        EventBody::CredentialsChanged { .. } | EventBody::Resync
                    );
                    if ended && !valid().await { break; }
                    if matches!(ev.body, EventBody::CredentialsChanged { .. }) { continue; }
                    let Ok(text) = serde_json::to_string(&ev.body) else { continue };
                    if socket.send(Message::Text(text.into())).await.is_err() { break; }
                }
                Ok(_) => {}
                // Missed events: the client reloads its lists.
                Err(RecvError::Lagged(_)) => {
                    if !valid().await { break; }
                    if socket.send(Message::Text(r#"{"type":"resync"}"#.into())).await.is_err() { break; }
                }
                Err(RecvError::Closed) => break,
            },
            m = socket.recv() => match m {
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                _ => {}
            },
            _ = recheck.tick() => {
                if !valid().await { break; }
                if socket.send(Message::Ping(Vec::new().into())).await.is_err() { break; }
            }
        }
    }
}
