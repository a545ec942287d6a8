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
use crate::{Engine, corrupt, job_row, now, run_error, service_payload};

/// Why a batch left the set-based path.
pub(crate) const FALLBACK: &str = "batch_fallback";

fn fallback() -> Error {
    Error::conflict(FALLBACK, "the batch needs the one-by-one path")
}

/// What a batch planned from cached states assumed no longer holds.
fn changed() -> Error {
    Error::conflict(
        "concurrent_update",
        "an instance changed concurrently; retry",
    )
}

struct Live {
    row: store::InstanceRow,
    inst: run::Instance,
    process: Arc<Process>,
    events: Vec<(i64, String, String, Option<String>)>,
    /// The history count as read (the update checks it with the revision).
    read_events: i64,
}

/// An active instance as this node last wrote it: the row (without its serialised state) and
/// the state itself.
pub(crate) struct Cached {
    row: store::InstanceRow,
    inst: run::Instance,
}

/// Instances this node wrote last, so that the fast lane's next step of each plans without
/// reading and parsing it again. Correctness does not rest on it: the update of each instance
/// is conditional on the revision and history count planned from, so a write by anyone else
/// (another node, the one-by-one path, an admin's cancel) fails the batch, which is then
/// redone from what is stored. Entries are taken out when used and put back after a commit,
/// so a rolled-back batch leaves none behind. Bounded: two generations of
/// [`StateCache::GENERATION`] entries, the older dropped when the younger fills.
#[derive(Default)]
pub(crate) struct StateCache {
    young: HashMap<String, Cached>,
    old: HashMap<String, Cached>,
}

impl StateCache {
    const GENERATION: usize = 8192;

    fn take(&mut self, id: &str) -> Option<Cached> {
        self.young.remove(id).or_else(|| self.old.remove(id))
    }

    fn put(&mut self, c: Cached) {
        if self.young.len() >= Self::GENERATION {
            self.old = std::mem::take(&mut self.young);
        }
        self.old.remove(&c.row.id);
        self.young.insert(c.row.id.clone(), c);
    }
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
    /// Each row's state (history taken out).
    states: Vec<run::Instance>,
    events: Vec<store::HistoryRow>,
    jobs: Vec<store::JobRow>,
}

/// What completing a batch of jobs writes.
pub(crate) struct CompletePlan {
    jobs: Vec<store::JobRow>,
    events: Vec<store::HistoryRow>,
    updates: Vec<store::InstanceRow>,
    /// Per update: the history count it was planned from, and the new state.
    read_events: Vec<i64>,
    states: Vec<run::Instance>,
    now: i64,
    /// Timers fired, jobs completed, instances completed.
    counts: [u64; 3],
}

impl CompletePlan {
    /// Its metrics, once committed.
    pub(crate) fn count(&self) {
        let [timers, jobs, instances] = self.counts;
        metrics::counter!("ferrydesk_process_timers_fired_total").increment(timers);
        metrics::counter!("ferrydesk_process_jobs_completed_total").increment(jobs);
        metrics::counter!("ferrydesk_process_instances_completed_total").increment(instances);
        metrics::counter!("ferrydesk_process_commands_total").increment(self.updates.len() as u64);
    }
}

