//! Race: 200 chats arrive at once; 20 Active operators (limit 5) accept everything they see.
//! No chat gets two responsibles, nobody exceeds the limit, every chat is accepted or waiting.
//! On PostgreSQL the operators and the messages are split across two server processes that
//! share the database.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use anyhow::Result;
use ferrydesk_tests::{Api, Backend, Db, Fixture, FixtureOptions, Server};
use tokio::sync::Mutex;

use crate::on_both_backends;

on_both_backends!(accept_race);

const CHATS: usize = 200;
const OPERATORS: usize = 20;
const LIMIT: i64 = 5;

async fn accept_race(b: Backend) -> Result<()> {
    let Some(db) = Db::new(b).await? else {
        return Ok(());
    };
    db.add_admin().await?;
    let a = Server::start(&db).await?;
    // Two nodes on PostgreSQL; SQLite is single-node by design.
    let second = if b == Backend::Postgres {
        Some(Server::start(&db).await?)
    } else {
        None
    };
    let nodes: Vec<&Server> = std::iter::once(&a).chain(second.as_ref()).collect();

    let fx = Fixture::new(
        &a,
        FixtureOptions {
            operators: OPERATORS,
            ..Default::default()
        },
    )
    .await?;
    // Operators log in on alternating nodes.
    let mut ops = Vec::new();
    for i in 0..OPERATORS {
        let node = nodes[i % nodes.len()];
        let op = node
            .login(&format!("op{i}"), ferrydesk_tests::PASSWORD)
            .await?;
        op.set_status("active").await?;
        ops.push(op);
    }

    // 200 first messages at once, through both nodes.
    let mut sends = Vec::new();
    for i in 0..CHATS {
        let api = fx.channel();
        let mut api = api;
        api.base = nodes[i % nodes.len()].base.clone();
        sends.push(tokio::spawn(async move {
            api.post(
                "/api/v1/channel/messages",
                serde_json::json!({"external_id": format!("m{i}"), "sender": {"id": format!("client-{i}")}, "text": format!("hello {i}")}),
            )
            .await
        }));
    }
    for s in sends {
        let r = s.await??;
        assert_eq!(r.status, 201, "{}", r.text);
    }

    // Every operator accepts every chat they see until nothing changes.
    let wins: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
    let mut tasks = Vec::new();
    for op in ops.clone() {
        let wins = wins.clone();
        tasks.push(tokio::spawn(async move { grab(op, wins).await }));
    }
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await??;
    }
    let wins = wins.lock().await.clone();

    // No chat accepted twice; nobody above the limit (from the answers).
    let mut per_chat: HashMap<&str, usize> = HashMap::new();
    let mut per_op: HashMap<&str, i64> = HashMap::new();
    for (op, chat) in &wins {
        *per_chat.entry(chat).or_default() += 1;
        *per_op.entry(op).or_default() += 1;
    }
    assert!(
        per_chat.values().all(|&n| n == 1),
        "a chat was accepted twice"
    );
    assert!(
        per_op.values().all(|&n| n <= LIMIT),
        "an operator exceeded the limit: {per_op:?}"
    );
    assert_eq!(
        wins.len(),
        OPERATORS * LIMIT as usize,
        "capacity 100 should be used completely"
    );
    assert!(conflicts > 0, "the operators really raced");

    // And from the database.
    let over = db
        .scalar_i64(&format!(
            "SELECT COUNT(*) FROM (SELECT responsible_id FROM chats WHERE status = 'in_progress' GROUP BY responsible_id HAVING COUNT(*) > {LIMIT}) t"
        ))
        .await?;
    assert_eq!(over, 0);
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM chats WHERE status = 'in_progress'")
            .await?,
        100
    );
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM chats WHERE status = 'new' AND responsible_id IS NULL")
            .await?,
        100
    );
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM chats").await?,
        CHATS as i64
    );
    let drift = db
        .scalar_i64(
            "SELECT COUNT(*) FROM users u WHERE u.active_chats <> \
             (SELECT COUNT(*) FROM chats c WHERE c.responsible_id = u.id AND c.status = 'in_progress')",
        )
        .await?;
    assert_eq!(drift, 0, "load counters match the chats");
    let double = db
        .scalar_i64("SELECT COUNT(*) FROM (SELECT chat_id FROM routing_decisions WHERE action = 'accepted' GROUP BY chat_id HAVING COUNT(*) > 1) t")
        .await?;
    assert_eq!(double, 0);
    let ids: HashSet<&str> = wins.iter().map(|(_, c)| c.as_str()).collect();
    assert_eq!(ids.len(), 100);
    Ok(())
}

/// Accepts everything visible until a pass changes nothing. Returns the number of conflicts.
async fn grab(op: Api, wins: Arc<Mutex<Vec<(String, String)>>>) -> Result<usize> {
    let mut conflicts = 0;
    for _pass in 0..100 {
        let inbox = op.get("/api/v1/me/inbox").await?.ok()?;
        let new: Vec<String> = inbox["new_chats"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["id"].as_str().map(str::to_owned))
            .collect();
        if new.is_empty() {
            return Ok(conflicts);
        }
        for chat in new {
            let r = op
                .post_empty(&format!("/api/v1/chats/{chat}/accept"))
                .await?;
            match r.status {
                200 => {
                    wins.lock().await.push((op.id(), chat));
                }
                409 => {
                    conflicts += 1;
                    if r.code() == "chats_exceeded" {
                        return Ok(conflicts);
                    }
                }
                s => anyhow::bail!("unexpected {s}: {}", r.text),
            }
        }
    }
    anyhow::bail!("operator {} kept seeing chats it could not take", op.id())
}
