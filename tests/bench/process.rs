//! Process engine benchmark: the same BPMN (start → service task → exclusive gateway on a
//! variable → one of two service tasks → end) run N times
//!
//! - in Ferrydesk's engine, every step persisted in a SQLite file (synchronous=FULL, WAL): the
//!   instance, its history, each job claimed with a lease and completed fenced; starts and job
//!   completions are group-committed;
//! - in SpiffWorkflow 3.2.0 (PyPI) and bpmn-engine 25.0.1 (npm), in-process and without
//!   persistence, through the adapters in `../shared/peers/bpmn/`, installed into a temporary
//!   folder by this program.
//!
//! Prints instances/s and instances per CPU-second of each, and the ratios.
//!
//!   cargo bench -p ferrydesk-tests --bench process
//!
//! Environment: BENCH_N (instances, default 10000), BENCH_BATCH (instances started per
//! transaction, 500), BENCH_DRIVERS (tasks starting and driving instances concurrently, 2),
//! BENCH_PEERS (`spiff,bpmn-engine`, or `none`), BENCH_PEERS_DIR (reuse an
//! installed peer folder instead of a new temporary one), BENCH_SQLX_LANE=0 (skip the second
//! Ferrydesk run, whose batches go through sqlx instead of the store's SQLite fast lane).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use ferrydesk_desk::{Desk, DeskOptions, blobs::LocalBlobStore};
use ferrydesk_engine::{Engine, EngineOptions, JobError};
use ferrydesk_store::{Store, StoreOptions};
use serde_json::{Value, json};

const BPMN: &str = include_str!("../../core/bpmn/tests/bench_process.bpmn");

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

/// CPU seconds used by this process so far, all threads (the engine, SQLite, tokio), from
/// `/proc/self/stat` (utime + stime, in clock ticks).
fn cpu_seconds() -> f64 {
    static TCK: std::sync::OnceLock<f64> = std::sync::OnceLock::new();
    let tck = *TCK.get_or_init(|| {
        Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
            .unwrap_or(100.0)
    });
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<f64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0.0))
        .collect();
    // utime and stime are fields 14 and 15 of the line; 12 and 13 after the name.
    (f.get(11).copied().unwrap_or(0.0) + f.get(12).copied().unwrap_or(0.0)) / tck
}

struct Figures {
    engine: String,
    per_sec: f64,
    per_cpu_sec: f64,
    note: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let n = env_usize("BENCH_N", 10_000);
    let batch = env_usize("BENCH_BATCH", 500).max(1);
    let drivers = env_usize("BENCH_DRIVERS", 2).max(1);
    println!(
        "process engine benchmark: {n} instances of start → task → gateway → task → end \
         ({drivers} drivers)"
    );
    let mut rows = vec![ferrydesk(n, batch, drivers, true).await?];
    // The same engine with the engine's batches through sqlx, as before the fast lane.
    let sqlx_lane = std::env::var("BENCH_SQLX_LANE").as_deref() != Ok("0");
    if sqlx_lane {
        rows.push(ferrydesk(n, batch, drivers, false).await?);
    }
    let peers = std::env::var("BENCH_PEERS").unwrap_or_else(|_| "spiff,bpmn-engine".into());
    if peers != "none" {
        let dir = peers_dir()?;
        for p in peers.split(',') {
            rows.push(peer(&dir, p.trim(), n)?);
        }
    }
    println!();
    println!(
        "{:<34} {:>12} {:>16}",
        "engine", "instances/s", "instances/CPU-s"
    );
    for r in &rows {
        println!(
            "{:<34} {:>12.0} {:>16.0}   {}",
            r.engine, r.per_sec, r.per_cpu_sec, r.note
        );
    }
    let fd = &rows[0];
    for r in &rows[1..] {
        println!(
            "Ferrydesk / {:<30} {:>9.1}× {:>15.1}×",
            r.engine,
            fd.per_sec / r.per_sec,
            fd.per_cpu_sec / r.per_cpu_sec
        );
    }
    Ok(())
}

