//! Chats, their lifecycle transitions and routing decisions.
//!
//! Every transition is one conditional `UPDATE … WHERE <expected state>`: a caller that lost a
//! race sees zero affected rows and the state stays consistent on both backends and across nodes.

use ferrydesk_domain::*;
use sqlx::AssertSqlSafe;
use sqlx::Row;

use crate::rows::{self, CHAT_COLS, CHAT_FROM, DECISION_COLS};
use crate::{Conn, Result};

pub struct NewChat<'a> {
    pub id: &'a ChatId,
    pub contact: &'a ContactId,
    pub channel: &'a ChannelId,
    pub identity: Option<&'a IdentityId>,
    pub queue: &'a QueueId,
    pub parent: Option<&'a ChatId>,
    pub operator_initiated: bool,
    pub now: Ts,
}

/// Creates a chat unless the contact identity already has an unfinished one on the channel
/// (the unique index `chats_open_per_identity`).
pub async fn insert_chat(conn: &mut Conn, c: NewChat<'_>) -> Result<bool> {
    let r = sqlx::query(
        "INSERT INTO chats (id, status, contact_id, channel_id, identity_id, queue_id, parent_id, \
         started_at, queued_at, operator_initiated) VALUES ($1, 'new', $2, $3, $4, $5, $6, $7, $7, $8) \
         ON CONFLICT DO NOTHING",
    )
    .bind(c.id.as_str())
    .bind(c.contact.as_str())
    .bind(c.channel.as_str())
    .bind(c.identity.map(|i| i.as_str()))
    .bind(c.queue.as_str())
    .bind(c.parent.map(|p| p.as_str()))
    .bind(c.now.0)
    .bind(c.operator_initiated as i64)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// The unfinished chat of a contact identity on a channel (`None`: of the contact's chats
/// without an identity).
pub async fn open_chat_of(
    conn: &mut Conn,
    contact: &ContactId,
    channel: &ChannelId,
    identity: Option<&IdentityId>,
) -> Result<Option<ChatId>> {
    let id: Option<String> = sqlx::query_scalar(
        "SELECT id FROM chats WHERE contact_id = $1 AND channel_id = $2 AND status <> 'completed' \
         AND COALESCE(identity_id, '') = $3",
    )
    .bind(contact.as_str())
    .bind(channel.as_str())
    .bind(identity.map(|i| i.as_str()).unwrap_or(""))
    .fetch_optional(conn)
    .await?;
    Ok(id.map(ChatId))
}

/// The most recent completed chat of a contact on a channel (the parent of a new one, S21).
pub async fn last_completed_of(
    conn: &mut Conn,
    contact: &ContactId,
    channel: &ChannelId,
) -> Result<Option<ChatId>> {
    let id: Option<String> = sqlx::query_scalar(
        "SELECT id FROM chats WHERE contact_id = $1 AND channel_id = $2 AND status = 'completed' \
         ORDER BY ended_at DESC, id DESC LIMIT 1",
    )
    .bind(contact.as_str())
    .bind(channel.as_str())
    .fetch_optional(conn)
    .await?;
    Ok(id.map(ChatId))
}

pub async fn get_chat(conn: &mut Conn, id: &ChatId, now: Ts) -> Result<Option<Chat>> {
    let sql = format!("SELECT {CHAT_COLS} FROM {CHAT_FROM} WHERE c.id = $1");
    sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(id.as_str())
        .fetch_optional(conn)
        .await?
        .map(|r| rows::chat(&r, now))
        .transpose()
}

/// Filters of the chats section (S25).
#[derive(Debug, Default, Clone)]
pub struct ChatFilter {
    pub status: Option<ChatStatus>,
    pub channel: Option<ChannelId>,
    pub queue: Option<QueueId>,
    pub operator: Option<UserId>,
    pub contact: Option<ContactId>,
    pub case: Option<CaseId>,
    /// Only chats of this contact identity (a widget visitor session's own conversations).
    pub identity: Option<IdentityId>,
    /// Only chats this operator may read (the visibility rule S10, as SQL): completed chats,
    /// chats in progress they are responsible for, new chats offered to them.
    pub visible_to: Option<UserId>,
    pub from: Option<Ts>,
    pub to: Option<Ts>,
    pub limit: i64,
    pub offset: i64,
}

/// The operator half of the visibility rule (S10) as an SQL condition on the chat row `alias`:
/// completed chats, chats in progress `user` is responsible for, new chats offered to them.
/// `user` is the placeholder of the operator's id (used several times). Every list that must
/// only show readable chats (or records made from them, like cases) uses this one condition;
/// `Desk::readable_chat` is the same rule for one chat.
pub fn readable_by_sql(alias: &str, user: &str) -> String {
    format!(
        "({a}.status = 'completed' OR ({a}.status = 'in_progress' AND {a}.responsible_id = {u}) \
         OR ({a}.status = 'new' AND ({a}.directed_to = {u} OR ({a}.directed_to IS NULL AND EXISTS ( \
           SELECT 1 FROM queue_members qm JOIN queues q ON q.id = qm.queue_id \
           WHERE qm.queue_id = {a}.queue_id AND qm.user_id = {u} AND q.routing_rule = 'all_operators')))))",
        a = alias,
        u = user
    )
}

/// Chats matching the filter, newest first, and the total count.
pub async fn list_chats(conn: &mut Conn, f: &ChatFilter, now: Ts) -> Result<(Vec<Chat>, i64)> {
    let mut conds = vec!["1 = 1".to_owned()];
    let mut binds: Vec<String> = Vec::new();
    let mut push = |cond: &str, v: String, binds: &mut Vec<String>| {
        binds.push(v);
        let n = format!("${}", binds.len());
        conds.push(cond.replace("?1", &n).replace('?', &n));
    };
    if let Some(s) = f.status {
        push("c.status = ?", s.as_str().to_owned(), &mut binds);
    }
    if let Some(c) = &f.channel {
        push("c.channel_id = ?", c.0.clone(), &mut binds);
    }
    if let Some(q) = &f.queue {
        push("c.queue_id = ?", q.0.clone(), &mut binds);
    }
    if let Some(o) = &f.operator {
        push("c.responsible_id = ?", o.0.clone(), &mut binds);
    }
    if let Some(c) = &f.contact {
        push("c.contact_id = ?", c.0.clone(), &mut binds);
    }
    if let Some(c) = &f.case {
        push("c.case_id = ?", c.0.clone(), &mut binds);
    }
    if let Some(i) = &f.identity {
        push("c.identity_id = ?", i.0.clone(), &mut binds);
    }
    if let Some(u) = &f.visible_to {
        push(&readable_by_sql("c", "?1"), u.0.clone(), &mut binds);
    }
    let mut where_sql = conds.join(" AND ");
    let mut n = binds.len();
    if f.from.is_some() {
        n += 1;
        where_sql.push_str(&format!(" AND c.started_at >= ${n}"));
    }
    if f.to.is_some() {
        n += 1;
        where_sql.push_str(&format!(" AND c.started_at < ${n}"));
    }
    let count_sql = format!("SELECT COUNT(*) FROM {CHAT_FROM} WHERE {where_sql}");
    let list_sql = format!(
        "SELECT {CHAT_COLS} FROM {CHAT_FROM} WHERE {where_sql} ORDER BY c.started_at DESC, c.id DESC \
         LIMIT ${} OFFSET ${}",
        n + 1,
        n + 2
    );
    let mut cq = sqlx::query_scalar::<_, i64>(AssertSqlSafe(count_sql.as_str()));
    let mut lq = sqlx::query(AssertSqlSafe(list_sql.as_str()));
    for b in &binds {
        cq = cq.bind(b.clone());
        lq = lq.bind(b.clone());
    }
    for t in [f.from, f.to].into_iter().flatten() {
        cq = cq.bind(t.0);
        lq = lq.bind(t.0);
    }
    let total = cq.fetch_one(&mut *conn).await?;
    let rows = lq.bind(f.limit).bind(f.offset).fetch_all(conn).await?;
    let chats = rows
        .iter()
        .map(|r| rows::chat(r, now))
        .collect::<Result<_>>()?;
    Ok((chats, total))
}

/// New chats `user` may accept: directed to them, or undirected in a queue "to all operators"
/// they belong to. Oldest first.
pub async fn new_chats_for(conn: &mut Conn, user: &UserId, now: Ts) -> Result<Vec<Chat>> {
    let sql = format!(
        "SELECT {CHAT_COLS} FROM {CHAT_FROM} JOIN queues q ON q.id = c.queue_id \
         WHERE c.status = 'new' AND (c.directed_to = $1 OR (c.directed_to IS NULL \
           AND q.routing_rule = 'all_operators' AND EXISTS (SELECT 1 FROM queue_members qm \
           WHERE qm.queue_id = c.queue_id AND qm.user_id = $1))) \
         ORDER BY c.queued_at, c.id"
    );
    sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(user.as_str())
        .fetch_all(conn)
        .await?
        .iter()
        .map(|r| rows::chat(r, now))
        .collect()
}

/// Chats in progress with `user` responsible.
pub async fn active_chats_for(conn: &mut Conn, user: &UserId, now: Ts) -> Result<Vec<Chat>> {
    let sql = format!(
        "SELECT {CHAT_COLS} FROM {CHAT_FROM} WHERE c.status = 'in_progress' AND c.responsible_id = $1 \
         ORDER BY c.last_message_at DESC, c.id"
    );
    sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(user.as_str())
        .fetch_all(conn)
        .await?
        .iter()
        .map(|r| rows::chat(r, now))
        .collect()
}

/// Makes `user` responsible if the chat is still new and not directed to somebody else.
pub async fn accept(conn: &mut Conn, chat: &ChatId, user: &UserId, now: Ts) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE chats SET status = 'in_progress', responsible_id = $2, accepted_at = $3, \
         directed_to = NULL, accept_deadline = NULL \
         WHERE id = $1 AND status = 'new' AND (directed_to IS NULL OR directed_to = $2)",
    )
    .bind(chat.as_str())
    .bind(user.as_str())
    .bind(now.0)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Makes `user` responsible of an operator-initiated chat right away.
