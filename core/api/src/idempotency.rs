//! `Idempotency-Key` on every mutating request (POST, PUT, PATCH, DELETE), as Stripe and the
//! IETF draft `draft-ietf-httpapi-idempotency-key-header` define it: the first request with a
//! key runs and its answer is stored for 24 hours; a retry with the same key, caller and
//! request (method, path, query, body) gets that answer again with `Idempotent-Replayed: true`
//! and changes nothing. A key is scoped to the caller and the operation (method and path); the
//! same key with a different query or body there is `422 idempotency_key_reused`; a retry while the first request still runs is `409
//! idempotency_key_in_flight` with `Retry-After`. Keys belong to the caller's credential
//! (session cookie or bearer token); a request without one (logging in, opening a widget
//! session) ignores the key. Server errors (5xx) are not stored, so a retry runs again; nor are
//! answers over [`MAX_STORED`] or `429`.
//!
//! Limits: a key is 1–255 visible ASCII characters. A node that dies between its write and
//! recording the answer leaves the key claimed: retries get `409` for [`ABANDON_AFTER_MS`],
//! then the request runs again.

use std::sync::atomic::{AtomicU64, Ordering};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use ferrydesk_store::idempotency::{self as store, Claim, Stored};
use sha2::Digest;

use crate::AppState;
use crate::error::ErrorBody;

/// The request header.
pub const HEADER: &str = "idempotency-key";
/// Set on a replayed answer.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// How long a key is kept.
pub const KEEP_MS: i64 = 24 * 3600 * 1000;
/// After this long without an answer, a claimed key's request counts as abandoned.
pub const ABANDON_AFTER_MS: i64 = 60_000;
/// Answers larger than this are not stored (the key is released).
pub const MAX_STORED: usize = 1 << 20;

static CLAIMS: AtomicU64 = AtomicU64::new(0);

fn error(status: StatusCode, code: &str, message: String) -> Response {
    (
        status,
        axum::Json(ErrorBody {
            code: code.into(),
            message,
            field: Some("Idempotency-Key".into()),
        }),
    )
        .into_response()
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Keys the routes of `router`, whose bodies may be up to `max_body` bytes: that limit is
/// also the router's `DefaultBodyLimit`, so a keyed request is buffered (to hash it) no further
/// than its handler would read it. A route layer: only requests that reach a handler are keyed.
pub fn keyed(
    router: axum::Router<AppState>,
    state: &AppState,
    max_body: usize,
) -> axum::Router<AppState> {
    router
        .layer(axum::extract::DefaultBodyLimit::max(max_body))
        .route_layer(axum::middleware::from_fn_with_state(
            Keyed {
                state: state.clone(),
                max_body,
            },
            layer,
        ))
}

#[derive(Clone)]
struct Keyed {
    state: AppState,
    max_body: usize,
}

/// The caller's credential (session cookie or `Authorization`), or `None` without one.
fn credential(req: &Request) -> Option<String> {
    let h = req.headers();
    let credential = h
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            h.get_all(header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .map(str::trim)
                .find(|c| c.starts_with(crate::extract::SESSION_COOKIE))
                .map(str::to_owned)
        })?;
    Some(credential)
}

