//! The node's job loop: claims due jobs (service tasks, timers) with a lease, runs them
//! outside any transaction and completes them fenced on owner and attempt; consumes chat
//! signals (message starts and correlation).

use std::sync::Arc;
use std::time::Duration;

use ferrydesk_bpmn::run::Command;
use ferrydesk_bpmn::{BoundaryTrigger, Kind, Process};
use ferrydesk_desk::{Error, Result};
use ferrydesk_domain::*;
use ferrydesk_store::processes as store;
use futures::FutureExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use ferrydesk_store::Conn;

use crate::{Engine, Job, JobError, StartContext, now};

pub(crate) fn spawn(engine: Engine, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(engine.options().concurrency.max(1)));
    // Finished jobs go to one committer, which applies whatever has piled up in one
    // transaction (group commit; each job in its own savepoint).
    let (done_tx, mut done_rx) = tokio::sync::mpsc::channel::<Finished>(1024);
    // The job loop holds the channel open; the committer's copy of the dispatcher does not,
    // and once the node is stopping the committer claims nothing more, so it ends once the
    // loop and the jobs in flight have.
    let dispatcher = Dispatcher {
        engine: engine.clone(),
        slots: slots.clone(),
        done: done_tx.downgrade(),
    };
    let committer = dispatcher.clone();
    let stopping = shutdown.clone();
    let fast_lane = engine.store_ref().native().is_some();
    tokio::spawn(async move {
        while let Some(first) = done_rx.recv().await {
            let mut batch = vec![first];
            while batch.len() < 128 {
                match done_rx.try_recv() {
                    Ok(f) => batch.push(f),
                    Err(_) => break,
                }
            }
            // On the fast lane the commit also claims what the free slots can run (jobs
            // already due, then the ones its steps created), so a busy node goes from one step
            // to the next without waiting for the claim loop.
            // (Only the fast lane claims in the commit, and not once the node is stopping.)
            let mut permits = if fast_lane && !*stopping.borrow() {
                committer.reserve()
            } else {
                Vec::new()
            };
            // Jobs `start_many` handed to this node go first.
            let pushed = committer.engine.take_pushed(permits.len());
            if !pushed.is_empty() {
                let rest = permits.split_off(pushed.len());
                committer.dispatch(pushed, permits);
                permits = rest;
            }
            let free = permits.len() as i64;
            // A panic while committing (a bug) must not end the committer: the batch's leases
            // run out and its jobs run again.
            let next = std::panic::AssertUnwindSafe(
                committer
                    .engine
                    .commit_finished(batch, (free > 0).then_some(free)),
            )
            .catch_unwind()
            .await
            .unwrap_or_else(|_| {
                tracing::error!("committing finished process jobs panicked");
                None
            });
            match next {
                Some(jobs) if !jobs.is_empty() => committer.dispatch(jobs, permits),
                _ => committer.engine.wake(),
            }
        }
    });
    tokio::spawn(async move {
        let _open = done_tx;
        let mut swept = std::time::Instant::now();
        loop {
            if *shutdown.borrow() {
                return;
            }
            // Expired buffered messages go once a minute (they are ignored once expired).
            if swept.elapsed() >= Duration::from_secs(60) {
                swept = std::time::Instant::now();
                if let Err(e) = engine.sweep_messages().await {
                    tracing::warn!(error = %e, "dropping expired process messages");
                }
            }
            let mut busy = false;
            match engine.consume_signals().await {
                Ok(n) => busy |= n > 0,
                Err(e) => tracing::warn!(error = %e, "process signals"),
            }
            let permits = dispatcher.reserve();
            let pushed = engine.take_pushed(permits.len());
            if !pushed.is_empty() {
                busy = true;
                dispatcher.dispatch(pushed, permits);
            } else if !permits.is_empty() {
                match engine.claim(permits.len() as i64).await {
                    Ok(jobs) => {
                        busy |= !jobs.is_empty();
                        dispatcher.dispatch(jobs, permits);
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming process jobs"),
                }
            }
            if busy {
                continue;
            }
            let sleep = match engine.next_due().await {
                Some(t) => Duration::from_millis((t - now()).clamp(0, 60_000) as u64),
                None => engine.options().poll,
            }
            .min(engine.options().poll);
            tokio::select! {
                _ = engine.inner.wake.notified() => {}
                _ = tokio::time::sleep(sleep) => {}
                _ = shutdown.changed() => {}
            }
        }
    });
}

