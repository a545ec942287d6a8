//! Runs Ferrydesk plugins: WebAssembly components of `ferrydesk:plugin@0.1.0`, in wasmtime.
//!
//! * One [`Engine`] per process with the pooling allocator and epoch interruption; a
//!   background thread ticks the epoch every [`TICK`].
//! * A component is compiled once, at install, with a size and time limit, and the compiled
//!   artifact is cached on disk keyed by the component's SHA-256 and the engine's compatibility
//!   hash, so start-up only maps it in.
//! * Every call gets a fresh instance from an `InstancePre` (a macro: one per render) with its
//!   own `Store`: memory capped by `StoreLimits`, wall time capped by the epoch deadline (a trap)
//!   and by a tokio timeout (for time spent in host calls), and a WASI context with nothing in
//!   it: no preopened directories, no environment, no arguments, no sockets; stderr is captured
//!   so a panic's message reaches the caller.
//! * Imports give exactly what the manifest declares and the admin granted: config values
//!   (secrets through their own function), a key-value store scoped to the installation, HTTP to
//!   granted origins ([`http`]), read access to declared record kinds.
//! * A trap, a timeout, a memory cap or output that breaks the manifest's schema becomes a
//!   [`CallError`] for the caller and a metric; the server keeps serving.
//! * Calls never hold a runtime thread: wasm runs on wasmtime's async fibers and yields to the
//!   executor at every epoch tick; the time limit is a wall-clock deadline checked by the epoch
//!   callback against [`Instant`] (not a count of ticks, which slow down under load). A node
//!   memory budget (a semaphore weighted in MiB) bounds the sum of the memory caps of the calls
//!   running at once, and each plugin has its own concurrency limit; a call that cannot get its
//!   share within [`HostConfig::admission_wait`] fails with [`CallError::Overloaded`].
//! * Results are bounded ([`EffectiveLimits`]): output size, effects per call (count and
//!   bytes), and a key-value quota per scope; exceeding one fails the call and applies nothing.

mod bindings;
pub mod http;
pub mod testing;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ferrydesk_plugin_manifest::{Kind, Manifest};
use futures_util::future::BoxFuture;
use serde::Serialize;
use sha2::Digest;
use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

pub use ferrydesk_plugin_manifest as manifest;

/// The epoch tick: the granularity of plugin time limits.
pub const TICK: Duration = Duration::from_millis(5);

/// Host-wide limits and places.
#[derive(Debug, Clone)]
pub struct HostConfig {
    /// Where compiled components are cached.
    pub cache_dir: PathBuf,
    /// Largest component accepted at install.
    pub max_component_bytes: usize,
    /// Longest compilation accepted at install.
    pub compile_timeout: Duration,
    /// Memory cap when the manifest sets none, and the most it may set (never more than
    /// `memory_budget_mb` either). The cap is for all of a call's linear memories together.
    pub default_memory_mb: u32,
    pub max_memory_mb: u32,
    /// Time cap when the manifest sets none, and the most it may set.
    pub default_timeout_ms: u32,
    pub max_timeout_ms: u32,
    /// HTTP requests per call when the manifest sets none, and the most it may set.
    pub default_http_requests: u32,
    pub max_http_requests: u32,
    /// Files and sender photos a connector call may ask the host to download (fewer if the
    /// plugin's `effects` limit is lower).
    pub max_downloads: u32,
    /// Largest HTTP response a plugin may read.
    pub max_response_bytes: usize,
    /// Concurrent instances across all plugins (pool slots).
    pub max_instances: u32,
    /// The node's memory budget for plugin calls: the sum of the memory caps of the calls
    /// running at once never exceeds it.
    pub memory_budget_mb: u32,
    /// How long a call waits for its share of the memory budget or a concurrency slot.
    pub admission_wait: Duration,
    /// Calls of one plugin at once when the manifest sets none, and the most it may set.
    pub default_concurrency: u32,
    pub max_concurrency: u32,
    /// Result size per call when the manifest sets none, and the most it may set.
    pub default_output_bytes: u32,
    pub max_output_bytes: u32,
    /// Effects per action call (count) when the manifest sets none, and the most it may set.
    pub default_effects: u32,
    pub max_effects: u32,
    /// Total effect bytes per action call when the manifest sets none, and the most it may set.
    pub default_effect_bytes: u32,
    pub max_effect_bytes: u32,
    /// Key-value quota per scope (bytes, keys) when the manifest sets none, and the most.
    pub default_kv_bytes: u64,
    pub max_kv_bytes: u64,
    pub default_kv_keys: u64,
    pub max_kv_keys: u64,
}

impl HostConfig {
    pub fn new(cache_dir: impl Into<PathBuf>) -> HostConfig {
        HostConfig {
            cache_dir: cache_dir.into(),
            max_component_bytes: 16 << 20,
            compile_timeout: Duration::from_secs(60),
            default_memory_mb: 32,
            max_memory_mb: 512,
            default_timeout_ms: 5_000,
            max_timeout_ms: 60_000,
            default_http_requests: 5,
            max_http_requests: 100,
            max_downloads: 20,
            max_response_bytes: 25 << 20,
            max_instances: 256,
            memory_budget_mb: 1024,
            admission_wait: Duration::from_secs(10),
            default_concurrency: 4,
            max_concurrency: 16,
            default_output_bytes: 1 << 20,
            max_output_bytes: 8 << 20,
            default_effects: 100,
            max_effects: 1000,
            default_effect_bytes: 1 << 20,
            max_effect_bytes: 8 << 20,
            default_kv_bytes: 1 << 20,
            max_kv_bytes: 64 << 20,
            default_kv_keys: 1000,
            max_kv_keys: 100_000,
        }
    }
}

/// The limits a plugin's calls run under: the manifest's `limits`, or the host's defaults,
/// never above the host's maxima (a manifest asking for more is installed and runs under the
/// maximum). Shown to the admin.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EffectiveLimits {
    pub memory_mb: u32,
    pub timeout_ms: u32,
    pub http_requests: u32,
    pub concurrency: u32,
    pub output_bytes: u32,
    pub effects: u32,
    pub effect_bytes: u32,
    pub kv_bytes: u64,
    pub kv_keys: u64,
}

impl EffectiveLimits {
    /// The limits `manifest` gets on a host configured with `cfg`.
    pub fn of(manifest: &Manifest, cfg: &HostConfig) -> EffectiveLimits {
        let l = &manifest.limits;
        EffectiveLimits {
            memory_mb: l
                .memory_mb
                .unwrap_or(cfg.default_memory_mb)
                .clamp(1, cfg.max_memory_mb.min(cfg.memory_budget_mb).max(1)),
            timeout_ms: l
                .timeout_ms
                .unwrap_or(cfg.default_timeout_ms)
                .clamp(1, cfg.max_timeout_ms.max(1)),
            http_requests: l
                .http_requests
                .unwrap_or(cfg.default_http_requests)
                .min(cfg.max_http_requests),
            concurrency: l
                .concurrency
                .unwrap_or(cfg.default_concurrency)
                .clamp(1, cfg.max_concurrency.max(1)),
            output_bytes: l
                .output_bytes
                .unwrap_or(cfg.default_output_bytes)
                .min(cfg.max_output_bytes),
            effects: l
                .effects
                .unwrap_or(cfg.default_effects)
                .min(cfg.max_effects),
            effect_bytes: l
                .effect_bytes
                .unwrap_or(cfg.default_effect_bytes)
                .min(cfg.max_effect_bytes),
            kv_bytes: l
                .kv_bytes
                .unwrap_or(cfg.default_kv_bytes)
                .min(cfg.max_kv_bytes),
            kv_keys: l
                .kv_keys
                .unwrap_or(cfg.default_kv_keys)
                .min(cfg.max_kv_keys),
        }
    }
}

/// A scope's key-value quota, checked when a call's writes are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvQuota {
    /// Bytes of keys and values the scope may hold.
    pub bytes: u64,
    /// Keys the scope may hold.
    pub keys: u64,
}

/// Why a call's key-value writes were not applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvError {
    /// The writes would take the scope past its quota; nothing was stored.
    #[error(
        "the plugin's storage quota ({} bytes in {} keys; limits.kv_bytes, limits.kv_keys) would be exceeded: the writes would leave {bytes} bytes in {keys} keys; nothing was stored",
        quota.bytes,
        quota.keys
    )]
    Quota {
        quota: KvQuota,
        keys: u64,
        bytes: u64,
    },
    /// The storage failed.
    #[error("{0}")]
    Storage(String),
}

