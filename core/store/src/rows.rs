//! Decoding rows into domain records. Column lists live next to the decoders so the two stay in
//! step.

use std::str::FromStr;

use ferrydesk_domain::*;
use sqlx::Row;
use sqlx::any::AnyRow;

use crate::{Error, Result};

pub(crate) fn parse<T: FromStr>(s: &str) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| Error::Corrupt(e.to_string()))
}

fn opt_parse<T: FromStr>(s: Option<String>) -> Result<Option<T>>
where
    T::Err: std::fmt::Display,
{
    s.map(|s| parse(&s)).transpose()
}

pub(crate) fn ts(v: Option<i64>) -> Option<Ts> {
    v.map(Ts)
}

pub const USER_COLS: &str = "id, username, display_name, email, role, locale, status, chat_limit, \
     active_chats, last_chat_at, disabled, created_at";

pub fn user(r: &AnyRow) -> Result<User> {
    Ok(User {
        id: UserId(r.try_get("id")?),
        username: r.try_get("username")?,
        display_name: r.try_get("display_name")?,
        email: r.try_get("email")?,
        role: parse(&r.try_get::<String, _>("role")?)?,
        locale: r.try_get("locale")?,
        status: parse(&r.try_get::<String, _>("status")?)?,
        chat_limit: r.try_get("chat_limit")?,
        active_chats: r.try_get("active_chats")?,
        last_chat_at: ts(r.try_get("last_chat_at")?),
        disabled: r.try_get::<i64, _>("disabled")? != 0,
        created_at: Ts(r.try_get("created_at")?),
    })
}

pub const CHAT_COLS: &str = "c.id, c.status, c.contact_id, ct.name AS contact_name, c.channel_id, \
     c.queue_id, c.responsible_id, c.directed_to, c.parent_id, c.started_at, c.accepted_at, \
     c.first_reply_at, c.ended_at, c.last_message_at, c.last_message_direction, c.preview, \
     c.unread_count, c.close_reason, c.accept_deadline, c.autofinish_at, c.missed_count, \
     c.operator_initiated, c.case_id";

/// `FROM` clause matching [`CHAT_COLS`].
pub const CHAT_FROM: &str = "chats c JOIN contacts ct ON ct.id = c.contact_id";

pub fn chat(r: &AnyRow, now: Ts) -> Result<Chat> {
    let accepted_at = ts(r.try_get("accepted_at")?);
    let ended_at = ts(r.try_get("ended_at")?);
    let duration_secs = accepted_at.map(|a| (ended_at.unwrap_or(now).0 - a.0).max(0) / 1000);
    Ok(Chat {
        id: ChatId(r.try_get("id")?),
        status: parse(&r.try_get::<String, _>("status")?)?,
        contact_id: ContactId(r.try_get("contact_id")?),
        contact_name: r.try_get("contact_name")?,
        channel_id: ChannelId(r.try_get("channel_id")?),
        queue_id: QueueId(r.try_get("queue_id")?),
        responsible_id: r
            .try_get::<Option<String>, _>("responsible_id")?
            .map(UserId),
        directed_to: r.try_get::<Option<String>, _>("directed_to")?.map(UserId),
        parent_id: r.try_get::<Option<String>, _>("parent_id")?.map(ChatId),
        started_at: Ts(r.try_get("started_at")?),
        accepted_at,
        first_reply_at: ts(r.try_get("first_reply_at")?),
        ended_at,
        duration_secs,
        last_message_at: ts(r.try_get("last_message_at")?),
        last_message_direction: opt_parse(r.try_get("last_message_direction")?)?,
        preview: r.try_get("preview")?,
        unread_count: r.try_get("unread_count")?,
        close_reason: opt_parse(r.try_get("close_reason")?)?,
        accept_deadline: ts(r.try_get("accept_deadline")?),
        autofinish_at: ts(r.try_get("autofinish_at")?),
        missed_count: r.try_get("missed_count")?,
        operator_initiated: r.try_get::<i64, _>("operator_initiated")? != 0,
        case_id: r.try_get::<Option<String>, _>("case_id")?.map(CaseId),
    })
}

pub const MESSAGE_COLS: &str = "m.id, m.chat_id, m.direction, m.author_id, u.display_name AS author_name, \
     m.body, m.external_id, m.delivery_status, m.created_at";
pub const MESSAGE_FROM: &str = "messages m LEFT JOIN users u ON u.id = m.author_id";