/// Runs claimed jobs, each on its own task holding one of the node's slots, and hands the
/// results to the committer.
#[derive(Clone)]
struct Dispatcher {
    engine: Engine,
    slots: Arc<Semaphore>,
    done: tokio::sync::mpsc::WeakSender<Finished>,
}

impl Dispatcher {
    /// Every free slot, taken before claiming: jobs are claimed only for slots in hand, so a
    /// claimed job does not wait for one while its lease runs (the job loop and the committer
    /// both claim; `start_many`'s handed-over jobs may wait, see `Engine::take_pushed`).
    fn reserve(&self) -> Vec<OwnedSemaphorePermit> {
        let mut permits = Vec::new();
        while let Ok(p) = self.slots.clone().try_acquire_owned() {
            permits.push(p);
        }
        permits
    }

    /// Runs each job on its own task holding one of `permits` (those left over are given
    /// back).
    fn dispatch(&self, jobs: Vec<store::JobRow>, permits: Vec<OwnedSemaphorePermit>) {
        // Shutting down: the jobs go back to the queue when their leases expire.
        let Some(done) = self.done.upgrade() else {
            return;
        };
        let mut permits = permits.into_iter();
        for j in jobs {
            let permit = permits.next();
            let e = self.engine.clone();
            let done = done.clone();
            tokio::spawn(async move {
                let f = e.execute(j).await;
                let _ = done.send(f).await;
                drop(permit);
            });
        }
    }
}

/// How a claimed job ended, before it is committed.
pub(crate) enum Outcome {
    /// Complete the token with these variables (a timer: fire it).
    Done(serde_json::Value),
    /// A BPMN error that an error boundary catches.
    Throw { code: String, message: String },
    /// A failure: retry later or raise an incident.
    Failed {
        message: String,
        retry_after: Option<Duration>,
    },
}

pub(crate) struct Finished {
    pub(crate) job: store::JobRow,
    pub(crate) outcome: Outcome,
}

/// Delay before retry number `attempt` (1-based): doubling from `base`, capped.
fn backoff(base: Duration, max: Duration, attempt: i64) -> Duration {
    let factor = 2u32.saturating_pow((attempt.max(1) - 1).min(20) as u32);
    base.saturating_mul(factor).min(max)
}

/// The nearest error boundary (on the element or an enclosing subprocess) that catches `code`.
fn catches(process: &Process, element: &str, code: &str) -> bool {
    let mut current = Some(element.to_owned());
    while let Some(el) = current {
        if process.elements.values().any(|b| {
            matches!(&b.kind, Kind::BoundaryEvent { attached_to, trigger: BoundaryTrigger::Error(c), .. }
                if *attached_to == el && c.as_deref().is_none_or(|c| c == code))
        }) {
            return true;
        }
        current = process.elements.get(&el).and_then(|e| e.parent.clone());
    }
    false
}

impl Engine {
    async fn sweep_messages(&self) -> Result<()> {
        let mut tx = self.store_ref().begin().await?;
        let n = store::delete_expired_messages(&mut tx, now()).await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        if n > 0 {
            tracing::debug!(messages = n, "expired buffered process messages dropped");
        }
        Ok(())
    }

    async fn next_due(&self) -> Option<i64> {
        let mut conn = self.store_ref().read().await.ok()?;
        store::next_due(&mut conn).await.ok().flatten()
    }

    fn store_ref(&self) -> &ferrydesk_store::Store {
        self.inner.desk.store()
    }

    /// Claims up to `limit` due jobs for this node.
    pub(crate) async fn claim(&self, limit: i64) -> Result<Vec<store::JobRow>> {
        let now = now();
        let lease = self.options().lease.as_millis() as i64;
        if self.store_ref().native().is_some() {
            let owner = self.node().to_owned();
            return self
                .store_ref()
                .native_write(move |tx| tx.claim_jobs(&owner, now, now + lease, limit))
                .await
                .map_err(Error::from);
        }
        let mut tx = self.store_ref().begin().await?;
        let jobs = store::claim_jobs(
            &mut tx,
            self.store_ref().backend(),
            self.node(),
            now,
            now + lease,
            limit,
        )
        .await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(jobs)
    }

