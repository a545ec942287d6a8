//! Duplicate contacts (S18): the same phone written two ways finds the other contact, a merge
//! moves chats and identities and leaves a redirect, later messages reach the master; the fuzzy
//! name rule meets Cyrillic and Latin spellings and keeps other people apart.

use anyhow::Result;
use ferrydesk_tests::{Backend, Fixture, FixtureOptions, Visitor};
use serde_json::{Value, json};

use crate::{on_both_backends, setup};

on_both_backends!(phone_rule_merge_and_redirect, fuzzy_names_and_rules);

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
    // A client of the API channel (a messenger) and a widget visitor: two contacts.
    let m = fx
        .inbound("d-1", "tg-42", "Hello from the messenger")
        .await?;
    let chat_a = m["chat_id"].as_str().unwrap_or_default().to_owned();
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
        json!({"name": "Client tg-42", "phone": "+7 (912) 345-67-89"}),
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
    let m = fx
        .channel()
        .post(
            "/api/v1/channel/messages",
            json!({"external_id": ext, "sender": {"id": sender, "name": name}, "text": "hi"}),
        )
        .await?
        .ok()?;
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
