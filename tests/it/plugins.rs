//! Plugins end to end, against real `ferrydesk` processes and components built from `plugins/`:
//! the Telegram connector on a fake Bot API (webhook and long polling; duplicates, retries,
//! 429, files, profile photos), the generic webhook connector (HMAC both ways, retried
//! deliveries), chat actions with their effects and audit, macros in templates, a malicious
//! plugin contained while the server keeps serving, and administration rules.

use std::time::Duration;

use anyhow::{Result, bail};
use ferrydesk_tests::fakes::{FakeEndpoint, FakeTelegram, TgFile, sign};
use ferrydesk_tests::{Api, Backend, Fixture, FixtureOptions};
use serde_json::{Value, json};

use crate::{on_both_backends, setup};

on_both_backends!(
    telegram_webhook,
    telegram_polling,
    webhook_connector,
    actions_macros_and_sandbox
);

pub(crate) const TOKEN: &str = "123456:TEST-token_x";
const HOOK_SECRET: &str = "s3cret-hook";
/// The start of a JPEG (enough for content sniffing).
const JPEG: &[u8] = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00\xff\xdb";

pub fn plugin_dir(name: &str) -> String {
    let d = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../plugins")
        .join(name);
    assert!(
        d.join("plugin.wasm").exists(),
        "{}/plugin.wasm is missing: run plugins/build.sh",
        d.display()
    );
    d.canonicalize().expect("plugin dir").display().to_string()
}

pub async fn install(admin: &Api, name: &str) -> Result<Value> {
    admin
        .post("/api/v1/plugins", json!({"path": plugin_dir(name)}))
        .await?
        .ok()
}

pub(crate) async fn eventually<F, Fut>(what: &str, secs: u64, mut f: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<bool>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if f().await? {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) fn update(id: i64, message_id: i64, extra: Value) -> Value {
    let mut m = json!({
        "message_id": message_id,
        "from": {"id": 777, "is_bot": false, "first_name": "Ivan", "last_name": "Petrov", "username": "ivanp"},
        "chat": {"id": 777, "type": "private", "first_name": "Ivan"},
        "date": 1_764_000_000,
    });
    if let (Some(o), Some(e)) = (m.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    json!({"update_id": id, "message": m})
}

pub(crate) async fn telegram_channel(
    fx: &Fixture,
    tg: &FakeTelegram,
    mode: &str,
) -> Result<String> {
    install(&fx.admin, "telegram").await?;
    // The admin grants the official API and the configured Bot API server, which is on
    // loopback here (hence private addresses).
    fx.admin
        .post("/api/v1/plugins/telegram/enable", json!({"grant": {"hosts": ["https://api.telegram.org", "{{api_base}}"], "private": true}}))
        .await?
        .ok()?;
    let bad = fx
        .admin
        .post("/api/v1/connector-channels", json!({"plugin": "telegram", "name": "Telegram", "queue_id": fx.queue, "config": {"bot_token": "not a token", "api_base": tg.base}}))
        .await?;
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert!(
        bad.body["field"]
            .as_str()
            .unwrap_or_default()
            .contains("bot_token"),
        "{}",
        bad.text
    );
    let c = fx
        .admin
        .post(
            "/api/v1/connector-channels",
            json!({"plugin": "telegram", "name": "Telegram", "queue_id": fx.queue, "config": {
                "bot_token": TOKEN, "webhook_secret": HOOK_SECRET, "api_base": tg.base,
                "public_url": "https://desk.example.com/hook", "mode": mode, "poll_timeout": 1
            }}),
        )
        .await?
        .ok()?;
    assert_eq!(c["setup_error"], Value::Null, "{c}");
    // Secrets are write-only.
    assert_eq!(c["config"]["bot_token"], json!({"set": true}));
    assert!(!c.to_string().contains(TOKEN));
    Ok(c["channel"]["id"].as_str().unwrap_or_default().to_owned())
}

async fn telegram_webhook(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(
        &server,
        FixtureOptions {
            operators: 1,
            ..Default::default()
        },
    )
    .await?;
    let op = &fx.operators[0];
    op.set_status("active").await?;
    let tg = FakeTelegram::start(TOKEN).await?;
    {
        let mut s = tg.lock();
        s.files.insert(
            "photo-big".into(),
            TgFile {
                path: "photos/file_1.jpg".into(),
                bytes: JPEG.to_vec(),
            },
        );
        s.files.insert(
            "avatar-1".into(),
            TgFile {
                path: "profile_photos/file_2.jpg".into(),
                bytes: JPEG.to_vec(),
            },
        );
        s.profile_photos.insert(777, "avatar-1".into());
    }
    let channel = telegram_channel(&fx, &tg, "webhook").await?;
    // The bot token and the webhook secret are sealed in the database (issue 14, row 18); the
    // plugin still has them: setup registered the webhook with its secret, using the token.
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT COUNT(*) FROM plugin_settings WHERE config LIKE '%{}%' OR config LIKE '%{HOOK_SECRET}%'",
            TOKEN.split(':').nth(1).unwrap_or(TOKEN)
        ))
        .await?,
        0
    );
    assert!(
        db.scalar_i64("SELECT COUNT(*) FROM plugin_settings WHERE config LIKE 'enc:v1:%'")
            .await?
            >= 1
    );
    assert_eq!(
        tg.lock().webhook.clone(),
        Some((
            "https://desk.example.com/hook".into(),
            Some(HOOK_SECRET.into())
        ))
    );
    let hook = format!("/api/v1/channels/{channel}/webhook");
    let provider = Api::new(&server.base);
    let body = serde_json::to_vec(&update(5001, 11, json!({"text": "Hello from Telegram"})))?;

    // Without the secret header, or with a wrong one: refused, nothing stored.
    let r = provider
        .raw(
            reqwest::Method::POST,
            &hook,
            "application/json",
            body.clone(),
        )
        .await?;
    assert_eq!(r.status, 401, "{}", r.text);
    let r = provider
        .send(
            reqwest::Client::new()
                .post(format!("{}{hook}", server.base))
                .header("x-telegram-bot-api-secret-token", "guess")
                .body(body.clone()),
        )
        .await?;
    assert_eq!(r.status, 401);
    assert_eq!(db.scalar_i64("SELECT COUNT(*) FROM messages").await?, 0);

    // The real delivery, then Telegram's duplicate deliveries (in parallel): stored once.
    let deliver = |body: Vec<u8>| {
        let url = format!("{}{hook}", server.base);
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .header("x-telegram-bot-api-secret-token", HOOK_SECRET)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?;
            Ok::<_, anyhow::Error>(r.status().as_u16())
        }
    };
    assert_eq!(deliver(body.clone()).await?, 200);
    let (a, b2) = tokio::join!(deliver(body.clone()), deliver(body.clone()));
    assert_eq!((a?, b2?), (200, 200));
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM messages WHERE external_id = '777:11'")
            .await?,
        1
    );
    assert_eq!(db.scalar_i64("SELECT COUNT(*) FROM chats").await?, 1);

    // The contact carries the Telegram name and profile photo (stored here, not linked: the
    // provider's file URL contains the bot token).
    let inbox = op.get("/api/v1/me/inbox").await?.ok()?;
    let chat = inbox["new_chats"][0].clone();
    let chat_id = chat["id"].as_str().unwrap_or_default().to_owned();
    let contact = fx
        .admin
        .get(&format!(
            "/api/v1/contacts/{}",
            chat["contact_id"].as_str().unwrap_or_default()
        ))
        .await?
        .ok()?;
    let contact = if contact.get("contact").is_some() {
        contact["contact"].clone()
    } else {
        contact
    };
    assert_eq!(contact["name"], "Ivan Petrov");
    let photo = contact["photo_url"].as_str().unwrap_or_default().to_owned();
    assert!(photo.starts_with("/api/v1/photos/"), "{contact}");
    let r = reqwest::Client::new()
        .get(format!("{}{photo}", server.base))
        .header("cookie", op.cookie.clone().unwrap_or_default())
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await?.to_vec(), JPEG);
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT COUNT(*) FROM messages WHERE body LIKE '%{TOKEN}%'"
        ))
        .await?,
        0
    );
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT COUNT(*) FROM contacts WHERE photo_url LIKE '%{TOKEN}%'"
        ))
        .await?,
        0
    );

    // A photo with a caption: the largest size is fetched through getFile.
    let photo_update = update(
        5002,
        12,
        json!({"caption": "see photo", "photo": [
            {"file_id": "photo-small", "file_unique_id": "a", "width": 90, "height": 90},
            {"file_id": "photo-big", "file_unique_id": "b", "width": 800, "height": 800}
        ]}),
    );
    assert_eq!(deliver(serde_json::to_vec(&photo_update)?).await?, 200);
    assert_eq!(db.scalar_i64("SELECT COUNT(*) FROM files WHERE message_id IS NOT NULL AND content_type = 'image/jpeg'").await?, 1);

    // The operator answers; the first send is rate limited (429 retry_after=1) and retried.
    op.post_empty(&format!("/api/v1/chats/{chat_id}/accept"))
        .await?
        .ok()?;
    tg.lock().rate_limit_sends = 1;
    let sent_at = std::time::Instant::now();
    let m = op
        .post(
            &format!("/api/v1/chats/{chat_id}/messages"),
            json!({"text": "Hi Ivan, how can I help?"}),
        )
        .await?
        .ok()?;
    let mid = m["id"].as_str().unwrap_or_default().to_owned();
    eventually("the reply reaches Telegram", 20, || async {
        Ok(!tg.lock().sent.is_empty())
    })
    .await?;
    assert!(
        sent_at.elapsed() >= Duration::from_secs(1),
        "retry_after was not honoured"
    );
    {
        let s = tg.lock();
        assert_eq!(s.sent.len(), 1);
        assert_eq!(
            (
                s.sent[0].0.as_str(),
                s.sent[0].1.as_str(),
                s.sent[0].2.as_str()
            ),
            ("sendMessage", "777", "Hi Ivan, how can I help?")
        );
    }
    assert_eq!(tg.calls_of("sendMessage").len(), 2, "one 429, one success");
    eventually("delivery status sent", 10, || async {
        Ok(db.scalar_i64(&format!("SELECT COUNT(*) FROM messages WHERE id = '{mid}' AND delivery_status = 'sent' AND external_id = 'out:777:1001'")).await? == 1)
    })
    .await?;
    assert_eq!(db.scalar_i64("SELECT COUNT(*) FROM outbox").await?, 0);

    // A reply with an image goes out as sendPhoto with the bytes.
    let f = op
        .upload("/api/v1/files", "shot.jpg", "image/jpeg", JPEG.to_vec())
        .await?
        .ok()?;
    op.post(
        &format!("/api/v1/chats/{chat_id}/messages"),
        json!({"text": "Here", "files": [f["id"]]}),
    )
    .await?
    .ok()?;
    eventually("the photo reaches Telegram", 20, || async {
        Ok(tg.lock().sent.len() == 2)
    })
    .await?;
    {
        let s = tg.lock();
        assert_eq!(s.sent[1].0, "sendPhoto");
        assert_eq!(s.sent[1].2, "Here");
        assert_eq!(s.sent[1].3.as_deref(), Some(JPEG));
    }
    assert_eq!(tg.lock().unauthorized, 0);
    Ok(())
}

