//! Templates are bounded (issue 14, row 5): a partial that includes itself, a fan-out, `{{log}}`
//! and a template that cannot render with a sample chat are refused at save with the reason;
//! one stored before (written to the database directly) fails that one render quickly with the
//! reason, and the server keeps answering.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ferrydesk_tests::{Backend, Fixture, FixtureOptions};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::json;

use crate::{on_both_backends, setup};

on_both_backends!(template_bombs);

const RECURSION: &str = r#"{{#*inline "r"}}x{{> r}}{{/inline}}{{> r}}"#;

/// `width` inclusions of the level below per level, `levels` deep, around `leaf`.
fn fan_out(leaf: &str, width: usize, levels: usize) -> String {
    let mut s = format!("{{{{#*inline \"p0\"}}}}{leaf}{{{{/inline}}}}");
    for l in 1..=levels {
        s += &format!("{{{{#*inline \"p{l}\"}}}}");
        for _ in 0..width {
            s += &format!("{{{{> p{}}}}}", l - 1);
        }
        s += "{{/inline}}";
    }
    s + &format!("{{{{> p{levels}}}}}")
}

async fn healthz_ms(base: &str) -> Result<u128> {
    let started = Instant::now();
    let r = reqwest::Client::new()
        .get(format!("{base}/healthz"))
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    assert_eq!(r.status(), 200);
    Ok(started.elapsed().as_millis())
}

