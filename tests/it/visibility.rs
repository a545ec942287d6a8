//! The visibility rule (S10): operator B gets 404 on every surface for operator A's unfinished
//! chat, and A's socket stops receiving the chat after a transfer away from A.

use std::time::Duration;

use anyhow::Result;
use ferrydesk_tests::{Backend, Fixture, FixtureOptions, Visitor};
use serde_json::json;

use crate::chats::png_bytes;
use crate::{on_both_backends, setup};

on_both_backends!(visibility);

async fn visibility(b: Backend) -> Result<()> {
    let (_db, server) = setup!(b);
    let fx = Fixture::new(
        &server,
        FixtureOptions {
            operators: 3,
            ..Default::default()
        },
    )
    .await?;
    let (a, bop, c) = (&fx.operators[0], &fx.operators[1], &fx.operators[2]);
    a.set_status("active").await?;
    let visitor = Visitor::new(&server.base, &fx.widget_key).await?;
    let sent = visitor.send("private question").await?;
    let chat = sent["chat_id"].as_str().unwrap_or_default().to_owned();
    let contact = sent["contact_id"].as_str().unwrap_or_default().to_owned();
    a.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;
    let f = a
        .upload("/api/v1/files", "a.png", "image/png", png_bytes())
        .await?
        .ok()?;
    let fid = f["id"].as_str().unwrap_or_default().to_owned();
    a.post(
        &format!("/api/v1/chats/{chat}/messages"),
        json!({"text": "secret answer", "files": [fid]}),
    )
    .await?
    .ok()?;
    let tpl = fx
        .admin
        .post(
            "/api/v1/templates",
            json!({"name": "T", "body": "Hi {{contact.name}}"}),
        )
        .await?
        .ok()?;
    let tid = tpl["id"].as_str().unwrap_or_default();

    // Every surface answers 404 for B (no hint that the chat exists).
    let paths_get = [
        format!("/api/v1/chats/{chat}"),
        format!("/api/v1/chats/{chat}/draft"),
        format!("/api/v1/chats/{chat}/routing"),
        format!("/api/v1/files/{fid}"),
        format!("/api/v1/templates?chat_id={chat}"),
    ];
    for p in &paths_get {
        let r = bop.get(p).await?;
        assert_eq!(r.status, 404, "GET {p}: {}", r.text);
    }
    let paths_post = [
        (
            format!("/api/v1/chats/{chat}/messages"),
            json!({"text": "hijack"}),
        ),
        (format!("/api/v1/chats/{chat}/accept"), json!(null)),
        (format!("/api/v1/chats/{chat}/finish"), json!(null)),
        (format!("/api/v1/chats/{chat}/read"), json!(null)),
        (
            format!("/api/v1/chats/{chat}/transfer"),
            json!({"operator": bop.id()}),
        ),
        (
            format!("/api/v1/chats/{chat}/templates/{tid}/render"),
            json!(null),
        ),
    ];
    for (p, body) in &paths_post {
        let r = if body.is_null() {
            bop.post_empty(p).await?
        } else {
            bop.post(p, body.clone()).await?
        };
        assert!(
            r.status == 404 || r.status == 409,
            "POST {p}: {} {}",
            r.status,
            r.text
        );
        assert!(!r.text.contains("secret"), "POST {p} leaked content");
    }
    let draft = bop
        .put(&format!("/api/v1/chats/{chat}/draft"), json!({"text": "x"}))
        .await?;
    assert_eq!(draft.status, 404);
    // Lists and the contact timeline show no content of the chat.
    let list = bop.get("/api/v1/chats").await?.ok()?;
    assert!(
        !list.to_string().contains(&chat),
        "the chats list shows A's chat to B"
    );
    let timeline = bop
        .get(&format!("/api/v1/contacts/{contact}"))
        .await?
        .ok()?;
    assert!(
        !timeline.to_string().contains("secret")
            && !timeline.to_string().contains("private question")
    );
    // Supervisors and admins may read it.
    assert_eq!(
        fx.admin.get(&format!("/api/v1/chats/{chat}")).await?.status,
        200
    );

    // Sockets: A hears the client; after a transfer to C, A hears nothing more, C does.
    let mut a_ws = a.ws().await?;
    let mut b_ws = bop.ws().await?;
    let mut c_ws = c.ws().await?;
    visitor.send("still private").await?;
    a_ws.wait_for("message_created", Duration::from_secs(5), |e| {
        e["message"]["body"] == "still private"
    })
    .await?;
    a.post(
        &format!("/api/v1/chats/{chat}/transfer"),
        json!({"operator": c.id()}),
    )
    .await?
    .ok()?;
    a_ws.wait_for("chat_withdrawn", Duration::from_secs(5), |e| {
        e["chat_id"] == chat.as_str()
    })
    .await?;
    visitor.send("after transfer").await?;
    c_ws.wait_for("message_created", Duration::from_secs(5), |e| {
        e["message"]["body"] == "after transfer"
    })
    .await?;
    let a_events = a_ws.drain(Duration::from_millis(700)).await?;
    assert!(
        !a_events
            .iter()
            .any(|e| e.to_string().contains("after transfer")),
        "A still receives: {a_events:?}"
    );
    let b_events = b_ws.drain(Duration::from_millis(300)).await?;
    assert!(
        !b_events.iter().any(|e| e.to_string().contains("private")),
        "B receives: {b_events:?}"
    );
    // And A's REST access ended too.
    assert_eq!(a.get(&format!("/api/v1/chats/{chat}")).await?.status, 404);
    assert_eq!(c.get(&format!("/api/v1/chats/{chat}")).await?.status, 200);

    // Widget visitors only see their own conversation.
    let other = Visitor::new(&server.base, &fx.widget_key).await?;
    assert_eq!(
        other
            .api
            .get(&format!("/widget/v1/files/{fid}"))
            .await?
            .status,
        404
    );
    assert_eq!(
        other
            .api
            .get("/widget/v1/messages")
            .await?
            .ok()?
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    assert_eq!(
        visitor
            .api
            .get(&format!("/widget/v1/files/{fid}"))
            .await?
            .status,
        200
    );
    Ok(())
}
