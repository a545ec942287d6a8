//! The plugin runtime of the desk.
//!
//! * **Registry**: installations live in the database (`plugins`, with the component itself in
//!   `plugin_components`), so every node of a PostgreSQL deployment runs the same plugins; each
//!   node compiles a component once and caches the compiled artifact on its own disk. A sync
//!   loop reloads what another node changed.
//! * **Administration**: install, upgrade (the version must grow), enable with the grants the
//!   admin approves (HTTP origins, private addresses), configure (validated against the
//!   manifest's `config_schema`; secrets are write-only), disable, uninstall.
//! * **Actions** appear in a chat's Actions menu; their effects are applied by the desk in one
//!   transaction and every run is audited.
//! * **Macros** become handlebars helpers.
//! * **Connectors** serve channels: webhooks in, the durable outbox out, pollers for
//!   long-polling providers.

pub mod actions;
mod connectors;
pub mod first_party;
mod helpers;
pub mod package;
pub mod secrets;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use base64::Engine as _;
use ferrydesk_desk::{Desk, Error, Principal, Result};
use ferrydesk_domain::*;
use ferrydesk_plugin_host::manifest::{self, Kind, Localized, Manifest};
use ferrydesk_plugin_host::{CallContext, Host, HostConfig, Plugin, Settings, Stats};
use ferrydesk_store::plugins as store;
use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

pub use actions::{ActionInfo, ActionResult};
pub use connectors::{ConnectorChannel, WebhookReply};
pub use package::Package;

/// What the admin approved when enabling a plugin.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Origin patterns from the manifest's `capabilities.http.allowed_hosts`.
    #[serde(default)]
    pub hosts: Vec<String>,
    /// Private and loopback addresses for every granted host (only if the manifest asks for
    /// them). Prefer `private_hosts`.
    #[serde(default)]
    pub private: bool,
    /// Granted origin patterns whose hosts may resolve to private and loopback addresses (only
    /// if the manifest asks for them). Link-local and cloud metadata addresses are never
    /// reachable.
    #[serde(default)]
    pub private_hosts: Vec<String>,
    /// Capabilities the admin approved when last enabling the plugin (set by the server; an
    /// upgrade asking for more is installed disabled until they are approved).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approved: Vec<String>,
}

/// Capabilities of a manifest as a set of names: `http:<origin>`, `http:private`, `kv`,
/// `records.read:<kind>`, `records.write:<kind>`.
pub fn capability_names(m: &Manifest) -> Vec<String> {
    let c = &m.capabilities;
    let mut out = Vec::new();
    if let Some(h) = &c.http {
        out.extend(h.allowed_hosts.iter().map(|o| format!("http:{o}")));
        if h.allow_private {
            out.push("http:private".into());
        }
    }
    if c.kv {
        out.push("kv".into());
    }
    let kind = |k: &manifest::RecordKind| format!("{k:?}").to_ascii_lowercase();
    out.extend(
        c.records
            .read
            .iter()
            .map(|k| format!("records.read:{}", kind(k))),
    );
    out.extend(
        c.records
            .write
            .iter()
            .map(|k| format!("records.write:{}", kind(k))),
    );
    out.sort();
    out.dedup();
    out
}

/// What an upgrade changed in the capabilities, against what the admin approved.
#[derive(Debug, Clone, Default, Serialize, ToSchema, PartialEq)]
pub struct CapabilityChanges {
    /// Asked for now, not approved: the plugin stays disabled until the admin enables it.
    pub added: Vec<String>,
    /// Approved before, no longer asked for.
    pub removed: Vec<String>,
}

/// An installed plugin as the admin sees it. Secret settings show only whether they are set.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct PluginInfo {
    pub id: String,
    #[schema(value_type = Object)]
    pub name: serde_json::Value,
    pub version: String,
    pub kind: String,
    #[schema(value_type = Object)]
    pub description: serde_json::Value,
    pub enabled: bool,
    /// Why the plugin could not be loaded on this node, if it could not.
    pub error: Option<String>,
    /// What the manifest asks for.
    #[schema(value_type = Object)]
    pub capabilities: serde_json::Value,
    #[schema(value_type = Object)]
    pub limits: serde_json::Value,
    pub granted: Grant,
    /// Capabilities asked for but not approved (after an upgrade), and approved ones no longer
    /// asked for; `null` when they match.
    pub capability_changes: Option<CapabilityChanges>,
    /// Whose plugin id this is: the publisher's key (`ed25519:…`) whose signature the package
    /// carried, `local` (installed from a directory on the server) or `unsigned` (an uploaded
    /// unsigned package). Only a package of the same publisher may upgrade it.
    pub publisher: String,
    /// The limits the plugin's calls run under (the manifest's, capped by the host).
    #[schema(value_type = Object)]
    pub effective_limits: serde_json::Value,
    #[schema(value_type = Object)]
    pub config_schema: serde_json::Value,
    /// Settings with secrets replaced by `{"set": true}`.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
    /// Whether the settings satisfy `config_schema`.
    pub configured: bool,
    #[schema(value_type = Object)]
    pub actions: serde_json::Value,
    #[schema(value_type = Object)]
    pub helpers: serde_json::Value,
    #[schema(value_type = Object)]
    pub connector: serde_json::Value,
    pub sha256: String,
    pub stats: PluginStats,
    pub updated_at: Ts,
}