/// A Telegram client (Ivan Petrov, id 777) writing to a polling Telegram channel on a fake Bot
/// API: returns the chat once the message is stored.
pub(crate) async fn telegram_client_chat(
    fx: &Fixture,
    db: &ferrydesk_tests::Db,
    tg: &FakeTelegram,
    text: &str,
) -> Result<String> {
    telegram_channel(fx, tg, "polling").await?;
    tg.push_update(update(7001, 31, json!({ "text": text })));
    eventually("the Telegram message is stored", 30, || async {
        Ok(db
            .scalar_i64("SELECT COUNT(*) FROM messages WHERE external_id = '777:31'")
            .await?
            == 1)
    })
    .await?;
    let mut c = db.sql().await?;
    let chat: String =
        sqlx::query_scalar("SELECT chat_id FROM messages WHERE external_id = '777:31'")
            .fetch_one(&mut c)
            .await?;
    Ok(chat)
}

async fn telegram_polling(b: Backend) -> Result<()> {
    let (db, mut server) = setup!(b);
    let fx = Fixture::new(
        &server,
        FixtureOptions {
            operators: 1,
            ..Default::default()
        },
    )
    .await?;
    let tg = FakeTelegram::start(TOKEN).await?;
    tg.lock().webhook = Some(("https://old.example.com".into(), None));
    telegram_channel(&fx, &tg, "polling").await?;
    // Polling mode removes the webhook (getUpdates is refused while one is set).
    assert!(tg.lock().webhook.is_none());
    assert_eq!(tg.calls_of("deleteWebhook").len(), 1);

    tg.push_update(update(6001, 21, json!({"text": "first"})));
    tg.push_update(update(6002, 22, json!({"text": "second"})));
    eventually("two polled messages", 20, || async {
        Ok(db
            .scalar_i64("SELECT COUNT(*) FROM messages WHERE external_id IN ('777:21', '777:22')")
            .await?
            == 2)
    })
    .await?;
    // The offset moves past what was stored, so Telegram forgets those updates.
    eventually("offset confirmed", 10, || async {
        Ok(tg.lock().offsets.contains(&6003))
    })
    .await?;

    // A crash, an update while down, a restart: it arrives once; nothing earlier repeats.
    server.kill().await;
    tg.push_update(update(6003, 23, json!({"text": "while you were down"})));
    server.restart().await?;
    eventually(
        "the update sent during the outage (the dead node's poll lease expires first)",
        45,
        || async {
            Ok(db
                .scalar_i64("SELECT COUNT(*) FROM messages WHERE external_id = '777:23'")
                .await?
                == 1)
        },
    )
    .await?;
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM messages WHERE direction = 'inbound'")
            .await?,
        3
    );
    assert_eq!(db.scalar_i64("SELECT COUNT(*) FROM chats").await?, 1);
    Ok(())
}

/// Installs and enables the webhook plugin (granting the configured endpoint, on loopback) and
/// creates a channel that sends replies to `endpoint`.
async fn webhook_channel(fx: &Fixture, secret: &str, endpoint: &FakeEndpoint) -> Result<Value> {
    install(&fx.admin, "webhook").await?;
    fx.admin
        .post(
            "/api/v1/plugins/webhook/enable",
            json!({"grant": {"hosts": ["{{outbound_url}}"], "private": true}}),
        )
        .await?
        .ok()?;
    fx.admin
        .post("/api/v1/connector-channels", json!({"plugin": "webhook", "name": "Shop app", "queue_id": fx.queue, "config": {"secret": secret, "outbound_url": endpoint.url}}))
        .await?
        .ok()
}

