//! Cases: created by hand, by the "Create case" process (through the `case.create` task) or by
//! the API; listed, edited, shown on the contact's timeline; a chat can be started from one
//! (S22).
//!
//! Who may read a case ([`Desk::readable_case`], one place; lists use the same rule as SQL,
//! `CaseFilter::visible_to`): supervisors and admins every case; an operator a case that was not
//! made from a chat, a case they are responsible for, and a case whose chat they may read
//! (S10, [`Desk::readable_chat`]) — a case made from a chat carries its content (the subject is
//! the client's first line, the description the transcript), so it is as private as the chat
//! until the chat is finished. Anything else is `not_found`.
//!
//! Who may edit a case ([`Desk::editable_case`]): supervisors and admins every case; an operator
//! a case they may read and are responsible for, or a readable case nobody is responsible for
//! (to take it). Every change is recorded field by field in the case history
//! ([`Desk::case_history`]).

use ferrydesk_domain::*;
use ferrydesk_store::{Conn, cases, contacts, directory};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Desk, Error, Event, EventBody, Principal, Result};

/// What a new case is made of. Everything but the subject is optional.
#[derive(Debug, Clone, Default, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CaseInput {
    pub subject: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub priority: Option<CasePriority>,
    #[serde(default)]
    pub contact_id: Option<ContactId>,
    #[serde(default)]
    pub channel_id: Option<ChannelId>,
    #[serde(default)]
    pub chat_id: Option<ChatId>,
    #[serde(default)]
    pub responsible_id: Option<UserId>,
}

/// Changes to a case; absent fields stay.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CasePatch {
    pub subject: Option<String>,
    pub description: Option<String>,
    pub status: Option<CaseStatus>,
    pub priority: Option<CasePriority>,
    /// `null` clears the responsible.
    #[serde(default, with = "double_option")]
    #[schema(value_type = Option<String>)]
    pub responsible_id: Option<Option<UserId>>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};
    pub fn deserialize<'de, T: Deserialize<'de>, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// One recorded change of a case: who changed which field from what to what, and when.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CaseChange {
    pub id: String,
    /// The user who made the change; `null` for a process.
    pub actor_id: Option<UserId>,
    pub actor_name: Option<String>,
    /// `subject`, `description`, `status`, `priority` or `responsible_id`.
    pub field: String,
    pub old_value: Option<String>,
    pub new_value: Option<String>,
    pub at: Ts,
}

/// Most history entries returned for one case.
pub const MAX_CASE_HISTORY: i64 = 1000;

/// A case with the chats linked to it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CaseView {
    pub case: Case,
    pub chats: Vec<Chat>,
}

fn check_subject(s: &str) -> Result<String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(Error::invalid("subject", "is required"));
    }
    if t.chars().count() > 200 {
        return Err(Error::invalid("subject", "is longer than 200 characters"));
    }
    Ok(t.to_owned())
}

fn check_description(s: &str) -> Result<()> {
    if s.chars().count() > 100_000 {
        return Err(Error::invalid(
            "description",
            "is longer than 100,000 characters",
        ));
    }
    Ok(())
}

impl Desk {
    /// Creates a case. `actor` is the operator (none when a process creates it on its own);
    /// `source_key` makes the creation idempotent (a process job's key). The originating chat
    /// gets a link and a system note.
    pub async fn create_case(
        &self,
        actor: Option<&UserId>,
        input: CaseInput,
        source_key: Option<&str>,
    ) -> Result<Case> {
        let subject = check_subject(&input.subject)?;
        check_description(&input.description)?;
        let now = Ts::now();
        let mut tx = self.store().begin().await?;
        if let Some(c) = &input.contact_id
            && contacts::get_contact(&mut tx, c).await?.is_none()
        {
            return Err(Error::invalid("contact_id", format!("no contact `{c}`")));
        }
        if let Some(c) = &input.channel_id
            && directory::get_channel(&mut tx, c).await?.is_none()
        {
            return Err(Error::invalid("channel_id", format!("no channel `{c}`")));
        }
        if let Some(u) = &input.responsible_id
            && directory::get_user(&mut tx, u).await?.is_none()
        {
            return Err(Error::invalid("responsible_id", format!("no user `{u}`")));
        }
        let chat = match &input.chat_id {
            Some(c) => Some(
                ferrydesk_store::chats::get_chat(&mut tx, c, now)
                    .await?
                    .ok_or_else(|| Error::invalid("chat_id", format!("no chat `{c}`")))?,
            ),
            None => None,
        };
        let id = CaseId::generate();
        let (case, created) = cases::insert_case(
            &mut tx,
            cases::NewCase {
                id: &id,
                subject: &subject,
                description: &input.description,
                priority: input.priority.unwrap_or(CasePriority::Normal),
                contact: input.contact_id.as_ref(),
                channel: input.channel_id.as_ref(),
                chat: input.chat_id.as_ref(),
                responsible: input.responsible_id.as_ref(),
                created_by: actor,
                source_key,
                now,
            },
        )
        .await?;
        let mut events = Vec::new();
        if created && let Some(chat) = &chat {
            if chat.case_id.is_none() {
                cases::link_chat(&mut tx, &chat.id, &case.id).await?;
            }
            let note = format!("Case #{} created: {}", case.number, case.subject);
            let m = self.system_message(&mut tx, chat, &note, now).await?;
            let mut to: Vec<UserId> = chat.responsible_id.iter().cloned().collect();
            to.extend(actor.cloned());
            to.dedup();
            if let Some(updated) = ferrydesk_store::chats::get_chat(&mut tx, &chat.id, now).await? {
                events.push(Event::to_users(
                    to.clone(),
                    EventBody::ChatUpdated { chat: updated },
                ));
            }
            events.push(Event::to_users(
                to,
                EventBody::MessageCreated { message: m },
            ));
        }
        self.commit(tx, events).await?;
        Ok(case)
    }

