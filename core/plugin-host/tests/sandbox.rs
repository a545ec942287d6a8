//! The real host against real components built from `plugins/` (run `plugins/build.sh` first;
//! `./test.sh` does). Each misbehaving plugin is stopped with a clear error and the host keeps
//! serving the next call.

#![allow(clippy::unwrap_used)] // a failing expectation should panic with the value

use std::path::PathBuf;

use ferrydesk_plugin_host::testing::TestHost;
use ferrydesk_plugin_host::{CallError, LoadError};
use serde_json::json;

fn dir(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../plugins")
        .join(name);
    assert!(
        d.join("plugin.wasm").exists(),
        "{}/plugin.wasm is missing: run plugins/build.sh",
        d.display()
    );
    d
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn misbehaving_plugins_are_contained() {
    let t = TestHost::new().expect("host");
    let evil = t.load_dir(dir("testing/evil")).await.expect("load evil");
    let call = t.call_with(&evil, json!({"token": "s3cr3t-value"}), false);

    // A loop is stopped by the epoch deadline.
    let started = std::time::Instant::now();
    let e = evil
        .run_action(&call, "loop", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(e, CallError::Timeout { limit_ms: 500 });
    assert!(
        started.elapsed() < std::time::Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    // A memory bomb hits the manifest's cap.
    let e = evil
        .run_action(&call, "memory", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(e, CallError::OutOfMemory { limit_mb: 16 });

    // Unbounded recursion is a trap, not a crashed host.
    let e = evil
        .run_action(&call, "stack", &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(e, CallError::Trap { .. }), "{e:?}");

    // A panic's message reaches the caller.
    let e = evil
        .run_action(&call, "panic", &json!({}))
        .await
        .unwrap_err();
    match e {
        CallError::Trap { detail } => {
            assert!(detail.contains("the evil plugin panics"), "{detail}")
        }
        other => panic!("{other:?}"),
    }

    // Output that breaks the output schema is rejected.
    let e = evil
        .run_action(&call, "garbage", &json!({}))
        .await
        .unwrap_err();
    assert!(matches!(e, CallError::InvalidOutput { .. }), "{e:?}");

    // Input that breaks the input schema never reaches the plugin.
    let e = evil
        .run_action(&call, "echo", &json!("not an object"))
        .await
        .unwrap_err();
    assert!(matches!(e, CallError::InvalidInput { .. }), "{e:?}");

    // No ambient authority: no files, no environment; secrets are not readable as config.
    let out = evil
        .run_action(&call, "ambient", &json!({}))
        .await
        .expect("ambient");
    assert_eq!(out.output["file"], json!(null));
    assert_eq!(out.output["env"], json!([]));
    assert_eq!(out.output["dir"], json!(null));
    assert_eq!(out.output["config_token"], json!(null));

    // Private addresses are denied without the admin's grant, even though the manifest asks.
    let e = evil
        .run_action(&call, "fetch", &json!({"url": "http://127.0.0.1:9/"}))
        .await
        .unwrap_err();
    match e {
        CallError::Plugin { code, message, .. } => {
            assert_eq!(code, "http_denied");
            assert!(message.contains("private address"), "{message}");
        }
        other => panic!("{other:?}"),
    }
    // Hosts the manifest does not declare are denied.
    let e = evil
        .run_action(&call, "fetch", &json!({"url": "https://example.org/"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CallError::Plugin { code, message, .. } if code == "http_denied" && message.contains("not among the hosts")),
        "{e:?}"
    );

    // And after all that, the host still serves.
    let out = evil
        .run_action(&call, "echo", &json!({"ok": 1}))
        .await
        .expect("echo");
    assert_eq!(out.output, json!({"ok": 1}));
    let stats = evil.stats();
    assert_eq!((stats.calls, stats.errors), (9, 7), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_is_scoped_to_the_installation() {
    let t = TestHost::new().expect("host");
    let evil = t.load_dir(dir("testing/evil")).await.expect("load");
    let mine = t.call_with(&evil, json!({}), false);
    let mut other = mine.clone();
    other.kv_scope = "telegram".into();
    evil.run_action(
        &other,
        "kv-write",
        &json!({"key": "secret", "value": "bot-token"}),
    )
    .await
    .expect("write");
    let out = evil
        .run_action(&mine, "kv-read", &json!({"key": "secret"}))
        .await
        .expect("read");
    assert_eq!(out.output["value"], json!(null));
    let out = evil
        .run_action(&other, "kv-read", &json!({"key": "secret"}))
        .await
        .expect("read");
    assert_eq!(out.output["value"], json!("bot-token"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_components_are_rejected_at_load() {
    let t = TestHost::new().expect("host");
    // Unknown imports.
    let e = t
        .load_dir(dir("testing/alien"))
        .await
        .err()
        .expect("alien loads");
    let text = format!("{e:#}");
    assert!(text.contains("alien:escape/sys"), "{text}");

    // Corrupt bytes.
    let manifest = ferrydesk_plugin_host::manifest::parse(
        &std::fs::read_to_string(dir("create-case").join("plugin.json")).expect("read"),
    )
    .expect("manifest");
    let e = t
        .host
        .load(manifest.clone(), b"\0asm garbage")
        .await
        .err()
        .expect("garbage loads");
    assert!(matches!(e, LoadError::Invalid(_)), "{e:?}");
    let mut wasm = std::fs::read(dir("create-case").join("plugin.wasm")).expect("read");
    let mid = wasm.len() / 2;
    for b in &mut wasm[mid..mid + 64] {
        *b ^= 0x5a;
    }
    let e = t
        .host
        .load(manifest.clone(), &wasm)
        .await
        .err()
        .expect("corrupt loads");
    assert!(matches!(e, LoadError::Invalid(_)), "{e:?}");

    // A component of another kind than the manifest says.
    let mut as_macro = manifest.clone();
    as_macro.kind = ferrydesk_plugin_host::manifest::Kind::Macro;
    let e = t
        .host
        .load(
            as_macro,
            &std::fs::read(dir("create-case").join("plugin.wasm")).expect("read"),
        )
        .await
        .err()
        .expect("wrong kind loads");
    assert!(matches!(e, LoadError::World { kind: "macro", .. }), "{e:?}");

    // A checksum that does not match.
    let mut wrong = manifest;
    wrong.component.sha256 = Some("0".repeat(64));
    let e = t
        .host
        .load(
            wrong,
            &std::fs::read(dir("create-case").join("plugin.wasm")).expect("read"),
        )
        .await
        .err()
        .expect("wrong checksum loads");
    assert!(matches!(e, LoadError::Checksum { .. }), "{e:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn first_party_macro_and_action_work() {
    let t = TestHost::new().expect("host");
    let greeting = t.load_dir(dir("greeting")).await.expect("load greeting");
    let call = t.call_with(&greeting, json!({"utc_offset": 0}), false);
    let s = greeting
        .render(
            &call,
            "format_date",
            &[json!(1_795_564_800_000i64)],
            &json!({"style": "long", "lang": "ru"}),
            &json!({}),
        )
        .await
        .expect("render");
    assert_eq!(s, "25 ноября 2026");
    let s = greeting
        .render(
            &call,
            "greeting",
            &[],
            &json!({}),
            &json!({"contact": {"locale": "ru"}}),
        )
        .await
        .expect("render");
    assert!(
        ["Доброе утро", "Добрый день", "Добрый вечер"].contains(&s.as_str()),
        "{s}"
    );
    let e = greeting
        .render(&call, "nope", &[], &json!({}), &json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CallError::Plugin { code, .. } if code == "unknown_helper"),
        "{e:?}"
    );

    let cc = t
        .load_dir(dir("create-case"))
        .await
        .expect("load create-case");
    t.services.records.lock().expect("lock").insert(
        ("chat".into(), "c1".into()),
        json!({"id": "c1", "contact_id": "k1", "messages": [
            {"direction": "inbound", "body": "My parcel is late\nOrder 42"},
            {"direction": "outbound", "body": "Let me check"}
        ]}),
    );
    let mut call = t.call_with(&cc, json!({}), false);
    call.ctx.chat = Some("c1".into());
    let out = cc
        .run_action(&call, "create-case", &json!({}))
        .await
        .expect("run");
    assert_eq!(out.output["subject"], json!("My parcel is late"));
    assert_eq!(
        out.output["description"],
        json!("Client: My parcel is late\nOrder 42\nOperator: Let me check")
    );
    // It only prepares: the process's `case.create` task makes the case and posts the note.
    assert!(out.effects.is_empty(), "{:?}", out.effects);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn telegram_send_against_mocked_http() {
    use ferrydesk_plugin_host::http::Response;
    use ferrydesk_plugin_host::testing::mock_http;
    let t = TestHost::new().expect("host");
    let tg = t.load_dir(dir("telegram")).await.expect("load telegram");
    let mut call = t.call_with(
        &tg,
        json!({"bot_token": "1:abc", "api_base": "https://api.telegram.org"}),
        false,
    );
    let limited = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let flag = limited.clone();
    let seen = mock_http(&mut call, move |req| {
        assert!(req.url.ends_with("/bot1:abc/sendMessage"), "{}", req.url);
        if flag.swap(false, std::sync::atomic::Ordering::SeqCst) {
            Response {
                status: 429,
                headers: vec![],
                body: br#"{"ok":false,"error_code":429,"description":"Too Many Requests: retry after 7","parameters":{"retry_after":7}}"#.to_vec(),
            }
        } else {
            Response {
                status: 200,
                headers: vec![],
                body: br#"{"ok":true,"result":{"message_id":55}}"#.to_vec(),
            }
        }
    });
    let msg = || ferrydesk_plugin_host::OutboundMessage {
        recipient: "777".into(),
        text: "hi".into(),
        files: vec![],
        message_id: "m1".into(),
    };
    let e = tg.connector_send(&call, msg()).await.unwrap_err();
    assert_eq!(
        e,
        CallError::Plugin {
            code: "rate_limited".into(),
            message: "retry_after=7".into(),
            retryable: true
        }
    );
    assert_eq!(
        tg.connector_send(&call, msg()).await.expect("send"),
        "777:55"
    );
    {
        let seen = seen.lock().expect("lock");
        assert_eq!(seen.len(), 2);
        let body: serde_json::Value =
            serde_json::from_slice(seen[1].body.as_deref().unwrap_or_default()).expect("json");
        assert_eq!(body, json!({"chat_id": "777", "text": "hi"}));
    }

    // Even mocked, a host outside the grant is refused.
    let mut call = t.call_with(
        &tg,
        json!({"bot_token": "1:abc", "api_base": "https://evil.example"}),
        false,
    );
    let mut s = (*call.settings).clone();
    s.granted_hosts = vec!["https://api.telegram.org".into()];
    call.settings = std::sync::Arc::new(s);
    let _ = mock_http(&mut call, |_| Response {
        status: 200,
        headers: vec![],
        body: vec![],
    });
    let e = tg.connector_send(&call, msg()).await.unwrap_err();
    assert!(
        matches!(&e, CallError::Plugin { code, .. } if code == "http_denied"),
        "{e:?}"
    );
}
