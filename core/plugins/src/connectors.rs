//! Connector plugins serving channels: webhooks in, the desk's durable outbox out, pollers for
//! long-polling providers (one node at a time per channel, by a lease in the database).

use std::sync::{Arc, Weak};
use std::time::Duration;

use ferrydesk_desk::connectors::{Connector, Delivery, Outbound};
use ferrydesk_desk::ingest::Inbound;
use ferrydesk_desk::{Error, Principal, Result};
use ferrydesk_domain::*;
use ferrydesk_plugin_host::manifest::Kind;
use ferrydesk_plugin_host::{
    Call, CallContext, CallError, FileRef, InboundMessage, InboundRequest, Plugin,
};
use ferrydesk_store::{directory, plugins as store};
use futures::future::BoxFuture;
use serde::Serialize;
use utoipa::ToSchema;

use crate::{Entry, Inner, Plugins, manifest_error, merge_secrets, now};

/// The HTTP answer to a provider's webhook call.
#[derive(Debug, Clone)]
pub struct WebhookReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl WebhookReply {
    fn error(status: u16, message: impl Into<String>) -> WebhookReply {
        let body = serde_json::json!({ "code": if status == 401 { "unauthorized" } else if status >= 500 { "unavailable" } else { "invalid" }, "message": message.into() });
        WebhookReply {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string().into_bytes(),
        }
    }
}

/// A connector channel as created, with the outcome of the plugin's `setup`.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConnectorChannel {
    pub channel: Channel,
    /// Why `setup` failed (the channel exists; fix the settings and save again).
    pub setup_error: Option<String>,
    /// The URL the provider must call.
    pub webhook_path: String,
    /// Settings with secrets shown as `{"set": true}`.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
}

/// A channel and the connector plugin that serves it.
async fn connector_channel(plugins: &Plugins, id: &ChannelId) -> Result<(Channel, Arc<Entry>)> {
    let channel = {
        let mut conn = plugins.desk().store().read().await?;
        directory::get_channel(&mut conn, id)
            .await?
            .ok_or(Error::not_found("channel"))?
    };
    let pid = plugin_of(&channel).ok_or(Error::not_found("channel"))?;
    let e = plugins.entry(&pid).ok_or(Error::not_found("plugin"))?;
    Ok((channel, e))
}

fn plugin_of(c: &Channel) -> Option<String> {
    if c.kind != ChannelKind::Plugin {
        return None;
    }
    c.settings
        .get("plugin")
        .and_then(|v| v.as_str())
        .map(str::to_owned)
}

pub(crate) async fn channels_of(plugins: &Plugins, id: &str) -> Result<Vec<Channel>> {
    let mut conn = plugins.desk().store().read().await?;
    Ok(directory::list_channels(&mut conn)
        .await?
        .into_iter()
        .filter(|c| plugin_of(c).as_deref() == Some(id))
        .collect())
}

async fn channel_settings(
    plugins: &Plugins,
    channel: &ChannelId,
) -> Result<serde_json::Map<String, serde_json::Value>> {
    let mut conn = plugins.desk().store().read().await?;
    let scope = format!("channel:{channel}");
    let stored = store::get_settings(&mut conn, &scope).await?;
    plugins
        .open_settings(&scope, stored)
        .map_err(|e| Error::Internal(e.to_string()))
}

fn polls(e: &Entry, settings: &serde_json::Map<String, serde_json::Value>) -> bool {
    match e.manifest.connector.as_ref().map(|c| c.delivery.as_str()) {
        Some("polling") => true,
        Some("webhook_or_polling") => {
            settings.get("mode").and_then(|v| v.as_str()) == Some("polling")
        }
        _ => false,
    }
}

fn call_for(
    e: &Entry,
    channel: &ChannelId,
    settings: serde_json::Map<String, serde_json::Value>,
) -> Call {
    Call {
        ctx: CallContext {
            installation: format!("{}:{channel}", e.manifest.id),
            actor: None,
            chat: None,
            contact: None,
            locale: "en".into(),
            trace_id: uuid::Uuid::now_v7().to_string(),
        },
        settings: e.settings_for(settings),
        kv_scope: format!("channel:{channel}"),
    }
}