/// Plans starting one instance per set of variables, in memory.
pub(crate) fn plan_start(
    process: &Process,
    def: &store::DefinitionRow,
    variables: Vec<serde_json::Value>,
) -> Result<StartPlan> {
    let now = now();
    let mut rows = Vec::with_capacity(variables.len());
    let mut states = Vec::with_capacity(variables.len());
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
        let mut ev = vec![(
            now,
            String::new(),
            "started".to_owned(),
            Some(def.id.clone()),
        )];
        ev.extend(
            inst.history
                .iter()
                .map(|e| (now, e.clone(), "completed".to_owned(), None)),
        );
        if inst.completed {
            ev.push((now, String::new(), "completed".into(), None));
        }
        events.extend(store::history_rows(&id, row.events + 1, &ev)?);
        row.events += ev.len() as i64;
        jobs.extend(jobs_for(&row, step, now).ok_or_else(fallback)?);
        inst.history.clear();
        row.data = serde_json::to_string(&inst).map_err(corrupt)?;
        rows.push(row);
        states.push(inst);
    }
    Ok(StartPlan {
        rows,
        states,
        events,
        jobs,
    })
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
        let process = match self.cached_process(&def.id) {
            Some(p) => p,
            None => {
                let mut conn = self.store().read().await?;
                self.process(&mut conn, &def.id).await?
            }
        };
        let mut plan = plan_start(&process, def, variables)?;
        // The new jobs are inserted claimed by this node and handed to its next round
        // (`run_due_jobs`, or the job loop), which then needs no claim of its own.
        let now = now();
        let lease = self.options().lease.as_millis() as i64;
        let mut pushed = Vec::new();
        push_jobs(
            &mut plan.jobs,
            &mut pushed,
            self.node(),
            now,
            now + lease,
            i64::MAX,
        );
        let plan = self
            .store()
            .native_write(move |tx| {
                tx.insert_instances(&plan.rows)?;
                tx.insert_events(&plan.events)?;
                tx.insert_jobs(&plan.jobs)?;
                Ok::<_, ferrydesk_store::Error>(plan)
            })
            .await?;
        let ids = plan.rows.iter().map(|r| r.id.clone()).collect();
        self.cache_states(plan.rows, plan.states, 0);
        if let Ok(mut q) = self.inner.pushed.lock() {
            q.extend(pushed);
        }
        Ok(ids)
    }

    /// Completes a batch of finished jobs in `tx`, set-based: one fenced delete, one read of
    /// the instances, the state machine in memory, then one insert of new jobs, one of history
    /// rows and one update of the instances. `Err(FALLBACK)` (or any error) means: roll back
    /// and take the one-by-one path.
    /// The plan is returned for its metrics ([`CompletePlan::count`] once committed).
    pub(crate) async fn commit_batch_fast(
        &self,
        tx: &mut Conn,
        batch: &[Finished],
    ) -> Result<CompletePlan> {
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
        let loaded = rows.into_iter().map(|r| (r, None)).collect();
        let plan = self.plan_completions(&live_jobs, loaded, &mut |d| {
            processes
                .get(d)
                .cloned()
                .ok_or_else(|| corrupt(format!("definition {d} not loaded")))
        })?;
        store::insert_jobs(tx, &plan.jobs).await?;
        store::insert_events(tx, &plan.events).await?;
        let written = store::update_instances(tx, &plan.updates, plan.now).await?;
        written_all(written, &plan)?;
        Ok(plan)
    }

    /// [`Engine::commit_batch_fast`] in its own transaction on the fast lane; with `claim`,
    /// the same transaction then claims up to that many due jobs (the next round).
    ///
    /// Instances in the node's [`StateCache`] are not read. When all of the batch's are there
    /// (the steady state of a busy node), the batch is planned before the writer is taken, so
    /// the writer only checks and writes, and planning one batch overlaps writing another.
    /// Should a check fail (a job's fence, an instance changed meanwhile), the batch is planned
    /// again from what is stored.
    pub(crate) async fn commit_batch_native(
        &self,
        batch: Arc<Vec<Finished>>,
        claim: Option<i64>,
    ) -> Result<Vec<store::JobRow>> {
        eligible(&batch)?;
        let cached = self.take_states(&batch);
        let first = if cached.is_empty() {
            None
        } else if batch
            .iter()
            .all(|f| cached.contains_key(&f.job.instance_id))
        {
            self.inner
                .planned_ahead
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            Some(self.commit_planned(batch.clone(), claim, cached).await)
        } else {
            Some(self.commit_read(batch.clone(), claim, cached).await)
        };
        use std::sync::atomic::Ordering::Relaxed;
        match first {
            Some(Err(Error::Conflict {
                code: "concurrent_update",
                ..
            })) => {
                self.inner.replanned.fetch_add(1, Relaxed);
                self.commit_read(batch, claim, HashMap::new()).await
            }
            None => self.commit_read(batch, claim, HashMap::new()).await,
            Some(r) => r,
        }
    }

    /// Fast-lane batches planned from cached states before taking the writer, and those
    /// planned again from what is stored because a check failed (another writer changed an
    /// instance, a job's fence), since this engine started.
    pub fn plan_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.inner.planned_ahead.load(Relaxed),
            self.inner.replanned.load(Relaxed),
        )
    }

    /// The fast lane's commit of a batch planned from cached states only.
    async fn commit_planned(
        &self,
        batch: Arc<Vec<Finished>>,
        claim: Option<i64>,
        cached: HashMap<String, Cached>,
    ) -> Result<Vec<store::JobRow>> {
        let mut processes = HashMap::new();
        for c in cached.values() {
            let d = &c.row.definition_id;
            if !processes.contains_key(d) {
                let p = self.cached_process(d).ok_or_else(changed)?;
                processes.insert(d.clone(), p);
            }
        }
        let loaded = cached
            .into_values()
            .map(|c| (c.row, Some(c.inst)))
            .collect();
        let all: Vec<&Finished> = batch.iter().collect();
        let plan = self.plan_completions(&all, loaded, &mut |d| {
            processes.get(d).cloned().ok_or_else(changed)
        })?;
        let engine = self.clone();
        let (next, plan) = self
            .store()
            .native_write(move |tx: &mut NativeTx<'_>| {
                // The plan assumed every job still held by this node at its attempt.
                if finish_batch(tx, engine.node(), &batch)?.len() != batch.len() {
                    return Err(changed());
                }
                engine.write_plan(tx, plan, claim)
            })
            .await?;
        self.committed(plan);
        Ok(next)
    }

    /// The fast lane's commit of a batch whose instances (those not in `cached`) are read in
    /// the transaction.
    async fn commit_read(
        &self,
        batch: Arc<Vec<Finished>>,
        claim: Option<i64>,
        mut cached: HashMap<String, Cached>,
    ) -> Result<Vec<store::JobRow>> {
        let engine = self.clone();
        let (next, plan) = self
            .store()
            .native_write(move |tx: &mut NativeTx<'_>| {
                let removed = finish_batch(tx, engine.node(), &batch)?;
                let live_jobs = fenced(&batch, &removed)?;
                let mut loaded = Vec::with_capacity(live_jobs.len());
                let mut missing = Vec::new();
                for id in instance_ids(&live_jobs) {
                    match cached.remove(id) {
                        Some(c) => loaded.push((c.row, Some(c.inst))),
                        None => missing.push(id),
                    }
                }
                loaded.extend(tx.instances(&missing)?.into_iter().map(|r| (r, None)));
                let plan = engine.plan_completions(&live_jobs, loaded, &mut |d| {
                    if let Some(p) = engine.cached_process(d) {
                        return Ok(p);
                    }
                    let (xml, key) = tx
                        .definition(d)?
                        .ok_or(Error::not_found("process definition"))?;
                    engine.cache_process(d, &xml, &key)
                })?;
                engine.write_plan(tx, plan, claim)
            })
            .await?;
        self.committed(plan);
        Ok(next)
    }

    /// Writes a completion plan in the fast lane's transaction (after the jobs' removal):
    /// with `claim`, claims the next round first. Returns the next round and the plan.
    fn write_plan(
        &self,
        tx: &mut NativeTx<'_>,
        mut plan: CompletePlan,
        claim: Option<i64>,
    ) -> Result<(Vec<store::JobRow>, CompletePlan)> {
        let next = match claim {
            Some(limit) => {
                // Jobs already due come first (oldest first), then this round's new jobs fill
                // what room is left: they are inserted claimed by this node (attempt 1,
                // leased), which spares each a claim's row update. A node that dies before
                // running them leaves them to lease expiry, as any claimed job.
                let now = now();
                let lease = self.options().lease.as_millis() as i64;
                let mut next = tx.claim_jobs(self.node(), now, now + lease, limit)?;
                push_jobs(
                    &mut plan.jobs,
                    &mut next,
                    self.node(),
                    now,
                    now + lease,
                    limit,
                );
                next
            }
            None => Vec::new(),
        };
        let written = tx.update_instances(&plan.updates, &plan.read_events, plan.now)?;
        written_all(written, &plan)?;
        tx.insert_jobs(&plan.jobs)?;
        tx.insert_events(&plan.events)?;
        Ok((next, plan))
    }

    /// After a plan's commit: its metrics, and its instances' new states into the cache.
    fn committed(&self, plan: CompletePlan) {
        plan.count();
        self.cache_states(plan.updates, plan.states, 1);
    }

    /// Up to `limit` jobs that `start_many` created claimed by this node. Jobs whose lease
    /// has (almost) run out while they waited here are dropped instead: any node's next claim
    /// takes them as it takes any expired job, so they never run twice from here.
    pub(crate) fn take_pushed(&self, limit: usize) -> Vec<store::JobRow> {
        let Ok(mut q) = self.inner.pushed.lock() else {
            return Vec::new();
        };
        // What is left must be worth running: a quarter of the lease, at most a second.
        let margin = (self.options().lease.as_millis() as i64 / 4).min(1_000);
        let fresh = now() + margin;
        let mut out = Vec::with_capacity(limit.min(q.len()));
        while out.len() < limit
            && let Some(j) = q.pop_front()
        {
            if j.lock_expires.is_some_and(|e| e > fresh) {
                out.push(j);
            }
        }
        out
    }

    /// The cached states of the batch's instances, taken out of the cache.
    fn take_states(&self, batch: &[Finished]) -> HashMap<String, Cached> {
        let Ok(mut cache) = self.inner.states.lock() else {
            return HashMap::new();
        };
        let mut out = HashMap::new();
        for f in batch {
            let id = &f.job.instance_id;
            if !out.contains_key(id)
                && let Some(c) = cache.take(id)
            {
                out.insert(id.clone(), c);
            }
        }
        out
    }

    /// Remembers what a commit wrote: `rows` with their revision advanced by `bump` (the
    /// update added one; an insert none), active ones only, without the serialised state.
    fn cache_states(&self, rows: Vec<store::InstanceRow>, states: Vec<run::Instance>, bump: i64) {
        let Ok(mut cache) = self.inner.states.lock() else {
            return;
        };
        for (mut row, inst) in rows.into_iter().zip(states) {
            if row.state != "active" {
                continue;
            }
            row.revision += bump;
            row.data = String::new();
            cache.put(Cached { row, inst });
        }
    }

    /// Applies the completions to their instances in memory: the jobs, history rows and
    /// instance updates to write.
    fn plan_completions(
        &self,
        live_jobs: &[&Finished],
        loaded: Vec<(store::InstanceRow, Option<run::Instance>)>,
        process_of: &mut dyn FnMut(&str) -> Result<Arc<Process>>,
    ) -> Result<CompletePlan> {
        let mut live: HashMap<String, Live> = HashMap::with_capacity(loaded.len());
        for (row, inst) in loaded {
            if row.state != "active" {
                continue;
            }
            let inst: run::Instance = match inst {
                Some(i) => i,
                None => serde_json::from_str(&row.data).map_err(corrupt)?,
            };
            let process = process_of(&row.definition_id)?;
            live.insert(
                row.id.clone(),
                Live {
                    read_events: row.events,
                    row,
                    inst,
                    process,
                    events: Vec::new(),
                },
            );
        }
        let now = now();
        let mut jobs = Vec::with_capacity(live_jobs.len());
        let (mut timers_fired, mut jobs_completed, mut instances_completed) = (0, 0, 0);
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
                timers_fired += 1;
            } else {
                jobs_completed += 1;
            }
        }
        let mut events = Vec::new();
        let mut updates = Vec::with_capacity(live.len());
        let mut read_events = Vec::with_capacity(live.len());
        let mut states = Vec::with_capacity(live.len());
        for (_, mut l) in live {
            events.extend(store::history_rows(&l.row.id, l.row.events + 1, &l.events)?);
            l.row.events += l.events.len() as i64;
            if l.inst.completed {
                l.row.state = "completed".into();
                instances_completed += 1;
            }
            if let Some(c) = l.inst.variables.get("caseId").and_then(|v| v.as_str()) {
                l.row.case_id = Some(c.to_owned());
            }
            l.inst.history.clear();
            l.row.data = serde_json::to_string(&l.inst).map_err(corrupt)?;
            updates.push(l.row);
            read_events.push(l.read_events);
            states.push(l.inst);
        }
        Ok(CompletePlan {
            jobs,
            events,
            updates,
            read_events,
            states,
            now,
            counts: [timers_fired, jobs_completed, instances_completed],
        })
    }
}

