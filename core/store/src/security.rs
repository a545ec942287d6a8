//! Sessions, API tokens, login throttling and widget visitor sessions. Only hashes of secrets
//! are stored.

use ferrydesk_domain::*;
use sqlx::AssertSqlSafe;

use crate::rows::{self, USER_COLS};
use crate::{Conn, Result};

pub async fn insert_session(
    conn: &mut Conn,
    token_hash: &str,
    user: &UserId,
    csrf: &str,
    now: Ts,
    expires: Ts,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO sessions (token_hash, user_id, csrf_token, created_at, expires_at, last_seen_at) \
         VALUES ($1, $2, $3, $4, $5, $4)",
    )
    .bind(token_hash)
    .bind(user.as_str())
    .bind(csrf)
    .bind(now.0)
    .bind(expires.0)
    .execute(conn)
    .await?;
    Ok(())
}

/// The live session's user and CSRF token; `None` when unknown or expired.
pub async fn session_user(
    conn: &mut Conn,
    token_hash: &str,
    now: Ts,
) -> Result<Option<(User, String, Ts)>> {
    let cols = USER_COLS
        .split(", ")
        .map(|c| format!("u.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {cols}, s.csrf_token, s.expires_at AS s_expires FROM sessions s JOIN users u ON u.id = s.user_id \
         WHERE s.token_hash = $1 AND s.expires_at > $2 AND u.disabled = 0"
    );
    let Some(r) = sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(token_hash)
        .bind(now.0)
        .fetch_optional(conn)
        .await?
    else {
        return Ok(None);
    };
    use sqlx::Row;
    Ok(Some((
        rows::user(&r)?,
        r.try_get("csrf_token")?,
        Ts(r.try_get("s_expires")?),
    )))
}

/// Slides the session's expiry forward.
pub async fn touch_session(conn: &mut Conn, token_hash: &str, now: Ts, expires: Ts) -> Result<()> {
    sqlx::query("UPDATE sessions SET last_seen_at = $2, expires_at = $3 WHERE token_hash = $1")
        .bind(token_hash)
        .bind(now.0)
        .bind(expires.0)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes a session and returns its user.
pub async fn delete_session(conn: &mut Conn, token_hash: &str) -> Result<Option<UserId>> {
    let u: Option<String> =
        sqlx::query_scalar("DELETE FROM sessions WHERE token_hash = $1 RETURNING user_id")
            .bind(token_hash)
            .fetch_optional(conn)
            .await?;
    Ok(u.map(UserId))
}

pub async fn delete_user_sessions(conn: &mut Conn, user: &UserId) -> Result<()> {
    sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(user.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

/// Removes expired sessions and returns the users who now have no live session.
pub async fn expire_sessions(conn: &mut Conn, now: Ts) -> Result<Vec<UserId>> {
    let users: Vec<String> =
        sqlx::query_scalar("DELETE FROM sessions WHERE expires_at <= $1 RETURNING user_id")
            .bind(now.0)
            .fetch_all(&mut *conn)
            .await?;
    let mut orphaned = Vec::new();
    for u in users {
        let live: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE user_id = $1")
            .bind(&u)
            .fetch_one(&mut *conn)
            .await?;
        if live == 0 && !orphaned.iter().any(|o: &UserId| o.0 == u) {
            orphaned.push(UserId(u));
        }
    }
    Ok(orphaned)
}

pub async fn insert_api_token(
    conn: &mut Conn,
    id: &TokenId,
    user: &UserId,
    name: &str,
    hash: &str,
    now: Ts,
) -> Result<()> {
    sqlx::query("INSERT INTO api_tokens (id, user_id, name, token_hash, created_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(id.as_str())
        .bind(user.as_str())
        .bind(name)
        .bind(hash)
        .bind(now.0)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn api_token_user(conn: &mut Conn, hash: &str) -> Result<Option<User>> {
    let cols = USER_COLS
        .split(", ")
        .map(|c| format!("u.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {cols} FROM api_tokens t JOIN users u ON u.id = t.user_id \
         WHERE t.token_hash = $1 AND t.revoked_at IS NULL AND u.disabled = 0"
    );
    sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(hash)
        .fetch_optional(conn)
        .await?
        .map(|r| rows::user(&r))
        .transpose()
}

/// `(id, name, created_at, revoked)` of a user's tokens.
pub async fn list_api_tokens(
    conn: &mut Conn,
    user: &UserId,
) -> Result<Vec<(TokenId, String, Ts, bool)>> {
    let rows: Vec<(String, String, i64, Option<i64>)> = sqlx::query_as(
        "SELECT id, name, created_at, revoked_at FROM api_tokens WHERE user_id = $1 ORDER BY created_at",
    )
    .bind(user.as_str())
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(i, n, c, r)| (TokenId(i), n, Ts(c), r.is_some()))
        .collect())
}

pub async fn revoke_api_token(
    conn: &mut Conn,
    user: &UserId,
    id: &TokenId,
    now: Ts,
) -> Result<bool> {
    let r = sqlx::query("UPDATE api_tokens SET revoked_at = $3 WHERE id = $1 AND user_id = $2 AND revoked_at IS NULL")
        .bind(id.as_str())
        .bind(user.as_str())
        .bind(now.0)
        .execute(conn)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn record_login_failure(conn: &mut Conn, key: &str, now: Ts) -> Result<()> {
    sqlx::query("INSERT INTO login_failures (key, at) VALUES ($1, $2)")
        .bind(key)
        .bind(now.0)
        .execute(conn)
        .await?;
    Ok(())
}

/// Failures for `key` since `since`, and the newest one.
pub async fn login_failures(conn: &mut Conn, key: &str, since: Ts) -> Result<(i64, Option<Ts>)> {
    let (n, last): (i64, Option<i64>) =
        sqlx::query_as("SELECT COUNT(*), MAX(at) FROM login_failures WHERE key = $1 AND at > $2")
            .bind(key)
            .bind(since.0)
            .fetch_one(conn)
            .await?;
    Ok((n, last.map(Ts)))
}

pub async fn clear_login_failures(conn: &mut Conn, key: &str, older_than: Ts) -> Result<()> {
    sqlx::query("DELETE FROM login_failures WHERE key = $1 OR at < $2")
        .bind(key)
        .bind(older_than.0)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn insert_visitor_session(
    conn: &mut Conn,
    hash: &str,
    channel: &ChannelId,
    identity: &IdentityId,
    now: Ts,
) -> Result<()> {
    sqlx::query("INSERT INTO visitor_sessions (token_hash, channel_id, identity_id, created_at) VALUES ($1, $2, $3, $4)")
        .bind(hash)
        .bind(channel.as_str())
        .bind(identity.as_str())
        .bind(now.0)
        .execute(conn)
        .await?;
    Ok(())
}

/// The widget visitor's channel, identity and contact.
pub async fn visitor_session(conn: &mut Conn, hash: &str) -> Result<Option<(ChannelId, Identity)>> {
    let sql = "SELECT i.id, i.contact_id, i.channel_id, i.external_id, i.display_name, i.created_at \
               FROM visitor_sessions v JOIN contact_identities i ON i.id = v.identity_id WHERE v.token_hash = $1";
    let Some(r) = sqlx::query(sql).bind(hash).fetch_optional(conn).await? else {
        return Ok(None);
    };
    let ident = rows::identity(&r)?;
    Ok(Some((ident.channel_id.clone(), ident)))
}

/// Live sessions of a user.
pub async fn live_sessions(conn: &mut Conn, user: &UserId, now: Ts) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM sessions WHERE user_id = $1 AND expires_at > $2")
            .bind(user.as_str())
            .bind(now.0)
            .fetch_one(conn)
            .await?,
    )
}
