//! The host's bounds under hostile plugins (issue 14, rows 6–8): calls never hold the async
//! runtime, time limits are wall-clock under load, a node memory budget bounds concurrent
//! calls, and output, effects and key-value data are capped. Uses the real evil component
//! (`plugins/build.sh`).

#![allow(clippy::unwrap_used)] // a failing expectation should panic with the value

use std::path::PathBuf;
use std::time::{Duration, Instant};

use ferrydesk_plugin_host::CallError;
use ferrydesk_plugin_host::testing::TestHost;
use serde_json::json;

fn evil_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/testing/evil");
    assert!(
        d.join("plugin.wasm").exists(),
        "{}/plugin.wasm is missing: run plugins/build.sh",
        d.display()
    );
    d
}

/// Eight loops at once on a two-thread runtime: a timer task keeps ticking (the runtime is
/// never held) and every loop is stopped close to its 500 ms wall-clock limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn looping_calls_never_hold_the_runtime_and_stop_on_time() {
    let t = TestHost::new().unwrap();
    let evil = t.load_dir(evil_dir()).await.unwrap();
    let call = t.call_with(&evil, json!({}), false);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let ticker = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut worst = Duration::ZERO;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let t0 = Instant::now();
                tokio::time::sleep(Duration::from_millis(10)).await;
                worst = worst.max(t0.elapsed().saturating_sub(Duration::from_millis(10)));
            }
            worst
        })
    };
    let mut calls = Vec::new();
    for _ in 0..8 {
        let (evil, call) = (evil.clone(), call.clone());
        calls.push(tokio::spawn(async move {
            let t0 = Instant::now();
            let e = evil
                .run_action(&call, "loop", &json!({}))
                .await
                .unwrap_err();
            (e, t0.elapsed())
        }));
    }
    let mut times = Vec::new();
    for c in calls {
        let (e, took) = c.await.unwrap();
        assert_eq!(e, CallError::Timeout { limit_ms: 500 });
        assert!(e.to_string().contains("time limit"), "{e}");
        times.push(took);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let worst = ticker.await.unwrap();
    eprintln!("8 looping calls: stopped after {times:?}; worst timer lag {worst:?}");
    for took in &times {
        assert!(
            *took >= Duration::from_millis(500) && *took < Duration::from_millis(900),
            "{times:?}"
        );
    }
    assert!(worst < Duration::from_millis(150), "timer lag {worst:?}");
}

/// Each call's memory cap comes out of the node's budget: eight calls that each try to take
/// 2 GiB fail "out of memory" at their cap, at most two run at once, and a call that cannot get
/// its share in time fails with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_memory_budget_bounds_concurrent_calls() {
    let t = TestHost::with_config(|c| {
        c.memory_budget_mb = 128;
        c.admission_wait = Duration::from_secs(20);
    })
    .unwrap();
    let big = t
        .load_dir_patched(
            evil_dir(),
            json!({"limits": {"memory_mb": 64, "timeout_ms": 10000, "concurrency": 8}}),
        )
        .await
        .unwrap();
    let call = t.call_with(&big, json!({}), false);
    let mut calls = Vec::new();
    for _ in 0..8 {
        let (big, call) = (big.clone(), call.clone());
        calls.push(tokio::spawn(async move {
            big.run_action(&call, "memory", &json!({"mb": 2048}))
                .await
                .unwrap_err()
        }));
    }
    for c in calls {
        let e = c.await.unwrap();
        assert_eq!(e, CallError::OutOfMemory { limit_mb: 64 });
        assert!(e.to_string().contains("out of memory"), "{e}");
    }

    // No room within the wait: a clear, retryable error.
    let t = TestHost::with_config(|c| {
        c.memory_budget_mb = 16;
        c.admission_wait = Duration::from_millis(200);
    })
    .unwrap();
    let evil = t
        .load_dir_patched(
            evil_dir(),
            json!({"limits": {"memory_mb": 16, "timeout_ms": 2000}}),
        )
        .await
        .unwrap();
    let call = t.call_with(&evil, json!({}), false);
    let hog = {
        let (evil, call) = (evil.clone(), call.clone());
        tokio::spawn(async move { evil.run_action(&call, "loop", &json!({})).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let e = evil
        .run_action(&call, "echo", &json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CallError::Overloaded { detail } if detail.contains("memory budget of 16 MiB")),
        "{e:?}"
    );
    assert!(e.retryable());
    let _ = hog.await;
    // The budget is given back: the next call runs.
    evil.run_action(&call, "echo", &json!({"x": 1}))
        .await
        .unwrap();
}

/// A plugin's own concurrency limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_runs_at_most_its_concurrency() {
    let t = TestHost::with_config(|c| c.admission_wait = Duration::from_millis(200)).unwrap();
    let evil = t
        .load_dir_patched(
            evil_dir(),
            json!({"limits": {"memory_mb": 16, "timeout_ms": 1500, "concurrency": 1}}),
        )
        .await
        .unwrap();
    let call = t.call_with(&evil, json!({}), false);
    let hog = {
        let (evil, call) = (evil.clone(), call.clone());
        tokio::spawn(async move { evil.run_action(&call, "loop", &json!({})).await })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let e = evil
        .run_action(&call, "echo", &json!({}))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CallError::Overloaded { detail } if detail.contains("limit of 1 calls at once")),
        "{e:?}"
    );
    let _ = hog.await;
}

