//! "Chat settings": which processes and plugin actions the chat Actions menu offers (caption,
//! queues where shown), and starting a process from a chat (S16, S17). Plugin chat actions
//! that no entry mentions are offered too (so a newly enabled plugin shows up); an entry with
//! `enabled: false` hides one.

use std::time::Duration;

use ferrydesk_desk::{Error, Principal, Result};
use ferrydesk_domain::*;
use ferrydesk_plugins::actions::ActionInfo;
use ferrydesk_store::cases::{self as store, ChatActionRow};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Engine, StartContext};

/// One entry of the chat Actions menu.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ChatActionSetting {
    /// Stable id; generated when empty.
    #[serde(default)]
    pub id: String,
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    pub caption: String,
    /// `process` or `plugin`.
    pub kind: String,
    /// The process key, or `plugin-id/action-id`.
    pub target: String,
    /// Queues whose chats show the entry; empty means all.
    #[serde(default)]
    pub queues: Vec<QueueId>,
    #[serde(default = "yes")]
    pub enabled: bool,
}

fn yes() -> bool {
    true
}

/// What starting a process from a chat did, once it settled (or the wait ran out).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ProcessRun {
    pub instance_id: String,
    /// `active`, `completed` or `terminated`.
    pub state: String,
    #[schema(value_type = Object)]
    pub variables: serde_json::Value,
    /// The case the process created, if it did.
    pub case: Option<Case>,
    /// Open incidents (a task that failed and waits for an admin).
    pub incidents: Vec<crate::Incident>,
}

const SEEDED: &str = "chat_actions_seeded";

impl Engine {
    /// On a fresh database, the menu offers "Create case" (S17).
    pub async fn seed_default_menu(&self) -> Result<()> {
        let mut tx = self.desk().store().begin().await?;
        if ferrydesk_store::settings::get(&mut tx, SEEDED)
            .await?
            .is_none()
        {
            store::insert_chat_action(
                &mut tx,
                &ChatActionRow {
                    id: uuid::Uuid::now_v7().to_string(),
                    position: 1,
                    caption: "Create case".into(),
                    kind: "process".into(),
                    target: "create-case".into(),
                    queues: "[]".into(),
                    enabled: 1,
                },
            )
            .await?;
            // The plugin behind "Create case" is a step of the process, not a menu entry.
            store::insert_chat_action(
                &mut tx,
                &ChatActionRow {
                    id: uuid::Uuid::now_v7().to_string(),
                    position: 2,
                    caption: "Prepare case (plugin step)".into(),
                    kind: "plugin".into(),
                    target: "create-case/create-case".into(),
                    queues: "[]".into(),
                    enabled: 0,
                },
            )
            .await?;
            ferrydesk_store::settings::set(&mut tx, SEEDED, &serde_json::json!(true)).await?;
        }
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(())
    }

    pub async fn chat_action_settings(&self, p: &Principal) -> Result<Vec<ChatActionSetting>> {
        p.require(Role::Admin)?;
        let mut conn = self.desk().store().read().await?;
        Ok(store::list_chat_actions(&mut conn)
            .await?
            .into_iter()
            .map(|r| ChatActionSetting {
                id: r.id,
                caption: r.caption,
                kind: r.kind,
                target: r.target,
                queues: serde_json::from_str(&r.queues).unwrap_or_default(),
                enabled: r.enabled != 0,
            })
            .collect())
    }

