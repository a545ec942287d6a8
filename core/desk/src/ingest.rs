//! Ingestion of client messages: find or create the contact and the chat, store the message
//! once per `(channel, external id)`, route new chats, notify.
//!
//! Requests are queued to writer tasks (one on SQLite, a few on PostgreSQL, each sender always on
//! the same one) that commit them in groups — one transaction per batch — so throughput is
//! bounded by statements rather than fsyncs. An acknowledged message is committed. If a batch
//! fails, its requests are retried one by one so that one bad request cannot fail the others.
//!
//! The common case — a known sender with an unfinished chat — costs three statements: one
//! lookup, the insert, the chat update. First messages take a savepoint, so that a request
//! that fails half-way leaves nothing behind in the batch.

use std::collections::HashMap;

use ferrydesk_domain::*;
use ferrydesk_store::{Conn, chats as chat_store, contacts, directory, messages};
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};
use utoipa::ToSchema;

use crate::{Desk, Error, Event, EventBody, Result, preview_of};

/// A message from a client, as a channel delivers it.
#[derive(Debug, Clone)]
pub struct Inbound {
    pub channel: ChannelId,
    /// The provider's message id; repeated deliveries with the same id are stored once.
    pub external_id: Option<String>,
    /// The sender's id on the channel.
    pub sender: String,
    pub sender_name: Option<String>,
    pub sender_photo_url: Option<String>,
    pub text: String,
    /// Files already stored through the blob store.
    pub files: Vec<FileId>,
}

/// What happened to an inbound message.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct IngestOutcome {
    pub message_id: MessageId,
    pub chat_id: ChatId,
    pub contact_id: ContactId,
    /// The message had been stored before; nothing changed.
    pub duplicate: bool,
    /// This message opened a new chat.
    pub new_chat: bool,
}

pub(crate) struct Job {
    msg: Inbound,
    reply: oneshot::Sender<Result<IngestOutcome>>,
}

impl Desk {
    /// Ingests one client message; returns once it is committed.
    pub async fn ingest(&self, msg: Inbound) -> Result<IngestOutcome> {
        crate::chats::validate_text(&msg.text, msg.files.len())?;
        if msg.sender.is_empty() || msg.sender.len() > 256 {
            return Err(Error::invalid("sender.id", "must be 1 to 256 bytes"));
        }
        if let Some(e) = &msg.external_id
            && (e.is_empty() || e.len() > 256)
        {
            return Err(Error::invalid("external_id", "must be 1 to 256 bytes"));
        }
        let (reply, rx) = oneshot::channel();
        // Messages of one sender always go to the same writer, so concurrent batches never
        // contend for the same chat row.
        let shard = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            (&msg.channel, &msg.sender).hash(&mut h);
            (h.finish() as usize) % self.inner.ingest.len()
        };
        self.inner.ingest[shard]
            .send(Job { msg, reply })
            .await
            .map_err(|_| Error::Internal("ingestion stopped".into()))?;
        rx.await
            .map_err(|_| Error::Internal("ingestion stopped".into()))?
    }
}

pub(crate) async fn run_writer(desk: Desk, mut rx: mpsc::Receiver<Job>) {
    let max = desk.options().ingest_batch.max(1);
    let mut batch = Vec::with_capacity(max);
    while rx.recv_many(&mut batch, max).await > 0 {
        metrics::histogram!("ferrydesk_ingest_batch_size").record(batch.len() as f64);
        let jobs = std::mem::take(&mut batch);
        match commit_batch(&desk, &jobs).await {
            Ok(outcomes) => {
                for (job, out) in jobs.into_iter().zip(outcomes) {
                    let _ = job.reply.send(out);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, size = jobs.len(), "ingest batch failed; retrying one by one");
                for job in jobs {
                    let out = ingest_alone(&desk, &job.msg).await;
                    let _ = job.reply.send(out);
                }
            }
        }
    }
}

/// Channels read once per batch.
#[derive(Default)]
struct BatchCache {
    channels: HashMap<ChannelId, Channel>,
}

