//! Chat actions: the Actions menu of a chat lists the actions of enabled action plugins; running
//! one calls the plugin with the chat, the contact, the operator and their locale, then the desk
//! applies the effects in one transaction. Every run is audited in `plugin_runs`.

use ferrydesk_desk::plugin_support::{AppliedEffect, PluginEffect};
use ferrydesk_desk::{Error, Principal, Result};
use ferrydesk_domain::*;
use ferrydesk_plugin_host::manifest::{Kind, Localized, RecordKind};
use ferrydesk_plugin_host::{Call, CallContext, CallError, Effect};
use ferrydesk_store::plugins as store;
use serde::Serialize;
use utoipa::ToSchema;

use crate::Plugins;

/// An action offered in a chat's Actions menu.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActionInfo {
    /// The menu entry: `plugin:<plugin>/<action>` or a chat settings entry id.
    pub id: String,
    /// `plugin` (run with `POST /chats/{id}/actions/{plugin}/{action}`) or `process`
    /// (started with `POST /chats/{id}/processes/{process}`).
    pub kind: String,
    /// The process key, for `process` entries.
    pub process: Option<String>,
    pub plugin: String,
    pub action: String,
    /// The caption in the operator's language.
    pub title: String,
    /// A question to confirm before running, in the operator's language.
    pub confirm: Option<String>,
    /// JSON Schema of the action's input (a form is drawn from it), if it takes any.
    #[schema(value_type = Object)]
    pub input_schema: serde_json::Value,
}

/// What running an action did.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActionResult {
    pub run_id: String,
    #[schema(value_type = Object)]
    pub output: serde_json::Value,
    pub effects: Vec<AppliedEffect>,
}

fn text(l: &Localized, lang: &str) -> String {
    l.get(lang).to_owned()
}

impl Plugins {
    /// The actions the operator can run in this chat.
    pub async fn chat_actions(&self, p: &Principal, chat: &ChatId) -> Result<Vec<ActionInfo>> {
        // The visibility rule: an unreadable chat has no actions (and is "not found").
        self.desk().chat_view(p, chat).await?;
        let lang = p.user.locale.clone();
        let mut out = Vec::new();
        for e in self.all() {
            if e.manifest.kind != Kind::Action || e.runnable().is_none() {
                continue;
            }
            for a in &e.manifest.actions {
                if !a.placement.is_empty() && !a.placement.iter().any(|p| p == "chat") {
                    continue;
                }
                out.push(ActionInfo {
                    id: format!("plugin:{}/{}", e.manifest.id, a.id),
                    kind: "plugin".into(),
                    process: None,
                    plugin: e.manifest.id.clone(),
                    action: a.id.clone(),
                    title: text(&a.title, &lang),
                    confirm: a.confirm.as_ref().map(|c| text(c, &lang)),
                    input_schema: a.input_schema.clone().unwrap_or(serde_json::Value::Null),
                });
            }
        }
        Ok(out)
    }

    /// Runs an action on a chat and applies its effects.
    pub async fn run_chat_action(
        &self,
        p: &Principal,
        chat_id: &ChatId,
        plugin: &str,
        action: &str,
        input: serde_json::Value,
    ) -> Result<ActionResult> {
        let view = self.desk().chat_view(p, chat_id).await?;
        let entry = self
            .entry(plugin)
            .filter(|e| e.manifest.kind == Kind::Action && e.runnable().is_some())
            .ok_or(Error::not_found("action"))?;
        let a = entry
            .manifest
            .action(action)
            .ok_or(Error::not_found("action"))?;
        if !a.placement.is_empty() && !a.placement.iter().any(|p| p == "chat") {
            return Err(Error::not_found("action"));
        }
        let Some(pl) = entry.runnable().cloned() else {
            return Err(Error::not_found("action"));
        };
        let run_id = uuid::Uuid::now_v7().to_string();
        let call = Call {
            ctx: CallContext {
                installation: plugin.to_owned(),
                actor: Some(p.id().to_string()),
                chat: Some(chat_id.to_string()),
                contact: Some(view.chat.contact_id.to_string()),
                locale: p.user.locale.clone(),
                trace_id: run_id.clone(),
            },
            settings: entry.settings_for(entry.settings.clone()),
            kv_scope: format!("plugin:{plugin}"),
        };
        if let Ok(mut m) = self.inner.principals.lock() {
            m.insert(run_id.clone(), p.clone());
        }
        let r = pl.run_action(&call, action, &input).await;
        if let Ok(mut m) = self.inner.principals.lock() {
            m.remove(&run_id);
        }
        let result = match r {
            Err(e) => Err(call_error(plugin, e)),
            Ok(out) => {
                let writable = &entry.manifest.capabilities.records.write;
                let (effects, problem) = match checked_effects(plugin, writable, &out.effects) {
                    Ok(e) => (e, None),
                    Err((i, why)) => (
                        Vec::new(),
                        Some(Error::invalid(format!("effects[{i}]"), why)),
                    ),
                };
                match problem {
                    Some(e) => Err(e),
                    None => self
                        .desk()
                        .apply_plugin_effects(p, chat_id, plugin, &effects)
                        .await
                        .map(|applied| ActionResult {
                            run_id: run_id.clone(),
                            output: out.output,
                            effects: applied,
                        }),
                }
            }
        };
        // The audit: who ran what, on which chat, and how it ended.
        let mut tx = self.desk().store().begin().await?;
        let effects_json = match &result {
            Ok(r) => serde_json::to_string(&r.effects).unwrap_or_default(),
            Err(_) => "[]".into(),
        };
        store::insert_run(
            &mut tx,
            store::NewRun {
                id: &run_id,
                plugin,
                action,
                chat: Some(chat_id.as_str()),
                actor: Some(p.id().as_str()),
                ok: result.is_ok(),
                error: result.as_ref().err().map(|e| e.to_string()).as_deref(),
                effects: &effects_json,
                now: Ts::now().0,
            },
        )
        .await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        result
    }
}