    /// Replaces the menu; every problem names the entry (`entries[i].field`).
    pub async fn set_chat_action_settings(
        &self,
        p: &Principal,
        entries: Vec<ChatActionSetting>,
    ) -> Result<Vec<ChatActionSetting>> {
        p.require(Role::Admin)?;
        let catalog = self
            .inner
            .plugins
            .as_ref()
            .map(|pl| pl.chat_action_catalog("en"))
            .unwrap_or_default();
        let mut tx = self.desk().store().begin().await?;
        let queues = ferrydesk_store::directory::list_queues(&mut tx).await?;
        let mut rows = Vec::new();
        let mut seen = std::collections::HashSet::new();
        for (i, e) in entries.iter().enumerate() {
            let at = |f: &str| format!("entries[{i}].{f}");
            let caption = e.caption.trim();
            if caption.is_empty() || e.caption.chars().count() > 100 {
                return Err(Error::invalid(at("caption"), "is 1 to 100 characters"));
            }
            match e.kind.as_str() {
                "process" => {
                    if ferrydesk_store::processes::latest_definition(&mut tx, &e.target)
                        .await?
                        .is_none()
                    {
                        return Err(Error::invalid(
                            at("target"),
                            format!("no process `{}` is deployed", e.target),
                        ));
                    }
                }
                "plugin" => {
                    // A disabled entry may name a plugin that is not installed (it only hides).
                    let ok = e.target.split_once('/').is_some_and(|(pl, ac)| {
                        !pl.is_empty()
                            && !ac.is_empty()
                            && (!e.enabled || catalog.iter().any(|(p, a, _)| p == pl && a == ac))
                    });
                    if !ok {
                        return Err(Error::invalid(
                            at("target"),
                            format!(
                                "`{}` is not a chat action of an installed plugin (plugin-id/action-id)",
                                e.target
                            ),
                        ));
                    }
                }
                other => {
                    return Err(Error::invalid(
                        at("kind"),
                        format!("`{other}` is neither `process` nor `plugin`"),
                    ));
                }
            }
            if !seen.insert((e.kind.clone(), e.target.clone())) {
                return Err(Error::invalid(at("target"), "appears twice"));
            }
            for (j, q) in e.queues.iter().enumerate() {
                if !queues.iter().any(|x| &x.id == q) {
                    return Err(Error::invalid(
                        format!("entries[{i}].queues[{j}]"),
                        format!("no queue `{q}`"),
                    ));
                }
            }
            rows.push(ChatActionRow {
                id: if e.id.is_empty() {
                    uuid::Uuid::now_v7().to_string()
                } else {
                    e.id.clone()
                },
                position: i as i64 + 1,
                caption: caption.to_owned(),
                kind: e.kind.clone(),
                target: e.target.clone(),
                queues: serde_json::to_string(&e.queues).unwrap_or_else(|_| "[]".into()),
                enabled: e.enabled as i64,
            });
        }
        store::replace_chat_actions(&mut tx, &rows).await?;
        ferrydesk_store::settings::set(&mut tx, SEEDED, &serde_json::json!(true)).await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        self.chat_action_settings(p).await
    }

    /// The chat's Actions menu for this operator.
    pub async fn chat_menu(&self, p: &Principal, chat: &ChatId) -> Result<Vec<ActionInfo>> {
        let view = self.desk().chat_view(p, chat).await?;
        let plugin_actions = match &self.inner.plugins {
            Some(pl) => pl.chat_actions(p, chat).await?,
            None => Vec::new(),
        };
        let mut conn = self.desk().store().read().await?;
        let entries = store::list_chat_actions(&mut conn).await?;
        let mut out = Vec::new();
        for e in &entries {
            let queues: Vec<QueueId> = serde_json::from_str(&e.queues).unwrap_or_default();
            let shown =
                e.enabled != 0 && (queues.is_empty() || queues.contains(&view.chat.queue_id));
            if !shown {
                continue;
            }
            match e.kind.as_str() {
                "process" => {
                    if ferrydesk_store::processes::latest_definition(&mut conn, &e.target)
                        .await?
                        .is_some()
                    {
                        out.push(ActionInfo {
                            id: e.id.clone(),
                            kind: "process".into(),
                            process: Some(e.target.clone()),
                            plugin: String::new(),
                            action: String::new(),
                            title: e.caption.clone(),
                            confirm: None,
                            input_schema: serde_json::Value::Null,
                        });
                    }
                }
                _ => {
                    if let Some(a) = plugin_actions
                        .iter()
                        .find(|a| format!("{}/{}", a.plugin, a.action) == e.target)
                    {
                        let mut a = a.clone();
                        a.title = e.caption.clone();
                        out.push(a);
                    }
                }
            }
        }
        for a in plugin_actions {
            let target = format!("{}/{}", a.plugin, a.action);
            if !entries
                .iter()
                .any(|e| e.kind == "plugin" && e.target == target)
            {
                out.push(a);
            }
        }
        Ok(out)
    }

    /// Whether a plugin action may run from this chat's menu (RBAC and chat settings).
    pub async fn plugin_action_allowed(
        &self,
        p: &Principal,
        chat: &ChatId,
        plugin: &str,
        action: &str,
    ) -> Result<()> {
        let menu = self.chat_menu(p, chat).await?;
        if menu
            .iter()
            .any(|a| a.kind == "plugin" && a.plugin == plugin && a.action == action)
        {
            Ok(())
        } else {
            Err(Error::not_found("action"))
        }
    }

