//! The durable process engine.
//!
//! A BPMN definition (Camunda 8 dialect, parsed and validated by `ferrydesk-bpmn`) is deployed
//! as a new version; instances keep the version they started with. An instance's token state is
//! one JSON document in `process_instances`; every engine command — start, complete a job,
//! fire a timer, correlate a message, complete a user task — is one transaction that locks the
//! instance row, applies the pure state machine (`ferrydesk_bpmn::run`) and writes what the
//! instance now waits for: jobs (service tasks and timers, in `process_jobs`), message
//! subscriptions, user tasks, child instances of call activities.
//!
//! Jobs are claimed by any node with a lease (`FOR UPDATE SKIP LOCKED` on PostgreSQL); a claim
//! bumps the job's `attempt`, and completion is fenced on owner and attempt, so a stale
//! worker's late answer is refused. Workers (plugin actions, built-in tasks) run outside any
//! transaction and are at-least-once; they get an idempotency key made of the instance id and
//! the element instance (token) id, the same on every retry. Failures retry with exponential
//! backoff and then raise an incident, which an admin can retry.

mod batch;
pub mod builtins;
pub mod menu;
mod runner;
pub mod views;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use ferrydesk_bpmn::run::{self, Command, Wait};
use ferrydesk_bpmn::{Kind, Process, StartTrigger, Timer};
use ferrydesk_desk::{Desk, Error, Principal, Result};
use ferrydesk_domain::*;
use ferrydesk_plugins::Plugins;
use ferrydesk_store::processes as store;
use ferrydesk_store::{Conn, Store};
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

pub use views::*;

/// Tunables. Defaults suit production; tests shorten them.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// How long a claimed job stays leased to its worker.
    pub lease: Duration,
    /// How often a node looks for due jobs when nothing woke it.
    pub poll: Duration,
    /// Jobs a node runs at once.
    pub concurrency: usize,
    /// First retry delay; doubles per failed attempt up to `max_backoff`.
    pub backoff: Duration,
    pub max_backoff: Duration,
    /// How long starting a process from a chat waits for it to settle before answering.
    pub settle: Duration,
    /// How long a chat signal (`chat.message` …) that no instance waits for is buffered for a
    /// subscription that opens later; zero (the default): not buffered.
    pub chat_message_ttl: Duration,
    /// This node's identity across restarts (`data_dir/node-id`): jobs leased as
    /// `<identity>:<earlier epoch>` belonged to this node before it restarted, and are
    /// released at start instead of waiting out their lease. `None`: a fresh identity.
    pub node_identity: Option<String>,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions {
            lease: Duration::from_secs(60),
            poll: Duration::from_millis(500),
            concurrency: 8,
            backoff: Duration::from_secs(2),
            max_backoff: Duration::from_secs(300),
            settle: Duration::from_secs(10),
            chat_message_ttl: Duration::ZERO,
            node_identity: None,
        }
    }
}

/// What a worker gets.
#[derive(Debug, Clone)]
pub struct Job {
    pub id: String,
    /// `instance-id:token`: the same on every retry of this element instance.
    pub key: String,
    pub instance_id: String,
    pub process_key: String,
    pub element: String,
    pub task_type: String,
    pub headers: serde_json::Map<String, serde_json::Value>,
    /// Every variable with the task's inputs applied.
    pub variables: serde_json::Value,
    /// Only the task's mapped inputs.
    pub inputs: serde_json::Map<String, serde_json::Value>,
    pub retries: i64,
    pub attempt: i64,
    pub chat_id: Option<ChatId>,
    pub contact_id: Option<ContactId>,
    pub started_by: Option<UserId>,
}

/// How a worker failed.
#[derive(Debug, Clone)]
pub enum JobError {
    /// A business error with a code: an error boundary event that catches the code takes it;
    /// uncaught, it counts as a failure.
    Bpmn { code: String, message: String },
    /// A failure: retried with backoff (or after `retry_after`), then an incident.
    Failed {
        message: String,
        retry_after: Option<Duration>,
    },
}

impl JobError {
    pub fn failed(message: impl Into<String>) -> JobError {
        JobError::Failed {
            message: message.into(),
            retry_after: None,
        }
    }
}

/// A job worker: returns the variables to merge.
pub type Worker = Arc<
    dyn Fn(Job) -> BoxFuture<'static, std::result::Result<serde_json::Value, JobError>>
        + Send
        + Sync,
>;

/// Handle to the engine; cheap to clone.
#[derive(Clone)]
pub struct Engine {
    inner: Arc<Inner>,
}

struct Inner {
    desk: Desk,
    plugins: Option<Plugins>,
    opts: EngineOptions,
    /// This node's lock owner id.
    node: String,
    workers: RwLock<HashMap<String, Worker>>,
    definitions: Mutex<HashMap<String, Arc<Process>>>,
    /// Instance states this node wrote last (see [`batch::StateCache`]).
    states: Mutex<batch::StateCache>,
    /// Jobs `start_many` created already claimed by this node, for its next round to run
    /// (see [`Engine::take_pushed`]).
    pushed: Mutex<std::collections::VecDeque<store::JobRow>>,
    batches_set_based: std::sync::atomic::AtomicU64,
    batches_one_by_one: std::sync::atomic::AtomicU64,
    /// Fast-lane batches planned from cached states before taking the writer, and those
    /// whose check failed and were planned again from what is stored.
    planned_ahead: std::sync::atomic::AtomicU64,
    replanned: std::sync::atomic::AtomicU64,
    wake: tokio::sync::Notify,
    shutdown: tokio::sync::watch::Sender<bool>,
}

pub(crate) fn now() -> i64 {
    Ts::now().0
}

fn corrupt(e: impl std::fmt::Display) -> Error {
    Error::Internal(format!("stored process state is corrupt: {e}"))
}

/// The error of a failed engine command, as the caller sees it.
fn run_error(e: run::RunError) -> Error {
    match e {
        run::RunError::UnknownToken(t) => Error::conflict(
            "stale",
            format!(
                "element instance {t} is no longer waiting (completed, cancelled or interrupted)"
            ),
        ),
        run::RunError::Completed => Error::conflict("instance_ended", "the instance has ended"),
        other => Error::conflict("process_error", other.to_string()),
    }
}

/// Called processes started within one command, one inside the other (see `add_wait`).
pub const MAX_CALL_DEPTH: usize = 16;

/// Element entries one command may make in all the instances it moves: its own walk, the
/// called processes it starts, their completions and the kept messages it takes share it.
pub const MAX_COMMAND_ENTRIES: usize = run::MAX_STEPS;

/// Called process instances one command may start (a parallel split around a call activity
/// that calls its own process would otherwise start k^16 instances in one transaction).
pub const MAX_COMMAND_INSTANCES: usize = 1_000;

tokio::task_local! {
    /// How many call activities of the current command started their child, nested.
    static CALL_DEPTH: usize;
    /// The budget of the current top-level command (see [`Budget`]).
    static BUDGET: Arc<Budget>;
}

