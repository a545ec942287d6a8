//! Messages and files.

use ferrydesk_domain::*;
use sqlx::AssertSqlSafe;
use sqlx::Row;

use crate::rows::{self, FILE_COLS, MESSAGE_COLS, MESSAGE_FROM};
use crate::{Conn, Result};

pub struct NewMessage<'a> {
    pub id: &'a MessageId,
    pub chat: &'a ChatId,
    pub channel: &'a ChannelId,
    pub direction: Direction,
    pub author: Option<&'a UserId>,
    pub body: &'a str,
    pub external_id: Option<&'a str>,
    pub delivery_status: Option<DeliveryStatus>,
    pub now: Ts,
}

/// Stores a message; `false` when `(channel, external_id)` was already stored.
pub async fn insert_message(conn: &mut Conn, m: NewMessage<'_>) -> Result<bool> {
    let r = sqlx::query(
        "INSERT INTO messages (id, chat_id, channel_id, direction, author_id, body, external_id, \
         delivery_status, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) \
         ON CONFLICT (channel_id, external_id) DO NOTHING",
    )
    .bind(m.id.as_str())
    .bind(m.chat.as_str())
    .bind(m.channel.as_str())
    .bind(m.direction.as_str())
    .bind(m.author.map(|a| a.as_str()))
    .bind(m.body)
    .bind(m.external_id)
    .bind(m.delivery_status.map(|d| d.as_str()))
    .bind(m.now.0)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// `(message id, chat id)` of an already stored external message.
pub async fn by_external_id(
    conn: &mut Conn,
    channel: &ChannelId,
    external_id: &str,
) -> Result<Option<(MessageId, ChatId)>> {
    let r: Option<(String, String)> = sqlx::query_as(
        "SELECT id, chat_id FROM messages WHERE channel_id = $1 AND external_id = $2",
    )
    .bind(channel.as_str())
    .bind(external_id)
    .fetch_optional(conn)
    .await?;
    Ok(r.map(|(m, c)| (MessageId(m), ChatId(c))))
}

pub async fn get_message(conn: &mut Conn, id: &MessageId) -> Result<Option<Message>> {
    let sql = format!("SELECT {MESSAGE_COLS} FROM {MESSAGE_FROM} WHERE m.id = $1");
    let Some(r) = sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(id.as_str())
        .fetch_optional(&mut *conn)
        .await?
    else {
        return Ok(None);
    };
    let mut m = rows::message(&r)?;
    m.attachments = attachments_of(conn, &m.id).await?;
    Ok(Some(m))
}

/// Transcript of the given chats in time order, with attachments.
pub async fn transcript(conn: &mut Conn, chats: &[ChatId]) -> Result<Vec<Message>> {
    if chats.is_empty() {
        return Ok(Vec::new());
    }
    let list = (1..=chats.len())
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    let sql = format!(
        "SELECT {MESSAGE_COLS} FROM {MESSAGE_FROM} WHERE m.chat_id IN ({list}) ORDER BY m.created_at, m.id"
    );
    let mut q = sqlx::query(AssertSqlSafe(sql.as_str()));
    for c in chats {
        q = q.bind(c.as_str());
    }
    let mut msgs: Vec<Message> = q
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(rows::message)
        .collect::<Result<_>>()?;
    let fsql = format!(
        "SELECT {FILE_COLS}, message_id FROM files WHERE chat_id IN ({list}) AND message_id IS NOT NULL ORDER BY created_at, id"
    );
    let mut fq = sqlx::query(AssertSqlSafe(fsql.as_str()));
    for c in chats {
        fq = fq.bind(c.as_str());
    }
    for r in fq.fetch_all(conn).await? {
        let mid: String = r.try_get("message_id")?;
        if let Some(m) = msgs.iter_mut().find(|m| m.id.0 == mid) {
            m.attachments.push(rows::attachment(&r)?);
        }
    }
    Ok(msgs)
}

/// Outbound messages of a channel not yet acknowledged (`queued`), oldest first. Reading by
/// state rather than by a cursor cannot skip a message whose transaction committed late.
pub async fn outbound_pending(
    conn: &mut Conn,
    channel: &ChannelId,
    limit: i64,
) -> Result<Vec<(Message, Option<String>)>> {
    let sql = format!(
        "SELECT {MESSAGE_COLS}, i.external_id AS recipient FROM {MESSAGE_FROM} JOIN chats c ON c.id = m.chat_id \
         LEFT JOIN contact_identities i ON i.id = c.identity_id \
         WHERE m.channel_id = $1 AND m.direction = 'outbound' AND m.delivery_status = 'queued' \
         ORDER BY m.created_at, m.id LIMIT $2"
    );
    let rows = sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(channel.as_str())
        .bind(limit)
        .fetch_all(&mut *conn)
        .await?;
    let mut out = Vec::with_capacity(rows.len());
    for r in rows {
        let mut m = rows::message(&r)?;
        m.attachments = attachments_of(conn, &m.id).await?;
        out.push((m, r.try_get("recipient")?));
    }
    Ok(out)
}

pub async fn set_delivery(conn: &mut Conn, id: &MessageId, status: DeliveryStatus) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE messages SET delivery_status = $2 WHERE id = $1 AND direction = 'outbound'",
    )
    .bind(id.as_str())
    .bind(status.as_str())
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub struct NewFile<'a> {
    pub id: &'a FileId,
    pub sha256: &'a str,
    pub size: i64,
    pub content_type: &'a str,
    pub filename: &'a str,
    pub uploader_user: Option<&'a UserId>,
    pub uploader_identity: Option<&'a IdentityId>,
    pub uploader_channel: Option<&'a ChannelId>,
    pub now: Ts,
}

