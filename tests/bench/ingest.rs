//! Ingestion benchmark: N client messages through the API channel → stored → routed →
//! delivered to the responsible operators' WebSockets. Prints throughput and end-to-end latency
//! (POST sent → event received on the operator's socket) for SQLite and PostgreSQL, beside the
//! raw commit rate of the same database measured in the same run.
//!
//!   cargo build --release -p ferrydesk && cargo bench -p ferrydesk-tests --bench ingest
//!
//! Environment: BENCH_N (messages, default 20000), BENCH_CONCURRENCY (in-flight posts, 128),
//! BENCH_CHATS (conversations, 1000), BENCH_BACKENDS (sqlite,postgres).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use ferrydesk_tests::{Backend, Db, Fixture, FixtureOptions, Server};
use serde_json::json;

fn env_usize(k: &str, d: usize) -> usize {
    std::env::var(k)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(d)
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> Result<()> {
    let n = env_usize("BENCH_N", 20_000);
    let conc = env_usize("BENCH_CONCURRENCY", 128);
    let chats = env_usize("BENCH_CHATS", 1000);
    let backends = std::env::var("BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    println!(
        "ferrydesk ingest benchmark: {n} messages, {conc} in flight, {chats} conversations, 10 operators"
    );
    for b in backends.split(',') {
        let backend = match b.trim() {
            "sqlite" => Backend::Sqlite,
            "postgres" => Backend::Postgres,
            other => anyhow::bail!("unknown backend {other}"),
        };
        run(backend, n, conc, chats)
            .await
            .with_context(|| format!("{b} run"))?;
    }
    Ok(())
}

async fn run(backend: Backend, n: usize, conc: usize, chats: usize) -> Result<()> {
    let Some(db) = Db::new(backend).await? else {
        println!("{backend:?}: skipped (database unavailable)");
        return Ok(());
    };
    db.add_admin().await?;
    let reference = raw_commit_rate(&db).await?;
    let server = Server::start(&db).await?;
    let ops = 10;
    let fx = Fixture::new(
        &server,
        FixtureOptions {
            operators: ops,
            ..Default::default()
        },
    )
    .await?;
    fx.admin
        .put("/api/v1/settings", json!({"simultaneous_chats": 100}))
        .await?
        .ok()?;

    // Open the conversations and let the operators accept them (round robin).
    for op in &fx.operators {
        op.set_status("active").await?;
    }
    for c in 0..chats {
        let r = fx
            .inbound(&format!("open-{c}"), &format!("client-{c}"), "hello")
            .await?;
        let chat = r["chat_id"].as_str().unwrap_or_default().to_owned();
        fx.operators[c % ops]
            .post_empty(&format!("/api/v1/chats/{chat}/accept"))
            .await?
            .ok()?;
    }

    // Sockets record when each tagged message arrives.
    let sent: Arc<Mutex<HashMap<u64, Instant>>> = Arc::default();
    let lat: Arc<Mutex<Vec<Duration>>> = Arc::default();
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    for op in &fx.operators {
        let mut ws = op.ws().await?;
        let (sent, lat, done) = (sent.clone(), lat.clone(), done_tx.clone());
        tokio::spawn(async move {
            while let Ok(Some(ev)) = ws.next_event(Duration::from_secs(120)).await {
                if ev["type"] != "message_created" {
                    continue;
                }
                let Some(tag) = ev["message"]["body"]
                    .as_str()
                    .and_then(|b| b.strip_prefix("bench "))
                    .and_then(|t| t.parse::<u64>().ok())
                else {
                    continue;
                };
                let now = Instant::now();
                if let Some(t0) = sent.lock().ok().and_then(|s| s.get(&tag).copied()) {
                    if let Ok(mut l) = lat.lock() {
                        l.push(now - t0);
                    }
                    let _ = done.send(());
                }
            }
        });
    }

    let start = Instant::now();
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut workers = Vec::new();
    for _ in 0..conc {
        let (ch, next, sent) = (fx.channel(), next.clone(), sent.clone());
        workers.push(tokio::spawn(async move {
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= n {
                    return Ok::<_, anyhow::Error>(());
                }
                if let Ok(mut s) = sent.lock() {
                    s.insert(i as u64, Instant::now());
                }
                let r = ch
                    .post(
                        "/api/v1/channel/messages",
                        json!({"external_id": format!("b{i}"), "sender": {"id": format!("client-{}", i % chats)}, "text": format!("bench {i}")}),
                    )
                    .await?;
                anyhow::ensure!(r.status == 201, "post failed: {} {}", r.status, r.text);
            }
        }));
    }
    for w in workers {
        w.await??;
    }
    let acked = start.elapsed();
    for _ in 0..n {
        tokio::time::timeout(Duration::from_secs(60), done_rx.recv())
            .await
            .context("events missing")?;
    }
    let delivered = start.elapsed();
    let mut l = lat.lock().map(|l| l.clone()).unwrap_or_default();
    l.sort();
    let pct = |p: f64| l[((l.len() as f64 * p) as usize).min(l.len() - 1)].as_secs_f64() * 1000.0;
    let stored = db
        .scalar_i64("SELECT COUNT(*) FROM messages WHERE external_id LIKE 'b%'")
        .await?;
    anyhow::ensure!(stored as usize == n, "stored {stored} of {n}");
    let rate = n as f64 / delivered.as_secs_f64();
    println!(
        "{backend:?}: {rate:.0} msg/s end to end ({n} in {:.2} s; all acknowledged after {:.2} s); latency p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        delivered.as_secs_f64(),
        acked.as_secs_f64(),
        pct(0.5),
        pct(0.99),
        pct(1.0)
    );
    println!(
        "{backend:?} reference, same database: {:.0} single-row commits/s, {:.0} rows/s in 500-row transactions; ingest = {:.2}× the single-row commit rate",
        reference.0,
        reference.1,
        rate / reference.0
    );
    Ok(())
}

/// Commit rate of the raw database with the server's settings: single-row transactions, and
/// rows per second in 500-row transactions.
async fn raw_commit_rate(db: &Db) -> Result<(f64, f64)> {
    let mut c = db.sql().await?;
    let sqlite = db.backend == Backend::Sqlite;
    if sqlite {
        sqlx::query("PRAGMA journal_mode=WAL")
            .execute(&mut c)
            .await?;
        sqlx::query("PRAGMA synchronous=FULL")
            .execute(&mut c)
            .await?;
    }
    sqlx::query("CREATE TABLE bench_ref (id TEXT PRIMARY KEY, body TEXT NOT NULL)")
        .execute(&mut c)
        .await?;
    let single = 2000;
    let t = Instant::now();
    for i in 0..single {
        sqlx::query("INSERT INTO bench_ref (id, body) VALUES ($1, $2)")
            .bind(format!("s{i}"))
            .bind("x".repeat(40))
            .execute(&mut c)
            .await?;
    }
    let single_rate = single as f64 / t.elapsed().as_secs_f64();
    let batches = 40;
    let t = Instant::now();
    for b in 0..batches {
        use sqlx::Connection;
        let mut tx = c.begin().await?;
        for i in 0..500 {
            sqlx::query("INSERT INTO bench_ref (id, body) VALUES ($1, $2)")
                .bind(format!("b{b}-{i}"))
                .bind("x".repeat(40))
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
    }
    let batch_rate = (batches * 500) as f64 / t.elapsed().as_secs_f64();
    sqlx::query("DROP TABLE bench_ref").execute(&mut c).await?;
    Ok((single_rate, batch_rate))
}