/// Output, effects and key-value data beyond the manifest's `limits` fail the call and apply
/// nothing; the host maxima cap what a manifest may declare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_effects_and_kv_are_capped() {
    let t = TestHost::new().unwrap();
    let evil = t.load_dir(evil_dir()).await.unwrap();
    let call = t.call_with(&evil, json!({}), false);
    assert_eq!(evil.limits().output_bytes, 65536);

    let e = evil
        .run_action(&call, "big-output", &json!({"kb": 1024}))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CallError::LimitExceeded { detail } if detail.contains("limit is 65536 bytes")),
        "{e:?}"
    );
    let e = evil
        .run_action(&call, "notes", &json!({"n": 51}))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CallError::LimitExceeded { detail } if detail.contains("51 effects")),
        "{e:?}"
    );
    let e = evil
        .run_action(&call, "notes", &json!({"n": 2, "size": 40000}))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CallError::LimitExceeded { detail } if detail.contains("limits.effect_bytes")),
        "{e:?}"
    );
    // Within the limits, fine.
    let ok = evil
        .run_action(&call, "notes", &json!({"n": 50}))
        .await
        .unwrap();
    assert_eq!(ok.effects.len(), 50);

    // 1 MiB of kv: 20 × 64 KiB fails and stores nothing; 10 × 64 KiB fits; 10 more do not.
    let e = evil
        .run_action(&call, "kv-flood", &json!({"keys": 20, "prefix": "a"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CallError::LimitExceeded { detail } if detail.contains("storage quota")),
        "{e:?}"
    );
    assert!(t.services.kv.lock().unwrap().is_empty());
    evil.run_action(&call, "kv-flood", &json!({"keys": 10, "prefix": "a"}))
        .await
        .unwrap();
    let e = evil
        .run_action(&call, "kv-flood", &json!({"keys": 10, "prefix": "b"}))
        .await
        .unwrap_err();
    assert!(matches!(&e, CallError::LimitExceeded { .. }), "{e:?}");
    assert_eq!(t.services.kv.lock().unwrap().len(), 10);
    // Keys are counted too (limit 100).
    let e = evil
        .run_action(
            &call,
            "kv-flood",
            &json!({"keys": 91, "kb": 0, "prefix": "c"}),
        )
        .await
        .unwrap_err();
    assert!(matches!(&e, CallError::LimitExceeded { .. }), "{e:?}");

    // A 100 MB output with the defaults (1 MiB) on a plugin with room to build it.
    let big = t
        .load_dir_patched(
            evil_dir(),
            json!({"id": "evil-big", "limits": {"memory_mb": 512, "timeout_ms": 20000, "output_bytes": 999999999u64 & 0xffffff}}),
        )
        .await;
    assert!(big.is_err() || big.as_ref().unwrap().limits().output_bytes <= 8 << 20);
    let big = t
        .load_dir_patched(
            evil_dir(),
            json!({"id": "evil-big", "limits": {"memory_mb": 512, "timeout_ms": 20000}}),
        )
        .await
        .unwrap();
    let call = t.call_with(&big, json!({}), false);
    let e = big
        .run_action(&call, "big-output", &json!({"kb": 100 << 10}))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CallError::LimitExceeded { detail } if detail.contains("limit is 1048576 bytes")),
        "{e:?}"
    );
    let e = big
        .run_action(&call, "notes", &json!({"n": 100000}))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CallError::LimitExceeded { detail } if detail.contains("100000 effects")),
        "{e:?}"
    );
}

