//! Cases, the counters that number them, chat links, and the chat Actions menu entries.

use ferrydesk_domain::*;
use sqlx::{AssertSqlSafe, Row};

use crate::rows::{parse, ts};
use crate::{Conn, Result};

/// The next value of a named counter (row-locked by the update, so concurrent writers on
/// PostgreSQL queue on it and never hand out the same number).
pub async fn next_counter(conn: &mut Conn, name: &str) -> Result<i64> {
    sqlx::query("INSERT INTO counters (name, value) VALUES ($1, 0) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    Ok(
        sqlx::query_scalar("UPDATE counters SET value = value + 1 WHERE name = $1 RETURNING value")
            .bind(name)
            .fetch_one(conn)
            .await?,
    )
}

const CASE_COLS: &str = "k.id, k.number, k.subject, k.description, k.status, k.priority, \
    k.contact_id, ct.name AS contact_name, k.channel_id, k.chat_id, k.responsible_id, \
    u.display_name AS responsible_name, k.created_by, k.created_at, k.updated_at, k.closed_at";
const CASE_FROM: &str = "cases k LEFT JOIN contacts ct ON ct.id = k.contact_id \
    LEFT JOIN users u ON u.id = k.responsible_id";

fn case(r: &sqlx::any::AnyRow) -> Result<Case> {
    Ok(Case {
        id: CaseId(r.try_get("id")?),
        number: r.try_get("number")?,
        subject: r.try_get("subject")?,
        description: r.try_get("description")?,
        status: parse(&r.try_get::<String, _>("status")?)?,
        priority: parse(&r.try_get::<String, _>("priority")?)?,
        contact_id: r.try_get::<Option<String>, _>("contact_id")?.map(ContactId),
        contact_name: r.try_get("contact_name")?,
        channel_id: r.try_get::<Option<String>, _>("channel_id")?.map(ChannelId),
        chat_id: r.try_get::<Option<String>, _>("chat_id")?.map(ChatId),
        responsible_id: r
            .try_get::<Option<String>, _>("responsible_id")?
            .map(UserId),
        responsible_name: r.try_get("responsible_name")?,
        created_by: r.try_get::<Option<String>, _>("created_by")?.map(UserId),
        created_at: Ts(r.try_get("created_at")?),
        updated_at: Ts(r.try_get("updated_at")?),
        closed_at: ts(r.try_get("closed_at")?),
    })
}

pub struct NewCase<'a> {
    pub id: &'a CaseId,
    pub subject: &'a str,
    pub description: &'a str,
    pub priority: CasePriority,
    pub contact: Option<&'a ContactId>,
    pub channel: Option<&'a ChannelId>,
    pub chat: Option<&'a ChatId>,
    pub responsible: Option<&'a UserId>,
    pub created_by: Option<&'a UserId>,
    /// Idempotency: a second insert with the same key returns the first case.
    pub source_key: Option<&'a str>,
    pub now: Ts,
}

/// Creates a case (numbered from the `case` counter) and returns it; with a `source_key` that
/// was already used, returns the case created then and `false`.
pub async fn insert_case(conn: &mut Conn, c: NewCase<'_>) -> Result<(Case, bool)> {
    if let Some(k) = c.source_key {
        let id: Option<String> = sqlx::query_scalar("SELECT id FROM cases WHERE source_key = $1")
            .bind(k)
            .fetch_optional(&mut *conn)
            .await?;
        if let Some(id) = id
            && let Some(existing) = get_case(conn, &CaseId(id)).await?
        {
            return Ok((existing, false));
        }
    }
    let number = next_counter(conn, "case").await?;
    sqlx::query(
        "INSERT INTO cases (id, number, subject, description, status, priority, contact_id, \
         channel_id, chat_id, responsible_id, created_by, source_key, created_at, updated_at) \
         VALUES ($1,$2,$3,$4,'new',$5,$6,$7,$8,$9,$10,$11,$12,$12)",
    )
    .bind(c.id.as_str())
    .bind(number)
    .bind(c.subject)
    .bind(c.description)
    .bind(c.priority.as_str())
    .bind(c.contact.map(|x| x.as_str()))
    .bind(c.channel.map(|x| x.as_str()))
    .bind(c.chat.map(|x| x.as_str()))
    .bind(c.responsible.map(|x| x.as_str()))
    .bind(c.created_by.map(|x| x.as_str()))
    .bind(c.source_key)
    .bind(c.now.0)
    .execute(&mut *conn)
    .await?;
    let created = get_case(conn, c.id)
        .await?
        .ok_or_else(|| crate::Error::Corrupt("case vanished after insert".into()))?;
    Ok((created, true))
}