/// Marks new jobs that are due by `now` as claimed by `owner` until `lock_until` and adds
/// them to `next`, until `next` holds `limit` jobs. The same columns as a claim would write.
fn push_jobs(
    jobs: &mut [store::JobRow],
    next: &mut Vec<store::JobRow>,
    owner: &str,
    now: i64,
    lock_until: i64,
    limit: i64,
) {
    for j in jobs.iter_mut() {
        if next.len() as i64 >= limit {
            break;
        }
        if j.due_at > now || !matches!(j.kind.as_str(), "service" | "timer") {
            continue;
        }
        j.state = "locked".into();
        j.lock_owner = Some(owner.to_owned());
        j.lock_expires = Some(lock_until);
        j.attempt += 1;
        next.push(j.clone());
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

/// Removes the batch's jobs that `owner` still holds at their attempt (the fast lane's fence);
/// returns those removed, by id.
fn finish_batch(
    tx: &mut NativeTx<'_>,
    owner: &str,
    batch: &[Finished],
) -> Result<HashMap<String, i64>> {
    let ids: Vec<(&str, i64)> = batch
        .iter()
        .map(|f| (f.job.id.as_str(), f.job.attempt))
        .collect();
    Ok(tx.finish_jobs(owner, &ids)?.into_iter().collect())
}

/// The finished jobs whose removal passed the fence (owner and attempt); stale ones are
/// counted and dropped.
fn fenced<'b>(batch: &'b [Finished], removed: &HashMap<String, i64>) -> Result<Vec<&'b Finished>> {
    let mut live_jobs = Vec::with_capacity(batch.len());
    for f in batch {
        match removed.get(&f.job.id) {
            Some(a) if *a == f.job.attempt => live_jobs.push(f),
            // Claimed again by this node since (the sqlx lane; the fast lane's removal is
            // fenced on the attempt itself): the fence needs the one-by-one path.
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
        return Err(changed());
    }
    Ok(())
}