/// What the core provides to plugins: storage and records. Implemented by the desk.
pub trait Services: Send + Sync + 'static {
    fn kv_get(&self, scope: &str, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, String>>;
    /// Applies a call's writes (`None` deletes) atomically, or none of them if the scope
    /// would then hold more than `quota` ([`KvError::Quota`]).
    fn kv_apply(
        &self,
        scope: &str,
        writes: Vec<(String, Option<Vec<u8>>)>,
        quota: KvQuota,
    ) -> BoxFuture<'_, Result<(), KvError>>;
    /// A record as JSON, if the call's actor may see it.
    fn read_record(
        &self,
        kind: &str,
        id: &str,
        ctx: &CallContext,
    ) -> BoxFuture<'_, Result<Option<serde_json::Value>, String>>;
}

/// Who and what a call is about (passed to the plugin; never secrets).
#[derive(Debug, Clone, Default, Serialize)]
pub struct CallContext {
    pub installation: String,
    pub actor: Option<String>,
    pub chat: Option<String>,
    pub contact: Option<String>,
    pub locale: String,
    pub trace_id: String,
}

/// The admin's settings for one call: values by key (secrets included; the plugin reads those
/// through `config.secret`), the granted HTTP origins and private-address access.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    pub values: serde_json::Map<String, serde_json::Value>,
    /// Manifest origin patterns the admin granted (a subset of the manifest's).
    pub granted_hosts: Vec<String>,
    /// Private addresses for every granted host (kept for older grants).
    pub granted_private: bool,
    /// Granted origin patterns whose hosts may resolve to private addresses.
    pub granted_private_hosts: Vec<String>,
    /// Tests only: answers outbound requests instead of the network. The grant (origins,
    /// request budget) is still enforced; DNS is not consulted.
    pub http_mock: HttpMock,
}

/// A stand-in for the network in plugin tests: a function from request to response.
#[derive(Clone, Default)]
pub struct HttpMock(pub Option<Arc<MockFn>>);

/// The function behind an [`HttpMock`].
pub type MockFn = dyn Fn(&http::Request) -> http::Response + Send + Sync;

impl std::fmt::Debug for HttpMock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "HttpMock(set)"
        } else {
            "HttpMock(none)"
        })
    }
}

/// One invocation's environment.
#[derive(Debug, Clone)]
pub struct Call {
    pub ctx: CallContext,
    pub settings: Arc<Settings>,
    /// Key-value scope: the installation, or the channel for connectors.
    pub kv_scope: String,
}

/// Why a call failed. Every variant has a message fit for an operator or admin.
#[derive(Debug, Clone, PartialEq, thiserror::Error, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum CallError {
    /// The plugin returned an error.
    #[error("{message}")]
    Plugin {
        code: String,
        message: String,
        retryable: bool,
    },
    #[error(
        "the plugin hit its time limit: it did not finish within {limit_ms} ms and was stopped"
    )]
    Timeout { limit_ms: u32 },
    #[error("the plugin ran out of memory: it needed more than its {limit_mb} MiB and was stopped")]
    OutOfMemory { limit_mb: u32 },
    #[error("the plugin crashed: {detail}")]
    Trap { detail: String },
    #[error("the plugin's input is not valid: {detail}")]
    InvalidInput { detail: String },
    #[error("the plugin returned invalid output: {detail}")]
    InvalidOutput { detail: String },
    #[error("all plugin slots are busy; try again")]
    Busy,
    /// The node's memory budget or the plugin's concurrency limit had no room in time.
    #[error("{detail}")]
    Overloaded { detail: String },
    /// The call's result broke one of the plugin's limits (output size, effects, storage
    /// quota); nothing was applied.
    #[error("{detail}")]
    LimitExceeded { detail: String },
    #[error("{detail}")]
    Unavailable { detail: String },
}

impl CallError {
    /// Whether calling again later may succeed.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            CallError::Plugin {
                retryable: true,
                ..
            } | CallError::Timeout { .. }
                | CallError::Busy
                | CallError::Overloaded { .. }
        )
    }
    fn code(&self) -> &'static str {
        match self {
            CallError::Plugin { .. } => "plugin_error",
            CallError::Timeout { .. } => "timeout",
            CallError::OutOfMemory { .. } => "out_of_memory",
            CallError::Trap { .. } => "trap",
            CallError::InvalidInput { .. } => "invalid_input",
            CallError::InvalidOutput { .. } => "invalid_output",
            CallError::Busy => "busy",
            CallError::Overloaded { .. } => "overloaded",
            CallError::LimitExceeded { .. } => "limit_exceeded",
            CallError::Unavailable { .. } => "unavailable",
        }
    }
}

/// Why a component was not accepted at install or load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the component is {size} bytes; the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("the component's SHA-256 is {actual}, the manifest says {expected}")]
    Checksum { expected: String, actual: String },
    #[error("not a valid WebAssembly component: {0}")]
    Invalid(String),
    #[error("compiling the component took longer than {0:?}")]
    CompileTimeout(Duration),
    #[error("the component does not fit the `{kind}` world of ferrydesk:plugin@0.1.0: {detail}")]
    World { kind: &'static str, detail: String },
    #[error("{0}")]
    Io(String),
}

/// The process-wide plugin runtime.
#[derive(Clone)]
pub struct Host {
    inner: Arc<HostInner>,
}

struct HostInner {
    engine: Engine,
    config: HostConfig,
    services: Arc<dyn Services>,
    action_linker: Linker<State>,
    macro_linker: Linker<State>,
    connector_linker: Linker<State>,
    engine_tag: String,
    /// Permits are MiB of the node's memory budget.
    memory: Arc<tokio::sync::Semaphore>,
}

impl Host {
    pub fn new(config: HostConfig, services: Arc<dyn Services>) -> anyhow::Result<Host> {
        let mut cfg = wasmtime::Config::new();
        cfg.wasm_component_model(true);
        cfg.epoch_interruption(true);
        cfg.max_wasm_stack(256 << 10);
        cfg.async_stack_size(1 << 20);
        let mut pool = wasmtime::PoolingAllocationConfig::default();
        pool.total_component_instances(config.max_instances)
            .total_core_instances(config.max_instances * 8)
            .total_memories(config.max_instances * 2)
            .total_tables(config.max_instances * 8)
            .total_stacks(config.max_instances)
            .max_memory_size(512 << 20)
            .linear_memory_keep_resident(512 << 10)
            // Memory goes back to the kernel when each call ends (one madvise per call): a
            // batch of decommits would keep up to a batch of finished calls' memory resident,
            // outside the node's memory budget (measured: 8 finished 128 MiB calls kept
            // 1.1 GB resident with a batch of 32).
            .decommit_batch_size(1)
            .table_keep_resident(16 << 10);
        cfg.allocation_strategy(wasmtime::InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&cfg).map_err(|e| anyhow::anyhow!("{e}"))?;

        let weak = engine.weak();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(TICK);
                }
            })?;

        let wrap = |e: wasmtime::Error| anyhow::anyhow!("{e}");
        let mut action_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut action_linker).map_err(wrap)?;
        bindings::action::Action::add_to_linker::<State, HasSelf<State>>(&mut action_linker, |s| s)
            .map_err(wrap)?;
        let mut macro_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut macro_linker).map_err(wrap)?;
        bindings::macros::Macro::add_to_linker::<State, HasSelf<State>>(&mut macro_linker, |s| s)
            .map_err(wrap)?;
        let mut connector_linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut connector_linker).map_err(wrap)?;
        bindings::connector::Connector::add_to_linker::<State, HasSelf<State>>(
            &mut connector_linker,
            |s| s,
        )
        .map_err(wrap)?;

        let engine_tag = {
            use std::hash::{Hash, Hasher};
            let mut h = std::collections::hash_map::DefaultHasher::new();
            engine.precompile_compatibility_hash().hash(&mut h);
            format!("{:016x}", h.finish())
        };
        std::fs::create_dir_all(&config.cache_dir)?;
        let memory = Arc::new(tokio::sync::Semaphore::new(
            config.memory_budget_mb.max(1) as usize
        ));
        Ok(Host {
            inner: Arc::new(HostInner {
                engine,
                config,
                services,
                action_linker,
                macro_linker,
                connector_linker,
                engine_tag,
                memory,
            }),
        })
    }

    pub fn config(&self) -> &HostConfig {
        &self.inner.config
    }

    /// Loads a component for `manifest`: from the compiled cache if present, else compiles it
    /// (size and time limited) and caches the result. Checks the checksum, that every import is
    /// one the host provides and that the exports match the manifest's kind.
    pub async fn load(&self, manifest: Manifest, wasm: &[u8]) -> Result<Plugin, LoadError> {
        let limit = self.inner.config.max_component_bytes;
        if wasm.len() > limit {
            return Err(LoadError::TooLarge {
                size: wasm.len(),
                limit,
            });
        }
        let sha = hex::encode(sha2::Sha256::digest(wasm));
        if let Some(expected) = &manifest.component.sha256
            && *expected != sha
        {
            return Err(LoadError::Checksum {
                expected: expected.clone(),
                actual: sha,
            });
        }
        let cached = self
            .inner
            .config
            .cache_dir
            .join(format!("{sha}-{}.cwasm", self.inner.engine_tag));
        let component = match self.load_cached(&cached) {
            Some(c) => c,
            None => {
                let c = self.compile(wasm.to_vec()).await?;
                if let Ok(bytes) = c.serialize() {
                    let tmp = cached.with_extension("tmp");
                    if std::fs::write(&tmp, bytes).is_ok() {
                        let _ = std::fs::rename(&tmp, &cached);
                    }
                }
                c
            }
        };
        Plugin::new(self.clone(), manifest, component, sha)
    }

    #[allow(unsafe_code)]
    fn load_cached(&self, path: &Path) -> Option<Component> {
        if !path.exists() {
            return None;
        }
        // SAFETY: the file is one this host wrote into its own cache directory (named by the
        // component's SHA-256 and this engine's compatibility hash, written to a temporary name
        // and renamed), and wasmtime checks the engine/version header before using it. The
        // cache directory must not be writable by anyone the server does not trust.
        let c = unsafe { Component::deserialize_file(&self.inner.engine, path) };
        match c {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "discarding a stale compiled plugin");
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }

    async fn compile(&self, wasm: Vec<u8>) -> Result<Component, LoadError> {
        if !wasmparser::Parser::is_component(&wasm) {
            return Err(LoadError::Invalid(
                "the file is not a WebAssembly component (build it with `cargo build --target wasm32-wasip2`)".into(),
            ));
        }
        let engine = self.inner.engine.clone();
        let timeout = self.inner.config.compile_timeout;
        let task = tokio::task::spawn_blocking(move || Component::new(&engine, &wasm));
        match tokio::time::timeout(timeout, task).await {
            Err(_) => Err(LoadError::CompileTimeout(timeout)),
            Ok(Err(e)) => Err(LoadError::Io(e.to_string())),
            Ok(Ok(Err(e))) => Err(LoadError::Invalid(format!("{e:#}"))),
            Ok(Ok(Ok(c))) => Ok(c),
        }
    }
}