/// Registers a connector for every active channel of an enabled connector plugin and starts
/// its poller if it polls; unregisters the rest.
pub(crate) async fn wire(plugins: &Plugins) -> anyhow::Result<()> {
    let channels = {
        let mut conn = plugins.desk().store().read().await?;
        directory::list_channels(&mut conn).await?
    };
    for c in channels {
        let Some(pid) = plugin_of(&c) else { continue };
        let entry = plugins
            .entry(&pid)
            .filter(|e| e.manifest.kind == Kind::Connector && e.runnable().is_some());
        match entry {
            Some(e) if c.active => {
                plugins.desk().connectors().register(
                    c.id.clone(),
                    Arc::new(WasmConnector {
                        runtime: Arc::downgrade(&plugins.inner),
                        channel: c.id.clone(),
                    }),
                );
                let settings = channel_settings(plugins, &c.id).await?;
                if polls(&e, &settings) {
                    start_poller(plugins, &c.id);
                } else {
                    stop_poller(plugins, &c.id);
                }
            }
            _ => {
                plugins.desk().connectors().unregister(&c.id);
                stop_poller(plugins, &c.id);
            }
        }
    }
    Ok(())
}

struct WasmConnector {
    runtime: Weak<Inner>,
    channel: ChannelId,
}

impl Connector for WasmConnector {
    fn deliver(&self, out: Outbound) -> BoxFuture<'_, Delivery> {
        Box::pin(async move {
            let Some(inner) = self.runtime.upgrade() else {
                return Delivery::Retry {
                    after: None,
                    reason: "shutting down".into(),
                };
            };
            let plugins = Plugins { inner };
            match deliver(&plugins, &self.channel, out).await {
                Ok(d) => d,
                Err(e) => Delivery::Retry {
                    after: None,
                    reason: e.to_string(),
                },
            }
        })
    }
}

async fn deliver(plugins: &Plugins, channel: &ChannelId, out: Outbound) -> Result<Delivery> {
    let Some(pid) = plugin_of(&out.channel) else {
        return Ok(Delivery::Failed {
            reason: "not a connector channel".into(),
        });
    };
    let Some(e) = plugins.entry(&pid) else {
        return Ok(Delivery::Retry {
            after: None,
            reason: format!("plugin `{pid}` is not installed"),
        });
    };
    let Some(plugin) = e.runnable().cloned() else {
        return Ok(Delivery::Retry {
            after: None,
            reason: format!("plugin `{pid}` is disabled"),
        });
    };
    let mut files = Vec::new();
    for a in &out.message.attachments {
        let data = plugins.desk().blobs().get(&a.sha256).await?;
        files.push(FileRef {
            url: None,
            data: Some(data),
            name: Some(a.filename.clone()),
            content_type: Some(a.content_type.clone()),
        });
    }
    let call = call_for(&e, channel, channel_settings(plugins, channel).await?);
    let r = plugin
        .connector_send(
            &call,
            ferrydesk_plugin_host::OutboundMessage {
                recipient: out.recipient,
                text: out.message.body.clone(),
                files,
                message_id: out.message.id.to_string(),
            },
        )
        .await;
    Ok(match r {
        Ok(id) => Delivery::Sent {
            external_id: Some(id),
        },
        Err(CallError::Plugin {
            code,
            message,
            retryable: true,
        }) => {
            let after = message
                .strip_prefix("retry_after=")
                .and_then(|s| s.trim().parse::<u64>().ok())
                .filter(|_| code == "rate_limited")
                .map(Duration::from_secs);
            Delivery::Retry {
                after,
                reason: format!("{code}: {message}"),
            }
        }
        Err(e) if e.retryable() => Delivery::Retry {
            after: None,
            reason: e.to_string(),
        },
        Err(e) => Delivery::Failed {
            reason: e.to_string(),
        },
    })
}

