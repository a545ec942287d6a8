//! What the API and the web app see of processes: definitions and versions, instances with
//! their active elements, variables, history and incidents, user tasks and the task list.

use ferrydesk_bpmn::run;
use ferrydesk_desk::{Error, Principal, Result};
use ferrydesk_domain::*;
use ferrydesk_store::processes as store;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Correlation, Engine, StartContext, corrupt, now};

/// A deployed version of a process.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Definition {
    /// `<key>:<version>`.
    pub id: String,
    /// The BPMN process id.
    pub key: String,
    pub version: i64,
    pub name: Option<String>,
    pub sha256: String,
    /// Names of the message start events (chat signals start these).
    pub start_messages: Vec<String>,
    pub deployed_by: Option<String>,
    pub deployed_at: Ts,
    /// False when deploying found the same content already deployed as the newest version.
    pub created: bool,
}

impl Definition {
    pub(crate) fn from_row(r: &store::DefinitionRow, created: bool) -> Definition {
        Definition {
            id: r.id.clone(),
            key: r.process_key.clone(),
            version: r.version,
            name: r.name.clone(),
            sha256: r.sha256.clone(),
            start_messages: serde_json::from_str(&r.start_messages).unwrap_or_default(),
            deployed_by: r.deployed_by.clone(),
            deployed_at: Ts(r.deployed_at),
            created,
        }
    }
}

/// A definition with its BPMN XML (for the diagram).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct DefinitionXml {
    pub definition: Definition,
    pub xml: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InstanceSummary {
    pub id: String,
    pub definition_id: String,
    pub process_key: String,
    /// `active`, `completed` or `terminated`.
    pub state: String,
    pub parent_id: Option<String>,
    pub chat_id: Option<String>,
    pub contact_id: Option<String>,
    pub case_id: Option<String>,
    pub started_by: Option<String>,
    /// Open incidents.
    pub incidents: i64,
    pub started_at: Ts,
    pub ended_at: Option<Ts>,
}

impl From<&store::InstanceRow> for InstanceSummary {
    fn from(r: &store::InstanceRow) -> Self {
        InstanceSummary {
            id: r.id.clone(),
            definition_id: r.definition_id.clone(),
            process_key: r.process_key.clone(),
            state: r.state.clone(),
            parent_id: r.parent_id.clone(),
            chat_id: r.chat_id.clone(),
            contact_id: r.contact_id.clone(),
            case_id: r.case_id.clone(),
            started_by: r.started_by.clone(),
            incidents: r.incidents,
            started_at: Ts(r.started_at),
            ended_at: r.ended_at.map(Ts),
        }
    }
}