async fn webhook_connector(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(
        &server,
        FixtureOptions {
            operators: 1,
            ..Default::default()
        },
    )
    .await?;
    let op = &fx.operators[0];
    op.set_status("active").await?;
    let secret = "0123456789abcdef-shared";
    let endpoint = FakeEndpoint::start(secret, 1).await?;
    let c = webhook_channel(&fx, secret, &endpoint).await?;
    let hook = format!(
        "{}{}",
        server.base,
        c["webhook_path"].as_str().unwrap_or_default()
    );
    let body = serde_json::to_vec(&json!({"messages": [
        {"id": "w-1", "sender": {"id": "cust-9", "name": "Maria"}, "text": "Where is my order?"},
        {"id": "w-2", "sender": {"id": "cust-9", "name": "Maria"}, "text": "Order 1234"}
    ]}))?;
    let post = |sig: String, body: Vec<u8>| {
        let hook = hook.clone();
        async move {
            let r = reqwest::Client::new()
                .post(hook)
                .header("x-ferrydesk-signature", sig)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?;
            let status = r.status().as_u16();
            Ok::<_, anyhow::Error>((status, r.json::<Value>().await.unwrap_or_default()))
        }
    };
    let (status, _) = post(sign("wrong-secret-0000000", &body), body.clone()).await?;
    assert_eq!(status, 401);
    let (status, reply) = post(sign(secret, &body), body.clone()).await?;
    assert_eq!(status, 200);
    assert_eq!(reply, json!({"ok": true, "accepted": 2}));
    // A re-delivery stores nothing new.
    let (status, _) = post(sign(secret, &body), body.clone()).await?;
    assert_eq!(status, 200);
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM messages WHERE external_id IN ('w-1', 'w-2')")
            .await?,
        2
    );
    // Garbage that is correctly signed is a 400 naming the problem, and stores nothing.
    let junk = b"{\"hello\": 1}".to_vec();
    let (status, err) = post(sign(secret, &junk), junk).await?;
    assert_eq!(status, 400, "{err}");
    assert!(
        err["message"].as_str().unwrap_or_default().contains("body"),
        "{err}"
    );
    // Results are bounded (issue 14): 101 messages (limits.effects 100) or 21 files to download
    // (at most 20 per call) fail the call with a 400 naming the limit (a retry cannot cure
    // it), and nothing is ingested.
    let many: Vec<Value> = (0..101)
        .map(|i| json!({"id": format!("big-{i}"), "sender": {"id": "cust-7"}, "text": "spam"}))
        .collect();
    let files: Vec<Value> = (0..21)
        .map(|i| json!({"url": format!("{}/f/{i}", endpoint.url), "name": "a.txt"}))
        .collect();
    for (body, what) in [
        (json!({"messages": many}), "limits.effects"),
        (
            json!({"id": "big-files", "sender": {"id": "cust-7"}, "text": "", "files": files}),
            "21 file and photo downloads",
        ),
    ] {
        let body = serde_json::to_vec(&body)?;
        let (status, err) = post(sign(secret, &body), body).await?;
        assert_eq!(status, 400, "{err}");
        let msg = err["message"].as_str().unwrap_or_default();
        assert!(
            msg.contains(what) && msg.contains("nothing was ingested"),
            "{err}"
        );
    }
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM messages WHERE external_id LIKE 'big-%'")
            .await?,
        0
    );

    let chat = op.get("/api/v1/me/inbox").await?.ok()?["new_chats"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    op.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;
    op.post(
        &format!("/api/v1/chats/{chat}/messages"),
        json!({"text": "It ships today"}),
    )
    .await?
    .ok()?;
    // The endpoint fails once with 500; the outbox retries with backoff.
    eventually("the reply reaches the endpoint", 30, || async {
        Ok(!endpoint.lock().received.is_empty())
    })
    .await?;
    {
        let s = endpoint.lock();
        assert_eq!(s.bad_signatures, 0);
        assert_eq!(s.attempts, 2);
        assert_eq!(s.received[0]["recipient"], "cust-9");
        assert_eq!(s.received[0]["text"], "It ships today");
    }
    eventually("delivery status sent", 10, || async {
        Ok(db.scalar_i64("SELECT COUNT(*) FROM messages WHERE direction = 'outbound' AND delivery_status = 'sent' AND external_id = 'out:ext-0'").await? == 1)
    })
    .await?;
    // The connector plugin cannot be removed while a channel uses it.
    let r = fx.admin.delete("/api/v1/plugins/webhook").await?;
    assert_eq!((r.status, r.code()), (409, "plugin_in_use"), "{}", r.text);
    Ok(())
}