pub async fn assign_new(conn: &mut Conn, chat: &ChatId, user: &UserId, now: Ts) -> Result<bool> {
    accept(conn, chat, user, now).await
}

/// Directs a new, undirected chat to `user` until `deadline`.
pub async fn direct(conn: &mut Conn, chat: &ChatId, user: &UserId, deadline: Ts) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE chats SET directed_to = $2, accept_deadline = $3 \
         WHERE id = $1 AND status = 'new' AND directed_to IS NULL",
    )
    .bind(chat.as_str())
    .bind(user.as_str())
    .bind(deadline.0)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Takes a directed chat back from `user` whose accept deadline passed.
pub async fn expire_direction(
    conn: &mut Conn,
    chat: &ChatId,
    user: &UserId,
    now: Ts,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE chats SET directed_to = NULL, accept_deadline = NULL, missed_count = missed_count + 1 \
         WHERE id = $1 AND status = 'new' AND directed_to = $2 AND accept_deadline <= $3",
    )
    .bind(chat.as_str())
    .bind(user.as_str())
    .bind(now.0)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// `(chat, directed operator)` whose accept deadline has passed.
pub async fn due_accept_timeouts(
    conn: &mut Conn,
    now: Ts,
    limit: i64,
) -> Result<Vec<(ChatId, UserId)>> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT id, directed_to FROM chats WHERE accept_deadline <= $1 AND status = 'new' \
         AND directed_to IS NOT NULL ORDER BY accept_deadline LIMIT $2",
    )
    .bind(now.0)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(c, u)| (ChatId(c), UserId(u)))
        .collect())
}

