//! Bad input gets a 4xx with a clear error naming the problem, and writes nothing; random and
//! mutated JSON on the endpoints that take input from outside (the API channel, the widget, a
//! connector's webhook) never gets a 5xx and is answered quickly.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ferrydesk_tests::{Api, Backend, Fixture, FixtureOptions, Visitor};
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Value, json};

use crate::{on_both_backends, setup};

on_both_backends!(bad_input, inbound_json_fuzz);

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

/// Object keys the endpoints know, so generated objects reach past the first field check.
const KEYS: &[&str] = &[
    "external_id",
    "sender",
    "id",
    "name",
    "photo_url",
    "text",
    "files",
    "key",
    "client_id",
    "status",
    "messages",
    "content_type",
    "",
    "__proto__",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(KEYS).prop_map(str::to_owned),
        1 => "\\PC{0,12}",
    ]
}

fn json_value() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        "\\PC{0,24}".prop_map(Value::from),
        (9_000usize..12_000).prop_map(|n| Value::from("ж".repeat(n))),
    ];
    leaf.prop_recursive(5, 48, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
    .boxed()
}

fn pointers(v: &Value, at: &str, out: &mut Vec<String>) {
    match v {
        Value::Object(o) => {
            for (k, c) in o {
                let p = format!("{at}/{}", k.replace('~', "~0").replace('/', "~1"));
                out.push(p.clone());
                pointers(c, &p, out);
            }
        }
        Value::Array(a) => {
            for (i, c) in a.iter().enumerate() {
                let p = format!("{at}/{i}");
                out.push(p.clone());
                pointers(c, &p, out);
            }
        }
        _ => {}
    }
}

/// `valid` with one node replaced by `v`, removed, or (an object) given the key `k`.
fn mutate(mut doc: Value, at: usize, op: u8, v: Value, k: String) -> Value {
    let mut ptrs = vec![String::new()];
    pointers(&doc, "", &mut ptrs);
    let ptr = ptrs[at % ptrs.len()].clone();
    match op {
        0 => {
            if let Some(n) = doc.pointer_mut(&ptr) {
                *n = v;
            }
        }
        1 => {
            if let Some((parent, last)) = ptr.rsplit_once('/') {
                let last = last.replace("~1", "/").replace("~0", "~");
                match doc.pointer_mut(parent) {
                    Some(Value::Object(o)) => {
                        o.remove(&last);
                    }
                    Some(Value::Array(a)) => {
                        if let Ok(i) = last.parse::<usize>()
                            && i < a.len()
                        {
                            a.remove(i);
                        }
                    }
                    _ => {}
                }
            }
        }
        _ => match doc.pointer_mut(&ptr) {
            Some(Value::Object(o)) => {
                o.insert(k, v);
            }
            Some(n) => *n = v,
            None => {}
        },
    }
    doc
}

/// Request bodies for an endpoint whose valid input is `valid`: random JSON, mutations of
/// `valid`, and broken bytes.
fn bodies(valid: Value) -> impl Strategy<Value = Vec<u8>> {
    let text = serde_json::to_vec(&valid).unwrap_or_default();
    let random = json_value().prop_map(|v| serde_json::to_vec(&v).unwrap_or_default());
    let mutated = (any::<usize>(), 0u8..3, json_value(), key()).prop_map(move |(at, op, v, k)| {
        serde_json::to_vec(&mutate(valid.clone(), at, op, v, k)).unwrap_or_default()
    });
    let broken = (any::<usize>(), any::<u8>(), any::<bool>()).prop_map(move |(at, byte, cut)| {
        let mut t = text.clone();
        let at = at % t.len().max(1);
        if cut {
            t.truncate(at);
        } else if let Some(b) = t.get_mut(at) {
            *b = byte;
        }
        t
    });
    prop_oneof![2 => random, 4 => mutated, 1 => broken]
}

