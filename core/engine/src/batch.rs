//! Set-based forms of the two hottest commands, for group commit: starting many instances and
//! completing a batch of finished jobs each cost a handful of statements per batch instead of
//! several per instance. They cover the common shapes (the steps create only jobs and timers,
//! cancel nothing, and no called instance ends); anything else makes them report `Fallback`,
//! and the caller takes the one-command-at-a-time path, which handles every case.
//!
//! Each command is planned in memory (`plan_start`, `plan_completions`) and written by one of
//! two lanes: sqlx (PostgreSQL, and SQLite when no file is at hand) or, on a SQLite file, the
//! store's fast lane (`ferrydesk_store::native`), which runs the whole transaction on one
//! blocking thread without sqlx's per-statement and per-row hand-offs.

use std::collections::HashMap;
use std::sync::Arc;

use ferrydesk_bpmn::Process;
use ferrydesk_bpmn::run::{self, Command, Wait};
use ferrydesk_desk::{Error, Result};
use ferrydesk_store::Conn;
use ferrydesk_store::native::NativeTx;
use ferrydesk_store::processes as store;

use crate::runner::{Finished, Outcome};
use crate::{Engine, corrupt, job_row, now, run_error, service_payload, stored_state};

/// Why a batch left the set-based path.
pub(crate) const FALLBACK: &str = "batch_fallback";

fn fallback() -> Error {
    Error::conflict(FALLBACK, "the batch needs the one-by-one path")
}

struct Live {
    row: store::InstanceRow,
    inst: run::Instance,
    process: Arc<Process>,
    events: Vec<(i64, String, String, Option<String>)>,
}

/// New jobs for a step's waits; `None` if a wait needs the one-by-one path.
fn jobs_for(row: &store::InstanceRow, step: run::Step, now: i64) -> Option<Vec<store::JobRow>> {
    if !step.cancelled.is_empty() {
        return None;
    }
    let mut out = Vec::with_capacity(step.waits.len());
    for w in step.waits {
        match w {
            Wait::Job {
                token,
                element,
                task_type,
                retries,
                headers,
                variables,
                inputs,
            } => out.push(job_row(
                row,
                token,
                &element,
                "service",
                &task_type,
                retries.max(1) as i64,
                now,
                service_payload(row, variables, inputs, headers),
                now,
            )),
            Wait::Timer {
                token,
                element,
                due,
            } => out.push(job_row(
                row,
                token,
                &element,
                "timer",
                "",
                3,
                due,
                serde_json::json!({}),
                now,
            )),
            _ => return None,
        }
    }
    Some(out)
}

/// What starting a batch of instances writes.
pub(crate) struct StartPlan {
    pub(crate) rows: Vec<store::InstanceRow>,
    events: Vec<store::HistoryRow>,
    jobs: Vec<store::JobRow>,
}

/// What completing a batch of jobs writes.
struct CompletePlan {
    jobs: Vec<store::JobRow>,
    events: Vec<store::HistoryRow>,
    updates: Vec<store::InstanceRow>,
    now: i64,
}

/// Plans starting one instance per set of variables, in memory.
pub(crate) fn plan_start(
    process: &Process,
    def: &store::DefinitionRow,
    variables: Vec<serde_json::Value>,
) -> Result<StartPlan> {
    let now = now();
    let mut rows = Vec::with_capacity(variables.len());
    let mut jobs = Vec::with_capacity(variables.len());
    let mut events = Vec::with_capacity(variables.len() * 3);
    for v in variables {
        let id = uuid::Uuid::now_v7().to_string();
        let mut inst = run::Instance::default();
        let step = run::apply(
            process,
            &mut inst,
            Command::Start {
                start: None,
                variables: if v.is_null() {
                    serde_json::json!({})
                } else {
                    v
                },
            },
            now,
        )
        .map_err(run_error)?;
        let mut row = store::InstanceRow {
            id: id.clone(),
            definition_id: def.id.clone(),
            process_key: def.process_key.clone(),
            state: if inst.completed {
                "completed"
            } else {
                "active"
            }
            .into(),
            data: String::new(),
            revision: 0,
            parent_id: None,
            parent_token: None,
            chat_id: None,
            contact_id: None,
            case_id: None,
            started_by: None,
            start_key: None,
            incidents: 0,
            started_at: now,
            updated_at: now,
            ended_at: inst.completed.then_some(now),
            events: 0,
        };
        let mut ev = vec![(String::new(), "started".to_owned(), Some(def.id.clone()))];
        ev.extend(
            inst.history
                .iter()
                .map(|e| (e.clone(), "completed".to_owned(), None)),
        );
        if inst.completed {
            ev.push((String::new(), "completed".into(), None));
        }
        for (element, event, detail) in ev {
            row.events += 1;
            events.push((id.clone(), row.events, now, element, event, detail));
        }
        jobs.extend(jobs_for(&row, step, now).ok_or_else(fallback)?);
        row.data = stored_state(&inst)?;
        rows.push(row);
    }
    Ok(StartPlan { rows, events, jobs })
}