/// Chats in progress whose auto-finish time has passed.
pub async fn due_autofinish(conn: &mut Conn, now: Ts, limit: i64) -> Result<Vec<ChatId>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM chats WHERE autofinish_at <= $1 AND status = 'in_progress' ORDER BY autofinish_at LIMIT $2",
    )
    .bind(now.0)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(ids.into_iter().map(ChatId).collect())
}

/// Undirected new chats of a queue, oldest first (the backlog).
pub async fn waiting_in_queue(conn: &mut Conn, queue: &QueueId, limit: i64) -> Result<Vec<ChatId>> {
    let ids: Vec<String> = sqlx::query_scalar(
        "SELECT id FROM chats WHERE queue_id = $1 AND status = 'new' AND directed_to IS NULL \
         ORDER BY queued_at, id LIMIT $2",
    )
    .bind(queue.as_str())
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(ids.into_iter().map(ChatId).collect())
}

/// Puts an in-progress chat back into a queue as new. Returns the former responsible.
pub async fn requeue(
    conn: &mut Conn,
    chat: &ChatId,
    from: &UserId,
    queue: &QueueId,
    now: Ts,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE chats SET status = 'new', responsible_id = NULL, directed_to = NULL, accept_deadline = NULL, \
         autofinish_at = NULL, queue_id = $3, queued_at = $4 \
         WHERE id = $1 AND status = 'in_progress' AND responsible_id = $2",
    )
    .bind(chat.as_str())
    .bind(from.as_str())
    .bind(queue.as_str())
    .bind(now.0)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Moves a new chat to another queue.