async fn template_bombs(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let anna = &fx.operators[0];
    anna.set_status("active").await?;
    let r = fx.inbound("m1", "c1", "hi").await?;
    let chat = r["chat_id"].as_str().unwrap_or_default().to_owned();
    anna.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;
    let good = fx
        .admin
        .post(
            "/api/v1/templates",
            json!({"name": "Hi", "body": "{{#*inline \"n\"}}{{first_name contact.name}}{{/inline}}Hi {{> n}}!"}),
        )
        .await?
        .ok()?;
    let good_id = good["id"].as_str().unwrap_or_default().to_owned();

    // Refused at save, with the reason, on create and on update; nothing changes.
    let wide = fan_out(&"x".repeat(19_000), 10, 5);
    assert!(
        wide.len() > 19_000 && wide.len() <= 20_000,
        "{}",
        wide.len()
    );
    let refused = [
        (
            RECURSION.to_owned(),
            "partial \"r\" includes itself (r → r)",
        ),
        (wide.clone(), "too much work"),
        ("{{log \"from a template\"}}".to_owned(), "log helper"),
        (
            "Hi {{contact.nmae}}".to_owned(),
            "cannot render with a sample chat",
        ),
        (
            format!(
                "{{{{upper {}x{}}}}}",
                "(upper ".repeat(2_000),
                ")".repeat(2_000)
            ),
            "nested more than 64 deep",
        ),
    ];
    for (body, reason) in &refused {
        let started = Instant::now();
        let r = fx
            .admin
            .post("/api/v1/templates", json!({"name": "Bad", "body": body}))
            .await?;
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!((r.status, r.code()), (422, "invalid"), "{}", r.text);
        assert_eq!(r.body["field"], "body");
        let message = r.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{message}");
        assert!(message.len() < 600, "{message}");
        let r = fx
            .admin
            .put(
                &format!("/api/v1/templates/{good_id}"),
                json!({"name": "Hi", "body": body}),
            )
            .await?;
        assert_eq!((r.status, r.body["field"].as_str()), (422, Some("body")));
    }
    assert_eq!(db.scalar_i64("SELECT COUNT(*) FROM templates").await?, 1);
    let stored_body = fx.admin.get("/api/v1/templates?q=Hi").await?.ok()?[0]["body"].clone();
    assert_eq!(stored_body, good["body"]);

    // Bombs stored before these checks existed: each render fails alone, quickly, with the
    // reason, and the server stays up.
    let wide_output = fan_out(&"y".repeat(2_000), 8, 2);
    let stored = [
        ("old-recursion", RECURSION.to_owned(), "includes itself"),
        ("old-fan-out", wide.clone(), "too much work"),
        (
            "old-wide-output",
            wide_output,
            "the rendered text is larger than 65536 bytes",
        ),
        (
            "old-deep",
            format!(
                "{}x{}",
                "{{#if true}}".repeat(1_200),
                "{{/if}}".repeat(1_200)
            ),
            "nested more than 32 deep",
        ),
        ("old-log", "{{log contact.name}}".to_owned(), "log helper"),
    ];
    for (id, body, _) in &stored {
        db.exec(&format!(
            "INSERT INTO templates (id, name, body, queue_id, created_at, updated_at) \
             VALUES ('{id}', '{id}', '{}', NULL, 0, 0)",
            body.replace('\'', "''")
        ))
        .await?;
    }
    let mut slowest = Duration::ZERO;
    for (id, _, reason) in &stored {
        let started = Instant::now();
        let r = anna
            .post_empty(&format!("/api/v1/chats/{chat}/templates/{id}/render"))
            .await?;
        let took = started.elapsed();
        assert_eq!(r.status, 422, "{id}: {}", r.text);
        assert_eq!(r.body["field"], "body");
        let message = r.body["message"].as_str().unwrap_or_default();
        assert!(message.contains(reason), "{id}: {message}");
        assert!(took < Duration::from_secs(1), "{id} took {took:?}");
        slowest = slowest.max(took);
    }
    // Eight bombs rendered at once: /healthz keeps answering within a second.
    let renders: Vec<_> = (0..8)
        .map(|i| {
            let anna = anna.clone();
            let path = format!(
                "/api/v1/chats/{chat}/templates/{}/render",
                stored[i % stored.len()].0
            );
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..5 {
                    statuses.push(anna.post_empty(&path).await.map(|r| r.status).unwrap_or(0));
                }
                statuses
            })
        })
        .collect();
    let (mut worst, mut polls) = (0, 0);
    while polls < 3 || !renders.iter().all(|r| r.is_finished()) {
        worst = worst.max(healthz_ms(&server.base).await?);
        polls += 1;
    }
    for r in renders {
        assert!(r.await?.iter().all(|s| *s == 422));
    }
    eprintln!(
        "worst /healthz during 8 concurrent bomb renders: {worst} ms; slowest single bomb render: {slowest:?}"
    );
    assert!(worst < 1_000, "/healthz took {worst} ms during the renders");
    // Others carry on.
    let r = anna
        .post_empty(&format!("/api/v1/chats/{chat}/templates/{good_id}/render"))
        .await?
        .ok()?;
    assert_eq!(r["text"], "Hi Client!");

    // Random templates through save and render over HTTP: never a 5xx, each within a second.
    let fragments = [
        "Hi ",
        "{{contact.name}}",
        "{{first_name contact.name}}",
        "{{#if contact.email}}",
        "{{else}}",
        "{{/if}}",
        "{{#each this}}",
        "{{@key}}",
        "{{/each}}",
        "{{#*inline \"a\"}}",
        "{{/inline}}",
        "{{> a}}",
        "{{#> a}}",
        "{{/a}}",
        "{{upper (lower queue.name)}}",
        "{{log 1}}",
        "{{date \"[year]\"}}",
        "{{",
        "}}",
        "(",
        ")",
        "\"",
        "{{> (x)}}",
    ];
    // Whole constructs, so some random templates are valid and get rendered too.
    let snippets = [
        "Hello, {{first_name contact.name}}! ",
        "{{#if contact.email}}{{contact.email}}{{else}}no email{{/if}}",
        "{{#each contact}}{{@key}}={{this}} {{/each}}",
        "{{#*inline \"sig\"}}{{operator.name}}{{/inline}}{{> sig}}",
        "{{#with channel}}{{name}}{{/with}}",
        "{{default contact.phone \"-\"}}",
        "{{upper queue.name}}",
    ];
    let mixed = proptest::collection::vec(
        prop_oneof![
            3 => proptest::sample::select(fragments.to_vec()).prop_map(str::to_owned),
            1 => "\\PC{0,6}",
            1 => (proptest::sample::select(fragments.to_vec()), 1usize..200)
                .prop_map(|(f, n)| f.repeat(n)),
        ],
        1..40,
    )
    .prop_map(|v| v.concat());
    let valid = proptest::collection::vec(
        (proptest::sample::select(snippets.to_vec()), 1usize..60).prop_map(|(f, n)| f.repeat(n)),
        1..6,
    )
    .prop_map(|v| v.concat());
    let strategy = prop_oneof![mixed, valid];
    let mut runner = TestRunner::new_with_rng(
        Config {
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let (mut saved, mut slowest) = (0, Duration::ZERO);
    for i in 0..60 {
        let body = match strategy.new_tree(&mut runner) {
            Ok(t) => t.current(),
            Err(e) => bail!("{e}"),
        };
        let started = Instant::now();
        let r = fx
            .admin
            .post(
                "/api/v1/templates",
                json!({"name": format!("P{i}"), "body": body}),
            )
            .await?;
        slowest = slowest.max(started.elapsed());
        if !matches!(r.status, 201 | 422) {
            bail!("save: HTTP {} {} for {body:?}", r.status, r.text);
        }
        if r.status == 201 {
            saved += 1;
            let started = Instant::now();
            let id = r.body["id"].as_str().unwrap_or_default().to_owned();
            let r = anna
                .post_empty(&format!("/api/v1/chats/{chat}/templates/{id}/render"))
                .await?;
            slowest = slowest.max(started.elapsed());
            if !matches!(r.status, 200 | 422) {
                bail!("render: HTTP {} {} for {body:?}", r.status, r.text);
            }
        }
    }
    eprintln!("random templates: {saved} of 60 saved, slowest call {slowest:?}");
    assert!(saved > 0);
    assert!(slowest < Duration::from_secs(1), "{slowest:?}");
    Ok(())
}