/// Turns a connector's parsed messages into ingested ones: files are downloaded (under the
/// plugin's grant) into the blob store, the sender's photo too. A file that cannot be fetched
/// is named in the message text rather than dropped.
async fn ingest_all(
    plugins: &Plugins,
    plugin: &Plugin,
    call: &Call,
    channel: &ChannelId,
    msgs: Vec<InboundMessage>,
) -> Result<usize> {
    let max = plugins.desk().options().max_file_bytes as usize;
    let mut n = 0;
    for m in msgs {
        let mut text = m.text;
        let mut files = Vec::new();
        for f in m.files {
            let name = f.name.clone().unwrap_or_else(|| "file".into());
            let fetched = match (f.data, &f.url) {
                (Some(d), _) => Ok((d, f.content_type.clone())),
                (None, Some(url)) => plugin
                    .download(call, url, max)
                    .await
                    .map(|(b, ct)| (b, f.content_type.clone().or(ct))),
                (None, None) => Err("the connector gave neither bytes nor a URL".into()),
            };
            let stored = match fetched {
                Ok((bytes, ct)) => plugins
                    .desk()
                    .upload(
                        ferrydesk_desk::blobs::Uploader::Channel(channel),
                        &name,
                        ct.as_deref().unwrap_or("application/octet-stream"),
                        bytes,
                    )
                    .await
                    .map_err(|e| e.to_string()),
                Err(e) => Err(e),
            };
            match stored {
                Ok(a) => files.push(a.id),
                Err(why) => {
                    tracing::warn!(%channel, file = %name, reason = %why, "inbound file not stored");
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(&format!(
                        "[attachment «{name}» could not be received: {why}]"
                    ));
                }
            }
        }
        let photo = match &m.sender_photo_url {
            Some(url) => match plugin.download(call, url, 5 << 20).await {
                Ok((bytes, ct)) => plugins
                    .desk()
                    .upload(
                        ferrydesk_desk::blobs::Uploader::Channel(channel),
                        "photo.jpg",
                        ct.as_deref().unwrap_or("image/jpeg"),
                        bytes,
                    )
                    .await
                    .ok()
                    .filter(|a| a.content_type.starts_with("image/"))
                    .map(|a| format!("/api/v1/photos/{}", a.id)),
                Err(why) => {
                    tracing::info!(%channel, reason = %why, "sender photo not fetched");
                    None
                }
            },
            None => None,
        };
        plugins
            .desk()
            .ingest(Inbound {
                channel: channel.clone(),
                external_id: Some(m.external_id),
                sender: m.sender_id,
                sender_name: m.sender_name,
                sender_photo_url: photo,
                text,
                files,
            })
            .await?;
        n += 1;
    }
    Ok(n)
}

impl Plugins {
    /// Handles a provider's webhook call for a connector channel. Every failure that a retry
    /// may cure answers 503, so the provider delivers again (ingestion is idempotent on the
    /// provider's message id); nothing is acknowledged before it is stored.
    pub async fn webhook(&self, channel_id: &ChannelId, req: InboundRequest) -> WebhookReply {
        let channel = {
            let Ok(mut conn) = self.desk().store().read().await else {
                return WebhookReply::error(503, "storage unavailable");
            };
            directory::get_channel(&mut conn, channel_id)
                .await
                .ok()
                .flatten()
        };
        let Some(channel) = channel.filter(|c| c.active) else {
            return WebhookReply::error(404, "no such channel");
        };
        let Some(pid) = plugin_of(&channel) else {
            return WebhookReply::error(404, "no such channel");
        };
        let Some(e) = self.entry(&pid) else {
            return WebhookReply::error(503, format!("plugin `{pid}` is not installed"));
        };
        let Some(plugin) = e.runnable().cloned() else {
            return WebhookReply::error(503, format!("plugin `{pid}` is disabled"));
        };
        let Ok(settings) = channel_settings(self, channel_id).await else {
            return WebhookReply::error(503, "storage unavailable");
        };
        let secret_key = e
            .manifest
            .connector
            .as_ref()
            .and_then(|c| c.webhook.as_ref())
            .and_then(|w| w.secret_config_key.clone())
            .unwrap_or_default();
        let secret = settings.get(&secret_key).and_then(|v| v.as_str());
        if let Err(why) =
            ferrydesk_plugin_host::verify_webhook(&e.manifest, secret, &req.headers, &req.body)
        {
            metrics::counter!("ferrydesk_webhook_rejected_total", "plugin" => pid.clone())
                .increment(1);
            tracing::info!(channel = %channel_id, reason = %why, "webhook rejected");
            return WebhookReply::error(401, why);
        }
        let call = call_for(&e, channel_id, settings);
        let (r, writes) = plugin.connector_inbound(&call, req).await;
        let (messages, reply) = match r {
            Ok(x) => x,
            Err(err) => {
                let status = if err.retryable() { 503 } else { 400 };
                return WebhookReply::error(status, format!("plugin `{pid}`: {err}"));
            }
        };
        if let Err(err) = ingest_all(self, &plugin, &call, channel_id, messages).await {
            let status = if matches!(err, Error::Invalid { .. }) {
                400
            } else {
                503
            };
            return WebhookReply::error(status, err.to_string());
        }
        if let Err(err) = plugin.commit_kv(&call, writes).await {
            tracing::warn!(error = %err, "plugin data not stored after a webhook");
        }
        WebhookReply {
            status: reply.status,
            headers: reply.headers,
            body: reply.body,
        }
    }