/// An action's effects as the desk applies them, checked against what the manifest may write;
/// the first effect it may not apply, by index and why.
fn checked_effects(
    plugin: &str,
    writable: &[RecordKind],
    effects: &[Effect],
) -> std::result::Result<Vec<PluginEffect>, (usize, String)> {
    let mut out = Vec::with_capacity(effects.len());
    for (i, e) in effects.iter().enumerate() {
        match e {
            Effect::PostMessage { text } => out.push(PluginEffect::PostMessage(text.clone())),
            Effect::PostNote { text } => out.push(PluginEffect::PostNote(text.clone())),
            Effect::UpdateRecord { kind, id, fields }
                if kind == "contact" && writable.contains(&RecordKind::Contact) =>
            {
                out.push(PluginEffect::UpdateContact {
                    id: ContactId(id.clone()),
                    fields: fields.clone(),
                })
            }
            Effect::UpdateRecord { kind, .. } | Effect::CreateRecord { kind, .. } => {
                return Err((
                    i,
                    format!(
                        "plugin `{plugin}` may not write `{kind}` records (its manifest does not declare it, or the kind is not available)"
                    ),
                ));
            }
        }
    }
    Ok(out)
}

/// A plugin failure as the operator sees it: which plugin, and what went wrong.
pub(crate) fn call_error(plugin: &str, e: CallError) -> Error {
    match e {
        CallError::InvalidInput { detail } => Error::invalid("input", detail),
        CallError::Busy => Error::RateLimited {
            retry_after: std::time::Duration::from_secs(1),
        },
        CallError::Plugin { code, message, .. } => Error::Conflict {
            code: "plugin_failed",
            message: format!("plugin `{plugin}`: {message} [{code}]"),
        },
        other => Error::Conflict {
            code: "plugin_failed",
            message: format!("plugin `{plugin}`: {other}"),
        },
    }
}

/// Who and what a process job runs for.
#[derive(Debug, Clone, Default)]
pub struct JobContext {
    /// The operator who started the process, if one did: records are read as them and chat
    /// effects are applied as them.
    pub actor: Option<Principal>,
    pub chat: Option<ChatId>,
    pub contact: Option<ContactId>,
    /// The job's idempotency key (instance and element instance); the plugin sees it as the
    /// call's `trace_id`, the same on every retry.
    pub key: String,
}

/// How a plugin action run by a process failed.
#[derive(Debug, Clone)]
pub enum JobFailure {
    /// The plugin reported an error with a code (a BPMN error boundary may catch it).
    Plugin { code: String, message: String },
    /// Anything else (timeout, trap, missing plugin, effects refused): retried.
    Failed(String),
}

