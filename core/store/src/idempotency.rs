//! Idempotency keys: the stored first answer of a mutating request sent with an
//! `Idempotency-Key`, per caller (`scope`), for 24 hours.

use crate::{Conn, Result};

/// What a request with a key may do.
#[derive(Debug, PartialEq)]
pub enum Claim {
    /// First use of the key (or a takeover of one whose first request was abandoned): run it.
    Run,
    /// The first request with this key is still running.
    InFlight,
    /// The key was used for a different request.
    Mismatch,
    /// Answered before: replay this.
    Done(Stored),
}

/// A stored answer.
#[derive(Debug, PartialEq)]
pub struct Stored {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

/// request_hash, created_at, status, content_type, body.
type KeyRow = (String, i64, Option<i32>, Option<String>, Option<String>);

/// Claims `key` for a request. A key whose first request has been running for longer than
/// `abandon_after_ms` (its node died before recording the answer) is taken over.
pub async fn claim(
    conn: &mut Conn,
    scope: &str,
    key: &str,
    request_hash: &str,
    now_ms: i64,
    abandon_after_ms: i64,
) -> Result<Claim> {
    let inserted = sqlx::query(
        "INSERT INTO idempotency_keys (scope, key, request_hash, created_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (scope, key) DO NOTHING",
    )
    .bind(scope)
    .bind(key)
    .bind(request_hash)
    .bind(now_ms)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::Run);
    }
    let row: Option<KeyRow> = sqlx::query_as(
        "SELECT request_hash, created_at, status, content_type, body FROM idempotency_keys \
         WHERE scope = $1 AND key = $2",
    )
    .bind(scope)
    .bind(key)
    .fetch_optional(&mut *conn)
    .await?;
    let Some((hash, created_at, status, content_type, body)) = row else {
        // Purged or released between the two statements: take it.
        return Box::pin(claim(
            conn,
            scope,
            key,
            request_hash,
            now_ms,
            abandon_after_ms,
        ))
        .await;
    };
    if hash != request_hash {
        return Ok(Claim::Mismatch);
    }
    match status {
        Some(s) => Ok(Claim::Done(Stored {
            status: s as u16,
            content_type,
            body: body.unwrap_or_default(),
        })),
        None if now_ms - created_at > abandon_after_ms => {
            let taken = sqlx::query(
                "UPDATE idempotency_keys SET created_at = $3 \
                 WHERE scope = $1 AND key = $2 AND status IS NULL AND created_at = $4",
            )
            .bind(scope)
            .bind(key)
            .bind(now_ms)
            .bind(created_at)
            .execute(&mut *conn)
            .await?
            .rows_affected();
            Ok(if taken == 1 {
                Claim::Run
            } else {
                Claim::InFlight
            })
        }
        None => Ok(Claim::InFlight),
    }
}

/// Records the answer of a claimed key.
pub async fn finish(conn: &mut Conn, scope: &str, key: &str, answer: &Stored) -> Result<()> {
    sqlx::query(
        "UPDATE idempotency_keys SET status = $3, content_type = $4, body = $5 \
         WHERE scope = $1 AND key = $2",
    )
    .bind(scope)
    .bind(key)
    .bind(answer.status as i32)
    .bind(answer.content_type.as_deref())
    .bind(&answer.body)
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets a claimed key whose request failed in a way a retry may fix (a server error).
pub async fn release(conn: &mut Conn, scope: &str, key: &str) -> Result<()> {
    sqlx::query("DELETE FROM idempotency_keys WHERE scope = $1 AND key = $2 AND status IS NULL")
        .bind(scope)
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes up to `limit` keys created before `before_ms`; returns how many.
pub async fn purge(conn: &mut Conn, before_ms: i64, limit: i64) -> Result<u64> {
    Ok(sqlx::query(
        "DELETE FROM idempotency_keys WHERE (scope, key) IN \
         (SELECT scope, key FROM idempotency_keys WHERE created_at < $1 LIMIT $2)",
    )
    .bind(before_ms)
    .bind(limit)
    .execute(conn)
    .await?
    .rows_affected())
}