/// The per-call store data.
pub(crate) struct State {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: Limiter,
    call: Call,
    manifest: Arc<Manifest>,
    services: Arc<dyn Services>,
    grant: http::Grant,
    http_used: u32,
    kv_writes: BTreeMap<String, Option<Vec<u8>>>,
    /// Why the call's key-value writes broke a per-call limit that the plugin could not be told
    /// about (`kv.delete` returns nothing): the call then fails and nothing is applied.
    kv_refused: Option<String>,
    logs: u32,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

/// A call's resource limiter. Memory is capped for all of the call's linear memories
/// together: wasmtime's `StoreLimits::memory_size` caps each memory on its own, so a component
/// with four memories could take four times the `memory_mb` the node budget charged for it.
/// Also remembers that it refused memory, to tell an out-of-memory trap apart.
struct Limiter {
    /// Instances, tables and memories per store; its per-memory size is the same total cap.
    inner: StoreLimits,
    /// Bytes all linear memories of the store may hold together.
    memory_total: usize,
    /// Bytes the store's linear memories hold now (initial sizes plus granted growth).
    memory_used: usize,
    // A growth granted here that then fails (the OS or the pool refuses) stays counted:
    // wasmtime may report a failure without a matching grant, so taking one back could undercount.
    refused: bool,
}

impl Limiter {
    fn new(memory_bytes: usize) -> Limiter {
        Limiter {
            inner: StoreLimitsBuilder::new()
                .memory_size(memory_bytes)
                .instances(32)
                .tables(32)
                .memories(4)
                .build(),
            memory_total: memory_bytes,
            memory_used: 0,
            refused: false,
        }
    }
}

impl wasmtime::ResourceLimiter for Limiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // A new memory arrives with `current` 0 and its initial size as `desired`.
        let growth = desired.saturating_sub(current);
        let ok = self.inner.memory_growing(current, desired, maximum)?
            && self
                .memory_used
                .checked_add(growth)
                .is_some_and(|total| total <= self.memory_total);
        if ok {
            self.memory_used += growth;
        } else {
            self.refused = true;
        }
        Ok(ok)
    }
    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.inner.table_growing(current, desired, maximum)
    }
    fn instances(&self) -> usize {
        self.inner.instances()
    }
    fn tables(&self) -> usize {
        self.inner.tables()
    }
    fn memories(&self) -> usize {
        self.inner.memories()
    }
}

enum Pre {
    Action(bindings::action::ActionPre<State>),
    Macro(bindings::macros::MacroPre<State>),
    Connector(bindings::connector::ConnectorPre<State>),
}

/// Per-plugin call statistics.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Stats {
    pub calls: u64,
    pub errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
}

struct Recorder {
    calls: u64,
    errors: u64,
    hist: hdrhistogram::Histogram<u64>,
}

/// A loaded plugin, ready to be called. Cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<PluginInner>,
}

struct PluginInner {
    host: Host,
    manifest: Arc<Manifest>,
    sha256: String,
    pre: Pre,
    schemas: HashMap<String, (Option<jsonschema::Validator>, Option<jsonschema::Validator>)>,
    stats: Mutex<Recorder>,
    limits: EffectiveLimits,
    /// One permit per call running at once.
    running: Arc<tokio::sync::Semaphore>,
}

/// What an action asks the host to do.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Effect {
    PostMessage {
        text: String,
    },
    PostNote {
        text: String,
    },
    CreateRecord {
        kind: String,
        fields: serde_json::Value,
    },
    UpdateRecord {
        kind: String,
        id: String,
        fields: serde_json::Value,
    },
}

/// An action's result.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ActionOutcome {
    pub output: serde_json::Value,
    pub effects: Vec<Effect>,
}

/// A file in a connector message.
#[derive(Debug, Clone, PartialEq)]
pub struct FileRef {
    pub url: Option<String>,
    pub data: Option<Vec<u8>>,
    pub name: Option<String>,
    pub content_type: Option<String>,
}

/// A client message a connector parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct InboundMessage {
    pub external_id: String,
    pub sender_id: String,
    pub sender_name: Option<String>,
    pub sender_photo_url: Option<String>,
    pub text: String,
    pub files: Vec<FileRef>,
}

/// A provider's webhook call.
#[derive(Debug, Clone)]
pub struct InboundRequest {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The HTTP answer for the provider.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// An operator reply for a connector to deliver.
#[derive(Debug, Clone)]
pub struct OutboundMessage {
    pub recipient: String,
    pub text: String,
    pub files: Vec<FileRef>,
    pub message_id: String,
}

/// Key-value writes a call made, applied by the caller when it is safe (a poll's after its
/// messages are stored).
pub type KvWrites = Vec<(String, Option<Vec<u8>>)>;

fn compile_schema(s: &Option<serde_json::Value>) -> Option<jsonschema::Validator> {
    s.as_ref()
        .and_then(|s| jsonschema::draft202012::new(s).ok())
}

impl Plugin {
    fn new(
        host: Host,
        manifest: Manifest,
        component: Component,
        sha256: String,
    ) -> Result<Plugin, LoadError> {
        let (kind, linker) = match manifest.kind {
            Kind::Action => ("action", &host.inner.action_linker),
            Kind::Macro => ("macro", &host.inner.macro_linker),
            Kind::Connector => ("connector", &host.inner.connector_linker),
        };
        let world = |e: wasmtime::Error| LoadError::World {
            kind,
            detail: format!("{e:#}"),
        };
        let pre = linker.instantiate_pre(&component).map_err(world)?;
        let pre = match manifest.kind {
            Kind::Action => Pre::Action(bindings::action::ActionPre::new(pre).map_err(world)?),
            Kind::Macro => Pre::Macro(bindings::macros::MacroPre::new(pre).map_err(world)?),
            Kind::Connector => {
                Pre::Connector(bindings::connector::ConnectorPre::new(pre).map_err(world)?)
            }
        };
        let schemas = manifest
            .actions
            .iter()
            .map(|a| {
                (
                    a.id.clone(),
                    (
                        compile_schema(&a.input_schema),
                        compile_schema(&a.output_schema),
                    ),
                )
            })
            .collect();
        let limits = EffectiveLimits::of(&manifest, &host.inner.config);
        Ok(Plugin {
            inner: Arc::new(PluginInner {
                running: Arc::new(tokio::sync::Semaphore::new(limits.concurrency as usize)),
                limits,
                host,
                manifest: Arc::new(manifest),
                sha256,
                pre,
                schemas,
                stats: Mutex::new(Recorder {
                    calls: 0,
                    errors: 0,
                    hist: hdrhistogram::Histogram::new_with_bounds(1, 120_000_000, 2)
                        .expect("valid histogram bounds"),
                }),
            }),
        })
    }

