//! `Idempotency-Key`: a retried write after a lost answer happens once (issue 15, row 5).

use std::time::Duration;

use anyhow::Result;
use ferrydesk_tests::{Backend, Fixture, FixtureOptions};
use reqwest::Method;
use serde_json::json;

use crate::{on_both_backends, setup};

on_both_backends!(retried_writes_happen_once);

const CHATS: usize = 8;

async fn retried_writes_happen_once(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(
        &server,
        FixtureOptions {
            operators: 1,
            ..Default::default()
        },
    )
    .await?;
    crate::plugins::install(&fx.admin, "create-case").await?;
    fx.admin
        .post("/api/v1/plugins/create-case/enable", json!({}))
        .await?
        .ok()?;
    let op = &fx.operators[0];
    fx.admin
        .patch(
            &format!("/api/v1/users/{}", op.id()),
            json!({"chat_limit": 100}),
        )
        .await?
        .ok()?;
    op.set_status("active").await?;
    let mut chats = Vec::new();
    for i in 0..CHATS {
        let m = fx
            .inbound(&format!("i-{i}"), &format!("s-{i}"), "My parcel is late")
            .await?;
        let chat = m["chat_id"].as_str().unwrap_or_default().to_owned();
        op.post_empty(&format!("/api/v1/chats/{chat}/accept"))
            .await?
            .ok()?;
        chats.push(chat);
    }

    // Each "Create case" click: the first answer is lost (the client gives up after a few
    // milliseconds, mid-request), then the client retries with the same key until answered.
    let mut first_case = Vec::new();
    for (i, chat) in chats.iter().enumerate() {
        let path = format!("/api/v1/chats/{chat}/processes/create-case");
        let key = format!("click-{i}");
        let lost = op.keyed_request(Method::POST, &path, &json!({}), &key);
        let _ =
            tokio::time::timeout(Duration::from_millis(2 + (i as u64 % 5) * 7), lost.send()).await;
        let answer = loop {
            let r = op.send_keyed(Method::POST, &path, &json!({}), &key).await?;
            if r.status == 409 && r.code() == "idempotency_key_in_flight" {
                let wait = r.headers["retry-after"].to_str()?.parse::<u64>()?;
                tokio::time::sleep(Duration::from_secs(wait)).await;
                continue;
            }
            break r.ok()?;
        };
        let case = answer["case"]["id"].as_str().unwrap_or_default().to_owned();
        assert!(!case.is_empty(), "{answer}");
        first_case.push(case);
    }
    for chat in &chats {
        let n = db
            .scalar_i64(&format!(
                "SELECT COUNT(*) FROM cases WHERE chat_id = '{chat}'"
            ))
            .await?;
        assert_eq!(n, 1, "chat {chat} has {n} cases");
    }
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM cases").await?,
        CHATS as i64
    );

    // A retry after the answer: the same answer, replayed, nothing new.
    let path = format!("/api/v1/chats/{}/processes/create-case", chats[0]);
    let again = op
        .send_keyed(Method::POST, &path, &json!({}), "click-0")
        .await?;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.headers["idempotent-replayed"], "true");
    assert_eq!(again.body["case"]["id"], first_case[0].as_str());
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM cases").await?,
        CHATS as i64
    );

    // Keys belong to their caller: the admin's "click-0" is a key of its own.
    let r = fx
        .admin
        .send_keyed(Method::POST, "/api/v1/queues", &json!({"name": "Sales", "routing_rule": "all_operators", "accept_timeout_secs": 60, "members": []}), "click-0")
        .await?;
    assert!(r.status < 300, "{}", r.text);
    assert!(r.headers.get("idempotent-replayed").is_none());
    // A malformed key is refused, naming the header.
    let r = op
        .send_keyed(Method::POST, &path, &json!({}), &"k".repeat(256))
        .await?;
    assert_eq!(
        (r.status, r.code(), r.body["field"].as_str()),
        (422, "invalid", Some("Idempotency-Key")),
        "{}",
        r.text
    );

    // A keyed request is buffered no further than its route's body limit (256 KiB for JSON).
    let big = json!({"text": "x".repeat(2 << 20)});
    let r = op
        .send_keyed(
            Method::POST,
            &format!("/api/v1/chats/{}/messages", chats[0]),
            &big,
            "big-1",
        )
        .await?;
    assert_eq!((r.status, r.code()), (413, "too_large"), "{}", r.text);

    // The API channel: a message retried with its key is stored once.
    let channel = fx.channel();
    let msg =
        json!({"external_id": "once-1", "sender": {"id": "s-0", "name": "Client"}, "text": "once"});
    let first = channel
        .send_keyed(Method::POST, "/api/v1/channel/messages", &msg, "m-1")
        .await?
        .ok()?;
    let second = channel
        .send_keyed(Method::POST, "/api/v1/channel/messages", &msg, "m-1")
        .await?;
    assert_eq!(second.headers["idempotent-replayed"], "true");
    assert_eq!(second.body["message_id"], first["message_id"]);
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM messages WHERE body = 'once'")
            .await?,
        1
    );
    // The same key for a different request to the same operation is refused; it changes
    // nothing. (Keys are per operation: "m-1" on another endpoint would be another key.)
    let other = json!({"external_id": "once-2", "sender": {"id": "s-0", "name": "Client"}, "text": "twice"});
    let r = channel
        .send_keyed(Method::POST, "/api/v1/channel/messages", &other, "m-1")
        .await?;
    assert_eq!(
        (r.status, r.code()),
        (422, "idempotency_key_reused"),
        "{}",
        r.text
    );
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM messages WHERE body = 'twice'")
            .await?,
        0
    );
    Ok(())
}