async fn actions_macros_and_sandbox(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(
        &server,
        FixtureOptions {
            operators: 2,
            ..Default::default()
        },
    )
    .await?;
    let (anna, boris) = (&fx.operators[0], &fx.operators[1]);
    anna.set_status("active").await?;

    // Administration: admins only; a plugin starts disabled; versions only grow.
    let r = anna.get("/api/v1/plugins").await?;
    assert_eq!(r.status, 403);
    let cc = install(&fx.admin, "create-case").await?;
    assert_eq!(cc["enabled"], false);
    let again = fx
        .admin
        .post(
            "/api/v1/plugins",
            json!({"path": plugin_dir("create-case")}),
        )
        .await?;
    assert_eq!((again.status, again.code()), (409, "plugin_installed"));
    let up = fx
        .admin
        .post(
            "/api/v1/plugins?upgrade=true",
            json!({"path": plugin_dir("create-case")}),
        )
        .await?;
    assert_eq!(up.status, 422, "{}", up.text);
    assert_eq!(up.body["field"], "/version");
    fx.admin
        .post("/api/v1/plugins/create-case/enable", json!({}))
        .await?
        .ok()?;
    install(&fx.admin, "testing/evil").await?;
    let grant_bad = fx
        .admin
        .post(
            "/api/v1/plugins/evil/enable",
            json!({"grant": {"hosts": ["https://elsewhere.example"]}}),
        )
        .await?;
    assert_eq!(grant_bad.status, 422);
    assert_eq!(grant_bad.body["field"], "grant.hosts[0]");
    fx.admin
        .post("/api/v1/plugins/evil/enable", json!({}))
        .await?
        .ok()?;
    install(&fx.admin, "greeting").await?;
    let bad_cfg = fx
        .admin
        .put(
            "/api/v1/plugins/greeting/config",
            json!({"config": {"utc_offset": 5000}}),
        )
        .await?;
    assert_eq!(bad_cfg.status, 422);
    assert_eq!(bad_cfg.body["field"], "/utc_offset");
    fx.admin
        .put(
            "/api/v1/plugins/greeting/config",
            json!({"config": {"utc_offset": 180}}),
        )
        .await?
        .ok()?;
    fx.admin
        .post("/api/v1/plugins/greeting/enable", json!({}))
        .await?
        .ok()?;

    // A chat in progress for anna.
    fx.inbound("a-1", "carl", "My parcel is late").await?;
    let chat = anna.get("/api/v1/me/inbox").await?.ok()?["new_chats"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    anna.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;

    // The chat settings hide the plugin step of "Create case" by default; show it here.
    let menu = fx.admin.get("/api/v1/settings/chat-actions").await?.ok()?;
    let mut entries: Vec<Value> = menu.as_array().cloned().unwrap_or_default();
    for e in &mut entries {
        if e["target"] == "create-case/create-case" {
            e["enabled"] = json!(true);
        }
    }
    let bad = fx
        .admin
        .put(
            "/api/v1/settings/chat-actions",
            json!([{"caption": "x", "kind": "plugin", "target": "nope/nothing"}]),
        )
        .await?;
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert_eq!(bad.body["field"], "entries[0].target");
    fx.admin
        .put("/api/v1/settings/chat-actions", json!(entries))
        .await?
        .ok()?;

    // The Actions menu.
    let actions = anna
        .get(&format!("/api/v1/chats/{chat}/actions"))
        .await?
        .ok()?;
    let names: Vec<String> = actions
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            format!(
                "{}/{}",
                a["plugin"].as_str().unwrap_or(""),
                a["action"].as_str().unwrap_or("")
            )
        })
        .collect();
    assert!(
        names.contains(&"create-case/create-case".to_owned()),
        "{names:?}"
    );
    // Boris may not see anna's chat, so it has no actions for him either.
    assert_eq!(
        boris
            .get(&format!("/api/v1/chats/{chat}/actions"))
            .await?
            .status,
        404
    );
    assert_eq!(
        boris
            .post(
                &format!("/api/v1/chats/{chat}/actions/create-case/create-case"),
                json!({})
            )
            .await?
            .status,
        404
    );

    // Input is checked against the action's schema before the plugin runs.
    let r = anna
        .post(
            &format!("/api/v1/chats/{chat}/actions/create-case/create-case"),
            json!({"input": {"subject": 5}}),
        )
        .await?;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("/subject"), "{}", r.text);

    let r = anna
        .post(
            &format!("/api/v1/chats/{chat}/actions/create-case/create-case"),
            json!({"input": {"subject": "Broken parcel"}}),
        )
        .await?
        .ok()?;
    assert_eq!(r["output"]["subject"], "Broken parcel");
    assert_eq!(r["output"]["description"], "Client: My parcel is late");
    assert_eq!(
        r["effects"],
        json!([]),
        "the plugin only prepares; the process creates"
    );

    // The malicious plugin: each misdeed is stopped with a clear error and changes nothing.
    let before = db.scalar_i64("SELECT COUNT(*) FROM messages").await?;
    for (action, input, expect) in [
        ("loop", json!({}), "did not finish within 500 ms"),
        ("memory", json!({}), "more than its 16 MiB"),
        ("stack", json!({}), "crashed"),
        ("panic", json!({}), "the evil plugin panics"),
        ("garbage", json!({}), "invalid output"),
        (
            "fetch",
            json!({"url": "http://127.0.0.1:1/"}),
            "private address",
        ),
        (
            "fetch",
            json!({"url": "https://example.org/"}),
            "not among the hosts",
        ),
    ] {
        let r = anna
            .post(
                &format!("/api/v1/chats/{chat}/actions/evil/{action}"),
                json!({"input": input}),
            )
            .await?;
        assert_eq!(
            (r.status, r.code()),
            (409, "plugin_failed"),
            "{action}: {}",
            r.text
        );
        assert!(
            r.body["message"].as_str().unwrap_or("").contains(expect),
            "{action}: {}",
            r.text
        );
    }
    let r = anna
        .post(
            &format!("/api/v1/chats/{chat}/actions/evil/write-contact"),
            json!({"input": {"id": "x"}}),
        )
        .await?;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["field"], "effects[0]");
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM messages").await?,
        before
    );
    // Every run is audited, failures included.
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM plugin_runs WHERE plugin_id = 'evil' AND ok = 0")
            .await?,
        8
    );
    assert_eq!(
        db.scalar_i64(
            "SELECT COUNT(*) FROM plugin_runs WHERE plugin_id = 'create-case' AND ok = 1"
        )
        .await?,
        1
    );
    // Still serving.
    assert_eq!(
        reqwest::get(format!("{}/healthz", server.base))
            .await?
            .status(),
        200
    );
    let stats = fx.admin.get("/api/v1/plugins/evil").await?.ok()?;
    assert!(
        stats["stats"]["errors"].as_u64().unwrap_or(0) >= 7,
        "{stats}"
    );

    // Macros from the greeting plugin in a template.
    let t = fx
        .admin
        .post("/api/v1/templates", json!({"name": "Hello", "body": "{{greeting}}, {{first_name contact.name}}! {{format_date 1795564800000 style=\"long\" lang=\"ru\"}}"}))
        .await?
        .ok()?;
    let tid = t["id"].as_str().unwrap_or_default();
    let r = anna
        .post(
            &format!("/api/v1/chats/{chat}/templates/{tid}/render"),
            json!({}),
        )
        .await?
        .ok()?;
    let text = r["text"].as_str().unwrap_or_default();
    assert!(text.ends_with("Client! 25 ноября 2026"), "{text}");
    assert!(
        ["Good morning", "Good afternoon", "Good evening"]
            .iter()
            .any(|g| text.starts_with(g)),
        "{text}"
    );
    // Disabled, its helpers answer with an error naming the plugin.
    fx.admin
        .post_empty("/api/v1/plugins/greeting/disable")
        .await?
        .ok()?;
    let r = anna
        .post(
            &format!("/api/v1/chats/{chat}/templates/{tid}/render"),
            json!({}),
        )
        .await?;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("greeting"), "{}", r.text);
    // Disabled actions leave the menu.
    fx.admin
        .post_empty("/api/v1/plugins/evil/disable")
        .await?
        .ok()?;
    let actions = anna
        .get(&format!("/api/v1/chats/{chat}/actions"))
        .await?
        .ok()?;
    assert!(!actions.to_string().contains("\"evil\""), "{actions}");
    fx.admin.delete("/api/v1/plugins/evil").await?;
    assert_eq!(fx.admin.get("/api/v1/plugins/evil").await?.status, 404);
    Ok(())
}

async fn run_cmd(what: &str, cmd: &mut tokio::process::Command) -> Result<String> {
    let out = cmd.output().await?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if !out.status.success() {
        bail!("{what} failed:\n{text}");
    }
    Ok(text)
}