pub async fn get_case(conn: &mut Conn, id: &CaseId) -> Result<Option<Case>> {
    let r = sqlx::query(AssertSqlSafe(format!(
        "SELECT {CASE_COLS} FROM {CASE_FROM} WHERE k.id = $1"
    )))
    .bind(id.as_str())
    .fetch_optional(conn)
    .await?;
    r.as_ref().map(case).transpose()
}

pub async fn case_by_number(conn: &mut Conn, number: i64) -> Result<Option<Case>> {
    let r = sqlx::query(AssertSqlSafe(format!(
        "SELECT {CASE_COLS} FROM {CASE_FROM} WHERE k.number = $1"
    )))
    .bind(number)
    .fetch_optional(conn)
    .await?;
    r.as_ref().map(case).transpose()
}

#[derive(Debug, Clone, Default)]
pub struct CaseFilter {
    pub status: Option<CaseStatus>,
    pub contact: Option<ContactId>,
    pub responsible: Option<UserId>,
    /// Matches the subject (case-insensitive) or the number.
    pub q: Option<String>,
    /// Only cases this operator may read (the case visibility rule, as SQL): cases not made
    /// from a chat, cases they are responsible for, and cases whose chat they may read
    /// ([`crate::chats::readable_by_sql`]).
    pub visible_to: Option<UserId>,
    pub limit: i64,
    pub offset: i64,
}

pub async fn list_cases(conn: &mut Conn, f: &CaseFilter) -> Result<(Vec<Case>, i64)> {
    let mut cond = String::from("1 = 1");
    let mut binds: Vec<String> = Vec::new();
    let mut push = |cond: &mut String, sql: &str, v: String| {
        binds.push(v);
        cond.push_str(&sql.replace("?", &format!("${}", binds.len())));
    };
    if let Some(s) = f.status {
        push(&mut cond, " AND k.status = ?", s.as_str().into());
    }
    if let Some(c) = &f.contact {
        push(&mut cond, " AND k.contact_id = ?", c.0.clone());
    }
    if let Some(u) = &f.responsible {
        push(&mut cond, " AND k.responsible_id = ?", u.0.clone());
    }
    if let Some(u) = &f.visible_to {
        push(&mut cond, &case_readable_by_sql("?"), u.0.clone());
    }
    if let Some(q) = f.q.as_deref().map(str::trim).filter(|q| !q.is_empty()) {
        match q.trim_start_matches('#').parse::<i64>() {
            Ok(n) => push(&mut cond, " AND k.number = ?", n.to_string()),
            Err(_) => push(
                &mut cond,
                " AND LOWER(k.subject) LIKE ?",
                format!("%{}%", q.to_lowercase()),
            ),
        }
    }
    // The number filter binds text; compare as text on both backends.
    let cond = cond.replace("k.number = $", "CAST(k.number AS TEXT) = $");
    let sql = format!(
        "SELECT {CASE_COLS} FROM {CASE_FROM} WHERE {cond} ORDER BY k.created_at DESC, k.id DESC \
         LIMIT {} OFFSET {}",
        f.limit.clamp(1, 500),
        f.offset.max(0)
    );
    let mut q = sqlx::query(AssertSqlSafe(sql));
    for b in &binds {
        q = q.bind(b.clone());
    }
    let rows = q.fetch_all(&mut *conn).await?;
    let mut cq = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT COUNT(*) FROM cases k WHERE {cond}"
    )));
    for b in &binds {
        cq = cq.bind(b.clone());
    }
    let total: i64 = cq.fetch_one(&mut *conn).await?;
    Ok((rows.iter().map(case).collect::<Result<_>>()?, total))
}

/// The case visibility rule for operators as an SQL condition on the case row `k`; `user` is
/// the operator id's placeholder.
fn case_readable_by_sql(user: &str) -> String {
    format!(
        " AND (k.chat_id IS NULL OR k.responsible_id = {user} OR EXISTS (SELECT 1 FROM chats c \
         WHERE c.id = k.chat_id AND {}))",
        crate::chats::readable_by_sql("c", user)
    )
}

