//! The chat lifecycle as operators drive it: lists, accept, reply, transfer, finish, drafts,
//! status — with the visibility rule (S10) applied in one place, [`Desk::readable_chat`].

use ferrydesk_domain::*;
use ferrydesk_store::{Conn, chats as chat_store, contacts, directory, messages};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Desk, Error, Event, EventBody, Principal, Result, limit_of, preview_of};

/// Largest message text, in characters.
pub const MAX_TEXT_CHARS: usize = 10_000;
/// Most files on one message.
pub const MAX_FILES_PER_MESSAGE: usize = 10;

/// Where a chat is transferred (S15).
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum TransferTarget {
    Queue(QueueId),
    Operator(UserId),
}

/// An operator as the transfer dialog lists them.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TransferOperator {
    pub id: UserId,
    pub display_name: String,
    pub availability: Availability,
    pub load: i64,
    pub limit: i64,
}

/// The operator's view of their desk: limit, load, new and active chats.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Inbox {
    pub status: OperatorStatus,
    pub load: i64,
    pub limit: i64,
    pub new_chats: Vec<Chat>,
    pub active_chats: Vec<Chat>,
}

/// A chat with its transcript, including the earlier chats it continues (S21).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ChatView {
    pub chat: Chat,
    pub messages: Vec<Message>,
    /// Earlier chats of this conversation, nearest first.
    pub history: Vec<ChatId>,
}

/// A reply from an operator.
#[derive(Debug, Clone, Default)]
pub struct Reply {
    pub text: String,
    pub files: Vec<FileId>,
}

pub(crate) fn validate_text(text: &str, files: usize) -> Result<()> {
    if text.trim().is_empty() && files == 0 {
        return Err(Error::invalid(
            "text",
            "a message needs text or at least one file",
        ));
    }
    if text.chars().count() > MAX_TEXT_CHARS {
        return Err(Error::invalid(
            "text",
            format!("must be at most {MAX_TEXT_CHARS} characters"),
        ));
    }
    if files > MAX_FILES_PER_MESSAGE {
        return Err(Error::invalid(
            "files",
            format!("at most {MAX_FILES_PER_MESSAGE} files per message"),
        ));
    }
    Ok(())
}

impl Desk {
    /// The visibility rule (S10), used by every surface. Supervisors and admins read everything.
    /// An operator reads a chat they are responsible for, a new chat offered to them, and
    /// completed chats. Anything else is reported as not found.
    pub(crate) async fn readable_chat(
        &self,
        conn: &mut Conn,
        p: &Principal,
        id: &ChatId,
    ) -> Result<Chat> {
        let chat = chat_store::get_chat(conn, id, Ts::now())
            .await?
            .ok_or(Error::not_found("chat"))?;
        if p.role().sees_all_chats() || can_operator_read(conn, p.id(), &chat).await? {
            Ok(chat)
        } else {
            Err(Error::not_found("chat"))
        }
    }