/// Posts `cases` generated bodies with `post` and checks each answer: no 5xx, within a second;
/// with `reach`, some are accepted (mutations keep some valid, so the fuzz gets past parsing).
async fn fuzz<F, Fut>(
    what: &str,
    valid: Value,
    cases: usize,
    reach: bool,
    mut post: F,
) -> Result<()>
where
    F: FnMut(Vec<u8>) -> Fut,
    Fut: std::future::Future<Output = Result<(u16, String)>>,
{
    let mut runner = TestRunner::new_with_rng(
        Config {
            failure_persistence: None,
            ..Config::default()
        },
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    let strategy = bodies(valid);
    let mut fixed: Vec<Vec<u8>> = vec![
        format!("{}1{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes(),
        b"{\"external_id\": 1e400}".to_vec(),
        b"\"\\ud800\"".to_vec(),
        Vec::new(),
        b"null".to_vec(),
    ];
    let mut accepted = 0;
    let mut statuses = std::collections::BTreeMap::<u16, usize>::new();
    let mut slowest = Duration::ZERO;
    for i in 0..cases + fixed.len() {
        let body = match fixed.pop() {
            Some(b) => b,
            None => match strategy.new_tree(&mut runner) {
                Ok(t) => t.current(),
                Err(e) => bail!("{e}"),
            },
        };
        let shown = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
        let started = Instant::now();
        let (status, text) = post(body).await?;
        let took = started.elapsed();
        if status >= 500 || status == 0 {
            bail!("{what} case {i}: HTTP {status} {text} for {shown}");
        }
        if took >= Duration::from_secs(1) {
            bail!("{what} case {i}: took {took:?} for {shown}");
        }
        accepted += usize::from(status < 300);
        *statuses.entry(status).or_default() += 1;
        slowest = slowest.max(took);
    }
    eprintln!("{what}: answers {statuses:?}, slowest {slowest:?}");
    if reach && accepted == 0 {
        bail!("{what}: nothing was accepted");
    }
    Ok(())
}

async fn raw_json(api: &Api, path: &str, body: Vec<u8>) -> Result<(u16, String)> {
    let r = api
        .raw(reqwest::Method::POST, path, "application/json", body)
        .await?;
    Ok((r.status, r.text))
}

async fn inbound_json_fuzz(b: Backend) -> Result<()> {
    let (_db, server) = setup!(b);
    let fx = Fixture::new(
        &server,
        FixtureOptions {
            operators: 1,
            ..Default::default()
        },
    )
    .await?;
    const CASES: usize = 200;

    // The API channel.
    let ch = fx.channel();
    fuzz(
        "channel messages",
        json!({"external_id": "e-1", "sender": {"id": "s-1", "name": "Ann", "photo_url": "https://example.invalid/a.png"}, "text": "Hello", "files": []}),
        CASES,
        true,
        |body| raw_json(&ch, "/api/v1/channel/messages", body),
    )
    .await?;
    // Acks of a message that does not exist: all refused, none with a 5xx.
    fuzz(
        "channel ack",
        json!({"status": "delivered"}),
        CASES / 4,
        false,
        |body| raw_json(&ch, "/api/v1/channel/outbound/nope/ack", body),
    )
    .await?;

    // The widget.
    let visitor = Visitor::new(&server.base, &fx.widget_key).await?;
    fuzz(
        "widget messages",
        json!({"text": "Hi", "client_id": "c-1", "files": []}),
        CASES,
        true,
        |body| raw_json(&visitor.api, "/widget/v1/messages", body),
    )
    .await?;
    let anonymous = Api::new(&server.base);
    fuzz(
        "widget sessions",
        json!({"key": fx.widget_key, "name": "Visitor"}),
        CASES,
        true,
        |body| raw_json(&anonymous, "/widget/v1/sessions", body),
    )
    .await?;

    // A connector's webhook (the generic webhook plugin), signed so the plugin parses it, and
    // unsigned.
    crate::plugins::install(&fx.admin, "webhook").await?;
    let secret = "0123456789abcdef-fuzz";
    let endpoint = ferrydesk_tests::fakes::FakeEndpoint::start(secret, 0).await?;
    fx.admin
        .post(
            "/api/v1/plugins/webhook/enable",
            json!({"grant": {"hosts": ["{{outbound_url}}"], "private": true}}),
        )
        .await?
        .ok()?;
    let c = fx
        .admin
        .post("/api/v1/connector-channels", json!({"plugin": "webhook", "name": "Shop", "queue_id": fx.queue, "config": {"secret": secret, "outbound_url": endpoint.url}}))
        .await?
        .ok()?;
    let hook = format!(
        "{}{}",
        server.base,
        c["webhook_path"].as_str().unwrap_or_default()
    );
    let http = reqwest::Client::new();
    let valid =
        json!({"messages": [{"id": "w-1", "sender": {"id": "u-1", "name": "Ann"}, "text": "Hi"}]});
    for signed in [true, false] {
        fuzz("webhook", valid.clone(), CASES, signed, |body| {
            let mut req = http
                .post(&hook)
                .header("content-type", "application/json")
                .timeout(Duration::from_secs(5));
            if signed {
                req = req.header(
                    "x-ferrydesk-signature",
                    ferrydesk_tests::fakes::sign(secret, &body),
                );
            }
            async move {
                let r = req.body(body).send().await?;
                Ok((r.status().as_u16(), r.text().await.unwrap_or_default()))
            }
        })
        .await?;
    }
    Ok(())
}

/// An upload that is not `multipart/form-data` (or has no boundary) is `422 invalid` on `file`
/// on every upload endpoint, like any other bad upload; it used to be axum's plain 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn uploads_that_are_not_multipart_are_422() -> anyhow::Result<()> {
    let (_db, server) = crate::setup!(ferrydesk_tests::Backend::Sqlite);
    let fx =
        ferrydesk_tests::Fixture::new(&server, ferrydesk_tests::FixtureOptions::default()).await?;
    let visitor = ferrydesk_tests::Visitor::new(&server.base, &fx.widget_key).await?;
    let calls = [
        (&fx.operators[0], "/api/v1/files"),
        (&fx.channel(), "/api/v1/channel/files"),
        (&visitor.api, "/widget/v1/files"),
    ];
    for (api, path) in calls {
        for ct in ["application/json", "multipart/form-data"] {
            let r = api
                .raw(reqwest::Method::POST, path, ct, b"{}".to_vec())
                .await?;
            assert_eq!(
                (r.status, r.code(), r.body["field"].as_str()),
                (422, "invalid", Some("file")),
                "{path} {ct}: {}",
                r.text
            );
        }
    }
    Ok(())
}