/// An element a token waits at.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ActiveElement {
    pub token: u64,
    pub element: String,
    /// What it waits for: `job`, `incident`, `timer`, `message`, `user_task`, `call`,
    /// `subprocess`.
    pub waiting_for: String,
    pub due_at: Option<Ts>,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HistoryEntry {
    pub seq: i64,
    pub at: Ts,
    /// Empty for instance-level entries (started, completed, terminated).
    pub element: String,
    /// `started`, `completed`, `failed`, `incident`, `incident_resolved`, `terminated`.
    pub event: String,
    pub detail: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Incident {
    pub id: String,
    pub instance_id: String,
    pub job_id: Option<String>,
    pub element: String,
    pub message: String,
    pub created_at: Ts,
    pub resolved_at: Option<Ts>,
    pub resolved_by: Option<String>,
}

impl From<store::IncidentRow> for Incident {
    fn from(r: store::IncidentRow) -> Self {
        Incident {
            id: r.id,
            instance_id: r.instance_id,
            job_id: r.job_id,
            element: r.element,
            message: r.message,
            created_at: Ts(r.created_at),
            resolved_at: r.resolved_at.map(Ts),
            resolved_by: r.resolved_by,
        }
    }
}

/// An instance as the admin screen shows it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct InstanceView {
    pub instance: InstanceSummary,
    pub version: i64,
    #[schema(value_type = Object)]
    pub variables: serde_json::Value,
    pub active: Vec<ActiveElement>,
    pub history: Vec<HistoryEntry>,
    pub incidents: Vec<Incident>,
    pub user_tasks: Vec<UserTask>,
    pub children: Vec<InstanceSummary>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct UserTask {
    pub id: String,
    pub instance_id: String,
    pub process_key: String,
    pub element: String,
    pub name: Option<String>,
    pub assignee: Option<String>,
    pub candidate_groups: Option<String>,
    /// JSON Schema of the form that completes the task.
    #[schema(value_type = Object)]
    pub form: serde_json::Value,
    /// `open`, `completed` or `canceled`.
    pub state: String,
    pub chat_id: Option<String>,
    pub case_id: Option<String>,
    pub created_at: Ts,
    pub completed_at: Option<Ts>,
    pub completed_by: Option<String>,
    #[schema(value_type = Object)]
    pub result: serde_json::Value,
}

impl From<store::UserTaskRow> for UserTask {
    fn from(r: store::UserTaskRow) -> Self {
        let json = |s: Option<String>| {
            s.and_then(|s| serde_json::from_str(&s).ok())
                .unwrap_or(serde_json::Value::Null)
        };
        UserTask {
            id: r.id,
            instance_id: r.instance_id,
            process_key: r.process_key,
            element: r.element,
            name: r.name,
            assignee: r.assignee,
            candidate_groups: r.candidate_groups,
            form: json(r.form),
            state: r.state,
            chat_id: r.chat_id,
            case_id: r.case_id,
            created_at: Ts(r.created_at),
            completed_at: r.completed_at.map(Ts),
            completed_by: r.completed_by,
            result: json(r.result),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize, ToSchema, utoipa::IntoParams)]
pub struct InstanceQuery {
    pub state: Option<String>,
    pub process: Option<String>,
    pub chat_id: Option<String>,
    pub contact_id: Option<String>,
    pub case_id: Option<String>,
    /// Only instances with open incidents.
    #[serde(default)]
    pub incidents: bool,
    pub limit: Option<i64>,
    pub offset: Option<i64>,
}

/// Publishing a message to the engine.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct MessageInput {
    pub name: String,
    #[serde(default)]
    pub correlation_key: String,
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: serde_json::Value,
    /// When no instance takes the message at once: how long it is kept for a subscription that
    /// opens later, in milliseconds (0, the default: not kept; at most 7 days).
    #[serde(default)]
    pub time_to_live_ms: i64,
}

/// Starting an instance through the API.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartInput {
    #[serde(default)]
    #[schema(value_type = Object)]
    pub variables: serde_json::Value,
    #[serde(default)]
    pub chat_id: Option<ChatId>,
    /// Idempotency: a second start with the same key returns the first instance.
    #[serde(default)]
    pub start_key: Option<String>,
}

/// Does `p` see the task in their list (and may complete it)?
fn task_is_for(p: &Principal, t: &store::UserTaskRow, queues: &[Queue]) -> bool {
    if p.role().sees_all_chats() {
        return true;
    }
    if let Some(a) = &t.assignee {
        return a == p.id().as_str() || a == &p.user.username;
    }
    let Some(groups) = &t.candidate_groups else {
        return true;
    };
    groups.split(',').map(str::trim).any(|g| {
        g == p.role().as_str()
            || queues
                .iter()
                .any(|q| (q.id.as_str() == g || q.name == g) && q.members.contains(p.id()))
    })
}

impl Engine {
    pub async fn definitions(&self, p: &Principal) -> Result<Vec<Definition>> {
        p.require(Role::Supervisor)?;
        let mut conn = self.desk().store().read().await?;
        Ok(store::list_definitions(&mut conn)
            .await?
            .iter()
            .map(|r| Definition::from_row(r, false))
            .collect())
    }

    pub async fn definition_xml(&self, p: &Principal, id: &str) -> Result<DefinitionXml> {
        p.require(Role::Supervisor)?;
        let mut conn = self.desk().store().read().await?;
        let r = store::get_definition(&mut conn, id)
            .await?
            .ok_or(Error::not_found("process definition"))?;
        Ok(DefinitionXml {
            definition: Definition::from_row(&r, false),
            xml: r.xml,
        })
    }

