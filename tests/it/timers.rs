//! Durable timers: the accept timeout (S7) and auto-finish (S20), also across a crash and
//! restart of the server.

use std::time::Duration;

use anyhow::Result;
use ferrydesk_tests::{Backend, Db, Fixture, FixtureOptions, Server};
use serde_json::json;

use crate::on_both_backends;

on_both_backends!(
    accept_timeout,
    accept_timeout_across_restart,
    auto_finish_across_restart,
    session_expiry
);

async fn wait_until<F, Fut>(what: &str, mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    for _ in 0..150 {
        if f().await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("timed out waiting for {what}")
}

async fn accept_timeout(b: Backend) -> Result<()> {
    let Some(db) = Db::new(b).await? else {
        return Ok(());
    };
    db.add_admin().await?;
    let server = Server::start(&db).await?;
    let fx = Fixture::new(
        &server,
        FixtureOptions {
            routing_rule: "available_operator",
            accept_timeout_secs: 1,
            ..Default::default()
        },
    )
    .await?;
    let (anna, boris) = (&fx.operators[0], &fx.operators[1]);
    anna.set_status("active").await?;
    boris.set_status("active").await?;
    // Boris has a chat in progress, so the least-loaded Anna gets the next one.
    let r = fx.inbound("m0", "c0", "first").await?;
    let first = r["chat_id"].as_str().unwrap_or_default().to_owned();
    let directed = db
        .scalar_i64(&format!(
            "SELECT COUNT(*) FROM chats WHERE id = '{first}' AND directed_to IS NOT NULL"
        ))
        .await?;
    assert_eq!(directed, 1, "the available-operator rule directs the chat");
    let to = fx
        .admin
        .get(&format!("/api/v1/chats/{first}"))
        .await?
        .ok()?["chat"]["directed_to"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let (holder, other) = if to == anna.id() {
        (anna, boris)
    } else {
        (boris, anna)
    };
    holder
        .post_empty(&format!("/api/v1/chats/{first}/accept"))
        .await?
        .ok()?;

    let mut other_ws = other.ws().await?;
    let r = fx.inbound("m1", "c1", "second").await?;
    let chat = r["chat_id"].as_str().unwrap_or_default().to_owned();
    let offer = other_ws
        .wait_for("chat_offered", Duration::from_secs(5), |e| {
            e["chat"]["id"] == chat.as_str()
        })
        .await?;
    assert_eq!(
        offer["chat"]["directed_to"],
        other.id().as_str(),
        "fewest chats in progress wins"
    );

    // Not accepted within 1 s: the operator becomes Inactive and the chat moves on.
    other_ws
        .wait_for("chat_withdrawn", Duration::from_secs(10), |e| {
            e["chat_id"] == chat.as_str() && e["reason"] == "accept_timeout"
        })
        .await?;
    other_ws
        .wait_for("status_changed", Duration::from_secs(5), |e| {
            e["status"] == "inactive" && e["reason"] == "missed_accept"
        })
        .await?;
    let view = fx.admin.get(&format!("/api/v1/chats/{chat}")).await?.ok()?;
    assert_eq!(view["chat"]["missed_count"], 1);
    assert_eq!(
        view["chat"]["directed_to"],
        holder.id().as_str(),
        "redirected to the next operator"
    );
    let h = fx
        .admin
        .get(&format!("/api/v1/users/{}/status-history", other.id()))
        .await?
        .ok()?;
    assert_eq!(h[0]["reason"], "missed_accept");
    let routing = fx
        .admin
        .get(&format!("/api/v1/chats/{chat}/routing"))
        .await?
        .ok()?;
    let actions: Vec<&str> = routing
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["action"].as_str())
        .collect();
    assert_eq!(&actions[..3], ["directed", "accept_timeout", "directed"]);
    Ok(())
}

async fn accept_timeout_across_restart(b: Backend) -> Result<()> {
    let Some(db) = Db::new(b).await? else {
        return Ok(());
    };
    db.add_admin().await?;
    let mut server = Server::start(&db).await?;
    let fx = Fixture::new(
        &server,
        FixtureOptions {
            routing_rule: "available_operator",
            accept_timeout_secs: 2,
            operators: 1,
        },
    )
    .await?;
    let anna = &fx.operators[0];
    anna.set_status("active").await?;
    let r = fx.inbound("m1", "c1", "hello").await?;
    let chat = r["chat_id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT COUNT(*) FROM chats WHERE id = '{chat}' AND directed_to IS NOT NULL"
        ))
        .await?,
        1
    );

    // Crash the server; the deadline passes while it is down; the restarted server fires it.
    server.kill().await;
    // What was acknowledged before the crash is stored.
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM messages WHERE external_id = 'm1'")
            .await?,
        1
    );
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT missed_count FROM chats WHERE id = '{chat}'"
        ))
        .await?,
        0
    );
    server.restart().await?;
    wait_until("the accept timeout after restart", || async {
        Ok(db
            .scalar_i64(&format!(
                "SELECT missed_count FROM chats WHERE id = '{chat}'"
            ))
            .await?
            == 1)
    })
    .await?;
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM users WHERE username = 'op0' AND status = 'inactive'")
            .await?,
        1
    );
    // Nobody else is Active: the chat waits, undirected, and the decision says why.
    assert_eq!(db.scalar_i64(&format!("SELECT COUNT(*) FROM chats WHERE id = '{chat}' AND directed_to IS NULL AND status = 'new'")).await?, 1);
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT COUNT(*) FROM routing_decisions WHERE chat_id = '{chat}' AND action = 'waiting'"
        ))
        .await?,
        1
    );

    // Backlog drain: when the operator comes back, the waiting chat is directed again.
    let anna = server.login("op0", ferrydesk_tests::PASSWORD).await?;
    anna.set_status("active").await?;
    let inbox = anna.get("/api/v1/me/inbox").await?.ok()?;
    assert_eq!(inbox["new_chats"][0]["id"], chat.as_str());
    Ok(())
}

