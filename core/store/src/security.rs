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

/// Deletes every session of `user` except the one with hash `keep`.
pub async fn delete_user_sessions(
    conn: &mut Conn,
    user: &UserId,
    keep: Option<&str>,
) -> Result<u64> {
    Ok(
        sqlx::query("DELETE FROM sessions WHERE user_id = $1 AND token_hash <> $2")
            .bind(user.as_str())
            .bind(keep.unwrap_or(""))
            .execute(conn)
            .await?
            .rows_affected(),
    )
}

/// Revokes every live API token of `user`.
pub async fn revoke_user_tokens(conn: &mut Conn, user: &UserId, now: Ts) -> Result<u64> {
    Ok(sqlx::query(
        "UPDATE api_tokens SET revoked_at = $2 WHERE user_id = $1 AND revoked_at IS NULL",
    )
    .bind(user.as_str())
    .bind(now.0)
    .execute(conn)
    .await?
    .rows_affected())
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

/// The throttling policy of one key (see [`take_attempt`]).
#[derive(Debug, Clone, Copy)]
pub struct AttemptPolicy {
    /// Attempts allowed without delay.
    pub free: i64,
    /// The delay after the first attempt beyond `free`, doubled for each further one…
    pub base_delay_ms: i64,
    /// …up to this.
    pub max_delay_ms: i64,
    /// A key with no attempt for this long starts again from zero.
    pub forget_after_ms: i64,
}

impl AttemptPolicy {
    /// The SQL expression of the delay after attempt number `n` (an SQL expression): 0 while
    /// `n < free`, then `base · 2^(n − free)` capped at `max`. Written out as a `CASE` because
    /// SQLite has no portable power function; only integers from the policy go into the text.
    fn delay_sql(&self, n: &str) -> String {
        let mut sql = format!("CASE WHEN {n} < {} THEN 0", self.free);
        let mut d = self.base_delay_ms.max(1);
        let mut k = self.free;
        while d < self.max_delay_ms && k < self.free + 62 {
            sql.push_str(&format!(" WHEN {n} = {k} THEN {d}"));
            d = d.saturating_mul(2);
            k += 1;
        }
        sql.push_str(&format!(" ELSE {} END", self.max_delay_ms));
        sql
    }
}

/// Counts an attempt under `key` before it is checked, in one conditional upsert: the
/// attempt is refused (nothing changes) while the key's delay runs, otherwise the count
/// grows and the delay for the next attempt is set. `Ok(n)`: allowed, the `n`th attempt;
/// `Err(at)`: refused until `at`. Parallel callers are serialised by the row, so no more than
/// the policy allows get through however many arrive at once.
pub async fn take_attempt(
    conn: &mut Conn,
    key: &str,
    now: Ts,
    p: &AttemptPolicy,
) -> Result<std::result::Result<i64, Ts>> {
    let stale = now.0 - p.forget_after_ms;
    let sql = format!(
        "INSERT INTO throttle (key, attempts, since, next_at, updated_at) VALUES ($1, 1, $2, $2 + {first}, $2) \
         ON CONFLICT (key) DO UPDATE SET \
           attempts = CASE WHEN throttle.updated_at < $3 THEN 1 ELSE throttle.attempts + 1 END, \
           since = CASE WHEN throttle.updated_at < $3 THEN $2 ELSE throttle.since END, \
           next_at = $2 + CASE WHEN throttle.updated_at < $3 THEN {first} ELSE {next} END, \
           updated_at = $2 \
         WHERE throttle.next_at <= $2 OR throttle.updated_at < $3 \
         RETURNING attempts",
        first = p.delay_sql("1"),
        next = p.delay_sql("(throttle.attempts + 1)"),
    );
    let n: Option<i64> = sqlx::query_scalar(AssertSqlSafe(sql.as_str()))
        .bind(key)
        .bind(now.0)
        .bind(stale)
        .fetch_optional(&mut *conn)
        .await?;
    if let Some(n) = n {
        return Ok(Ok(n));
    }
    let at: Option<i64> = sqlx::query_scalar("SELECT next_at FROM throttle WHERE key = $1")
        .bind(key)
        .fetch_optional(conn)
        .await?;
    Ok(Err(Ts(at.unwrap_or(now.0 + 1000))))
}

/// Gives back one attempt counted by [`take_attempt`] (it turned out not to be a failure).
pub async fn refund_attempt(conn: &mut Conn, key: &str) -> Result<()> {
    sqlx::query("UPDATE throttle SET attempts = attempts - 1 WHERE key = $1 AND attempts > 0")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// Forgets a key's attempts.
pub async fn clear_attempts(conn: &mut Conn, key: &str) -> Result<()> {
    sqlx::query("DELETE FROM throttle WHERE key = $1")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// Counts a call under `key` in a fixed window of `window_ms`, in one conditional upsert.
/// `None`: allowed; `Some(at)`: more than `limit` in this window, refused until `at`.
pub async fn take_rate(
    conn: &mut Conn,
    key: &str,
    now: Ts,
    window_ms: i64,
    limit: i64,
) -> Result<Option<Ts>> {
    let n: Option<i64> = sqlx::query_scalar(
        "INSERT INTO throttle (key, attempts, since, next_at, updated_at) VALUES ($1, 1, $2, 0, $2) \
         ON CONFLICT (key) DO UPDATE SET \
           attempts = CASE WHEN throttle.since <= $3 THEN 1 ELSE throttle.attempts + 1 END, \
           since = CASE WHEN throttle.since <= $3 THEN $2 ELSE throttle.since END, \
           updated_at = $2 \
         WHERE throttle.since <= $3 OR throttle.attempts < $4 \
         RETURNING attempts",
    )
    .bind(key)
    .bind(now.0)
    .bind(now.0 - window_ms)
    .bind(limit)
    .fetch_optional(&mut *conn)
    .await?;
    if n.is_some() {
        return Ok(None);
    }
    let since: Option<i64> = sqlx::query_scalar("SELECT since FROM throttle WHERE key = $1")
        .bind(key)
        .fetch_optional(conn)
        .await?;
    Ok(Some(Ts(since.unwrap_or(now.0) + window_ms)))
}

/// Marks `key` (a known-address key) as remembered until `until`: a row with no attempts whose
/// `next_at` is its end.
pub async fn remember(conn: &mut Conn, key: &str, now: Ts, until: Ts) -> Result<()> {
    sqlx::query(
        "INSERT INTO throttle (key, attempts, since, next_at, updated_at) VALUES ($1, 0, $2, $3, $2) \
         ON CONFLICT (key) DO UPDATE SET next_at = excluded.next_at, updated_at = excluded.updated_at",
    )
    .bind(key)
    .bind(now.0)
    .bind(until.0)
    .execute(conn)
    .await?;
    Ok(())
}

/// Whether `key` was [`remember`]ed and has not run out at `now`.
pub async fn remembered(conn: &mut Conn, key: &str, now: Ts) -> Result<bool> {
    let n: Option<i64> =
        sqlx::query_scalar("SELECT attempts FROM throttle WHERE key = $1 AND next_at > $2")
            .bind(key)
            .bind(now.0)
            .fetch_optional(conn)
            .await?;
    Ok(n.is_some())
}

/// Deletes throttle rows untouched since `before` whose delay (or remembered time) is over.
pub async fn prune_throttle(conn: &mut Conn, before: Ts, now: Ts) -> Result<u64> {
    Ok(
        sqlx::query("DELETE FROM throttle WHERE updated_at < $1 AND next_at < $2")
            .bind(before.0)
            .bind(now.0)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}

/// A new widget visitor session. Its identity (`identity`, `external_id`) is only reserved:
/// the identity row and its contact are created by the visitor's first message.
pub async fn insert_visitor_session(
    conn: &mut Conn,
    hash: &str,
    channel: &ChannelId,
    identity: &IdentityId,
    external_id: &str,
    display_name: Option<&str>,
    now: Ts,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO visitor_sessions (token_hash, channel_id, identity_id, external_id, display_name, created_at, last_seen_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $6)",
    )
    .bind(hash)
    .bind(channel.as_str())
    .bind(identity.as_str())
    .bind(external_id)
    .bind(display_name)
    .bind(now.0)
    .execute(conn)
    .await?;
    Ok(())
}

/// A visitor session as stored.
#[derive(Debug, Clone)]
pub struct VisitorSessionRow {
    pub channel: ChannelId,
    /// The identity once the visitor has written (its contact may have been merged since).
    pub identity: Option<Identity>,
    pub identity_id: IdentityId,
    pub external_id: String,
    pub display_name: Option<String>,
    pub created_at: Ts,
    pub last_seen_at: Ts,
}

/// The widget visitor session with this token hash, whatever its age.
pub async fn visitor_session(conn: &mut Conn, hash: &str) -> Result<Option<VisitorSessionRow>> {
    let sql = "SELECT v.channel_id AS v_channel, v.identity_id AS v_identity, v.external_id AS v_external, \
               v.display_name AS v_name, v.created_at AS v_created, v.last_seen_at AS v_seen, \
               i.id, i.contact_id, i.channel_id, i.external_id, i.display_name, i.created_at \
               FROM visitor_sessions v LEFT JOIN contact_identities i ON i.id = v.identity_id \
               WHERE v.token_hash = $1";
    let Some(r) = sqlx::query(sql).bind(hash).fetch_optional(conn).await? else {
        return Ok(None);
    };
    use sqlx::Row;
    let known: Option<String> = r.try_get("id")?;
    Ok(Some(VisitorSessionRow {
        channel: ChannelId(r.try_get("v_channel")?),
        identity: match known {
            Some(_) => Some(rows::identity(&r)?),
            None => None,
        },
        identity_id: IdentityId(r.try_get("v_identity")?),
        external_id: r.try_get("v_external")?,
        display_name: r.try_get("v_name")?,
        created_at: Ts(r.try_get("v_created")?),
        last_seen_at: Ts(r.try_get("v_seen")?),
    }))
}

/// Marks the visitor session as used now (idle expiry counts from here).
pub async fn touch_visitor_session(conn: &mut Conn, hash: &str, now: Ts) -> Result<()> {
    sqlx::query("UPDATE visitor_sessions SET last_seen_at = $2 WHERE token_hash = $1")
        .bind(hash)
        .bind(now.0)
        .execute(conn)
        .await?;
    Ok(())
}

/// Deletes the visitor sessions idle since before `before` (at most `limit`), returning how many.
pub async fn expire_visitor_sessions(conn: &mut Conn, before: Ts, limit: i64) -> Result<u64> {
    Ok(sqlx::query(
        "DELETE FROM visitor_sessions WHERE token_hash IN \
         (SELECT token_hash FROM visitor_sessions WHERE last_seen_at < $1 LIMIT $2)",
    )
    .bind(before.0)
    .bind(limit)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Deletes the visitor sessions whose visitor never wrote (no identity row) and that are idle
/// since before `before` (at most `limit`), returning how many.
pub async fn expire_unused_visitor_sessions(
    conn: &mut Conn,
    before: Ts,
    limit: i64,
) -> Result<u64> {
    Ok(sqlx::query(
        "DELETE FROM visitor_sessions WHERE token_hash IN \
         (SELECT v.token_hash FROM visitor_sessions v WHERE v.last_seen_at < $1 \
          AND NOT EXISTS (SELECT 1 FROM contact_identities i WHERE i.id = v.identity_id) LIMIT $2)",
    )
    .bind(before.0)
    .bind(limit)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Deletes one visitor session.
pub async fn delete_visitor_session(conn: &mut Conn, hash: &str) -> Result<()> {
    sqlx::query("DELETE FROM visitor_sessions WHERE token_hash = $1")
        .bind(hash)
        .execute(conn)
        .await?;
    Ok(())
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