    /// Creates a case for a user of the API: a chat to link must be one they may read.
    pub async fn create_case_as(&self, p: &Principal, input: CaseInput) -> Result<Case> {
        if let Some(c) = &input.chat_id {
            let mut conn = self.store().read().await?;
            self.readable_chat(&mut conn, p, c)
                .await
                .map_err(|_| Error::invalid("chat_id", format!("no chat `{c}`")))?;
        }
        self.create_case(Some(p.id()), input, None).await
    }

    /// The case visibility rule (see the module documentation): the case, or `not_found`.
    pub async fn readable_case(&self, conn: &mut Conn, p: &Principal, id: &CaseId) -> Result<Case> {
        let case = cases::get_case(conn, id)
            .await?
            .ok_or(Error::not_found("case"))?;
        if p.role().sees_all_chats() || case.responsible_id.as_ref() == Some(p.id()) {
            return Ok(case);
        }
        if let Some(chat) = &case.chat_id
            && self.readable_chat(conn, p, chat).await.is_err()
        {
            return Err(Error::not_found("case"));
        }
        Ok(case)
    }

    /// The case edit rule (see the module documentation): the case, `not_found` when the
    /// caller may not read it, `forbidden` when they may read but not edit it.
    async fn editable_case(&self, conn: &mut Conn, p: &Principal, id: &CaseId) -> Result<Case> {
        let case = self.readable_case(conn, p, id).await?;
        if p.role().sees_all_chats() {
            return Ok(case);
        }
        match &case.responsible_id {
            None => Ok(case),
            Some(r) if r == p.id() => Ok(case),
            Some(_) => Err(Error::forbidden(
                "only the case's responsible operator or a supervisor may edit this case",
            )),
        }
    }

    /// Cases the caller may read (the total counts only those).
    pub async fn list_cases(
        &self,
        p: &Principal,
        filter: &cases::CaseFilter,
    ) -> Result<(Vec<Case>, i64)> {
        let mut filter = filter.clone();
        filter.visible_to = (!p.role().sees_all_chats()).then(|| p.id().clone());
        let mut conn = self.store().read().await?;
        Ok(cases::list_cases(&mut conn, &filter).await?)
    }

    /// Who changed what on a case, oldest first (for whoever may read the case).
    pub async fn case_history(&self, p: &Principal, id: &CaseId) -> Result<Vec<CaseChange>> {
        let mut conn = self.store().read().await?;
        self.readable_case(&mut conn, p, id).await?;
        Ok(cases::case_changes(&mut conn, id, MAX_CASE_HISTORY)
            .await?
            .into_iter()
            .map(|r| CaseChange {
                id: r.id,
                actor_id: r.actor_id.map(UserId),
                actor_name: r.actor_name,
                field: r.field,
                old_value: r.old_value,
                new_value: r.new_value,
                at: Ts(r.at),
            })
            .collect())
    }

    pub async fn case_view(&self, p: &Principal, id: &CaseId) -> Result<CaseView> {
        let mut conn = self.store().read().await?;
        let case = self.readable_case(&mut conn, p, id).await?;
        let (chats, _) = ferrydesk_store::chats::list_chats(
            &mut conn,
            &ferrydesk_store::chats::ChatFilter {
                case: Some(id.clone()),
                limit: 200,
                ..Default::default()
            },
            Ts::now(),
        )
        .await?;
        let mut out = Vec::with_capacity(chats.len());
        for mut c in chats {
            if !p.role().sees_all_chats() && self.readable_chat(&mut conn, p, &c.id).await.is_err()
            {
                c.preview = None;
            }
            out.push(c);
        }
        Ok(CaseView { case, chats: out })
    }

