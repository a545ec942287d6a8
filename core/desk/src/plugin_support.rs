//! What the plugin runtime needs from the desk: applying an action's effects in one
//! transaction, connector channels, records for plugins to read, contact photos.

use ferrydesk_domain::*;
use ferrydesk_store::{contacts, directory, messages};
use serde::Serialize;
use utoipa::ToSchema;

use crate::{Desk, Error, Event, EventBody, Principal, Result};

/// Something an action asks the desk to do, already checked against the manifest.
#[derive(Debug, Clone)]
pub enum PluginEffect {
    /// A message to the client, sent as the operator who ran the action.
    PostMessage(String),
    /// An internal note in the chat (operators only).
    PostNote(String),
    /// Changes to a contact's name, email or phone.
    UpdateContact {
        id: ContactId,
        fields: serde_json::Value,
    },
}

/// An effect as applied, for the caller and the audit.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum AppliedEffect {
    MessagePosted { message_id: MessageId },
    NotePosted { message_id: MessageId },
    ContactUpdated { contact_id: ContactId },
}

impl Desk {
    /// Applies an action's effects on a chat in one transaction: all or none.
    pub async fn apply_plugin_effects(
        &self,
        p: &Principal,
        chat_id: &ChatId,
        plugin: &str,
        effects: &[PluginEffect],
    ) -> Result<Vec<AppliedEffect>> {
        if effects.is_empty() {
            return Ok(Vec::new());
        }
        let now = Ts::now();
        let mut tx = self.store().begin().await?;
        let chat = self.readable_chat(&mut tx, p, chat_id).await?;
        let mut applied = Vec::new();
        let mut events = Vec::new();
        let mut kick = false;
        for e in effects {
            match e {
                PluginEffect::PostMessage(text) => {
                    crate::chats::validate_text(text, 0)?;
                    let (m, outbox) = self
                        .post_reply_in(&mut tx, p, &chat, text, &[], now, &mut events)
                        .await
                        .map_err(|e| match e {
                            Error::Conflict { code, .. } => Error::conflict(
                                code,
                                format!("plugin `{plugin}` wants to message the client, but only the responsible operator of a chat in progress can"),
                            ),
                            other => other,
                        })?;
                    kick |= outbox;
                    applied.push(AppliedEffect::MessagePosted { message_id: m.id });
                }
                PluginEffect::PostNote(text) => {
                    crate::chats::validate_text(text, 0)?;
                    let m = self.system_message(&mut tx, &chat, text, now).await?;
                    let id = m.id.clone();
                    events.push(Event::to_user(
                        p.id(),
                        EventBody::MessageCreated { message: m },
                    ));
                    applied.push(AppliedEffect::NotePosted { message_id: id });
                }
                PluginEffect::UpdateContact { id, fields } => {
                    let mut c = contacts::get_contact(&mut tx, id).await?.ok_or_else(|| {
                        Error::invalid(
                            "effects",
                            format!("plugin `{plugin}`: contact {id} does not exist"),
                        )
                    })?;
                    let obj = fields.as_object().ok_or_else(|| {
                        Error::invalid(
                            "effects",
                            format!("plugin `{plugin}`: contact fields must be an object"),
                        )
                    })?;
                    for (k, v) in obj {
                        let v = v.as_str().map(str::to_owned);
                        match k.as_str() {
                            "name" => {
                                c.name = v.filter(|s| !s.trim().is_empty()).ok_or_else(|| {
                                    Error::invalid("effects", "contact name cannot be empty")
                                })?
                            }
                            "email" => c.email = v,
                            "phone" => c.phone = v,
                            other => {
                                return Err(Error::invalid(
                                    "effects",
                                    format!(
                                        "plugin `{plugin}`: contacts have no writable field `{other}`"
                                    ),
                                ));
                            }
                        }
                    }
                    contacts::update_contact(&mut tx, &c, now).await?;
                    applied.push(AppliedEffect::ContactUpdated {
                        contact_id: id.clone(),
                    });
                }
            }
        }
        self.commit(tx, events).await?;
        if kick {
            self.connectors().kick.notify_one();
        }
        Ok(applied)
    }

    /// A chat as a plugin reads it (the actor's visibility rule applies): the chat, its
    /// contact and its transcript.
    pub async fn chat_record(&self, p: &Principal, id: &ChatId) -> Result<serde_json::Value> {
        let view = self.chat_view(p, id).await?;
        let mut conn = self.store().read().await?;
        let contact = contacts::get_contact(&mut conn, &view.chat.contact_id).await?;
        let mut v = serde_json::to_value(&view.chat).map_err(|e| Error::Internal(e.to_string()))?;
        if let Some(o) = v.as_object_mut() {
            o.insert(
                "messages".into(),
                serde_json::to_value(&view.messages).map_err(|e| Error::Internal(e.to_string()))?,
            );
            o.insert(
                "contact".into(),
                serde_json::to_value(&contact).map_err(|e| Error::Internal(e.to_string()))?,
            );
        }
        Ok(v)
    }

    /// A contact as a plugin reads it.
    pub async fn contact_record(
        &self,
        _p: &Principal,
        id: &ContactId,
    ) -> Result<Option<serde_json::Value>> {
        let mut conn = self.store().read().await?;
        let c = contacts::get_contact(&mut conn, id).await?;
        c.map(|c| serde_json::to_value(c).map_err(|e| Error::Internal(e.to_string())))
            .transpose()
    }

    /// Creates a channel served by connector plugin `plugin`.
    pub async fn create_plugin_channel(
        &self,
        p: &Principal,
        plugin: &str,
        channel_type: &str,
        name: &str,
        queue_id: &QueueId,
    ) -> Result<Channel> {
        p.require(Role::Admin)?;
        if name.trim().is_empty() || name.chars().count() > 200 {
            return Err(Error::invalid("name", "must be 1 to 200 characters"));
        }
        let name = name.trim();
        if name.is_empty() {
            return Err(Error::invalid("name", "must be 1 to 200 characters"));
        }
        let id = ChannelId::generate();
        let settings = serde_json::json!({ "plugin": plugin, "channel_type": channel_type });
        let mut tx = self.store().begin().await?;
        directory::get_queue(&mut tx, queue_id)
            .await?
            .ok_or_else(|| Error::invalid("queue_id", "no such queue"))?;
        directory::insert_channel(
            &mut tx,
            directory::NewChannel {
                id: &id,
                kind: ChannelKind::Plugin,
                name,
                queue_id,
                settings: &settings,
                public_key: None,
                token_hash: None,
                now: Ts::now(),
            },
        )
        .await?;
        let channel = directory::get_channel(&mut tx, &id)
            .await?
            .ok_or(Error::not_found("channel"))?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(channel)
    }

    /// A contact photo a channel stored: readable by any staff member.
    pub async fn contact_photo(
        &self,
        _p: &Principal,
        id: &FileId,
    ) -> Result<(Attachment, Vec<u8>)> {
        let mut conn = self.store().read().await?;
        let rec = messages::get_file(&mut conn, id)
            .await?
            .ok_or(Error::not_found("photo"))?;
        if rec.chat_id.is_some()
            || rec.uploader_channel.is_none()
            || !rec.attachment.content_type.starts_with("image/")
        {
            return Err(Error::not_found("photo"));
        }
        drop(conn);
        let bytes = self.blobs().get(&rec.attachment.sha256).await?;
        Ok((rec.attachment, bytes))
    }
}