    pub fn manifest(&self) -> &Manifest {
        &self.inner.manifest
    }

    pub fn sha256(&self) -> &str {
        &self.inner.sha256
    }

    pub fn stats(&self) -> Stats {
        let Ok(r) = self.inner.stats.lock() else {
            return Stats::default();
        };
        Stats {
            calls: r.calls,
            errors: r.errors,
            p50_us: r.hist.value_at_quantile(0.5),
            p99_us: r.hist.value_at_quantile(0.99),
        }
    }

    /// The limits this plugin's calls run under.
    pub fn limits(&self) -> &EffectiveLimits {
        &self.inner.limits
    }

    fn memory_mb(&self) -> u32 {
        self.inner.limits.memory_mb
    }

    fn timeout_ms(&self) -> u32 {
        self.inner.limits.timeout_ms
    }

    fn store(&self, call: &Call) -> (Store<State>, Arc<MemoryOutputPipe>) {
        let host = &self.inner.host.inner;
        let m = &self.inner.manifest;
        let stderr = Arc::new(MemoryOutputPipe::new(4096));
        let wasi = WasiCtx::builder()
            .stderr((*stderr).clone())
            .allow_blocking_current_thread(false)
            .build();
        let grant = self.http_grant(call);
        let mut store = Store::new(
            &host.engine,
            State {
                wasi,
                table: ResourceTable::new(),
                limits: Limiter::new(self.memory_mb() as usize * (1 << 20)),
                call: call.clone(),
                manifest: m.clone(),
                services: host.services.clone(),
                grant,
                http_used: 0,
                kv_writes: BTreeMap::new(),
                kv_refused: None,
                logs: 0,
            },
        );
        store.limiter(|s| &mut s.limits);
        // Every tick the callback either stops the call (its wall-clock deadline has passed) or
        // yields to the executor, so a loop never holds a runtime thread for more than a tick.
        let deadline = Instant::now() + Duration::from_millis(u64::from(self.timeout_ms()));
        store.epoch_deadline_callback(move |_| {
            if Instant::now() >= deadline {
                Ok(wasmtime::UpdateDeadline::Interrupt)
            } else {
                Ok(wasmtime::UpdateDeadline::YieldCustom(
                    1,
                    Box::pin(tokio::task::yield_now()),
                ))
            }
        });
        store.set_epoch_deadline(1);
        (store, stderr)
    }

    /// The manifest's origins (templates resolved from the settings) that the admin granted.
    fn http_grant(&self, call: &Call) -> http::Grant {
        let m = &self.inner.manifest;
        let cfg = &self.inner.host.inner.config;
        let Some(h) = &m.capabilities.http else {
            return http::Grant::none();
        };
        let resolve = |p: &String| {
            if let Some(key) = p.strip_prefix("{{").and_then(|p| p.strip_suffix("}}")) {
                let url = call.settings.values.get(key)?.as_str()?;
                http::Origin::of_url(url).ok()
            } else {
                http::Origin::parse(p).ok()
            }
        };
        let granted: Vec<&String> = h
            .allowed_hosts
            .iter()
            .filter(|p| call.settings.granted_hosts.iter().any(|g| g == *p))
            .collect();
        let origins = granted.iter().copied().filter_map(resolve).collect();
        let private = granted
            .iter()
            .copied()
            .filter(|p| {
                h.allow_private
                    && (call.settings.granted_private
                        || call.settings.granted_private_hosts.iter().any(|g| g == *p))
            })
            .filter_map(resolve)
            .collect();
        http::Grant {
            origins,
            private,
            max_requests: self.inner.limits.http_requests,
            max_response_bytes: cfg.max_response_bytes,
            timeout: Duration::from_millis(u64::from(self.timeout_ms())),
        }
    }

    /// Maps a wasmtime failure to what the caller is told.
    fn failure(
        &self,
        e: wasmtime::Error,
        store: &Store<State>,
        stderr: &MemoryOutputPipe,
    ) -> CallError {
        if store.data().limits.refused {
            return CallError::OutOfMemory {
                limit_mb: self.memory_mb(),
            };
        }
        match e.downcast_ref::<wasmtime::Trap>() {
            Some(wasmtime::Trap::Interrupt) => CallError::Timeout {
                limit_ms: self.timeout_ms(),
            },
            Some(wasmtime::Trap::StackOverflow) => CallError::Trap {
                detail: "stack overflow".into(),
            },
            // Rust and C compile to wasm with a shadow stack in linear memory that grows down
            // from a fixed address: unbounded recursion runs off its bottom, which wasmtime
            // reports as an out-of-bounds access at the end of a recursive call chain (the
            // captured backtrace, at most 20 frames, is the same one or two functions).
            Some(wasmtime::Trap::MemoryOutOfBounds)
                if e.downcast_ref::<wasmtime::WasmBacktrace>()
                    .is_some_and(recursive) =>
            {
                CallError::Trap {
                    detail: "stack overflow (recursion too deep)".into(),
                }
            }
            _ => {
                let text = format!("{e:#}");
                if text.contains("maximum concurrent") || text.contains("pooling allocator") {
                    return CallError::Busy;
                }
                let err = String::from_utf8_lossy(&stderr.contents())
                    .trim()
                    .to_owned();
                let panic = err
                    .lines()
                    .find_map(|l| l.split_once("panicked at ").map(|_| l))
                    .map(|_| err.lines().nth(1).unwrap_or("").to_owned())
                    .filter(|s| !s.is_empty());
                CallError::Trap {
                    detail: match panic {
                        Some(msg) => format!("panicked: {msg}"),
                        None => first_line(&text),
                    },
                }
            }
        }
    }

    fn record(&self, what: &'static str, started: Instant, result: Result<(), &CallError>) {
        let us = started.elapsed().as_micros() as u64;
        let id = self.inner.manifest.id.clone();
        metrics::counter!("ferrydesk_plugin_calls_total", "plugin" => id.clone(), "call" => what)
            .increment(1);
        metrics::histogram!("ferrydesk_plugin_call_seconds", "plugin" => id.clone(), "call" => what)
            .record(us as f64 / 1e6);
        if let Err(e) = result {
            metrics::counter!("ferrydesk_plugin_errors_total", "plugin" => id.clone(), "call" => what, "error" => e.code())
                .increment(1);
            tracing::info!(plugin = %id, call = what, error = %e, "plugin call failed");
        }
        if let Ok(mut r) = self.inner.stats.lock() {
            r.calls += 1;
            if result.is_err() {
                r.errors += 1;
            }
            let _ = r.hist.record(us.max(1));
        }
    }

    /// For the benchmark: a fresh store and instance, dropped without a call.
    #[doc(hidden)]
    pub async fn bench_instantiate(&self, call: &Call) -> wasmtime::Result<()> {
        let (mut store, _stderr) = self.store(call);
        match &self.inner.pre {
            Pre::Action(p) => p.instantiate_async(&mut store).await.map(drop),
            Pre::Macro(p) => p.instantiate_async(&mut store).await.map(drop),
            Pre::Connector(p) => p.instantiate_async(&mut store).await.map(drop),
        }
    }

    /// For the benchmark: a fresh store only.
    #[doc(hidden)]
    pub fn bench_store(&self, call: &Call) {
        drop(self.store(call));
    }

    /// Counts a failure found after a call that itself succeeded (output breaking its schema).
    fn note_error(&self, e: &CallError) {
        let id = self.inner.manifest.id.clone();
        metrics::counter!("ferrydesk_plugin_errors_total", "plugin" => id.clone(), "call" => "run", "error" => e.code())
            .increment(1);
        tracing::info!(plugin = %id, error = %e, "plugin call failed");
        if let Ok(mut r) = self.inner.stats.lock() {
            r.errors += 1;
        }
    }