pub fn message(r: &AnyRow) -> Result<Message> {
    Ok(Message {
        id: MessageId(r.try_get("id")?),
        chat_id: ChatId(r.try_get("chat_id")?),
        direction: parse(&r.try_get::<String, _>("direction")?)?,
        author_id: r.try_get::<Option<String>, _>("author_id")?.map(UserId),
        author_name: r.try_get("author_name")?,
        body: r.try_get("body")?,
        external_id: r.try_get("external_id")?,
        delivery_status: opt_parse(r.try_get("delivery_status")?)?,
        attachments: Vec::new(),
        created_at: Ts(r.try_get("created_at")?),
    })
}

pub const FILE_COLS: &str = "id, filename, content_type, size, sha256";

pub fn attachment(r: &AnyRow) -> Result<Attachment> {
    Ok(Attachment {
        id: FileId(r.try_get("id")?),
        filename: r.try_get("filename")?,
        content_type: r.try_get("content_type")?,
        size: r.try_get("size")?,
        sha256: r.try_get("sha256")?,
    })
}

pub const CONTACT_COLS: &str = "id, name, photo_url, email, phone, created_at, updated_at";

pub fn contact(r: &AnyRow) -> Result<Contact> {
    Ok(Contact {
        id: ContactId(r.try_get("id")?),
        name: r.try_get("name")?,
        photo_url: r.try_get("photo_url")?,
        email: r.try_get("email")?,
        phone: r.try_get("phone")?,
        identities: Vec::new(),
        created_at: Ts(r.try_get("created_at")?),
        updated_at: Ts(r.try_get("updated_at")?),
    })
}

pub const IDENTITY_COLS: &str = "id, contact_id, channel_id, external_id, display_name, created_at";

pub fn identity(r: &AnyRow) -> Result<Identity> {
    Ok(Identity {
        id: IdentityId(r.try_get("id")?),
        contact_id: ContactId(r.try_get("contact_id")?),
        channel_id: ChannelId(r.try_get("channel_id")?),
        external_id: r.try_get("external_id")?,
        display_name: r.try_get("display_name")?,
        created_at: Ts(r.try_get("created_at")?),
    })
}

pub const CHANNEL_COLS: &str = "id, kind, name, queue_id, active, settings, public_key, created_at";

pub fn channel(r: &AnyRow) -> Result<Channel> {
    Ok(Channel {
        id: ChannelId(r.try_get("id")?),
        kind: parse(&r.try_get::<String, _>("kind")?)?,
        name: r.try_get("name")?,
        queue_id: QueueId(r.try_get("queue_id")?),
        active: r.try_get::<i64, _>("active")? != 0,
        settings: serde_json::from_str(&r.try_get::<String, _>("settings")?)
            .map_err(|e| Error::Corrupt(e.to_string()))?,
        public_key: r.try_get("public_key")?,
        created_at: Ts(r.try_get("created_at")?),
    })
}

pub const QUEUE_COLS: &str =
    "id, name, routing_rule, accept_timeout_secs, completion_timeout_mins, created_at";

pub fn queue(r: &AnyRow) -> Result<Queue> {
    Ok(Queue {
        id: QueueId(r.try_get("id")?),
        name: r.try_get("name")?,
        routing_rule: parse(&r.try_get::<String, _>("routing_rule")?)?,
        accept_timeout_secs: r.try_get("accept_timeout_secs")?,
        completion_timeout_mins: r.try_get("completion_timeout_mins")?,
        members: Vec::new(),
        created_at: Ts(r.try_get("created_at")?),
    })
}

pub const TEMPLATE_COLS: &str = "id, name, body, queue_id, created_at, updated_at";

pub fn template(r: &AnyRow) -> Result<Template> {
    Ok(Template {
        id: TemplateId(r.try_get("id")?),
        name: r.try_get("name")?,
        body: r.try_get("body")?,
        queue_id: r.try_get::<Option<String>, _>("queue_id")?.map(QueueId),
        created_at: Ts(r.try_get("created_at")?),
        updated_at: Ts(r.try_get("updated_at")?),
    })
}

pub const DECISION_COLS: &str =
    "id, chat_id, at, action, rule, queue_id, chosen, candidates, reason";

pub fn decision(r: &AnyRow) -> Result<RoutingDecision> {
    Ok(RoutingDecision {
        id: DecisionId(r.try_get("id")?),
        chat_id: ChatId(r.try_get("chat_id")?),
        at: Ts(r.try_get("at")?),
        action: parse(&r.try_get::<String, _>("action")?)?,
        rule: opt_parse(r.try_get("rule")?)?,
        queue_id: r.try_get::<Option<String>, _>("queue_id")?.map(QueueId),
        chosen: r.try_get::<Option<String>, _>("chosen")?.map(UserId),
        candidates: serde_json::from_str(&r.try_get::<String, _>("candidates")?)
            .map_err(|e| Error::Corrupt(e.to_string()))?,
        reason: r.try_get("reason")?,
    })
}
