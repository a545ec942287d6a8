//! Delivery of operator replies to messenger channels (connector plugins).
//!
//! A reply to a connector channel is written to the `outbox` in the same transaction as the
//! message, so an acknowledged reply is never lost. A delivery loop on every node leases due
//! entries (a conditional update: one node wins), hands each to its channel's [`Connector`],
//! and records the outcome: sent (with the provider's message id), a retry after the delay the
//! provider asked for (429 `retry_after`) or an exponential backoff, or failed after
//! [`MAX_ATTEMPTS`]. A completion is fenced by the attempt number, so a node whose lease ran out
//! cannot overwrite a later attempt's result. Delivery is at-least-once; connectors pass the
//! Ferrydesk message id as an idempotency key where the provider supports one.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use ferrydesk_domain::*;
use ferrydesk_store::{
    chats as chat_store, contacts, directory, messages, plugins as plugin_store,
};
use futures::future::BoxFuture;
use tokio::sync::{Notify, watch};

use crate::{Desk, Event, EventBody, Result};

/// Attempts before a reply is marked failed.
pub const MAX_ATTEMPTS: i64 = 10;
/// How long a node holds a leased entry (longer than any plugin time limit).
const LEASE_MS: i64 = 90_000;

/// An operator reply to deliver to a client.
#[derive(Debug, Clone)]
pub struct Outbound {
    pub channel: Channel,
    /// The client's id on the channel (the identity's external id).
    pub recipient: String,
    pub message: Message,
}

/// What a delivery attempt achieved.
#[derive(Debug, Clone, PartialEq)]
pub enum Delivery {
    /// The provider accepted it, with its message id.
    Sent { external_id: Option<String> },
    /// Worth retrying later (non-2xx, 429 with retry-after, network). `after` is the provider's
    /// minimum delay, if it gave one.
    Retry {
        after: Option<Duration>,
        reason: String,
    },
    /// Will never succeed (blocked by the client, invalid recipient).
    Failed { reason: String },
}

/// A channel connector: delivers replies for the channels of one kind.
pub trait Connector: Send + Sync + 'static {
    fn deliver(&self, out: Outbound) -> BoxFuture<'_, Delivery>;
}

/// Connectors by channel id, registered by the plugin runtime.
#[derive(Clone, Default)]
pub struct Connectors {
    by_channel: Arc<RwLock<HashMap<ChannelId, Arc<dyn Connector>>>>,
    pub(crate) kick: Arc<Notify>,
}

impl Connectors {
    pub fn register(&self, channel: ChannelId, c: Arc<dyn Connector>) {
        if let Ok(mut m) = self.by_channel.write() {
            m.insert(channel, c);
        }
        self.kick.notify_one();
    }
    pub fn unregister(&self, channel: &ChannelId) {
        if let Ok(mut m) = self.by_channel.write() {
            m.remove(channel);
        }
    }
    pub fn get(&self, channel: &ChannelId) -> Option<Arc<dyn Connector>> {
        self.by_channel.read().ok()?.get(channel).cloned()
    }
}

/// Backoff before attempt `attempt + 1`: 2, 4, 8 … seconds, at most ten minutes, with jitter.
fn backoff(attempt: i64) -> Duration {
    let base = 1000u64 << attempt.clamp(1, 9);
    let jitter = rand::random::<u64>() % (base / 4 + 1);
    Duration::from_millis((base + jitter).min(600_000))
}