#[derive(Debug, Clone, Default, Serialize, ToSchema)]
pub struct PluginStats {
    pub calls: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

impl From<Stats> for PluginStats {
    fn from(s: Stats) -> Self {
        PluginStats {
            calls: s.calls,
            errors: s.errors,
            p50_us: s.p50_us,
            p99_us: s.p99_us,
        }
    }
}

/// A loaded installation.
pub(crate) struct Entry {
    pub row: store::PluginRow,
    pub manifest: Manifest,
    pub plugin: Option<Plugin>,
    pub error: Option<String>,
    pub grant: Grant,
    pub settings: serde_json::Map<String, serde_json::Value>,
    /// Whose id this is: `ed25519:…`, `local` or `unsigned`.
    pub publisher: String,
}

impl Entry {
    pub fn runnable(&self) -> Option<&Plugin> {
        if self.row.enabled {
            self.plugin.as_ref()
        } else {
            None
        }
    }
    pub fn settings_for(
        &self,
        values: serde_json::Map<String, serde_json::Value>,
    ) -> Arc<Settings> {
        Arc::new(Settings {
            values,
            granted_hosts: self.grant.hosts.clone(),
            granted_private: self.grant.private,
            granted_private_hosts: self.grant.private_hosts.clone(),
            http_mock: Default::default(),
        })
    }
}

/// The plugin runtime; cheap to clone.
#[derive(Clone)]
pub struct Plugins {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub desk: Desk,
    pub host: Host,
    pub entries: RwLock<HashMap<String, Arc<Entry>>>,
    /// The principal of each call in flight, by trace id (records are read as that user).
    pub principals: Arc<Mutex<HashMap<String, Principal>>>,
    pub pollers: Mutex<HashMap<ChannelId, tokio::task::AbortHandle>>,
    pub helpers_registered: Mutex<std::collections::HashSet<String>>,
    /// Serialises local changes with the sync loop.
    pub reload: tokio::sync::Mutex<()>,
    /// Seals settings at rest.
    pub secrets: secrets::Secrets,
    /// Where `{"path": …}` installs may read from (canonical); `None` refuses them.
    pub plugins_dir: Option<std::path::PathBuf>,
}

/// Where the runtime keeps and finds things.
#[derive(Debug, Clone)]
pub struct PluginsOptions {
    /// Compiled components (per node).
    pub cache_dir: std::path::PathBuf,
    /// The only directory installs by path may read from.
    pub plugins_dir: Option<std::path::PathBuf>,
    /// Seals plugin and channel settings at rest.
    pub secrets: secrets::Secrets,
}

/// What plugins reach through the host: the desk's storage and records.
struct DeskServices {
    desk: Desk,
    principals: Arc<Mutex<HashMap<String, Principal>>>,
}

impl ferrydesk_plugin_host::Services for DeskServices {
    fn kv_get(
        &self,
        scope: &str,
        key: &str,
    ) -> BoxFuture<'_, std::result::Result<Option<Vec<u8>>, String>> {
        let (scope, key) = (scope.to_owned(), key.to_owned());
        Box::pin(async move {
            let mut conn = self.desk.store().read().await.map_err(|e| e.to_string())?;
            let v = store::kv_get(&mut conn, &scope, &key)
                .await
                .map_err(|e| e.to_string())?;
            v.map(|s| {
                base64::engine::general_purpose::STANDARD
                    .decode(s)
                    .map_err(|e| e.to_string())
            })
            .transpose()
        })
    }
    fn kv_apply(
        &self,
        scope: &str,
        writes: Vec<(String, Option<Vec<u8>>)>,
        quota: ferrydesk_plugin_host::KvQuota,
    ) -> BoxFuture<'_, std::result::Result<(), ferrydesk_plugin_host::KvError>> {
        use ferrydesk_plugin_host::KvError;
        let scope = scope.to_owned();
        fn storage(e: impl std::fmt::Display) -> KvError {
            KvError::Storage(e.to_string())
        }
        Box::pin(async move {
            let store_ = self.desk.store();
            let mut tx = store_.begin().await.map_err(storage)?;
            store::kv_lock(&mut tx, store_.backend(), &scope)
                .await
                .map_err(storage)?;
            let grows = writes.iter().any(|(_, v)| v.is_some());
            for (k, v) in writes {
                let v = v.map(|b| base64::engine::general_purpose::STANDARD.encode(b));
                store::kv_put(&mut tx, &scope, &k, v.as_deref())
                    .await
                    .map_err(storage)?;
            }
            if grows {
                let (keys, bytes) = store::kv_usage(&mut tx, &scope).await.map_err(storage)?;
                let (keys, bytes) = (keys.max(0) as u64, bytes.max(0) as u64);
                if keys > quota.keys || bytes > quota.bytes {
                    // Dropping the transaction rolls every write of the call back.
                    return Err(KvError::Quota { quota, keys, bytes });
                }
            }
            tx.commit().await.map_err(storage)
        })
    }
    fn read_record(
        &self,
        kind: &str,
        id: &str,
        ctx: &CallContext,
    ) -> BoxFuture<'_, std::result::Result<Option<serde_json::Value>, String>> {
        let (kind, id) = (kind.to_owned(), id.to_owned());
        let principal = self
            .principals
            .lock()
            .ok()
            .and_then(|m| m.get(&ctx.trace_id).cloned());
        Box::pin(async move {
            let p = principal.ok_or("records are readable only in calls made by a user")?;
            let r = match kind.as_str() {
                "chat" => self.desk.chat_record(&p, &ChatId(id)).await.map(Some),
                "contact" => self.desk.contact_record(&p, &ContactId(id)).await,
                other => return Err(format!("records of kind `{other}` are not available")),
            };
            match r {
                Ok(v) => Ok(v),
                Err(Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.to_string()),
            }
        })
    }
}