/// The tutorial's path for a new author: scaffold, unit-test, build, check, pack, install from
/// the package, enable, run in a chat's Actions menu — then upgrade from a newer package.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scaffolded_plugin_builds_checks_installs_and_runs() -> Result<()> {
    let (_db, server) = setup!(Backend::Sqlite);
    let fx = Fixture::new(
        &server,
        FixtureOptions {
            operators: 1,
            ..Default::default()
        },
    )
    .await?;
    let work = tempfile::tempdir()?;
    let dir = work.path().join("hello-note");
    let bin = ferrydesk_tests::server_bin();
    let out = run_cmd(
        "plugin new",
        tokio::process::Command::new(&bin)
            .args(["plugin", "new", "hello-note", "--kind", "action", "--dir"])
            .arg(&dir),
    )
    .await?;
    assert!(out.contains("created action plugin `hello-note`"), "{out}");
    // Keep the scaffold's build products between runs (deps compile once), at the path the
    // manifest expects (target/ inside the plugin).
    let cache = std::env::var("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("scaffold-target");
    std::fs::create_dir_all(&cache)?;
    std::os::unix::fs::symlink(&cache, dir.join("target"))?;
    let cargo = |args: &[&str]| {
        let mut c =
            tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
        c.args(args)
            .current_dir(&dir)
            .env_remove("CARGO_TARGET_DIR")
            .env_remove("RUSTFLAGS");
        c
    };
    run_cmd("cargo test", &mut cargo(&["test", "--quiet"])).await?;
    run_cmd(
        "cargo build",
        &mut cargo(&["build", "--release", "--target", "wasm32-wasip2"]),
    )
    .await?;
    let out = run_cmd(
        "plugin check",
        tokio::process::Command::new(&bin)
            .args(["plugin", "check"])
            .arg(&dir),
    )
    .await?;
    assert!(
        out.contains("component ok") && out.contains("action hello-note"),
        "{out}"
    );
    let tar = work.path().join("hello-note.tar");
    run_cmd(
        "plugin pack",
        tokio::process::Command::new(&bin)
            .args(["plugin", "pack"])
            .arg(&dir)
            .arg("-o")
            .arg(&tar),
    )
    .await?;

    let info = fx
        .admin
        .raw(
            reqwest::Method::POST,
            "/api/v1/plugins",
            "application/x-tar",
            std::fs::read(&tar)?,
        )
        .await?
        .ok()?;
    assert_eq!(
        (info["id"].as_str(), info["version"].as_str()),
        (Some("hello-note"), Some("0.1.0"))
    );
    fx.admin
        .post("/api/v1/plugins/hello-note/enable", json!({}))
        .await?
        .ok()?;

    let op = &fx.operators[0];
    op.set_status("active").await?;
    let m = fx.inbound("h-1", "hana", "Hi there").await?;
    let chat = m["chat_id"].as_str().unwrap_or_default().to_owned();
    op.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;
    let actions = op
        .get(&format!("/api/v1/chats/{chat}/actions"))
        .await?
        .ok()?;
    assert!(actions.to_string().contains("\"hello-note\""), "{actions}");
    let r = op
        .post(
            &format!("/api/v1/chats/{chat}/actions/hello-note/hello-note"),
            json!({"input": {"comment": "Call back."}}),
        )
        .await?
        .ok()?;
    assert_eq!(r["output"]["messages"], 1, "{r}");
    let view = op.get(&format!("/api/v1/chats/{chat}")).await?.ok()?;
    assert!(
        view.to_string()
            .contains("This chat has 1 messages. Call back."),
        "{view}"
    );

    // A tampered package is refused; a newer version upgrades in place, still enabled.
    let mut bytes = std::fs::read(&tar)?;
    let n = bytes.len();
    bytes[n / 2] ^= 0xff;
    let r = fx
        .admin
        .raw(
            reqwest::Method::POST,
            "/api/v1/plugins?upgrade=true",
            "application/x-tar",
            bytes,
        )
        .await?;
    assert_eq!(r.status, 422, "{}", r.text);
    let manifest = dir.join("plugin.json");
    std::fs::write(
        &manifest,
        std::fs::read_to_string(&manifest)?
            .replace("\"version\": \"0.1.0\"", "\"version\": \"0.2.0\""),
    )?;
    run_cmd(
        "plugin pack",
        tokio::process::Command::new(&bin)
            .args(["plugin", "pack"])
            .arg(&dir)
            .arg("-o")
            .arg(&tar),
    )
    .await?;
    // A package well above the JSON body limit (extra files are ignored) still uploads.
    let padding = work.path().join("padding.bin");
    std::fs::write(&padding, vec![0u8; 600 << 10])?;
    run_cmd(
        "tar --append",
        tokio::process::Command::new("tar")
            .arg("--append")
            .arg("-f")
            .arg(&tar)
            .arg("-C")
            .arg(work.path())
            .arg("padding.bin"),
    )
    .await?;
    assert!(std::fs::metadata(&tar)?.len() > 600 << 10);
    let info = fx
        .admin
        .raw(
            reqwest::Method::POST,
            "/api/v1/plugins?upgrade=true",
            "application/x-tar",
            std::fs::read(&tar)?,
        )
        .await?
        .ok()?;
    assert_eq!(
        (info["version"].as_str(), info["enabled"].as_bool()),
        (Some("0.2.0"), Some(true))
    );
    Ok(())
}

