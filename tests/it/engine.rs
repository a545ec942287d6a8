//! The process engine embedded in the test process (as the benchmark and embedding programs
//! use it), on both backends and, on SQLite, on both lanes: the store's fast lane (rusqlite on
//! a blocking thread) and sqlx. The same workload must leave the same stored state, a failing
//! job must fall back to the one-by-one path, and a stale worker's completion must be fenced.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Result, bail, ensure};
use ferrydesk_desk::{Desk, DeskOptions, blobs::LocalBlobStore};
use ferrydesk_engine::{Engine, EngineOptions, JobError};
use ferrydesk_store::{Store, StoreOptions};
use ferrydesk_tests::{Backend, Db};
use serde_json::json;

use crate::on_both_backends;

on_both_backends!(
    lanes_agree,
    stale_completion_is_fenced,
    another_writer_beats_the_cache,
    start_many_hands_its_jobs_to_its_node
);

const BPMN: &str = include_str!("../../core/bpmn/tests/bench_process.bpmn");
const N: usize = 120;

struct Node {
    store: Store,
    desk: Desk,
    engine: Engine,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.desk.shutdown();
    }
}

async fn node(db: &Db, fast_lane: bool, lease: Duration) -> Result<Node> {
    let store = Store::connect(&StoreOptions {
        url: db.url.clone(),
        max_connections: 4,
        fast_lane,
        min_free_disk_mb: 0,
    })
    .await?;
    store.migrate().await?;
    ensure!(
        store.native().is_some() == (fast_lane && db.backend == Backend::Sqlite),
        "the fast lane exists exactly on SQLite files when asked for"
    );
    let blobs = Arc::new(LocalBlobStore::new(db.dir.path().join("blobs"))?);
    let desk = Desk::start(store.clone(), blobs, DeskOptions::default()).await?;
    let engine = Engine::embedded(
        desk.clone(),
        EngineOptions {
            lease,
            backoff: Duration::from_millis(20),
            max_backoff: Duration::from_millis(50),
            ..EngineOptions::default()
        },
    );
    engine
        .deploy(None, BPMN)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(Node {
        store,
        desk,
        engine,
    })
}

/// Each instance's history as `element:event` lines, and the instances' final columns.
async fn stored(db: &Db) -> Result<(BTreeMap<i64, Vec<String>>, Vec<(String, String)>)> {
    let mut c = db.sql().await?;
    // Instances are told apart by their `amount` (unique per instance).
    let rows: Vec<(String, String, String, Option<String>)> = sqlx::query_as(
        "SELECT i.id, i.state, i.data, i.case_id FROM process_instances i ORDER BY i.id",
    )
    .fetch_all(&mut c)
    .await?;
    let mut histories = BTreeMap::new();
    let mut finals = Vec::new();
    for (id, state, data, case) in rows {
        let v: serde_json::Value = serde_json::from_str(&data)?;
        let amount = v["variables"]["amount"].as_i64().unwrap_or(-1);
        // History rows hold a command's events each (JSON [element, event, detail] from the
        // row's `seq` on).
        let rows: Vec<(i64, String)> = sqlx::query_as(
            "SELECT seq, events FROM process_history WHERE instance_id = $1 ORDER BY seq",
        )
        .bind(&id)
        .fetch_all(&mut c)
        .await?;
        let mut events: Vec<(i64, String, String)> = Vec::new();
        for (seq, list) in rows {
            let list: Vec<(String, String, Option<String>)> = serde_json::from_str(&list)?;
            for (k, (el, ev, _)) in list.into_iter().enumerate() {
                events.push((seq + k as i64, el, ev));
            }
        }
        for (k, (seq, _, _)) in events.iter().enumerate() {
            ensure!(
                *seq == k as i64 + 1,
                "instance {id}: history seq {seq} at {k}"
            );
        }
        histories.insert(
            amount,
            events
                .into_iter()
                .map(|(_, el, ev)| format!("{el}:{ev}"))
                .collect(),
        );
        finals.push((state, case.unwrap_or_default()));
    }
    Ok((histories, finals))
}

