//! Ingestion of client messages: find or create the contact and the chat, store the message
//! once per `(channel, external id)`, route new chats, notify.
//!
//! Requests are queued to one writer task per node that commits them in groups (one
//! transaction per batch), so throughput is bounded by statements rather than fsyncs. An
//! acknowledged message is committed. If a batch fails, its requests are retried one by one so
//! that one bad request cannot fail the others.

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
        self.inner
            .ingest
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

/// Runs a batch in one transaction. Per-request validation errors become that request's answer
/// (the statements that failed are rolled back by a savepoint); database errors fail the batch.
async fn commit_batch(desk: &Desk, jobs: &[Job]) -> Result<Vec<Result<IngestOutcome>>> {
    let mut tx = desk.store().begin().await?;
    let mut events = Vec::new();
    let mut outcomes = Vec::with_capacity(jobs.len());
    for job in jobs {
        let mut sp = sqlx::Acquire::begin(&mut *tx)
            .await
            .map_err(ferrydesk_store::Error::from)?;
        let mut ev = Vec::new();
        match ingest_one(desk, &mut sp, &job.msg, &mut ev).await {
            Ok(o) => {
                sp.commit().await.map_err(ferrydesk_store::Error::from)?;
                events.extend(ev);
                outcomes.push(Ok(o));
            }
            Err(Error::Store(e)) => return Err(Error::Store(e)),
            Err(e) => {
                sp.rollback().await.map_err(ferrydesk_store::Error::from)?;
                outcomes.push(Err(e));
            }
        }
    }
    desk.commit(tx, events).await?;
    Ok(outcomes)
}

async fn ingest_alone(desk: &Desk, msg: &Inbound) -> Result<IngestOutcome> {
    let mut attempt = 0;
    loop {
        let mut tx = desk.store().begin().await?;
        let mut events = Vec::new();
        match ingest_one(desk, &mut tx, msg, &mut events).await {
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
    m: &Inbound,
    events: &mut Vec<Event>,
) -> Result<IngestOutcome> {
    let now = Ts::now();
    let channel = directory::get_channel(conn, &m.channel)
        .await?
        .ok_or_else(|| Error::invalid("channel", "no such channel"))?;
    if !channel.active {
        return Err(Error::conflict(
            "channel_inactive",
            "the channel is switched off",
        ));
    }
    if let Some(ext) = &m.external_id
        && let Some((mid, cid)) = messages::by_external_id(conn, &channel.id, ext).await?
    {
        let chat = chat_store::get_chat(conn, &cid, now)
            .await?
            .ok_or(Error::not_found("chat"))?;
        return Ok(IngestOutcome {
            message_id: mid,
            chat_id: cid,
            contact_id: chat.contact_id,
            duplicate: true,
            new_chat: false,
        });
    }

    // Contact by sender identity (S23). Concurrent first messages race on the identity's
    // unique key; the loser adopts the winner's contact.
    let identity = match contacts::identity_by_external(conn, &channel.id, &m.sender).await? {
        Some(i) => i,
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
                ident
            } else {
                contacts::delete_contact(conn, &cid).await?;
                contacts::identity_by_external(conn, &channel.id, &m.sender)
                    .await?
                    .ok_or(Error::not_found("identity"))?
            }
        }
    };

    // The contact's unfinished chat on this channel, or a new one continuing the last (S21).
    let (chat_id, new_chat) =
        match chat_store::open_chat_of(conn, &identity.contact_id, &channel.id).await? {
            Some(c) => (c, false),
            None => {
                let parent =
                    chat_store::last_completed_of(conn, &identity.contact_id, &channel.id).await?;
                let id = ChatId::generate();
                let created = chat_store::insert_chat(
                    conn,
                    chat_store::NewChat {
                        id: &id,
                        contact: &identity.contact_id,
                        channel: &channel.id,
                        identity: Some(&identity.id),
                        queue: &channel.queue_id,
                        parent: parent.as_ref(),
                        operator_initiated: false,
                        now,
                    },
                )
                .await?;
                if created {
                    (id, true)
                } else {
                    let c = chat_store::open_chat_of(conn, &identity.contact_id, &channel.id)
                        .await?
                        .ok_or(Error::not_found("chat"))?;
                    (c, false)
                }
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
        // A concurrent delivery of the same external id committed first.
        let ext = m.external_id.as_deref().unwrap_or_default();
        let (mid, cid) = messages::by_external_id(conn, &channel.id, ext)
            .await?
            .ok_or(Error::not_found("message"))?;
        return Ok(IngestOutcome {
            message_id: mid,
            chat_id: cid,
            contact_id: identity.contact_id,
            duplicate: true,
            new_chat: false,
        });
    }
    for f in &m.files {
        let rec = messages::get_file(conn, f)
            .await?
            .ok_or_else(|| Error::invalid("files", format!("file {f} does not exist")))?;
        if rec
            .uploader_identity
            .as_ref()
            .is_some_and(|i| i != &identity.id)
        {
            return Err(Error::invalid(
                "files",
                format!("file {f} belongs to another sender"),
            ));
        }
        if !messages::attach_file(conn, f, &mid, &chat_id).await? {
            return Err(Error::invalid(
                "files",
                format!("file {f} is already attached"),
            ));
        }
    }
    let state =
        chat_store::on_inbound(conn, &chat_id, &preview_of(&m.text, m.files.len()), now).await?;
    let message = messages::get_message(conn, &mid)
        .await?
        .ok_or(Error::not_found("message"))?;
    if channel.kind == ChannelKind::Widget {
        events.push(Event {
            to: crate::Audience::Visitor(identity.id.clone()),
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
        contact_id: identity.contact_id,
        duplicate: false,
        new_chat,
    })
}
