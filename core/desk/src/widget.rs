//! The two channels built into the core: the website widget (visitors) and the API channel
//! (integrations posting inbound messages and reading outbound ones).

use ferrydesk_domain::*;
use ferrydesk_store::{chats as chat_store, contacts, directory, messages, security};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::{hash_secret, new_secret};
use crate::ingest::{Inbound, IngestOutcome};
use crate::{Desk, Error, Result};

/// An authenticated widget visitor.
#[derive(Debug, Clone)]
pub struct Visitor {
    pub channel: ChannelId,
    pub identity: Identity,
}

/// A new visitor session: keep the token in the browser to stay the same visitor.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct VisitorSession {
    pub token: String,
    pub visitor_id: IdentityId,
    pub channel_name: String,
    #[schema(value_type = std::collections::HashMap<String, serde_json::Value>)]
    pub settings: serde_json::Value,
}

/// An outbound message for an API channel integration.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct OutboundItem {
    pub message: Message,
    /// The sender id the client wrote from (where to deliver).
    pub recipient: Option<String>,
}

impl Desk {
    /// Starts a widget visitor session on the channel with this public key.
    pub async fn visitor_session(
        &self,
        public_key: &str,
        name: Option<&str>,
    ) -> Result<VisitorSession> {
        let now = Ts::now();
        let mut tx = self.store().begin().await?;
        let channel = directory::channel_by_public_key(&mut tx, public_key)
            .await?
            .ok_or(Error::not_found("channel"))?;
        if channel.kind != ChannelKind::Widget || !channel.active {
            return Err(Error::not_found("channel"));
        }
        let name = name
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(|n| n.chars().take(200).collect::<String>());
        let contact_id = ContactId::generate();
        let visitor_no = &uuid::Uuid::new_v4().simple().to_string()[..8];
        let display = name
            .clone()
            .unwrap_or_else(|| format!("Visitor {visitor_no}"));
        contacts::insert_contact(
            &mut tx,
            contacts::NewContact {
                id: &contact_id,
                name: &display,
                photo_url: None,
                email: None,
                phone: None,
                now,
            },
        )
        .await?;
        let identity = Identity {
            id: IdentityId::generate(),
            contact_id,
            channel_id: channel.id.clone(),
            external_id: format!("visitor-{}", uuid::Uuid::now_v7()),
            display_name: name,
            created_at: now,
        };
        contacts::insert_identity(&mut tx, &identity).await?;
        let (token, hash) = new_secret("fdv_");
        security::insert_visitor_session(&mut tx, &hash, &channel.id, &identity.id, now).await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(VisitorSession {
            token,
            visitor_id: identity.id,
            channel_name: channel.name,
            settings: channel.settings,
        })
    }

    pub async fn authenticate_visitor(&self, token: &str) -> Result<Visitor> {
        let mut conn = self.store().read().await?;
        let (channel, identity) = security::visitor_session(&mut conn, &hash_secret(token))
            .await?
            .ok_or(Error::Unauthenticated)?;
        Ok(Visitor { channel, identity })
    }

    /// The visitor's conversation: every chat of their contact on this channel, oldest first,
    /// without internal system lines.
    pub async fn visitor_transcript(&self, v: &Visitor) -> Result<Vec<Message>> {
        let mut conn = self.store().read().await?;
        let (chats, _) = chat_store::list_chats(
            &mut conn,
            &chat_store::ChatFilter {
                contact: Some(v.identity.contact_id.clone()),
                channel: Some(v.channel.clone()),
                limit: 100,
                ..Default::default()
            },
            Ts::now(),
        )
        .await?;
        let ids: Vec<ChatId> = chats.into_iter().rev().map(|c| c.id).collect();
        let mut msgs = messages::transcript(&mut conn, &ids).await?;
        msgs.retain(|m| m.direction != Direction::System);
        Ok(msgs)
    }

    /// A message from the visitor. `client_id` makes retries idempotent.
    pub async fn visitor_send(
        &self,
        v: &Visitor,
        text: &str,
        client_id: Option<&str>,
        files: Vec<FileId>,
    ) -> Result<IngestOutcome> {
        self.ingest(Inbound {
            channel: v.channel.clone(),
            external_id: client_id.map(|c| format!("{}:{c}", v.identity.id)),
            sender: v.identity.external_id.clone(),
            sender_name: v.identity.display_name.clone(),
            sender_photo_url: None,
            text: text.to_owned(),
            files,
        })
        .await
    }