impl BatchCache {
    async fn channel(&mut self, conn: &mut Conn, id: &ChannelId) -> Result<Option<Channel>> {
        if let Some(c) = self.channels.get(id) {
            return Ok(Some(c.clone()));
        }
        let c = directory::get_channel(conn, id).await?;
        if let Some(c) = &c {
            self.channels.insert(c.id.clone(), c.clone());
        }
        Ok(c)
    }
}

/// Runs a batch in one transaction. Validation errors become that request's answer; database
/// errors fail the batch (and it is retried request by request).
async fn commit_batch(desk: &Desk, jobs: &[Job]) -> Result<Vec<Result<IngestOutcome>>> {
    let mut tx = desk.store().begin().await?;
    let mut cache = BatchCache::default();
    let mut events = Vec::new();
    let mut outcomes: Vec<Option<Result<IngestOutcome>>> = (0..jobs.len()).map(|_| None).collect();
    ingest_known(desk, &mut tx, &mut cache, jobs, &mut outcomes, &mut events).await?;
    for (job, out) in jobs.iter().zip(outcomes.iter_mut()) {
        if out.is_some() {
            continue;
        }
        match ingest_one(desk, &mut tx, &mut cache, &job.msg, &mut events).await {
            Err(Error::Store(e)) => return Err(Error::Store(e)),
            o => *out = Some(o),
        }
    }
    desk.commit(tx, events).await?;
    Ok(outcomes
        .into_iter()
        .map(|o| o.unwrap_or_else(|| Err(Error::Internal("request lost in batch".into()))))
        .collect())
}