/// Trap messages name their cause.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn traps_name_their_cause() {
    let t = TestHost::new().unwrap();
    let evil = t.load_dir(evil_dir()).await.unwrap();
    let call = t.call_with(&evil, json!({}), false);
    let e = evil
        .run_action(&call, "stack", &json!({}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("stack overflow"), "{e}");
    let e = evil
        .run_action(&call, "memory", &json!({}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("out of memory"), "{e}");
    let e = evil
        .run_action(&call, "loop", &json!({}))
        .await
        .unwrap_err();
    assert!(e.to_string().contains("time limit"), "{e}");
}

/// `kv.delete` is bounded like `set`: more than 256 keys written or deleted in one call fails
/// the call and applies nothing; a key longer than `set` accepts is not recorded at all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_deletes_are_bounded_like_writes() {
    let t = TestHost::new().unwrap();
    let evil = t.load_dir(evil_dir()).await.unwrap();
    let call = t.call_with(&evil, json!({}), false);
    evil.run_action(
        &call,
        "kv-flood",
        &json!({"keys": 2, "kb": 1, "prefix": "a"}),
    )
    .await
    .unwrap();
    assert_eq!(t.services.kv.lock().unwrap().len(), 2);
    // 10,000 deletes (the first two real): refused, nothing deleted.
    let e = evil
        .run_action(&call, "kv-delete-flood", &json!({"prefix": "a"}))
        .await
        .unwrap_err();
    assert!(
        matches!(&e, CallError::LimitExceeded { detail } if detail.contains("more than 256 keys") && detail.contains("nothing was applied")),
        "{e:?}"
    );
    assert_eq!(t.services.kv.lock().unwrap().len(), 2);
    // Exactly 256 is fine.
    evil.run_action(
        &call,
        "kv-delete-flood",
        &json!({"keys": 256, "prefix": "a"}),
    )
    .await
    .unwrap();
    assert!(t.services.kv.lock().unwrap().is_empty());
    // Deleting keys longer than 256 bytes does nothing (they cannot exist) and is not counted.
    evil.run_action(
        &call,
        "kv-delete-flood",
        &json!({"keys": 1000, "pad": 300, "prefix": "b"}),
    )
    .await
    .unwrap();
}

fn webhook_dir() -> PathBuf {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/webhook");
    assert!(
        d.join("plugin.wasm").exists(),
        "{}/plugin.wasm is missing: run plugins/build.sh",
        d.display()
    );
    d
}

fn batch(messages: Vec<serde_json::Value>) -> ferrydesk_plugin_host::InboundRequest {
    ferrydesk_plugin_host::InboundRequest {
        method: "POST".into(),
        path: "/".into(),
        query: String::new(),
        headers: Vec::new(),
        body: json!({ "messages": messages }).to_string().into_bytes(),
    }
}

fn message(i: usize, text: &str, files: usize) -> serde_json::Value {
    let files: Vec<_> = (0..files)
        .map(|f| json!({"url": format!("https://files.example.com/{i}/{f}"), "name": "a.txt"}))
        .collect();
    json!({"id": format!("m-{i}"), "sender": {"id": "u-1"}, "text": text, "files": files})
}