    /// Creates a channel served by a connector plugin and runs its `setup`.
    pub async fn create_channel(
        &self,
        p: &Principal,
        plugin: &str,
        name: &str,
        queue_id: &QueueId,
        config: serde_json::Value,
    ) -> Result<ConnectorChannel> {
        p.require(Role::Admin)?;
        let e = self
            .entry(plugin)
            .filter(|e| e.manifest.kind == Kind::Connector)
            .ok_or_else(|| {
                Error::invalid(
                    "plugin",
                    format!("no connector plugin `{plugin}` is installed"),
                )
            })?;
        if e.runnable().is_none() {
            return Err(Error::invalid(
                "plugin",
                format!("plugin `{plugin}` is not enabled"),
            ));
        }
        let merged = merge_secrets(&e.manifest, &Default::default(), config)?;
        e.manifest.check_config(&merged).map_err(|err| {
            let mut err = manifest_error(err);
            if let Error::Invalid { field, .. } = &mut err {
                *field = format!("config{field}");
            }
            err
        })?;
        let channel_type = e
            .manifest
            .connector
            .as_ref()
            .map(|c| c.channel_type.clone())
            .unwrap_or_default();
        let channel = self
            .desk()
            .create_plugin_channel(p, plugin, &channel_type, name, queue_id)
            .await?;
        self.save_channel_config(&channel.id, plugin, &merged)
            .await?;
        self.after_channel_change(&channel).await
    }

    /// Replaces a connector channel's settings and runs `setup` again.
    pub async fn configure_channel(
        &self,
        p: &Principal,
        id: &ChannelId,
        config: serde_json::Value,
    ) -> Result<ConnectorChannel> {
        p.require(Role::Admin)?;
        let channel = {
            let mut conn = self.desk().store().read().await?;
            directory::get_channel(&mut conn, id)
                .await?
                .ok_or(Error::not_found("channel"))?
        };
        let pid = plugin_of(&channel)
            .ok_or_else(|| Error::invalid("channel", "not a connector channel"))?;
        let e = self.entry(&pid).ok_or(Error::not_found("plugin"))?;
        let old = channel_settings(self, id).await?;
        let merged = merge_secrets(&e.manifest, &old, config)?;
        e.manifest.check_config(&merged).map_err(manifest_error)?;
        self.save_channel_config(id, &pid, &merged).await?;
        self.after_channel_change(&channel).await
    }

    /// A connector channel's settings (secrets masked).
    pub async fn channel_config(&self, p: &Principal, id: &ChannelId) -> Result<ConnectorChannel> {
        p.require(Role::Admin)?;
        let (channel, e) = connector_channel(self, id).await?;
        let settings = channel_settings(self, id).await?;
        Ok(ConnectorChannel {
            webhook_path: format!("/api/v1/channels/{}/webhook", channel.id),
            config: mask(&e, &settings),
            channel,
            setup_error: None,
        })
    }

    async fn save_channel_config(
        &self,
        id: &ChannelId,
        plugin: &str,
        config: &serde_json::Value,
    ) -> Result<()> {
        let mut tx = self.desk().store().begin().await?;
        let scope = format!("channel:{id}");
        store::put_settings(
            &mut tx,
            &scope,
            plugin,
            &self.seal(&scope, &config.to_string()),
            now(),
        )
        .await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(())
    }

    async fn after_channel_change(&self, channel: &Channel) -> Result<ConnectorChannel> {
        let pid = plugin_of(channel).unwrap_or_default();
        let e = self.entry(&pid).ok_or(Error::not_found("plugin"))?;
        let settings = channel_settings(self, &channel.id).await?;
        let setup_error = match e.runnable() {
            Some(plugin) => plugin
                .connector_setup(&call_for(&e, &channel.id, settings.clone()))
                .await
                .err()
                .map(|e| e.to_string()),
            None => Some(format!("plugin `{pid}` is disabled")),
        };
        wire(self)
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(ConnectorChannel {
            webhook_path: format!("/api/v1/channels/{}/webhook", channel.id),
            config: mask(&e, &settings),
            channel: channel.clone(),
            setup_error,
        })
    }
}

fn mask(e: &Entry, settings: &serde_json::Map<String, serde_json::Value>) -> serde_json::Value {
    serde_json::Value::Object(
        settings
            .iter()
            .map(|(k, v)| {
                if e.manifest.is_secret(k) {
                    (k.clone(), serde_json::json!({ "set": true }))
                } else {
                    (k.clone(), v.clone())
                }
            })
            .collect(),
    )
}