/// The set-based common case: messages without files from senders whose chat is unfinished.
/// A whole batch of them costs one lookup per channel, one multi-row insert and one multi-row
/// chat update. The rest of the batch is left to [`ingest_one`].
async fn ingest_known(
    desk: &Desk,
    conn: &mut Conn,
    cache: &mut BatchCache,
    jobs: &[Job],
    outcomes: &mut [Option<Result<IngestOutcome>>],
    events: &mut Vec<Event>,
) -> Result<()> {
    struct Known {
        idx: usize,
        id: MessageId,
        chat: ChatId,
        contact: ContactId,
        identity: IdentityId,
        channel: Channel,
    }
    let now = Ts::now();
    let mut by_channel: HashMap<&ChannelId, Vec<usize>> = HashMap::new();
    for (i, j) in jobs.iter().enumerate() {
        if j.msg.files.is_empty() {
            by_channel.entry(&j.msg.channel).or_default().push(i);
        }
    }
    let mut known = Vec::new();
    for (channel, idxs) in by_channel {
        // Unknown or inactive channels get their error from the one-by-one path.
        let Some(channel) = cache.channel(conn, channel).await?.filter(|c| c.active) else {
            continue;
        };
        let senders: Vec<&str> = idxs.iter().map(|&i| jobs[i].msg.sender.as_str()).collect();
        let states = chat_store::sender_states(conn, &channel.id, &senders).await?;
        for i in idxs {
            if let Some(s) = states.get(&jobs[i].msg.sender)
                && let Some(chat) = &s.open_chat
            {
                known.push(Known {
                    idx: i,
                    id: MessageId::generate(),
                    chat: chat.clone(),
                    contact: s.contact.clone(),
                    identity: s.identity.clone(),
                    channel: channel.clone(),
                });
            }
        }
    }
    if known.is_empty() {
        return Ok(());
    }
    known.sort_by_key(|k| k.idx);
    let rows: Vec<messages::NewMessage> = known
        .iter()
        .map(|k| messages::NewMessage {
            id: &k.id,
            chat: &k.chat,
            channel: &k.channel.id,
            direction: Direction::Inbound,
            author: None,
            body: &jobs[k.idx].msg.text,
            external_id: jobs[k.idx].msg.external_id.as_deref(),
            delivery_status: None,
            now,
        })
        .collect();
    let inserted = messages::insert_many(conn, &rows).await?;
    drop(rows);

    // One update per chat: count, and the last message as the preview.
    let mut order: Vec<&ChatId> = Vec::new();
    let mut agg: HashMap<&ChatId, (i64, String)> = HashMap::new();
    for k in known.iter().filter(|k| inserted.contains(&k.id.0)) {
        let e = agg.entry(&k.chat).or_insert_with(|| {
            order.push(&k.chat);
            (0, String::new())
        });
        e.0 += 1;
        e.1 = preview_of(&jobs[k.idx].msg.text, 0);
    }
    let updates: Vec<chat_store::InboundUpdate> = order
        .iter()
        .map(|c| {
            let (count, preview) = &agg[c];
            chat_store::InboundUpdate {
                chat: c,
                count: *count,
                preview,
                at: now,
            }
        })
        .collect();
    let states: HashMap<ChatId, chat_store::ChatState> =
        chat_store::on_inbound_many(conn, &updates)
            .await?
            .into_iter()
            .collect();
    drop(updates);

    let mut waiting_updated: Vec<(ChatId, QueueId)> = Vec::new();
    for k in known {
        let m = &jobs[k.idx].msg;
        if !inserted.contains(&k.id.0) {
            // Stored before, or earlier in this batch.
            outcomes[k.idx] = Some(
                duplicate(conn, &k.channel.id, m)
                    .await?
                    .ok_or(Error::not_found("message")),
            );
            continue;
        }
        let message = Message {
            id: k.id.clone(),
            chat_id: k.chat.clone(),
            direction: Direction::Inbound,
            author_id: None,
            author_name: None,
            body: m.text.clone(),
            external_id: m.external_id.clone(),
            delivery_status: None,
            attachments: Vec::new(),
            created_at: now,
        };
        if k.channel.kind == ChannelKind::Widget {
            events.push(Event {
                to: crate::Audience::Visitor(k.identity.clone()),
                body: EventBody::MessageCreated {
                    message: message.clone(),
                },
            });
        }
        match states.get(&k.chat) {
            Some(s) if s.status == ChatStatus::InProgress && s.responsible.is_some() => {
                if let Some(r) = &s.responsible {
                    events.push(Event::to_user(r, EventBody::MessageCreated { message }));
                }
            }
            Some(s) if s.status == ChatStatus::New => match &s.directed_to {
                Some(d) => events.push(Event::to_user(d, EventBody::MessageCreated { message })),
                None if !waiting_updated.iter().any(|(c, _)| c == &k.chat) => {
                    waiting_updated.push((k.chat.clone(), s.queue.clone()))
                }
                None => {}
            },
            _ => {}
        }
        desk.signal(
            conn,
            "chat.message.received",
            &k.chat,
            serde_json::json!({"contactId": k.contact, "channelId": k.channel.id, "text": m.text, "messageId": k.id}),
            now,
        )
        .await?;
        metrics::counter!("ferrydesk_messages_total", "direction" => "inbound").increment(1);
        outcomes[k.idx] = Some(Ok(IngestOutcome {
            message_id: k.id,
            chat_id: k.chat,
            contact_id: k.contact,
            duplicate: false,
            new_chat: false,
        }));
    }
    // The preview changed for everyone a waiting chat is offered to.
    for (chat, queue) in waiting_updated {
        if let Some(q) = directory::get_queue(conn, &queue).await?
            && q.routing_rule == RoutingRule::AllOperators
            && let Some(chat) = chat_store::get_chat(conn, &chat, now).await?
        {
            events.push(Event::to_users(q.members, EventBody::ChatUpdated { chat }));
        }
    }
    Ok(())
}