fn now() -> i64 {
    Ts::now().0
}

fn manifest_error(e: manifest::Error) -> Error {
    let p = e.problems.first();
    Error::invalid(
        p.map(|p| {
            if p.pointer.is_empty() {
                "/".to_owned()
            } else {
                p.pointer.clone()
            }
        })
        .unwrap_or_default(),
        e.problems
            .iter()
            .enumerate()
            .map(|(i, p)| {
                if i == 0 {
                    p.message.clone()
                } else {
                    p.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("; "),
    )
}

fn localized_json(l: &Option<Localized>) -> serde_json::Value {
    match l {
        None => serde_json::Value::Null,
        Some(Localized::Text(t)) => t.clone().into(),
        Some(Localized::ByLanguage(m)) => serde_json::to_value(m).unwrap_or_default(),
    }
}

impl Plugins {
    /// Starts the runtime: loads every installation, registers macros and connectors, and
    /// keeps this node in step with the others.
    pub async fn start(desk: Desk, cache_dir: std::path::PathBuf) -> anyhow::Result<Plugins> {
        let secrets = secrets::Secrets::load(cache_dir.parent().unwrap_or(&cache_dir))?;
        Self::start_with(
            desk,
            PluginsOptions {
                cache_dir,
                plugins_dir: None,
                secrets,
            },
        )
        .await
    }

    /// [`Plugins::start`] with every option.
    pub async fn start_with(desk: Desk, opts: PluginsOptions) -> anyhow::Result<Plugins> {
        let PluginsOptions {
            cache_dir,
            plugins_dir,
            secrets,
        } = opts;
        let plugins_dir = plugins_dir.and_then(|d| d.canonicalize().ok());
        let principals = Arc::new(Mutex::new(HashMap::new()));
        let services = Arc::new(DeskServices {
            desk: desk.clone(),
            principals: principals.clone(),
        });
        let mut config = HostConfig::new(cache_dir);
        if let Some(mb) = std::env::var("FERRYDESK_PLUGIN_MEMORY_BUDGET_MB")
            .ok()
            .and_then(|v| v.parse::<u32>().ok())
        {
            config.memory_budget_mb = mb.max(1);
        }
        let host = Host::new(config, services)?;
        let plugins = Plugins {
            inner: Arc::new(Inner {
                desk,
                host,
                entries: RwLock::new(HashMap::new()),
                principals,
                pollers: Mutex::new(HashMap::new()),
                helpers_registered: Mutex::new(Default::default()),
                reload: tokio::sync::Mutex::new(()),
                secrets,
                plugins_dir,
            }),
        };
        plugins.reseal_settings().await?;
        plugins.sync().await?;
        let weak = Arc::downgrade(&plugins.inner);
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_secs(2)).await;
                let Some(inner) = weak.upgrade() else { return };
                if let Err(e) = (Plugins { inner }).sync().await {
                    tracing::warn!(error = %e, "plugin sync failed");
                }
            }
        });
        Ok(plugins)
    }

    pub fn desk(&self) -> &Desk {
        &self.inner.desk
    }

    /// Seals settings text for `scope` before it is stored.
    pub(crate) fn seal(&self, scope: &str, plain: &str) -> String {
        self.inner.secrets.seal(scope, plain)
    }

    /// Settings of `scope` as stored (sealed or, before encryption, plain) as a JSON object.
    pub(crate) fn open_settings(
        &self,
        scope: &str,
        stored: Option<String>,
    ) -> anyhow::Result<serde_json::Map<String, serde_json::Value>> {
        let Some(stored) = stored else {
            return Ok(Default::default());
        };
        let (plain, _) = self.inner.secrets.open(scope, &stored)?;
        Ok(serde_json::from_str::<serde_json::Value>(&plain)
            .ok()
            .and_then(|v| v.as_object().cloned())
            .unwrap_or_default())
    }

    /// Seals every settings row that is plain (written before encryption) or sealed with the
    /// previous key (`FERRYDESK_SECRET_KEY_OLD`).
    async fn reseal_settings(&self) -> anyhow::Result<()> {
        let mut tx = self.desk().store().begin().await?;
        let mut n = 0;
        for (scope, plugin, config, updated_at) in store::all_settings(&mut tx).await? {
            let (plain, stale) = self.inner.secrets.open(&scope, &config)?;
            if stale {
                let sealed = self.seal(&scope, &plain);
                store::put_settings(&mut tx, &scope, &plugin, &sealed, updated_at).await?;
                n += 1;
            }
        }
        tx.commit().await?;
        if n > 0 {
            tracing::info!(rows = n, "plugin settings sealed with the current key");
        }
        Ok(())
    }

    /// Reads the plugin directory `path` for an install by path: only inside the configured
    /// plugins directory. A path outside it, missing or unreadable gets one answer, so the
    /// API does not tell which server paths exist.
    pub fn package_from_path(&self, path: &str) -> Result<Package> {
        let refused = || {
            Error::invalid(
                "path",
                "no plugin directory with that name in the server's plugins directory (install a package instead)",
            )
        };
        let root = self.inner.plugins_dir.as_ref().ok_or_else(refused)?;
        let p = std::path::Path::new(path);
        let p = if p.is_absolute() {
            p.to_path_buf()
        } else {
            root.join(p)
        };
        let canonical = p.canonicalize().map_err(|_| refused())?;
        if !canonical.starts_with(root) || !canonical.is_dir() {
            return Err(refused());
        }
        package::read_dir(&canonical).map_err(|e| {
            tracing::info!(path = %canonical.display(), error = %e, "install by path refused");
            refused()
        })
    }

    pub(crate) fn entry(&self, id: &str) -> Option<Arc<Entry>> {
        self.inner.entries.read().ok()?.get(id).cloned()
    }

    pub(crate) fn all(&self) -> Vec<Arc<Entry>> {
        self.inner
            .entries
            .read()
            .map(|m| {
                let mut v: Vec<_> = m.values().cloned().collect();
                v.sort_by(|a, b| a.row.id.cmp(&b.row.id));
                v
            })
            .unwrap_or_default()
    }

    /// Brings this node's loaded plugins in line with the database.
    pub async fn sync(&self) -> anyhow::Result<()> {
        let _guard = self.inner.reload.lock().await;
        let versions = {
            let mut conn = self.desk().store().read().await?;
            store::versions(&mut conn).await?
        };
        let current: HashMap<String, i64> = self
            .all()
            .iter()
            .map(|e| (e.row.id.clone(), e.row.updated_at))
            .collect();
        let mut changed = false;
        for (id, updated, _) in &versions {
            if current.get(id) != Some(updated) {
                self.reload_one(id).await?;
                changed = true;
            }
        }
        for id in current.keys() {
            if !versions.iter().any(|(v, _, _)| v == id) {
                if let Ok(mut m) = self.inner.entries.write() {
                    m.remove(id);
                }
                changed = true;
            }
        }
        if changed {
            self.wire().await?;
        }
        Ok(())
    }

    async fn reload_one(&self, id: &str) -> anyhow::Result<()> {
        let (row, wasm, settings, publisher) = {
            let mut conn = self.desk().store().read().await?;
            let Some(row) = store::get(&mut conn, id).await? else {
                return Ok(());
            };
            let wasm = store::get_component(&mut conn, &row.sha256).await?;
            let settings = store::get_settings(&mut conn, &format!("plugin:{id}")).await?;
            let publisher = store::get_publisher(&mut conn, id)
                .await?
                .flatten()
                .unwrap_or_else(|| "local".to_owned());
            (row, wasm, settings, publisher)
        };
        let settings = self.open_settings(&format!("plugin:{id}"), settings)?;
        let manifest = manifest::parse(&row.manifest)?;
        let grant: Grant = serde_json::from_str(&row.granted).unwrap_or_default();
        let (plugin, error) = match wasm {
            None => (
                None,
                Some("the component is missing from the database".to_owned()),
            ),
            Some(b64) => match base64::engine::general_purpose::STANDARD.decode(b64) {
                Err(e) => (None, Some(format!("the stored component is corrupt: {e}"))),
                Ok(wasm) => match self.inner.host.load(manifest.clone(), &wasm).await {
                    Ok(p) => (Some(p), None),
                    Err(e) => (None, Some(e.to_string())),
                },
            },
        };
        if let Some(e) = &error {
            tracing::error!(plugin = %id, error = %e, "plugin could not be loaded");
        }
        let entry = Arc::new(Entry {
            row,
            manifest,
            plugin,
            error,
            grant,
            settings,
            publisher,
        });
        if let Ok(mut m) = self.inner.entries.write() {
            m.insert(id.to_owned(), entry);
        }
        Ok(())
    }

    /// Registers macros and connectors of enabled plugins; stops what is no longer enabled.
    async fn wire(&self) -> anyhow::Result<()> {
        for e in self.all() {
            if e.manifest.kind == Kind::Macro && e.runnable().is_some() {
                helpers::register(self, &e);
            }
        }
        connectors::wire(self).await
    }

    fn info(&self, e: &Entry) -> PluginInfo {
        let m = &e.manifest;
        let mut config = serde_json::Map::new();
        for (k, v) in &e.settings {
            if m.is_secret(k) {
                config.insert(k.clone(), serde_json::json!({ "set": true }));
            } else {
                config.insert(k.clone(), v.clone());
            }
        }
        let configured = m
            .check_config(&serde_json::Value::Object(e.settings.clone()))
            .is_ok();
        let raw: serde_json::Value = serde_json::from_str(&e.row.manifest).unwrap_or_default();
        let changes = self.capability_changes(e);
        let effective_limits = serde_json::to_value(ferrydesk_plugin_host::EffectiveLimits::of(
            m,
            self.inner.host.config(),
        ))
        .unwrap_or_default();
        PluginInfo {
            capability_changes: (!changes.added.is_empty() || !changes.removed.is_empty())
                .then_some(changes),
            publisher: e.publisher.clone(),
            effective_limits,
            id: m.id.clone(),
            name: raw.get("name").cloned().unwrap_or_default(),
            version: m.version.to_string(),
            kind: e.row.kind.clone(),
            description: localized_json(&m.description),
            enabled: e.row.enabled,
            error: e.error.clone(),
            capabilities: raw
                .get("capabilities")
                .cloned()
                .unwrap_or(serde_json::json!({})),
            limits: raw.get("limits").cloned().unwrap_or(serde_json::json!({})),
            granted: e.grant.clone(),
            config_schema: m.config_schema.clone().unwrap_or(serde_json::json!({})),
            config: serde_json::Value::Object(config),
            configured,
            actions: raw.get("actions").cloned().unwrap_or(serde_json::json!([])),
            helpers: raw.get("helpers").cloned().unwrap_or(serde_json::json!([])),
            connector: raw.get("connector").cloned().unwrap_or_default(),
            sha256: e.row.sha256.clone(),
            stats: e
                .plugin
                .as_ref()
                .map(|p| p.stats().into())
                .unwrap_or_default(),
            updated_at: Ts(e.row.updated_at),
        }
    }

    /// The difference between what the manifest asks for and what the admin approved.
    fn capability_changes(&self, e: &Entry) -> CapabilityChanges {
        let now = capability_names(&e.manifest);
        let approved = &e.grant.approved;
        if approved.is_empty() && !e.row.enabled {
            // Never enabled: everything is to be approved at enable, nothing is a change.
            return CapabilityChanges::default();
        }
        CapabilityChanges {
            added: now
                .iter()
                .filter(|c| !approved.contains(c))
                .cloned()
                .collect(),
            removed: approved
                .iter()
                .filter(|c| !now.contains(c))
                .cloned()
                .collect(),
        }
    }

    pub async fn list(&self, p: &Principal) -> Result<Vec<PluginInfo>> {
        p.require(Role::Admin)?;
        Ok(self.all().iter().map(|e| self.info(e)).collect())
    }

    /// Every installation, for trusted callers (the command line).
    pub fn list_all(&self) -> Vec<PluginInfo> {
        self.all().iter().map(|e| self.info(e)).collect()
    }

    /// One installation, for trusted callers (the command line).
    pub fn get_unchecked(&self, id: &str) -> Option<PluginInfo> {
        self.entry(id).map(|e| self.info(&e))
    }

    pub async fn get(&self, p: &Principal, id: &str) -> Result<PluginInfo> {
        p.require(Role::Admin)?;
        let e = self.entry(id).ok_or(Error::not_found("plugin"))?;
        Ok(self.info(&e))
    }

    /// Installs a package, or upgrades an installed plugin when `upgrade` is set (the version
    /// must be greater). The component is compiled and checked before anything is stored.
    pub async fn install(
        &self,
        p: Option<&Principal>,
        pkg: Package,
        upgrade: bool,
    ) -> Result<PluginInfo> {
        if let Some(p) = p {
            p.require(Role::Admin)?;
        }
        let m = manifest::parse(&pkg.manifest_text).map_err(manifest_error)?;
        let publisher = package::verify(&pkg, m.publisher.as_ref().map(|p| p.key.as_str()))?;
        if !m.api_supported() {
            return Err(Error::invalid(
                "/api_version",
                format!(
                    "this server implements plugin API {:?}",
                    manifest::SUPPORTED_API_VERSIONS
                ),
            ));
        }
        let plugin = self
            .inner
            .host
            .load(m.clone(), &pkg.wasm)
            .await
            .map_err(|e| Error::invalid("component", e.to_string()))?;
        let _guard = self.inner.reload.lock().await;
        let mut tx = self.desk().store().begin().await?;
        let existing = store::get(&mut tx, &m.id).await?;
        let now = now();
        // A plugin id belongs to its publisher: a signing key, `local` (a directory on the
        // server) or `unsigned` (an uploaded unsigned package). Only the same may replace it.
        let identity = publisher
            .clone()
            .unwrap_or_else(|| if pkg.local { "local" } else { "unsigned" }.to_owned());
        let first_party_keys = first_party::keys();
        if first_party::reserved(&m.id)
            && first_party::owner(&m.id, &identity, &first_party_keys) != "first-party"
        {
            return Err(Error::conflict(
                "plugin_id_reserved",
                format!(
                    "plugin id `{}` belongs to Ferrydesk's first-party plugin: an uploaded package may use it only when signed with the Ferrydesk release key (this package is from {}); give your plugin an id of its own",
                    m.id,
                    describe_publisher(&identity)
                ),
            ));
        }
        if existing.is_some() {
            let old_identity = store::get_publisher(&mut tx, &m.id)
                .await?
                .flatten()
                .unwrap_or_else(|| "local".to_owned());
            if first_party::owner(&m.id, &old_identity, &first_party_keys)
                != first_party::owner(&m.id, &identity, &first_party_keys)
            {
                return Err(Error::conflict(
                    "plugin_publisher_mismatch",
                    format!(
                        "plugin `{}` is installed from publisher {}; this package is from {}: a package cannot take over another publisher's plugin id (uninstall the plugin first to replace it)",
                        m.id,
                        describe_publisher(&old_identity),
                        describe_publisher(&identity)
                    ),
                ));
            }
        }
        let (enabled, granted, installed_at) = match (&existing, upgrade) {
            (Some(_), false) => {
                return Err(Error::conflict(
                    "plugin_installed",
                    format!("plugin `{}` is already installed; upgrade it instead", m.id),
                ));
            }
            (None, true) => return Err(Error::not_found("plugin")),
            (None, false) => (false, Grant::default(), now),
            (Some(old), true) => {
                let old_version = semver::Version::parse(&old.version)
                    .map_err(|e| Error::Internal(e.to_string()))?;
                if m.version <= old_version {
                    return Err(Error::invalid(
                        "/version",
                        format!(
                            "an upgrade needs a version greater than the installed {old_version}"
                        ),
                    ));
                }
                if old.kind != kind_str(m.kind) {
                    return Err(Error::invalid(
                        "/kind",
                        format!("the installed plugin is a {}", old.kind),
                    ));
                }
                // Grants carry over only for what the new manifest still asks for.
                let mut g: Grant = serde_json::from_str(&old.granted).unwrap_or_default();
                if g.approved.is_empty() && old.enabled {
                    // Enabled before approvals were recorded: what it had was approved.
                    g.approved = manifest::parse(&old.manifest)
                        .map(|om| capability_names(&om))
                        .unwrap_or_default();
                }
                let added: Vec<String> = capability_names(&m)
                    .into_iter()
                    .filter(|c| !g.approved.contains(c))
                    .collect();
                let enabled = old.enabled && added.is_empty();
                if old.enabled && !enabled {
                    tracing::warn!(plugin = %m.id, added = ?added, "upgrade asks for new capabilities: installed disabled until the admin approves them");
                }
                let asked = m.capabilities.http.as_ref();
                g.hosts
                    .retain(|h| asked.is_some_and(|a| a.allowed_hosts.contains(h)));
                g.private &= asked.is_some_and(|a| a.allow_private);
                g.private_hosts.retain(|h| {
                    asked.is_some_and(|a| a.allow_private && a.allowed_hosts.contains(h))
                });
                (enabled, g, old.installed_at)
            }
        };
        let b64 = base64::engine::general_purpose::STANDARD.encode(&pkg.wasm);
        store::put_component(&mut tx, plugin.sha256(), &b64).await?;
        store::upsert(
            &mut tx,
            &store::PluginRow {
                id: m.id.clone(),
                version: m.version.to_string(),
                kind: kind_str(m.kind).into(),
                manifest: pkg.manifest_text.clone(),
                sha256: plugin.sha256().to_owned(),
                enabled,
                granted: serde_json::to_string(&granted).unwrap_or_default(),
                installed_by: p.map(|p| p.id().to_string()),
                installed_at,
                updated_at: now,
            },
        )
        .await?;
        store::set_publisher(&mut tx, &m.id, &identity).await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        drop(_guard);
        self.sync()
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        tracing::info!(plugin = %m.id, version = %m.version, upgrade, "plugin installed");
        let e = self.entry(&m.id).ok_or(Error::not_found("plugin"))?;
        Ok(self.info(&e))
    }

    /// Enables a plugin with the grants the admin approves (by default, every origin the
    /// manifest names and no private addresses).
    pub async fn enable(
        &self,
        p: Option<&Principal>,
        id: &str,
        grant: Option<Grant>,
    ) -> Result<PluginInfo> {
        if let Some(p) = p {
            p.require(Role::Admin)?;
        }
        let e = self.entry(id).ok_or(Error::not_found("plugin"))?;
        if let Some(err) = &e.error {
            return Err(Error::conflict(
                "plugin_broken",
                format!("plugin `{id}` cannot be loaded: {err}"),
            ));
        }
        let asked = e.manifest.capabilities.http.clone().unwrap_or_default();
        let grant = grant.unwrap_or_else(|| Grant {
            hosts: asked.allowed_hosts.clone(),
            private: false,
            ..Default::default()
        });
        for (i, h) in grant.hosts.iter().enumerate() {
            if !asked.allowed_hosts.contains(h) {
                return Err(Error::invalid(
                    format!("grant.hosts[{i}]"),
                    format!("`{h}` is not among the hosts the manifest asks for"),
                ));
            }
        }
        if grant.private && !asked.allow_private {
            return Err(Error::invalid(
                "grant.private",
                "the manifest does not ask for private addresses",
            ));
        }
        for (i, h) in grant.private_hosts.iter().enumerate() {
            if !asked.allow_private {
                return Err(Error::invalid(
                    format!("grant.private_hosts[{i}]"),
                    "the manifest does not ask for private addresses",
                ));
            }
            if !grant.hosts.contains(h) {
                return Err(Error::invalid(
                    format!("grant.private_hosts[{i}]"),
                    format!("`{h}` is not among the granted hosts"),
                ));
            }
        }
        if e.manifest.kind != Kind::Connector
            && let Err(err) = e
                .manifest
                .check_config(&serde_json::Value::Object(e.settings.clone()))
        {
            return Err(Error::conflict(
                "plugin_not_configured",
                format!("configure plugin `{id}` before enabling it: {err}"),
            ));
        }
        let mut grant = grant;
        grant.approved = capability_names(&e.manifest);
        self.set_enabled(id, true, &grant).await
    }

    pub async fn disable(&self, p: Option<&Principal>, id: &str) -> Result<PluginInfo> {
        if let Some(p) = p {
            p.require(Role::Admin)?;
        }
        let e = self.entry(id).ok_or(Error::not_found("plugin"))?;
        self.set_enabled(id, false, &e.grant).await
    }

    async fn set_enabled(&self, id: &str, enabled: bool, grant: &Grant) -> Result<PluginInfo> {
        {
            let _guard = self.inner.reload.lock().await;
            let mut tx = self.desk().store().begin().await?;
            let granted = serde_json::to_string(grant).unwrap_or_default();
            if !store::set_enabled(&mut tx, id, enabled, &granted, now()).await? {
                return Err(Error::not_found("plugin"));
            }
            tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        }
        self.sync()
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        let e = self.entry(id).ok_or(Error::not_found("plugin"))?;
        Ok(self.info(&e))
    }

    /// Replaces a plugin's settings (validated against `config_schema`). A secret that is
    /// absent keeps its stored value; `null` clears it.
    pub async fn configure(
        &self,
        p: Option<&Principal>,
        id: &str,
        config: serde_json::Value,
    ) -> Result<PluginInfo> {
        if let Some(p) = p {
            p.require(Role::Admin)?;
        }
        let e = self.entry(id).ok_or(Error::not_found("plugin"))?;
        let merged = merge_secrets(&e.manifest, &e.settings, config)?;
        e.manifest.check_config(&merged).map_err(manifest_error)?;
        {
            let _guard = self.inner.reload.lock().await;
            let mut tx = self.desk().store().begin().await?;
            let scope = format!("plugin:{id}");
            store::put_settings(
                &mut tx,
                &scope,
                id,
                &self.seal(&scope, &merged.to_string()),
                now(),
            )
            .await?;
            store::touch(&mut tx, id, now()).await?;
            tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        }
        self.sync()
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        let e = self.entry(id).ok_or(Error::not_found("plugin"))?;
        Ok(self.info(&e))
    }

    /// Removes a plugin, its settings and its data. Connector plugins still serving channels
    /// cannot be removed.
    pub async fn uninstall(&self, p: Option<&Principal>, id: &str) -> Result<()> {
        if let Some(p) = p {
            p.require(Role::Admin)?;
        }
        let channels = connectors::channels_of(self, id).await?;
        if !channels.is_empty() {
            return Err(Error::conflict(
                "plugin_in_use",
                format!(
                    "channels {} use plugin `{id}`; delete or deactivate them first",
                    channels
                        .iter()
                        .map(|c| format!("«{}»", c.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
        {
            let _guard = self.inner.reload.lock().await;
            let mut tx = self.desk().store().begin().await?;
            if !store::delete(&mut tx, id).await? {
                return Err(Error::not_found("plugin"));
            }
            sqlx::query("DELETE FROM plugin_kv WHERE scope = $1")
                .bind(format!("plugin:{id}"))
                .execute(&mut *tx)
                .await
                .map_err(ferrydesk_store::Error::from)?;
            tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        }
        self.sync()
            .await
            .map_err(|e| Error::Internal(e.to_string()))?;
        Ok(())
    }

    /// Installs (or upgrades to a newer version of) every plugin directory in `dir` that holds a
    /// built component, and enables those that need no settings. For the demo.
    pub async fn install_dir_all(
        &self,
        dir: &std::path::Path,
        enable: &[&str],
    ) -> Result<Vec<String>> {
        let mut out = Vec::new();
        let Ok(read) = std::fs::read_dir(dir) else {
            return Ok(out);
        };
        let mut dirs: Vec<_> = read
            .flatten()
            .map(|d| d.path())
            .filter(|p| p.join("plugin.json").exists())
            .collect();
        dirs.sort();
        for d in dirs {
            let pkg = match package::read_dir(&d) {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(dir = %d.display(), error = %e, "skipping plugin");
                    continue;
                }
            };
            let m = manifest::parse(&pkg.manifest_text).map_err(manifest_error)?;
            let installed = self.entry(&m.id);
            let r = match &installed {
                None => self.install(None, pkg, false).await.map(Some),
                Some(e) if semver::Version::parse(&e.row.version).is_ok_and(|v| v < m.version) => {
                    self.install(None, pkg, true).await.map(Some)
                }
                Some(_) => Ok(None),
            };
            match r {
                Ok(_) => {
                    if installed.is_none() && enable.contains(&m.id.as_str()) {
                        self.enable(None, &m.id, None).await?;
                    }
                    out.push(m.id.clone());
                }
                Err(e) => tracing::warn!(plugin = %m.id, error = %e, "plugin not installed"),
            }
        }
        Ok(out)
    }
}

pub fn describe_publisher(identity: &str) -> String {
    match identity {
        "local" => "the server's own plugin directories (local)".to_owned(),
        "unsigned" => "an uploaded unsigned package".to_owned(),
        first_party::RELEASE_KEY => {
            format!("the Ferrydesk release key {}", first_party::RELEASE_KEY)
        }
        key => format!("key {key}"),
    }
}

pub(crate) fn kind_str(k: Kind) -> &'static str {
    match k {
        Kind::Action => "action",
        Kind::Macro => "macro",
        Kind::Connector => "connector",
    }
}

/// Keeps stored secrets the new settings leave out (the UI never has them); `null` clears.
pub(crate) fn merge_secrets(
    m: &Manifest,
    old: &serde_json::Map<String, serde_json::Value>,
    new: serde_json::Value,
) -> Result<serde_json::Value> {
    let serde_json::Value::Object(mut new) = new else {
        return Err(Error::invalid("config", "must be an object"));
    };
    for key in m.secret_keys() {
        match new.get(&key) {
            None => {
                if let Some(v) = old.get(&key) {
                    new.insert(key, v.clone());
                }
            }
            Some(serde_json::Value::Null) => {
                new.remove(&key);
            }
            Some(serde_json::Value::Object(o))
                if o.get("set") == Some(&serde_json::Value::Bool(true)) =>
            {
                // The masked value the API showed, sent back unchanged.
                match old.get(&key) {
                    Some(v) => new.insert(key, v.clone()),
                    None => new.remove(&key),
                };
            }
            Some(_) => {}
        }
    }
    Ok(serde_json::Value::Object(new))
}