impl Engine {
    /// Starts instances of one definition in `tx`, set-based. `Err(FALLBACK)` when a start
    /// needs more than jobs and timers.
    pub(crate) async fn start_batch(
        &self,
        tx: &mut Conn,
        def: &store::DefinitionRow,
        variables: Vec<serde_json::Value>,
    ) -> Result<Vec<String>> {
        let process = self.process(tx, &def.id).await?;
        let plan = plan_start(&process, def, variables)?;
        store::insert_instances(tx, &plan.rows).await?;
        store::insert_events(tx, &plan.events).await?;
        store::insert_jobs(tx, &plan.jobs).await?;
        Ok(plan.rows.into_iter().map(|r| r.id).collect())
    }

    /// [`Engine::start_batch`] in its own transaction on the fast lane.
    pub(crate) async fn start_batch_native(
        &self,
        def: &store::DefinitionRow,
        variables: Vec<serde_json::Value>,
    ) -> Result<Vec<String>> {
        let process = {
            let mut conn = self.store().read().await?;
            self.process(&mut conn, &def.id).await?
        };
        let plan = plan_start(&process, def, variables)?;
        let ids = plan.rows.iter().map(|r| r.id.clone()).collect();
        self.store()
            .native_write(move |tx| {
                tx.insert_instances(&plan.rows)?;
                tx.insert_events(&plan.events)?;
                tx.insert_jobs(&plan.jobs)
            })
            .await?;
        Ok(ids)
    }

    /// Completes a batch of finished jobs in `tx`, set-based: one fenced delete, one read of
    /// the instances, the state machine in memory, then one insert of new jobs, one of history
    /// rows and one update of the instances. `Err(FALLBACK)` (or any error) means: roll back
    /// and take the one-by-one path.
    pub(crate) async fn commit_batch_fast(&self, tx: &mut Conn, batch: &[Finished]) -> Result<()> {
        eligible(batch)?;
        let ids: Vec<&str> = batch.iter().map(|f| f.job.id.as_str()).collect();
        let removed: HashMap<String, i64> = store::finish_jobs(tx, self.node(), &ids)
            .await?
            .into_iter()
            .collect();
        let live_jobs = fenced(batch, &removed)?;
        let inst_ids = instance_ids(&live_jobs);
        let rows = store::lock_instances(tx, self.store().backend(), &inst_ids).await?;
        let mut processes: HashMap<String, Arc<Process>> = HashMap::new();
        for r in &rows {
            if !processes.contains_key(&r.definition_id) {
                let p = self.process(tx, &r.definition_id).await?;
                processes.insert(r.definition_id.clone(), p);
            }
        }
        let plan = self.plan_completions(&live_jobs, rows, &mut |d| {
            processes
                .get(d)
                .cloned()
                .ok_or_else(|| corrupt(format!("definition {d} not loaded")))
        })?;
        store::insert_jobs(tx, &plan.jobs).await?;
        store::insert_events(tx, &plan.events).await?;
        let written = store::update_instances(tx, &plan.updates, plan.now).await?;
        written_all(written, &plan)
    }

