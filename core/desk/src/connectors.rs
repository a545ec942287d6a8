//! The internal interface messenger connectors implement (the plugin issue adds WebAssembly
//! connectors behind it). The widget and the API channel are served by the core directly: the
//! widget pushes replies over the visitor's socket, API-channel integrations pull them.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use ferrydesk_domain::*;
use futures::future::BoxFuture;

use crate::{Desk, Result};

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
    /// Worth retrying later (non-2xx, 429 with retry-after, network).
    Retry {
        after: std::time::Duration,
        reason: String,
    },
    /// Will never succeed (blocked by the client, invalid recipient).
    Failed { reason: String },
}

/// A channel connector: delivers replies for the channels of one kind.
pub trait Connector: Send + Sync + 'static {
    fn deliver(&self, out: Outbound) -> BoxFuture<'_, Delivery>;
}

/// Connectors by channel id; empty until connector plugins are installed.
#[derive(Clone, Default)]
pub struct Connectors {
    by_channel: Arc<RwLock<HashMap<ChannelId, Arc<dyn Connector>>>>,
}

impl Connectors {
    pub fn register(&self, channel: ChannelId, c: Arc<dyn Connector>) {
        if let Ok(mut m) = self.by_channel.write() {
            m.insert(channel, c);
        }
    }
    pub fn get(&self, channel: &ChannelId) -> Option<Arc<dyn Connector>> {
        self.by_channel.read().ok()?.get(channel).cloned()
    }
}

impl Desk {
    /// Hands a committed reply to its channel's connector, if the channel has one, and records
    /// the outcome as the message's delivery status. Retries with the delay the connector asks
    /// for, up to five attempts.
    pub(crate) fn dispatch(&self, out: Outbound) {
        let Some(connector) = self.connectors().get(&out.channel.id) else {
            return;
        };
        let desk = self.clone();
        tokio::spawn(async move {
            let id = out.message.id.clone();
            let mut status = DeliveryStatus::Failed;
            for _attempt in 0..5 {
                match connector.deliver(out.clone()).await {
                    Delivery::Sent { .. } => {
                        status = DeliveryStatus::Sent;
                        break;
                    }
                    Delivery::Retry { after, reason } => {
                        tracing::info!(message = %id, %reason, "delivery will be retried");
                        tokio::time::sleep(after).await;
                    }
                    Delivery::Failed { reason } => {
                        tracing::warn!(message = %id, %reason, "delivery failed");
                        break;
                    }
                }
            }
            if let Err(e) = desk.record_delivery(&id, status).await {
                tracing::warn!(error = %e, "recording delivery status");
            }
        });
    }

    async fn record_delivery(&self, id: &MessageId, status: DeliveryStatus) -> Result<()> {
        let mut tx = self.store().begin().await?;
        ferrydesk_store::messages::set_delivery(&mut tx, id, status).await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(())
    }
}
