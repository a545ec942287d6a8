//! Macro plugins' helpers as handlebars helpers. Handlebars renders synchronously, so a helper
//! runs the plugin call on the current runtime thread with `block_in_place` (a fresh instance
//! per render costs tens of microseconds; see docs/benchmarks.md).

use std::sync::Weak;

use ferrydesk_plugin_host::{Call, CallContext};
use handlebars::{
    Context, Helper, HelperDef, RenderContext, RenderError, RenderErrorReason, ScopedJson,
};

use crate::{Entry, Inner, Plugins};

struct PluginHelper {
    runtime: Weak<Inner>,
    plugin: String,
    helper: String,
}

impl HelperDef for PluginHelper {
    fn call_inner<'reg: 'rc, 'rc>(
        &self,
        h: &Helper<'rc>,
        _: &'reg handlebars::Handlebars<'reg>,
        ctx: &'rc Context,
        _: &mut RenderContext<'reg, 'rc>,
    ) -> Result<ScopedJson<'rc>, RenderError> {
        let fail = |msg: String| RenderError::from(RenderErrorReason::Other(msg));
        // A render's time limit covers its plugin calls: none starts after it, none outlasts it.
        ferrydesk_desk::templates::check_render_deadline()?;
        let time_left = ferrydesk_desk::templates::render_time_left()
            .unwrap_or(ferrydesk_desk::templates::RENDER_TIME_LIMIT);
        let inner = self
            .runtime
            .upgrade()
            .ok_or_else(|| fail("the plugin runtime stopped".into()))?;
        let plugins = Plugins { inner };
        let entry = plugins
            .entry(&self.plugin)
            .ok_or_else(|| fail(format!("plugin `{}` is not installed", self.plugin)))?;
        let plugin = entry
            .runnable()
            .cloned()
            .ok_or_else(|| fail(format!("plugin `{}` is disabled", self.plugin)))?;
        let params: Vec<serde_json::Value> = h.params().iter().map(|p| p.value().clone()).collect();
        let hash = serde_json::Value::Object(
            h.hash()
                .iter()
                .map(|(k, v)| ((*k).to_owned(), v.value().clone()))
                .collect(),
        );
        let data = ctx.data().clone();
        let call = Call {
            ctx: CallContext {
                installation: self.plugin.clone(),
                actor: data
                    .pointer("/operator/id")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned),
                chat: data
                    .pointer("/chat/id")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned),
                contact: data
                    .pointer("/contact/id")
                    .and_then(|v| v.as_str())
                    .map(str::to_owned),
                locale: data
                    .pointer("/operator/locale")
                    .and_then(|v| v.as_str())
                    .unwrap_or("en")
                    .to_owned(),
                trace_id: String::new(),
            },
            settings: entry.settings_for(entry.settings.clone()),
            kv_scope: format!("plugin:{}", self.plugin),
        };
        let helper = self.helper.clone();
        let rt = tokio::runtime::Handle::try_current()
            .map_err(|_| fail("plugin helpers render inside the server's runtime".into()))?;
        let out = tokio::task::block_in_place(|| {
            rt.block_on(tokio::time::timeout(
                time_left,
                plugin.render(&call, &helper, &params, &hash, &data),
            ))
        })
        .map_err(|_| {
            fail(format!(
                "{{{{{}}}}} (plugin `{}`): the template's render time ran out",
                self.helper, self.plugin
            ))
        })?
        .map_err(|e| {
            fail(format!(
                "{{{{{}}}}} (plugin `{}`): {e}",
                self.helper, self.plugin
            ))
        })?;
        ferrydesk_desk::templates::count_helper_output(out.len())?;
        Ok(ScopedJson::Derived(serde_json::Value::String(out)))
    }
}

/// Registers the helpers of an enabled macro plugin (once per name; a disabled plugin's helpers
/// answer with an error naming it). A name that is built in or already taken by another plugin
/// is not registered, so no plugin can change what an existing template means.
pub(crate) fn register(plugins: &Plugins, e: &Entry) {
    let Ok(mut done) = plugins.inner.helpers_registered.lock() else {
        return;
    };
    for h in &e.manifest.helpers {
        let key = format!("{}/{}", e.manifest.id, h.name);
        let taken_by_other = done
            .iter()
            .any(|k| k.rsplit('/').next() == Some(h.name.as_str()) && *k != key);
        if ferrydesk_plugin_host::manifest::RESERVED_HELPERS.contains(&h.name.as_str())
            || taken_by_other
        {
            tracing::warn!(plugin = %e.manifest.id, helper = %h.name, "helper name is built in or taken by another plugin; not registered");
            continue;
        }
        if done.insert(key) {
            plugins.desk().templates().register_helper(
                &h.name,
                Box::new(PluginHelper {
                    runtime: std::sync::Arc::downgrade(&plugins.inner),
                    plugin: e.manifest.id.clone(),
                    helper: h.name.clone(),
                }),
            );
        }
    }
}