    /// Runs every due job on this task until none is left, committing each round of
    /// completions in one transaction (benchmarks and embedding programs drive an embedded
    /// engine this way). On the fast lane a round's commit also claims the next round, and
    /// the first round is the jobs `start_many` handed to this node, if any.
    /// Returns how many ran.
    pub async fn run_due_jobs(&self) -> Result<usize> {
        const ROUND: usize = 512;
        let mut n = 0;
        let mut jobs = Vec::new();
        let mut first = true;
        loop {
            // Jobs handed to this node by `start_many` fill what room the round has.
            if jobs.len() < ROUND {
                jobs.extend(self.take_pushed(ROUND - jobs.len()));
            }
            if jobs.is_empty() && first {
                jobs = self.claim(ROUND as i64).await?;
            }
            first = false;
            if jobs.is_empty() {
                break;
            }
            n += jobs.len();
            let mut done = Vec::with_capacity(jobs.len());
            for j in jobs {
                done.push(self.execute(j).await);
            }
            jobs = match self.commit_finished(done, Some(ROUND as i64)).await {
                Some(next) => next,
                None => self.claim(ROUND as i64).await?,
            };
        }
        Ok(n)
    }

    /// Runs one claimed job's worker (outside any transaction) and says how it ended.
    pub(crate) async fn execute(&self, j: store::JobRow) -> Finished {
        let outcome = match j.kind.as_str() {
            "timer" | "start_timer" => Outcome::Done(serde_json::Value::Null),
            "service" => match self.run_service(&j).await {
                Ok(o) => o,
                Err(e) => Outcome::Failed {
                    message: e.to_string(),
                    retry_after: None,
                },
            },
            other => Outcome::Failed {
                message: format!("job kind `{other}` cannot run"),
                retry_after: None,
            },
        };
        Finished { job: j, outcome }
    }

    /// Applies finished jobs in one transaction, each in a savepoint and fenced on owner and
    /// attempt (a job another node took over is skipped). A job whose completion the process
    /// refuses (a mapping error, a gateway without a path) becomes an incident.
    ///
    /// With `claim`, on the fast lane, the same transaction also claims up to that many due
    /// jobs and they are returned; `None` means the caller claims the next round itself.
    pub(crate) async fn commit_finished(
        &self,
        batch: Vec<Finished>,
        claim: Option<i64>,
    ) -> Option<Vec<store::JobRow>> {
        // Fast path: the whole batch set-based in one transaction (on the store's fast lane
        // where there is one). Should it not apply (a step needs more than jobs, a job is
        // refused), the batch is redone one job at a time, each in a savepoint, and the
        // refused jobs become incidents.
        let batch = Arc::new(batch);
        let fast: Result<Option<Vec<store::JobRow>>> = if self.store_ref().native().is_some() {
            self.commit_batch_native(batch.clone(), claim)
                .await
                .map(|next| claim.map(|_| next))
        } else {
            async {
                let mut tx = self.store_ref().begin().await?;
                let plan = self.commit_batch_fast(&mut tx, &batch).await?;
                tx.commit().await.map_err(ferrydesk_store::Error::from)?;
                plan.count();
                Ok(None)
            }
            .await
        };
        self.count_batch(fast.is_ok());
        match fast {
            Ok(next) => next,
            Err(_) => {
                self.commit_one_by_one(&batch).await;
                None
            }
        }
    }

    fn count_batch(&self, set_based: bool) {
        let c = if set_based {
            &self.inner.batches_set_based
        } else {
            metrics::counter!("ferrydesk_process_batch_fallbacks_total").increment(1);
            &self.inner.batches_one_by_one
        };
        c.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Completion batches committed set-based, and those redone one job at a time (a failed
    /// job, a step that needs more than jobs and timers), since this engine started.
    pub fn batch_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.inner.batches_set_based.load(Relaxed),
            self.inner.batches_one_by_one.load(Relaxed),
        )
    }

