//! The desk: chat services of Ferrydesk — authentication, operator status, routing, the chat
//! lifecycle, ingestion, templates, files, timers, analytics.
//!
//! Services take a [`Principal`] and check permissions themselves, so every surface (REST,
//! WebSocket, widget) gets the same rules. Nothing here imports axum.

pub mod admin;
pub mod analytics;
pub mod auth;
pub mod blobs;
pub mod bus;
pub mod cases;
pub mod chats;
pub mod connectors;
pub mod duplicate_scan;
pub mod duplicates;
mod error;
mod failpoint;
pub mod ingest;
pub mod plugin_support;
mod routing;
pub mod templates;
mod timers;
pub mod widget;

use std::sync::Arc;
use std::time::Duration;

use ferrydesk_domain::*;
use ferrydesk_store::{Store, Tx};
use tokio::sync::{mpsc, watch};

pub use auth::Principal;
pub use bus::{Audience, Bus, Event, EventBody};
pub use error::{Error, Result};

/// Tunables of the desk. Defaults suit production; tests shorten the timers.
#[derive(Debug, Clone)]
pub struct DeskOptions {
    /// Idle time after which a session expires (and its operator becomes Inactive).
    pub session_ttl: Duration,
    /// How often timers (accept timeouts, auto-finish, session expiry) are checked.
    pub timer_tick: Duration,
    /// Largest accepted file.
    pub max_file_bytes: u64,
    /// Login throttling per (username, client address) and per client address (see
    /// `auth::LoginPolicy`).
    pub login: auth::LoginPolicy,
    /// New widget visitor sessions per client address per minute.
    pub visitor_sessions_per_minute: i64,
    /// A widget visitor session unused for this long ends (401; the widget starts a new one).
    pub visitor_session_ttl: Duration,
    /// Largest ingestion batch committed at once.
    pub ingest_batch: usize,
    /// Concurrent ingestion writers on PostgreSQL (SQLite always has one).
    pub ingest_writers: usize,
    /// Hash cost parameters (tests lower them).
    pub argon2_memory_kib: u32,
    /// Run the bulk duplicate search this often (none: only when someone starts it).
    pub duplicate_scan_every: Option<Duration>,
}

impl Default for DeskOptions {
    fn default() -> Self {
        DeskOptions {
            session_ttl: Duration::from_secs(12 * 3600),
            timer_tick: Duration::from_millis(500),
            max_file_bytes: 20 * 1024 * 1024,
            login: auth::LoginPolicy::default(),
            visitor_sessions_per_minute: 20,
            visitor_session_ttl: Duration::from_secs(30 * 24 * 3600),
            ingest_batch: 512,
            ingest_writers: 4,
            argon2_memory_kib: 19 * 1024,
            duplicate_scan_every: None,
        }
    }
}

/// Setting keys and their defaults.
pub mod setting {
    /// "Number of simultaneous chats" (S6).
    pub const SIMULTANEOUS_CHATS: &str = "simultaneous_chats";
    pub const SIMULTANEOUS_CHATS_DEFAULT: i64 = 5;
    /// Default accept timeout of new queues, seconds (S7).
    pub const ACCEPT_TIMEOUT_SECS_DEFAULT: i64 = 300;
    /// Default completion timeout of new queues, minutes (S20).
    pub const COMPLETION_TIMEOUT_MINS_DEFAULT: i64 = 60;
}

/// Handle to the desk services; cheap to clone.
#[derive(Clone)]
pub struct Desk {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    bus: Bus,
    blobs: Arc<dyn blobs::BlobStore>,
    templates: templates::Renderer,
    connectors: connectors::Connectors,
    channel_auth: widget::ChannelAuthCache,
    opts: DeskOptions,
    node_id: String,
    ingest: Vec<mpsc::Sender<ingest::Job>>,
    shutdown: watch::Sender<bool>,
    /// Chat signals some deployed process listens to (set by the process engine).
    signal_names: std::sync::RwLock<std::collections::HashSet<String>>,
}