/// `N` instances, the VIP ones' notification failing once for amount 5001, while the desk
/// writes through sqlx at the same time; returns what was stored.
async fn workload(
    b: Backend,
    fast_lane: bool,
) -> Result<Option<(BTreeMap<i64, Vec<String>>, Vec<(String, String)>)>> {
    let Some(db) = Db::new(b).await? else {
        return Ok(None);
    };
    let n = node(&db, fast_lane, Duration::from_secs(60)).await?;
    let calls = Arc::new([
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ]);
    let failed_once = Arc::new(AtomicUsize::new(0));
    for (i, ty) in ["cases.create", "notify.vip", "notify.normal"]
        .into_iter()
        .enumerate()
    {
        let calls = calls.clone();
        let failed_once = failed_once.clone();
        n.engine.register(
            ty,
            Arc::new(move |job| {
                calls[i].fetch_add(1, Ordering::Relaxed);
                let amount = job.variables["amount"].as_i64().unwrap_or(0);
                let fail =
                    i == 1 && amount == 5001 && failed_once.fetch_add(1, Ordering::Relaxed) == 0;
                Box::pin(async move {
                    if fail {
                        return Err(JobError::failed("the VIP desk is down"));
                    }
                    Ok(if i == 0 {
                        json!({"caseId": format!("case-{amount}")})
                    } else {
                        json!({})
                    })
                })
            }),
        );
    }
    // The desk's own writes go through sqlx on the same file meanwhile: the fast lane holds
    // the store's writer slot, so neither waits on SQLite's lock nor fails with busy.
    let writer = {
        let store = n.store.clone();
        tokio::spawn(async move {
            for k in 0..100 {
                let mut tx = store.begin().await?;
                ferrydesk_store::settings::set(&mut tx, &format!("lane-test-{k}"), &json!(k))
                    .await?;
                tx.commit().await?;
            }
            anyhow::Ok(())
        })
    };
    for chunk in (0..N).collect::<Vec<_>>().chunks(50) {
        let vars = chunk
            .iter()
            .map(|k| json!({"amount": if k % 2 == 1 { 5000 + k } else { *k }}))
            .collect();
        let ids = n
            .engine
            .start_many("create_case", vars)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        ensure!(
            ids.len() == chunk.len(),
            "started {} of {}",
            ids.len(),
            chunk.len()
        );
        n.engine
            .run_due_jobs()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    // The failed job comes back after its backoff.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        n.engine
            .run_due_jobs()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let done = db
            .scalar_i64("SELECT COUNT(*) FROM process_instances WHERE state = 'completed'")
            .await?;
        if done == N as i64 {
            break;
        }
        if Instant::now() > deadline {
            bail!("only {done} of {N} instances completed");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    writer.await??;
    ensure!(
        db.scalar_i64("SELECT COUNT(*) FROM settings WHERE key LIKE 'lane-test-%'")
            .await?
            == 100,
        "the concurrent sqlx writes all committed"
    );
    ensure!(
        db.scalar_i64("SELECT COUNT(*) FROM process_jobs").await? == 0,
        "no job is left"
    );
    let c: Vec<usize> = calls.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    ensure!(
        c == [N, N / 2 + 1, N / 2],
        "each worker ran once per instance, the failed one twice: {c:?}"
    );
    // The set-based path did the work; only the batch with the failed job was redone one job
    // at a time. On the fast lane, its transactions committed there.
    let (set_based, one_by_one) = n.engine.batch_counts();
    ensure!(
        set_based >= 4 && one_by_one == 1,
        "batches: {set_based} set-based, {one_by_one} one by one"
    );
    if let Some(native) = n.store.native() {
        ensure!(
            native.commits() >= set_based + 3,
            "fast lane commits: {} for {set_based} set-based batches and 3 starts",
            native.commits()
        );
    }
    Ok(Some(stored(&db).await?))
}

fn expected_history(amount: i64) -> Vec<String> {
    let vip = amount > 1000;
    let task = if vip { "notifyVip" } else { "notifyNormal" };
    let mut h = vec![
        ":started".to_owned(),
        "start:completed".into(),
        "createCase:completed".into(),
        "gw:completed".into(),
    ];
    if amount == 5001 {
        h.push("notifyVip:failed".into());
    }
    h.extend([
        format!("{task}:completed"),
        "end:completed".into(),
        ":completed".into(),
    ]);
    h
}

async fn lanes_agree(b: Backend) -> Result<()> {
    let Some((histories, finals)) = workload(b, true).await? else {
        return Ok(());
    };
    ensure!(histories.len() == N, "{} instances stored", histories.len());
    for (amount, h) in &histories {
        ensure!(
            *h == expected_history(*amount),
            "instance with amount {amount}: history {h:?}"
        );
    }
    for (state, case) in &finals {
        ensure!(
            state == "completed" && case.starts_with("case-"),
            "final state {state}, case {case}"
        );
    }
    if b == Backend::Sqlite {
        // The sqlx lane on SQLite stores exactly the same.
        let Some((h2, f2)) = workload(b, false).await? else {
            bail!("SQLite is always there");
        };
        ensure!(h2 == histories, "the two lanes wrote different histories");
        let mut f1 = finals.clone();
        let mut f2 = f2;
        f1.sort();
        f2.sort();
        ensure!(f1 == f2, "the two lanes left different instances");
    }
    Ok(())
}

/// Two nodes on one database: node A's worker outlives its lease and node B takes the job
/// over; A answers while B still holds the job, and that late completion is refused by the
/// fence (B's answer is the one applied). The task ran twice with the same idempotency key,
/// the instance completed once.
async fn stale_completion_is_fenced(b: Backend) -> Result<()> {
    let Some(db) = Db::new(b).await? else {
        return Ok(());
    };
    let lease = Duration::from_millis(200);
    let a = node(&db, true, lease).await?;
    let bn = node(&db, true, lease).await?;
    let keys = Arc::new(Mutex::new(Vec::<(char, String, String)>::new()));
    // A answers once B has taken the job over and started on it; B answers 100 ms later
    // (within its own lease), so A's completion arrives while B holds the job.
    let b_started = Arc::new(tokio::sync::Notify::new());
    for (name, n) in [('a', &a), ('b', &bn)] {
        for ty in ["cases.create", "notify.vip", "notify.normal"] {
            let keys = keys.clone();
            let b_started = b_started.clone();
            n.engine.register(
                ty,
                Arc::new(move |job| {
                    keys.lock()
                        .expect("keys")
                        .push((name, job.element.clone(), job.key.clone()));
                    let create = job.element == "createCase";
                    let b_started = b_started.clone();
                    Box::pin(async move {
                        match (create, name) {
                            (true, 'a') => b_started.notified().await,
                            (true, _) => {
                                b_started.notify_one();
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            _ => {}
                        }
                        Ok(json!({"caseId": format!("case-{name}")}))
                    })
                }),
            );
        }
    }
    a.engine
        .start_many("create_case", vec![json!({"amount": 7})])
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let ea = a.engine.clone();
    let slow = tokio::spawn(async move { ea.run_due_jobs().await });
    tokio::time::sleep(lease + Duration::from_millis(50)).await;
    // A's lease ran out: B claims the job (attempt 2) and drives the instance to its end.
    let ran = bn
        .engine
        .run_due_jobs()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(ran >= 1, "node B ran no job");
    slow.await?.map_err(|e| anyhow::anyhow!("{e}"))?;
    if a.store.native().is_some() {
        // A had the instance cached from its start and planned the late completion ahead;
        // the fence check failed and A planned it again from what is stored.
        let (ahead, replanned) = a.engine.plan_counts();
        ensure!(
            ahead >= 1 && replanned >= 1,
            "node A: {ahead} batches planned ahead, {replanned} planned again"
        );
    }
    let keys = keys.lock().expect("keys").clone();
    let create: Vec<_> = keys
        .iter()
        .filter(|(_, el, _)| el == "createCase")
        .collect();
    ensure!(
        create.len() == 2 && create[0].0 == 'a' && create[1].0 == 'b' && create[0].2 == create[1].2,
        "createCase ran on A then B with one idempotency key: {keys:?}"
    );
    ensure!(
        keys.iter()
            .filter(|(_, el, _)| el == "notifyNormal")
            .count()
            == 1,
        "the next task ran once: {keys:?}"
    );
    let (histories, finals) = stored(&db).await?;
    ensure!(
        histories.get(&7) == Some(&expected_history(7)),
        "one history, each step once: {histories:?}"
    );
    ensure!(
        finals == [("completed".to_owned(), "case-b".to_owned())],
        "B's answer applied, A's refused: {finals:?}"
    );
    ensure!(
        db.scalar_i64("SELECT COUNT(*) FROM process_jobs").await? == 0,
        "no job is left"
    );
    Ok(())
}

/// The fast lane plans a node's next step of an instance from the state it last wrote. Another
/// writer changes one instance while its first task runs (here the stored `amount`, which the
/// gateway reads next): that batch must be planned again from what is stored, so the changed
/// instance takes the VIP branch and every other instance the normal one.
async fn another_writer_beats_the_cache(b: Backend) -> Result<()> {
    let Some(db) = Db::new(b).await? else {
        return Ok(());
    };
    let n = node(&db, true, Duration::from_secs(60)).await?;
    let calls = Arc::new([AtomicUsize::new(0), AtomicUsize::new(0)]);
    let store = n.store.clone();
    n.engine.register(
        "cases.create",
        Arc::new(move |job| {
            let store = store.clone();
            let instance = job.instance_id.clone();
            let marked = job.variables["amount"].as_i64() == Some(3);
            let noted = job.variables["amount"].as_i64() == Some(7);
            Box::pin(async move {
                if noted {
                    // Another writer adds to the instance's history only (as an incident
                    // does): the revision stays, the history count moves.
                    let mut tx = store
                        .begin()
                        .await
                        .map_err(|e| JobError::failed(e.to_string()))?;
                    ferrydesk_store::processes::append_events(
                        &mut tx,
                        &instance,
                        &[(1, "manual".into(), "note".into(), None)],
                    )
                    .await
                    .map_err(|e| JobError::failed(e.to_string()))?;
                    tx.commit()
                        .await
                        .map_err(|e| JobError::failed(e.to_string()))?;
                }
                if marked {
                    // Another writer (an admin tool, another node): a new revision of the
                    // instance with amount 5003.
                    let mut tx = store
                        .begin()
                        .await
                        .map_err(|e| JobError::failed(e.to_string()))?;
                    let (data,): (String,) =
                        sqlx::query_as("SELECT data FROM process_instances WHERE id = $1")
                            .bind(&instance)
                            .fetch_one(&mut *tx)
                            .await
                            .map_err(|e| JobError::failed(e.to_string()))?;
                    let mut v: serde_json::Value =
                        serde_json::from_str(&data).map_err(|e| JobError::failed(e.to_string()))?;
                    v["variables"]["amount"] = json!(5003);
                    sqlx::query(
                        "UPDATE process_instances SET data = $1, revision = revision + 1 \
                         WHERE id = $2",
                    )
                    .bind(v.to_string())
                    .bind(&instance)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| JobError::failed(e.to_string()))?;
                    tx.commit()
                        .await
                        .map_err(|e| JobError::failed(e.to_string()))?;
                }
                Ok(json!({"caseId": "c"}))
            })
        }),
    );
    for (i, ty) in ["notify.vip", "notify.normal"].into_iter().enumerate() {
        let calls = calls.clone();
        n.engine.register(
            ty,
            Arc::new(move |_| {
                calls[i].fetch_add(1, Ordering::Relaxed);
                Box::pin(async { Ok(json!({})) })
            }),
        );
    }
    // Two separate batches, so that each check is the only one that can catch its change:
    // the history-only change (7) in the first, the new revision (3) in the second.
    for amounts in [
        (0..10).filter(|k| *k != 3).collect::<Vec<i64>>(),
        (10..20).chain([3]).collect(),
    ] {
        let vars = amounts.iter().map(|k| json!({"amount": k})).collect();
        n.engine
            .start_many("create_case", vars)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        n.engine
            .run_due_jobs()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let c: Vec<usize> = calls.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    ensure!(
        c == [1, 19],
        "the changed instance went VIP, the others normal: {c:?}"
    );
    let (histories, finals) = stored(&db).await?;
    ensure!(
        histories.get(&5003) == Some(&expected_history(5003)),
        "the changed instance's history: {histories:?}"
    );
    // The note sits where it was written, the batch's events after it (`stored` checks that
    // the numbers are contiguous).
    let mut noted = expected_history(7);
    noted.insert(2, "manual:note".into());
    ensure!(
        histories.get(&7) == Some(&noted),
        "the noted instance's history: {:?}",
        histories.get(&7)
    );
    ensure!(
        finals.iter().filter(|(s, _)| s == "completed").count() == 20,
        "all completed: {finals:?}"
    );
    // Each change was caught by the checks of its planned batch (history count, revision),
    // which was planned again as a whole: no batch fell to the one-by-one path.
    let (_, one_by_one) = n.engine.batch_counts();
    ensure!(one_by_one == 0, "{one_by_one} batches went one by one");
    if n.store.native().is_some() {
        let (ahead, replanned) = n.engine.plan_counts();
        ensure!(
            ahead >= 2 && replanned == 2,
            "{ahead} batches planned ahead, {replanned} planned again (expected 2)"
        );
    }
    Ok(())
}

/// On the fast lane `start_many` inserts the first jobs claimed by the starting node: another
/// node finds nothing to claim until their lease expires (the starting node stopped, say),
/// then takes them all, more than one round's worth, and every instance completes once.
async fn start_many_hands_its_jobs_to_its_node(b: Backend) -> Result<()> {
    let Some(db) = Db::new(b).await? else {
        return Ok(());
    };
    let lease = Duration::from_millis(500);
    let a = node(&db, true, lease).await?;
    let bn = node(&db, true, lease).await?;
    let calls = Arc::new(AtomicUsize::new(0));
    for n in [&a, &bn] {
        for ty in ["cases.create", "notify.vip", "notify.normal"] {
            let calls = calls.clone();
            n.engine.register(
                ty,
                Arc::new(move |_| {
                    calls.fetch_add(1, Ordering::Relaxed);
                    Box::pin(async { Ok(json!({"caseId": "c"})) })
                }),
            );
        }
    }
    const M: usize = 700;
    let vars = (0..M).map(|k| json!({"amount": k})).collect();
    a.engine
        .start_many("create_case", vars)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let locked = db
        .scalar_i64("SELECT COUNT(*) FROM process_jobs WHERE state = 'locked'")
        .await?;
    if a.store.native().is_some() {
        ensure!(locked == M as i64, "{locked} of {M} jobs handed to node A");
        let ran = bn
            .engine
            .run_due_jobs()
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        ensure!(
            ran == 0,
            "node B ran {ran} of node A's jobs within their lease"
        );
        tokio::time::sleep(lease + Duration::from_millis(100)).await;
    } else {
        ensure!(
            locked == 0,
            "{locked} jobs claimed at start without the fast lane"
        );
    }
    // Node A is gone (its engine never runs them); B takes them over, 512 a round.
    let ran = bn
        .engine
        .run_due_jobs()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(ran == 2 * M, "node B ran {ran} jobs, expected {}", 2 * M);
    ensure!(
        calls.load(Ordering::Relaxed) == 2 * M,
        "each task ran once: {}",
        calls.load(Ordering::Relaxed)
    );
    ensure!(
        db.scalar_i64("SELECT COUNT(*) FROM process_instances WHERE state = 'completed'")
            .await?
            == M as i64,
        "all completed"
    );
    ensure!(
        db.scalar_i64("SELECT COUNT(*) FROM process_jobs").await? == 0,
        "no job is left"
    );
    // Node A's own list of handed-over jobs, whose leases ran out, is dropped: no task runs
    // again from it.
    let ran = a
        .engine
        .run_due_jobs()
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    ensure!(
        ran == 0 && calls.load(Ordering::Relaxed) == 2 * M,
        "node A ran {ran} expired jobs again"
    );
    Ok(())
}