    pub async fn instances(
        &self,
        p: &Principal,
        q: &InstanceQuery,
    ) -> Result<Vec<InstanceSummary>> {
        let mut f = store::InstanceFilter {
            state: q.state.clone(),
            process_key: q.process.clone(),
            chat_id: q.chat_id.clone(),
            contact_id: q.contact_id.clone(),
            case_id: q.case_id.clone(),
            with_incidents: q.incidents,
            limit: q.limit.unwrap_or(100),
            offset: q.offset.unwrap_or(0),
        };
        if !p.role().sees_all_chats() {
            // Operators see the instances of chats they can read.
            let chat = f.chat_id.clone().ok_or_else(|| {
                Error::forbidden("operators list the processes of a chat (chat_id)")
            })?;
            self.desk().chat_view(p, &ChatId(chat)).await?;
            f.limit = f.limit.min(100);
        }
        let mut conn = self.desk().store().read().await?;
        Ok(store::list_instances(&mut conn, &f)
            .await?
            .iter()
            .map(InstanceSummary::from)
            .collect())
    }

    pub async fn instance(&self, p: &Principal, id: &str) -> Result<InstanceView> {
        let mut conn = self.desk().store().read().await?;
        let row = store::get_instance(&mut conn, id)
            .await?
            .ok_or(Error::not_found("process instance"))?;
        // Operators: an instance of a chat (or case) they may read; their own instances only
        // while its chat and case stay readable to them — variables and history carry the
        // chat's content (S10).
        if !p.role().sees_all_chats() {
            let own = row.started_by.as_deref() == Some(p.id().as_str());
            if row.chat_id.is_none() && row.case_id.is_none() && !own {
                return Err(Error::not_found("process instance"));
            }
            drop(conn);
            if !self
                .may_see_records(p, row.chat_id.as_deref(), row.case_id.as_deref())
                .await?
            {
                return Err(Error::not_found("process instance"));
            }
            conn = self.desk().store().read().await?;
        }
        let inst: run::Instance = serde_json::from_str(&row.data).map_err(corrupt)?;
        let process = self.process(&mut conn, &row.definition_id).await?;
        let def = store::get_definition(&mut conn, &row.definition_id)
            .await?
            .ok_or(Error::not_found("process definition"))?;
        let jobs = store::jobs_of_instance(&mut conn, id).await?;
        let subs = store::subscriptions_of(&mut conn, id).await?;
        let tasks = store::list_user_tasks(&mut conn, "open", Some(id), 100).await?;
        let mut active = Vec::new();
        for t in &inst.tokens {
            let job = jobs.iter().find(|j| j.token == t.id as i64);
            let (waiting_for, due, detail) = if let Some(j) = job {
                match (j.kind.as_str(), j.state.as_str()) {
                    ("timer", _) => ("timer", Some(Ts(j.due_at)), None),
                    (_, "incident") => ("incident", None, j.last_error.clone()),
                    ("call", _) => ("call", None, j.last_error.clone()),
                    _ => ("job", Some(Ts(j.due_at)), Some(j.task_type.clone())),
                }
            } else if let Some(s) = subs.iter().find(|s| s.0 == t.id as i64) {
                ("message", None, Some(format!("{} = {}", s.2, s.3)))
            } else if tasks.iter().any(|x| x.token == t.id as i64) {
                ("user_task", None, None)
            } else {
                match process.elements.get(&t.element).map(|e| &e.kind) {
                    Some(ferrydesk_bpmn::Kind::SubProcess { .. }) => ("subprocess", None, None),
                    Some(ferrydesk_bpmn::Kind::CallActivity { .. }) => ("call", None, None),
                    _ => ("job", None, None),
                }
            };
            active.push(ActiveElement {
                token: t.id,
                element: t.element.clone(),
                waiting_for: waiting_for.into(),
                due_at: due,
                detail,
            });
        }
        let history = store::list_events(&mut conn, id)
            .await?
            .into_iter()
            .map(|e| HistoryEntry {
                seq: e.seq,
                at: Ts(e.at),
                element: e.element,
                event: e.event,
                detail: e.detail,
            })
            .collect();
        let incidents = store::open_incidents(&mut conn, Some(id))
            .await?
            .into_iter()
            .map(Incident::from)
            .collect();
        let children = store::list_instances(
            &mut conn,
            &store::InstanceFilter {
                limit: 1000,
                ..Default::default()
            },
        )
        .await?
        .iter()
        .filter(|c| c.parent_id.as_deref() == Some(id))
        .map(InstanceSummary::from)
        .collect();
        Ok(InstanceView {
            instance: InstanceSummary::from(&row),
            version: def.version,
            variables: serde_json::Value::Object(inst.variables),
            active,
            history,
            incidents,
            user_tasks: tasks.into_iter().map(UserTask::from).collect(),
            children,
        })
    }

