//! The operator WebSocket `/api/v1/ws`: pushes the events addressed to the signed-in user.
//!
//! Audiences are resolved when the event is committed, so a transfer away from an operator
//! stops their socket from receiving that chat's messages at once. The socket re-checks its
//! session periodically and closes when it has ended.

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
    Ok(ws.on_upgrade(move |socket| serve(s, p, socket)))
}

async fn serve(s: AppState, p: Principal, mut socket: WebSocket) {
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
            || still_valid(&s, &p),
        )
        .await;
    }
    let _ = socket.send(Message::Close(None)).await;
    metrics::gauge!("ferrydesk_ws_connections").decrement(1.0);
}

/// Forwards the bus events `wants` accepts to the socket as JSON, sends `resync` when the
/// socket fell behind, and every 30 s pings it and asks `valid` whether to go on. Returns when
/// the client leaves, the socket fails or `valid` says no. Shared by operator and visitor sockets.
pub(crate) async fn pump<W, V, F>(
    socket: &mut WebSocket,
    mut rx: tokio::sync::broadcast::Receiver<std::sync::Arc<ferrydesk_desk::Event>>,
    wants: W,
    valid: V,
) where
    W: Fn(&ferrydesk_desk::Audience) -> bool,
    V: Fn() -> F,
    F: std::future::Future<Output = bool>,
{
    let mut recheck = tokio::time::interval(Duration::from_secs(30));
    recheck.tick().await;
    loop {
        tokio::select! {
            ev = rx.recv() => match ev {
                Ok(ev) if wants(&ev.to) => {
                    let Ok(text) = serde_json::to_string(&ev.body) else { continue };
                    if socket.send(Message::Text(text.into())).await.is_err() { break; }
                }
                Ok(_) => {}
                // Missed events: the client reloads its lists.
                Err(RecvError::Lagged(_)) => {
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

async fn still_valid(s: &AppState, p: &Principal) -> bool {
    match &p.via {
        ferrydesk_desk::auth::Via::Session { token_hash, .. } => {
            let Ok(mut conn) = s.desk.store().read().await else {
                return true;
            };
            matches!(
                ferrydesk_store::security::session_user(
                    &mut conn,
                    token_hash,
                    ferrydesk_domain::Ts::now()
                )
                .await,
                Ok(Some(_))
            )
        }
        ferrydesk_desk::auth::Via::Token => true,
    }
}