    /// The slow path of [`Engine::commit_finished`]: one savepoint per job.
    async fn commit_one_by_one(&self, batch: &[Finished]) {
        let mut refused = Vec::new();
        let r: Result<()> = async {
            let mut tx = self.store_ref().begin().await?;
            for f in batch {
                let mut sp = ferrydesk_store::savepoint(&mut tx).await?;
                match self.apply_finished(&mut sp, f).await {
                    Ok(()) => sp.commit().await.map_err(ferrydesk_store::Error::from)?,
                    Err(e) => {
                        sp.rollback().await.map_err(ferrydesk_store::Error::from)?;
                        refused.push((f.job.clone(), e.to_string()));
                    }
                }
            }
            tx.commit().await.map_err(ferrydesk_store::Error::from)?;
            Ok(())
        }
        .await;
        if let Err(e) = r {
            // The batch did not commit (the database is unwell): the leases run out and the
            // jobs run again, with the same idempotency keys.
            tracing::warn!(error = %e, jobs = batch.len(), "committing process jobs failed");
            return;
        }
        for (job, why) in refused {
            tracing::warn!(job = %job.id, instance = %job.instance_id, error = %why, "process job refused");
            let run = || async {
                let mut tx = self.store_ref().begin().await?;
                self.fail_in(&mut tx, &job, &why, None, true).await?;
                tx.commit().await.map_err(ferrydesk_store::Error::from)?;
                Ok::<_, Error>(())
            };
            if let Err(e) = run().await {
                tracing::warn!(job = %job.id, error = %e, "recording a job failure");
            }
        }
    }