    pub async fn incidents(&self, p: &Principal) -> Result<Vec<Incident>> {
        p.require(Role::Supervisor)?;
        let mut conn = self.desk().store().read().await?;
        Ok(store::open_incidents(&mut conn, None)
            .await?
            .into_iter()
            .map(Incident::from)
            .collect())
    }

    /// Starts an instance through the API (admins; or any operator for a chat they can read
    /// when the process is in that chat's Actions menu — see [`Engine::start_from_chat`]).
    pub async fn start_api(&self, p: &Principal, key: &str, input: StartInput) -> Result<String> {
        p.require(Role::Admin)?;
        let mut ctx = StartContext {
            started_by: Some(p.id().clone()),
            start_key: input.start_key.clone(),
            ..Default::default()
        };
        if let Some(c) = &input.chat_id {
            let v = self.desk().chat_view(p, c).await?;
            ctx.chat = Some(c.clone());
            ctx.contact = Some(v.chat.contact_id.clone());
        }
        self.start_instance(key, None, input.variables, ctx).await
    }

    pub async fn publish_message(&self, p: &Principal, m: MessageInput) -> Result<Correlation> {
        p.require(Role::Admin)?;
        if m.name.trim().is_empty() {
            return Err(Error::invalid("name", "is required"));
        }
        const WEEK_MS: i64 = 7 * 24 * 3600 * 1000;
        if !(0..=WEEK_MS).contains(&m.time_to_live_ms) {
            return Err(Error::invalid(
                "time_to_live_ms",
                format!("must be between 0 and {WEEK_MS} (7 days)"),
            ));
        }
        if !m.variables.is_object() && !m.variables.is_null() {
            return Err(Error::invalid("variables", "must be a JSON object"));
        }
        let vars = if m.variables.is_null() {
            serde_json::json!({})
        } else {
            m.variables
        };
        self.correlate(
            &m.name,
            &m.correlation_key,
            vars,
            StartContext {
                started_by: Some(p.id().clone()),
                ..Default::default()
            },
            std::time::Duration::from_millis(m.time_to_live_ms as u64),
        )
        .await
    }

    /// Whether an operator may see a process's data tied to this chat and case: both must be
    /// readable to them (the visibility rule, `Desk::may_read_chat` / `may_read_case`).
    async fn may_see_records(
        &self,
        p: &Principal,
        chat: Option<&str>,
        case: Option<&str>,
    ) -> Result<bool> {
        if let Some(c) = chat
            && !self.desk().may_read_chat(p, &ChatId(c.to_owned())).await?
        {
            return Ok(false);
        }
        if let Some(c) = case
            && !self.desk().may_read_case(p, &CaseId(c.to_owned())).await?
        {
            return Ok(false);
        }
        Ok(true)
    }

    /// Whether `p` sees the task: it is for them ([`task_is_for`]) and its chat and case are
    /// readable to them (a task's form and result carry the process's variables).
    async fn task_visible(
        &self,
        p: &Principal,
        t: &store::UserTaskRow,
        queues: &[Queue],
    ) -> Result<bool> {
        Ok(task_is_for(p, t, queues)
            && (p.role().sees_all_chats()
                || self
                    .may_see_records(p, t.chat_id.as_deref(), t.case_id.as_deref())
                    .await?))
    }