/// What one top-level command (a start, a job's completion, a message, a user task …) may
/// still do, shared by everything it does in its transaction. Exhausting it fails the whole
/// command, which the caller records as an incident, as for the walk's own step budget.
#[derive(Default)]
struct Budget {
    /// Element entries made.
    entries: std::sync::atomic::AtomicUsize,
    /// Called instances started.
    instances: std::sync::atomic::AtomicUsize,
    /// Why the budget ran out; once set, the command fails.
    exhausted: Mutex<Option<String>>,
    /// Subscriptions this command opened, to take a kept message each: the outermost call
    /// takes them in a loop (one nested command per kept message made a recursion as deep as
    /// the number of kept messages).
    kept: Mutex<std::collections::VecDeque<Kept>>,
    /// Parents to continue (instance, call activity token, the child's variables): a child that
    /// completed in this command continues its parent afterwards, in a loop of the outermost
    /// call (one nested command per level overflowed the stack on a deep chain of calls).
    parents: Mutex<std::collections::VecDeque<(String, u64, serde_json::Value)>>,
}

/// A subscription opened by the current command, which may take a kept message.
struct Kept {
    instance: String,
    token: u64,
    name: String,
    key: String,
    started_at: i64,
}

impl Budget {
    /// The current command's budget (there is one inside `command` and `start_in`).
    fn current() -> Arc<Budget> {
        BUDGET.try_with(Arc::clone).unwrap_or_default()
    }

    fn entries_left(&self) -> usize {
        MAX_COMMAND_ENTRIES.saturating_sub(self.entries.load(std::sync::atomic::Ordering::Relaxed))
    }

    fn spend(&self, entries: usize) {
        self.entries
            .fetch_add(entries, std::sync::atomic::Ordering::Relaxed);
    }

    /// Counts a called instance; false when the command may start no more.
    fn start_instance(&self) -> bool {
        self.instances
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            < MAX_COMMAND_INSTANCES
    }

    fn exhaust(&self, why: String) -> Error {
        let mut e = self.exhausted.lock().unwrap_or_else(|p| p.into_inner());
        let why = e.get_or_insert(why).clone();
        metrics::counter!("ferrydesk_process_command_budget_exhausted_total").increment(1);
        Error::conflict("process_error", why)
    }