    async fn apply_finished(&self, tx: &mut Conn, f: &Finished) -> Result<()> {
        let j = &f.job;
        let token = j.token as u64;
        let cmd = match &f.outcome {
            Outcome::Failed {
                message,
                retry_after,
            } => return self.fail_in(tx, j, message, *retry_after, false).await,
            Outcome::Done(_) if j.kind == "timer" => Command::FireTimer { token },
            Outcome::Done(v) => Command::Complete {
                token,
                variables: if v.is_object() {
                    v.clone()
                } else {
                    serde_json::json!({})
                },
            },
            Outcome::Throw { code, message } => Command::Throw {
                token,
                code: code.clone(),
                message: message.clone(),
            },
        };
        if !store::finish_job(tx, &j.id, self.node(), j.attempt).await? {
            tracing::info!(job = %j.id, "late completion refused: the job was taken over");
            metrics::counter!("ferrydesk_process_stale_completions_total").increment(1);
            return Ok(());
        }
        if j.kind == "start_timer" {
            return self.fire_start_timer(tx, j).await;
        }
        match self.command(tx, &j.instance_id, cmd).await {
            // The instance ended or the element was interrupted meanwhile.
            Ok(())
            | Err(Error::Conflict {
                code: "stale" | "instance_ended",
                ..
            }) => {
                if j.kind == "timer" {
                    metrics::counter!("ferrydesk_process_timers_fired_total").increment(1);
                } else {
                    metrics::counter!("ferrydesk_process_jobs_completed_total").increment(1);
                }
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    /// The worker's view of a job, from the job row alone (the instance's context travels in
    /// its payload).
    fn job_of(&self, j: &store::JobRow) -> Job {
        /// A service job's payload (see `service_payload`), read straight into owned values.
        #[derive(serde::Deserialize, Default)]
        #[serde(default)]
        struct Payload {
            variables: Option<serde_json::Value>,
            inputs: serde_json::Map<String, serde_json::Value>,
            headers: serde_json::Map<String, serde_json::Value>,
            process: Option<String>,
            chat: Option<String>,
            contact: Option<String>,
            started_by: Option<String>,
        }
        let p: Payload = serde_json::from_str(&j.payload).unwrap_or_default();
        Job {
            id: j.id.clone(),
            key: format!("{}:{}", j.instance_id, j.token),
            instance_id: j.instance_id.clone(),
            process_key: p.process.unwrap_or_default(),
            element: j.element.clone(),
            task_type: j.task_type.clone(),
            headers: p.headers,
            variables: p
                .variables
                .filter(|v| !v.is_null())
                .unwrap_or_else(|| serde_json::json!({})),
            inputs: p.inputs,
            retries: j.retries,
            attempt: j.attempt,
            chat_id: p.chat.map(ChatId),
            contact_id: p.contact.map(ContactId),
            started_by: p.started_by.map(UserId),
        }
    }

    /// Whether an error boundary catches `code` at the job's element.
    async fn job_catches(&self, j: &store::JobRow, code: &str) -> Result<bool> {
        let payload: serde_json::Value =
            serde_json::from_str(&j.payload).unwrap_or(serde_json::Value::Null);
        let def = match payload.get("definition").and_then(|v| v.as_str()) {
            Some(d) => d.to_owned(),
            None => {
                let mut conn = self.store_ref().read().await?;
                store::get_instance(&mut conn, &j.instance_id)
                    .await?
                    .ok_or(Error::not_found("process instance"))?
                    .definition_id
            }
        };
        let mut conn = self.store_ref().read().await?;
        let process = self.process(&mut conn, &def).await?;
        Ok(catches(&process, &j.element, code))
    }

    async fn run_service(&self, j: &store::JobRow) -> Result<Outcome> {
        let job = self.job_of(j);
        let worker = self
            .inner
            .workers
            .read()
            .ok()
            .and_then(|w| w.get(&j.task_type).cloned());
        // The worker must answer within what is left of the lease, or another node may run
        // the job again.
        let left = j
            .lock_expires
            .map(|e| Duration::from_millis((e - now()).max(0) as u64))
            .unwrap_or(self.options().lease);
        let budget = left
            .saturating_sub(Duration::from_secs(1))
            .max(Duration::from_millis(500));
        let started = std::time::Instant::now();
        let outcome = if let Some(w) = worker {
            match tokio::time::timeout(budget, w(job)).await {
                Ok(r) => r,
                Err(_) => Err(JobError::failed(format!(
                    "the worker did not answer within {} s",
                    budget.as_secs()
                ))),
            }
        } else if let Some(rest) = j.task_type.strip_prefix("plugin:") {
            match tokio::time::timeout(budget, self.run_plugin(rest, job)).await {
                Ok(r) => r,
                Err(_) => Err(JobError::failed("the plugin did not answer in time")),
            }
        } else {
            Err(JobError::failed(format!(
                "no worker handles task type `{}` (built-ins: {}; plugin actions: plugin:<id>/<action>)",
                j.task_type,
                crate::builtins::NAMES.join(", ")
            )))
        };
        metrics::histogram!("ferrydesk_process_job_seconds")
            .record(started.elapsed().as_secs_f64());
        Ok(match outcome {
            Ok(vars) => Outcome::Done(vars),
            Err(JobError::Bpmn { code, message }) => {
                if self.job_catches(j, &code).await? {
                    Outcome::Throw { code, message }
                } else {
                    Outcome::Failed {
                        message: format!("{message} [{code}]"),
                        retry_after: None,
                    }
                }
            }
            Err(JobError::Failed {
                message,
                retry_after,
            }) => Outcome::Failed {
                message,
                retry_after,
            },
        })
    }

    /// A failed attempt: retry later, or raise an incident when no retries are left (or at
    /// once when `fatal`).
    async fn fail_in(
        &self,
        tx: &mut Conn,
        j: &store::JobRow,
        message: &str,
        retry_after: Option<Duration>,
        fatal: bool,
    ) -> Result<()> {
        let now = now();
        let left = if fatal { 0 } else { (j.retries - 1).max(0) };
        let delay = retry_after.unwrap_or_else(|| {
            backoff(
                self.options().backoff,
                self.options().max_backoff,
                j.attempt,
            )
        });
        if !store::fail_job(
            tx,
            &j.id,
            self.node(),
            j.attempt,
            left,
            now + delay.as_millis() as i64,
            message,
        )
        .await?
        {
            return Ok(());
        }
        metrics::counter!("ferrydesk_process_job_failures_total").increment(1);
        tracing::warn!(job = %j.id, instance = %j.instance_id, element = %j.element, retries_left = left, error = %message, "process job failed");
        if left == 0 {
            store::insert_incident(
                tx,
                &store::IncidentRow {
                    id: uuid::Uuid::now_v7().to_string(),
                    instance_id: j.instance_id.clone(),
                    job_id: Some(j.id.clone()),
                    element: j.element.clone(),
                    message: message.to_owned(),
                    created_at: now,
                    resolved_at: None,
                    resolved_by: None,
                },
            )
            .await?;
            store::append_events(
                tx,
                &j.instance_id,
                &[(
                    now,
                    j.element.clone(),
                    "incident".into(),
                    Some(message.to_owned()),
                )],
            )
            .await?;
            metrics::counter!("ferrydesk_process_incidents_total").increment(1);
        } else {
            store::append_events(
                tx,
                &j.instance_id,
                &[(
                    now,
                    j.element.clone(),
                    "failed".into(),
                    Some(format!("{message} (retries left: {left})")),
                )],
            )
            .await?;
        }
        Ok(())
    }

    async fn run_plugin(
        &self,
        target: &str,
        job: Job,
    ) -> std::result::Result<serde_json::Value, JobError> {
        let Some(plugins) = self.inner.plugins.clone() else {
            return Err(JobError::failed("plugins are not available on this node"));
        };
        let (plugin, action) = target.split_once('/').ok_or_else(|| {
            JobError::failed(format!(
                "task type `plugin:{target}` is not plugin:<id>/<action>"
            ))
        })?;
        let actor = match &job.started_by {
            Some(u) => self.desk().principal_of(u).await.ok(),
            None => None,
        };
        let ctx = ferrydesk_plugins::actions::JobContext {
            actor,
            chat: job.chat_id.clone(),
            contact: job.contact_id.clone(),
            key: job.key.clone(),
        };
        plugins
            .run_for_process(
                plugin,
                action,
                serde_json::Value::Object(job.inputs.clone()),
                ctx,
            )
            .await
            .map_err(|e| match e {
                ferrydesk_plugins::actions::JobFailure::Plugin { code, message } => {
                    JobError::Bpmn { code, message }
                }
                ferrydesk_plugins::actions::JobFailure::Failed(m) => JobError::failed(m),
            })
    }

    /// Chat signals: each is deleted in the transaction that acts on it, so it is processed
    /// once even with several nodes.
    async fn consume_signals(&self) -> Result<usize> {
        let now = now();
        let mut tx = self.store_ref().begin().await?;
        let signals =
            store::claim_signals(&mut tx, self.store_ref().backend(), now, now + 30_000, 32)
                .await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        let n = signals.len();
        for s in signals {
            let (id, name) = (s.id.clone(), s.name.clone());
            // Last line of defence: a panic while acting on one signal (a bug) is logged and
            // the signal dropped, so it cannot take the job loop down again at every lease.
            let r = std::panic::AssertUnwindSafe(self.consume_signal(s))
                .catch_unwind()
                .await;
            match r {
                Ok(r) => r?,
                Err(_) => {
                    tracing::error!(signal = %name, id = %id, "process signal panicked; dropped");
                    let mut tx = self.store_ref().begin().await?;
                    store::delete_signal(&mut tx, &id).await?;
                    tx.commit().await.map_err(ferrydesk_store::Error::from)?;
                }
            }
        }
        Ok(n)
    }

    /// Acts on one claimed chat signal (see [`Engine::consume_signals`]).
    async fn consume_signal(&self, s: store::SignalRow) -> Result<()> {
        {
            let vars: serde_json::Value =
                serde_json::from_str(&s.variables).unwrap_or(serde_json::json!({}));
            let ctx = StartContext {
                chat: Some(ChatId(s.correlation_key.clone())),
                contact: vars
                    .get("contactId")
                    .and_then(|v| v.as_str())
                    .map(|c| ContactId(c.into())),
                case: None,
                started_by: vars
                    .get("operatorId")
                    .and_then(|v| v.as_str())
                    .map(|c| UserId(c.into())),
                start_key: Some(format!("signal:{}", s.id)),
                parent: None,
            };
            let mut tx = self.store_ref().begin().await?;
            if !store::delete_signal(&mut tx, &s.id).await? {
                return Ok(());
            }
            match self
                .correlate_in(
                    &mut tx,
                    &s.name,
                    &s.correlation_key,
                    vars,
                    ctx,
                    crate::Keep {
                        ttl: self.options().chat_message_ttl,
                        published_at: s.created_at,
                        earlier_only: true,
                    },
                )
                .await
            {
                Ok(_) => tx.commit().await.map_err(ferrydesk_store::Error::from)?,
                Err(Error::Store(e)) if e.is_retryable() => {
                    // A deadlock or serialisation failure (several nodes): the signal stays,
                    // and is claimed again when its lease runs out.
                    drop(tx);
                    tracing::info!(signal = %s.name, chat = %s.correlation_key, error = %e, "process signal will be retried");
                }
                Err(e) => {
                    // A signal a process cannot take (e.g. its gateway has no path) is logged
                    // and dropped, not retried forever; the chat itself is unaffected.
                    drop(tx);
                    tracing::warn!(signal = %s.name, chat = %s.correlation_key, error = %e, "process signal failed");
                    let mut tx = self.store_ref().begin().await?;
                    store::delete_signal(&mut tx, &s.id).await?;
                    tx.commit().await.map_err(ferrydesk_store::Error::from)?;
                }
            }
        }
        Ok(())
    }
}