    /// The caller's task list: tasks assigned to them, and unassigned tasks of their candidate
    /// groups (their role, or a queue they belong to), whose chat and case they may read.
    /// Supervisors see every open task.
    pub async fn task_list(&self, p: &Principal, state: &str) -> Result<Vec<UserTask>> {
        if !matches!(state, "open" | "completed" | "canceled") {
            return Err(Error::invalid(
                "state",
                "is one of open, completed, canceled",
            ));
        }
        let (queues, rows) = {
            let mut conn = self.desk().store().read().await?;
            let queues = ferrydesk_store::directory::list_queues(&mut conn).await?;
            let rows = store::list_user_tasks(&mut conn, state, None, 500).await?;
            (queues, rows)
        };
        let mut out = Vec::new();
        for t in rows {
            if self.task_visible(p, &t, &queues).await? {
                out.push(UserTask::from(t));
            }
        }
        Ok(out)
    }

    pub async fn user_task(&self, p: &Principal, id: &str) -> Result<UserTask> {
        let (queues, t) = {
            let mut conn = self.desk().store().read().await?;
            let queues = ferrydesk_store::directory::list_queues(&mut conn).await?;
            let t = store::get_user_task(&mut conn, id)
                .await?
                .ok_or(Error::not_found("task"))?;
            (queues, t)
        };
        if !self.task_visible(p, &t, &queues).await? {
            return Err(Error::not_found("task"));
        }
        Ok(UserTask::from(t))
    }

    /// Takes an unassigned task (it leaves the others' lists).
    pub async fn claim_user_task(&self, p: &Principal, id: &str) -> Result<UserTask> {
        self.user_task(p, id).await?;
        let mut tx = self.desk().store().begin().await?;
        let queues = ferrydesk_store::directory::list_queues(&mut tx).await?;
        let mut t = store::get_user_task(&mut tx, id)
            .await?
            .filter(|t| task_is_for(p, t, &queues))
            .ok_or(Error::not_found("task"))?;
        if t.state != "open" {
            return Err(Error::conflict(
                "task_closed",
                format!("the task is {}", t.state),
            ));
        }
        if let Some(a) = &t.assignee
            && a != p.id().as_str()
            && a != &p.user.username
        {
            return Err(Error::conflict(
                "task_taken",
                "the task is assigned to someone else",
            ));
        }
        t.assignee = Some(p.id().to_string());
        store::update_user_task(&mut tx, &t).await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(UserTask::from(t))
    }

    /// Completes a user task with its form's values (validated against the form's JSON Schema;
    /// problems name the JSON pointer). The instance continues in the same transaction.
    pub async fn complete_user_task(
        &self,
        p: &Principal,
        id: &str,
        values: serde_json::Value,
    ) -> Result<UserTask> {
        let values = if values.is_null() {
            serde_json::json!({})
        } else {
            values
        };
        if !values.is_object() {
            return Err(Error::invalid("/", "the form's values are a JSON object"));
        }
        self.user_task(p, id).await?;
        let mut tx = self.desk().store().begin().await?;
        let queues = ferrydesk_store::directory::list_queues(&mut tx).await?;
        let mut t = store::get_user_task(&mut tx, id)
            .await?
            .filter(|t| task_is_for(p, t, &queues))
            .ok_or(Error::not_found("task"))?;
        if t.state != "open" {
            return Err(Error::conflict(
                "task_closed",
                format!("the task is {}", t.state),
            ));
        }
        if let Some(form) = t
            .form
            .as_deref()
            .and_then(|f| serde_json::from_str::<serde_json::Value>(f).ok())
        {
            let v = jsonschema::draft202012::new(&form).map_err(|e| {
                Error::Internal(format!("the task's form is not a valid schema: {e}"))
            })?;
            if let Some(e) = v.iter_errors(&values).next() {
                let ptr = e.instance_path().to_string();
                return Err(Error::invalid(
                    if ptr.is_empty() { "/".to_owned() } else { ptr },
                    e.to_string(),
                ));
            }
        }
        t.state = "completed".into();
        t.completed_at = Some(now());
        t.completed_by = Some(p.id().to_string());
        t.result = Some(values.to_string());
        store::update_user_task(&mut tx, &t).await?;
        self.command(
            &mut tx,
            &t.instance_id,
            ferrydesk_bpmn::run::Command::Complete {
                token: t.token as u64,
                variables: values,
            },
        )
        .await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        self.wake();
        Ok(UserTask::from(t))
    }
}
