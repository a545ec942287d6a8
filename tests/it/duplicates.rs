//! Duplicate contacts (S18): the same phone written two ways finds the other contact, a merge
//! moves chats and identities and leaves a redirect, later messages reach the master; the fuzzy
//! name rule meets Cyrillic and Latin spellings and keeps other people apart.

use anyhow::Result;
use ferrydesk_tests::{Backend, Fixture, FixtureOptions, Visitor};
use serde_json::{Value, json};

use crate::{on_both_backends, setup};

on_both_backends!(
    phone_rule_merge_and_redirect,
    fuzzy_names_and_rules,
    bulk_scan_and_review,
    merge_is_atomic_under_kill,
    strong_keys_survive_a_crowd_of_names,
    scheduled_scans
);

async fn contact_of_chat(api: &ferrydesk_tests::Api, chat: &str) -> Result<String> {
    let v = api.get(&format!("/api/v1/chats/{chat}")).await?.ok()?;
    Ok(v["chat"]["contact_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned())
}

async fn phone_rule_merge_and_redirect(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let anna = &fx.operators[0];
    anna.set_status("active").await?;
    // A Telegram client (through the Telegram connector plugin, on a fake Bot API) and a
    // widget visitor: two contacts.
    let tg = ferrydesk_tests::fakes::FakeTelegram::start(crate::plugins::TOKEN).await?;
    let chat_a = crate::plugins::telegram_client_chat(&fx, &db, &tg, "Hello from Telegram").await?;
    anna.post_empty(&format!("/api/v1/chats/{chat_a}/accept"))
        .await?
        .ok()?;
    let visitor = Visitor::new(&server.base, &fx.widget_key).await?;
    let sent = visitor.send("Hello from the website").await?;
    let chat_b = sent["chat_id"].as_str().unwrap_or_default().to_owned();
    let (a, bid) = (
        contact_of_chat(anna, &chat_a).await?,
        contact_of_chat(&fx.admin, &chat_b).await?,
    );
    assert_ne!(a, bid);
    // The same phone, written two ways.
    anna.put(
        &format!("/api/v1/contacts/{a}"),
        json!({"name": "Ivan Petrov", "phone": "+7 (912) 345-67-89"}),
    )
    .await?
    .ok()?;
    anna.put(
        &format!("/api/v1/contacts/{bid}"),
        json!({"name": "Maria", "phone": "8 912 345 67 89", "email": "Maria@Example.com"}),
    )
    .await?
    .ok()?;
    let found = anna
        .get(&format!("/api/v1/contacts/{a}/duplicates"))
        .await?
        .ok()?;
    let hit = found
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["contact"]["id"] == bid.as_str())
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("the widget contact is not found: {found}"))?;
    assert_eq!(hit["rule"], "Same phone");
    assert_eq!(hit["reasons"][0], "phone +79123456789 on both");

    // Bad merges change nothing.
    let r = anna
        .post(
            "/api/v1/contacts/merge",
            json!({"master_id": a, "merged_id": a}),
        )
        .await?;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (422, Some("merged_id"))
    );
    let r = anna
        .post(
            "/api/v1/contacts/merge",
            json!({"master_id": a, "merged_id": bid, "fields": {"salary": "merged"}}),
        )
        .await?;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (422, Some("fields.salary"))
    );

    // Merge: the visitor's name and email survive; the operator's chat is undisturbed.
    let merged = anna
        .post(
            "/api/v1/contacts/merge",
            json!({"master_id": a, "merged_id": bid, "fields": {"name": "merged"}}),
        )
        .await?
        .ok()?;
    assert_eq!(merged["contact"]["name"], "Maria");
    assert_eq!(merged["contact"]["email"], "Maria@Example.com");
    assert_eq!(
        merged["contact"]["identities"].as_array().map(Vec::len),
        Some(2)
    );
    assert_eq!(contact_of_chat(anna, &chat_a).await?, a);
    assert_eq!(contact_of_chat(&fx.admin, &chat_b).await?, a);
    let view = anna.get(&format!("/api/v1/chats/{chat_a}")).await?.ok()?;
    assert_eq!(view["chat"]["status"], "in_progress");
    // The old link resolves to the master, with the timeline of both.
    let old = anna.get(&format!("/api/v1/contacts/{bid}")).await?.ok()?;
    assert_eq!(old["contact"]["id"], a.as_str());
    assert_eq!(old["redirected_from"], bid.as_str());
    let chats: Vec<&Value> = old["timeline"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| e["type"] == "chat")
        .collect();
    assert_eq!(chats.len(), 2);
    // The merge is recorded; a second merge of the merged contact is refused.
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM contact_merges").await?,
        1
    );
    let r = anna
        .post(
            "/api/v1/contacts/merge",
            json!({"master_id": a, "merged_id": bid}),
        )
        .await?;
    assert_eq!((r.status, r.code()), (409, "already_merged"));
    // The visitor writes again: the message lands in the master's chat.
    let again = visitor.send("Still there?").await?;
    assert_eq!(again["chat_id"].as_str(), Some(chat_b.as_str()));
    assert_eq!(contact_of_chat(&fx.admin, &chat_b).await?, a);
    Ok(())
}