/// Two server processes on one PostgreSQL: a plugin installed on one node serves on the other
/// (the component is in the database), webhooks land on either node, and both nodes' delivery
/// loops compete for the outbox — every reply reaches the endpoint exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn connector_on_two_nodes_postgres() -> Result<()> {
    let Some(db) = ferrydesk_tests::Db::new(Backend::Postgres).await? else {
        return Ok(());
    };
    db.add_admin().await?;
    let a = ferrydesk_tests::Server::start(&db).await?;
    let b = ferrydesk_tests::Server::start(&db).await?;
    let fx = Fixture::new(
        &a,
        FixtureOptions {
            operators: 1,
            ..Default::default()
        },
    )
    .await?;
    let secret = "0123456789abcdef-two-nodes";
    let endpoint = FakeEndpoint::start(secret, 0).await?;
    let c = webhook_channel(&fx, secret, &endpoint).await?;
    let path = c["webhook_path"].as_str().unwrap_or_default().to_owned();
    // Node B learns about the plugin from the database.
    let body = serde_json::to_vec(
        &json!({"id": "n-1", "sender": {"id": "cust-1", "name": "Nina"}, "text": "hello"}),
    )?;
    eventually("node B serves the webhook", 15, || {
        let url = format!("{}{path}", b.base);
        let body = body.clone();
        async move {
            let r = reqwest::Client::new()
                .post(url)
                .header("x-ferrydesk-signature", sign(secret, &body))
                .body(body)
                .send()
                .await?;
            Ok(r.status() == 200)
        }
    })
    .await?;
    let op_a = &fx.operators[0];
    op_a.set_status("active").await?;
    let chat = op_a.get("/api/v1/me/inbox").await?.ok()?["new_chats"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    op_a.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;
    let op_b = b.login("op0", ferrydesk_tests::PASSWORD).await?;
    const N: usize = 30;
    for i in 0..N {
        let op = if i % 2 == 0 { op_a } else { &op_b };
        op.post(
            &format!("/api/v1/chats/{chat}/messages"),
            json!({"text": format!("reply {i}")}),
        )
        .await?
        .ok()?;
    }
    eventually("every reply delivered", 30, || async {
        Ok(endpoint.lock().received.len() >= N)
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    {
        let s = endpoint.lock();
        let mut ids: Vec<String> = s
            .received
            .iter()
            .map(|r| r["message_id"].as_str().unwrap_or_default().to_owned())
            .collect();
        ids.sort();
        ids.dedup();
        assert_eq!(
            (s.received.len(), ids.len()),
            (N, N),
            "each reply exactly once"
        );
    }
    assert_eq!(db.scalar_i64("SELECT COUNT(*) FROM outbox").await?, 0);
    assert_eq!(db.scalar_i64("SELECT COUNT(*) FROM messages WHERE direction = 'outbound' AND delivery_status = 'sent'").await?, N as i64);
    Ok(())
}

// ---- issue 14: hostile plugins are bounded; secrets, paths and publishers ------------------

on_both_backends!(hostile_plugins_are_bounded, secrets_paths_and_publishers);

/// A plugins directory of its own for one server: the evil component under several manifests.
/// `variants` are (directory, manifest fields replaced).
pub(crate) fn plugins_dir_with(variants: &[(&str, Value)]) -> Result<tempfile::TempDir> {
    let dir = tempfile::tempdir()?;
    let evil = std::path::PathBuf::from(plugin_dir("testing/evil"));
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(evil.join("plugin.json"))?)?;
    for (name, patch) in variants {
        let d = dir.path().join(name);
        std::fs::create_dir_all(&d)?;
        std::fs::copy(evil.join("plugin.wasm"), d.join("plugin.wasm"))?;
        let mut m = manifest.clone();
        if let (Some(o), Some(p)) = (m.as_object_mut(), patch.as_object()) {
            for (k, v) in p {
                o.insert(k.clone(), v.clone());
            }
        }
        std::fs::write(d.join("plugin.json"), serde_json::to_vec_pretty(&m)?)?;
    }
    Ok(dir)
}

fn proc_status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .trim()
                .strip_suffix("kB")?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

async fn accepted_chat(fx: &Fixture, op: &Api) -> Result<String> {
    op.set_status("active").await?;
    fx.inbound("h-1", "hana", "Hello").await?;
    let chat = op.get("/api/v1/me/inbox").await?.ok()?["new_chats"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    op.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;
    Ok(chat)
}

/// Rows 6–8 of issue 14 against the real server: eight looping calls leave `/healthz`
/// answering within a second and stop near their limit; eight 2 GiB allocations fail "out of
/// memory" while the server's memory stays within the plugin budget; huge output, 100,000
/// notes and unbounded kv writes fail the call and apply nothing.
async fn hostile_plugins_are_bounded(b: Backend) -> Result<()> {
    let Some(db) = ferrydesk_tests::Db::new(b).await? else {
        return Ok(());
    };
    db.add_admin().await?;
    let pdir = plugins_dir_with(&[
        ("evil", json!({})),
        (
            "evil-big",
            json!({"id": "evil-big", "limits": {"memory_mb": 128, "timeout_ms": 20000, "concurrency": 8}}),
        ),
        (
            "evil-huge",
            json!({"id": "evil-huge", "limits": {"memory_mb": 512, "timeout_ms": 20000}}),
        ),
    ])?;
    let server = ferrydesk_tests::Server::start_with(
        &db,
        &[
            ("FERRYDESK_PLUGINS_DIR", &pdir.path().display().to_string()),
            ("FERRYDESK_PLUGIN_MEMORY_BUDGET_MB", "512"),
        ],
    )
    .await?;
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let anna = &fx.operators[0];
    for id in ["evil", "evil-big", "evil-huge"] {
        fx.admin
            .post("/api/v1/plugins", json!({"path": pdir.path().join(id)}))
            .await?
            .ok()?;
        fx.admin
            .post(&format!("/api/v1/plugins/{id}/enable"), json!({}))
            .await?
            .ok()?;
    }
    // The limits are shown to the admin.
    let info = fx.admin.get("/api/v1/plugins/evil").await?.ok()?;
    assert_eq!(info["effective_limits"]["output_bytes"], 65536, "{info}");
    assert_eq!(info["effective_limits"]["kv_keys"], 100, "{info}");
    assert_eq!(info["effective_limits"]["concurrency"], 8, "{info}");
    let chat = accepted_chat(&fx, anna).await?;
    let run = |plugin: &'static str, action: &'static str, input: Value| {
        let anna = anna.clone();
        let path = format!("/api/v1/chats/{chat}/actions/{plugin}/{action}");
        async move {
            let t0 = std::time::Instant::now();
            let r = anna.post(&path, json!({"input": input})).await;
            (r, t0.elapsed())
        }
    };

    // Row 6: eight loops at once; /healthz keeps answering within 1 s.
    let health = format!("{}/healthz", server.base);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let prober = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let mut worst = Duration::ZERO;
            let mut probes = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t0 = std::time::Instant::now();
                let ok = client
                    .get(&health)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .map(|r| r.status().is_success())
                    .unwrap_or(false);
                assert!(ok, "/healthz failed");
                worst = worst.max(t0.elapsed());
                probes += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            (worst, probes)
        })
    };
    let loops: Vec<_> = (0..8)
        .map(|_| tokio::spawn(run("evil", "loop", json!({}))))
        .collect();
    let mut times = Vec::new();
    for l in loops {
        let (r, took) = l.await?;
        let r = r?;
        assert_eq!((r.status, r.code()), (409, "plugin_failed"), "{}", r.text);
        assert!(r.text.contains("time limit"), "{}", r.text);
        times.push(took.as_millis());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (worst, probes) = prober.await?;
    eprintln!(
        "[{b:?}] 8 looping calls answered after {times:?} ms (limit 500); /healthz worst {worst:?} over {probes} probes"
    );
    assert!(worst < Duration::from_secs(1), "/healthz took {worst:?}");
    assert!(times.iter().all(|t| (500..1500).contains(t)), "{times:?}");

    // Row 7: eight calls each trying to allocate 2 GiB (cap 128 MiB, budget 512 MiB).
    let pid = server
        .pid()
        .ok_or_else(|| anyhow::anyhow!("no server pid"))?;
    let rss_before = proc_status_kib(pid, "VmRSS:");
    let bombs: Vec<_> = (0..8)
        .map(|_| tokio::spawn(run("evil-big", "memory", json!({"mb": 2048}))))
        .collect();
    for bomb in bombs {
        let (r, _) = bomb.await?;
        let r = r?;
        assert_eq!(r.status, 409, "{}", r.text);
        assert!(r.text.contains("out of memory"), "{}", r.text);
    }
    let hwm = proc_status_kib(pid, "VmHWM:");
    eprintln!(
        "[{b:?}] memory bombs: VmRSS before {} MiB, VmHWM after {} MiB (budget 512 MiB)",
        rss_before / 1024,
        hwm / 1024
    );
    assert!(
        hwm < rss_before + (512 + 128) * 1024,
        "VmHWM {hwm} kB from VmRSS {rss_before} kB"
    );

    // Row 8: output, effects and kv beyond the limits fail and change nothing.
    let messages = db.scalar_i64("SELECT COUNT(*) FROM messages").await?;
    let (r, _) = run("evil-huge", "big-output", json!({"kb": 100 << 10})).await;
    let r = r?;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("limits.output_bytes"), "{}", r.text);
    let (r, _) = run("evil-huge", "notes", json!({"n": 100000})).await;
    let r = r?;
    assert_eq!(r.status, 409, "{}", r.text);
    assert!(r.text.contains("100000 effects"), "{}", r.text);
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM messages").await?,
        messages
    );
    let mut refused = 0;
    for i in 0..11 {
        let (r, _) = run(
            "evil",
            "kv-flood",
            json!({"keys": 4, "prefix": format!("k{i}-")}),
        )
        .await;
        let r = r?;
        if r.status != 200 {
            assert!(r.text.contains("storage quota"), "{}", r.text);
            refused += 1;
        }
    }
    assert!(refused >= 7, "{refused}");
    let keys = db
        .scalar_i64("SELECT COUNT(*) FROM plugin_kv WHERE scope = 'plugin:evil'")
        .await?;
    assert!(keys <= 16, "{keys} keys stored");
    assert_eq!(
        reqwest::get(format!("{}/healthz", server.base))
            .await?
            .status(),
        200
    );
    Ok(())
}