    fn exhausted(&self) -> Option<String> {
        self.exhausted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn push_kept(&self, k: Kept) {
        self.kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(k);
    }

    fn pop_kept(&self) -> Option<Kept> {
        self.kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    fn drop_kept(&self) -> usize {
        let mut q = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        let n = q.len();
        q.clear();
        n
    }

    fn push_parent(&self, instance: String, token: u64, variables: serde_json::Value) {
        self.parents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back((instance, token, variables));
    }

    fn pop_parent(&self) -> Option<(String, u64, serde_json::Value)> {
        self.parents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .pop_front()
    }

    fn drop_parents(&self) {
        self.parents
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// Forgets the queued work of a rolled-back part of the command.
    fn drop_queued(&self) {
        self.drop_kept();
        self.drop_parents();
    }
}

/// Applies `cmd` within what is left of the command's budget and counts what it used.
fn apply_budgeted(
    process: &Process,
    inst: &mut run::Instance,
    cmd: Command,
    now: i64,
) -> std::result::Result<run::Step, run::RunError> {
    let budget = Budget::current();
    let r = run::apply_within(process, inst, cmd, now, budget.entries_left());
    match &r {
        Ok(step) => budget.spend(step.entries),
        Err(e @ run::RunError::Budget { .. }) => {
            budget.exhaust(e.to_string());
        }
        Err(_) => {}
    }
    r
}

/// The element a failed walk names, if any.
fn failed_element(e: &run::RunError) -> Option<&str> {
    match e {
        run::RunError::NoPath(el) => Some(el),
        run::RunError::Element { element, .. }
        | run::RunError::Budget { element, .. }
        | run::RunError::Unhandled { element, .. } => Some(element),
        run::RunError::UnknownToken(_) | run::RunError::Completed | run::RunError::Panic(_) => None,
    }
}

/// Whether and how a message that nothing takes at once is kept.
#[derive(Debug, Clone, Copy)]
pub struct Keep {
    /// How long it is kept; zero: not kept.
    pub ttl: Duration,
    /// When it was published (a chat signal: when the chat changed); it expires `ttl` later.
    pub published_at: i64,
    /// Only an instance that started before it may take it (chat signals: a client's message
    /// from before a process started answers nothing the process asked).
    pub earlier_only: bool,
}

/// What publishing a message did.
#[derive(Debug, Clone, Default)]
pub struct Correlation {
    /// Instances that continued or started.
    pub instances: Vec<String>,
    /// The buffered message's id, when nothing took it and it has a time to live.
    pub buffered: Option<String>,
}

/// Where an instance was started from.
#[derive(Debug, Clone, Default)]
pub struct StartContext {
    pub chat: Option<ChatId>,
    pub contact: Option<ContactId>,
    pub case: Option<CaseId>,
    pub started_by: Option<UserId>,
    /// Makes the start idempotent: a second start with the same key returns the first instance.
    pub start_key: Option<String>,
    pub parent: Option<(String, u64)>,
}

impl Engine {
    /// Starts the engine's loops (jobs and timers, chat signals) on this node.
    pub async fn start(
        desk: Desk,
        plugins: Option<Plugins>,
        opts: EngineOptions,
    ) -> Result<Engine> {
        let (shutdown, _) = tokio::sync::watch::channel(false);
        let epoch = ferrydesk_domain::Ts::now().0;
        let node = match &opts.node_identity {
            Some(id) => format!("{id}:{epoch}"),
            None => format!("node-{}", uuid::Uuid::new_v4()),
        };
        if let Some(id) = &opts.node_identity {
            // What this node held before a restart is free at once (no zombie can hold it:
            // the identity is locked to one process).
            let mut tx = desk.store().begin().await?;
            let n = store::release_jobs_of(&mut tx, &format!("{id}:"), &node, epoch).await?;
            tx.commit().await.map_err(ferrydesk_store::Error::from)?;
            if n > 0 {
                tracing::info!(
                    jobs = n,
                    "released the jobs this node held before it restarted"
                );
            }
        }
        let engine = Engine {
            inner: Arc::new(Inner {
                desk,
                plugins,
                opts,
                node,
                workers: RwLock::new(HashMap::new()),
                definitions: Mutex::new(HashMap::new()),
                states: Mutex::new(batch::StateCache::default()),
                pushed: Mutex::new(Default::default()),
                batches_set_based: Default::default(),
                batches_one_by_one: Default::default(),
                planned_ahead: Default::default(),
                replanned: Default::default(),
                wake: tokio::sync::Notify::new(),
                shutdown,
            }),
        };
        builtins::register(&engine);
        engine.refresh_signal_names().await?;
        runner::spawn(engine.clone(), engine.inner.shutdown.subscribe());
        Ok(engine)
    }

    /// An engine without background loops (benchmarks drive it with [`Engine::run_due_jobs`]).
    pub fn embedded(desk: Desk, opts: EngineOptions) -> Engine {
        let (shutdown, _) = tokio::sync::watch::channel(false);
        Engine {
            inner: Arc::new(Inner {
                desk,
                plugins: None,
                opts,
                node: format!("node-{}", uuid::Uuid::new_v4()),
                workers: RwLock::new(HashMap::new()),
                definitions: Mutex::new(HashMap::new()),
                states: Mutex::new(batch::StateCache::default()),
                pushed: Mutex::new(Default::default()),
                batches_set_based: Default::default(),
                batches_one_by_one: Default::default(),
                planned_ahead: Default::default(),
                replanned: Default::default(),
                wake: tokio::sync::Notify::new(),
                shutdown,
            }),
        }
    }

    pub fn shutdown(&self) {
        let _ = self.inner.shutdown.send(true);
    }

    pub fn desk(&self) -> &Desk {
        &self.inner.desk
    }
    fn store(&self) -> &Store {
        self.inner.desk.store()
    }
    pub fn options(&self) -> &EngineOptions {
        &self.inner.opts
    }
    pub fn node(&self) -> &str {
        &self.inner.node
    }

    /// Registers a worker for a task type (`case.create`, or anything a test or an embedding
    /// program provides). Plugin actions (`plugin:<id>/<action>`) need no registration.
    pub fn register(&self, task_type: &str, worker: Worker) {
        if let Ok(mut w) = self.inner.workers.write() {
            w.insert(task_type.to_owned(), worker);
        }
    }

    /// Wakes this node's job loop (new jobs are due now).
    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// The parsed process of a definition (cached; definitions never change).
    async fn process(&self, conn: &mut ferrydesk_store::Conn, def: &str) -> Result<Arc<Process>> {
        if let Some(p) = self.cached_process(def) {
            return Ok(p);
        }
        let row = store::get_definition(conn, def)
            .await?
            .ok_or(Error::not_found("process definition"))?;
        self.cache_process(def, &row.xml, &row.process_key)
    }

    fn cached_process(&self, def: &str) -> Option<Arc<Process>> {
        self.inner
            .definitions
            .lock()
            .ok()
            .and_then(|m| m.get(def).cloned())
    }

    /// Parses a stored definition's XML into the cache.
    fn cache_process(&self, def: &str, xml: &str, key: &str) -> Result<Arc<Process>> {
        let defs = ferrydesk_bpmn::parse(xml).map_err(corrupt)?;
        let p = defs
            .processes
            .into_iter()
            .find(|p| p.id == key)
            .ok_or_else(|| corrupt(format!("definition {def} lost its process")))?;
        let p = Arc::new(p);
        if let Ok(mut m) = self.inner.definitions.lock() {
            m.insert(def.to_owned(), p.clone());
        }
        Ok(p)
    }

    // ---- deploy -------------------------------------------------------------------------

    /// Deploys a BPMN file: each process in it becomes a new version, unless the newest
    /// version has the same content. Problems name the element id and line.
    pub async fn deploy(&self, actor: Option<&UserId>, xml: &str) -> Result<Vec<Definition>> {
        if xml.len() > ferrydesk_bpmn::MAX_FILE_BYTES {
            return Err(Error::TooLarge {
                what: "BPMN file",
                limit: ferrydesk_bpmn::MAX_FILE_BYTES as u64,
            });
        }
        let defs = ferrydesk_bpmn::parse(xml).map_err(|e| {
            let field = e
                .problems
                .first()
                .map(|p| {
                    if p.element.is_empty() {
                        "bpmn".to_owned()
                    } else {
                        format!("bpmn:{}", p.element)
                    }
                })
                .unwrap_or_else(|| "bpmn".into());
            Error::invalid(
                field,
                e.problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; "),
            )
        })?;
        let sha = hex::encode(Sha256::digest(xml.as_bytes()));
        let now = now();
        let mut tx = self.store().begin().await?;
        let mut out = Vec::new();
        for p in &defs.processes {
            let latest = store::latest_definition(&mut tx, &p.id).await?;
            if let Some(l) = &latest
                && l.sha256 == sha
            {
                out.push(Definition::from_row(l, false));
                continue;
            }
            let version = latest.map(|l| l.version + 1).unwrap_or(1);
            let start_messages: Vec<String> = p
                .elements
                .values()
                .filter_map(|e| match &e.kind {
                    Kind::StartEvent(StartTrigger::Message(m)) if e.parent.is_none() => {
                        Some(m.clone())
                    }
                    _ => None,
                })
                .collect();
            let row = store::DefinitionRow {
                id: format!("{}:{version}", p.id),
                process_key: p.id.clone(),
                version,
                name: p.name.clone(),
                xml: xml.to_owned(),
                sha256: sha.clone(),
                start_messages: serde_json::to_string(&start_messages).unwrap_or_default(),
                deployed_by: actor.map(|a| a.to_string()),
                deployed_at: now,
            };
            store::insert_definition(&mut tx, &row).await?;
            self.schedule_start_timers(&mut tx, p, &row.id, now).await?;
            out.push(Definition::from_row(&row, true));
        }
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        self.refresh_signal_names().await?;
        Ok(out)
    }

    /// Timer start events of the newest version replace those of earlier versions: each is a
    /// `start_timer` job (any node fires it; firing starts an instance and, for a cycle,
    /// schedules the next one).
    async fn schedule_start_timers(
        &self,
        tx: &mut Conn,
        p: &Process,
        definition: &str,
        now: i64,
    ) -> Result<()> {
        store::delete_start_timers(tx, &p.id).await?;
        for e in p.elements.values().filter(|e| e.parent.is_none()) {
            let Kind::StartEvent(StartTrigger::Timer(t)) = &e.kind else {
                continue;
            };
            let Some((due, remaining)) = start_timer_due(p, t, now, None) else {
                return Err(Error::invalid(
                    format!("bpmn:{}", e.id),
                    "the timer start event has no valid first due date",
                ));
            };
            store::insert_job(
                tx,
                &store::JobRow {
                    id: uuid::Uuid::now_v7().to_string(),
                    instance_id: format!("start:{}:{}", p.id, e.id),
                    token: 0,
                    element: e.id.clone(),
                    kind: "start_timer".into(),
                    task_type: p.id.clone(),
                    state: "ready".into(),
                    retries: 3,
                    due_at: due,
                    attempt: 0,
                    lock_owner: None,
                    lock_expires: None,
                    payload: serde_json::json!({"definition": definition, "remaining": remaining})
                        .to_string(),
                    last_error: None,
                    created_at: now,
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Fires a timer start event's job (already finished by the caller): starts an instance
    /// and schedules the next occurrence of a cycle.
    pub(crate) async fn fire_start_timer(&self, tx: &mut Conn, j: &store::JobRow) -> Result<()> {
        let now = now();
        let def = store::latest_definition(tx, &j.task_type)
            .await?
            .ok_or(Error::not_found("process"))?;
        let process = self.process(tx, &def.id).await?;
        let Some(Kind::StartEvent(StartTrigger::Timer(t))) =
            process.elements.get(&j.element).map(|e| &e.kind)
        else {
            return Ok(()); // the newest version no longer has this start event
        };
        self.start_in(
            tx,
            &j.task_type,
            Some(j.element.clone()),
            serde_json::json!({}),
            StartContext {
                start_key: Some(format!("timer:{}", j.id)),
                ..Default::default()
            },
            Some(def.clone()),
        )
        .await?;
        let payload: serde_json::Value = serde_json::from_str(&j.payload).unwrap_or_default();
        let remaining = payload.get("remaining").and_then(|v| v.as_i64());
        if let Timer::Cycle(_) = t
            && remaining.is_none_or(|r| r > 1)
            && let Some((due, _)) = start_timer_due(&process, t, j.due_at.max(now - 1), remaining)
        {
            let mut next = j.clone();
            next.id = uuid::Uuid::now_v7().to_string();
            next.state = "ready".into();
            next.attempt = 0;
            next.lock_owner = None;
            next.lock_expires = None;
            next.due_at = due;
            next.payload = serde_json::json!({
                "definition": def.id,
                "remaining": remaining.map(|r| r - 1),
            })
            .to_string();
            next.created_at = now;
            store::insert_job(tx, &next).await?;
        }
        Ok(())
    }

    /// Deploys every `.bpmn` file of a directory (the first-party processes at start).
    pub async fn deploy_dir(&self, dir: &std::path::Path) -> Result<Vec<Definition>> {
        let mut out = Vec::new();
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Ok(out);
        };
        let mut files: Vec<_> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "bpmn"))
            .collect();
        files.sort();
        for f in files {
            let xml = std::fs::read_to_string(&f)?;
            let d = self
                .deploy(None, &xml)
                .await
                .map_err(|e| Error::invalid(f.display().to_string(), e.to_string()))?;
            out.extend(d);
        }
        Ok(out)
    }

    /// Tells the desk which chat signals some process listens to (message start events and
    /// message catches), so chat changes record only those.
    pub async fn refresh_signal_names(&self) -> Result<()> {
        let mut conn = self.store().read().await?;
        let mut names = HashSet::new();
        for d in store::latest_definitions(&mut conn).await? {
            if let Ok(defs) = ferrydesk_bpmn::parse(&d.xml) {
                for m in defs.messages.values() {
                    if m.name.starts_with("chat.") {
                        names.insert(m.name.clone());
                    }
                }
            }
        }
        self.desk().set_signal_names(names);
        Ok(())
    }

    // ---- commands -----------------------------------------------------------------------

    /// Starts an instance of the newest version of `key` at its none start event, or at the
    /// start event `start`.
    pub async fn start_instance(
        &self,
        key: &str,
        start: Option<String>,
        variables: serde_json::Value,
        ctx: StartContext,
    ) -> Result<String> {
        if !variables.is_object() && !variables.is_null() {
            return Err(Error::invalid("variables", "must be a JSON object"));
        }
        let mut tx = self.store().begin().await?;
        let id = self
            .start_in(&mut tx, key, start, variables, ctx, None)
            .await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        self.wake();
        Ok(id)
    }

    /// Starts many instances of `key` in one transaction (bulk starts; the benchmark). On the
    /// SQLite fast lane their first jobs are claimed by this node in that transaction: this
    /// node's job loop or next `run_due_jobs` runs them (should the node stop first, another
    /// takes them when their lease expires).
    pub async fn start_many(
        &self,
        key: &str,
        variables: Vec<serde_json::Value>,
    ) -> Result<Vec<String>> {
        if self.store().native().is_some() {
            let def = {
                let mut conn = self.store().read().await?;
                store::latest_definition(&mut conn, key)
                    .await?
                    .ok_or(Error::not_found("process"))?
            };
            match self.start_batch_native(&def, variables.clone()).await {
                Ok(ids) => {
                    self.wake();
                    return Ok(ids);
                }
                Err(Error::Conflict {
                    code: batch::FALLBACK,
                    ..
                }) => {}
                Err(e) => return Err(e),
            }
        }
        let mut tx = self.store().begin().await?;
        let def = store::latest_definition(&mut tx, key)
            .await?
            .ok_or(Error::not_found("process"))?;
        let ids = match self.start_batch(&mut tx, &def, variables.clone()).await {
            Ok(ids) => ids,
            Err(Error::Conflict {
                code: batch::FALLBACK,
                ..
            }) => {
                drop(tx);
                tx = self.store().begin().await?;
                let mut ids = Vec::with_capacity(variables.len());
                for v in variables {
                    ids.push(
                        self.start_in(
                            &mut tx,
                            key,
                            None,
                            v,
                            StartContext::default(),
                            Some(def.clone()),
                        )
                        .await?,
                    );
                }
                ids
            }
            Err(e) => return Err(e),
        };
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        self.wake();
        Ok(ids)
    }

    fn start_in<'a>(
        &'a self,
        tx: &'a mut Conn,
        key: &'a str,
        start: Option<String>,
        variables: serde_json::Value,
        ctx: StartContext,
        def: Option<store::DefinitionRow>,
    ) -> BoxFuture<'a, Result<String>> {
        Box::pin(async move {
            if BUDGET.try_with(|_| ()).is_ok() {
                return self
                    .start_inner(tx, key, start, variables, ctx, def, false)
                    .await;
            }
            BUDGET
                .scope(Arc::default(), async move {
                    let id = self
                        .start_inner(tx, key, start, variables, ctx, def, true)
                        .await?;
                    self.take_kept(tx).await?;
                    Ok(id)
                })
                .await
        })
    }

    /// Starts an instance; `top`: the outermost call of the command, which turns an exhausted
    /// command budget into an incident at the start instead of failing.
    #[allow(clippy::too_many_arguments)]
    async fn start_inner(
        &self,
        tx: &mut Conn,
        key: &str,
        start: Option<String>,
        variables: serde_json::Value,
        ctx: StartContext,
        def: Option<store::DefinitionRow>,
        top: bool,
    ) -> Result<String> {
        {
            if let Some(k) = &ctx.start_key
                && let Some(existing) = store::instance_by_start_key(tx, k).await?
            {
                return Ok(existing.id);
            }
            let def = match def {
                Some(d) => d,
                None => store::latest_definition(tx, key)
                    .await?
                    .ok_or(Error::not_found("process"))?,
            };
            let process = self.process(tx, &def.id).await?;
            let now = now();
            let id = uuid::Uuid::now_v7().to_string();
            let mut inst = run::Instance::default();
            let variables = if variables.is_null() {
                serde_json::json!({})
            } else {
                variables
            };
            let outcome = apply_budgeted(
                &process,
                &mut inst,
                Command::Start {
                    start: start.clone(),
                    variables: variables.clone(),
                },
                now,
            );
            // A walk that fails (an expression error, a gateway without a path, the step
            // budget) still creates the instance, as Zeebe does: it waits in an incident at
            // its start, keeping nothing of the failed walk; retrying the incident runs the
            // start again.
            // A called instance whose walk exhausted the command's budget fails the whole
            // command (the outermost start or command records the incident).
            let (step, mut failure) = match outcome {
                Ok(step) => (step, None),
                Err(e @ (run::RunError::UnknownToken(_) | run::RunError::Completed)) => {
                    return Err(run_error(e));
                }
                Err(e @ run::RunError::Budget { .. }) if !top => return Err(run_error(e)),
                Err(e) => (
                    run::Step::default(),
                    Some((failed_element(&e).map(str::to_owned), e.to_string())),
                ),
            };
            let reset = |inst: &mut run::Instance| {
                *inst = run::Instance::default();
                if let Some(o) = variables.as_object() {
                    inst.variables = o.clone();
                }
            };
            if failure.is_some() {
                reset(&mut inst);
            }
            let mut row = store::InstanceRow {
                id: id.clone(),
                definition_id: def.id.clone(),
                process_key: def.process_key.clone(),
                state: "active".into(),
                data: serde_json::to_string(&inst).map_err(corrupt)?,
                revision: 0,
                parent_id: ctx.parent.as_ref().map(|p| p.0.clone()),
                parent_token: ctx.parent.as_ref().map(|p| p.1 as i64),
                chat_id: ctx.chat.as_ref().map(|c| c.to_string()),
                contact_id: ctx.contact.as_ref().map(|c| c.to_string()),
                case_id: ctx.case.as_ref().map(|c| c.to_string()),
                started_by: ctx.started_by.as_ref().map(|c| c.to_string()),
                start_key: ctx.start_key.clone(),
                incidents: 0,
                started_at: now,
                updated_at: now,
                ended_at: None,
                events: 0,
            };
            let started = (
                now,
                String::new(),
                "started".to_owned(),
                Some(def.id.clone()),
            );
            if failure.is_none() {
                // The outermost start runs in a savepoint: when what it starts exhausts the
                // command's budget, all of it goes and the instance waits in an incident.
                let mut sp = ferrydesk_store::savepoint(tx).await?;
                let r: Result<()> = async {
                    store::insert_instance(&mut sp, &row).await?;
                    let mut events = vec![started.clone()];
                    events.extend(
                        inst.history
                            .iter()
                            .map(|e| (now, e.clone(), "completed".to_owned(), None)),
                    );
                    store::append_events(&mut sp, &id, &events).await?;
                    // The row exists now: persist the waits, or finish at once.
                    self.persist(&mut sp, &row, &process, &inst, step, now)
                        .await?;
                    if top {
                        self.continue_parents(&mut sp).await?;
                    }
                    Ok(())
                }
                .await;
                match r {
                    Ok(()) => {
                        sp.commit().await.map_err(ferrydesk_store::Error::from)?;
                        return Ok(id);
                    }
                    Err(e) if top && Budget::current().exhausted().is_some() => {
                        sp.rollback().await.map_err(ferrydesk_store::Error::from)?;
                        Budget::current().drop_queued();
                        failure = Some((None, e.to_string()));
                        reset(&mut inst);
                        row.data = serde_json::to_string(&inst).map_err(corrupt)?;
                    }
                    Err(e) => return Err(e),
                }
            }
            let (element, message) = failure.unwrap_or_default();
            store::insert_instance(tx, &row).await?;
            store::append_events(tx, &id, &[started]).await?;
            let element = element
                .or(start.clone())
                .unwrap_or_else(|| def.process_key.clone());
            let payload = serde_json::json!({"start": start, "variables": variables});
            self.raise_incident(tx, &row, 0, &element, "start", payload, &message)
                .await?;
            Ok(id)
        }
    }

    /// Records a command the process refused (its walk failed) as an incident on the
    /// instance: a job of `kind` (`start`, `message`) waiting in state `incident` keeps what
    /// the command carried, so retrying the incident applies it again.
    #[allow(clippy::too_many_arguments)]
    async fn raise_incident(
        &self,
        tx: &mut Conn,
        row: &store::InstanceRow,
        token: u64,
        element: &str,
        kind: &str,
        payload: serde_json::Value,
        message: &str,
    ) -> Result<()> {
        let now = now();
        let mut j = job_row(row, token, element, kind, "", 0, now, payload, now);
        j.state = "incident".into();
        j.last_error = Some(message.to_owned());
        store::insert_job(tx, &j).await?;
        store::insert_incident(
            tx,
            &store::IncidentRow {
                id: uuid::Uuid::now_v7().to_string(),
                instance_id: row.id.clone(),
                job_id: Some(j.id.clone()),
                element: element.to_owned(),
                message: message.to_owned(),
                created_at: now,
                resolved_at: None,
                resolved_by: None,
            },
        )
        .await?;
        store::append_events(
            tx,
            &row.id,
            &[(
                now,
                element.to_owned(),
                "incident".into(),
                Some(message.to_owned()),
            )],
        )
        .await?;
        metrics::counter!("ferrydesk_process_incidents_total").increment(1);
        tracing::warn!(instance = %row.id, element = %element, error = %message, "process incident");
        Ok(())
    }

    /// Applies a command to an instance inside `tx`: lock, run, persist the waits, finish.
    pub(crate) fn command<'a>(
        &'a self,
        tx: &'a mut Conn,
        instance: &'a str,
        cmd: Command,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            if BUDGET.try_with(|_| ()).is_ok() {
                return self.command_inner(tx, instance, cmd).await;
            }
            BUDGET
                .scope(Arc::default(), async move {
                    self.command_inner(tx, instance, cmd).await?;
                    self.continue_parents(tx).await?;
                    self.take_kept(tx).await
                })
                .await
        })
    }

    async fn command_inner(&self, tx: &mut Conn, instance: &str, cmd: Command) -> Result<()> {
        {
            let backend = self.store().backend();
            let row = store::lock_instance(tx, backend, instance)
                .await?
                .ok_or(Error::not_found("process instance"))?;
            if row.state != "active" {
                return Err(Error::conflict(
                    "instance_ended",
                    format!("the instance is {}", row.state),
                ));
            }
            let process = self.process(tx, &row.definition_id).await?;
            let mut inst: run::Instance = serde_json::from_str(&row.data).map_err(corrupt)?;
            let before = inst.history.len();
            let now = now();
            let step = apply_budgeted(&process, &mut inst, cmd, now).map_err(run_error)?;
            let events: Vec<_> = inst.history[before..]
                .iter()
                .map(|e| (now, e.clone(), "completed".to_owned(), None))
                .collect();
            store::append_events(tx, instance, &events).await?;
            self.persist(tx, &row, &process, &inst, step, now).await
        }
    }

    /// Takes a kept message for each subscription the command opened, in a loop (a taken
    /// message's walk may open the next subscription, which is queued here too). Each take
    /// runs in a savepoint: a kept message the catch refuses (its output mapping fails on the
    /// message's variables) stays kept, the subscription keeps waiting, and the command still
    /// commits. When the command's budget runs out, the remaining messages stay kept.
    /// Continues the parents of the children that completed in this command, in a loop (a
    /// continued parent that completes queues its own parent).
    async fn continue_parents(&self, tx: &mut Conn) -> Result<()> {
        let budget = Budget::current();
        while let Some((parent, token, variables)) = budget.pop_parent() {
            self.command(tx, &parent, Command::Complete { token, variables })
                .await?;
        }
        Ok(())
    }

    async fn take_kept(&self, tx: &mut Conn) -> Result<()> {
        let budget = Budget::current();
        let backend = self.store().backend();
        while let Some(k) = budget.pop_kept() {
            if budget.exhausted().is_some() {
                let left = budget.drop_kept() + 1;
                tracing::warn!(instance = %k.instance, message = %k.name, subscriptions = left, "the command's budget ran out; kept messages stay kept");
                break;
            }
            if !store::subscription_exists(tx, &k.instance, k.token as i64).await? {
                continue;
            }
            store::lock_message_key(tx, backend, &k.name, &k.key).await?;
            let mut sp = ferrydesk_store::savepoint(tx).await?;
            let taken: Result<bool> = async {
                let Some(vars) =
                    store::take_message(&mut sp, backend, &k.name, &k.key, now(), k.started_at)
                        .await?
                else {
                    return Ok(false);
                };
                store::delete_subscription(&mut sp, &k.instance, k.token as i64).await?;
                let variables: serde_json::Value = serde_json::from_str(&vars).map_err(corrupt)?;
                self.command(
                    &mut sp,
                    &k.instance,
                    Command::Complete {
                        token: k.token,
                        variables,
                    },
                )
                .await?;
                self.continue_parents(&mut sp).await?;
                Ok(true)
            }
            .await;
            match taken {
                Ok(took) => {
                    sp.commit().await.map_err(ferrydesk_store::Error::from)?;
                    if took {
                        metrics::counter!("ferrydesk_process_buffered_messages_correlated_total")
                            .increment(1);
                    }
                }
                // A deadlock or serialisation failure: the whole command is retried.
                Err(Error::Store(e)) if e.is_retryable() => return Err(Error::Store(e)),
                Err(e) => {
                    sp.rollback().await.map_err(ferrydesk_store::Error::from)?;
                    budget.drop_parents();
                    tracing::warn!(instance = %k.instance, message = %k.name, error = %e, "a kept message was refused by the catch; it stays kept");
                }
            }
        }
        Ok(())
    }

    /// Writes what a step changed: cancelled waits go, new waits are stored, the state is saved;
    /// a completed child completes its call activity in the parent.
    async fn persist(
        &self,
        tx: &mut Conn,
        row: &store::InstanceRow,
        process: &Process,
        inst: &run::Instance,
        step: run::Step,
        now: i64,
    ) -> Result<()> {
        let id = &row.id;
        let state = if inst.completed {
            "completed"
        } else {
            "active"
        };
        let case = inst
            .variables
            .get("caseId")
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        let data = stored_state(inst)?;
        // The state is written first: a called instance that completes at once (below) then
        // continues this instance from its stored state (after this step, see
        // `continue_parents`).
        if !store::update_instance(tx, id, row.revision, state, &data, case.as_deref(), now).await?
        {
            return Err(Error::conflict(
                "concurrent_update",
                "the instance changed concurrently; retry",
            ));
        }
        if !step.cancelled.is_empty() {
            store::cancel_tokens(tx, id, &step.cancelled, now).await?;
            // Called instances of cancelled call activities are terminated.
            for c in store::children_of(tx, id).await?.iter().filter(|c| {
                c.state == "active"
                    && c.parent_token
                        .is_some_and(|t| step.cancelled.contains(&(t as u64)))
            }) {
                self.terminate_in(tx, &c.id, "its call activity was cancelled")
                    .await?;
            }
        }
        let subscribed: Vec<(u64, String, String)> = step
            .waits
            .iter()
            .filter_map(|w| match w {
                Wait::Message {
                    token,
                    name,
                    correlation_key,
                    ..
                } => Some((
                    *token,
                    name.clone(),
                    correlation_key.clone().unwrap_or_default(),
                )),
                _ => None,
            })
            .collect();
        for w in step.waits {
            self.add_wait(tx, row, process, inst, w, now).await?;
        }
        metrics::counter!("ferrydesk_process_commands_total").increment(1);
        // A buffered message for a new subscription is correlated once every wait of this
        // step is stored (completing the token may end the instance or cancel others; a
        // subscription whose token went meanwhile takes nothing): queued here, taken by the
        // command's outermost call (`take_kept`).
        let budget = Budget::current();
        for (token, name, key) in subscribed {
            budget.push_kept(Kept {
                instance: id.clone(),
                token,
                name,
                key,
                started_at: row.started_at,
            });
        }
        if inst.completed {
            store::clear_instance(tx, id, now).await?;
            store::append_events(tx, id, &[(now, String::new(), "completed".into(), None)]).await?;
            metrics::counter!("ferrydesk_process_instances_completed_total").increment(1);
            // The parent continues once this command's current work is done (see
            // `continue_parents`), not nested here.
            if let (Some(parent), Some(token)) = (&row.parent_id, row.parent_token) {
                Budget::current().push_parent(
                    parent.clone(),
                    token as u64,
                    serde_json::Value::Object(inst.variables.clone()),
                );
            }
        }
        Ok(())
    }

    async fn add_wait(
        &self,
        tx: &mut Conn,
        row: &store::InstanceRow,
        process: &Process,
        inst: &run::Instance,
        w: Wait,
        now: i64,
    ) -> Result<()> {
        let id = &row.id;
        let job = |token: u64,
                   element: &str,
                   kind: &str,
                   task_type: &str,
                   retries: i64,
                   due: i64,
                   payload: serde_json::Value| {
            job_row(
                row, token, element, kind, task_type, retries, due, payload, now,
            )
        };
        match w {
            Wait::Job {
                token,
                element,
                task_type,
                retries,
                headers,
                variables,
                inputs,
            } => {
                let payload = service_payload(row, variables, inputs, headers);
                let j = job(
                    token,
                    &element,
                    "service",
                    &task_type,
                    retries.max(1) as i64,
                    now,
                    payload,
                );
                store::insert_job(tx, &j).await?;
            }
            Wait::Timer {
                token,
                element,
                due,
            } => {
                let j = job(token, &element, "timer", "", 3, due, serde_json::json!({}));
                store::insert_job(tx, &j).await?;
            }
            Wait::Message {
                token,
                element,
                name,
                correlation_key,
            } => {
                store::insert_subscription(
                    tx,
                    id,
                    token,
                    &element,
                    &name,
                    correlation_key.as_deref().unwrap_or(""),
                    now,
                )
                .await?;
            }
            Wait::UserTask {
                token,
                element,
                name,
                assignee,
                candidate_groups,
                form,
            } => {
                let t = store::UserTaskRow {
                    id: uuid::Uuid::now_v7().to_string(),
                    instance_id: id.clone(),
                    token: token as i64,
                    element,
                    name,
                    process_key: row.process_key.clone(),
                    assignee,
                    candidate_groups,
                    form: form.map(|f| f.to_string()),
                    state: "open".into(),
                    chat_id: row.chat_id.clone(),
                    case_id: inst
                        .variables
                        .get("caseId")
                        .and_then(|v| v.as_str())
                        .map(str::to_owned)
                        .or(row.case_id.clone()),
                    created_at: now,
                    completed_at: None,
                    completed_by: None,
                    result: None,
                };
                store::insert_user_task(tx, &t).await?;
            }
            Wait::Call {
                token,
                element,
                process_id,
                variables,
            } => {
                // The child starts in this transaction; a missing process is an incident on
                // the call activity (a job that retries the start). So is a chain of calls
                // deeper than MAX_CALL_DEPTH within one command (a process calling itself):
                // each level nests the command's futures, so it is bounded like the token walk.
                // (A loop around a call whose child completes at once does not nest: the
                // parent continues from the outermost call; the budget bounds it.)
                let depth = CALL_DEPTH.try_with(|d| *d).unwrap_or(0);
                // Every called instance counts against the command's budget; past it the
                // whole command fails (an incident), whatever the depth.
                let budget = Budget::current();
                if !budget.start_instance() {
                    return Err(budget.exhaust(format!(
                        "`{element}`: the command started more than {MAX_COMMAND_INSTANCES} called process instances (does `{process_id}` call itself in parallel?)"
                    )));
                }
                let refusal = match store::latest_definition(tx, &process_id).await? {
                    Some(_) if depth >= MAX_CALL_DEPTH => Some(format!(
                        "called processes nest deeper than {MAX_CALL_DEPTH} levels in one command (does `{process_id}` call itself?)"
                    )),
                    Some(d) => {
                        CALL_DEPTH
                            .scope(
                                depth + 1,
                                self.start_in(
                                    tx,
                                    &process_id,
                                    None,
                                    variables.clone(),
                                    StartContext {
                                        chat: row.chat_id.clone().map(ChatId),
                                        contact: row.contact_id.clone().map(ContactId),
                                        case: row.case_id.clone().map(CaseId),
                                        started_by: row.started_by.clone().map(UserId),
                                        start_key: None,
                                        parent: Some((id.clone(), token)),
                                    },
                                    Some(d),
                                ),
                            )
                            .await?;
                        None
                    }
                    None => Some(format!("no process `{process_id}` is deployed")),
                };
                if let Some(message) = refusal {
                    let _ = process;
                    let mut j = job(
                        token,
                        &element,
                        "call",
                        &process_id,
                        0,
                        now,
                        serde_json::json!({"variables": variables}),
                    );
                    j.state = "incident".into();
                    j.last_error = Some(message.clone());
                    store::insert_job(tx, &j).await?;
                    store::insert_incident(
                        tx,
                        &store::IncidentRow {
                            id: uuid::Uuid::now_v7().to_string(),
                            instance_id: id.clone(),
                            job_id: Some(j.id.clone()),
                            element,
                            message,
                            created_at: now,
                            resolved_at: None,
                            resolved_by: None,
                        },
                    )
                    .await?;
                }
            }
        }
        Ok(())
    }

    /// Ends an instance (and its called children) without completing it.
    fn terminate_in<'a>(
        &'a self,
        tx: &'a mut Conn,
        id: &'a str,
        why: &'a str,
    ) -> BoxFuture<'a, Result<()>> {
        Box::pin(async move {
            let backend = self.store().backend();
            // A work-list, not a call per level: a chain of called instances can be as deep as
            // its messages made it (terminating nested one call per level overflowed the stack).
            let mut todo = vec![(id.to_owned(), why.to_owned())];
            while let Some((id, why)) = todo.pop() {
                let Some(row) = store::lock_instance(tx, backend, &id).await? else {
                    continue;
                };
                if row.state != "active" {
                    continue;
                }
                let now = now();
                store::clear_instance(tx, &id, now).await?;
                store::append_events(
                    tx,
                    &id,
                    &[(now, String::new(), "terminated".into(), Some(why))],
                )
                .await?;
                store::update_instance(tx, &id, row.revision, "terminated", &row.data, None, now)
                    .await?;
                for c in store::children_of(tx, &id)
                    .await?
                    .into_iter()
                    .filter(|c| c.state == "active")
                {
                    todo.push((c.id, "its parent was terminated".to_owned()));
                }
            }
            Ok(())
        })
    }

    /// Cancels an instance (admin).
    pub async fn cancel_instance(&self, p: &Principal, id: &str) -> Result<()> {
        p.require(Role::Admin)?;
        let mut tx = self.store().begin().await?;
        self.terminate_in(&mut tx, id, &format!("cancelled by {}", p.user.username))
            .await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(())
    }

    /// Publishes a message: every instance with a matching subscription continues (one
    /// subscription per instance), and every process whose message start event has this name
    /// starts. Returns the instances that moved or started.
    ///
    /// When nothing took it and `ttl` is not zero, the message is buffered that long: the first
    /// subscription for its name and key that opens meanwhile takes it (`buffered` is its id).
    pub async fn correlate(
        &self,
        name: &str,
        correlation_key: &str,
        variables: serde_json::Value,
        ctx: StartContext,
        ttl: Duration,
    ) -> Result<Correlation> {
        let mut tx = self.store().begin().await?;
        let out = self
            .correlate_in(
                &mut tx,
                name,
                correlation_key,
                variables,
                ctx,
                Keep {
                    ttl,
                    published_at: now(),
                    earlier_only: false,
                },
            )
            .await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        self.wake();
        Ok(out)
    }

    pub(crate) async fn correlate_in(
        &self,
        tx: &mut Conn,
        name: &str,
        correlation_key: &str,
        variables: serde_json::Value,
        ctx: StartContext,
        keep: Keep,
    ) -> Result<Correlation> {
        let mut moved = Vec::new();
        self.continue_subscribers(tx, name, correlation_key, &variables, &mut moved)
            .await?;
        for d in store::latest_definitions(tx).await? {
            let names: Vec<String> = serde_json::from_str(&d.start_messages).unwrap_or_default();
            if !names.iter().any(|n| n == name) {
                continue;
            }
            let process = self.process(tx, &d.id).await?;
            let start = process
                .elements
                .values()
                .find(|e| {
                    e.parent.is_none()
                        && matches!(&e.kind, Kind::StartEvent(StartTrigger::Message(m)) if m == name)
                })
                .map(|e| e.id.clone());
            let mut c = ctx.clone();
            c.start_key = ctx
                .start_key
                .as_ref()
                .map(|k| format!("{k}:{}", d.process_key));
            let id = self
                .start_in(tx, &d.process_key, start, variables.clone(), c, None)
                .await?;
            moved.push(id);
        }
        let mut buffered = None;
        if moved.is_empty() && !keep.ttl.is_zero() {
            // Serialised with subscriptions opening on other nodes (they take the same lock
            // before looking for a kept message), then a second look: a subscription that
            // committed meanwhile takes the message now; otherwise it is kept, and one that
            // opens later waits for this lock and then finds it.
            store::lock_message_key(tx, self.store().backend(), name, correlation_key).await?;
            self.continue_subscribers(tx, name, correlation_key, &variables, &mut moved)
                .await?;
            if moved.is_empty() {
                let id = store::insert_message(
                    tx,
                    name,
                    correlation_key,
                    &variables.to_string(),
                    keep.published_at,
                    keep.published_at + keep.ttl.as_millis() as i64,
                    keep.earlier_only,
                )
                .await?;
                metrics::counter!("ferrydesk_process_messages_buffered_total").increment(1);
                buffered = Some(id);
            }
        }
        Ok(Correlation {
            instances: moved,
            buffered,
        })
    }

    /// Continues every instance with a subscription for the message (one per instance).
    async fn continue_subscribers(
        &self,
        tx: &mut Conn,
        name: &str,
        correlation_key: &str,
        variables: &serde_json::Value,
        moved: &mut Vec<String>,
    ) -> Result<()> {
        let subs = store::subscriptions_for(tx, name, correlation_key).await?;
        let mut seen: HashSet<String> = moved.iter().cloned().collect();
        for (instance, token) in subs {
            if !seen.insert(instance.clone()) {
                continue;
            }
            // Cancelled meanwhile (an interrupting boundary on another node): nothing waits.
            if !store::delete_subscription(tx, &instance, token).await? {
                continue;
            }
            // In a savepoint: a walk the process refuses (an expression error, the step
            // budget) becomes an incident on that instance keeping the message, and the
            // others still take it.
            let mut sp = ferrydesk_store::savepoint(tx).await?;
            let r = self
                .command(
                    &mut sp,
                    &instance,
                    Command::Complete {
                        token: token as u64,
                        variables: variables.clone(),
                    },
                )
                .await;
            match r {
                Ok(()) => sp.commit().await.map_err(ferrydesk_store::Error::from)?,
                Err(Error::Conflict {
                    code: "process_error",
                    message,
                }) => {
                    sp.rollback().await.map_err(ferrydesk_store::Error::from)?;
                    let row = store::get_instance(tx, &instance)
                        .await?
                        .ok_or(Error::not_found("process instance"))?;
                    let inst: run::Instance = serde_json::from_str(&row.data).map_err(corrupt)?;
                    let element = inst
                        .tokens
                        .iter()
                        .find(|t| t.id == token as u64)
                        .map(|t| t.element.clone())
                        .unwrap_or_default();
                    self.raise_incident(
                        tx,
                        &row,
                        token as u64,
                        &element,
                        "message",
                        serde_json::json!({"variables": variables}),
                        &message,
                    )
                    .await?;
                }
                Err(e) => return Err(e),
            }
            moved.push(instance);
        }
        Ok(())
    }

    // ---- incidents ----------------------------------------------------------------------

    /// Retries an incident's job with `retries` attempts (admin).
    pub async fn retry_incident(&self, p: &Principal, id: &str, retries: i64) -> Result<()> {
        p.require(Role::Admin)?;
        if !(1..=100).contains(&retries) {
            return Err(Error::invalid("retries", "must be between 1 and 100"));
        }
        let now = now();
        let mut tx = self.store().begin().await?;
        let inc = store::get_incident(&mut tx, id)
            .await?
            .ok_or(Error::not_found("incident"))?;
        if inc.resolved_at.is_some() {
            return Err(Error::conflict(
                "resolved",
                "the incident is already resolved",
            ));
        }
        if let Some(job) = &inc.job_id {
            let j = store::get_job(&mut tx, job).await?;
            match j {
                Some(j) if j.kind == "call" => {
                    // Retry the start of the called process.
                    let payload: serde_json::Value =
                        serde_json::from_str(&j.payload).map_err(corrupt)?;
                    let row = store::get_instance(&mut tx, &j.instance_id)
                        .await?
                        .ok_or(Error::not_found("process instance"))?;
                    if store::latest_definition(&mut tx, &j.task_type)
                        .await?
                        .is_none()
                    {
                        return Err(Error::conflict(
                            "not_deployed",
                            format!("process `{}` is still not deployed", j.task_type),
                        ));
                    }
                    sqlx_delete_job(&mut tx, &j.id).await?;
                    self.start_in(
                        &mut tx,
                        &j.task_type,
                        None,
                        payload["variables"].clone(),
                        StartContext {
                            chat: row.chat_id.map(ChatId),
                            contact: row.contact_id.map(ContactId),
                            case: row.case_id.map(CaseId),
                            started_by: row.started_by.map(UserId),
                            start_key: None,
                            parent: Some((row.id.clone(), j.token as u64)),
                        },
                        None,
                    )
                    .await?;
                }
                // A refused start or message: applied again (failing again, the retry fails
                // and the incident stays).
                Some(j) if j.kind == "start" || j.kind == "message" => {
                    let payload: serde_json::Value =
                        serde_json::from_str(&j.payload).map_err(corrupt)?;
                    let variables = payload["variables"].clone();
                    let cmd = if j.kind == "start" {
                        Command::Start {
                            start: payload["start"].as_str().map(str::to_owned),
                            variables,
                        }
                    } else {
                        Command::Complete {
                            token: j.token as u64,
                            variables,
                        }
                    };
                    sqlx_delete_job(&mut tx, &j.id).await?;
                    self.command(&mut tx, &j.instance_id, cmd).await?;
                }
                Some(_) => {
                    if !store::retry_job(&mut tx, job, retries, now).await? {
                        return Err(Error::conflict(
                            "not_in_incident",
                            "the job is not waiting in an incident",
                        ));
                    }
                }
                None => {
                    return Err(Error::conflict(
                        "gone",
                        "the job no longer exists (its element was cancelled)",
                    ));
                }
            }
        }
        store::resolve_incident(&mut tx, id, p.id().as_str(), now).await?;
        store::add_incidents(&mut tx, &inc.instance_id, -1).await?;
        store::append_events(
            &mut tx,
            &inc.instance_id,
            &[(
                now,
                inc.element.clone(),
                "incident_resolved".into(),
                Some(format!("retried by {}", p.user.username)),
            )],
        )
        .await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        self.wake();
        Ok(())
    }
}