fn start_poller(plugins: &Plugins, channel: &ChannelId) {
    let Ok(mut pollers) = plugins.inner.pollers.lock() else {
        return;
    };
    if pollers.get(channel).is_some_and(|h| !h.is_finished()) {
        return;
    }
    let weak = Arc::downgrade(&plugins.inner);
    let ch = channel.clone();
    let handle = tokio::spawn(async move { poll_loop(weak, ch).await });
    pollers.insert(channel.clone(), handle.abort_handle());
}

fn stop_poller(plugins: &Plugins, channel: &ChannelId) {
    if let Ok(mut pollers) = plugins.inner.pollers.lock()
        && let Some(h) = pollers.remove(channel)
    {
        h.abort();
    }
}

/// A node that dies hands its channels over after this long; a live poller renews its lease
/// every [`RENEW`] while a (long) poll is in flight.
const LEASE_MS: i64 = 15_000;
const RENEW: Duration = Duration::from_secs(5);

/// Claims (or renews) this node's lease on polling a channel. The value is
/// `<expiry, zero-padded>|<node>`, so "expired" is a string comparison both backends share.
async fn claim_poll_lease(plugins: &Plugins, channel: &ChannelId) -> Result<bool> {
    let node = plugins.desk().node_id().to_owned();
    let now = now();
    let mut tx = plugins.desk().store().begin().await?;
    let r = sqlx::query(
        "INSERT INTO plugin_kv (scope, key, value) VALUES ('__poll_lease', $1, $2) \
         ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value \
         WHERE plugin_kv.value < $3 OR plugin_kv.value LIKE $4",
    )
    .bind(channel.as_str())
    .bind(format!("{:015}|{node}", now + LEASE_MS))
    .bind(format!("{now:015}"))
    .bind(format!("%|{node}"))
    .execute(&mut *tx)
    .await
    .map_err(ferrydesk_store::Error::from)?;
    tx.commit().await.map_err(ferrydesk_store::Error::from)?;
    Ok(r.rows_affected() == 1)
}

async fn poll_loop(runtime: Weak<Inner>, channel: ChannelId) {
    let mut failures: u32 = 0;
    loop {
        let Some(inner) = runtime.upgrade() else {
            return;
        };
        let plugins = Plugins { inner };
        let pause = match poll_once(&plugins, &channel).await {
            Ok(true) => {
                failures = 0;
                Duration::from_millis(100)
            }
            Ok(false) => Duration::from_secs(2), // another node polls this channel
            Err(e) => {
                failures += 1;
                let wait = Duration::from_millis((500u64 << failures.min(6)).min(30_000));
                tracing::warn!(%channel, error = %e, wait_ms = wait.as_millis() as u64, "poll failed");
                wait
            }
        };
        drop(plugins);
        tokio::time::sleep(pause).await;
    }
}

/// One poll: fetch, store, then commit the plugin's offset. `Ok(false)` if another node holds
/// the lease.
async fn poll_once(plugins: &Plugins, channel: &ChannelId) -> Result<bool> {
    if !claim_poll_lease(plugins, channel).await? {
        return Ok(false);
    }
    let renew = {
        let plugins = plugins.clone();
        let channel = channel.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(RENEW).await;
                if !matches!(claim_poll_lease(&plugins, &channel).await, Ok(true)) {
                    tracing::warn!(%channel, "lost the poll lease during a poll");
                    return;
                }
            }
        })
    };
    let r = poll_leased(plugins, channel).await;
    renew.abort();
    r.map(|()| true)
}

async fn poll_leased(plugins: &Plugins, channel: &ChannelId) -> Result<()> {
    let (_, e) = connector_channel(plugins, channel).await?;
    let pid = e.manifest.id.clone();
    let plugin = e
        .runnable()
        .cloned()
        .ok_or_else(|| Error::conflict("plugin_disabled", "disabled"))?;
    let call = call_for(&e, channel, channel_settings(plugins, channel).await?);
    let (r, writes) = plugin.connector_poll(&call).await;
    let msgs = r.map_err(|e| crate::actions::call_error(&pid, e))?;
    ingest_all(plugins, &plugin, &call, channel, msgs).await?;
    // Only now is the provider's offset advanced: a crash before this line re-reads the
    // updates, and ingestion drops the duplicates.
    plugin
        .commit_kv(&call, writes)
        .await
        .map_err(|e| crate::actions::call_error(&pid, e))?;
    Ok(())
}