/// Rows 9, 18 and 19 of issue 14: upgrades asking for more are installed disabled with the
/// difference shown; a package cannot take over another publisher's id; secret settings are
/// sealed in the database yet reach the plugin; installs by path only inside plugins_dir, with
/// one answer whether a path outside exists or not.
async fn secrets_paths_and_publishers(b: Backend) -> Result<()> {
    let Some(db) = ferrydesk_tests::Db::new(b).await? else {
        return Ok(());
    };
    db.add_admin().await?;
    let caps = |records: Value| json!({"kv": true, "records": records});
    let pdir = plugins_dir_with(&[
        ("evil", json!({})),
        (
            "cap-1",
            json!({"id": "cap", "version": "0.1.0", "capabilities": caps(json!({}))}),
        ),
        (
            "cap-2",
            json!({"id": "cap", "version": "0.2.0", "capabilities": caps(json!({"read": ["contact"]}))}),
        ),
        (
            "cap-3",
            json!({"id": "cap", "version": "0.3.0", "capabilities": caps(json!({}))}),
        ),
        (
            "signed-1",
            json!({"id": "signed", "version": "0.1.0", "capabilities": caps(json!({}))}),
        ),
        (
            "signed-2",
            json!({"id": "signed", "version": "0.2.0", "capabilities": caps(json!({}))}),
        ),
    ])?;
    let server = ferrydesk_tests::Server::start_with(
        &db,
        &[("FERRYDESK_PLUGINS_DIR", &pdir.path().display().to_string())],
    )
    .await?;
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let at = |d: &str| json!({"path": pdir.path().join(d)});

    // Row 19: outside plugins_dir, existing or not, one generic answer.
    let mut answers = Vec::new();
    for path in [
        "/etc".to_owned(),
        "/no/such/dir".to_owned(),
        plugin_dir("greeting"), // a real plugin, but outside this server's plugins_dir
        format!("{}/../..", pdir.path().display()),
        pdir.path().join("no-such-plugin").display().to_string(),
    ] {
        let r = fx
            .admin
            .post("/api/v1/plugins", json!({"path": path}))
            .await?;
        assert_eq!(r.status, 422, "{path}: {}", r.text);
        answers.push(r.body["message"].as_str().unwrap_or_default().to_owned());
    }
    assert!(answers.windows(2).all(|w| w[0] == w[1]), "{answers:?}");
    assert!(!answers[0].contains("/etc"), "{answers:?}");

    // Row 18: a secret setting is sealed at rest and still reaches the plugin.
    fx.admin.post("/api/v1/plugins", at("evil")).await?.ok()?;
    fx.admin
        .put(
            "/api/v1/plugins/evil/config",
            json!({"config": {"token": "s3cr3t-token-4242"}}),
        )
        .await?
        .ok()?;
    fx.admin
        .post("/api/v1/plugins/evil/enable", json!({}))
        .await?
        .ok()?;
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM plugin_settings WHERE config LIKE '%s3cr3t-token%'")
            .await?,
        0
    );
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM plugin_settings WHERE config LIKE 'enc:v1:%'")
            .await?,
        1
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(db.dir.path().join("secret.key"))?
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let anna = &fx.operators[0];
    let chat = accepted_chat(&fx, anna).await?;
    let r = anna
        .post(
            &format!("/api/v1/chats/{chat}/actions/evil/secret"),
            json!({"input": {"expect": "s3cr3t-token-4242"}}),
        )
        .await?
        .ok()?;
    assert_eq!(r["output"]["matches"], true, "{r}");

    // Row 9: an upgrade asking for a new capability is installed disabled, with the diff.
    fx.admin.post("/api/v1/plugins", at("cap-1")).await?.ok()?;
    fx.admin
        .post("/api/v1/plugins/cap/enable", json!({}))
        .await?
        .ok()?;
    let up = fx
        .admin
        .post("/api/v1/plugins?upgrade=true", at("cap-2"))
        .await?
        .ok()?;
    assert_eq!(up["enabled"], false, "{up}");
    assert_eq!(
        up["capability_changes"],
        json!({"added": ["records.read:contact"], "removed": []}),
        "{up}"
    );
    let r = anna
        .post(
            &format!("/api/v1/chats/{chat}/actions/cap/echo"),
            json!({"input": {}}),
        )
        .await?;
    assert_ne!(r.status, 200, "{}", r.text);
    let on = fx
        .admin
        .post("/api/v1/plugins/cap/enable", json!({}))
        .await?
        .ok()?;
    assert_eq!(
        (on["enabled"].clone(), on["capability_changes"].clone()),
        (json!(true), Value::Null)
    );
    // Dropping a capability needs no new approval.
    let down = fx
        .admin
        .post("/api/v1/plugins?upgrade=true", at("cap-3"))
        .await?
        .ok()?;
    assert_eq!(down["enabled"], true, "{down}");

    // Publishers: a package signed by a key (packed with FERRYDESK_PLUGIN_SIGNING_KEY)…
    let work = tempfile::tempdir()?;
    let pack = |dir: std::path::PathBuf, key: &'static str, out: std::path::PathBuf| async move {
        let mut cmd = tokio::process::Command::new(ferrydesk_tests::server_bin());
        cmd.args(["plugin", "pack"]).arg(&dir).arg("-o").arg(&out);
        if !key.is_empty() {
            cmd.env("FERRYDESK_PLUGIN_SIGNING_KEY", key);
        }
        run_cmd("plugin pack", &mut cmd).await?;
        Ok::<_, anyhow::Error>(std::fs::read(&out)?)
    };
    let key_a = work.path().join("a.key");
    let key_b = work.path().join("b.key");
    std::fs::write(&key_a, "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=")?;
    std::fs::write(&key_b, "AgICAgICAgICAgICAgICAgICAgICAgICAgICAgICAgI=")?;
    let key_a: &'static str = Box::leak(key_a.display().to_string().into_boxed_str());
    let key_b: &'static str = Box::leak(key_b.display().to_string().into_boxed_str());
    let tar = |bytes: Vec<u8>, upgrade: bool| {
        let admin = fx.admin.clone();
        async move {
            admin
                .raw(
                    reqwest::Method::POST,
                    if upgrade {
                        "/api/v1/plugins?upgrade=true"
                    } else {
                        "/api/v1/plugins"
                    },
                    "application/x-tar",
                    bytes,
                )
                .await
        }
    };
    let s1a = pack(
        pdir.path().join("signed-1"),
        key_a,
        work.path().join("s1a.tar"),
    )
    .await?;
    let s2a = pack(
        pdir.path().join("signed-2"),
        key_a,
        work.path().join("s2a.tar"),
    )
    .await?;
    let s2b = pack(
        pdir.path().join("signed-2"),
        key_b,
        work.path().join("s2b.tar"),
    )
    .await?;
    let s2u = pack(
        pdir.path().join("signed-2"),
        "",
        work.path().join("s2u.tar"),
    )
    .await?;
    let c4b = {
        let mut m: Value = serde_json::from_str(&std::fs::read_to_string(
            pdir.path().join("cap-3/plugin.json"),
        )?)?;
        m["version"] = json!("0.4.0");
        let d = work.path().join("cap-4");
        std::fs::create_dir_all(&d)?;
        std::fs::copy(pdir.path().join("cap-3/plugin.wasm"), d.join("plugin.wasm"))?;
        std::fs::write(d.join("plugin.json"), m.to_string())?;
        (
            pack(d.clone(), key_b, work.path().join("c4b.tar")).await?,
            pack(d, "", work.path().join("c4u.tar")).await?,
        )
    };
    let (c4b, c4u) = c4b;
    let info = tar(s1a, false).await?.ok()?;
    assert!(
        info["publisher"]
            .as_str()
            .unwrap_or("")
            .starts_with("ed25519:"),
        "{info}"
    );
    // …cannot be upgraded by another key or by an unsigned package…
    for (what, bytes) in [("key b", s2b), ("unsigned", s2u)] {
        let r = tar(bytes, true).await?;
        assert_eq!(
            (r.status, r.code()),
            (409, "plugin_publisher_mismatch"),
            "{what}: {}",
            r.text
        );
    }
    // …a plugin installed from the server's plugins directory cannot be taken over by an
    // uploaded package, signed or not (the row-9 attack on `create-case`)…
    for (what, bytes) in [("signed", c4b), ("unsigned upload", c4u)] {
        let r = tar(bytes, true).await?;
        assert_eq!(
            (r.status, r.code()),
            (409, "plugin_publisher_mismatch"),
            "{what}: {}",
            r.text
        );
    }
    // …and a tampered package is refused.
    let mut tampered = s2a.clone();
    let at_byte = tampered.len() / 2;
    tampered[at_byte] ^= 1;
    let r = tar(tampered, true).await?;
    assert_eq!(r.status, 422, "{}", r.text);
    // The same publisher upgrades.
    let up = tar(s2a, true).await?.ok()?;
    assert_eq!(up["version"], "0.2.0");
    Ok(())
}