impl Plugins {
    /// Runs an action plugin for a process job (`plugin:<id>/<action>`): the task's inputs are
    /// the action's input; effects apply as the operator who started the process. Every run
    /// is audited in `plugin_runs` with the job key.
    pub async fn run_for_process(
        &self,
        plugin: &str,
        action: &str,
        input: serde_json::Value,
        job: JobContext,
    ) -> std::result::Result<serde_json::Value, JobFailure> {
        // Another node may have installed or enabled the plugin since this node last synced.
        if self
            .entry(plugin)
            .and_then(|e| e.runnable().cloned())
            .is_none()
            && let Err(e) = self.sync().await
        {
            tracing::warn!(error = %e, "plugin sync before a process job failed");
        }
        let entry = self
            .entry(plugin)
            .filter(|e| e.manifest.kind == Kind::Action)
            .ok_or_else(|| {
                JobFailure::Failed(format!("no action plugin `{plugin}` is installed"))
            })?;
        if entry.manifest.action(action).is_none() {
            return Err(JobFailure::Failed(format!(
                "plugin `{plugin}` has no action `{action}`"
            )));
        }
        let Some(pl) = entry.runnable().cloned() else {
            return Err(JobFailure::Failed(format!("plugin `{plugin}` is disabled")));
        };
        let call = Call {
            ctx: CallContext {
                installation: plugin.to_owned(),
                actor: job.actor.as_ref().map(|p| p.id().to_string()),
                chat: job.chat.as_ref().map(|c| c.to_string()),
                contact: job.contact.as_ref().map(|c| c.to_string()),
                locale: job
                    .actor
                    .as_ref()
                    .map(|p| p.user.locale.clone())
                    .unwrap_or_else(|| "en".into()),
                trace_id: job.key.clone(),
            },
            settings: entry.settings_for(entry.settings.clone()),
            kv_scope: format!("plugin:{plugin}"),
        };
        if let (Some(p), Ok(mut m)) = (&job.actor, self.inner.principals.lock()) {
            m.insert(job.key.clone(), p.clone());
        }
        let r = pl.run_action(&call, action, &input).await;
        if let Ok(mut m) = self.inner.principals.lock() {
            m.remove(&job.key);
        }
        let result = match r {
            Err(CallError::Plugin { code, message, .. }) => {
                Err(JobFailure::Plugin { code, message })
            }
            Err(e) => Err(JobFailure::Failed(format!("plugin `{plugin}`: {e}"))),
            Ok(out) => {
                let writable = &entry.manifest.capabilities.records.write;
                let (effects, problem) = match checked_effects(plugin, writable, &out.effects) {
                    Ok(e) => (e, None),
                    Err((i, why)) => (Vec::new(), Some(format!("effects[{i}]: {why}"))),
                };
                if let Some(why) = problem {
                    Err(JobFailure::Failed(why))
                } else if effects.is_empty() {
                    Ok(out.output)
                } else {
                    match (&job.actor, &job.chat) {
                        (Some(p), Some(chat)) => self
                            .desk()
                            .apply_plugin_effects(p, chat, plugin, &effects)
                            .await
                            .map(|_| out.output)
                            .map_err(|e| JobFailure::Failed(e.to_string())),
                        _ => Err(JobFailure::Failed(format!(
                            "plugin `{plugin}` returned chat effects, but the process has no chat and operator"
                        ))),
                    }
                }
            }
        };
        let mut tx = self
            .desk()
            .store()
            .begin()
            .await
            .map_err(|e| JobFailure::Failed(e.to_string()))?;
        let error = match &result {
            Ok(_) => None,
            Err(JobFailure::Plugin { code, message }) => Some(format!("{message} [{code}]")),
            Err(JobFailure::Failed(m)) => Some(m.clone()),
        };
        store::insert_run(
            &mut tx,
            store::NewRun {
                id: &uuid::Uuid::now_v7().to_string(),
                plugin,
                action,
                chat: job.chat.as_ref().map(|c| c.as_str()),
                actor: job.actor.as_ref().map(|p| p.id().as_str()),
                ok: result.is_ok(),
                error: error.as_deref(),
                effects: "[]",
                now: Ts::now().0,
            },
        )
        .await
        .map_err(|e| JobFailure::Failed(e.to_string()))?;
        tx.commit()
            .await
            .map_err(|e| JobFailure::Failed(e.to_string()))?;
        result
    }

    /// Chat actions of enabled plugins (for the chat settings screen): `(plugin, action, title)`.
    pub fn chat_action_catalog(&self, lang: &str) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for e in self.all() {
            if e.manifest.kind != Kind::Action {
                continue;
            }
            for a in &e.manifest.actions {
                if !a.placement.is_empty() && !a.placement.iter().any(|p| p == "chat") {
                    continue;
                }
                out.push((e.manifest.id.clone(), a.id.clone(), text(&a.title, lang)));
            }
        }
        out
    }
}