async fn post_as(fx: &Fixture, ext: &str, sender: &str, name: &str) -> Result<String> {
    let m = fx.inbound_from(ext, sender, name, "hi").await?;
    Ok(m["contact_id"].as_str().unwrap_or_default().to_owned())
}

async fn fuzzy_names_and_rules(b: Backend) -> Result<()> {
    let (_db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let ru = post_as(&fx, "f-1", "s1", "Иванов Иван").await?;
    let en = post_as(&fx, "f-2", "s2", "Ivan Ivanov").await?;
    let other = post_as(&fx, "f-3", "s3", "Ivan Petrov").await?;
    // Off by default.
    let found = fx
        .admin
        .get(&format!("/api/v1/contacts/{ru}/duplicates"))
        .await?
        .ok()?;
    assert_eq!(found, json!([]));
    let mut rules = fx.admin.get("/api/v1/duplicate-rules").await?.ok()?;
    let names: Vec<&str> = rules
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert_eq!(
        names,
        [
            "Same phone",
            "Same email",
            "Same messenger account",
            "Similar name"
        ]
    );
    if let Some(list) = rules.as_array_mut() {
        for r in list.iter_mut() {
            r["enabled"] = json!(true);
        }
    }
    // Validation names the place; operators may not change rules.
    let bad = fx
        .admin
        .put(
            "/api/v1/duplicate-rules",
            json!([{"name": "x", "conditions": [{"field": "phone", "fuzzy": true}]}]),
        )
        .await?;
    assert_eq!(
        (bad.status, bad.body["field"].as_str()),
        (422, Some("rules[0].conditions[0].fuzzy"))
    );
    assert_eq!(
        fx.operators[0]
            .put("/api/v1/duplicate-rules", rules.clone())
            .await?
            .status,
        403
    );
    fx.admin.put("/api/v1/duplicate-rules", rules).await?.ok()?;
    let found = fx
        .admin
        .get(&format!("/api/v1/contacts/{ru}/duplicates"))
        .await?
        .ok()?;
    let ids: Vec<&str> = found
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["contact"]["id"].as_str())
        .collect();
    assert!(ids.contains(&en.as_str()), "{found}");
    assert!(!ids.contains(&other.as_str()), "{found}");
    let hit = found
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["contact"]["id"] == en.as_str())
        .cloned()
        .unwrap_or_default();
    assert_eq!(hit["rule"], "Similar name");
    assert!(
        hit["reasons"][0].as_str().unwrap_or("").contains("alike"),
        "{hit}"
    );
    Ok(())
}