    /// Starts a process from a chat's Actions menu with the chat, contact and operator, and
    /// waits (up to the settle time) until it completes or waits for something other than a
    /// job — so the operator sees the case it created.
    pub async fn start_from_chat(
        &self,
        p: &Principal,
        chat_id: &ChatId,
        key: &str,
        input: serde_json::Value,
    ) -> Result<ProcessRun> {
        let menu = self.chat_menu(p, chat_id).await?;
        if !menu
            .iter()
            .any(|a| a.kind == "process" && a.process.as_deref() == Some(key))
        {
            return Err(Error::not_found("action"));
        }
        let view = self.desk().chat_view(p, chat_id).await?;
        let chat = &view.chat;
        let contact = {
            let mut conn = self.desk().store().read().await?;
            ferrydesk_store::contacts::get_contact(&mut conn, &chat.contact_id).await?
        };
        let mut vars = serde_json::json!({
            "chatId": chat.id,
            "contactId": chat.contact_id,
            "operatorId": p.id(),
            "channelId": chat.channel_id,
            "queueId": chat.queue_id,
            "chat": {
                "id": chat.id,
                "channel_id": chat.channel_id,
                "queue_id": chat.queue_id,
                "contact_id": chat.contact_id,
                "status": chat.status,
                "started_at": chat.started_at,
            },
            "contact": contact.map(|c| serde_json::json!({
                "id": c.id, "name": c.name, "email": c.email, "phone": c.phone,
            })),
            "operator": {
                "id": p.id(),
                "name": p.user.display_name,
                "username": p.user.username,
                "locale": p.user.locale,
            },
        });
        if let (Some(o), Some(extra)) = (vars.as_object_mut(), input.as_object()) {
            for (k, v) in extra {
                o.entry(k.clone()).or_insert(v.clone());
            }
        }
        let id = self
            .start_instance(
                key,
                None,
                vars,
                StartContext {
                    chat: Some(chat.id.clone()),
                    contact: Some(chat.contact_id.clone()),
                    case: chat.case_id.clone(),
                    started_by: Some(p.id().clone()),
                    start_key: None,
                    parent: None,
                },
            )
            .await?;
        self.settle(&id).await
    }

    /// Waits until the instance has no service task left to run (or the settle time passes).
    pub async fn settle(&self, id: &str) -> Result<ProcessRun> {
        let deadline = tokio::time::Instant::now() + self.options().settle;
        loop {
            let mut conn = self.desk().store().read().await?;
            // Jobs first, then the instance: a command changes both in one transaction, so an
            // instance read after its jobs is at least as new as they are. (The other order
            // could pair the state before the last job with no jobs left, and answer "still
            // running, no case" for a process that had just completed.)
            let jobs = ferrydesk_store::processes::jobs_of_instance(&mut conn, id).await?;
            let row = ferrydesk_store::processes::get_instance(&mut conn, id)
                .await?
                .ok_or(Error::not_found("process instance"))?;
            // A service task still to run (now, or after a retry's backoff) keeps us waiting;
            // an incident, a user task, a timer or a message does not.
            let runnable = jobs
                .iter()
                .any(|j| j.kind == "service" && (j.state == "locked" || j.state == "ready"));
            if row.state != "active" || !runnable || tokio::time::Instant::now() >= deadline {
                let inst: ferrydesk_bpmn::run::Instance =
                    serde_json::from_str(&row.data).map_err(crate::corrupt)?;
                let case = match inst.variables.get("caseId").and_then(|v| v.as_str()) {
                    Some(c) => {
                        ferrydesk_store::cases::get_case(&mut conn, &CaseId(c.into())).await?
                    }
                    None => None,
                };
                let incidents = ferrydesk_store::processes::open_incidents(&mut conn, Some(id))
                    .await?
                    .into_iter()
                    .map(crate::Incident::from)
                    .collect();
                return Ok(ProcessRun {
                    instance_id: id.to_owned(),
                    state: row.state,
                    variables: serde_json::Value::Object(inst.variables),
                    case,
                    incidents,
                });
            }
            drop(conn);
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }
}