    pub async fn update_case(&self, p: &Principal, id: &CaseId, patch: CasePatch) -> Result<Case> {
        let now = Ts::now();
        let mut tx = self.store().begin().await?;
        let before = self.editable_case(&mut tx, p, id).await?;
        let mut c = before.clone();
        if let Some(s) = &patch.subject {
            c.subject = check_subject(s)?;
        }
        if let Some(d) = patch.description {
            check_description(&d)?;
            c.description = d;
        }
        if let Some(pr) = patch.priority {
            c.priority = pr;
        }
        if let Some(r) = patch.responsible_id {
            if let Some(u) = &r
                && directory::get_user(&mut tx, u).await?.is_none()
            {
                return Err(Error::invalid("responsible_id", format!("no user `{u}`")));
            }
            c.responsible_id = r;
        }
        if let Some(s) = patch.status {
            let closing = matches!(s, CaseStatus::Resolved | CaseStatus::Closed);
            c.closed_at = match (closing, c.closed_at) {
                (true, None) => Some(now),
                (true, at) => at,
                (false, _) => None,
            };
            c.status = s;
        }
        let changes = [
            (
                "subject",
                Some(before.subject.clone()),
                Some(c.subject.clone()),
            ),
            (
                "description",
                Some(before.description.clone()),
                Some(c.description.clone()),
            ),
            (
                "status",
                Some(before.status.as_str().to_owned()),
                Some(c.status.as_str().to_owned()),
            ),
            (
                "priority",
                Some(before.priority.as_str().to_owned()),
                Some(c.priority.as_str().to_owned()),
            ),
            (
                "responsible_id",
                before.responsible_id.as_ref().map(|u| u.0.clone()),
                c.responsible_id.as_ref().map(|u| u.0.clone()),
            ),
        ];
        if changes.iter().all(|(_, old, new)| old == new) {
            return Ok(before);
        }
        cases::update_case(&mut tx, &c, now).await?;
        for (field, old, new) in &changes {
            if old != new {
                cases::insert_case_change(
                    &mut tx,
                    cases::NewCaseChange {
                        case: id,
                        actor: Some(p.id()),
                        field,
                        old_value: old.as_deref(),
                        new_value: new.as_deref(),
                        now,
                    },
                )
                .await?;
            }
        }
        let c = cases::get_case(&mut tx, id)
            .await?
            .ok_or(Error::not_found("case"))?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(c)
    }

    /// Starts a chat with the case's contact (S22) and links it to the case.
    pub async fn start_chat_from_case(
        &self,
        p: &Principal,
        id: &CaseId,
        identity: Option<&IdentityId>,
        text: &str,
    ) -> Result<Chat> {
        let case = {
            let mut conn = self.store().read().await?;
            self.readable_case(&mut conn, p, id).await?
        };
        let contact = case
            .contact_id
            .clone()
            .ok_or_else(|| Error::invalid("contact_id", "the case has no contact to write to"))?;
        let chat = self.start_chat(p, &contact, identity, text).await?;
        let now = Ts::now();
        let mut tx = self.store().begin().await?;
        cases::link_chat(&mut tx, &chat.id, &case.id).await?;
        let note = format!("Chat started from case #{}: {}", case.number, case.subject);
        let m = self.system_message(&mut tx, &chat, &note, now).await?;
        let chat = ferrydesk_store::chats::get_chat(&mut tx, &chat.id, now)
            .await?
            .ok_or(Error::not_found("chat"))?;
        self.commit(
            tx,
            vec![
                Event::to_user(p.id(), EventBody::ChatUpdated { chat: chat.clone() }),
                Event::to_user(p.id(), EventBody::MessageCreated { message: m }),
            ],
        )
        .await?;
        Ok(chat)
    }
}

impl Desk {
    /// Posts a system note into a chat on behalf of a process; `key` (the job's idempotency
    /// key) makes a retried job post it once.
    pub async fn system_note(&self, chat: &ChatId, text: &str, key: &str) -> Result<MessageId> {
        crate::chats::validate_text(text, 0)?;
        let now = Ts::now();
        let mut tx = self.store().begin().await?;
        let chat = ferrydesk_store::chats::get_chat(&mut tx, chat, now)
            .await?
            .ok_or_else(|| Error::invalid("chatId", format!("no chat `{chat}`")))?;
        let external = format!("process:{key}");
        if let Some(existing) =
            ferrydesk_store::messages::by_external_id(&mut tx, &chat.channel_id, &external).await?
        {
            return Ok(existing.0);
        }
        let mid = MessageId::generate();
        ferrydesk_store::messages::insert_message(
            &mut tx,
            ferrydesk_store::messages::NewMessage {
                id: &mid,
                chat: &chat.id,
                channel: &chat.channel_id,
                direction: Direction::System,
                author: None,
                body: text,
                external_id: Some(&external),
                delivery_status: None,
                now,
            },
        )
        .await?;
        let m = ferrydesk_store::messages::get_message(&mut tx, &mid)
            .await?
            .ok_or(Error::not_found("message"))?;
        let events = chat
            .responsible_id
            .iter()
            .map(|r| Event::to_user(r, EventBody::MessageCreated { message: m.clone() }))
            .collect();
        self.commit(tx, events).await?;
        Ok(mid)
    }

    /// The principal of a user, for work done on their behalf later (a process they started).
    pub async fn principal_of(&self, user: &UserId) -> Result<Principal> {
        let mut conn = self.store().read().await?;
        let u = directory::get_user(&mut conn, user)
            .await?
            .ok_or(Error::not_found("user"))?;
        if u.disabled {
            return Err(Error::forbidden("the user is disabled"));
        }
        Ok(Principal {
            user: u,
            via: crate::auth::Via::Token,
        })
    }
}