async fn enable_all_rules(fx: &Fixture) -> Result<()> {
    let mut rules = fx.admin.get("/api/v1/duplicate-rules").await?.ok()?;
    if let Some(list) = rules.as_array_mut() {
        for r in list.iter_mut() {
            r["enabled"] = json!(true);
        }
    }
    fx.admin.put("/api/v1/duplicate-rules", rules).await?.ok()?;
    Ok(())
}

/// Starts a bulk scan and waits for it to finish.
async fn scan(fx: &Fixture) -> Result<Value> {
    let started = fx.admin.post_empty("/api/v1/duplicate-scans").await?;
    assert_eq!(started.status, 202, "{}", started.text);
    let id = started.body["id"].as_str().unwrap_or_default().to_owned();
    for _ in 0..200 {
        let s = fx
            .admin
            .get(&format!("/api/v1/duplicate-scans/{id}"))
            .await?
            .ok()?;
        if s["state"] != "running" {
            assert_eq!(s["state"], "done", "{s}");
            return Ok(s);
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    anyhow::bail!("the scan {id} did not finish")
}

fn group_with<'a>(groups: &'a Value, a: &str, b: &str) -> Option<&'a Value> {
    groups["items"].as_array()?.iter().find(|g| {
        let ids: Vec<&str> = g["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["contact"]["id"].as_str())
            .collect();
        ids.contains(&a) && ids.contains(&b)
    })
}

async fn bulk_scan_and_review(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let ru = post_as(&fx, "b-1", "s1", "Иванов Иван").await?;
    let en = post_as(&fx, "b-2", "s2", "Ivan Ivanov").await?;
    let petrov = post_as(&fx, "b-3", "s3", "Ivan Petrov").await?;
    let p1 = post_as(&fx, "b-4", "s4", "Maria").await?;
    let m = fx.inbound_from("b-5", "s5", "M. K.", "hi").await?;
    let p2 = m["contact_id"].as_str().unwrap_or_default().to_owned();
    let p2_chat = m["chat_id"].as_str().unwrap_or_default().to_owned();
    let alone = post_as(&fx, "b-6", "s6", "Somebody Else").await?;
    for (id, name, phone) in [
        (&p1, "Maria", "+7 (912) 000-11-22"),
        (&p2, "M. K.", "8 912 000 11 22"),
    ] {
        fx.admin.set_contact_phone(id, name, phone).await?;
    }
    enable_all_rules(&fx).await?;
    // Operators neither start scans nor review groups.
    let op = &fx.operators[0];
    assert_eq!(op.post_empty("/api/v1/duplicate-scans").await?.status, 403);
    assert_eq!(op.get("/api/v1/duplicate-groups").await?.status, 403);
    // Before any scan: no groups.
    let none = fx.admin.get("/api/v1/duplicate-groups").await?.ok()?;
    assert_eq!(
        (none["total"].as_i64(), &none["scan"]),
        (Some(0), &Value::Null)
    );

    let s = scan(&fx).await?;
    assert_eq!(s["contacts"], 6, "{s}");
    assert_eq!(s["groups"], 2, "{s}");
    assert!(s["duration_ms"].as_i64().is_some(), "{s}");
    let groups = fx
        .admin
        .get("/api/v1/duplicate-groups?status=open")
        .await?
        .ok()?;
    assert_eq!(groups["total"], 2, "{groups}");
    let phone = group_with(&groups, &p1, &p2)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no phone group: {groups}"))?;
    assert_eq!(phone["rule"], "Same phone");
    assert_eq!(
        phone["links"][0]["reasons"][0],
        "phone +79120001122 on both"
    );
    let names = group_with(&groups, &ru, &en)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no name group: {groups}"))?;
    assert_eq!(names["rule"], "Similar name");
    assert!(
        names["links"][0]["reasons"][0]
            .as_str()
            .unwrap_or("")
            .contains("alike"),
        "{names}"
    );
    for g in groups["items"].as_array().into_iter().flatten() {
        let ids = g["members"].to_string();
        assert!(!ids.contains(&petrov) && !ids.contains(&alone), "{g}");
    }
    // Rule order decides the group's order: the phone group first.
    assert_eq!(groups["items"][0]["id"], phone["id"]);
    // Bad filter names the parameter.
    let bad = fx
        .admin
        .get("/api/v1/duplicate-groups?status=maybe")
        .await?;
    assert_eq!(
        (bad.status, bad.body["field"].as_str()),
        (422, Some("status"))
    );

    // Review: the names are different people; the phones are one person (merged).
    let gid = names["id"].as_str().unwrap_or_default();
    let d = fx
        .admin
        .post_empty(&format!("/api/v1/duplicate-groups/{gid}/dismiss"))
        .await?
        .ok()?;
    assert_eq!(d["status"], "dismissed");
    let again = fx
        .admin
        .post_empty(&format!("/api/v1/duplicate-groups/{gid}/dismiss"))
        .await?;
    assert_eq!((again.status, again.code()), (409, "not_open"));
    // (Two chats in progress on one channel cannot merge: the second one is finished first.)
    op.set_status("active").await?;
    op.accept_and_finish(&p2_chat).await?;
    fx.admin
        .post(
            "/api/v1/contacts/merge",
            json!({"master_id": p1, "merged_id": p2}),
        )
        .await?
        .ok()?;
    let all = fx.admin.get("/api/v1/duplicate-groups").await?.ok()?;
    let statuses: Vec<(&str, &str)> = all["items"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|g| {
            (
                g["rule"].as_str().unwrap_or(""),
                g["status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        statuses,
        [("Same phone", "resolved"), ("Similar name", "dismissed")]
    );

    // Another scan while one runs is refused; a scan whose node stopped is taken over.
    let now = db
        .scalar_i64("SELECT MAX(started_at) FROM duplicate_scans")
        .await?;
    db.exec(&format!(
        "INSERT INTO duplicate_scans (id, state, started_at, heartbeat_at) \
         VALUES ('zz-running', 'running', {now}, {})",
        now + 1_000_000
    ))
    .await?;
    let r = fx.admin.post_empty("/api/v1/duplicate-scans").await?;
    assert_eq!((r.status, r.code()), (409, "scan_running"));
    db.exec("UPDATE duplicate_scans SET heartbeat_at = 0 WHERE id = 'zz-running'")
        .await?;
    // The next scan: the dismissed pair stays apart, the merged contact is gone.
    let s = scan(&fx).await?;
    assert_eq!(
        (s["contacts"].as_i64(), s["groups"].as_i64()),
        (Some(5), Some(0)),
        "{s}"
    );
    let stale = fx
        .admin
        .get("/api/v1/duplicate-scans/zz-running")
        .await?
        .ok()?;
    assert_eq!(stale["state"], "failed", "{stale}");
    let latest = fx.admin.get("/api/v1/duplicate-scans/latest").await?.ok()?;
    assert_eq!(latest["id"], s["id"]);
    let open = fx.admin.get("/api/v1/duplicate-groups").await?.ok()?;
    assert_eq!(open["total"], 0, "{open}");
    Ok(())
}

/// What a merge touches, as stored: owners of identities and chats, redirects, merge records.
async fn merge_state(db: &ferrydesk_tests::Db, a: &str, b: &str) -> Result<Vec<i64>> {
    let mut out = Vec::new();
    for c in [a, b] {
        for sql in [
            "SELECT COUNT(*) FROM contact_identities WHERE contact_id = '{c}'",
            "SELECT COUNT(*) FROM chats WHERE contact_id = '{c}'",
            "SELECT COUNT(*) FROM contacts WHERE id = '{c}' AND merged_into IS NOT NULL",
            "SELECT COUNT(*) FROM contacts WHERE id = '{c}' AND phone_key IS NOT NULL",
            "SELECT COUNT(*) FROM contact_name_tokens WHERE contact_id = '{c}'",
        ] {
            out.push(db.scalar_i64(&sql.replace("{c}", c)).await?);
        }
    }
    out.push(db.scalar_i64("SELECT COUNT(*) FROM contact_merges").await?);
    out.push(
        db.scalar_i64("SELECT COUNT(*) FROM duplicate_groups WHERE status = 'open'")
            .await?,
    );
    Ok(out)
}

async fn merge_is_atomic_under_kill(b: Backend) -> Result<()> {
    let Some(db) = ferrydesk_tests::Db::new(b).await? else {
        return Ok(());
    };
    db.add_admin().await?;
    let marker = db.dir.path().join("merge-paused");
    let armed = format!("merge.before_commit={}", marker.display());
    let mut server =
        ferrydesk_tests::Server::start_with(&db, &[("FERRYDESK_FAILPOINTS", armed.as_str())])
            .await?;
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    // One person, two accounts on one channel: two contacts, each with a chat.
    let first = fx.inbound_from("k-1", "k1", "Olga Smirnova", "hi").await?;
    let (a, chat_a) = (
        first["contact_id"].as_str().unwrap_or_default().to_owned(),
        first["chat_id"].as_str().unwrap_or_default().to_owned(),
    );
    let second = fx.inbound_from("k-2", "k2", "Ольга Смирнова", "hi").await?;
    let (bid, chat_b) = (
        second["contact_id"].as_str().unwrap_or_default().to_owned(),
        second["chat_id"].as_str().unwrap_or_default().to_owned(),
    );
    // Both chats in progress on one channel: merging would put two open chats in one window.
    let r = fx
        .admin
        .post(
            "/api/v1/contacts/merge",
            json!({"master_id": a, "merged_id": bid}),
        )
        .await?;
    assert_eq!((r.status, r.code()), (409, "open_chats"));
    let anna = &fx.operators[0];
    anna.set_status("active").await?;
    anna.accept_and_finish(&chat_b).await?;
    // The second contact has a phone (its keys are cleared by the merge, the master takes the
    // phone) and a scan grouped the two (the merge resolves the group).
    fx.admin
        .put(
            &format!("/api/v1/contacts/{bid}"),
            json!({"name": "Ольга Смирнова", "phone": "+7 912 555-00-11"}),
        )
        .await?
        .ok()?;
    enable_all_rules(&fx).await?;
    let s = scan(&fx).await?;
    assert_eq!(s["groups"], 1, "{s}");
    let before = merge_state(&db, &a, &bid).await?;
    assert_eq!(before, [1, 1, 0, 0, 2, 1, 1, 0, 1, 2, 0, 1]);

    // The merge stops inside its transaction, after every write; the server is killed there.
    let admin = fx.admin.clone();
    let (ma, mb) = (a.clone(), bid.clone());
    let pending = tokio::spawn(async move {
        admin
            .post(
                "/api/v1/contacts/merge",
                json!({"master_id": ma, "merged_id": mb, "fields": {"name": "merged"}}),
            )
            .await
    });
    let mut waited = 0;
    while !marker.exists() {
        anyhow::ensure!(waited < 200, "the merge never reached its failpoint");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        waited += 1;
    }
    server.kill().await;
    assert!(
        pending.await?.is_err(),
        "the killed server answered the merge"
    );
    // Restarted (without the failpoint): exactly the state before the merge.
    let mut server = ferrydesk_tests::Server::start(&db).await?;
    assert_eq!(merge_state(&db, &a, &bid).await?, before);
    let admin = server
        .login("admin", ferrydesk_tests::ADMIN_PASSWORD)
        .await?;
    let c = admin.get(&format!("/api/v1/contacts/{bid}")).await?.ok()?;
    assert_eq!(
        (c["contact"]["id"].as_str(), &c["redirected_from"]),
        (Some(bid.as_str()), &Value::Null)
    );

    // The same merge, not interrupted: the whole merged state.
    let merged = admin
        .post(
            "/api/v1/contacts/merge",
            json!({"master_id": a, "merged_id": bid, "fields": {"name": "merged"}}),
        )
        .await?
        .ok()?;
    assert_eq!(merged["contact"]["name"], "Ольга Смирнова");
    assert_eq!(
        merge_state(&db, &a, &bid).await?,
        [2, 2, 0, 1, 2, 0, 0, 1, 0, 0, 1, 0]
    );
    // The second account writes again: the master's contact, but a chat of its own (one
    // unfinished chat per identity: replies go to the account that wrote, issue 14 row 12).
    let again = admin
        .with_bearer(&fx.api_token)
        .post(
            "/api/v1/channel/messages",
            json!({"external_id": "k-3", "sender": {"id": "k2"}, "text": "me again"}),
        )
        .await?
        .ok()?;
    assert_eq!(again["contact_id"].as_str(), Some(a.as_str()));
    assert_eq!(again["new_chat"], true, "{again}");
    assert_ne!(again["chat_id"].as_str(), Some(chat_a.as_str()));
    server.kill().await;
    Ok(())
}

/// The one-contact search reads at most 500 name candidates; a crowd of namesakes must not push
/// out a contact with the same phone.
async fn strong_keys_survive_a_crowd_of_names(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let olga = post_as(&fx, "c-1", "c1", "Olga Smirnova").await?;
    let other = post_as(&fx, "c-2", "c2", "Someone Else").await?;
    for (id, name) in [(&olga, "Olga Smirnova"), (&other, "Someone Else")] {
        fx.admin
            .put(
                &format!("/api/v1/contacts/{id}"),
                json!({"name": name, "phone": "+7 912 777-00-00"}),
            )
            .await?
            .ok()?;
    }
    db.exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 700) \
         INSERT INTO contacts (id, name, created_at, updated_at, name_key) \
         SELECT 'crowd-' || i, 'Olga Smirnova', 0, 0, 'olga smirnova' FROM n",
    )
    .await?;
    db.exec(
        "INSERT INTO contact_name_tokens (prefix, contact_id) \
         SELECT 'olg', id FROM contacts WHERE id LIKE 'crowd-%' \
         UNION ALL SELECT 'smi', id FROM contacts WHERE id LIKE 'crowd-%'",
    )
    .await?;
    let found = fx
        .admin
        .get(&format!("/api/v1/contacts/{olga}/duplicates"))
        .await?
        .ok()?;
    let rules: Vec<(&str, &str)> = found
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| Some((d["contact"]["id"].as_str()?, d["rule"].as_str()?)))
        .filter(|(id, _)| !id.starts_with("crowd-"))
        .collect();
    assert_eq!(rules, [(other.as_str(), "Same phone")], "{found}");
    Ok(())
}

/// `FERRYDESK_DUPLICATE_SCAN_SECS`: the bulk search runs by itself, started by nobody.
async fn scheduled_scans(b: Backend) -> Result<()> {
    let Some(db) = ferrydesk_tests::Db::new(b).await? else {
        return Ok(());
    };
    db.add_admin().await?;
    let server =
        ferrydesk_tests::Server::start_with(&db, &[("FERRYDESK_DUPLICATE_SCAN_SECS", "1")]).await?;
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let a = post_as(&fx, "s-1", "s1", "Anna").await?;
    let c = post_as(&fx, "s-2", "s2", "Anya").await?;
    fx.admin
        .set_contact_phone(&a, "Anna", "+7 912 444-33-22")
        .await?;
    fx.admin
        .set_contact_phone(&c, "Anya", "89124443322")
        .await?;
    let mut groups = Value::Null;
    for _ in 0..100 {
        groups = fx.admin.get("/api/v1/duplicate-groups").await?.ok()?;
        if groups["total"] == 1 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert_eq!(
        groups["total"], 1,
        "no scheduled scan found the pair: {groups}"
    );
    assert!(group_with(&groups, &a, &c).is_some(), "{groups}");
    assert_eq!(groups["scan"]["started_by"], Value::Null, "{groups}");
    assert_eq!(groups["scan"]["state"], "done");
    Ok(())
}