async fn sqlx_delete_job(tx: &mut Conn, id: &str) -> Result<()> {
    store::delete_job(tx, id).await?;
    Ok(())
}

/// The first (or next, after `from`) due time of a timer start event, and for a cycle
/// `R<n>/<duration>` the repetitions left (`None`: unbounded).
/// Expressions are the ones the process compiled at deploy.
fn start_timer_due(
    p: &Process,
    t: &Timer,
    from: i64,
    remaining: Option<i64>,
) -> Option<(i64, Option<i64>)> {
    let text = |s: &str| -> Option<String> {
        if s.starts_with('=') {
            p.expression(s)?
                .eval(&serde_json::json!({}), from)
                .ok()?
                .to_json()
                .as_str()
                .map(str::to_owned)
        } else {
            Some(s.to_owned())
        }
    };
    match t {
        Timer::Duration(d) => Some((
            from.checked_add(ferrydesk_bpmn::feel::parse_duration(&text(d)?)?)?,
            None,
        )),
        Timer::Date(d) => Some((ferrydesk_bpmn::feel::parse_datetime(&text(d)?)?, None)),
        Timer::Cycle(c) => {
            let (total, every) = ferrydesk_bpmn::parse_cycle(&text(c)?)?;
            Some((from.checked_add(every)?, remaining.or(total.map(i64::from))))
        }
    }
}