/// The middleware.
async fn layer(State(k): State<Keyed>, req: Request, next: Next) -> Response {
    let Keyed { state: s, max_body } = k;
    let mutating = matches!(
        *req.method(),
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    );
    let Some(key) = req.headers().get(HEADER).filter(|_| mutating).cloned() else {
        return next.run(req).await;
    };
    let key = match key.to_str() {
        Ok(k) if !k.is_empty() && k.len() <= 255 && k.bytes().all(|b| b.is_ascii_graphic()) => {
            k.to_owned()
        }
        _ => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid",
                "Idempotency-Key: must be 1–255 visible ASCII characters".into(),
            );
        }
    };
    let Some(credential) = credential(&req) else {
        return next.run(req).await;
    };
    // A key belongs to one caller and one operation (method and path): the same key sent to
    // another endpoint is another key, as with per-resource keys in the IETF draft.
    let scope = hex::encode(sha2::Sha256::digest(
        format!("{credential}\n{} {}", req.method(), req.uri().path()).as_bytes(),
    ));
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, max_body).await {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("this request may carry at most {max_body} bytes"),
            );
        }
    };
    let mut h = sha2::Sha256::new();
    h.update(parts.method.as_str());
    h.update(b"\n");
    h.update(
        parts
            .uri
            .path_and_query()
            .map(|p| p.as_str())
            .unwrap_or_default(),
    );
    h.update(b"\n");
    h.update(&bytes);
    let request_hash = hex::encode(h.finalize());

    let store = s.desk.store();
    let claimed = async {
        let mut tx = store.begin().await?;
        let c = store::claim(
            &mut tx,
            &scope,
            &key,
            &request_hash,
            now_ms(),
            ABANDON_AFTER_MS,
        )
        .await?;
        tx.commit().await?;
        Ok::<_, ferrydesk_store::Error>(c)
    }
    .await;
    match claimed {
        Err(e) => return crate::error::ApiError(e.into()).into_response(),
        Ok(Claim::Mismatch) => {
            return error(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                "this Idempotency-Key was used for a different request (method, path or body); use a new key for a new request".into(),
            );
        }
        Ok(Claim::InFlight) => {
            let mut r = error(
                StatusCode::CONFLICT,
                "idempotency_key_in_flight",
                "the first request with this Idempotency-Key is still running; retry in 1 s".into(),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return r;
        }
        Ok(Claim::Done(stored)) => return replay(stored),
        Ok(Claim::Run) => {}
    }
    if CLAIMS.fetch_add(1, Ordering::Relaxed).is_multiple_of(256) {
        purge(s.clone());
    }

    // The request runs to its end and its answer is recorded even if the client goes away
    // (a lost answer is what the key is for): hyper drops a request's future when its
    // connection closes, so the work is a task of its own.
    let store = store.clone();
    let run = tokio::spawn(async move {
        let resp = next
            .run(Request::from_parts(parts, Body::from(bytes)))
            .await;
        let status = resp.status();
        let keep = !status.is_server_error() && status != StatusCode::TOO_MANY_REQUESTS;
        let (rparts, rbody) = resp.into_parts();
        // Handlers answer from memory, so the size is known; an answer of unknown or too large a
        // size is passed on untouched and its key released.
        let small = axum::body::HttpBody::size_hint(&rbody)
            .exact()
            .is_some_and(|n| n as usize <= MAX_STORED);
        let (rbody, text) = if small && keep {
            match axum::body::to_bytes(rbody, MAX_STORED).await {
                Ok(b) => {
                    let text = std::str::from_utf8(&b).ok().map(str::to_owned);
                    (Body::from(b), text)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading an answer to store it");
                    (Body::empty(), None)
                }
            }
        } else {
            (rbody, None)
        };
        let recorded = async {
            let mut tx = store.begin().await?;
            match &text {
                Some(body) => {
                    let answer = Stored {
                        status: status.as_u16(),
                        content_type: rparts
                            .headers
                            .get(header::CONTENT_TYPE)
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned),
                        body: body.clone(),
                    };
                    store::finish(&mut tx, &scope, &key, &answer).await?;
                }
                None => store::release(&mut tx, &scope, &key).await?,
            }
            tx.commit().await?;
            Ok::<_, ferrydesk_store::Error>(())
        }
        .await;
        if let Err(e) = recorded {
            // The write itself happened; a retry within ABANDON_AFTER_MS gets 409, later it runs
            // again. Nothing better can be done without the storage.
            tracing::warn!(error = %e, "could not record an idempotent answer");
        }

        Response::from_parts(rparts, rbody)
    });
    match run.await {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(error = %e, "an idempotent request's task failed");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error".into(),
            )
        }
    }
}

fn replay(stored: Stored) -> Response {
    let mut r = Response::new(Body::from(stored.body));
    *r.status_mut() = StatusCode::from_u16(stored.status).unwrap_or(StatusCode::OK);
    if let Some(ct) = stored
        .content_type
        .and_then(|c| HeaderValue::from_str(&c).ok())
    {
        r.headers_mut().insert(header::CONTENT_TYPE, ct);
    }
    r.headers_mut()
        .insert(REPLAYED, HeaderValue::from_static("true"));
    r
}

/// Deletes expired keys, a batch at a time, off the request path.
fn purge(s: AppState) {
    tokio::spawn(async move {
        let store = s.desk.store();
        let run = async {
            let mut tx = store.begin().await?;
            let n = store::purge(&mut tx, now_ms() - KEEP_MS, 1000).await?;
            tx.commit().await?;
            Ok::<_, ferrydesk_store::Error>(n)
        };
        match run.await {
            Ok(n) if n > 0 => tracing::debug!(deleted = n, "expired idempotency keys"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "purging idempotency keys"),
        }
    });
}
