//! The chat lifecycle end to end: offer, accept, reply, transfer, finish, a new chat after
//! finish with the earlier history (S21), templates with macros, drafts, operator-initiated
//! chats, analytics.

use std::time::Duration;

use anyhow::Result;
use ferrydesk_tests::{Backend, Fixture, FixtureOptions, Visitor};
use serde_json::json;

use crate::{on_both_backends, setup};

on_both_backends!(
    lifecycle,
    transfer_and_status,
    templates_and_drafts,
    start_chat_and_analytics,
    api_channel_files
);

const WAIT: Duration = Duration::from_secs(10);

async fn lifecycle(b: Backend) -> Result<()> {
    let (_db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let anna = &fx.operators[0];
    anna.set_status("active").await?;
    let mut anna_ws = anna.ws().await?;

    let visitor = Visitor::new(&server.base, &fx.widget_key).await?;
    let mut visitor_ws = visitor.ws().await?;
    let sent = visitor.send("Hello, my order is late").await?;
    assert_eq!(sent["new_chat"], true);
    let chat_id = sent["chat_id"].as_str().unwrap_or_default().to_owned();

    // The Active operator is offered the chat over the socket (S4, S8).
    let offered = anna_ws
        .wait_for("chat_offered", WAIT, |e| {
            e["chat"]["id"] == chat_id.as_str()
        })
        .await?;
    assert_eq!(offered["chat"]["preview"], "Hello, my order is late");
    let inbox = anna.get("/api/v1/me/inbox").await?.ok()?;
    assert_eq!(inbox["new_chats"].as_array().map(Vec::len), Some(1));

    let accepted = anna
        .post_empty(&format!("/api/v1/chats/{chat_id}/accept"))
        .await?
        .ok()?;
    assert_eq!(accepted["status"], "in_progress");
    assert_eq!(accepted["responsible_id"], anna.id().as_str());
    let inbox = anna.get("/api/v1/me/inbox").await?.ok()?;
    assert_eq!(inbox["load"], 1);
    assert_eq!(inbox["active_chats"][0]["id"], chat_id.as_str());

    anna.post(
        &format!("/api/v1/chats/{chat_id}/messages"),
        json!({"text": "We are on it!"}),
    )
    .await?
    .ok()?;
    let live = visitor_ws
        .wait_for("message_created", WAIT, |e| {
            e["message"]["direction"] == "outbound"
        })
        .await?;
    assert_eq!(live["message"]["body"], "We are on it!");

    // The client answers: the operator's socket gets it; the auto-finish timer is cleared.
    visitor.send("Thanks").await?;
    anna_ws
        .wait_for("message_created", WAIT, |e| {
            e["message"]["body"] == "Thanks"
        })
        .await?;
    let view = anna.get(&format!("/api/v1/chats/{chat_id}")).await?.ok()?;
    assert!(view["chat"]["autofinish_at"].is_null());
    assert_eq!(view["chat"]["unread_count"], 1);
    assert!(view["chat"]["first_reply_at"].is_string());

    let finished = anna
        .post_empty(&format!("/api/v1/chats/{chat_id}/finish"))
        .await?
        .ok()?;
    assert_eq!(finished["status"], "completed");
    assert_eq!(finished["close_reason"], "operator");
    visitor_ws.wait_for("chat_finished", WAIT, |_| true).await?;
    assert_eq!(anna.get("/api/v1/me/inbox").await?.ok()?["load"], 0);

    // Writing into a finished chat opens a new one whose parent is the old (S21).
    let again = visitor.send("One more question").await?;
    assert_eq!(again["new_chat"], true);
    let new_id = again["chat_id"].as_str().unwrap_or_default().to_owned();
    assert_ne!(new_id, chat_id);
    anna_ws
        .wait_for("chat_offered", WAIT, |e| e["chat"]["id"] == new_id.as_str())
        .await?;
    let view = anna.get(&format!("/api/v1/chats/{new_id}")).await?.ok()?;
    assert_eq!(view["chat"]["parent_id"], chat_id.as_str());
    assert_eq!(view["chat"]["status"], "new");
    assert_eq!(view["history"][0], chat_id.as_str());
    let bodies: Vec<&str> = view["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["body"].as_str())
        .collect();
    assert!(
        bodies.contains(&"Hello, my order is late") && bodies.contains(&"One more question"),
        "{bodies:?}"
    );

    // The visitor's transcript spans both chats, without system lines.
    let t = visitor.api.get("/widget/v1/messages").await?.ok()?;
    let dirs: Vec<&str> = t
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["direction"].as_str())
        .collect();
    assert_eq!(dirs, ["inbound", "outbound", "inbound", "inbound"]);

    // Both chats are on the contact's timeline (S24).
    let contact = sent["contact_id"].as_str().unwrap_or_default();
    let c = anna
        .get(&format!("/api/v1/contacts/{contact}"))
        .await?
        .ok()?;
    assert_eq!(c["timeline"].as_array().map(Vec::len), Some(2));
    Ok(())
}

async fn transfer_and_status(b: Backend) -> Result<()> {
    let (_db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let (anna, boris) = (&fx.operators[0], &fx.operators[1]);
    anna.set_status("active").await?;
    let r = fx.inbound("m1", "client-1", "Hi").await?;
    let chat = r["chat_id"].as_str().unwrap_or_default().to_owned();

    // Inactive operators see no new chats but keep their chats (S2).
    assert_eq!(
        boris.get("/api/v1/me/inbox").await?.ok()?["new_chats"]
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    anna.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;
    anna.set_status("inactive").await?;
    anna.post(
        &format!("/api/v1/chats/{chat}/messages"),
        json!({"text": "still here"}),
    )
    .await?
    .ok()?;

    // Transfer dialog shows statuses (S15).
    let targets = anna
        .get("/api/v1/transfer-targets?q=operator")
        .await?
        .ok()?;
    let status_of = |id: &str| {
        targets
            .as_array()
            .into_iter()
            .flatten()
            .find(|t| t["id"] == id)
            .map(|t| t["availability"].clone())
    };
    assert_eq!(status_of(&boris.id()), Some(json!("inactive")));

    let mut boris_ws = boris.ws().await?;
    let t = anna
        .post(
            &format!("/api/v1/chats/{chat}/transfer"),
            json!({"operator": boris.id()}),
        )
        .await?
        .ok()?;
    assert_eq!(t["responsible_id"], boris.id().as_str());
    boris_ws
        .wait_for("chat_assigned", WAIT, |e| e["chat"]["id"] == chat.as_str())
        .await?;
    assert_eq!(anna.get("/api/v1/me/inbox").await?.ok()?["load"], 0);
    assert_eq!(boris.get("/api/v1/me/inbox").await?.ok()?["load"], 1);

    // Transfer back to the queue: the chat is new again and offered to Active members.
    boris.set_status("active").await?;
    let t = boris
        .post(
            &format!("/api/v1/chats/{chat}/transfer"),
            json!({"queue": fx.queue}),
        )
        .await?
        .ok()?;
    assert_eq!(t["status"], "new");
    assert!(t["responsible_id"].is_null());
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
    assert_eq!(
        actions,
        [
            "offered",
            "accepted",
            "transferred",
            "transferred",
            "offered"
        ]
    );
    let last = &routing[4];
    let eligible: Vec<&str> = last["candidates"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["eligible"] == true)
        .filter_map(|c| c["user_id"].as_str())
        .collect();
    assert_eq!(
        eligible,
        [boris.id().as_str()],
        "anna is inactive, boris active: {last}"
    );

    // Status history records why (S3: logout sets Inactive).
    boris.post_empty("/api/v1/auth/logout").await?;
    let h = fx
        .admin
        .get(&format!("/api/v1/users/{}/status-history", boris.id()))
        .await?
        .ok()?;
    assert_eq!(h[0]["status"], "inactive");
    assert_eq!(h[0]["reason"], "logout");
    assert_eq!(h[1]["reason"], "manual");
    Ok(())
}

async fn templates_and_drafts(b: Backend) -> Result<()> {
    let (_db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let anna = &fx.operators[0];
    anna.set_status("active").await?;
    fx.admin
        .post("/api/v1/templates", json!({"name": "Greeting", "body": "Hello, {{first_name contact.name}}! I am {{operator.first_name}} from {{channel.name}}."}))
        .await?
        .ok()?;
    let bad = fx
        .admin
        .post(
            "/api/v1/templates",
            json!({"name": "Broken", "body": "Hello {{#if}}"}),
        )
        .await?;
    assert_eq!(bad.status, 422);
    assert_eq!(bad.body["field"], "body");
    let op_create = anna
        .post("/api/v1/templates", json!({"name": "x", "body": "y"}))
        .await?;
    assert_eq!(op_create.status, 403);

    let r = fx.inbound("m1", "c1", "Hi").await?;
    let chat = r["chat_id"].as_str().unwrap_or_default().to_owned();
    anna.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;

    // The `//` picker searches by name or text (S12).
    let by_text = anna
        .get(&format!("/api/v1/templates?q=FROM&chat_id={chat}"))
        .await?
        .ok()?;
    assert_eq!(by_text.as_array().map(Vec::len), Some(1));
    let none = anna.get("/api/v1/templates?q=zzz").await?.ok()?;
    assert_eq!(none.as_array().map(Vec::len), Some(0));
    let tid = by_text[0]["id"].as_str().unwrap_or_default();
    let rendered = anna
        .post_empty(&format!("/api/v1/chats/{chat}/templates/{tid}/render"))
        .await?
        .ok()?;
    assert_eq!(rendered["text"], "Hello, Client! I am Operator from API.");

    // Drafts survive and are per operator (S14); sending clears them.
    anna.put(
        &format!("/api/v1/chats/{chat}/draft"),
        json!({"text": "half-typed"}),
    )
    .await?
    .ok()?;
    let d = anna
        .get(&format!("/api/v1/chats/{chat}/draft"))
        .await?
        .ok()?;
    assert_eq!(d["text"], "half-typed");
    anna.post(
        &format!("/api/v1/chats/{chat}/messages"),
        json!({"text": "done"}),
    )
    .await?
    .ok()?;
    assert_eq!(
        anna.get(&format!("/api/v1/chats/{chat}/draft"))
            .await?
            .ok()?["text"],
        ""
    );

    // Files: upload, attach, download; the API channel sees the outbound message.
    let png = png_bytes();
    let f = anna
        .upload("/api/v1/files", "shot.png", "image/png", png.clone())
        .await?
        .ok()?;
    let fid = f["id"].as_str().unwrap_or_default().to_owned();
    let m = anna
        .post(
            &format!("/api/v1/chats/{chat}/messages"),
            json!({"text": "", "files": [fid]}),
        )
        .await?
        .ok()?;
    assert_eq!(m["attachments"][0]["content_type"], "image/png");
    let again = anna
        .post(
            &format!("/api/v1/chats/{chat}/messages"),
            json!({"text": "x", "files": [fid]}),
        )
        .await?;
    assert_eq!(again.status, 422, "a file attaches once");
    let dl = reqwest::Client::new()
        .get(format!("{}/api/v1/files/{fid}", server.base))
        .header("cookie", anna.cookie.clone().unwrap_or_default())
        .send()
        .await?;
    assert_eq!(dl.headers()["content-type"], "image/png");
    assert_eq!(dl.bytes().await?.to_vec(), png);
    let out = fx.channel().get("/api/v1/channel/outbound").await?.ok()?;
    assert_eq!(out.as_array().map(Vec::len), Some(2));
    assert_eq!(out[0]["recipient"], "c1");
    assert_eq!(out[0]["message"]["delivery_status"], "queued");
    let mid = out[0]["message"]["id"].as_str().unwrap_or_default();
    fx.channel()
        .post(
            &format!("/api/v1/channel/outbound/{mid}/ack"),
            json!({"status": "delivered"}),
        )
        .await?
        .ok()?;
    let pending = fx.channel().get("/api/v1/channel/outbound").await?.ok()?;
    assert_eq!(
        pending.as_array().map(Vec::len),
        Some(1),
        "acked messages are not listed again"
    );
    assert_ne!(pending[0]["message"]["id"], mid);
    let view = anna.get(&format!("/api/v1/chats/{chat}")).await?.ok()?;
    let states: Vec<&str> = view["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["delivery_status"].as_str())
        .collect();
    assert_eq!(states, ["delivered", "queued"]);
    Ok(())
}

pub fn png_bytes() -> Vec<u8> {
    // A 1×1 transparent PNG.
    let b64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=";
    let mut out = Vec::new();
    let mut buf = 0u32;
    let mut bits = 0;
    for c in b64.bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        } as u32;
        buf = (buf << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((buf >> bits) as u8);
        }
    }
    out
}

async fn start_chat_and_analytics(b: Backend) -> Result<()> {
    let (_db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let anna = &fx.operators[0];
    anna.set_status("active").await?;
    let r = fx.inbound("m1", "c1", "Hi").await?;
    let chat = r["chat_id"].as_str().unwrap_or_default().to_owned();
    let contact = r["contact_id"].as_str().unwrap_or_default().to_owned();
    anna.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;
    anna.post(
        &format!("/api/v1/chats/{chat}/messages"),
        json!({"text": "hello"}),
    )
    .await?
    .ok()?;
    // An open chat blocks a second one on the same channel.
    let dup = anna
        .post(
            &format!("/api/v1/contacts/{contact}/chats"),
            json!({"text": "x"}),
        )
        .await?;
    assert_eq!(dup.status, 409);
    anna.post_empty(&format!("/api/v1/chats/{chat}/finish"))
        .await?
        .ok()?;

    // Operator-initiated chat (S22): responsible at once, first message sent.
    let started = anna
        .post(
            &format!("/api/v1/contacts/{contact}/chats"),
            json!({"text": "Following up on your question"}),
        )
        .await?;
    assert_eq!(started.status, 201, "{}", started.text);
    assert_eq!(started.body["status"], "in_progress");
    assert_eq!(started.body["operator_initiated"], true);
    assert_eq!(started.body["parent_id"], chat.as_str());

    let from = "2000-01-01T00:00:00Z";
    let to = "2100-01-01T00:00:00Z";
    let forbidden = anna
        .get(&format!("/api/v1/analytics/totals?from={from}&to={to}"))
        .await?;
    assert_eq!(forbidden.status, 403);
    let t = fx
        .admin
        .get(&format!(
            "/api/v1/analytics/totals?from={from}&to={to}&group_by=operator"
        ))
        .await?
        .ok()?;
    assert_eq!(t["overall"]["chats"], 2);
    assert_eq!(t["overall"]["completed"], 1);
    assert_eq!(t["overall"]["in_progress"], 1);
    assert!(t["overall"]["first_response_avg_secs"].is_number());
    assert_eq!(t["groups"][0]["key"], anna.id().as_str());
    let bad = fx
        .admin
        .get(&format!(
            "/api/v1/analytics/totals?from={from}&to={to}&group_by=planet"
        ))
        .await?;
    assert_eq!(bad.status, 422);

    let list = fx
        .admin
        .get("/api/v1/chats?status=completed&limit=10")
        .await?
        .ok()?;
    assert_eq!(list["total"], 1);
    let csv = fx.admin.get("/api/v1/chats/export.csv").await?;
    assert_eq!(csv.status, 200);
    assert_eq!(csv.text.lines().count(), 3, "{}", csv.text);
    assert!(csv.text.starts_with("id,status,contact"));
    Ok(())
}

async fn api_channel_files(b: Backend) -> Result<()> {
    let (_db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let anna = &fx.operators[0];
    anna.set_status("active").await?;
    let ch = fx.channel();
    let png = png_bytes();

    // The integration uploads the client's file and references it in the inbound message.
    let f = ch
        .upload(
            "/api/v1/channel/files",
            "photo.png",
            "image/png",
            png.clone(),
        )
        .await?
        .ok()?;
    let fid = f["id"].as_str().unwrap_or_default().to_owned();
    let r = ch
        .post("/api/v1/channel/messages", json!({"external_id": "f1", "sender": {"id": "c1"}, "text": "see photo", "files": [fid]}))
        .await?
        .ok()?;
    let chat = r["chat_id"].as_str().unwrap_or_default().to_owned();
    anna.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;
    let view = anna.get(&format!("/api/v1/chats/{chat}")).await?.ok()?;
    assert_eq!(view["messages"][0]["attachments"][0]["id"], fid.as_str());

    // Files the integration did not upload cannot be attached to a client's message.
    let staff = anna
        .upload("/api/v1/files", "x.png", "image/png", png.clone())
        .await?
        .ok()?;
    let r = ch
        .post("/api/v1/channel/messages", json!({"external_id": "f2", "sender": {"id": "c1"}, "text": "x", "files": [staff["id"]]}))
        .await?;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (422, Some("files")),
        "{}",
        r.text
    );
    let visitor = ferrydesk_tests::Visitor::new(&server.base, &fx.widget_key).await?;
    let other = ch
        .upload("/api/v1/channel/files", "y.png", "image/png", png.clone())
        .await?
        .ok()?;
    let r = visitor
        .api
        .post(
            "/widget/v1/messages",
            json!({"text": "x", "files": [other["id"]]}),
        )
        .await?;
    assert_eq!(r.status, 422, "{}", r.text);

    // The operator's attachment reaches the integration, which downloads it with its token.
    let mine = anna
        .upload("/api/v1/files", "reply.png", "image/png", png.clone())
        .await?
        .ok()?;
    anna.post(
        &format!("/api/v1/chats/{chat}/messages"),
        json!({"text": "here", "files": [mine["id"]]}),
    )
    .await?
    .ok()?;
    let out = ch.get("/api/v1/channel/outbound").await?.ok()?;
    let att = out[0]["message"]["attachments"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(att, mine["id"].as_str().unwrap_or_default());
    let dl = reqwest::Client::new()
        .get(format!("{}/api/v1/channel/files/{att}", server.base))
        .bearer_auth(&fx.api_token)
        .send()
        .await?;
    assert_eq!(dl.status().as_u16(), 200);
    assert_eq!(dl.bytes().await?.to_vec(), png);

    // Another channel's token cannot read it.
    let second = fx
        .admin
        .post(
            "/api/v1/channels",
            json!({"kind": "api", "name": "Other", "queue_id": fx.queue}),
        )
        .await?
        .ok()?;
    let token = second["api_token"].as_str().unwrap_or_default();
    let r = reqwest::Client::new()
        .get(format!("{}/api/v1/channel/files/{att}", server.base))
        .bearer_auth(token)
        .send()
        .await?;
    assert_eq!(r.status().as_u16(), 404);
    Ok(())
}