    /// Runs `f` on a fresh instance under the plugin's limits.
    async fn invoke<T, F>(
        &self,
        what: &'static str,
        call: &Call,
        f: F,
    ) -> (Result<T, CallError>, KvWrites)
    where
        F: for<'a> FnOnce(
            &'a mut Store<State>,
            &'a Pre,
        ) -> BoxFuture<'a, wasmtime::Result<Result<T, CallError>>>,
    {
        let started = Instant::now();
        let _permits = match self.admit().await {
            Ok(p) => p,
            Err(e) => {
                self.record(what, started, Err(&e));
                return (Err(e), Vec::new());
            }
        };
        let (mut store, stderr) = self.store(call);
        let limit = Duration::from_millis(u64::from(self.timeout_ms()) + 100);
        let r = tokio::time::timeout(limit, f(&mut store, &self.inner.pre)).await;
        let result = match r {
            Err(_) => Err(CallError::Timeout {
                limit_ms: self.timeout_ms(),
            }),
            Ok(Err(e)) => Err(self.failure(e, &store, &stderr)),
            Ok(Ok(r)) => r,
        };
        let (result, writes) = match store.data_mut().kv_refused.take() {
            Some(detail) if result.is_ok() => (
                Err(CallError::LimitExceeded {
                    detail: format!("{detail}; nothing was applied"),
                }),
                Vec::new(),
            ),
            _ => (
                result,
                std::mem::take(&mut store.data_mut().kv_writes)
                    .into_iter()
                    .collect(),
            ),
        };
        self.record(what, started, result.as_ref().map(|_| ()));
        (result, writes)
    }

    /// Waits (a bounded time) for a concurrency slot of this plugin, then for the call's
    /// memory cap out of the node's budget.
    async fn admit(
        &self,
    ) -> Result<
        (
            tokio::sync::OwnedSemaphorePermit,
            tokio::sync::OwnedSemaphorePermit,
        ),
        CallError,
    > {
        let host = &self.inner.host.inner;
        let wait = host.config.admission_wait;
        let deadline = tokio::time::Instant::now() + wait;
        let id = &self.inner.manifest.id;
        let slot = match tokio::time::timeout_at(
            deadline,
            self.inner.running.clone().acquire_owned(),
        )
        .await
        {
            Ok(Ok(p)) => p,
            _ => {
                return Err(CallError::Overloaded {
                    detail: format!(
                        "plugin `{id}` is already running its limit of {} calls at once (waited {} ms); try again",
                        self.inner.limits.concurrency,
                        wait.as_millis()
                    ),
                });
            }
        };
        let mb = self.memory_mb();
        let memory = match tokio::time::timeout_at(
            deadline,
            host.memory.clone().acquire_many_owned(mb),
        )
        .await
        {
            Ok(Ok(p)) => p,
            _ => {
                return Err(CallError::Overloaded {
                    detail: format!(
                        "the plugins' memory budget of {} MiB is in use by other calls; this call needs {mb} MiB (waited {} ms); try again",
                        host.config.memory_budget_mb,
                        wait.as_millis()
                    ),
                });
            }
        };
        Ok((slot, memory))
    }

    async fn apply_kv(&self, call: &Call, writes: KvWrites) -> Result<(), CallError> {
        if writes.is_empty() {
            return Ok(());
        }
        let quota = KvQuota {
            bytes: self.inner.limits.kv_bytes,
            keys: self.inner.limits.kv_keys,
        };
        self.inner
            .host
            .inner
            .services
            .kv_apply(&call.kv_scope, writes, quota)
            .await
            .map_err(|e| match e {
                KvError::Quota { .. } => CallError::LimitExceeded {
                    detail: e.to_string(),
                },
                KvError::Storage(e) => CallError::Unavailable {
                    detail: format!("storing the plugin's data failed: {e}"),
                },
            })
    }

    fn check_output(&self, len: usize) -> Result<(), CallError> {
        let limit = self.inner.limits.output_bytes;
        if len > limit as usize {
            return Err(CallError::LimitExceeded {
                detail: format!(
                    "the plugin's output is {len} bytes; its limit is {limit} bytes (limits.output_bytes); nothing was applied"
                ),
            });
        }
        Ok(())
    }

    /// Runs action `action` with `input` (checked against its `input_schema`; the output
    /// against its `output_schema`).
    pub async fn run_action(
        &self,
        call: &Call,
        action: &str,
        input: &serde_json::Value,
    ) -> Result<ActionOutcome, CallError> {
        let Some((input_schema, output_schema)) = self.inner.schemas.get(action) else {
            return Err(CallError::InvalidInput {
                detail: format!(
                    "plugin `{}` has no action `{action}`",
                    self.inner.manifest.id
                ),
            });
        };
        if let Some(v) = input_schema {
            let problems: Vec<String> = v
                .iter_errors(input)
                .map(|e| format!("{}: {e}", pointer_or_root(&e.instance_path().to_string())))
                .collect();
            if !problems.is_empty() {
                return Err(CallError::InvalidInput {
                    detail: problems.join("; "),
                });
            }
        }
        let ctx = wit_ctx(&call.ctx);
        let input_text = input.to_string();
        let action_name = action.to_owned();
        let (r, writes) = self
            .invoke("run", call, |store, pre| {
                Box::pin(async move {
                    let Pre::Action(pre) = pre else {
                        return Ok(Err(CallError::Unavailable {
                            detail: "this plugin is not an action plugin".into(),
                        }));
                    };
                    let inst = pre.instantiate_async(&mut *store).await?;
                    let out = inst
                        .ferrydesk_plugin_action_handler()
                        .call_run(&mut *store, &ctx, &action_name, &input_text)
                        .await?;
                    Ok(out.map_err(plugin_error))
                })
            })
            .await;
        let out = r?;
        let checked = self.check_output(out.output.len()).and_then(|()| {
            let l = &self.inner.limits;
            if out.effects.len() > l.effects as usize {
                return Err(CallError::LimitExceeded {
                    detail: format!(
                        "the plugin returned {} effects; its limit is {} per call (limits.effects); nothing was applied",
                        out.effects.len(),
                        l.effects
                    ),
                });
            }
            use bindings::action::exports::ferrydesk::plugin::action_handler::Effect as W;
            let bytes: usize = out
                .effects
                .iter()
                .map(|e| match e {
                    W::PostMessage(t) | W::PostNote(t) => t.len(),
                    W::CreateRecord((k, f)) => k.len() + f.len(),
                    W::UpdateRecord((k, i, f)) => k.len() + i.len() + f.len(),
                })
                .sum();
            if bytes > l.effect_bytes as usize {
                return Err(CallError::LimitExceeded {
                    detail: format!(
                        "the plugin's effects are {bytes} bytes; its limit is {} bytes per call (limits.effect_bytes); nothing was applied",
                        l.effect_bytes
                    ),
                });
            }
            Ok(())
        });
        if let Err(e) = checked {
            self.note_error(&e);
            return Err(e);
        }
        let output: serde_json::Value =
            serde_json::from_str(&out.output).map_err(|e| CallError::InvalidOutput {
                detail: format!("output is not JSON: {e}"),
            })?;
        if let Some(v) = output_schema {
            let problems: Vec<String> = v
                .iter_errors(&output)
                .map(|e| format!("{}: {e}", pointer_or_root(&e.instance_path().to_string())))
                .collect();
            if !problems.is_empty() {
                let e = CallError::InvalidOutput {
                    detail: problems.join("; "),
                };
                self.note_error(&e);
                return Err(e);
            }
        }
        let mut effects = Vec::new();
        for e in out.effects {
            use bindings::action::exports::ferrydesk::plugin::action_handler::Effect as W;
            effects.push(match e {
                W::PostMessage(text) => Effect::PostMessage { text },
                W::PostNote(text) => Effect::PostNote { text },
                W::CreateRecord((kind, fields)) => Effect::CreateRecord {
                    kind,
                    fields: parse_fields(&fields)?,
                },
                W::UpdateRecord((kind, id, fields)) => Effect::UpdateRecord {
                    kind,
                    id,
                    fields: parse_fields(&fields)?,
                },
            });
        }
        self.apply_kv(call, writes).await?;
        Ok(ActionOutcome { output, effects })
    }

