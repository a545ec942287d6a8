//! What an operator of the server meets before any user does: start-up errors as one line,
//! SQLite URLs without a mode, security headers on every kind of response, a token on `/metrics`.

use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::Result;
use ferrydesk_tests::{Backend, Db, Fixture, FixtureOptions, Server, server_bin};
use serde_json::json;

use crate::{on_both_backends, setup};

/// Runs `ferrydesk <args>` with `RUST_BACKTRACE=1` (as these machines set it) and returns
/// (success, stderr).
async fn run(args: &[&str], env: &[(&str, &str)]) -> Result<(bool, String)> {
    let mut cmd = tokio::process::Command::new(server_bin());
    cmd.args(args)
        .env("RUST_BACKTRACE", "1")
        .env_remove("FERRYDESK_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn assert_one_line(stderr: &str, mentions: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(mentions), "{stderr}");
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
}

#[tokio::test]
async fn sqlite_url_without_mode_creates_the_file_and_its_directory() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("not-yet").join("f.db");
    let url = format!("sqlite://{}", file.display());
    let (ok, stderr) = run(
        &["migrate"],
        &[
            ("FERRYDESK_DATABASE_URL", &url),
            ("FERRYDESK_DATA_DIR", &dir.path().display().to_string()),
        ],
    )
    .await?;
    assert!(ok, "{stderr}");
    assert!(file.exists(), "{} was not created", file.display());

    // The server itself starts on such a URL and writes to it.
    let db = Db::new(Backend::Sqlite).await?.expect("sqlite");
    db.add_admin().await?;
    let other = db.dir.path().join("second").join("g.db");
    let server = Server::start_with(
        &db,
        &[(
            "FERRYDESK_DATABASE_URL",
            &format!("sqlite://{}", other.display()),
        )],
    )
    .await?;
    assert_eq!(server.api().get("/healthz").await?.status, 200);
    assert!(other.exists());
    Ok(())
}

#[tokio::test]
async fn start_up_errors_print_one_line_without_a_backtrace() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"x")?;
    // The database's directory cannot be created: it would be inside a regular file.
    let url = format!("sqlite://{}/f.db", blocker.display());
    let (ok, stderr) = run(&["migrate"], &[("FERRYDESK_DATABASE_URL", &url)]).await?;
    assert!(!ok);
    assert_one_line(&stderr, "a-file");

    // A configuration file TOML rejects (its message spans several lines with a caret).
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "listen = \"x\"\nunknown_key = 1\n")?;
    let (ok, stderr) = run(&["--config", &cfg.display().to_string(), "migrate"], &[]).await?;
    assert!(!ok);
    assert_one_line(&stderr, "unknown_key");

    // An unsupported database URL.
    let (ok, stderr) = run(&["migrate"], &[("FERRYDESK_DATABASE_URL", "mysql://x/y")]).await?;
    assert!(!ok);
    assert_one_line(&stderr, "unsupported database URL");
    Ok(())
}

#[tokio::test]
async fn every_kind_of_response_carries_its_security_headers() -> Result<()> {
    let (_db, server) = setup!(Backend::Sqlite);
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{}{path}", server.base)).send();

    for page in ["/", "/chats/whatever", "/widget/demo"] {
        let r = get(page).await?;
        let h = r.headers();
        let csp = h
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'"), "{page}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{page}: {csp}");
        assert!(!csp.contains("script-src 'self' 'unsafe-inline'"), "{page}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{page}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{page}");
        assert_eq!(h["x-frame-options"], "DENY", "{page}");
    }
    for api in [
        "/api/v1/auth/me",
        "/api/openapi.json",
        "/widget/v1/messages",
    ] {
        let r = get(api).await?;
        let h = r.headers();
        let csp = h
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(csp.starts_with("default-src 'none'"), "{api}: {csp}");
        assert!(csp.contains("sandbox"), "{api}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{api}");
    }
    // The widget script is embedded by other sites: no page policy, but never sniffed.
    let r = get("/widget.js").await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(r.headers().get("content-security-policy").is_none());
    Ok(())
}

#[tokio::test]
async fn metrics_can_require_a_token() -> Result<()> {
    let Some(db) = Db::new(Backend::Sqlite).await? else {
        return Ok(());
    };
    let server = Server::start_with(&db, &[("FERRYDESK_METRICS_TOKEN", "m-3tr1cs-secret")]).await?;
    let http = reqwest::Client::new();
    let url = format!("{}/metrics", server.base);
    assert_eq!(http.get(&url).send().await?.status(), 401);
    let wrong = http.get(&url).bearer_auth("m-3tr1cs-secreX").send().await?;
    assert_eq!(wrong.status(), 401);
    let right = http.get(&url).bearer_auth("m-3tr1cs-secret").send().await?;
    assert_eq!(right.status(), 200);
    Ok(())
}

on_both_backends!(everything_hostile_at_once);

/// A partial that includes itself, written to the database as if saved before the checks.
const TEMPLATE_BOMB: &str = r#"{{#*inline "r"}}x{{> r}}{{/inline}}{{> r}}"#;