async fn auto_finish_across_restart(b: Backend) -> Result<()> {
    let Some(db) = Db::new(b).await? else {
        return Ok(());
    };
    db.add_admin().await?;
    let mut server = Server::start(&db).await?;
    let fx = Fixture::new(
        &server,
        FixtureOptions {
            operators: 1,
            ..Default::default()
        },
    )
    .await?;
    let anna = &fx.operators[0];
    anna.set_status("active").await?;
    let r = fx.inbound("m1", "c1", "hello").await?;
    let chat = r["chat_id"].as_str().unwrap_or_default().to_owned();
    anna.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;
    anna.post(
        &format!("/api/v1/chats/{chat}/messages"),
        json!({"text": "Anything else?"}),
    )
    .await?
    .ok()?;

    // The queue's default completion timeout is 60 minutes after the operator's message.
    let view = anna.get(&format!("/api/v1/chats/{chat}")).await?.ok()?;
    let started = ferrydesk_domain::Ts::parse_rfc3339(
        view["chat"]["last_message_at"].as_str().unwrap_or_default(),
    )
    .map(|t| t.0)
    .unwrap_or(0);
    let due = ferrydesk_domain::Ts::parse_rfc3339(
        view["chat"]["autofinish_at"].as_str().unwrap_or_default(),
    )
    .map(|t| t.0)
    .unwrap_or(0);
    assert_eq!(due - started, 60 * 60 * 1000);

    // A client answer cancels it; the next operator message sets it again.
    fx.inbound("m2", "c1", "one more thing").await?;
    assert!(
        anna.get(&format!("/api/v1/chats/{chat}")).await?.ok()?["chat"]["autofinish_at"].is_null()
    );
    anna.post(
        &format!("/api/v1/chats/{chat}/messages"),
        json!({"text": "Sure, done."}),
    )
    .await?
    .ok()?;

    // Shorten the hour (the timer's state is this column) and crash the server.
    server.kill().await;
    let now = ferrydesk_domain::Ts::now().0;
    db.exec(&format!(
        "UPDATE chats SET autofinish_at = {} WHERE id = '{chat}'",
        now + 1000
    ))
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    server.restart().await?;
    wait_until("auto-finish after restart", || async {
        Ok(db.scalar_i64(&format!("SELECT COUNT(*) FROM chats WHERE id = '{chat}' AND status = 'completed' AND close_reason = 'auto_finish'")).await? == 1)
    })
    .await?;
    assert_eq!(
        db.scalar_i64("SELECT active_chats FROM users WHERE username = 'op0'")
            .await?,
        0
    );
    // A message after the auto-finish opens a new chat whose parent is the finished one.
    let r = fx.channel().clone();
    let mut r = r;
    r.base = server.base.clone();
    let again = r
        .post(
            "/api/v1/channel/messages",
            json!({"external_id": "m3", "sender": {"id": "c1"}, "text": "back again"}),
        )
        .await?
        .ok()?;
    assert_eq!(again["new_chat"], true);
    let new_chat = again["chat_id"].as_str().unwrap_or_default();
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT COUNT(*) FROM chats WHERE id = '{new_chat}' AND parent_id = '{chat}'"
        ))
        .await?,
        1
    );
    Ok(())
}

async fn session_expiry(b: Backend) -> Result<()> {
    let Some(db) = Db::new(b).await? else {
        return Ok(());
    };
    db.add_admin().await?;
    let server = Server::start_with(&db, &[("FERRYDESK_SESSION_TTL_SECS", "2")]).await?;
    let fx = Fixture::new(
        &server,
        FixtureOptions {
            operators: 1,
            ..Default::default()
        },
    )
    .await?;
    let anna = &fx.operators[0];
    anna.set_status("active").await?;
    // An idle session expires: the operator becomes Inactive (S3) and the cookie stops working.
    wait_until("session expiry", || async {
        Ok(db
            .scalar_i64("SELECT COUNT(*) FROM users WHERE username = 'op0' AND status = 'inactive'")
            .await?
            == 1)
    })
    .await?;
    assert_eq!(anna.get("/api/v1/me/inbox").await?.status, 401);
    let reason: String = {
        let mut c = db.sql().await?;
        sqlx::query_scalar("SELECT h.reason FROM status_history h JOIN users u ON u.id = h.user_id WHERE u.username = 'op0' ORDER BY h.at DESC LIMIT 1")
            .fetch_one(&mut c)
            .await?
    };
    assert_eq!(reason, "session_expired");
    Ok(())
}