    /// [`Engine::commit_batch_fast`] in its own transaction on the fast lane; with `claim`,
    /// the same transaction then claims up to that many due jobs (the next round).
    pub(crate) async fn commit_batch_native(
        &self,
        batch: Arc<Vec<Finished>>,
        claim: Option<i64>,
    ) -> Result<Vec<store::JobRow>> {
        eligible(&batch)?;
        let engine = self.clone();
        self.store()
            .native_write(move |tx: &mut NativeTx<'_>| {
                let ids: Vec<&str> = batch.iter().map(|f| f.job.id.as_str()).collect();
                let removed: HashMap<String, i64> =
                    tx.finish_jobs(engine.node(), &ids)?.into_iter().collect();
                let live_jobs = fenced(&batch, &removed)?;
                let rows = tx.instances(&instance_ids(&live_jobs))?;
                let plan = engine.plan_completions(&live_jobs, rows, &mut |d| {
                    if let Some(p) = engine.cached_process(d) {
                        return Ok(p);
                    }
                    let (xml, key) = tx
                        .definition(d)?
                        .ok_or(Error::not_found("process definition"))?;
                    engine.cache_process(d, &xml, &key)
                })?;
                tx.insert_jobs(&plan.jobs)?;
                tx.insert_events(&plan.events)?;
                let written = tx.update_instances(&plan.updates, plan.now)?;
                written_all(written, &plan)?;
                Ok(match claim {
                    Some(limit) => {
                        let now = now();
                        let lease = engine.options().lease.as_millis() as i64;
                        tx.claim_jobs(engine.node(), now, now + lease, limit)?
                    }
                    None => Vec::new(),
                })
            })
            .await
    }

    /// Applies the completions to their instances in memory: the jobs, history rows and
    /// instance updates to write.
    fn plan_completions(
        &self,
        live_jobs: &[&Finished],
        rows: Vec<store::InstanceRow>,
        process_of: &mut dyn FnMut(&str) -> Result<Arc<Process>>,
    ) -> Result<CompletePlan> {
        let mut live: HashMap<String, Live> = HashMap::with_capacity(rows.len());
        for row in rows {
            if row.state != "active" {
                continue;
            }
            let inst: run::Instance = serde_json::from_str(&row.data).map_err(corrupt)?;
            let process = process_of(&row.definition_id)?;
            live.insert(
                row.id.clone(),
                Live {
                    row,
                    inst,
                    process,
                    events: Vec::new(),
                },
            );
        }
        let now = now();
        let mut jobs = Vec::with_capacity(live_jobs.len());
        for f in live_jobs {
            let j = &f.job;
            // The instance ended meanwhile: the completion is moot, as in the one-by-one path.
            let Some(l) = live.get_mut(&j.instance_id) else {
                continue;
            };
            let token = j.token as u64;
            let cmd = match &f.outcome {
                Outcome::Done(_) if j.kind == "timer" => Command::FireTimer { token },
                Outcome::Done(v) => Command::Complete {
                    token,
                    variables: if v.is_object() {
                        v.clone()
                    } else {
                        serde_json::json!({})
                    },
                },
                _ => return Err(fallback()),
            };
            let before = l.inst.history.len();
            let step = match run::apply(&l.process, &mut l.inst, cmd, now) {
                Ok(s) => s,
                Err(run::RunError::UnknownToken(_)) | Err(run::RunError::Completed) => continue,
                Err(e) => return Err(run_error(e)),
            };
            if l.inst.completed && l.row.parent_id.is_some() {
                return Err(fallback());
            }
            jobs.extend(jobs_for(&l.row, step, now).ok_or_else(fallback)?);
            l.events.extend(
                l.inst.history[before..]
                    .iter()
                    .map(|e| (now, e.clone(), "completed".to_owned(), None)),
            );
            if l.inst.completed {
                l.events
                    .push((now, String::new(), "completed".into(), None));
            }
            if j.kind == "timer" {
                metrics::counter!("ferrydesk_process_timers_fired_total").increment(1);
            } else {
                metrics::counter!("ferrydesk_process_jobs_completed_total").increment(1);
            }
        }
        let mut events = Vec::new();
        let mut updates = Vec::with_capacity(live.len());
        for (_, mut l) in live {
            for (at, element, event, detail) in l.events.drain(..) {
                l.row.events += 1;
                events.push((l.row.id.clone(), l.row.events, at, element, event, detail));
            }
            if l.inst.completed {
                l.row.state = "completed".into();
                metrics::counter!("ferrydesk_process_instances_completed_total").increment(1);
            }
            if let Some(c) = l.inst.variables.get("caseId").and_then(|v| v.as_str()) {
                l.row.case_id = Some(c.to_owned());
            }
            l.row.data = stored_state(&l.inst)?;
            updates.push(l.row);
        }
        Ok(CompletePlan {
            jobs,
            events,
            updates,
            now,
        })
    }
}

/// Only plain completions of service tasks and timers take the set-based path.
fn eligible(batch: &[Finished]) -> Result<()> {
    if batch.iter().any(|f| {
        !matches!(f.outcome, Outcome::Done(_))
            || !matches!(f.job.kind.as_str(), "service" | "timer")
    }) {
        return Err(fallback());
    }
    Ok(())
}

/// The finished jobs whose removal passed the fence (owner and attempt); stale ones are
/// counted and dropped.
fn fenced<'b>(batch: &'b [Finished], removed: &HashMap<String, i64>) -> Result<Vec<&'b Finished>> {
    let mut live_jobs = Vec::with_capacity(batch.len());
    for f in batch {
        match removed.get(&f.job.id) {
            Some(a) if *a == f.job.attempt => live_jobs.push(f),
            // Claimed again by this node since: the fence needs the one-by-one path.
            Some(_) => return Err(fallback()),
            None => {
                metrics::counter!("ferrydesk_process_stale_completions_total").increment(1);
            }
        }
    }
    Ok(live_jobs)
}

fn instance_ids<'b>(live_jobs: &[&'b Finished]) -> Vec<&'b str> {
    let mut ids: Vec<&str> = live_jobs
        .iter()
        .map(|f| f.job.instance_id.as_str())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn written_all(written: u64, plan: &CompletePlan) -> Result<()> {
    if written != plan.updates.len() as u64 {
        return Err(Error::conflict(
            "concurrent_update",
            "an instance changed concurrently; retry",
        ));
    }
    metrics::counter!("ferrydesk_process_commands_total").increment(plan.updates.len() as u64);
    Ok(())
}