pub async fn move_new(conn: &mut Conn, chat: &ChatId, queue: &QueueId, now: Ts) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE chats SET directed_to = NULL, accept_deadline = NULL, queue_id = $2, queued_at = $3 \
         WHERE id = $1 AND status = 'new'",
    )
    .bind(chat.as_str())
    .bind(queue.as_str())
    .bind(now.0)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Hands an in-progress chat from one operator to another.
pub async fn reassign(conn: &mut Conn, chat: &ChatId, from: &UserId, to: &UserId) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE chats SET responsible_id = $3 WHERE id = $1 AND status = 'in_progress' AND responsible_id = $2",
    )
    .bind(chat.as_str())
    .bind(from.as_str())
    .bind(to.as_str())
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Completes a chat. Returns `Some(responsible)` when it did (the responsible may be empty).
pub async fn finish(
    conn: &mut Conn,
    chat: &ChatId,
    reason: CloseReason,
    by: Option<&UserId>,
    now: Ts,
    only_if_autofinish_due: bool,
) -> Result<Option<Option<UserId>>> {
    let extra = if only_if_autofinish_due {
        " AND status = 'in_progress' AND autofinish_at <= $5"
    } else {
        ""
    };
    let sql = format!(
        "UPDATE chats SET status = 'completed', ended_at = $2, close_reason = $3, closed_by = $4, \
         autofinish_at = NULL, accept_deadline = NULL, directed_to = NULL \
         WHERE id = $1 AND status <> 'completed'{extra} RETURNING responsible_id"
    );
    let mut q = sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(chat.as_str())
        .bind(now.0)
        .bind(reason.as_str())
        .bind(by.map(|b| b.as_str()));
    if only_if_autofinish_due {
        q = q.bind(now.0);
    }
    let row = q.fetch_optional(conn).await?;
    row.map(|r| {
        Ok(r.try_get::<Option<String>, _>("responsible_id")?
            .map(UserId))
    })
    .transpose()
}

/// What ingestion needs to know about a chat after recording a client message.
pub struct ChatState {
    pub status: ChatStatus,
    pub responsible: Option<UserId>,
    pub queue: QueueId,
    pub directed_to: Option<UserId>,
}

/// Records a client message on the chat: preview, unread count, clears the auto-finish timer.
pub async fn on_inbound(
    conn: &mut Conn,
    chat: &ChatId,
    preview: &str,
    now: Ts,
) -> Result<ChatState> {
    let r = sqlx::query(
        "UPDATE chats SET last_message_at = $2, last_message_direction = 'inbound', preview = $3, \
         last_client_message_at = $2, unread_count = unread_count + 1, autofinish_at = NULL \
         WHERE id = $1 RETURNING status, responsible_id, queue_id, directed_to",
    )
    .bind(chat.as_str())
    .bind(now.0)
    .bind(preview)
    .fetch_one(conn)
    .await?;
    Ok(ChatState {
        status: rows::parse(&r.try_get::<String, _>("status")?)?,
        responsible: r
            .try_get::<Option<String>, _>("responsible_id")?
            .map(UserId),
        queue: QueueId(r.try_get("queue_id")?),
        directed_to: r.try_get::<Option<String>, _>("directed_to")?.map(UserId),
    })
}