impl Desk {
    /// Starts the desk: the ingestion writer, the timers and (on PostgreSQL) the event listener.
    pub async fn start(
        store: Store,
        blobs: Arc<dyn blobs::BlobStore>,
        opts: DeskOptions,
    ) -> Result<Desk> {
        // SQLite has one writer; PostgreSQL takes several batches at once.
        let writers = match store.backend() {
            ferrydesk_store::Backend::Sqlite => 1,
            ferrydesk_store::Backend::Postgres => opts.ingest_writers.max(1),
        };
        let (ingest_txs, ingest_rxs): (Vec<_>, Vec<_>) = (0..writers)
            .map(|_| mpsc::channel(opts.ingest_batch * 8))
            .unzip();
        let (shutdown, _) = watch::channel(false);
        let desk = Desk {
            inner: Arc::new(Inner {
                store,
                bus: Bus::new(),
                blobs,
                templates: templates::Renderer::new(),
                connectors: connectors::Connectors::default(),
                channel_auth: widget::ChannelAuthCache::default(),
                opts,
                node_id: uuid::Uuid::new_v4().to_string(),
                ingest: ingest_txs,
                shutdown,
                signal_names: Default::default(),
            }),
        };
        for rx in ingest_rxs {
            tokio::spawn(ingest::run_writer(desk.clone(), rx));
        }
        tokio::spawn(timers::run(desk.clone(), desk.inner.shutdown.subscribe()));
        // Contacts stored before duplicate search existed get their keys in the background.
        let backfill = desk.clone();
        tokio::spawn(async move {
            loop {
                let done = async {
                    let mut tx = backfill.store().begin().await?;
                    let n = ferrydesk_store::contacts::backfill_keys(&mut tx, 500).await?;
                    tx.commit().await.map_err(ferrydesk_store::Error::from)?;
                    Ok::<_, Error>(n)
                }
                .await;
                match done {
                    Ok(0) => return,
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "computing contact keys");
                        return;
                    }
                }
            }
        });
        tokio::spawn(connectors::run(
            desk.clone(),
            desk.inner.shutdown.subscribe(),
        ));
        tokio::spawn(auth::prune(desk.clone(), desk.inner.shutdown.subscribe()));
        if let Some(every) = desk.options().duplicate_scan_every {
            tokio::spawn(duplicate_scan::schedule(
                desk.clone(),
                every,
                desk.inner.shutdown.subscribe(),
            ));
        }
        if desk.store().backend() == ferrydesk_store::Backend::Postgres {
            timers::spawn_listener(desk.clone(), desk.inner.shutdown.subscribe()).await?;
        }
        Ok(desk)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }
    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }
    pub fn options(&self) -> &DeskOptions {
        &self.inner.opts
    }
    pub fn templates(&self) -> &templates::Renderer {
        &self.inner.templates
    }
    /// Channel connectors (messenger plugins register here).
    pub fn connectors(&self) -> &connectors::Connectors {
        &self.inner.connectors
    }
    pub fn blobs(&self) -> &Arc<dyn blobs::BlobStore> {
        &self.inner.blobs
    }
    pub fn node_id(&self) -> &str {
        &self.inner.node_id
    }

    /// Stops background tasks.
    pub fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
    }

    /// Commits `tx` and then publishes `events`: locally, and to other nodes through the
    /// database (PostgreSQL `NOTIFY` is transactional, so they see it only if the commit lands).
    pub(crate) async fn commit(&self, mut tx: Tx, events: Vec<Event>) -> Result<()> {
        if self.store().backend() == ferrydesk_store::Backend::Postgres {
            // One notification per transaction when its events fit in one payload.
            for payload in bus::encode_batches(&self.inner.node_id, &events) {
                self.store()
                    .notify(&mut tx, bus::NOTIFY_CHANNEL, &payload)
                    .await?;
            }
        }
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        for e in events {
            self.inner.bus.publish(e);
        }
        Ok(())
    }

    /// Sets the chat signals the process engine wants (names of message start events and
    /// message catches: `chat.started`, `chat.accepted`, `chat.finished`,
    /// `chat.message.received`).
    pub fn set_signal_names(&self, names: std::collections::HashSet<String>) {
        if let Ok(mut n) = self.inner.signal_names.write() {
            *n = names;
        }
    }

    /// Records a chat signal for the process engine in the caller's transaction, if a process
    /// listens to it. The correlation key is the chat id.
    pub(crate) async fn signal(
        &self,
        conn: &mut ferrydesk_store::Conn,
        name: &str,
        chat: &ChatId,
        mut variables: serde_json::Value,
        now: Ts,
    ) -> Result<()> {
        let wanted = self
            .inner
            .signal_names
            .read()
            .map(|n| n.contains(name))
            .unwrap_or(false);
        if !wanted {
            return Ok(());
        }
        if let Some(o) = variables.as_object_mut() {
            o.insert("chatId".into(), serde_json::Value::String(chat.to_string()));
        }
        ferrydesk_store::processes::insert_signal(conn, name, chat.as_str(), &variables, now.0)
            .await?;
        Ok(())
    }

    /// The "simultaneous chats" system setting.
    pub(crate) async fn default_chat_limit(&self, conn: &mut ferrydesk_store::Conn) -> Result<i64> {
        Ok(
            ferrydesk_store::settings::get(conn, setting::SIMULTANEOUS_CHATS)
                .await?
                .and_then(|v| v.as_i64())
                .unwrap_or(setting::SIMULTANEOUS_CHATS_DEFAULT),
        )
    }
}

/// Effective concurrent-chat limit of a user.
pub(crate) fn limit_of(u: &User, default_limit: i64) -> i64 {
    u.chat_limit.unwrap_or(default_limit)
}

/// Trims a message text to a list preview.
pub(crate) fn preview_of(text: &str, files: usize) -> String {
    let t: String = text.chars().take(120).collect();
    if t.is_empty() && files > 0 {
        format!("[{files} file(s)]")
    } else {
        t
    }
}