pub(crate) async fn run(desk: Desk, mut shutdown: watch::Receiver<bool>) {
    let kick = desk.connectors().kick.clone();
    loop {
        tokio::select! {
            _ = kick.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = desk.deliver_due().await {
            tracing::warn!(error = %e, "outbox pass failed");
        }
    }
}

impl Desk {
    /// Delivers every due outbox entry this node can lease.
    pub async fn deliver_due(&self) -> Result<usize> {
        let due = {
            let mut conn = self.store().read().await?;
            plugin_store::outbox_due(&mut conn, Ts::now().0, 100).await?
        };
        let mut tasks = Vec::new();
        for (message, channel) in due {
            let desk = self.clone();
            tasks.push(tokio::spawn(async move {
                if let Err(e) = desk.deliver_one(&message, &channel).await {
                    tracing::warn!(%message, error = %e, "delivery attempt failed");
                }
            }));
        }
        let n = tasks.len();
        for t in tasks {
            let _ = t.await;
        }
        Ok(n)
    }

    async fn deliver_one(&self, message: &str, channel: &str) -> Result<()> {
        let now = Ts::now().0;
        let channel_id = ChannelId(channel.to_owned());
        let Some(connector) = self.connectors().get(&channel_id) else {
            // The connector plugin is disabled or not loaded on this node: try again later.
            let mut tx = self.store().begin().await?;
            sqlx::query("UPDATE outbox SET next_at = $2, last_error = $3 WHERE message_id = $1 AND (locked_until IS NULL OR locked_until < $4)")
                .bind(message)
                .bind(now + 5_000)
                .bind("the channel's connector plugin is not enabled")
                .bind(now)
                .execute(&mut *tx)
                .await
                .map_err(ferrydesk_store::Error::from)?;
            tx.commit().await.map_err(ferrydesk_store::Error::from)?;
            return Ok(());
        };
        let mut tx = self.store().begin().await?;
        let Some(attempt) = plugin_store::outbox_claim(&mut tx, message, now, LEASE_MS).await?
        else {
            return Ok(());
        };
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;

        let out = {
            let mut conn = self.store().read().await?;
            let mid = MessageId(message.to_owned());
            let msg = messages::get_message(&mut conn, &mid).await?;
            let ch = directory::get_channel(&mut conn, &channel_id).await?;
            let recipient = match &msg {
                Some(m) => match chat_store::identity_of(&mut conn, &m.chat_id)
                    .await?
                    .flatten()
                {
                    Some(i) => contacts::get_identity(&mut conn, &IdentityId(i))
                        .await?
                        .map(|i| i.external_id),
                    None => None,
                },
                None => None,
            };
            match (msg, ch, recipient) {
                (Some(message), Some(channel), Some(recipient)) => Some(Outbound {
                    channel,
                    recipient,
                    message,
                }),
                _ => None,
            }
        };
        let result = match out {
            Some(out) => connector.deliver(out).await,
            None => Delivery::Failed {
                reason: "the message, its channel or the client's identity is gone".into(),
            },
        };
        let mid = MessageId(message.to_owned());
        let mut tx = self.store().begin().await?;
        let status = match &result {
            Delivery::Sent { external_id } => {
                if !plugin_store::outbox_done(&mut tx, message, attempt).await? {
                    return Ok(()); // fenced: a later attempt owns the entry
                }
                // Prefixed: a provider's ids for replies may collide with its ids for client
                // messages, which are unique per channel.
                let external = external_id.as_ref().map(|e| format!("out:{e}"));
                messages::set_delivered(&mut tx, &mid, DeliveryStatus::Sent, external.as_deref())
                    .await?;
                metrics::counter!("ferrydesk_outbox_sent_total").increment(1);
                Some(DeliveryStatus::Sent)
            }
            Delivery::Retry { after, reason } if attempt < MAX_ATTEMPTS => {
                let wait = backoff(attempt).max(after.unwrap_or_default());
                tracing::info!(%message, attempt, %reason, wait_ms = wait.as_millis() as u64, "delivery will be retried");
                metrics::counter!("ferrydesk_outbox_retries_total").increment(1);
                plugin_store::outbox_retry(
                    &mut tx,
                    message,
                    attempt,
                    now + wait.as_millis() as i64,
                    reason,
                )
                .await?;
                None
            }
            Delivery::Retry { reason, .. } | Delivery::Failed { reason } => {
                tracing::warn!(%message, attempt, %reason, "delivery failed");
                if !plugin_store::outbox_done(&mut tx, message, attempt).await? {
                    return Ok(());
                }
                messages::set_delivery(&mut tx, &mid, DeliveryStatus::Failed).await?;
                metrics::counter!("ferrydesk_outbox_failed_total").increment(1);
                Some(DeliveryStatus::Failed)
            }
        };
        let mut events = Vec::new();
        if status.is_some()
            && let Some(m) = messages::get_message(&mut tx, &mid).await?
            && let Some(chat) = chat_store::get_chat(&mut tx, &m.chat_id, Ts::now()).await?
            && let Some(user) = chat.responsible_id.clone()
        {
            events.push(Event::to_user(
                &user,
                EventBody::MessageUpdated { message: m },
            ));
        }
        self.commit(tx, events).await
    }
}