/// Records an operator message: first reply time, preview, and the auto-finish deadline.
pub async fn on_outbound(
    conn: &mut Conn,
    chat: &ChatId,
    preview: &str,
    now: Ts,
    autofinish_at: Option<Ts>,
) -> Result<()> {
    sqlx::query(
        "UPDATE chats SET last_message_at = $2, last_message_direction = 'outbound', preview = $3, \
         last_operator_message_at = $2, first_reply_at = COALESCE(first_reply_at, $2), \
         unread_count = 0, autofinish_at = $4 WHERE id = $1",
    )
    .bind(chat.as_str())
    .bind(now.0)
    .bind(preview)
    .bind(autofinish_at.map(|t| t.0))
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn mark_read(conn: &mut Conn, chat: &ChatId) -> Result<()> {
    sqlx::query("UPDATE chats SET unread_count = 0 WHERE id = $1 AND unread_count <> 0")
        .bind(chat.as_str())
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn insert_decision(conn: &mut Conn, d: &RoutingDecision) -> Result<()> {
    sqlx::query(
        "INSERT INTO routing_decisions (id, chat_id, at, action, rule, queue_id, chosen, candidates, reason) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(d.id.as_str())
    .bind(d.chat_id.as_str())
    .bind(d.at.0)
    .bind(d.action.as_str())
    .bind(d.rule.map(|r| r.as_str()))
    .bind(d.queue_id.as_ref().map(|q| q.as_str()))
    .bind(d.chosen.as_ref().map(|u| u.as_str()))
    .bind(serde_json::to_string(&d.candidates).unwrap_or_else(|_| "[]".into()))
    .bind(&d.reason)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn decisions_of(conn: &mut Conn, chat: &ChatId) -> Result<Vec<RoutingDecision>> {
    let sql =
        format!("SELECT {DECISION_COLS} FROM routing_decisions WHERE chat_id = $1 ORDER BY at, id");
    sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(chat.as_str())
        .fetch_all(conn)
        .await?
        .iter()
        .map(rows::decision)
        .collect()
}

/// The chain of earlier chats of this chat (parent, grandparent, …), nearest first.
pub async fn ancestors(conn: &mut Conn, chat: &ChatId, max: usize) -> Result<Vec<ChatId>> {
    let mut out = Vec::new();
    let mut cur = chat.clone();
    while out.len() < max {
        let p: Option<Option<String>> =
            sqlx::query_scalar("SELECT parent_id FROM chats WHERE id = $1")
                .bind(cur.as_str())
                .fetch_optional(&mut *conn)
                .await?;
        match p.flatten() {
            Some(p) => {
                cur = ChatId(p);
                out.push(cur.clone());
            }
            None => break,
        }
    }
    Ok(out)
}

/// Raw figures of the chats started in `[from, to)` for the Totals view.
#[derive(Debug, Clone)]
pub struct ChatFacts {
    pub channel_id: String,
    pub queue_id: String,
    pub responsible_id: Option<String>,
    pub status: String,
    pub started_at: i64,
    pub queued_at: i64,
    pub accepted_at: Option<i64>,
    pub first_reply_at: Option<i64>,
    pub ended_at: Option<i64>,
    pub close_reason: Option<String>,
    pub missed_count: i64,
}

pub async fn facts(conn: &mut Conn, from: Ts, to: Ts) -> Result<Vec<ChatFacts>> {
    let rows = sqlx::query(
        "SELECT channel_id, queue_id, responsible_id, closed_by, status, started_at, queued_at, accepted_at, \
         first_reply_at, ended_at, close_reason, missed_count FROM chats WHERE started_at >= $1 AND started_at < $2",
    )
    .bind(from.0)
    .bind(to.0)
    .fetch_all(conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(ChatFacts {
                channel_id: r.try_get("channel_id")?,
                queue_id: r.try_get("queue_id")?,
                responsible_id: r.try_get::<Option<String>, _>("responsible_id")?,
                status: r.try_get("status")?,
                started_at: r.try_get("started_at")?,
                queued_at: r.try_get("queued_at")?,
                accepted_at: r.try_get("accepted_at")?,
                first_reply_at: r.try_get("first_reply_at")?,
                ended_at: r.try_get("ended_at")?,
                close_reason: r.try_get("close_reason")?,
                missed_count: r.try_get("missed_count")?,
            })
        })
        .collect()
}

/// The channel identity a chat talks to.
pub async fn identity_of(conn: &mut Conn, chat: &ChatId) -> Result<Option<Option<String>>> {
    Ok(
        sqlx::query_scalar("SELECT identity_id FROM chats WHERE id = $1")
            .bind(chat.as_str())
            .fetch_optional(conn)
            .await?,
    )
}

/// What ingestion needs about a sender, in one query: their identity and contact, and the
/// identity's unfinished chat on the channel if there is one.
pub struct SenderState {
    pub identity: IdentityId,
    pub contact: ContactId,
    pub open_chat: Option<ChatId>,
}

pub async fn sender_state(
    conn: &mut Conn,
    channel: &ChannelId,
    sender: &str,
) -> Result<Option<SenderState>> {
    let r: Option<(String, String, Option<String>)> = sqlx::query_as(
        "SELECT i.id, i.contact_id, c.id FROM contact_identities i \
         LEFT JOIN chats c ON c.contact_id = i.contact_id AND c.channel_id = i.channel_id AND c.identity_id = i.id AND c.status <> 'completed' \
         WHERE i.channel_id = $1 AND i.external_id = $2",
    )
    .bind(channel.as_str())
    .bind(sender)
    .fetch_optional(conn)
    .await?;
    Ok(r.map(|(i, c, chat)| SenderState {
        identity: IdentityId(i),
        contact: ContactId(c),
        open_chat: chat.map(ChatId),
    }))
}

/// [`sender_state`] for many senders of one channel at once, by sender id.
pub async fn sender_states(
    conn: &mut Conn,
    channel: &ChannelId,
    senders: &[&str],
) -> Result<std::collections::HashMap<String, SenderState>> {
    let mut out = std::collections::HashMap::new();
    for range in crate::fixed_chunks(senders.len()) {
        let chunk = &senders[range];
        let list = (0..chunk.len())
            .map(|i| format!("${}", i + 2))
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "SELECT i.external_id, i.id, i.contact_id, c.id FROM contact_identities i \
             LEFT JOIN chats c ON c.contact_id = i.contact_id AND c.channel_id = i.channel_id AND c.identity_id = i.id AND c.status <> 'completed' \
             WHERE i.channel_id = $1 AND i.external_id IN ({list})"
        );
        let mut q =
            sqlx::query_as::<_, (String, String, String, Option<String>)>(AssertSqlSafe(sql))
                .bind(channel.as_str());
        for s in chunk {
            q = q.bind(*s);
        }
        for (ext, i, c, chat) in q.fetch_all(&mut *conn).await? {
            out.insert(
                ext,
                SenderState {
                    identity: IdentityId(i),
                    contact: ContactId(c),
                    open_chat: chat.map(ChatId),
                },
            );
        }
    }
    Ok(out)
}

/// One chat's share of a batch of client messages.
pub struct InboundUpdate<'a> {
    pub chat: &'a ChatId,
    pub count: i64,
    pub preview: &'a str,
    pub at: Ts,
}

/// [`on_inbound`] for many chats in one statement; returns each chat's state.
pub async fn on_inbound_many(
    conn: &mut Conn,
    updates: &[InboundUpdate<'_>],
) -> Result<Vec<(ChatId, ChatState)>> {
    let mut out = Vec::with_capacity(updates.len());
    for range in crate::fixed_chunks(updates.len()) {
        let chunk = &updates[range];
        let values = (0..chunk.len())
            .map(|i| {
                format!(
                    "(${}, ${}, ${}, ${})",
                    i * 4 + 1,
                    i * 4 + 2,
                    i * 4 + 3,
                    i * 4 + 4
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        // `VALUES` columns are named column1… on both SQLite and PostgreSQL.
        let sql = format!(
            "UPDATE chats SET last_message_at = v.column3, last_message_direction = 'inbound', preview = v.column4, \
             last_client_message_at = v.column3, unread_count = unread_count + v.column2, autofinish_at = NULL \
             FROM (VALUES {values}) AS v WHERE chats.id = v.column1 \
             RETURNING chats.id, chats.status, chats.responsible_id, chats.queue_id, chats.directed_to"
        );
        let mut q = sqlx::query(AssertSqlSafe(sql));
        for u in chunk {
            q = q
                .bind(u.chat.as_str())
                .bind(u.count)
                .bind(u.at.0)
                .bind(u.preview);
        }
        for r in q.fetch_all(&mut *conn).await? {
            out.push((
                ChatId(r.try_get(0)?),
                ChatState {
                    status: rows::parse(&r.try_get::<String, _>(1)?)?,
                    responsible: r.try_get::<Option<String>, _>(2)?.map(UserId),
                    queue: QueueId(r.try_get(3)?),
                    directed_to: r.try_get::<Option<String>, _>(4)?.map(UserId),
                },
            ));
        }
    }
    Ok(out)
}
