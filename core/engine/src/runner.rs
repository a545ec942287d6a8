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
use tokio::sync::{Semaphore, watch};

use crate::{Engine, Job, JobError, StartContext, now};

pub(crate) fn spawn(engine: Engine, mut shutdown: watch::Receiver<bool>) {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(engine.options().concurrency.max(1)));
        loop {
            if *shutdown.borrow() {
                return;
            }
            let mut busy = false;
            match engine.consume_signals().await {
                Ok(n) => busy |= n > 0,
                Err(e) => tracing::warn!(error = %e, "process signals"),
            }
            let free = slots.available_permits();
            if free > 0 {
                match engine.claim(free as i64).await {
                    Ok(jobs) => {
                        busy |= !jobs.is_empty();
                        for j in jobs {
                            let Ok(permit) = slots.clone().acquire_owned().await else {
                                return;
                            };
                            let e = engine.clone();
                            tokio::spawn(async move {
                                e.execute(j).await;
                                drop(permit);
                                e.wake();
                            });
                        }
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

    /// Runs every due job on this task until none is left (benchmarks and tests drive an
    /// embedded engine this way). Returns how many ran.
    pub async fn run_due_jobs(&self) -> Result<usize> {
        let mut n = 0;
        loop {
            let jobs = self.claim(64).await?;
            if jobs.is_empty() {
                return Ok(n);
            }
            n += jobs.len();
            for j in jobs {
                self.execute(j).await;
            }
        }
    }

    /// Runs one claimed job to its end: completion, retry or incident. Never panics; errors
    /// are recorded on the job.
    pub(crate) async fn execute(&self, j: store::JobRow) {
        let r = match j.kind.as_str() {
            "timer" => self.fire_timer(&j).await,
            "service" => self.run_service(&j).await,
            other => Err(Error::Internal(format!("job kind `{other}` cannot run"))),
        };
        if let Err(e) = r {
            // The fenced completion failed for a reason the job itself did not report (a
            // mapping error, a gateway without a path): that is an incident, not a retry.
            tracing::warn!(job = %j.id, instance = %j.instance_id, error = %e, "process job failed");
            if let Err(e2) = self.fail(&j, &e.to_string(), None, true).await {
                tracing::warn!(job = %j.id, error = %e2, "recording a job failure");
            }
        }
    }

    async fn fire_timer(&self, j: &store::JobRow) -> Result<()> {
        let mut tx = self.store_ref().begin().await?;
        if !store::finish_job(&mut tx, &j.id, self.node(), j.attempt).await? {
            return Ok(()); // another node took it over after our lease ran out
        }
        match self
            .command(&mut tx, &j.instance_id, Command::FireTimer { token: j.token as u64 })
            .await
        {
            Ok(()) => {
                tx.commit().await.map_err(ferrydesk_store::Error::from)?;
                metrics::counter!("ferrydesk_process_timers_fired_total").increment(1);
                Ok(())
            }
            // The instance ended or the timer's activity completed meanwhile: nothing to do.
            Err(Error::Conflict { code: "stale" | "instance_ended", .. }) => {
                tx.commit().await.map_err(ferrydesk_store::Error::from)?;
                Ok(())
            }
            Err(e) => Err(e),
        }
    }

    async fn job_of(&self, j: &store::JobRow) -> Result<(Job, Arc<Process>)> {
        let mut conn = self.store_ref().read().await?;
        let inst = store::get_instance(&mut conn, &j.instance_id)
            .await?
            .ok_or(Error::not_found("process instance"))?;
        let process = self.process(&mut conn, &inst.definition_id).await?;
        let payload: serde_json::Value =
            serde_json::from_str(&j.payload).unwrap_or(serde_json::Value::Null);
        let obj = |k: &str| {
            payload
                .get(k)
                .and_then(|v| v.as_object())
                .cloned()
                .unwrap_or_default()
        };
        Ok((
            Job {
                id: j.id.clone(),
                key: format!("{}:{}", j.instance_id, j.token),
                instance_id: j.instance_id.clone(),
                process_key: inst.process_key.clone(),
                element: j.element.clone(),
                task_type: j.task_type.clone(),
                headers: obj("headers"),
                variables: payload
                    .get("variables")
                    .cloned()
                    .unwrap_or(serde_json::json!({})),
                inputs: obj("inputs"),
                retries: j.retries,
                attempt: j.attempt,
                chat_id: inst.chat_id.clone().map(ChatId),
                contact_id: inst.contact_id.clone().map(ContactId),
                started_by: inst.started_by.clone().map(UserId),
            },
            process,
        ))
    }

    async fn run_service(&self, j: &store::JobRow) -> Result<()> {
        let (job, process) = self.job_of(j).await?;
        let worker = self
            .inner
            .workers
            .read()
            .ok()
            .and_then(|w| w.get(&j.task_type).cloned());
        // The worker must answer within the lease, or another node may run the job again.
        let budget = self.options().lease.saturating_sub(Duration::from_secs(1)).max(Duration::from_millis(500));
        let started = std::time::Instant::now();
        let outcome = if let Some(w) = worker {
            match tokio::time::timeout(budget, w(job.clone())).await {
                Ok(r) => r,
                Err(_) => Err(JobError::failed(format!(
                    "the worker did not answer within {} s",
                    budget.as_secs()
                ))),
            }
        } else if let Some(rest) = j.task_type.strip_prefix("plugin:") {
            match tokio::time::timeout(budget, self.run_plugin(rest, job.clone())).await {
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
        metrics::histogram!("ferrydesk_process_job_seconds").record(started.elapsed().as_secs_f64());
        match outcome {
            Ok(vars) => {
                let mut tx = self.store_ref().begin().await?;
                if !store::finish_job(&mut tx, &j.id, self.node(), j.attempt).await? {
                    tracing::info!(job = %j.id, "late completion refused: the job was taken over");
                    metrics::counter!("ferrydesk_process_stale_completions_total").increment(1);
                    return Ok(());
                }
                let vars = if vars.is_object() { vars } else { serde_json::json!({}) };
                match self
                    .command(&mut tx, &j.instance_id, Command::Complete { token: j.token as u64, variables: vars })
                    .await
                {
                    Ok(()) | Err(Error::Conflict { code: "stale" | "instance_ended", .. }) => {
                        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
                        metrics::counter!("ferrydesk_process_jobs_completed_total").increment(1);
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            }
            Err(JobError::Bpmn { code, message }) if catches(&process, &j.element, &code) => {
                let mut tx = self.store_ref().begin().await?;
                if !store::finish_job(&mut tx, &j.id, self.node(), j.attempt).await? {
                    return Ok(());
                }
                self.command(
                    &mut tx,
                    &j.instance_id,
                    Command::Throw { token: j.token as u64, code, message },
                )
                .await?;
                tx.commit().await.map_err(ferrydesk_store::Error::from)?;
                Ok(())
            }
            Err(JobError::Bpmn { code, message }) => {
                self.fail(j, &format!("{message} [{code}]"), None, false).await
            }
            Err(JobError::Failed { message, retry_after }) => {
                self.fail(j, &message, retry_after, false).await
            }
        }
    }

    /// A failed attempt: retry later, or raise an incident when no retries are left (or at
    /// once when `fatal`).
    async fn fail(
        &self,
        j: &store::JobRow,
        message: &str,
        retry_after: Option<Duration>,
        fatal: bool,
    ) -> Result<()> {
        let now = now();
        let left = if fatal { 0 } else { (j.retries - 1).max(0) };
        let delay = retry_after
            .unwrap_or_else(|| backoff(self.options().backoff, self.options().max_backoff, j.attempt));
        let mut tx = self.store_ref().begin().await?;
        if !store::fail_job(&mut tx, &j.id, self.node(), j.attempt, left, now + delay.as_millis() as i64, message).await? {
            return Ok(());
        }
        metrics::counter!("ferrydesk_process_job_failures_total").increment(1);
        if left == 0 {
            store::insert_incident(
                &mut tx,
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
                &mut tx,
                &j.instance_id,
                &[(now, j.element.clone(), "incident".into(), Some(message.to_owned()))],
            )
            .await?;
            metrics::counter!("ferrydesk_process_incidents_total").increment(1);
        } else {
            store::append_events(
                &mut tx,
                &j.instance_id,
                &[(now, j.element.clone(), "failed".into(), Some(format!("{message} (retries left: {left})")))],
            )
            .await?;
        }
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(())
    }

    async fn run_plugin(&self, target: &str, job: Job) -> std::result::Result<serde_json::Value, JobError> {
        let Some(plugins) = self.inner.plugins.clone() else {
            return Err(JobError::failed("plugins are not available on this node"));
        };
        let (plugin, action) = target
            .split_once('/')
            .ok_or_else(|| JobError::failed(format!("task type `plugin:{target}` is not plugin:<id>/<action>")))?;
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
            .run_for_process(plugin, action, serde_json::Value::Object(job.inputs.clone()), ctx)
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
            store::claim_signals(&mut tx, self.store_ref().backend(), now, now + 30_000, 32).await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        let n = signals.len();
        for s in signals {
            let vars: serde_json::Value =
                serde_json::from_str(&s.variables).unwrap_or(serde_json::json!({}));
            let ctx = StartContext {
                chat: Some(ChatId(s.correlation_key.clone())),
                contact: vars.get("contactId").and_then(|v| v.as_str()).map(|c| ContactId(c.into())),
                case: None,
                started_by: vars.get("operatorId").and_then(|v| v.as_str()).map(|c| UserId(c.into())),
                start_key: Some(format!("signal:{}", s.id)),
                parent: None,
            };
            let mut tx = self.store_ref().begin().await?;
            if !store::delete_signal(&mut tx, &s.id).await? {
                continue;
            }
            match self.correlate_in(&mut tx, &s.name, &s.correlation_key, vars, ctx).await {
                Ok(_) => tx.commit().await.map_err(ferrydesk_store::Error::from)?,
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
        Ok(n)
    }
}