async fn ferrydesk(n: usize, batch: usize, drivers: usize, fast_lane: bool) -> Result<Figures> {
    let dir = tempfile::tempdir()?;
    let store = Store::connect(&StoreOptions {
        url: format!(
            "sqlite://{}?mode=rwc",
            dir.path().join("bench.db").display()
        ),
        max_connections: 4,
        fast_lane,
        min_free_disk_mb: 0,
    })
    .await?;
    store.migrate().await?;
    let blobs = Arc::new(LocalBlobStore::new(dir.path().join("blobs"))?);
    let desk = Desk::start(store.clone(), blobs, DeskOptions::default()).await?;
    let engine = Engine::embedded(desk.clone(), EngineOptions::default());
    let counts = Arc::new([
        AtomicUsize::new(0),
        AtomicUsize::new(0),
        AtomicUsize::new(0),
    ]);
    for (i, ty) in ["cases.create", "notify.vip", "notify.normal"]
        .into_iter()
        .enumerate()
    {
        let c = counts.clone();
        engine.register(
            ty,
            Arc::new(move |_job| {
                let v = c[i].fetch_add(1, Ordering::Relaxed) + 1;
                Box::pin(async move {
                    Ok::<_, JobError>(if i == 0 {
                        json!({"caseId": v})
                    } else {
                        json!({})
                    })
                })
            }),
        );
    }
    engine
        .deploy(None, BPMN)
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let run = |from: usize, to: usize| {
        let engine = engine.clone();
        async move {
            let mut i = from;
            while i < to {
                let end = (i + batch).min(to);
                let vars = (i..end)
                    .map(|k| json!({"amount": if k % 2 == 1 { 5000 } else { 10 }}))
                    .collect();
                engine
                    .start_many("create_case", vars)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                engine
                    .run_due_jobs()
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                i = end;
            }
            Ok::<_, anyhow::Error>(())
        }
    };
    run(0, 200).await?; // warm-up
    for c in counts.iter() {
        c.store(0, Ordering::Relaxed);
    }
    let cpu0 = cpu_seconds();
    let busy0 = store
        .native()
        .map(|n| n.busy().as_secs_f64())
        .unwrap_or(0.0);
    let t0 = Instant::now();
    // Each driver (a task of its own, so that one plans while another's batch is written)
    // starts and drives its share of the instances; the engine's writes all go through the
    // one SQLite writer.
    let share = n.div_ceil(drivers);
    let tasks: Vec<_> = (0..drivers)
        .map(|d| tokio::spawn(run(d * share, ((d + 1) * share).min(n))))
        .collect();
    for t in tasks {
        t.await??;
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    // Everything happened, and is on disk.
    let mut conn = store.read().await?;
    let completed: i64 =
        sqlx::query_scalar("SELECT COUNT(*) FROM process_instances WHERE state = 'completed'")
            .fetch_one(&mut *conn)
            .await?;
    let jobs: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM process_jobs")
        .fetch_one(&mut *conn)
        .await?;
    let (history_rows, events): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), COALESCE(SUM(json_array_length(events)), 0) FROM process_history",
    )
    .fetch_one(&mut *conn)
    .await?;
    let c: Vec<usize> = counts.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    if completed != (n + 200) as i64 || jobs != 0 || c != [n, n / 2, n - n / 2] {
        bail!("wrong result: completed {completed}, jobs left {jobs}, worker calls {c:?}");
    }
    drop(conn);
    let (set_based, one_by_one) = engine.batch_counts();
    let (ahead, replanned) = engine.plan_counts();
    let writer = store
        .native()
        .map(|n| n.busy().as_secs_f64())
        .unwrap_or(0.0)
        - busy0;
    desk.shutdown();
    Ok(Figures {
        engine: if fast_lane {
            "Ferrydesk (SQLite, every step)"
        } else {
            "Ferrydesk, batches through sqlx"
        }
        .into(),
        per_sec: n as f64 / secs,
        per_cpu_sec: n as f64 / cpu,
        note: format!(
            "{secs:.2} s, {cpu:.2} CPU-s, fast lane busy {:.0} %, history: {:.1} events in \
             {:.1} rows per instance; \
             completion batches: \
             {set_based} set-based ({ahead} planned ahead, {replanned} planned again), \
             {one_by_one} one by one",
            writer / secs * 100.0,
            events as f64 / (n + 200) as f64,
            history_rows as f64 / (n + 200) as f64
        ),
    })
}

fn sh(dir: &Path, cmd: &str) -> Result<String> {
    let out = Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .current_dir(dir)
        .output()
        .with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!(
            "`{cmd}` failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A folder with both peers installed and the adapters copied in.
fn peers_dir() -> Result<PathBuf> {
    let adapters = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/peers/bpmn");
    let dir = match std::env::var("BENCH_PEERS_DIR") {
        Ok(d) => PathBuf::from(d),
        Err(_) => {
            let d = std::env::temp_dir().join(format!("ferrydesk-peers-{}", std::process::id()));
            std::fs::create_dir_all(&d)?;
            d
        }
    };
    for f in [
        "bench_spiff.py",
        "bench_bpmn_engine.mjs",
        "create_case.bpmn",
    ] {
        let src = adapters.join(f);
        let text = std::fs::read(&src).with_context(|| format!("reading {}", src.display()))?;
        std::fs::write(dir.join(f), text)?;
    }
    // The same BPMN file for everyone.
    std::fs::write(dir.join("create_case.bpmn"), BPMN)?;
    if !dir.join("node_modules/bpmn-engine").exists() {
        println!("installing bpmn-engine 25.0.1 into {}", dir.display());
        sh(
            &dir,
            "npm init -y >/dev/null && npm install --no-audit --no-fund --loglevel=error bpmn-engine@25.0.1",
        )?;
    }
    if !dir.join("venv/bin/python").exists() {
        println!("installing SpiffWorkflow 3.2.0 into {}", dir.display());
        sh(
            &dir,
            "python3 -m venv venv && ./venv/bin/pip install -q spiffworkflow==3.2.0",
        )?;
    }
    Ok(dir)
}

fn peer(dir: &Path, name: &str, n: usize) -> Result<Figures> {
    let (cmd, label) = match name {
        "spiff" => (
            format!("./venv/bin/python bench_spiff.py {n}"),
            "SpiffWorkflow 3.2.0 (in memory)",
        ),
        "bpmn-engine" => (
            format!("node bench_bpmn_engine.mjs {n} cached"),
            "bpmn-engine 25.0.1 (in memory)",
        ),
        other => bail!("unknown peer {other}"),
    };
    println!("running {label} …");
    let out = sh(dir, &cmd)?;
    let line = out
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('{'))
        .with_context(|| format!("{label} printed no result: {out}"))?;
    let v: Value = serde_json::from_str(line)?;
    let f = |k: &str| v[k].as_f64().unwrap_or(f64::NAN);
    Ok(Figures {
        engine: label.into(),
        per_sec: f("instancesPerSec"),
        per_cpu_sec: f("instancesPerCpuSec"),
        note: format!("{:.2} s, {:.2} CPU-s", f("seconds"), f("cpuSeconds")),
    })
}