    /// Whether `p` may read the chat (the visibility rule, for other crates: the process
    /// engine's instance and task views). An unknown chat is not readable.
    pub async fn may_read_chat(&self, p: &Principal, id: &ChatId) -> Result<bool> {
        if p.role().sees_all_chats() {
            return Ok(true);
        }
        let mut conn = self.store().read().await?;
        match self.readable_chat(&mut conn, p, id).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether `p` may read the case (the case visibility rule, `cases.rs`).
    pub async fn may_read_case(&self, p: &Principal, id: &CaseId) -> Result<bool> {
        if p.role().sees_all_chats() {
            return Ok(true);
        }
        let mut conn = self.store().read().await?;
        match self.readable_case(&mut conn, p, id).await {
            Ok(_) => Ok(true),
            Err(Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn inbox(&self, p: &Principal) -> Result<Inbox> {
        let now = Ts::now();
        let mut conn = self.store().read().await?;
        let user = directory::get_user(&mut conn, p.id())
            .await?
            .ok_or(Error::Unauthenticated)?;
        let limit = limit_of(&user, self.default_chat_limit(&mut conn).await?);
        let mut new_chats = chat_store::new_chats_for(&mut conn, p.id(), now).await?;
        // Only Active operators with free capacity see undirected chats (S2, S6).
        if user.status != OperatorStatus::Active || user.active_chats >= limit {
            new_chats.retain(|c| c.directed_to.as_ref() == Some(p.id()));
        }
        let active_chats = chat_store::active_chats_for(&mut conn, p.id(), now).await?;
        Ok(Inbox {
            status: user.status,
            load: user.active_chats,
            limit,
            new_chats,
            active_chats,
        })
    }

    pub async fn chat_view(&self, p: &Principal, id: &ChatId) -> Result<ChatView> {
        let mut conn = self.store().read().await?;
        let chat = self.readable_chat(&mut conn, p, id).await?;
        let history = chat_store::ancestors(&mut conn, id, 20).await?;
        let mut ids: Vec<ChatId> = history.iter().rev().cloned().collect();
        ids.push(chat.id.clone());
        let messages = messages::transcript(&mut conn, &ids).await?;
        Ok(ChatView {
            chat,
            messages,
            history,
        })
    }

    pub async fn routing_decisions(
        &self,
        p: &Principal,
        id: &ChatId,
    ) -> Result<Vec<RoutingDecision>> {
        let mut conn = self.store().read().await?;
        self.readable_chat(&mut conn, p, id).await?;
        Ok(chat_store::decisions_of(&mut conn, id).await?)
    }

    /// Accepts a new chat (S9). Atomic: of concurrent accepts exactly one wins, and the
    /// operator's limit holds.
    pub async fn accept(&self, p: &Principal, id: &ChatId) -> Result<Chat> {
        let now = Ts::now();
        let mut tx = self.store().begin().await?;
        let chat = chat_store::get_chat(&mut tx, id, now)
            .await?
            .ok_or(Error::not_found("chat"))?;
        if chat.status != ChatStatus::New {
            if !p.role().sees_all_chats()
                && chat.responsible_id.as_ref() != Some(p.id())
                && chat.status != ChatStatus::Completed
            {
                return Err(Error::conflict(
                    "chat_taken",
                    "another operator has already accepted this chat",
                ));
            }
            return Err(Error::conflict(
                "chat_not_new",
                format!("the chat is {}", chat.status),
            ));
        }
        let directed_to_me = chat.directed_to.as_ref() == Some(p.id());
        if chat.directed_to.is_some() && !directed_to_me {
            return Err(Error::conflict(
                "chat_taken",
                "the chat is offered to another operator",
            ));
        }
        if !directed_to_me {
            let queue = directory::get_queue(&mut tx, &chat.queue_id)
                .await?
                .ok_or(Error::not_found("queue"))?;
            let user = directory::get_user(&mut tx, p.id())
                .await?
                .ok_or(Error::Unauthenticated)?;
            if !queue.members.contains(p.id()) && !p.role().sees_all_chats() {
                return Err(Error::not_found("chat"));
            }
            if user.status != OperatorStatus::Active {
                return Err(Error::conflict(
                    "inactive",
                    "set your status to Active to accept new chats",
                ));
            }
            if queue.routing_rule == RoutingRule::AvailableOperator && !p.role().sees_all_chats() {
                return Err(Error::conflict(
                    "not_offered",
                    "this queue directs chats to one operator at a time",
                ));
            }
        }
        let default_limit = self.default_chat_limit(&mut tx).await?;
        if !directory::take_capacity(&mut tx, p.id(), default_limit, now).await? {
            return Err(Error::conflict(
                "chats_exceeded",
                "you have reached your limit of simultaneous chats",
            ));
        }
        if !chat_store::accept(&mut tx, id, p.id(), now).await? {
            return Err(Error::conflict(
                "chat_taken",
                "another operator has already accepted this chat",
            ));
        }
        chat_store::insert_decision(
            &mut tx,
            &RoutingDecision {
                id: DecisionId::generate(),
                chat_id: id.clone(),
                at: now,
                action: RoutingAction::Accepted,
                rule: None,
                queue_id: Some(chat.queue_id.clone()),
                chosen: Some(p.id().clone()),
                candidates: Vec::new(),
                reason: format!("accepted by {}", p.user.username),
            },
        )
        .await?;
        let chat = chat_store::get_chat(&mut tx, id, now)
            .await?
            .ok_or(Error::not_found("chat"))?;
        self.signal(
            &mut tx,
            "chat.accepted",
            id,
            serde_json::json!({"contactId": chat.contact_id, "channelId": chat.channel_id, "queueId": chat.queue_id, "operatorId": p.id()}),
            now,
        )
        .await?;
        let others: Vec<UserId> = directory::get_queue(&mut tx, &chat.queue_id)
            .await?
            .map(|q| q.members.into_iter().filter(|m| m != p.id()).collect())
            .unwrap_or_default();
        let events = vec![
            Event::to_user(p.id(), EventBody::ChatAssigned { chat: chat.clone() }),
            Event::to_users(
                others,
                EventBody::ChatWithdrawn {
                    chat_id: id.clone(),
                    reason: "taken".into(),
                },
            ),
        ];
        self.commit(tx, events).await?;
        metrics::counter!("ferrydesk_chats_accepted_total").increment(1);
        Ok(chat)
    }

    /// Sends an operator's reply (text and files) to the client.
    pub async fn reply(&self, p: &Principal, id: &ChatId, reply: Reply) -> Result<Message> {
        validate_text(&reply.text, reply.files.len())?;
        let now = Ts::now();
        let mut tx = self.store().begin().await?;
        let chat = self.readable_chat(&mut tx, p, id).await?;
        let mut events = Vec::new();
        let (message, to_outbox) = self
            .post_reply_in(
                &mut tx,
                p,
                &chat,
                &reply.text,
                &reply.files,
                now,
                &mut events,
            )
            .await?;
        directory::save_draft(&mut tx, id, p.id(), "", now).await?;
        self.commit(tx, events).await?;
        if to_outbox {
            self.connectors().kick.notify_one();
        }
        metrics::counter!("ferrydesk_messages_total", "direction" => "outbound").increment(1);
        Ok(message)
    }

    /// Stores an operator's message to the client inside `tx`: the responsible operator of a
    /// chat in progress only; files attached, the auto-finish timer restarted, events for the
    /// operator and the widget visitor, and — on connector channels — the outbox entry in the
    /// same transaction. Returns the message and whether the outbox must be kicked after commit.
    /// Replies and plugin actions' `post-message` effects both go through here.
    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn post_reply_in(
        &self,
        tx: &mut Conn,
        p: &Principal,
        chat: &Chat,
        text: &str,
        files: &[FileId],
        now: Ts,
        events: &mut Vec<Event>,
    ) -> Result<(Message, bool)> {
        if chat.status != ChatStatus::InProgress || chat.responsible_id.as_ref() != Some(p.id()) {
            return Err(Error::conflict(
                "not_responsible",
                "only the responsible operator can reply to a chat in progress",
            ));
        }
        let channel = directory::get_channel(tx, &chat.channel_id)
            .await?
            .ok_or(Error::not_found("channel"))?;
        let queue = directory::get_queue(tx, &chat.queue_id)
            .await?
            .ok_or(Error::not_found("queue"))?;
        let mid = MessageId::generate();
        let delivery = match channel.kind {
            ChannelKind::Widget => DeliveryStatus::Sent,
            _ => DeliveryStatus::Queued,
        };
        messages::insert_message(
            tx,
            messages::NewMessage {
                id: &mid,
                chat: &chat.id,
                channel: &chat.channel_id,
                direction: Direction::Outbound,
                author: Some(p.id()),
                body: text,
                external_id: None,
                delivery_status: Some(delivery),
                now,
            },
        )
        .await?;
        for f in files {
            self.attach_own_file(tx, f, p.id(), &mid, &chat.id).await?;
        }
        let autofinish = queue.completion_timeout_mins.map(|m| now.plus_secs(m * 60));
        chat_store::on_outbound(
            tx,
            &chat.id,
            &preview_of(text, files.len()),
            now,
            autofinish,
        )
        .await?;
        let message = messages::get_message(tx, &mid)
            .await?
            .ok_or(Error::not_found("message"))?;
        events.push(Event::to_user(
            p.id(),
            EventBody::MessageCreated {
                message: message.clone(),
            },
        ));
        if let Some(identity) = visitor_identity(tx, chat).await? {
            events.push(Event {
                to: crate::Audience::Visitor(identity),
                body: EventBody::MessageCreated {
                    message: message.clone(),
                },
            });
        }
        // Connector channels (messengers): the reply joins the durable outbox in this
        // transaction; the delivery loop sends it after commit.
        let to_outbox = channel.kind == ChannelKind::Plugin;
        if to_outbox {
            ferrydesk_store::plugins::outbox_insert(tx, mid.as_str(), channel.id.as_str(), now.0)
                .await?;
        }
        Ok((message, to_outbox))
    }

    async fn attach_own_file(
        &self,
        conn: &mut Conn,
        f: &FileId,
        user: &UserId,
        mid: &MessageId,
        chat: &ChatId,
    ) -> Result<()> {
        let rec = messages::get_file(conn, f)
            .await?
            .ok_or_else(|| Error::invalid("files", format!("file {f} does not exist")))?;
        if rec.uploader_user.as_ref() != Some(user) {
            return Err(Error::invalid(
                "files",
                format!("file {f} was not uploaded by you"),
            ));
        }
        if !messages::attach_file(conn, f, mid, chat).await? {
            return Err(Error::invalid(
                "files",
                format!("file {f} is already attached to a message"),
            ));
        }
        Ok(())
    }

    /// Writes a system line into the transcript.
    pub(crate) async fn system_message(
        &self,
        conn: &mut Conn,
        chat: &Chat,
        text: &str,
        now: Ts,
    ) -> Result<Message> {
        let mid = MessageId::generate();
        messages::insert_message(
            conn,
            messages::NewMessage {
                id: &mid,
                chat: &chat.id,
                channel: &chat.channel_id,
                direction: Direction::System,
                author: None,
                body: text,
                external_id: None,
                delivery_status: None,
                now,
            },
        )
        .await?;
        messages::get_message(conn, &mid)
            .await?
            .ok_or(Error::not_found("message"))
    }

    /// Operators with their availability, for the transfer dialog (S15).
    pub async fn transfer_operators(
        &self,
        p: &Principal,
        q: &str,
    ) -> Result<Vec<TransferOperator>> {
        // Every staff member may list transfer targets (the transfer dialog): names,
        // availability and load, no chat content. The caller is not a target.
        p.require(Role::Operator)?;
        let mut conn = self.store().read().await?;
        let default_limit = self.default_chat_limit(&mut conn).await?;
        let q = q.to_lowercase();
        Ok(directory::list_users(&mut conn)
            .await?
            .into_iter()
            .filter(|u| {
                !u.disabled
                    && &u.id != p.id()
                    && (q.is_empty()
                        || u.display_name.to_lowercase().contains(&q)
                        || u.username.contains(&q))
            })
            .map(|u| {
                let limit = limit_of(&u, default_limit);
                let availability = if u.status == OperatorStatus::Inactive {
                    Availability::Inactive
                } else if u.active_chats >= limit {
                    Availability::ChatsExceeded
                } else {
                    Availability::Active
                };
                TransferOperator {
                    id: u.id,
                    display_name: u.display_name,
                    availability,
                    load: u.active_chats,
                    limit,
                }
            })
            .collect())
    }

    /// Transfers a chat to a queue (it becomes new there) or to an operator (who becomes
    /// responsible at once, within their limit). Takes effect for open sockets immediately.
    pub async fn transfer(
        &self,
        p: &Principal,
        id: &ChatId,
        target: TransferTarget,
    ) -> Result<Chat> {
        let now = Ts::now();
        let mut tx = self.store().begin().await?;
        let chat = self.readable_chat(&mut tx, p, id).await?;
        let mut events = Vec::new();
        let from = match (&chat.status, &chat.responsible_id) {
            (ChatStatus::InProgress, Some(r)) if r == p.id() || p.role().sees_all_chats() => {
                Some(r.clone())
            }
            (ChatStatus::New, _) if p.role().sees_all_chats() => None,
            _ => {
                return Err(Error::conflict(
                    "not_responsible",
                    "only the responsible operator can transfer this chat",
                ));
            }
        };
        let note = match &target {
            TransferTarget::Queue(qid) => {
                let q = directory::get_queue(&mut tx, qid)
                    .await?
                    .ok_or_else(|| Error::invalid("queue", "no such queue"))?;
                let moved = match &from {
                    Some(from) => chat_store::requeue(&mut tx, id, from, qid, now).await?,
                    None => chat_store::move_new(&mut tx, id, qid, now).await?,
                };
                if !moved {
                    return Err(Error::conflict(
                        "chat_changed",
                        "the chat changed meanwhile; reload it",
                    ));
                }
                if let Some(from) = &from {
                    directory::release_capacity(&mut tx, from).await?;
                }
                format!("Transferred to queue {} by {}", q.name, p.user.display_name)
            }
            TransferTarget::Operator(to) => {
                let target = directory::get_user(&mut tx, to)
                    .await?
                    .ok_or_else(|| Error::invalid("operator", "no such operator"))?;
                if target.disabled {
                    return Err(Error::invalid("operator", "the operator is disabled"));
                }
                if from.as_ref() == Some(to) {
                    return Err(Error::invalid("operator", "the chat is already yours"));
                }
                let default_limit = self.default_chat_limit(&mut tx).await?;
                if !directory::take_capacity(&mut tx, to, default_limit, now).await? {
                    return Err(Error::conflict(
                        "chats_exceeded",
                        format!("{} has no free chat capacity", target.display_name),
                    ));
                }
                let moved = match &from {
                    Some(from) => chat_store::reassign(&mut tx, id, from, to).await?,
                    None => chat_store::assign_new(&mut tx, id, to, now).await?,
                };
                if !moved {
                    return Err(Error::conflict(
                        "chat_changed",
                        "the chat changed meanwhile; reload it",
                    ));
                }
                if let Some(from) = &from {
                    directory::release_capacity(&mut tx, from).await?;
                }
                format!(
                    "Transferred to {} by {}",
                    target.display_name, p.user.display_name
                )
            }
        };
        chat_store::insert_decision(
            &mut tx,
            &RoutingDecision {
                id: DecisionId::generate(),
                chat_id: id.clone(),
                at: now,
                action: RoutingAction::Transferred,
                rule: None,
                queue_id: match &target {
                    TransferTarget::Queue(q) => Some(q.clone()),
                    TransferTarget::Operator(_) => None,
                },
                chosen: match &target {
                    TransferTarget::Operator(u) => Some(u.clone()),
                    TransferTarget::Queue(_) => None,
                },
                candidates: Vec::new(),
                reason: note.clone(),
            },
        )
        .await?;
        let sys = self.system_message(&mut tx, &chat, &note, now).await?;
        if let Some(from) = &from {
            events.push(Event::to_user(
                from,
                EventBody::ChatWithdrawn {
                    chat_id: id.clone(),
                    reason: "transferred".into(),
                },
            ));
        }
        match &target {
            TransferTarget::Queue(_) => {
                self.route(&mut tx, id, &mut events).await?;
            }
            TransferTarget::Operator(to) => {
                let c = chat_store::get_chat(&mut tx, id, now)
                    .await?
                    .ok_or(Error::not_found("chat"))?;
                events.push(Event::to_user(to, EventBody::ChatAssigned { chat: c }));
                events.push(Event::to_user(
                    to,
                    EventBody::MessageCreated { message: sys },
                ));
            }
        }
        if let Some(from) = &from {
            self.drain_for(&mut tx, from, crate::routing::Drain::SlotFreed, &mut events)
                .await?;
        }
        let chat = chat_store::get_chat(&mut tx, id, now)
            .await?
            .ok_or(Error::not_found("chat"))?;
        self.commit(tx, events).await?;
        Ok(chat)
    }

    /// Finishes a chat (S19).
    pub async fn finish(&self, p: &Principal, id: &ChatId) -> Result<Chat> {
        let mut tx = self.store().begin().await?;
        let chat = self.readable_chat(&mut tx, p, id).await?;
        let own =
            chat.responsible_id.as_ref() == Some(p.id()) && chat.status == ChatStatus::InProgress;
        if !own && !p.role().sees_all_chats() {
            return Err(Error::conflict(
                "not_responsible",
                "only the responsible operator can finish this chat",
            ));
        }
        if chat.status == ChatStatus::Completed {
            return Err(Error::conflict(
                "chat_completed",
                "the chat is already finished",
            ));
        }
        let reason = if own {
            CloseReason::Operator
        } else {
            CloseReason::Supervisor
        };
        self.finish_in(tx, &chat, reason, Some(p.id()), false)
            .await?;
        let mut conn = self.store().read().await?;
        chat_store::get_chat(&mut conn, id, Ts::now())
            .await?
            .ok_or(Error::not_found("chat"))
    }

    /// Completes the chat, frees the operator's capacity and offers them waiting chats.
    pub(crate) async fn finish_in(
        &self,
        mut tx: ferrydesk_store::Tx,
        chat: &Chat,
        reason: CloseReason,
        by: Option<&UserId>,
        only_if_due: bool,
    ) -> Result<bool> {
        let now = Ts::now();
        let was_in_progress = chat.status == ChatStatus::InProgress;
        let Some(responsible) =
            chat_store::finish(&mut tx, &chat.id, reason, by, now, only_if_due).await?
        else {
            return Ok(false);
        };
        self.signal(
            &mut tx,
            "chat.finished",
            &chat.id,
            serde_json::json!({"contactId": chat.contact_id, "channelId": chat.channel_id, "queueId": chat.queue_id, "operatorId": responsible, "reason": reason}),
            now,
        )
        .await?;
        let text = match reason {
            CloseReason::AutoFinish => {
                "Chat finished automatically: the client did not answer".to_owned()
            }
            _ => "Chat finished".to_owned(),
        };
        let sys = self.system_message(&mut tx, chat, &text, now).await?;
        let mut events = Vec::new();
        if let (true, Some(r)) = (was_in_progress, &responsible) {
            directory::release_capacity(&mut tx, r).await?;
            events.push(Event::to_user(
                r,
                EventBody::MessageCreated { message: sys },
            ));
            events.push(Event::to_user(
                r,
                EventBody::ChatFinished {
                    chat_id: chat.id.clone(),
                    reason,
                },
            ));
            self.drain_for(&mut tx, r, crate::routing::Drain::SlotFreed, &mut events)
                .await?;
        }
        if chat.status == ChatStatus::New {
            let offered = directory::get_queue(&mut tx, &chat.queue_id)
                .await?
                .map(|q| q.members)
                .unwrap_or_default();
            events.push(Event::to_users(
                offered,
                EventBody::ChatWithdrawn {
                    chat_id: chat.id.clone(),
                    reason: "finished".into(),
                },
            ));
        }
        if let Some(identity) = visitor_identity(&mut tx, chat).await? {
            events.push(Event {
                to: crate::Audience::Visitor(identity),
                body: EventBody::ChatFinished {
                    chat_id: chat.id.clone(),
                    reason,
                },
            });
        }
        self.commit(tx, events).await?;
        metrics::counter!("ferrydesk_chats_finished_total", "reason" => reason.as_str())
            .increment(1);
        Ok(true)
    }

    /// Starts a chat with a contact on one of their identities (S22). The operator becomes
    /// responsible at once.
    pub async fn start_chat(
        &self,
        p: &Principal,
        contact: &ContactId,
        identity: Option<&IdentityId>,
        text: &str,
    ) -> Result<Chat> {
        if !text.trim().is_empty() {
            validate_text(text, 0)?;
        }
        let now = Ts::now();
        let mut tx = self.store().begin().await?;
        let c = contacts::get_contact(&mut tx, contact)
            .await?
            .ok_or(Error::not_found("contact"))?;
        let ident = match identity {
            Some(i) => c
                .identities
                .iter()
                .find(|x| &x.id == i)
                .cloned()
                .ok_or_else(|| Error::invalid("identity_id", "not an identity of this contact"))?,
            None if c.identities.len() == 1 => c.identities[0].clone(),
            None if c.identities.is_empty() => {
                return Err(Error::invalid(
                    "identity_id",
                    "the contact has no channel identity to write to",
                ));
            }
            None => {
                return Err(Error::invalid(
                    "identity_id",
                    "the contact has several identities: choose one",
                ));
            }
        };
        let channel = directory::get_channel(&mut tx, &ident.channel_id)
            .await?
            .ok_or(Error::not_found("channel"))?;
        if let Some(open) =
            chat_store::open_chat_of(&mut tx, contact, &channel.id, Some(&ident.id)).await?
        {
            return Err(Error::conflict(
                "chat_open",
                format!("the contact already has an open chat {open} on this channel"),
            ));
        }
        let default_limit = self.default_chat_limit(&mut tx).await?;
        if !directory::take_capacity(&mut tx, p.id(), default_limit, now).await? {
            return Err(Error::conflict(
                "chats_exceeded",
                "you have reached your limit of simultaneous chats",
            ));
        }
        let parent = chat_store::last_completed_of(&mut tx, contact, &channel.id).await?;
        let id = ChatId::generate();
        chat_store::insert_chat(
            &mut tx,
            chat_store::NewChat {
                id: &id,
                contact,
                channel: &channel.id,
                identity: Some(&ident.id),
                queue: &channel.queue_id,
                parent: parent.as_ref(),
                operator_initiated: true,
                now,
            },
        )
        .await?;
        chat_store::assign_new(&mut tx, &id, p.id(), now).await?;
        let chat = chat_store::get_chat(&mut tx, &id, now)
            .await?
            .ok_or(Error::not_found("chat"))?;
        self.commit(
            tx,
            vec![Event::to_user(
                p.id(),
                EventBody::ChatAssigned { chat: chat.clone() },
            )],
        )
        .await?;
        if !text.trim().is_empty() {
            self.reply(
                p,
                &id,
                Reply {
                    text: text.to_owned(),
                    files: Vec::new(),
                },
            )
            .await?;
        }
        Ok(chat)
    }

    pub async fn mark_read(&self, p: &Principal, id: &ChatId) -> Result<()> {
        let mut tx = self.store().begin().await?;
        let chat = self.readable_chat(&mut tx, p, id).await?;
        if chat.responsible_id.as_ref() == Some(p.id()) {
            chat_store::mark_read(&mut tx, id).await?;
        }
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(())
    }

    pub async fn save_draft(&self, p: &Principal, id: &ChatId, text: &str) -> Result<()> {
        if text.chars().count() > MAX_TEXT_CHARS {
            return Err(Error::invalid(
                "text",
                format!("must be at most {MAX_TEXT_CHARS} characters"),
            ));
        }
        let mut tx = self.store().begin().await?;
        self.readable_chat(&mut tx, p, id).await?;
        directory::save_draft(&mut tx, id, p.id(), text, Ts::now()).await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(())
    }

    pub async fn draft(&self, p: &Principal, id: &ChatId) -> Result<Option<(String, Ts)>> {
        let mut conn = self.store().read().await?;
        self.readable_chat(&mut conn, p, id).await?;
        Ok(directory::get_draft(&mut conn, id, p.id()).await?)
    }

    /// Sets the caller's status (or, for admins and supervisors, anyone's).
    pub async fn set_status(
        &self,
        p: &Principal,
        user: &UserId,
        status: OperatorStatus,
    ) -> Result<User> {
        let reason = if user == p.id() {
            StatusReason::Manual
        } else {
            p.require(Role::Supervisor)?;
            StatusReason::Admin
        };
        let mut tx = self.store().begin().await?;
        directory::get_user(&mut tx, user)
            .await?
            .ok_or(Error::not_found("user"))?;
        let mut events = Vec::new();
        self.set_status_in(&mut tx, user, status, reason, Some(p.id()), &mut events)
            .await?;
        let u = directory::get_user(&mut tx, user)
            .await?
            .ok_or(Error::not_found("user"))?;
        self.commit(tx, events).await?;
        Ok(u)
    }

    pub async fn status_history(&self, p: &Principal, user: &UserId) -> Result<Vec<StatusChange>> {
        if user != p.id() {
            p.require(Role::Supervisor)?;
        }
        let mut conn = self.store().read().await?;
        Ok(directory::status_history(&mut conn, user, 200).await?)
    }

    /// Chats section list (S25): supervisors see all; operators see what the visibility rule
    /// lets them read, and the total counts only that.
    pub async fn list_chats(
        &self,
        p: &Principal,
        mut filter: chat_store::ChatFilter,
    ) -> Result<(Vec<Chat>, i64)> {
        filter.limit = filter.limit.clamp(1, 500);
        if !p.role().sees_all_chats() {
            filter.visible_to = Some(p.id().clone());
        }
        let mut conn = self.store().read().await?;
        Ok(chat_store::list_chats(&mut conn, &filter, Ts::now()).await?)
    }
}

/// The operator-side half of the visibility rule.
async fn can_operator_read(conn: &mut Conn, user: &UserId, chat: &Chat) -> Result<bool> {
    Ok(match chat.status {
        ChatStatus::Completed => true,
        ChatStatus::InProgress => chat.responsible_id.as_ref() == Some(user),
        ChatStatus::New => match &chat.directed_to {
            Some(d) => d == user,
            None => {
                let q = directory::get_queue(conn, &chat.queue_id).await?;
                q.is_some_and(|q| {
                    q.routing_rule == RoutingRule::AllOperators && q.members.contains(user)
                })
            }
        },
    })
}

/// The widget visitor of a chat, if the chat came through the widget.
pub(crate) async fn visitor_identity(conn: &mut Conn, chat: &Chat) -> Result<Option<IdentityId>> {
    let channel = directory::get_channel(conn, &chat.channel_id).await?;
    if channel.map(|c| c.kind) != Some(ChannelKind::Widget) {
        return Ok(None);
    }
    Ok(chat_store::identity_of(conn, &chat.id)
        .await?
        .flatten()
        .map(IdentityId))
}
