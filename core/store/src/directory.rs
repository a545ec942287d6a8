//! Users, status history, queues, channels, templates and drafts.

use ferrydesk_domain::*;
use sqlx::AssertSqlSafe;

use crate::rows::{self, CHANNEL_COLS, QUEUE_COLS, TEMPLATE_COLS, USER_COLS};
use crate::{Conn, Result};

pub struct NewUser<'a> {
    pub id: &'a UserId,
    pub username: &'a str,
    pub display_name: &'a str,
    pub email: Option<&'a str>,
    pub role: Role,
    pub password_hash: &'a str,
    pub locale: &'a str,
    pub chat_limit: Option<i64>,
    pub now: Ts,
}

pub async fn insert_user(conn: &mut Conn, u: NewUser<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO users (id, username, display_name, email, role, password_hash, locale, \
         chat_limit, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(u.id.as_str())
    .bind(u.username)
    .bind(u.display_name)
    .bind(u.email)
    .bind(u.role.as_str())
    .bind(u.password_hash)
    .bind(u.locale)
    .bind(u.chat_limit)
    .bind(u.now.0)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get_user(conn: &mut Conn, id: &UserId) -> Result<Option<User>> {
    let sql = format!("SELECT {USER_COLS} FROM users WHERE id = $1");
    sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(id.as_str())
        .fetch_optional(conn)
        .await?
        .map(|r| rows::user(&r))
        .transpose()
}

/// The user and their password hash, for login.
pub async fn get_user_for_login(conn: &mut Conn, username: &str) -> Result<Option<(User, String)>> {
    let sql = format!("SELECT {USER_COLS}, password_hash FROM users WHERE username = $1");
    let Some(r) = sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(username)
        .fetch_optional(conn)
        .await?
    else {
        return Ok(None);
    };
    use sqlx::Row;
    Ok(Some((rows::user(&r)?, r.try_get("password_hash")?)))
}

pub async fn list_users(conn: &mut Conn) -> Result<Vec<User>> {
    let sql = format!("SELECT {USER_COLS} FROM users ORDER BY display_name, username");
    sqlx::query(AssertSqlSafe(sql.as_str()))
        .fetch_all(conn)
        .await?
        .iter()
        .map(rows::user)
        .collect()
}

#[derive(Default)]
pub struct UserPatch<'a> {
    pub display_name: Option<&'a str>,
    pub email: Option<Option<&'a str>>,
    pub role: Option<Role>,
    pub locale: Option<&'a str>,
    pub chat_limit: Option<Option<i64>>,
    pub disabled: Option<bool>,
    pub password_hash: Option<&'a str>,
}

pub async fn update_user(conn: &mut Conn, id: &UserId, p: UserPatch<'_>) -> Result<bool> {
    // COALESCE keeps a column unchanged when its parameter is NULL; the *_set flags allow
    // writing NULL on purpose for nullable columns.
    let r = sqlx::query(
        "UPDATE users SET \
           display_name = COALESCE($2, display_name), \
           email = CASE WHEN $3 = 1 THEN $4 ELSE email END, \
           role = COALESCE($5, role), \
           locale = COALESCE($6, locale), \
           chat_limit = CASE WHEN $7 = 1 THEN $8 ELSE chat_limit END, \
           disabled = COALESCE($9, disabled), \
           password_hash = COALESCE($10, password_hash) \
         WHERE id = $1",
    )
    .bind(id.as_str())
    .bind(p.display_name)
    .bind(p.email.is_some() as i64)
    .bind(p.email.flatten())
    .bind(p.role.map(|r| r.as_str()))
    .bind(p.locale)
    .bind(p.chat_limit.is_some() as i64)
    .bind(p.chat_limit.flatten())
    .bind(p.disabled.map(|d| d as i64))
    .bind(p.password_hash)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Sets an operator's status and records the change. Returns `false` when it was already so.
pub async fn set_status(
    conn: &mut Conn,
    user: &UserId,
    status: OperatorStatus,
    reason: StatusReason,
    actor: Option<&UserId>,
    now: Ts,
) -> Result<bool> {
    let r = sqlx::query("UPDATE users SET status = $2 WHERE id = $1 AND status <> $2")
        .bind(user.as_str())
        .bind(status.as_str())
        .execute(&mut *conn)
        .await?;
    if r.rows_affected() == 0 {
        return Ok(false);
    }
    sqlx::query(
        "INSERT INTO status_history (id, user_id, status, reason, actor_id, at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(user.as_str())
    .bind(status.as_str())
    .bind(reason.as_str())
    .bind(actor.map(|a| a.as_str()))
    .bind(now.0)
    .execute(conn)
    .await?;
    Ok(true)
}

pub async fn status_history(
    conn: &mut Conn,
    user: &UserId,
    limit: i64,
) -> Result<Vec<StatusChange>> {
    let rows: Vec<(String, String, String, Option<String>, i64)> = sqlx::query_as(
        "SELECT user_id, status, reason, actor_id, at FROM status_history WHERE user_id = $1 \
         ORDER BY at DESC, id DESC LIMIT $2",
    )
    .bind(user.as_str())
    .bind(limit)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|(u, s, r, a, at)| {
            Ok(StatusChange {
                user_id: UserId(u),
                status: rows::parse(&s)?,
                reason: rows::parse(&r)?,
                actor_id: a.map(UserId),
                at: Ts(at),
            })
        })
        .collect()
}

/// Takes one unit of chat capacity from `user` if they have it. A single conditional statement:
/// on PostgreSQL the row lock makes concurrent takers re-check the condition, so the limit holds
/// across nodes.
pub async fn take_capacity(
    conn: &mut Conn,
    user: &UserId,
    default_limit: i64,
    now: Ts,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE users SET active_chats = active_chats + 1, last_chat_at = $3 \
         WHERE id = $1 AND disabled = 0 AND active_chats < COALESCE(chat_limit, $2)",
    )
    .bind(user.as_str())
    .bind(default_limit)
    .bind(now.0)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn release_capacity(conn: &mut Conn, user: &UserId) -> Result<()> {
    sqlx::query(
        "UPDATE users SET active_chats = active_chats - 1 WHERE id = $1 AND active_chats > 0",
    )
    .bind(user.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

// ---- queues ----

pub async fn insert_queue(conn: &mut Conn, q: &Queue) -> Result<()> {
    sqlx::query(
        "INSERT INTO queues (id, name, routing_rule, accept_timeout_secs, completion_timeout_mins, \
         created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(q.id.as_str())
    .bind(&q.name)
    .bind(q.routing_rule.as_str())
    .bind(q.accept_timeout_secs)
    .bind(q.completion_timeout_mins)
    .bind(q.created_at.0)
    .execute(&mut *conn)
    .await?;
    set_members(conn, &q.id, &q.members).await
}

pub async fn update_queue(conn: &mut Conn, q: &Queue) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE queues SET name = $2, routing_rule = $3, accept_timeout_secs = $4, \
         completion_timeout_mins = $5 WHERE id = $1",
    )
    .bind(q.id.as_str())
    .bind(&q.name)
    .bind(q.routing_rule.as_str())
    .bind(q.accept_timeout_secs)
    .bind(q.completion_timeout_mins)
    .execute(&mut *conn)
    .await?;
    if r.rows_affected() == 0 {
        return Ok(false);
    }
    set_members(conn, &q.id, &q.members).await?;
    Ok(true)
}

pub async fn set_members(conn: &mut Conn, queue: &QueueId, members: &[UserId]) -> Result<()> {
    sqlx::query("DELETE FROM queue_members WHERE queue_id = $1")
        .bind(queue.as_str())
        .execute(&mut *conn)
        .await?;
    for m in members {
        sqlx::query(
            "INSERT INTO queue_members (queue_id, user_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(queue.as_str())
        .bind(m.as_str())
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

async fn members_of(conn: &mut Conn, queue: &QueueId) -> Result<Vec<UserId>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT user_id FROM queue_members WHERE queue_id = $1 ORDER BY user_id",
    )
    .bind(queue.as_str())
    .fetch_all(conn)
    .await?;
    Ok(ids.into_iter().map(UserId).collect())
}

pub async fn get_queue(conn: &mut Conn, id: &QueueId) -> Result<Option<Queue>> {
    let sql = format!("SELECT {QUEUE_COLS} FROM queues WHERE id = $1");
    let Some(r) = sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let mut q = rows::queue(&r)?;
    q.members = members_of(conn, &q.id).await?;
    Ok(Some(q))
}

pub async fn list_queues(conn: &mut Conn) -> Result<Vec<Queue>> {
    let sql = format!("SELECT {QUEUE_COLS} FROM queues ORDER BY name");
    let rows = sqlx::query(AssertSqlSafe(sql.as_str()))
        .fetch_all(&mut *conn)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let mut q = rows::queue(&r)?;
        q.members = members_of(conn, &q.id).await?;
        out.push(q);
    }
    Ok(out)
}

pub async fn delete_queue(conn: &mut Conn, id: &QueueId) -> Result<bool> {
    let r = sqlx::query("DELETE FROM queues WHERE id = $1")
        .bind(id.as_str())
        .execute(conn)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Queues where `user` is a member.
pub async fn queues_of_user(conn: &mut Conn, user: &UserId) -> Result<Vec<QueueId>> {
    let ids: Vec<String> =
        sqlx::query_scalar("SELECT queue_id FROM queue_members WHERE user_id = $1")
            .bind(user.as_str())
            .fetch_all(conn)
            .await?;
    Ok(ids.into_iter().map(QueueId).collect())
}

/// Members of a queue with their status and load, for routing.
pub async fn queue_members_with_load(conn: &mut Conn, queue: &QueueId) -> Result<Vec<User>> {
    let sql = format!(
        "SELECT {} FROM users u JOIN queue_members qm ON qm.user_id = u.id WHERE qm.queue_id = $1 \
         ORDER BY u.id",
        USER_COLS
            .split(", ")
            .map(|c| format!("u.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(queue.as_str())
        .fetch_all(conn)
        .await?
        .iter()
        .map(rows::user)
        .collect()
}

// ---- channels ----

pub struct NewChannel<'a> {
    pub id: &'a ChannelId,
    pub kind: ChannelKind,
    pub name: &'a str,
    pub queue_id: &'a QueueId,
    pub settings: &'a serde_json::Value,
    pub public_key: Option<&'a str>,
    pub token_hash: Option<&'a str>,
    pub now: Ts,
}

pub async fn insert_channel(conn: &mut Conn, c: NewChannel<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO channels (id, kind, name, queue_id, settings, public_key, token_hash, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(c.id.as_str())
    .bind(c.kind.as_str())
    .bind(c.name)
    .bind(c.queue_id.as_str())
    .bind(c.settings.to_string())
    .bind(c.public_key)
    .bind(c.token_hash)
    .bind(c.now.0)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn update_channel(
    conn: &mut Conn,
    id: &ChannelId,
    name: &str,
    queue: &QueueId,
    active: bool,
    settings: &serde_json::Value,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE channels SET name = $2, queue_id = $3, active = $4, settings = $5 WHERE id = $1",
    )
    .bind(id.as_str())
    .bind(name)
    .bind(queue.as_str())
    .bind(active as i64)
    .bind(settings.to_string())
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn set_channel_token(conn: &mut Conn, id: &ChannelId, token_hash: &str) -> Result<bool> {
    let r = sqlx::query("UPDATE channels SET token_hash = $2 WHERE id = $1")
        .bind(id.as_str())
        .bind(token_hash)
        .execute(conn)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn get_channel(conn: &mut Conn, id: &ChannelId) -> Result<Option<Channel>> {
    let sql = format!("SELECT {CHANNEL_COLS} FROM channels WHERE id = $1");
    sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(id.as_str())
        .fetch_optional(conn)
        .await?
        .map(|r| rows::channel(&r))
        .transpose()
}

pub async fn channel_by_public_key(conn: &mut Conn, key: &str) -> Result<Option<Channel>> {
    let sql = format!("SELECT {CHANNEL_COLS} FROM channels WHERE public_key = $1");
    sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(key)
        .fetch_optional(conn)
        .await?
        .map(|r| rows::channel(&r))
        .transpose()
}

pub async fn channel_by_token_hash(conn: &mut Conn, hash: &str) -> Result<Option<Channel>> {
    let sql = format!("SELECT {CHANNEL_COLS} FROM channels WHERE token_hash = $1");
    sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(hash)
        .fetch_optional(conn)
        .await?
        .map(|r| rows::channel(&r))
        .transpose()
}

pub async fn list_channels(conn: &mut Conn) -> Result<Vec<Channel>> {
    let sql = format!("SELECT {CHANNEL_COLS} FROM channels ORDER BY name");
    sqlx::query(AssertSqlSafe(sql.as_str()))
        .fetch_all(conn)
        .await?
        .iter()
        .map(rows::channel)
        .collect()
}

// ---- templates ----

pub async fn upsert_template(conn: &mut Conn, t: &Template) -> Result<()> {
    sqlx::query(
        "INSERT INTO templates (id, name, body, queue_id, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (id) DO UPDATE SET name = excluded.name, \
         body = excluded.body, queue_id = excluded.queue_id, updated_at = excluded.updated_at",
    )
    .bind(t.id.as_str())
    .bind(&t.name)
    .bind(&t.body)
    .bind(t.queue_id.as_ref().map(|q| q.as_str()))
    .bind(t.created_at.0)
    .bind(t.updated_at.0)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get_template(conn: &mut Conn, id: &TemplateId) -> Result<Option<Template>> {
    let sql = format!("SELECT {TEMPLATE_COLS} FROM templates WHERE id = $1");
    sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(id.as_str())
        .fetch_optional(conn)
        .await?
        .map(|r| rows::template(&r))
        .transpose()
}

pub async fn delete_template(conn: &mut Conn, id: &TemplateId) -> Result<bool> {
    let r = sqlx::query("DELETE FROM templates WHERE id = $1")
        .bind(id.as_str())
        .execute(conn)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Templates whose name or text contains `q` (case-insensitive), global or of one of `queues`.
/// `queues = None` lists all templates (admin view).
pub async fn search_templates(
    conn: &mut Conn,
    q: &str,
    queues: Option<&[QueueId]>,
    limit: i64,
) -> Result<Vec<Template>> {
    let pattern = format!(
        "%{}%",
        q.to_lowercase()
            .replace('\\', "\\\\")
            .replace('%', "\\%")
            .replace('_', "\\_")
    );
    let mut sql = format!(
        "SELECT {TEMPLATE_COLS} FROM templates WHERE (LOWER(name) LIKE $1 ESCAPE '\\' OR LOWER(body) LIKE $1 ESCAPE '\\')"
    );
    if let Some(queues) = queues {
        sql.push_str(" AND (queue_id IS NULL");
        for i in 0..queues.len() {
            sql.push_str(&format!(" OR queue_id = ${}", i + 3));
        }
        sql.push(')');
    }
    sql.push_str(" ORDER BY name LIMIT $2");
    let mut query = sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(pattern)
        .bind(limit);
    for qid in queues.unwrap_or_default() {
        query = query.bind(qid.as_str());
    }
    query
        .fetch_all(conn)
        .await?
        .iter()
        .map(rows::template)
        .collect()
}

// ---- drafts ----

pub async fn save_draft(
    conn: &mut Conn,
    chat: &ChatId,
    user: &UserId,
    body: &str,
    now: Ts,
) -> Result<()> {
    if body.is_empty() {
        sqlx::query("DELETE FROM drafts WHERE chat_id = $1 AND user_id = $2")
            .bind(chat.as_str())
            .bind(user.as_str())
            .execute(conn)
            .await?;
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO drafts (chat_id, user_id, body, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (chat_id, user_id) DO UPDATE SET body = excluded.body, updated_at = excluded.updated_at",
    )
    .bind(chat.as_str())
    .bind(user.as_str())
    .bind(body)
    .bind(now.0)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get_draft(
    conn: &mut Conn,
    chat: &ChatId,
    user: &UserId,
) -> Result<Option<(String, Ts)>> {
    let r: Option<(String, i64)> =
        sqlx::query_as("SELECT body, updated_at FROM drafts WHERE chat_id = $1 AND user_id = $2")
            .bind(chat.as_str())
            .bind(user.as_str())
            .fetch_optional(conn)
            .await?;
    Ok(r.map(|(b, t)| (b, Ts(t))))
}
