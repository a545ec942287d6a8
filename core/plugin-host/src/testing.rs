//! Running a built plugin inside the real host from `cargo test`: in-memory services, settings
//! and a loader for a plugin directory.
//!
//! ```ignore
//! let host = TestHost::new()?;
//! let plugin = host.load_dir("plugins/greeting").await?;
//! let out = plugin.render(&host.call(), "greeting", &[], &json!({}), &json!({})).await?;
//! ```

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;

use crate::{Call, CallContext, Host, HostConfig, Plugin, Services, Settings};

/// Services kept in memory: a key-value store and records the test puts in.
#[derive(Default)]
pub struct MemoryServices {
    pub kv: Mutex<HashMap<(String, String), Vec<u8>>>,
    pub records: Mutex<HashMap<(String, String), serde_json::Value>>,
}

impl Services for MemoryServices {
    fn kv_get(&self, scope: &str, key: &str) -> BoxFuture<'_, Result<Option<Vec<u8>>, String>> {
        let v = self
            .kv
            .lock()
            .map_err(|e| e.to_string())
            .map(|m| m.get(&(scope.to_owned(), key.to_owned())).cloned());
        Box::pin(async move { v })
    }
    fn kv_apply(
        &self,
        scope: &str,
        writes: Vec<(String, Option<Vec<u8>>)>,
        quota: crate::KvQuota,
    ) -> BoxFuture<'_, Result<(), crate::KvError>> {
        let r = self
            .kv
            .lock()
            .map_err(|e| crate::KvError::Storage(e.to_string()))
            .and_then(|mut m| {
                let mut next = m.clone();
                for (k, v) in writes {
                    match v {
                        Some(v) => next.insert((scope.to_owned(), k), v),
                        None => next.remove(&(scope.to_owned(), k)),
                    };
                }
                let (keys, bytes) = next
                    .iter()
                    .filter(|((s, _), _)| s == scope)
                    .fold((0u64, 0u64), |(n, b), ((_, k), v)| {
                        (n + 1, b + (k.len() + v.len()) as u64)
                    });
                if keys > quota.keys || bytes > quota.bytes {
                    return Err(crate::KvError::Quota { quota, keys, bytes });
                }
                *m = next;
                Ok(())
            });
        Box::pin(async move { r })
    }
    fn read_record(
        &self,
        kind: &str,
        id: &str,
        _ctx: &CallContext,
    ) -> BoxFuture<'_, Result<Option<serde_json::Value>, String>> {
        let v = self
            .records
            .lock()
            .map_err(|e| e.to_string())
            .map(|m| m.get(&(kind.to_owned(), id.to_owned())).cloned());
        Box::pin(async move { v })
    }
}

/// Answers a plugin's outbound requests from `respond` and records them (the grant is still
/// checked): `TestHost::mock_http(&mut call, |req| …)`.
pub fn mock_http(
    call: &mut Call,
    respond: impl Fn(&crate::http::Request) -> crate::http::Response + Send + Sync + 'static,
) -> Arc<Mutex<Vec<crate::http::Request>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let mut settings = (*call.settings).clone();
    settings.http_mock = crate::HttpMock(Some(Arc::new(move |req: &crate::http::Request| {
        if let Ok(mut l) = log.lock() {
            l.push(req.clone());
        }
        respond(req)
    })));
    call.settings = Arc::new(settings);
    seen
}

/// A host with in-memory services and a temporary compile cache.
pub struct TestHost {
    pub host: Host,
    pub services: Arc<MemoryServices>,
    _cache: TempDir,
}

struct TempDir(std::path::PathBuf);
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

impl TestHost {
    pub fn new() -> anyhow::Result<TestHost> {
        Self::with_config(|_| {})
    }

    /// A host whose [`HostConfig`] `adjust` changes first.
    pub fn with_config(adjust: impl FnOnce(&mut HostConfig)) -> anyhow::Result<TestHost> {
        let dir = std::env::temp_dir().join(format!(
            "ferrydesk-plugin-test-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0)
        ));
        let services = Arc::new(MemoryServices::default());
        let mut config = HostConfig::new(&dir);
        adjust(&mut config);
        let host = Host::new(config, services.clone())?;
        Ok(TestHost {
            host,
            services,
            _cache: TempDir(dir),
        })
    }

    /// Loads `dir/plugin.json` and the component it names.
    pub async fn load_dir(&self, dir: impl AsRef<Path>) -> anyhow::Result<Plugin> {
        let dir = dir.as_ref();
        let text = std::fs::read_to_string(dir.join("plugin.json"))?;
        let manifest = crate::manifest::parse(&text)?;
        let wasm = std::fs::read(dir.join(&manifest.component.path))?;
        Ok(self.host.load(manifest, &wasm).await?)
    }

    /// Loads `dir`'s component under its manifest changed by `patch` (a JSON merge of the
    /// top-level fields), e.g. another id or other limits for the same component.
    pub async fn load_dir_patched(
        &self,
        dir: impl AsRef<Path>,
        patch: serde_json::Value,
    ) -> anyhow::Result<Plugin> {
        let dir = dir.as_ref();
        let mut v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(dir.join("plugin.json"))?)?;
        if let (Some(o), Some(p)) = (v.as_object_mut(), patch.as_object()) {
            for (k, val) in p {
                o.insert(k.clone(), val.clone());
            }
        }
        let manifest = crate::manifest::parse(&v.to_string())?;
        let wasm = std::fs::read(dir.join(&manifest.component.path))?;
        Ok(self.host.load(manifest, &wasm).await?)
    }

    /// A call with `settings` (every manifest origin granted if `grant_all`).
    pub fn call_with(
        &self,
        plugin: &Plugin,
        values: serde_json::Value,
        grant_private: bool,
    ) -> Call {
        let granted_hosts = plugin
            .manifest()
            .capabilities
            .http
            .as_ref()
            .map(|h| h.allowed_hosts.clone())
            .unwrap_or_default();
        Call {
            ctx: CallContext {
                installation: plugin.manifest().id.clone(),
                locale: "en".into(),
                trace_id: "test".into(),
                ..CallContext::default()
            },
            settings: Arc::new(Settings {
                values: values.as_object().cloned().unwrap_or_default(),
                granted_hosts,
                granted_private: grant_private,
                granted_private_hosts: Vec::new(),
                http_mock: crate::HttpMock::default(),
            }),
            kv_scope: plugin.manifest().id.clone(),
        }
    }
}
