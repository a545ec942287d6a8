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
    /// The visitor's identity on the channel. Until the first message (`has_contact` false) it
    /// is only reserved: its id is final, but no row exists and `contact_id` matches nothing.
    pub identity: Identity,
    /// Whether the identity and its contact exist (the visitor has written).
    pub has_contact: bool,
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
    /// Starts a widget visitor session on the channel with this public key, for a client at
    /// `client` (its address key): at most `visitor_sessions_per_minute` per address and
    /// minute. No contact is created until the visitor writes.
    pub async fn visitor_session(
        &self,
        public_key: &str,
        name: Option<&str>,
        client: &str,
    ) -> Result<VisitorSession> {
        let now = Ts::now();
        let mut tx = self.store().begin().await?;
        if let Some(at) = security::take_rate(
            &mut tx,
            &format!("widget-session:{client}"),
            now,
            60_000,
            self.options().visitor_sessions_per_minute,
        )
        .await?
        {
            return Err(Error::RateLimited {
                retry_after: std::time::Duration::from_secs(
                    ((at.0 - now.0).max(1) as u64).div_ceil(1000),
                ),
            });
        }
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
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
        let identity = IdentityId::generate();
        let external_id = format!("visitor-{}", uuid::Uuid::now_v7().simple());
        let (token, hash) = new_secret("fdv_");
        security::insert_visitor_session(
            &mut tx,
            &hash,
            &channel.id,
            &identity,
            &external_id,
            name.as_deref(),
            now,
        )
        .await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(VisitorSession {
            token,
            visitor_id: identity,
            channel_name: channel.name,
            settings: channel.settings,
        })
    }

    /// Resolves a visitor token. A session unused for `visitor_session_ttl` has ended (and is
    /// deleted). `touch` marks it used (requests do; the socket's re-check does not, so an
    /// abandoned open page does not keep a session alive).
    pub async fn authenticate_visitor(&self, token: &str, touch: bool) -> Result<Visitor> {
        let now = Ts::now();
        let hash = hash_secret(token);
        let mut conn = self.store().read().await?;
        let row = security::visitor_session(&mut conn, &hash)
            .await?
            .ok_or(Error::Unauthenticated)?;
        drop(conn);
        let ttl = self.options().visitor_session_ttl.as_millis() as i64;
        // A visitor who never wrote has no conversation to lose: their session ends sooner.
        let ttl = if row.identity.is_some() {
            ttl
        } else {
            ttl.min(UNUSED_VISITOR_SESSION_TTL.as_millis() as i64)
        };
        if row.last_seen_at.0 <= now.0 - ttl {
            let mut tx = self.store().begin().await?;
            security::delete_visitor_session(&mut tx, &hash).await?;
            tx.commit().await.map_err(ferrydesk_store::Error::from)?;
            return Err(Error::Unauthenticated);
        }
        // Written at most every ttl/20 (and at least hourly), not on every request.
        if touch && now.0 - row.last_seen_at.0 > (ttl / 20).min(3_600_000) {
            let mut tx = self.store().begin().await?;
            security::touch_visitor_session(&mut tx, &hash, now).await?;
            tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        }
        let has_contact = row.identity.is_some();
        let identity = row.identity.unwrap_or_else(|| Identity {
            id: row.identity_id,
            contact_id: ContactId::generate(),
            channel_id: row.channel.clone(),
            external_id: row.external_id,
            display_name: row.display_name,
            created_at: row.created_at,
        });
        Ok(Visitor {
            channel: row.channel,
            identity,
            has_contact,
        })
    }

    /// Creates the visitor's contact and identity (with the session's reserved id) before
    /// their first message; a no-op when they exist.
    async fn ensure_visitor_contact(&self, v: &Visitor) -> Result<()> {
        if v.has_contact {
            return Ok(());
        }
        let now = Ts::now();
        let mut tx = self.store().begin().await?;
        if contacts::identity_by_external(&mut tx, &v.channel, &v.identity.external_id)
            .await?
            .is_some()
        {
            return Ok(());
        }
        let contact_id = ContactId::generate();
        let tail = v.identity.external_id.len().saturating_sub(8);
        let display = v
            .identity
            .display_name
            .clone()
            .unwrap_or_else(|| format!("Visitor {}", &v.identity.external_id[tail..]));
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
            contact_id: contact_id.clone(),
            created_at: now,
            ..v.identity.clone()
        };
        if !contacts::insert_identity(&mut tx, &identity).await? {
            // Another request of the same visitor won the race.
            return Ok(());
        }
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(())
    }

    /// The visitor's conversation: every chat of this visitor session's identity on this
    /// channel, oldest first, without internal system lines. Chats belong to the identity the
    /// visitor wrote from, not to the contact: after an operator merges two visitors' contacts,
    /// each visitor still sees only their own chats.
    pub async fn visitor_transcript(&self, v: &Visitor) -> Result<Vec<Message>> {
        let mut conn = self.store().read().await?;
        let (chats, _) = chat_store::list_chats(
            &mut conn,
            &chat_store::ChatFilter {
                identity: Some(v.identity.id.clone()),
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
        // Checked before the contact is created, so that empty sends create nothing.
        crate::chats::validate_text(text, files.len())?;
        self.ensure_visitor_contact(v).await?;
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

    /// A file of the visitor's own conversation (a chat of their identity, as
    /// [`Desk::visitor_transcript`]), or one they uploaded.
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
            Some(chat) => {
                chat_store::identity_of(&mut conn, chat)
                    .await?
                    .flatten()
                    .as_deref()
                    == Some(v.identity.id.as_str())
            }
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

/// A widget visitor session whose visitor never wrote ends after this long unused (or the
/// `visitor_session_ttl`, when shorter), so sessions that nobody uses do not pile up.
pub const UNUSED_VISITOR_SESSION_TTL: std::time::Duration =
    std::time::Duration::from_secs(24 * 3600);

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