/// Issue 14's "done when": eight hostile plugin calls, template bombs and looping process
/// instances at the same time. `/healthz` answers within a second throughout, each hostile
/// thing fails alone with its reason, and an operator's reply still goes through.
async fn everything_hostile_at_once(b: Backend) -> Result<()> {
    let Some(db) = Db::new(b).await? else {
        return Ok(());
    };
    db.add_admin().await?;
    let pdir = crate::plugins::plugins_dir_with(&[(
        "evil-slow",
        json!({"id": "evil-slow", "limits": {"timeout_ms": 3000, "concurrency": 16}}),
    )])?;
    let server = Server::start_with(
        &db,
        &[("FERRYDESK_PLUGINS_DIR", &pdir.path().display().to_string())],
    )
    .await?;
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let admin = &fx.admin;
    admin
        .post(
            "/api/v1/plugins",
            json!({"path": pdir.path().join("evil-slow")}),
        )
        .await?
        .ok()?;
    admin
        .post("/api/v1/plugins/evil-slow/enable", json!({}))
        .await?
        .ok()?;
    let anna = fx.operators[0].clone();
    anna.set_status("active").await?;
    let chat = fx.inbound("all-1", "ivan", "Hello").await?["chat_id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    anna.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;
    db.exec(&format!(
        "INSERT INTO templates (id, name, body, queue_id, created_at, updated_at) \
         VALUES ('bomb', 'bomb', '{TEMPLATE_BOMB}', NULL, 0, 0)"
    ))
    .await?;
    // A process whose only task loops forever in a plugin: every attempt hits the time limit.
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d">
  <bpmn:process id="spinning" isExecutable="true">
    <bpmn:startEvent id="s" />
    <bpmn:serviceTask id="spin"><bpmn:extensionElements><zeebe:taskDefinition type="plugin:evil-slow/loop" retries="2" /></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:endEvent id="e" />
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="spin" />
    <bpmn:sequenceFlow id="f2" sourceRef="spin" targetRef="e" />
  </bpmn:process>
</bpmn:definitions>"#;
    crate::processes::deploy(admin, xml).await?.ok()?;

    let stop = Arc::new(AtomicBool::new(false));
    let prober = {
        let (stop, health) = (stop.clone(), format!("{}/healthz", server.base));
        tokio::spawn(async move {
            let client = reqwest::Client::new();
            let (mut worst, mut probes) = (Duration::ZERO, 0u32);
            while !stop.load(Ordering::Relaxed) {
                let t0 = Instant::now();
                let ok = client
                    .get(&health)
                    .timeout(Duration::from_secs(5))
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success());
                worst = worst.max(t0.elapsed());
                probes += 1;
                if !ok {
                    return Err(anyhow::anyhow!("/healthz failed after {probes} probes"));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok((worst, probes))
        })
    };
    let mut instances = Vec::new();
    for _ in 0..4 {
        let r = admin
            .post("/api/v1/processes/spinning/instances", json!({}))
            .await?
            .ok()?;
        instances.push(r["id"].as_str().unwrap_or_default().to_owned());
    }
    let loops: Vec<_> = (0..8)
        .map(|_| {
            let (anna, path) = (
                anna.clone(),
                format!("/api/v1/chats/{chat}/actions/evil-slow/loop"),
            );
            tokio::spawn(async move { anna.post(&path, json!({"input": {}})).await })
        })
        .collect();
    let bombs: Vec<_> = (0..8)
        .map(|_| {
            let (anna, path) = (
                anna.clone(),
                format!("/api/v1/chats/{chat}/templates/bomb/render"),
            );
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for _ in 0..5 {
                    statuses.push(anna.post_empty(&path).await?.status);
                }
                anyhow::Ok(statuses)
            })
        })
        .collect();
    // The operator's own work carries on meanwhile.
    let t0 = Instant::now();
    anna.post(
        &format!("/api/v1/chats/{chat}/messages"),
        json!({"text": "Still here"}),
    )
    .await?
    .ok()?;
    let reply_took = t0.elapsed();
    for l in loops {
        let r = l.await??;
        assert_eq!(r.status, 409, "{}", r.text);
        assert!(r.text.contains("time limit"), "{}", r.text);
    }
    for bomb in bombs {
        assert!(bomb.await??.iter().all(|s| *s == 422));
    }
    // Each instance ends in an incident naming the time limit, not in a crash.
    let deadline = Instant::now() + Duration::from_secs(90);
    for id in &instances {
        loop {
            let incidents = db
                .scalar_i64(&format!(
                    "SELECT COUNT(*) FROM process_jobs WHERE instance_id = '{id}' AND state = 'incident'"
                ))
                .await?;
            if incidents == 1 {
                break;
            }
            assert!(Instant::now() < deadline, "no incident for {id}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (worst, probes) = prober.await??;
    eprintln!(
        "[{b:?}] 8 looping plugin calls + 40 template-bomb renders + 4 looping instances: \
         /healthz worst {worst:?} over {probes} probes; an operator's reply took {reply_took:?}"
    );
    assert!(worst < Duration::from_secs(1), "/healthz took {worst:?}");
    assert!(probes > 20, "only {probes} probes");
    Ok(())
}