    /// A file of the visitor's conversation.
    pub async fn visitor_download(
        &self,
        v: &Visitor,
        id: &FileId,
    ) -> Result<(Attachment, Vec<u8>)> {
        let mut conn = self.store().read().await?;
        let rec = messages::get_file(&mut conn, id)
            .await?
            .ok_or(Error::not_found("file"))?;
        let allowed = match &rec.chat_id {
            Some(chat) => chat_store::get_chat(&mut conn, chat, Ts::now())
                .await?
                .is_some_and(|c| {
                    c.contact_id == v.identity.contact_id && c.channel_id == v.channel
                }),
            None => rec.uploader_identity.as_ref() == Some(&v.identity.id),
        };
        if !allowed {
            return Err(Error::not_found("file"));
        }
        drop(conn);
        let bytes = self.blobs().get(&rec.attachment.sha256).await?;
        Ok((rec.attachment, bytes))
    }

    /// A file of one of the API channel's chats, or one it uploaded, for its integration.
    pub async fn channel_download(
        &self,
        ch: &Channel,
        id: &FileId,
    ) -> Result<(Attachment, Vec<u8>)> {
        let mut conn = self.store().read().await?;
        let rec = messages::get_file(&mut conn, id)
            .await?
            .ok_or(Error::not_found("file"))?;
        let allowed = match &rec.chat_id {
            Some(chat) => chat_store::get_chat(&mut conn, chat, Ts::now())
                .await?
                .is_some_and(|c| c.channel_id == ch.id),
            None => rec.uploader_channel.as_ref() == Some(&ch.id),
        };
        if !allowed {
            return Err(Error::not_found("file"));
        }
        drop(conn);
        let bytes = self.blobs().get(&rec.attachment.sha256).await?;
        Ok((rec.attachment, bytes))
    }

    /// Resolves an API channel token.
    ///
    /// Integrations post at high rates, so a resolved token is remembered for
    /// [`CHANNEL_AUTH_TTL`]: a rotated token or a deactivated channel stops working within that.
    pub async fn authenticate_channel(&self, token: &str) -> Result<Channel> {
        let hash = hash_secret(token);
        if let Some(ch) = self.inner.channel_auth.get(&hash) {
            return Ok(ch);
        }
        let mut conn = self.store().read().await?;
        let ch = directory::channel_by_token_hash(&mut conn, &hash)
            .await?
            .ok_or(Error::Unauthenticated)?;
        if ch.kind != ChannelKind::Api {
            return Err(Error::Unauthenticated);
        }
        self.inner.channel_auth.put(hash, ch.clone());
        Ok(ch)
    }

    /// Operator replies of an API channel the integration has not acknowledged yet, oldest
    /// first: delivery is at least once, until acked.
    pub async fn channel_outbound(&self, ch: &Channel, limit: i64) -> Result<Vec<OutboundItem>> {
        let mut conn = self.store().read().await?;
        Ok(
            messages::outbound_pending(&mut conn, &ch.id, limit.clamp(1, 500))
                .await?
                .into_iter()
                .map(|(message, recipient)| OutboundItem { message, recipient })
                .collect(),
        )
    }

    /// The integration reports delivery of an outbound message.
    pub async fn channel_ack(
        &self,
        ch: &Channel,
        id: &MessageId,
        status: DeliveryStatus,
    ) -> Result<()> {
        let mut tx = self.store().begin().await?;
        let m = messages::get_message(&mut tx, id)
            .await?
            .ok_or(Error::not_found("message"))?;
        let chat = chat_store::get_chat(&mut tx, &m.chat_id, Ts::now())
            .await?
            .ok_or(Error::not_found("message"))?;
        if chat.channel_id != ch.id || m.direction != Direction::Outbound {
            return Err(Error::not_found("message"));
        }
        messages::set_delivery(&mut tx, id, status).await?;
        let mut events = Vec::new();
        if let Some(r) = &chat.responsible_id {
            let mut m = m;
            m.delivery_status = Some(status);
            events.push(crate::Event::to_user(
                r,
                crate::EventBody::MessageCreated { message: m },
            ));
        }
        self.commit(tx, events).await
    }
}

/// How long a resolved API-channel token is trusted without asking the database again.
pub const CHANNEL_AUTH_TTL: std::time::Duration = std::time::Duration::from_secs(5);

/// Recently resolved API-channel tokens (by hash).
#[derive(Default)]
pub(crate) struct ChannelAuthCache {
    map: std::sync::Mutex<std::collections::HashMap<String, (Channel, std::time::Instant)>>,
}

impl ChannelAuthCache {
    fn get(&self, hash: &str) -> Option<Channel> {
        let map = self.map.lock().ok()?;
        let (ch, at) = map.get(hash)?;
        (at.elapsed() < CHANNEL_AUTH_TTL).then(|| ch.clone())
    }
    fn put(&self, hash: String, ch: Channel) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() > 10_000 {
                map.retain(|_, (_, at)| at.elapsed() < CHANNEL_AUTH_TTL);
            }
            map.insert(hash, (ch, std::time::Instant::now()));
        }
    }
    /// Forgets every cached token (after a rotation or a channel change on this node).
    pub(crate) fn clear(&self) {
        if let Ok(mut map) = self.map.lock() {
            map.clear();
        }
    }
}