    /// Renders a template helper.
    pub async fn render(
        &self,
        call: &Call,
        helper: &str,
        params: &[serde_json::Value],
        hash: &serde_json::Value,
        context: &serde_json::Value,
    ) -> Result<String, CallError> {
        let ctx = wit_ctx(&call.ctx);
        let helper = helper.to_owned();
        let params: Vec<String> = params.iter().map(|p| p.to_string()).collect();
        let hash = hash.to_string();
        let context = context.to_string();
        let (r, _) = self
            .invoke("render", call, |store, pre| {
                Box::pin(async move {
                    let Pre::Macro(pre) = pre else {
                        return Ok(Err(CallError::Unavailable {
                            detail: "this plugin is not a macro plugin".into(),
                        }));
                    };
                    let inst = pre.instantiate_async(&mut *store).await?;
                    let out = inst
                        .ferrydesk_plugin_helper_handler()
                        .call_render(&mut *store, &ctx, &helper, &params, &hash, &context)
                        .await?;
                    Ok(out.map_err(plugin_error))
                })
            })
            .await;
        let text = r?;
        if let Err(e) = self.check_output(text.len()) {
            self.note_error(&e);
            return Err(e);
        }
        Ok(text)
    }

    /// Registers the webhook or checks credentials.
    pub async fn connector_setup(&self, call: &Call) -> Result<(), CallError> {
        let ctx = wit_ctx(&call.ctx);
        let (r, writes) = self
            .invoke("setup", call, |store, pre| {
                Box::pin(async move {
                    let inst = connector(pre)?.instantiate_async(&mut *store).await?;
                    let out = inst
                        .ferrydesk_plugin_connector_handler()
                        .call_setup(&mut *store, &ctx)
                        .await?;
                    Ok(out.map_err(plugin_error))
                })
            })
            .await;
        r?;
        self.apply_kv(call, writes).await
    }

    /// Parses a webhook call (the caller has verified it). Key-value writes are returned for the
    /// caller to apply once the messages are stored.
    pub async fn connector_inbound(
        &self,
        call: &Call,
        req: InboundRequest,
    ) -> (
        Result<(Vec<InboundMessage>, HttpReply), CallError>,
        KvWrites,
    ) {
        use bindings::connector::exports::ferrydesk::plugin::connector_handler as w;
        let ctx = wit_ctx(&call.ctx);
        let req = w::InboundRequest {
            method: req.method,
            path: req.path,
            query: req.query,
            headers: req.headers,
            body: req.body,
        };
        let (r, writes) = self
            .invoke("inbound", call, |store, pre| {
                Box::pin(async move {
                    let inst = connector(pre)?.instantiate_async(&mut *store).await?;
                    let out = inst
                        .ferrydesk_plugin_connector_handler()
                        .call_inbound(&mut *store, &ctx, &req)
                        .await?;
                    Ok(out.map_err(plugin_error))
                })
            })
            .await;
        let r = r.map(|p| {
            (
                p.messages
                    .into_iter()
                    .map(from_wit_message)
                    .collect::<Vec<_>>(),
                HttpReply {
                    status: p.reply.status,
                    headers: p.reply.headers,
                    body: p.reply.body,
                },
            )
        });
        let checked = match &r {
            Ok((messages, reply)) => {
                let reply_len = reply.body.len()
                    + reply
                        .headers
                        .iter()
                        .map(|(k, v)| k.len() + v.len())
                        .sum::<usize>();
                self.check_output(reply_len)
                    .and_then(|()| self.check_messages(messages))
            }
            Err(_) => Ok(()),
        };
        if let Err(e) = checked {
            self.note_error(&e);
            return (Err(e), Vec::new());
        }
        (r, writes)
    }

    /// Bounds what one connector call hands to the host to ingest: messages at most
    /// `limits.effects`, their bytes (text, inline file data and every other field) at most
    /// `limits.effect_bytes`, and files or sender photos to download at most
    /// `min(limits.effects, HostConfig::max_downloads)`.
    fn check_messages(&self, messages: &[InboundMessage]) -> Result<(), CallError> {
        let l = &self.inner.limits;
        if messages.len() > l.effects as usize {
            return Err(CallError::LimitExceeded {
                detail: format!(
                    "the connector returned {} messages; its limit is {} per call (limits.effects); nothing was ingested",
                    messages.len(),
                    l.effects
                ),
            });
        }
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        let bytes: usize = messages
            .iter()
            .map(|m| {
                m.external_id.len()
                    + m.sender_id.len()
                    + opt(&m.sender_name)
                    + opt(&m.sender_photo_url)
                    + m.text.len()
                    + m.files
                        .iter()
                        .map(|f| {
                            f.data.as_ref().map_or(0, Vec::len)
                                + opt(&f.url)
                                + opt(&f.name)
                                + opt(&f.content_type)
                        })
                        .sum::<usize>()
            })
            .sum();
        if bytes > l.effect_bytes as usize {
            return Err(CallError::LimitExceeded {
                detail: format!(
                    "the connector's messages are {bytes} bytes; its limit is {} bytes per call (limits.effect_bytes); nothing was ingested",
                    l.effect_bytes
                ),
            });
        }
        let downloads = messages
            .iter()
            .map(|m| {
                usize::from(m.sender_photo_url.is_some())
                    + m.files
                        .iter()
                        .filter(|f| f.data.is_none() && f.url.is_some())
                        .count()
            })
            .sum::<usize>();
        let max = self.max_downloads();
        if downloads > max as usize {
            return Err(CallError::LimitExceeded {
                detail: format!(
                    "the connector asked for {downloads} file and photo downloads; the limit is {max} per call (limits.effects, at most {}); nothing was ingested",
                    self.inner.host.inner.config.max_downloads
                ),
            });
        }
        Ok(())
    }

    /// Files and sender photos one connector call may have the host download.
    pub fn max_downloads(&self) -> u32 {
        self.inner
            .limits
            .effects
            .min(self.inner.host.inner.config.max_downloads)
    }

    /// Delivers an operator reply; returns the provider's message id.
    pub async fn connector_send(
        &self,
        call: &Call,
        msg: OutboundMessage,
    ) -> Result<String, CallError> {
        use bindings::connector::exports::ferrydesk::plugin::connector_handler as w;
        let ctx = wit_ctx(&call.ctx);
        let msg = w::OutboundMessage {
            recipient: msg.recipient,
            text: msg.text,
            files: msg.files.into_iter().map(to_wit_file).collect(),
            message_id: msg.message_id,
        };
        let (r, writes) = self
            .invoke("send", call, |store, pre| {
                Box::pin(async move {
                    let inst = connector(pre)?.instantiate_async(&mut *store).await?;
                    let out = inst
                        .ferrydesk_plugin_connector_handler()
                        .call_send(&mut *store, &ctx, &msg)
                        .await?;
                    Ok(out.map_err(plugin_error))
                })
            })
            .await;
        let id = r?;
        self.apply_kv(call, writes).await?;
        Ok(id)
    }

    /// Fetches new messages. Key-value writes (the plugin's offset) are returned for the
    /// caller to apply after the messages are stored.
    pub async fn connector_poll(
        &self,
        call: &Call,
    ) -> (Result<Vec<InboundMessage>, CallError>, KvWrites) {
        let ctx = wit_ctx(&call.ctx);
        let (r, writes) = self
            .invoke("poll", call, |store, pre| {
                Box::pin(async move {
                    let inst = connector(pre)?.instantiate_async(&mut *store).await?;
                    let out = inst
                        .ferrydesk_plugin_connector_handler()
                        .call_poll(&mut *store, &ctx)
                        .await?;
                    Ok(out.map_err(plugin_error))
                })
            })
            .await;
        let r = r.map(|m| m.into_iter().map(from_wit_message).collect::<Vec<_>>());
        if let Err(e) = r.as_ref().map_or(Ok(()), |m| self.check_messages(m)) {
            self.note_error(&e);
            return (Err(e), Vec::new());
        }
        (r, writes)
    }