/// A new `ready` job of an instance.
#[allow(clippy::too_many_arguments)]
pub(crate) fn job_row(
    row: &store::InstanceRow,
    token: u64,
    element: &str,
    kind: &str,
    task_type: &str,
    retries: i64,
    due: i64,
    payload: serde_json::Value,
    now: i64,
) -> store::JobRow {
    store::JobRow {
        id: uuid::Uuid::now_v7().to_string(),
        instance_id: row.id.clone(),
        token: token as i64,
        element: element.to_owned(),
        kind: kind.to_owned(),
        task_type: task_type.to_owned(),
        state: "ready".into(),
        retries,
        due_at: due,
        attempt: 0,
        lock_owner: None,
        lock_expires: None,
        payload: payload.to_string(),
        last_error: None,
        created_at: now,
    }
}

/// What a service task's worker needs travels with the job: running it reads nothing else.
pub(crate) fn service_payload(
    row: &store::InstanceRow,
    variables: serde_json::Value,
    inputs: serde_json::Map<String, serde_json::Value>,
    headers: std::collections::BTreeMap<String, String>,
) -> serde_json::Value {
    // Empty and absent parts are left out (the reader defaults them): a smaller job row.
    let mut p = serde_json::Map::with_capacity(8);
    p.insert("variables".into(), variables);
    if !inputs.is_empty() {
        p.insert("inputs".into(), inputs.into());
    }
    if !headers.is_empty() {
        p.insert("headers".into(), serde_json::json!(headers));
    }
    p.insert("definition".into(), row.definition_id.clone().into());
    p.insert("process".into(), row.process_key.clone().into());
    for (k, v) in [
        ("chat", &row.chat_id),
        ("contact", &row.contact_id),
        ("started_by", &row.started_by),
    ] {
        if let Some(v) = v {
            p.insert(k.into(), v.clone().into());
        }
    }
    p.into()
}

/// An instance's state as stored: without the in-memory history, which is in `process_history`.
pub(crate) fn stored_state(inst: &run::Instance) -> Result<String> {
    let mut copy = inst.clone();
    copy.history.clear();
    serde_json::to_string(&copy).map_err(corrupt)
}