async fn ingest_alone(desk: &Desk, msg: &Inbound) -> Result<IngestOutcome> {
    let mut attempt = 0;
    loop {
        let mut tx = desk.store().begin().await?;
        let mut events = Vec::new();
        match ingest_one(desk, &mut tx, &mut BatchCache::default(), msg, &mut events).await {
            Ok(o) => {
                desk.commit(tx, events).await?;
                return Ok(o);
            }
            Err(Error::Store(e)) if e.is_retryable() && attempt < 5 => {
                attempt += 1;
                drop(tx);
                tokio::time::sleep(std::time::Duration::from_millis(10 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

async fn ingest_one(
    desk: &Desk,
    conn: &mut Conn,
    cache: &mut BatchCache,
    m: &Inbound,
    events: &mut Vec<Event>,
) -> Result<IngestOutcome> {
    let now = Ts::now();
    let channel = cache
        .channel(conn, &m.channel)
        .await?
        .ok_or_else(|| Error::invalid("channel", "no such channel"))?;
    if !channel.active {
        return Err(Error::conflict(
            "channel_inactive",
            "the channel is switched off",
        ));
    }
    // Files are checked before anything is written.
    let mut attachments = Vec::with_capacity(m.files.len());
    for f in &m.files {
        let rec = messages::get_file(conn, f)
            .await?
            .ok_or_else(|| Error::invalid("files", format!("file {f} does not exist")))?;
        if rec.message_id.is_some() {
            return Err(Error::invalid(
                "files",
                format!("file {f} is already attached"),
            ));
        }
        attachments.push(rec);
    }

    let sender = chat_store::sender_state(conn, &channel.id, &m.sender).await?;
    let known = sender.as_ref().map(|s| &s.identity);
    for rec in &attachments {
        // A client's file comes from this sender (widget) or this channel's integration (API),
        // never from staff or another sender.
        let own = match (&rec.uploader_identity, &rec.uploader_channel) {
            (Some(i), _) => Some(i) == known,
            (None, Some(c)) => c == &channel.id,
            (None, None) => false,
        };
        if !own || rec.uploader_user.is_some() {
            return Err(Error::invalid(
                "files",
                format!("file {} was not uploaded by this sender", rec.attachment.id),
            ));
        }
    }
    let (identity, contact, chat_id, new_chat) = match sender {
        Some(chat_store::SenderState {
            identity,
            contact,
            open_chat: Some(chat),
        }) => (identity, contact, chat, false),
        other => {
            if let Some(dup) = duplicate(conn, &channel.id, m).await? {
                return Ok(dup);
            }
            // First message of a sender or of a new chat: a savepoint keeps a failure from
            // leaving a contact or chat behind.
            let mut sp = sqlx::Acquire::begin(&mut *conn)
                .await
                .map_err(ferrydesk_store::Error::from)?;
            let opened = open_conversation(&mut sp, &channel, m, other, now).await?;
            sp.commit().await.map_err(ferrydesk_store::Error::from)?;
            opened
        }
    };
    let mid = MessageId::generate();
    let stored = messages::insert_message(
        conn,
        messages::NewMessage {
            id: &mid,
            chat: &chat_id,
            channel: &channel.id,
            direction: Direction::Inbound,
            author: None,
            body: &m.text,
            external_id: m.external_id.as_deref(),
            delivery_status: None,
            now,
        },
    )
    .await?;
    if !stored {
        // Delivered before (or concurrently, on another node).
        return duplicate(conn, &channel.id, m)
            .await?
            .ok_or(Error::not_found("message"));
    }
    for rec in &attachments {
        if !messages::attach_file(conn, &rec.attachment.id, &mid, &chat_id).await? {
            return Err(Error::Store(ferrydesk_store::Error::Corrupt(format!(
                "file {} was attached concurrently",
                rec.attachment.id
            ))));
        }
    }
    let state =
        chat_store::on_inbound(conn, &chat_id, &preview_of(&m.text, m.files.len()), now).await?;
    if new_chat {
        desk.signal(
            conn,
            "chat.started",
            &chat_id,
            serde_json::json!({"contactId": contact, "channelId": channel.id, "queueId": state.queue}),
            now,
        )
        .await?;
    }
    desk.signal(
        conn,
        "chat.message.received",
        &chat_id,
        serde_json::json!({"contactId": contact, "channelId": channel.id, "text": m.text, "messageId": mid}),
        now,
    )
    .await?;
    let message = Message {
        id: mid.clone(),
        chat_id: chat_id.clone(),
        direction: Direction::Inbound,
        author_id: None,
        author_name: None,
        body: m.text.clone(),
        external_id: m.external_id.clone(),
        delivery_status: None,
        attachments: attachments.into_iter().map(|r| r.attachment).collect(),
        created_at: now,
    };
    if channel.kind == ChannelKind::Widget {
        events.push(Event {
            to: crate::Audience::Visitor(identity.clone()),
            body: EventBody::MessageCreated {
                message: message.clone(),
            },
        });
    }
    if new_chat {
        desk.route(conn, &chat_id, events).await?;
    } else if let (ChatStatus::InProgress, Some(r)) = (state.status, &state.responsible) {
        events.push(Event::to_user(r, EventBody::MessageCreated { message }));
    } else if let (ChatStatus::New, Some(d)) = (state.status, &state.directed_to) {
        events.push(Event::to_user(d, EventBody::MessageCreated { message }));
    } else if state.status == ChatStatus::New
        && let Some(q) = directory::get_queue(conn, &state.queue).await?
        && q.routing_rule == RoutingRule::AllOperators
        && let Some(chat) = chat_store::get_chat(conn, &chat_id, now).await?
    {
        // The preview changed for everyone the waiting chat is offered to.
        events.push(Event::to_users(q.members, EventBody::ChatUpdated { chat }));
    }
    metrics::counter!("ferrydesk_messages_total", "direction" => "inbound").increment(1);
    Ok(IngestOutcome {
        message_id: mid,
        chat_id,
        contact_id: contact,
        duplicate: false,
        new_chat,
    })
}

/// The outcome for an external id stored before, if it was.
async fn duplicate(
    conn: &mut Conn,
    channel: &ChannelId,
    m: &Inbound,
) -> Result<Option<IngestOutcome>> {
    let Some(ext) = &m.external_id else {
        return Ok(None);
    };
    let Some((mid, cid)) = messages::by_external_id(conn, channel, ext).await? else {
        return Ok(None);
    };
    let chat = chat_store::get_chat(conn, &cid, Ts::now())
        .await?
        .ok_or(Error::not_found("chat"))?;
    Ok(Some(IngestOutcome {
        message_id: mid,
        chat_id: cid,
        contact_id: chat.contact_id,
        duplicate: true,
        new_chat: false,
    }))
}

/// Finds or creates the sender's contact (S23) and opens a chat, continuing the last finished
/// one (S21). Concurrent first messages race on unique keys; the loser adopts the winner's rows.
async fn open_conversation(
    conn: &mut Conn,
    channel: &Channel,
    m: &Inbound,
    known: Option<chat_store::SenderState>,
    now: Ts,
) -> Result<(IdentityId, ContactId, ChatId, bool)> {
    let (identity, contact) = match known {
        Some(s) => (s.identity, s.contact),
        None => {
            let cid = ContactId::generate();
            let name = m
                .sender_name
                .clone()
                .filter(|n| !n.trim().is_empty())
                .unwrap_or_else(|| format!("{} {}", channel.name, &m.sender));
            contacts::insert_contact(
                conn,
                contacts::NewContact {
                    id: &cid,
                    name: &name,
                    photo_url: m.sender_photo_url.as_deref(),
                    email: None,
                    phone: None,
                    now,
                },
            )
            .await?;
            let ident = Identity {
                id: IdentityId::generate(),
                contact_id: cid.clone(),
                channel_id: channel.id.clone(),
                external_id: m.sender.clone(),
                display_name: m.sender_name.clone(),
                created_at: now,
            };
            if contacts::insert_identity(conn, &ident).await? {
                (ident.id, cid)
            } else {
                contacts::delete_contact(conn, &cid).await?;
                let i = contacts::identity_by_external(conn, &channel.id, &m.sender)
                    .await?
                    .ok_or(Error::not_found("identity"))?;
                (i.id, i.contact_id)
            }
        }
    };
    if let Some(open) =
        chat_store::open_chat_of(conn, &contact, &channel.id, Some(&identity)).await?
    {
        return Ok((identity, contact, open, false));
    }
    let parent = chat_store::last_completed_of(conn, &contact, &channel.id).await?;
    let id = ChatId::generate();
    let created = chat_store::insert_chat(
        conn,
        chat_store::NewChat {
            id: &id,
            contact: &contact,
            channel: &channel.id,
            identity: Some(&identity),
            queue: &channel.queue_id,
            parent: parent.as_ref(),
            operator_initiated: false,
            now,
        },
    )
    .await?;
    if created {
        Ok((identity, contact, id, true))
    } else {
        let c = chat_store::open_chat_of(conn, &contact, &channel.id, Some(&identity))
            .await?
            .ok_or(Error::not_found("chat"))?;
        Ok((identity, contact, c, false))
    }
}