pub async fn insert_file(conn: &mut Conn, f: NewFile<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO files (id, sha256, size, content_type, filename, uploader_user, uploader_identity, \
         uploader_channel, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(f.id.as_str())
    .bind(f.sha256)
    .bind(f.size)
    .bind(f.content_type)
    .bind(f.filename)
    .bind(f.uploader_user.map(|u| u.as_str()))
    .bind(f.uploader_identity.map(|u| u.as_str()))
    .bind(f.uploader_channel.map(|c| c.as_str()))
    .bind(f.now.0)
    .execute(conn)
    .await?;
    Ok(())
}

/// A stored file with who uploaded it and where it is attached.
pub struct FileRecord {
    pub attachment: Attachment,
    pub uploader_user: Option<UserId>,
    pub uploader_identity: Option<IdentityId>,
    pub uploader_channel: Option<ChannelId>,
    pub chat_id: Option<ChatId>,
    pub message_id: Option<MessageId>,
}

pub async fn get_file(conn: &mut Conn, id: &FileId) -> Result<Option<FileRecord>> {
    let sql = format!(
        "SELECT {FILE_COLS}, uploader_user, uploader_identity, uploader_channel, chat_id, message_id FROM files WHERE id = $1"
    );
    let Some(r) = sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(id.as_str())
        .fetch_optional(conn)
        .await?
    else {
        return Ok(None);
    };
    Ok(Some(FileRecord {
        attachment: rows::attachment(&r)?,
        uploader_user: r.try_get::<Option<String>, _>("uploader_user")?.map(UserId),
        uploader_identity: r
            .try_get::<Option<String>, _>("uploader_identity")?
            .map(IdentityId),
        uploader_channel: r
            .try_get::<Option<String>, _>("uploader_channel")?
            .map(ChannelId),
        chat_id: r.try_get::<Option<String>, _>("chat_id")?.map(ChatId),
        message_id: r.try_get::<Option<String>, _>("message_id")?.map(MessageId),
    }))
}

/// Attaches an unattached file to a message; `false` if it is attached already.
pub async fn attach_file(
    conn: &mut Conn,
    file: &FileId,
    message: &MessageId,
    chat: &ChatId,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE files SET message_id = $2, chat_id = $3 WHERE id = $1 AND message_id IS NULL",
    )
    .bind(file.as_str())
    .bind(message.as_str())
    .bind(chat.as_str())
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn attachments_of(conn: &mut Conn, message: &MessageId) -> Result<Vec<Attachment>> {
    let sql =
        format!("SELECT {FILE_COLS} FROM files WHERE message_id = $1 ORDER BY created_at, id");
    sqlx::query(AssertSqlSafe(sql.as_str()))
        .bind(message.as_str())
        .fetch_all(conn)
        .await?
        .iter()
        .map(rows::attachment)
        .collect()
}

/// Inserts many client messages at once, skipping `(channel, external_id)` pairs already stored;
/// returns the ids of the rows that were inserted.
pub async fn insert_many(
    conn: &mut Conn,
    rows: &[NewMessage<'_>],
) -> Result<std::collections::HashSet<String>> {
    let mut inserted = std::collections::HashSet::with_capacity(rows.len());
    for range in crate::fixed_chunks(rows.len()) {
        let chunk = &rows[range];
        let values = (0..chunk.len())
            .map(|i| {
                let b = i * 9;
                format!(
                    "(${}, ${}, ${}, ${}, ${}, ${}, ${}, ${}, ${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6,
                    b + 7,
                    b + 8,
                    b + 9
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let sql = format!(
            "INSERT INTO messages (id, chat_id, channel_id, direction, author_id, body, external_id, delivery_status, created_at) \
             VALUES {values} ON CONFLICT (channel_id, external_id) DO NOTHING RETURNING id"
        );
        let mut q = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql));
        for m in chunk {
            q = q
                .bind(m.id.as_str())
                .bind(m.chat.as_str())
                .bind(m.channel.as_str())
                .bind(m.direction.as_str())
                .bind(m.author.map(|a| a.as_str()))
                .bind(m.body)
                .bind(m.external_id)
                .bind(m.delivery_status.map(|d| d.as_str()))
                .bind(m.now.0);
        }
        inserted.extend(q.fetch_all(&mut *conn).await?);
    }
    Ok(inserted)
}

/// Records a delivery outcome with the provider's message id.
pub async fn set_delivered(
    conn: &mut Conn,
    id: &MessageId,
    status: DeliveryStatus,
    external_id: Option<&str>,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE messages SET delivery_status = $2, external_id = COALESCE($3, external_id) \
         WHERE id = $1 AND direction = 'outbound'",
    )
    .bind(id.as_str())
    .bind(status.as_str())
    .bind(external_id)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}