    /// Downloads a file a connector referenced by URL, under the plugin's own HTTP grant (so a
    /// plugin cannot make the host fetch what it could not fetch itself). Returns the bytes and
    /// the content type; errors never contain the URL (it may carry a token).
    pub async fn download(
        &self,
        call: &Call,
        url: &str,
        max_bytes: usize,
    ) -> Result<(Vec<u8>, Option<String>), String> {
        let mut grant = self.http_grant(call);
        grant.max_requests = 6;
        grant.max_response_bytes = max_bytes;
        grant.timeout = Duration::from_secs(60);
        let mut used = 0;
        let r = http::fetch(
            &grant,
            &mut used,
            http::Request {
                method: "GET".into(),
                url: url.to_owned(),
                headers: Vec::new(),
                body: None,
            },
        )
        .await
        .map_err(|e| match e {
            http::FetchError::Denied(why) => http::redact(&why),
            http::FetchError::Timeout => "timed out".into(),
            http::FetchError::TooLarge => format!("larger than {max_bytes} bytes"),
            http::FetchError::Transport(why) => http::redact(&why),
        })?;
        if !(200..300).contains(&r.status) {
            return Err(format!("the provider answered {}", r.status));
        }
        let ctype = r
            .headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.clone());
        Ok((r.body, ctype))
    }

    /// Applies key-value writes returned by [`Plugin::connector_poll`] or
    /// [`Plugin::connector_inbound`].
    pub async fn commit_kv(&self, call: &Call, writes: KvWrites) -> Result<(), CallError> {
        self.apply_kv(call, writes).await
    }
}

fn connector(pre: &Pre) -> wasmtime::Result<&bindings::connector::ConnectorPre<State>> {
    match pre {
        Pre::Connector(p) => Ok(p),
        _ => Err(wasmtime::Error::msg(
            "this plugin is not a connector plugin",
        )),
    }
}

fn parse_fields(text: &str) -> Result<serde_json::Value, CallError> {
    serde_json::from_str(text).map_err(|e| CallError::InvalidOutput {
        detail: format!("record fields are not JSON: {e}"),
    })
}

fn pointer_or_root(p: &str) -> &str {
    if p.is_empty() { "/" } else { p }
}

/// Whether a backtrace is a deep recursion: many frames of at most two functions.
fn recursive(b: &wasmtime::WasmBacktrace) -> bool {
    let frames = b.frames();
    let mut funcs: Vec<u32> = frames.iter().map(|f| f.func_index()).collect();
    funcs.sort_unstable();
    funcs.dedup();
    frames.len() >= 16 && funcs.len() <= 2
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(300).collect()
}

fn wit_ctx(c: &CallContext) -> bindings::types::CallContext {
    bindings::types::CallContext {
        installation: c.installation.clone(),
        actor: c.actor.clone(),
        chat: c.chat.clone(),
        contact: c.contact.clone(),
        locale: c.locale.clone(),
        trace_id: c.trace_id.clone(),
    }
}

fn plugin_error(e: bindings::types::PluginError) -> CallError {
    CallError::Plugin {
        code: e.code,
        message: e.message,
        retryable: e.retryable,
    }
}

fn from_wit_message(
    m: bindings::connector::exports::ferrydesk::plugin::connector_handler::InboundMessage,
) -> InboundMessage {
    InboundMessage {
        external_id: m.external_id,
        sender_id: m.sender.id,
        sender_name: m.sender.name,
        sender_photo_url: m.sender.photo_url,
        text: m.text,
        files: m
            .files
            .into_iter()
            .map(|f| FileRef {
                url: f.url,
                data: f.data,
                name: f.name,
                content_type: f.content_type,
            })
            .collect(),
    }
}

fn to_wit_file(
    f: FileRef,
) -> bindings::connector::exports::ferrydesk::plugin::connector_handler::FileRef {
    bindings::connector::exports::ferrydesk::plugin::connector_handler::FileRef {
        url: f.url,
        data: f.data,
        name: f.name,
        content_type: f.content_type,
    }
}

// ---- host imports ----------------------------------------------------------------------------

impl bindings::types::Host for State {}

impl bindings::log::Host for State {
    async fn log(&mut self, level: bindings::log::Level, message: String) {
        use bindings::log::Level;
        // A plugin cannot flood the log: 100 lines per call, 1 KiB each.
        self.logs += 1;
        if self.logs > 100 {
            return;
        }
        let mut message: String = message.chars().take(1024).collect();
        for key in self.manifest.secret_keys() {
            if let Some(v) = self.call.settings.values.get(&key).and_then(|v| v.as_str())
                && v.len() >= 4
            {
                message = message.replace(v, "***");
            }
        }
        let message = http::redact(&message);
        let plugin = &self.manifest.id;
        match level {
            Level::Trace | Level::Debug => tracing::debug!(%plugin, "{message}"),
            Level::Info => tracing::info!(%plugin, "{message}"),
            Level::Warn => tracing::warn!(%plugin, "{message}"),
            Level::Error => tracing::error!(%plugin, "{message}"),
        }
    }
}

fn config_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

impl bindings::config::Host for State {
    async fn get(&mut self, key: String) -> Option<String> {
        if self.manifest.is_secret(&key) {
            return None;
        }
        self.call.settings.values.get(&key).map(config_text)
    }
    async fn secret(&mut self, key: String) -> Option<String> {
        if !self.manifest.is_secret(&key) {
            return None;
        }
        self.call.settings.values.get(&key).map(config_text)
    }
}

const KV_MAX_KEY: usize = 256;
const KV_MAX_VALUE: usize = 64 << 10;
const KV_MAX_WRITES: usize = 256;

impl bindings::kv::Host for State {
    async fn get(&mut self, key: String) -> Option<Vec<u8>> {
        if !self.manifest.capabilities.kv {
            return None;
        }
        if let Some(v) = self.kv_writes.get(&key) {
            return v.clone();
        }
        self.services
            .kv_get(&self.call.kv_scope, &key)
            .await
            .ok()
            .flatten()
    }
    async fn set(&mut self, key: String, value: Vec<u8>) -> Result<(), String> {
        if !self.manifest.capabilities.kv {
            return Err("the manifest does not declare `capabilities.kv`".into());
        }
        if key.len() > KV_MAX_KEY || value.len() > KV_MAX_VALUE {
            return Err(format!(
                "keys up to {KV_MAX_KEY} bytes, values up to {KV_MAX_VALUE} bytes"
            ));
        }
        if self.kv_writes.len() >= KV_MAX_WRITES && !self.kv_writes.contains_key(&key) {
            return Err(format!("at most {KV_MAX_WRITES} keys written per call"));
        }
        self.kv_writes.insert(key, Some(value));
        Ok(())
    }
    /// A key longer than `set` accepts cannot exist, so deleting it does nothing. Deleting more
    /// than [`KV_MAX_WRITES`] keys in one call fails the call (`delete` cannot return an error).
    async fn delete(&mut self, key: String) {
        if !self.manifest.capabilities.kv || key.len() > KV_MAX_KEY {
            return;
        }
        if self.kv_writes.len() >= KV_MAX_WRITES && !self.kv_writes.contains_key(&key) {
            self.kv_refused.get_or_insert_with(|| {
                format!(
                    "the plugin wrote or deleted more than {KV_MAX_WRITES} keys in one call (the most per call)"
                )
            });
            return;
        }
        self.kv_writes.insert(key, None);
    }
}

impl bindings::http::Host for State {
    async fn fetch(
        &mut self,
        req: bindings::http::Request,
    ) -> Result<bindings::http::Response, bindings::http::HttpError> {
        use bindings::http::HttpError;
        let request = http::Request {
            method: req.method,
            url: req.url,
            headers: req.headers,
            body: req.body,
        };
        if self.manifest.capabilities.http.is_none() {
            return Err(HttpError::Denied(
                "the manifest does not declare `capabilities.http`".into(),
            ));
        }
        let r = match self.call.settings.http_mock.0.clone() {
            Some(mock) => http::check_mocked(&self.grant, &mut self.http_used, &request)
                .map(|()| mock(&request)),
            None => http::fetch(&self.grant, &mut self.http_used, request).await,
        };
        match r {
            Ok(r) => Ok(bindings::http::Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
            Err(e) => {
                tracing::info!(plugin = %self.manifest.id, error = ?e, "plugin HTTP request refused or failed");
                Err(match e {
                    http::FetchError::Denied(why) => HttpError::Denied(why),
                    http::FetchError::Timeout => HttpError::Timeout,
                    http::FetchError::TooLarge => HttpError::TooLarge,
                    http::FetchError::Transport(why) => HttpError::Transport(why),
                })
            }
        }
    }
}

impl bindings::records::Host for State {
    async fn get(&mut self, kind: String, id: String) -> Result<Option<String>, String> {
        let declared = self
            .manifest
            .capabilities
            .records
            .read
            .iter()
            .any(|k| format!("{k:?}").eq_ignore_ascii_case(&kind));
        if !declared {
            return Err(format!(
                "the manifest does not declare read access to `{kind}` records"
            ));
        }
        self.services
            .read_record(&kind, &id, &self.call.ctx)
            .await
            .map(|r| r.map(|v| v.to_string()))
    }
}

/// Checks a webhook call the way the manifest asks (`header_secret` or `hmac_sha256` of the
/// raw body), in constant time. `secret` is the configured value.
pub fn verify_webhook(
    manifest: &Manifest,
    secret: Option<&str>,
    headers: &[(String, String)],
    body: &[u8],
) -> Result<(), String> {
    let Some(hook) = manifest.connector.as_ref().and_then(|c| c.webhook.as_ref()) else {
        return Ok(());
    };
    if hook.verify == "none" {
        return Ok(());
    }
    let secret = secret.ok_or("the channel's webhook secret is not configured")?;
    let name = hook
        .header
        .as_deref()
        .unwrap_or(match hook.verify.as_str() {
            "hmac_sha256" => "x-ferrydesk-signature",
            _ => "x-webhook-secret",
        });
    let got = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .ok_or_else(|| format!("header `{name}` is missing"))?;
    let expected = match hook.verify.as_str() {
        "hmac_sha256" => {
            use hmac::Mac;
            let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes())
                .map_err(|e| e.to_string())?;
            mac.update(body);
            format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
        }
        _ => secret.to_owned(),
    };
    // Compare digests of both so the comparison time does not depend on where they differ.
    let a = sha2::Sha256::digest(got.trim().as_bytes());
    let b = sha2::Sha256::digest(expected.as_bytes());
    if a.iter()
        .zip(b.iter())
        .fold(0u8, |acc, (x, y)| acc | (x ^ y))
        == 0
    {
        Ok(())
    } else {
        Err(format!("header `{name}` does not match"))
    }
}