/// First-party ids (`create-case`, …) belong to the project: an upload may use one only when
/// signed by a first-party key, whether or not the plugin is installed; the operator's own
/// directory (`local`) and a first-party key are one publisher for these ids.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn first_party_ids_are_reserved() -> Result<()> {
    let Some(db) = ferrydesk_tests::Db::new(Backend::Sqlite).await? else {
        return Ok(());
    };
    db.add_admin().await?;
    let pdir = tempfile::tempdir()?;
    let work = tempfile::tempdir()?;
    let real = std::path::PathBuf::from(plugin_dir("create-case"));
    let manifest: Value =
        serde_json::from_str(&std::fs::read_to_string(real.join("plugin.json"))?)?;
    for (name, version) in [
        ("cc-1", None),
        ("cc-2", Some("99.0.0")),
        ("cc-3", Some("99.1.0")),
    ] {
        let d = pdir.path().join(name);
        std::fs::create_dir_all(&d)?;
        std::fs::copy(real.join("plugin.wasm"), d.join("plugin.wasm"))?;
        let mut m = manifest.clone();
        if let Some(v) = version {
            m["version"] = json!(v);
        }
        std::fs::write(d.join("plugin.json"), serde_json::to_vec_pretty(&m)?)?;
    }
    // A fork's release key (trusted below) and a stranger's.
    let trusted_key = work.path().join("fork.key");
    let stranger_key = work.path().join("stranger.key");
    std::fs::write(&trusted_key, "AwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwM=")?;
    std::fs::write(
        &stranger_key,
        "BAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQ=",
    )?;
    let pack = |dir: &str, key: Option<&std::path::Path>, out: &str| {
        let mut cmd = tokio::process::Command::new(ferrydesk_tests::server_bin());
        cmd.args(["plugin", "pack"])
            .arg(pdir.path().join(dir))
            .arg("-o")
            .arg(work.path().join(out));
        if let Some(k) = key {
            cmd.env("FERRYDESK_PLUGIN_SIGNING_KEY", k);
        }
        let out = work.path().join(out);
        async move {
            run_cmd("plugin pack", &mut cmd).await?;
            Ok::<_, anyhow::Error>(out)
        }
    };
    let unsigned = pack("cc-2", None, "u.tar").await?;
    let stranger = pack("cc-2", Some(&stranger_key), "x.tar").await?;
    let fork = pack("cc-2", Some(&trusted_key), "t.tar").await?;
    let verify = |path: std::path::PathBuf, keys: Option<String>| async move {
        let mut cmd = tokio::process::Command::new(ferrydesk_tests::server_bin());
        cmd.args(["plugin", "verify"]).arg(&path);
        if let Some(k) = keys {
            cmd.env("FERRYDESK_PLUGIN_FIRST_PARTY_KEYS", k);
        }
        run_cmd("plugin verify", &mut cmd).await
    };
    // With only the Ferrydesk release key trusted (the default), the fork's package is refused.
    let said = verify(fork.clone(), None).await?;
    assert!(said.contains("refused on upload"), "{said}");
    let fork_public = said
        .split_whitespace()
        .find(|w| w.starts_with("ed25519:"))
        .unwrap_or_default()
        .to_owned();
    assert_eq!(fork_public.len(), "ed25519:".len() + 44, "{said}");
    let said = verify(fork.clone(), Some(fork_public.clone())).await?;
    assert!(!said.contains("refused"), "{said}");
    assert!(verify(unsigned.clone(), None).await?.contains("unsigned"));
    // A changed byte is caught by `verify` too.
    let mut tampered = std::fs::read(&fork)?;
    let mid = tampered.len() / 2;
    tampered[mid] ^= 1;
    let tampered_path = work.path().join("tampered.tar");
    std::fs::write(&tampered_path, tampered)?;
    assert!(verify(tampered_path, None).await.is_err());

    let server = ferrydesk_tests::Server::start_with(
        &db,
        &[
            ("FERRYDESK_PLUGINS_DIR", &pdir.path().display().to_string()),
            ("FERRYDESK_PLUGIN_FIRST_PARTY_KEYS", &fork_public),
        ],
    )
    .await?;
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let upload = |path: std::path::PathBuf, upgrade: bool| {
        let admin = fx.admin.clone();
        async move {
            let url = if upgrade {
                "/api/v1/plugins?upgrade=true"
            } else {
                "/api/v1/plugins"
            };
            admin
                .raw(
                    reqwest::Method::POST,
                    url,
                    "application/x-tar",
                    std::fs::read(path)?,
                )
                .await
        }
    };
    // Nothing installed under the id: still refused, and nothing is stored.
    for (what, path) in [("unsigned", &unsigned), ("stranger", &stranger)] {
        let r = upload(path.clone(), false).await?;
        assert_eq!(
            (r.status, r.code()),
            (409, "plugin_id_reserved"),
            "{what}: {}",
            r.text
        );
        assert!(r.text.contains("create-case"), "{}", r.text);
    }
    assert_eq!(
        fx.admin.get("/api/v1/plugins/create-case").await?.status,
        404
    );
    // The operator's own directory installs it (`local`)…
    let local = fx
        .admin
        .post("/api/v1/plugins", json!({"path": pdir.path().join("cc-1")}))
        .await?
        .ok()?;
    assert_eq!(local["publisher"], "local", "{local}");
    // …an upload cannot upgrade it unless signed by a first-party key…
    for (what, path) in [("unsigned", &unsigned), ("stranger", &stranger)] {
        let r = upload(path.clone(), true).await?;
        assert_eq!(
            (r.status, r.code()),
            (409, "plugin_id_reserved"),
            "{what}: {}",
            r.text
        );
    }
    let now = fx.admin.get("/api/v1/plugins/create-case").await?.ok()?;
    assert_eq!(now["version"], local["version"]);
    // …which it can, and the directory stays the same publisher after.
    let up = upload(fork, true).await?.ok()?;
    assert_eq!(
        (up["version"].clone(), up["publisher"].clone()),
        (json!("99.0.0"), json!(fork_public))
    );
    let up = fx
        .admin
        .post(
            "/api/v1/plugins?upgrade=true",
            json!({"path": pdir.path().join("cc-3")}),
        )
        .await?
        .ok()?;
    assert_eq!(up["version"], "99.1.0");
    Ok(())
}
