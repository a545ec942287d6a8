//! Bad input gets a 4xx with a clear error naming the problem, and writes nothing.

use anyhow::Result;
use ferrydesk_tests::{Backend, Fixture, FixtureOptions};
use serde_json::json;

use crate::{on_both_backends, setup};

on_both_backends!(bad_input);

async fn counts(db: &ferrydesk_tests::Db) -> Result<Vec<i64>> {
    let mut v = Vec::new();
    for t in [
        "messages",
        "chats",
        "contacts",
        "files",
        "queues",
        "users",
        "templates",
    ] {
        v.push(db.scalar_i64(&format!("SELECT COUNT(*) FROM {t}")).await?);
    }
    Ok(v)
}

async fn bad_input(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let anna = &fx.operators[0];
    anna.set_status("active").await?;
    let r = fx.inbound("m1", "c1", "hi").await?;
    let chat = r["chat_id"].as_str().unwrap_or_default().to_owned();
    anna.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;
    let before = counts(&db).await?;
    let ch = fx.channel();

    // Unknown field, named by its JSON pointer.
    let r = ch
        .post(
            "/api/v1/channel/messages",
            json!({"external_id": "x", "sender": {"id": "s", "nick": "n"}, "text": "t"}),
        )
        .await?;
    assert_eq!((r.status, r.code()), (422, "invalid"));
    assert_eq!(r.body["field"], "/sender/nick");
    // Wrong type.
    let r = ch
        .post(
            "/api/v1/channel/messages",
            json!({"external_id": 5, "sender": {"id": "s"}, "text": "t"}),
        )
        .await?;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["field"], "/external_id");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or_default()
            .contains("invalid type"),
        "{}",
        r.text
    );
    // Missing field.
    let r = ch
        .post(
            "/api/v1/channel/messages",
            json!({"sender": {"id": "s"}, "text": "t"}),
        )
        .await?;
    assert_eq!(r.status, 422);
    assert!(r.text.contains("external_id"), "{}", r.text);
    // Empty message, too long a message.
    let r = ch
        .post(
            "/api/v1/channel/messages",
            json!({"external_id": "e", "sender": {"id": "s"}, "text": "   "}),
        )
        .await?;
    assert_eq!((r.status, r.body["field"].as_str()), (422, Some("text")));
    let r = anna
        .post(
            &format!("/api/v1/chats/{chat}/messages"),
            json!({"text": "x".repeat(10_001)}),
        )
        .await?;
    assert_eq!((r.status, r.body["field"].as_str()), (422, Some("text")));
    // Not JSON, malformed JSON.
    let r = ch
        .raw(
            reqwest::Method::POST,
            "/api/v1/channel/messages",
            "text/plain",
            b"hello".to_vec(),
        )
        .await?;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["field"], "content-type");
    let r = ch
        .raw(
            reqwest::Method::POST,
            "/api/v1/channel/messages",
            "application/json",
            b"{\"external_id\": ".to_vec(),
        )
        .await?;
    assert_eq!(r.status, 422);
    // Oversized body.
    let big = format!(
        "{{\"external_id\":\"b\",\"sender\":{{\"id\":\"s\"}},\"text\":\"{}\"}}",
        "y".repeat(300 * 1024)
    );
    let r = ch
        .raw(
            reqwest::Method::POST,
            "/api/v1/channel/messages",
            "application/json",
            big.into_bytes(),
        )
        .await?;
    assert_eq!(r.status, 413, "{}", r.text);
    // Bad files: a text file declared as PNG, an executable, an empty file.
    let r = anna
        .upload(
            "/api/v1/files",
            "fake.png",
            "image/png",
            b"not really a png".to_vec(),
        )
        .await?;
    assert_eq!((r.status, r.body["field"].as_str()), (422, Some("file")));
    let mut elf = b"\x7fELF\x02\x01\x01\x00".to_vec();
    elf.extend([0u8; 64]);
    let r = anna
        .upload("/api/v1/files", "tool", "application/octet-stream", elf)
        .await?;
    assert_eq!(r.status, 422);
    assert!(r.text.contains("not accepted"), "{}", r.text);
    let r = anna
        .upload("/api/v1/files", "empty.txt", "text/plain", Vec::new())
        .await?;
    assert_eq!(r.status, 422);
    // Referencing a file that does not exist writes no message.
    let r = anna
        .post(
            &format!("/api/v1/chats/{chat}/messages"),
            json!({"text": "see file", "files": ["nope"]}),
        )
        .await?;
    assert_eq!((r.status, r.body["field"].as_str()), (422, Some("files")));
    // Admin forms: field errors.
    let r = fx
        .admin
        .post("/api/v1/queues", json!({"name": "", "members": []}))
        .await?;
    assert_eq!(r.body["field"], "name");
    let r = fx
        .admin
        .post(
            "/api/v1/queues",
            json!({"name": "Q", "accept_timeout_secs": 0}),
        )
        .await?;
    assert_eq!(r.body["field"], "accept_timeout_secs");
    let r = fx
        .admin
        .post("/api/v1/queues", json!({"name": "Q", "members": ["ghost"]}))
        .await?;
    assert_eq!(r.body["field"], "members/0");
    let r = fx.admin.post("/api/v1/users", json!({"username": "x y", "display_name": "X", "password": "longenough", "role": "operator"})).await?;
    assert_eq!(r.body["field"], "username");
    let r = fx.admin.post("/api/v1/users", json!({"username": "short", "display_name": "X", "password": "short", "role": "operator"})).await?;
    assert_eq!(r.body["field"], "password");
    let r = fx
        .admin
        .post(
            "/api/v1/users",
            json!({"username": "r", "display_name": "X", "password": "longenough", "role": "king"}),
        )
        .await?;
    assert_eq!(r.body["field"], "/role");
    let r = anna.get("/api/v1/chats?status=weird").await?;
    assert_eq!(r.status, 422);
    // Errors never carry SQL.
    let r = fx
        .admin
        .post(
            "/api/v1/channels",
            json!({"kind": "widget", "name": "W", "queue_id": "missing"}),
        )
        .await?;
    assert_eq!(r.body["field"], "queue_id");

    assert_eq!(counts(&db).await?, before, "bad input changed stored state");
    Ok(())
}