/// A connector's results are bounded like an action's: messages per call (`effects`), their
/// bytes (`effect_bytes`), the reply (`output_bytes`) and the downloads they ask for
/// (`min(effects, 20)`); exceeding one fails the call and hands nothing over to ingest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connector_results_are_bounded() {
    let t = TestHost::new().unwrap();
    let hook = t
        .load_dir_patched(
            webhook_dir(),
            json!({"limits": {"effects": 5, "effect_bytes": 4096, "output_bytes": 1024}}),
        )
        .await
        .unwrap();
    let call = t.call_with(
        &hook,
        json!({"secret": "x".repeat(16), "outbound_url": "https://shop.example.com/out"}),
        false,
    );
    let limited = |r: Result<_, CallError>, what: &str| match r {
        Err(CallError::LimitExceeded { detail }) => {
            assert!(detail.contains(what), "{detail}");
            assert!(detail.contains("nothing was ingested"), "{detail}");
        }
        other => panic!("expected limit_exceeded ({what}), got {other:?}"),
    };

    // Five messages are fine; six are too many.
    let (r, _) = hook
        .connector_inbound(&call, batch((0..5).map(|i| message(i, "hi", 0)).collect()))
        .await;
    let (msgs, reply) = r.unwrap();
    assert_eq!((msgs.len(), reply.status), (5, 200));
    let (r, writes) = hook
        .connector_inbound(&call, batch((0..6).map(|i| message(i, "hi", 0)).collect()))
        .await;
    limited(r.map(drop), "6 messages");
    assert!(writes.is_empty());

    // 2 × 3000 bytes of text: over 4096.
    let (r, _) = hook
        .connector_inbound(
            &call,
            batch((0..2).map(|i| message(i, &"t".repeat(3000), 0)).collect()),
        )
        .await;
    limited(r.map(drop), "limits.effect_bytes");

    // Downloads: at most min(effects, 20) = 5 files per call.
    let (r, _) = hook
        .connector_inbound(&call, batch(vec![message(0, "", 5)]))
        .await;
    assert_eq!(r.unwrap().0[0].files.len(), 5);
    let (r, _) = hook
        .connector_inbound(&call, batch(vec![message(0, "", 6)]))
        .await;
    limited(r.map(drop), "6 file and photo downloads");
    // Sender photos are downloads too.
    let mut m = message(0, "", 5);
    m["sender"]["photo_url"] = json!("https://files.example.com/photo.jpg");
    let (r, _) = hook.connector_inbound(&call, batch(vec![m])).await;
    limited(r.map(drop), "6 file and photo downloads");

    // The reply to the provider counts against `output_bytes`.
    let tiny = t
        .load_dir_patched(
            webhook_dir(),
            json!({"id": "webhook-tiny", "limits": {"output_bytes": 8}}),
        )
        .await
        .unwrap();
    let (r, _) = tiny
        .connector_inbound(&call, batch(vec![message(0, "hi", 0)]))
        .await;
    match r {
        Err(CallError::LimitExceeded { detail }) => {
            assert!(detail.contains("limits.output_bytes"), "{detail}")
        }
        other => panic!("expected limit_exceeded, got {other:?}"),
    }

    // With the defaults: 100 messages and 20 downloads per call.
    let plain = t.load_dir(webhook_dir()).await.unwrap();
    assert_eq!(plain.max_downloads(), 20);
    let (r, _) = plain
        .connector_inbound(
            &call,
            batch((0..101).map(|i| message(i, "hi", 0)).collect()),
        )
        .await;
    limited(r.map(drop), "101 messages");
    let (r, _) = plain
        .connector_inbound(&call, batch(vec![message(0, "", 21)]))
        .await;
    limited(r.map(drop), "21 file and photo downloads");
    let (r, _) = plain
        .connector_inbound(
            &call,
            batch((0..100).map(|i| message(i, "hi", 0)).collect()),
        )
        .await;
    assert_eq!(r.unwrap().0.len(), 100);
}

/// The bounds leave room for a real provider's largest batch: one Telegram `getUpdates` (at
/// most 100 updates) of 4096-character messages in a three-byte script is ~1.2 MB, above the
/// default `effect_bytes` (1 MiB), so the Telegram manifest asks for 4 MiB — otherwise such a
/// batch would fail every poll and stall the channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_telegram_poll_fits_the_connector_limits() {
    use ferrydesk_plugin_host::http::Response;
    use ferrydesk_plugin_host::testing::mock_http;
    let t = TestHost::new().unwrap();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/telegram");
    let tg = t.load_dir(&dir).await.unwrap();
    let mut call = t.call_with(
        &tg,
        json!({"bot_token": "1:abc", "api_base": "https://api.telegram.org", "mode": "polling"}),
        false,
    );
    let text = "語".repeat(4096);
    let updates: Vec<_> = (0..100)
        .map(|i| json!({"update_id": 1000 + i, "message": {"message_id": i, "chat": {"id": 777}, "text": text}}))
        .collect();
    let body = json!({"ok": true, "result": updates})
        .to_string()
        .into_bytes();
    let _seen = mock_http(&mut call, move |req| {
        assert!(req.url.contains("/getUpdates"), "{}", req.url);
        Response {
            status: 200,
            headers: vec![],
            body: body.clone(),
        }
    });
    let (r, writes) = tg.connector_poll(&call).await;
    let msgs = r.unwrap();
    assert_eq!(msgs.len(), 100);
    let bytes: usize = msgs.iter().map(|m| m.text.len()).sum();
    assert!(bytes > 1 << 20, "{bytes}");
    assert!(!writes.is_empty(), "the offset is handed back to commit");
    // Under the default (1 MiB) the same batch would be refused.
    let strict = t
        .load_dir_patched(&dir, json!({"id": "telegram-strict", "limits": {"memory_mb": 64, "timeout_ms": 35000, "http_requests": 12}}))
        .await
        .unwrap();
    let (r, writes) = strict.connector_poll(&call).await;
    assert!(
        matches!(&r, Err(CallError::LimitExceeded { detail }) if detail.contains("limits.effect_bytes")),
        "{r:?}"
    );
    assert!(writes.is_empty());
}
