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

/// The client's address as the throttles count it: the socket's peer address, or — when the
/// peer is one of the `trusted_proxies` — the right-most address of `X-Forwarded-For` that is
/// not a trusted proxy. IPv6 addresses count by their /64 (one host usually owns a whole /64);
/// IPv4-mapped IPv6 addresses count as IPv4. `unknown` when the server runs without socket
/// information (tests calling the router directly).
pub struct ClientAddr(pub String);

impl axum::extract::FromRequestParts<AppState> for ClientAddr {
    type Rejection = std::convert::Infallible;
    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        s: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let peer = parts
            .extensions
            .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
            .map(|c| c.0.ip());
        Ok(ClientAddr(match peer {
            Some(peer) => address_key(client_ip(peer, &parts.headers, &s.trusted_proxies)),
            None => "unknown".into(),
        }))
    }
}

/// Parses the `trusted_proxies` setting: addresses (`10.0.0.1`) or networks (`10.0.0.0/8`).
pub fn parse_trusted_proxies(list: &[String]) -> Result<Vec<ipnet::IpNet>, String> {
    list.iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<ipnet::IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| format!("trusted_proxies: {s:?} is not an IP address or network"))
        })
        .collect()
}

fn canonical(ip: std::net::IpAddr) -> std::net::IpAddr {
    match ip {
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().map(std::net::IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// The client's IP: the peer, or behind trusted proxies the last untrusted hop they report.
pub(crate) fn client_ip(
    peer: std::net::IpAddr,
    headers: &HeaderMap,
    trusted: &[ipnet::IpNet],
) -> std::net::IpAddr {
    let peer = canonical(peer);
    let is_trusted = |ip: &std::net::IpAddr| trusted.iter().any(|n| n.contains(ip));
    if !is_trusted(&peer) {
        if headers.contains_key("x-forwarded-for") {
            warn_untrusted_proxy(peer);
        }
        return peer;
    }
    let mut client = peer;
    // Several X-Forwarded-For headers are one list, in order.
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(v) = value.to_str() else { return client };
        for hop in v.rsplit(',') {
            let Ok(ip) = hop.trim().parse::<std::net::IpAddr>() else {
                return client;
            };
            client = canonical(ip);
            if !is_trusted(&client) {
                return client;
            }
        }
    }
    client
}

/// Logs once per process that a peer sent `X-Forwarded-For` without being a trusted proxy:
/// behind a reverse proxy that is not listed, every client shares the proxy's address, so one
/// client's failed logins slow everyone down.
fn warn_untrusted_proxy(peer: std::net::IpAddr) {
    static WARNED: std::sync::Once = std::sync::Once::new();
    WARNED.call_once(|| {
        tracing::warn!(
            %peer,
            "a request carried X-Forwarded-For from a peer not in trusted_proxies; the header \
             is ignored and the peer's address counts for throttling. Behind a reverse proxy, \
             list it in trusted_proxies"
        );
    });
}

/// The throttle key of an address: IPv4 as is, IPv6 by its /64.
pub(crate) fn address_key(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(v4) => v4.to_string(),
        std::net::IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}

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

/// Logs in and sets the session cookie (HttpOnly, SameSite=Strict). Attempts are throttled
/// per username and client address and per client address: 429 with `Retry-After`.
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth", request_body = LoginRequest,
    responses((status = 200, body = Me), (status = 401, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn login(
    State(s): State<AppState>,
    ClientAddr(client): ClientAddr,
    Json(req): Json<LoginRequest>,
) -> ApiResult<Response> {
    let ok = s.desk.login(&req.username, &req.password, &client).await?;
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
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("an IP address")
    }

    fn xff(v: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in v {
            h.append(
                "x-forwarded-for",
                HeaderValue::from_str(v).expect("a header value"),
            );
        }
        h
    }

    #[test]
    fn forwarded_for_only_from_trusted_proxies() {
        let trusted = parse_trusted_proxies(&["10.0.0.0/8".into(), "192.0.2.1".into()])
            .expect("valid proxies");
        let h = xff(&["198.51.100.7"]);
        // An untrusted peer cannot choose its address.
        assert_eq!(
            client_ip(ip("203.0.113.9"), &h, &trusted),
            ip("203.0.113.9")
        );
        assert_eq!(client_ip(ip("203.0.113.9"), &h, &[]), ip("203.0.113.9"));
        // A trusted proxy reports the client.
        assert_eq!(client_ip(ip("10.1.2.3"), &h, &trusted), ip("198.51.100.7"));
        // The right-most untrusted hop wins: a client cannot prepend a fake one.
        let h = xff(&["1.1.1.1, 198.51.100.7, 10.0.0.5"]);
        assert_eq!(client_ip(ip("192.0.2.1"), &h, &trusted), ip("198.51.100.7"));
        let h = xff(&["1.1.1.1", "198.51.100.7"]);
        assert_eq!(client_ip(ip("192.0.2.1"), &h, &trusted), ip("198.51.100.7"));
        // Garbage stops the walk at the last good hop.
        let h = xff(&["nonsense, 10.0.0.7"]);
        assert_eq!(client_ip(ip("10.0.0.1"), &h, &trusted), ip("10.0.0.7"));
        // Mapped IPv4 is IPv4.
        assert_eq!(
            client_ip(ip("::ffff:10.0.0.1"), &h, &trusted),
            ip("10.0.0.7")
        );
        assert!(parse_trusted_proxies(&["10.0.0.0/33".into()]).is_err());
        assert!(parse_trusted_proxies(&["proxy.local".into()]).is_err());
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        assert_eq!(
            address_key(ip("2001:db8:1:2:aaaa::1")),
            address_key(ip("2001:db8:1:2:ffff::9"))
        );
        assert_ne!(
            address_key(ip("2001:db8:1:2::1")),
            address_key(ip("2001:db8:1:3::1"))
        );
        assert_eq!(address_key(ip("192.0.2.4")), "192.0.2.4");
    }
}
