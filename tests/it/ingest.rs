//! Idempotent ingestion: the same external id posted 3× in parallel is stored once; 10
//! parallel first messages from one new sender make one contact and one chat.

use anyhow::Result;
use ferrydesk_tests::{Backend, Fixture, FixtureOptions};
use serde_json::json;

use crate::{on_both_backends, setup};

on_both_backends!(idempotent_ingest);

async fn idempotent_ingest(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let ch = fx.channel();

    let body = json!({"external_id": "dup-1", "sender": {"id": "alice", "name": "Alice"}, "text": "hello"});
    let posts = (0..3).map(|_| {
        let ch = ch.clone();
        let body = body.clone();
        tokio::spawn(async move { ch.post("/api/v1/channel/messages", body).await })
    });
    let mut created = 0;
    let mut ids = Vec::new();
    for p in posts {
        let r = p.await??;
        assert!(r.status == 201 || r.status == 200, "{}", r.text);
        created += (r.status == 201) as usize;
        ids.push(r.body["message_id"].clone());
    }
    assert_eq!(created, 1, "exactly one post stored the message");
    assert!(
        ids.windows(2).all(|w| w[0] == w[1]),
        "all answers name the same message"
    );
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM messages WHERE external_id = 'dup-1'")
            .await?,
        1
    );

    let posts = (0..10).map(|i| {
        let ch = ch.clone();
        tokio::spawn(async move {
            ch.post("/api/v1/channel/messages", json!({"external_id": format!("bob-{i}"), "sender": {"id": "bob", "name": "Bob"}, "text": format!("part {i}")}))
                .await
        })
    });
    for p in posts {
        let r = p.await??;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM contact_identities WHERE external_id = 'bob'")
            .await?,
        1
    );
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM contacts WHERE name = 'Bob'")
            .await?,
        1
    );
    assert_eq!(db.scalar_i64("SELECT COUNT(*) FROM chats c JOIN contacts k ON k.id = c.contact_id WHERE k.name = 'Bob'").await?, 1);
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM messages WHERE external_id LIKE 'bob-%'")
            .await?,
        10
    );
    let unread = db.scalar_i64("SELECT unread_count FROM chats c JOIN contacts k ON k.id = c.contact_id WHERE k.name = 'Bob'").await?;
    assert_eq!(unread, 10);
    Ok(())
}