pub async fn update_case(conn: &mut Conn, c: &Case, now: Ts) -> Result<()> {
    sqlx::query(
        "UPDATE cases SET subject = $1, description = $2, status = $3, priority = $4, \
         responsible_id = $5, updated_at = $6, closed_at = $7 WHERE id = $8",
    )
    .bind(&c.subject)
    .bind(&c.description)
    .bind(c.status.as_str())
    .bind(c.priority.as_str())
    .bind(c.responsible_id.as_ref().map(|x| x.as_str()))
    .bind(now.0)
    .bind(c.closed_at.map(|t| t.0))
    .bind(c.id.as_str())
    .execute(conn)
    .await?;
    Ok(())
}

/// One changed field of a case: who, what, from, to, when.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CaseChangeRow {
    pub id: String,
    pub case_id: String,
    /// `None` for a change made by a process.
    pub actor_id: Option<String>,
    pub actor_name: Option<String>,
    pub field: String,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
    pub at: i64,
}

/// A field change to record in the case history.
pub struct NewCaseChange<'a> {
    pub case: &'a CaseId,
    pub actor: Option<&'a UserId>,
    pub field: &'a str,
    pub old_value: Option<&'a str>,
    pub new_value: Option<&'a str>,
    pub now: Ts,
}

pub async fn insert_case_change(conn: &mut Conn, c: NewCaseChange<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO case_changes (id, case_id, actor_id, field, old_value, new_value, at) \
         VALUES ($1,$2,$3,$4,$5,$6,$7)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(c.case.as_str())
    .bind(c.actor.map(|a| a.as_str()))
    .bind(c.field)
    .bind(c.old_value)
    .bind(c.new_value)
    .bind(c.now.0)
    .execute(conn)
    .await?;
    Ok(())
}

/// The history of a case, oldest first (at most `limit` entries).
pub async fn case_changes(
    conn: &mut Conn,
    case: &CaseId,
    limit: i64,
) -> Result<Vec<CaseChangeRow>> {
    Ok(sqlx::query_as(
        "SELECT h.id, h.case_id, h.actor_id, u.display_name AS actor_name, h.field, h.old_value, \
         h.new_value, h.at FROM case_changes h LEFT JOIN users u ON u.id = h.actor_id \
         WHERE h.case_id = $1 ORDER BY h.at, h.id LIMIT $2",
    )
    .bind(case.as_str())
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Links a chat to a case (the chat created it, or was started from it).
pub async fn link_chat(conn: &mut Conn, chat: &ChatId, case: &CaseId) -> Result<()> {
    sqlx::query("UPDATE chats SET case_id = $1 WHERE id = $2")
        .bind(case.as_str())
        .bind(chat.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

/// An entry of the chat Actions menu: a process to start or a plugin action to run.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ChatActionRow {
    pub id: String,
    pub position: i64,
    pub caption: String,
    /// `process` or `plugin`.
    pub kind: String,
    /// A process key, or `plugin-id/action-id`.
    pub target: String,
    /// JSON array of queue ids; empty means every queue.
    pub queues: String,
    pub enabled: i64,
}

pub async fn list_chat_actions(conn: &mut Conn) -> Result<Vec<ChatActionRow>> {
    Ok(sqlx::query_as(
        "SELECT id, position, caption, kind, target, queues, enabled FROM chat_actions \
         ORDER BY position, id",
    )
    .fetch_all(conn)
    .await?)
}

/// Replaces the whole menu.
pub async fn replace_chat_actions(conn: &mut Conn, rows: &[ChatActionRow]) -> Result<()> {
    sqlx::query("DELETE FROM chat_actions")
        .execute(&mut *conn)
        .await?;
    for r in rows {
        insert_chat_action(conn, r).await?;
    }
    Ok(())
}

/// Adds an entry unless one for the same target exists; true when added.
pub async fn insert_chat_action(conn: &mut Conn, r: &ChatActionRow) -> Result<bool> {
    let res = sqlx::query(
        "INSERT INTO chat_actions (id, position, caption, kind, target, queues, enabled) \
         VALUES ($1,$2,$3,$4,$5,$6,$7) ON CONFLICT (kind, target) DO NOTHING",
    )
    .bind(&r.id)
    .bind(r.position)
    .bind(&r.caption)
    .bind(&r.kind)
    .bind(&r.target)
    .bind(&r.queues)
    .bind(r.enabled)
    .execute(conn)
    .await?;
    Ok(res.rows_affected() == 1)
}

pub async fn max_chat_action_position(conn: &mut Conn) -> Result<i64> {
    let v: Option<i64> = sqlx::query_scalar("SELECT MAX(position) FROM chat_actions")
        .fetch_one(conn)
        .await?;
    Ok(v.unwrap_or(0))
}