/// The error for writes that would take a scope past its key-value quota.
pub fn kv_quota_message(quota: KvQuota, keys: u64, bytes: u64) -> String {
    KvError::Quota { quota, keys, bytes }.to_string()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use wasmtime::ResourceLimiter;

    const MIB: usize = 1 << 20;
    const PAGE: usize = 64 << 10;

    /// A component that instantiates a core module with one memory of `pages` pages `n`
    /// times: `n` linear memories in one store.
    fn memories(n: u32, pages: u64) -> Vec<u8> {
        use wasm_encoder::{
            Component, InstanceSection, MemorySection, MemoryType, Module, ModuleArg, ModuleSection,
        };
        let mut mems = MemorySection::new();
        mems.memory(MemoryType {
            minimum: pages,
            maximum: None,
            memory64: false,
            shared: false,
            page_size_log2: None,
        });
        let mut core = Module::new();
        core.section(&mems);
        let mut instances = InstanceSection::new();
        for _ in 0..n {
            instances.instantiate(0, std::iter::empty::<(&str, ModuleArg)>());
        }
        let mut c = Component::new();
        c.section(&ModuleSection(&core));
        c.section(&instances);
        c.finish()
    }

    fn instantiate<T: ResourceLimiter + 'static>(limiter: T, wasm: &[u8]) -> (bool, T) {
        let engine = Engine::default();
        let component = Component::new(&engine, wasm).unwrap();
        let mut store = Store::new(&engine, limiter);
        store.limiter(|l| l);
        let ok = Linker::<T>::new(&engine)
            .instantiate(&mut store, &component)
            .is_ok();
        (ok, store.into_data())
    }

    /// The memory cap is for all of a call's memories together: two memories of 640 KiB do
    /// not fit a 1 MiB cap, although each would (wasmtime's `StoreLimits` alone lets them).
    #[test]
    fn the_memory_cap_is_the_sum_over_all_memories() {
        let two = memories(2, 10);
        let (ok, _) = instantiate(
            StoreLimitsBuilder::new()
                .memory_size(MIB)
                .memories(4)
                .build(),
            &two,
        );
        assert!(ok, "StoreLimits caps each memory on its own");

        let (ok, l) = instantiate(Limiter::new(MIB), &two);
        assert!(!ok, "two memories of 640 KiB fit a 1 MiB cap");
        assert!(l.refused);
        let (ok, l) = instantiate(Limiter::new(MIB), &memories(1, 10));
        assert!(ok);
        assert!(!l.refused);
        assert_eq!(l.memory_used, 10 * PAGE);
        let (ok, l) = instantiate(Limiter::new(2 * MIB), &memories(3, 10));
        assert!(ok);
        assert_eq!(l.memory_used, 30 * PAGE);
        let (ok, _) = instantiate(Limiter::new(2 * MIB), &memories(4, 10));
        assert!(!ok, "four memories of 640 KiB fit a 2 MiB cap");
    }

    /// Growth of any memory counts against the one total; a refused growth is remembered.
    #[test]
    fn the_limiter_counts_growth_across_memories() {
        let mut l = Limiter::new(4 * MIB);
        assert!(l.memory_growing(0, MIB, None).unwrap()); // memory A created
        assert!(l.memory_growing(0, MIB, None).unwrap()); // memory B created
        assert!(l.memory_growing(MIB, 2 * MIB, None).unwrap()); // A grows
        assert_eq!(l.memory_used, 3 * MIB);
        assert!(!l.refused);
        assert!(!l.memory_growing(MIB, 3 * MIB, None).unwrap()); // B: 5 MiB in all
        assert!(l.refused);
        assert!(l.memory_growing(MIB, 2 * MIB, None).unwrap()); // B: exactly 4 MiB
        assert!(!l.memory_growing(2 * MIB, 2 * MIB + PAGE, None).unwrap());
        assert!(!l.memory_growing(0, usize::MAX, None).unwrap()); // no overflow
        assert_eq!(l.memory_used, 4 * MIB);
    }

    fn manifest_with(limits: serde_json::Value) -> Result<Manifest, String> {
        let m = serde_json::json!({
            "id": "x", "name": "X", "version": "0.1.0", "api_version": "0.1", "kind": "action",
            "component": {"path": "plugin.wasm"}, "actions": [{"id": "a", "title": "A"}],
            "limits": limits
        });
        manifest::parse(&m.to_string()).map_err(|e| format!("{e:?}"))
    }

    /// A manifest asking for more than the schema allows is refused at install, naming the
    /// field; within the schema but above the host's maxima it runs under the maxima.
    #[test]
    fn manifest_limits_are_refused_or_clamped_to_the_host_maxima() {
        for (field, value) in [("timeout_ms", 60_001u64), ("memory_mb", 513)] {
            let e = manifest_with(serde_json::json!({ field: value })).unwrap_err();
            assert!(e.contains(&format!("/limits/{field}")), "{e}");
        }
        let cfg = HostConfig::new("/nonexistent");
        let mut m = manifest_with(serde_json::json!({
            "timeout_ms": 60_000, "memory_mb": 512, "http_requests": 100, "concurrency": 64,
            "output_bytes": 16 << 20, "effects": 10_000, "effect_bytes": 16 << 20,
            "kv_bytes": 256 << 20, "kv_keys": 1_000_000
        }))
        .unwrap();
        let max = EffectiveLimits {
            memory_mb: 512,
            timeout_ms: 60_000,
            http_requests: 100,
            concurrency: 16,
            output_bytes: 8 << 20,
            effects: 1000,
            effect_bytes: 8 << 20,
            kv_bytes: 64 << 20,
            kv_keys: 100_000,
        };
        assert_eq!(EffectiveLimits::of(&m, &cfg), max);
        // A manifest that skipped the schema (the host does not rely on it) is clamped too.
        m.limits.timeout_ms = Some(u32::MAX);
        m.limits.memory_mb = Some(u32::MAX);
        m.limits.http_requests = Some(u32::MAX);
        assert_eq!(EffectiveLimits::of(&m, &cfg), max);
        m.limits.timeout_ms = Some(0);
        m.limits.memory_mb = Some(0);
        let l = EffectiveLimits::of(&m, &cfg);
        assert_eq!((l.timeout_ms, l.memory_mb), (1, 1));
        let l = EffectiveLimits::of(&manifest_with(serde_json::json!({})).unwrap(), &cfg);
        assert_eq!((l.timeout_ms, l.memory_mb, l.http_requests), (5000, 32, 5));
        // Never more memory than the node budget either.
        let mut small = HostConfig::new("/nonexistent");
        small.memory_budget_mb = 100;
        assert_eq!(EffectiveLimits::of(&m, &small).memory_mb, 1);
        m.limits.memory_mb = Some(512);
        assert_eq!(EffectiveLimits::of(&m, &small).memory_mb, 100);
    }
}
