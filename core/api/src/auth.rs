//! Login, logout, the current user, operator status and API tokens.

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post, put};
use axum::{Json as Out, Router};
use ferrydesk_domain::*;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::AppState;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Auth, Json, SESSION_COOKIE};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/auth/login", post(login))
        .route("/auth/logout", post(logout))
        .route("/auth/me", get(me))
        .route("/me/status", put(set_my_status))
        .route("/users/{id}/status", put(set_status))
        .route("/users/{id}/status-history", get(status_history))
        .route("/users/{id}/tokens", get(list_tokens).post(create_token))
        .route("/users/{id}/tokens/{token}", delete(revoke_token))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LoginRequest {
    pub username: String,
    pub password: String,
}

/// The signed-in user and the CSRF token to send as `x-csrf-token` on writes.
#[derive(Serialize, ToSchema)]
pub struct Me {
    pub user: User,
    pub csrf_token: Option<String>,
}

/// Logs in and sets the session cookie (HttpOnly, SameSite=Strict).
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = Me), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn login(State(s): State<AppState>, Json(req): Json<LoginRequest>) -> ApiResult<Response> {
    let ok = s.desk.login(&req.username, &req.password).await?;
    let max_age = (ok.expires_at.0 - Ts::now().0) / 1000;
    let secure = if s.secure_cookies { "; Secure" } else { "" };
    let cookie = format!(
        "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age}{secure}",
        ok.session_token
    );
    let mut headers = HeaderMap::new();
    if let Ok(v) = HeaderValue::from_str(&cookie) {
        headers.insert(header::SET_COOKIE, v);
    }
    Ok((
        headers,
        Out(Me {
            user: ok.user,
            csrf_token: Some(ok.csrf_token),
        }),
    )
        .into_response())
}

/// Ends the session; the operator becomes Inactive (S3).
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth", responses((status = 204)))]
async fn logout(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<Response> {
    s.desk.logout(&p).await?;
    let cookie = format!("{SESSION_COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0");
    Ok(([(header::SET_COOKIE, cookie)], StatusCode::NO_CONTENT).into_response())
}

#[utoipa::path(get, path = "/api/v1/auth/me", tag = "auth", responses((status = 200, body = Me), (status = 401, body = ErrorBody)))]
async fn me(Auth(p): Auth) -> Out<Me> {
    let csrf = match &p.via {
        ferrydesk_desk::auth::Via::Session { csrf, .. } => Some(csrf.clone()),
        ferrydesk_desk::auth::Via::Token => None,
    };
    Out(Me {
        user: p.user,
        csrf_token: csrf,
    })
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StatusRequest {
    pub status: OperatorStatus,
}

/// Sets the caller's status Active / Inactive (S2).
#[utoipa::path(put, path = "/api/v1/me/status", tag = "operators", request_body = StatusRequest, responses((status = 200, body = User)))]
async fn set_my_status(
    State(s): State<AppState>,
    Auth(p): Auth,
    Json(r): Json<StatusRequest>,
) -> ApiResult<Out<User>> {
    let id = p.id().clone();
    Ok(Out(s.desk.set_status(&p, &id, r.status).await?))
}

/// Sets another operator's status (supervisors, admins).
#[utoipa::path(put, path = "/api/v1/users/{id}/status", tag = "operators", request_body = StatusRequest, responses((status = 200, body = User)))]
async fn set_status(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(r): Json<StatusRequest>,
) -> ApiResult<Out<User>> {
    Ok(Out(s.desk.set_status(&p, &UserId(id), r.status).await?))
}

/// Status history: who, when, why (manual, logout, missed accept, …).
#[utoipa::path(get, path = "/api/v1/users/{id}/status-history", tag = "operators", responses((status = 200, body = Vec<StatusChange>)))]
async fn status_history(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<Vec<StatusChange>>> {
    Ok(Out(s.desk.status_history(&p, &UserId(id)).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    pub name: String,
}

#[derive(Serialize, ToSchema)]
pub struct TokenInfo {
    pub id: TokenId,
    pub name: String,
    pub created_at: Ts,
    pub revoked: bool,
    /// Only in the answer to creation; only its hash is stored.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

#[utoipa::path(get, path = "/api/v1/users/{id}/tokens", tag = "auth", responses((status = 200, body = Vec<TokenInfo>)))]
async fn list_tokens(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<Vec<TokenInfo>>> {
    let list = s.desk.list_api_tokens(&p, &UserId(id)).await?;
    Ok(Out(list
        .into_iter()
        .map(|(id, name, created_at, revoked)| TokenInfo {
            id,
            name,
            created_at,
            revoked,
            token: None,
        })
        .collect()))
}

/// Creates an API token for integrations (`Authorization: Bearer …`).
#[utoipa::path(post, path = "/api/v1/users/{id}/tokens", tag = "auth", request_body = TokenRequest, responses((status = 201, body = TokenInfo)))]
async fn create_token(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(r): Json<TokenRequest>,
) -> ApiResult<(StatusCode, Out<TokenInfo>)> {
    let (tid, token) = s.desk.create_api_token(&p, &UserId(id), &r.name).await?;
    Ok((
        StatusCode::CREATED,
        Out(TokenInfo {
            id: tid,
            name: r.name,
            created_at: Ts::now(),
            revoked: false,
            token: Some(token),
        }),
    ))
}

#[utoipa::path(delete, path = "/api/v1/users/{id}/tokens/{token}", tag = "auth", responses((status = 204)))]
async fn revoke_token(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path((id, token)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    s.desk
        .revoke_api_token(&p, &UserId(id), &TokenId(token))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}
