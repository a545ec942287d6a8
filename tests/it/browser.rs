//! Real Chromium: the website widget (a visitor writes, an Active operator is offered the chat on
//! the WebSocket, accepts and replies, the visitor sees the reply live) and the operator web app
//! (two operators and a visitor through the whole chat flow, in English and Russian).

use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ferrydesk_tests::{Backend, Fixture, FixtureOptions};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::setup;

fn browser_available() -> Result<bool> {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/browser/widget.mjs");
    let have = std::path::Path::new("/usr/bin/chromium").exists()
        && std::path::Path::new(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/browser/node_modules/playwright-core"
        ))
        .exists()
        && std::path::Path::new(script).exists();
    if !have && std::env::var("FERRYDESK_REQUIRE_BROWSER").as_deref() == Ok("1") {
        bail!(
            "Chromium or playwright-core missing (FERRYDESK_REQUIRE_BROWSER=1): run ./test.sh to install them"
        );
    }
    if !have {
        eprintln!(
            "SKIPPED: Chromium or tests/browser/node_modules missing; ./test.sh installs them"
        );
    }
    Ok(have)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn widget_in_chromium() -> Result<()> {
    if !browser_available()? {
        return Ok(());
    }
    let (_db, server) = setup!(Backend::Sqlite);
    let fx = Fixture::new(
        &server,
        FixtureOptions {
            operators: 1,
            ..Default::default()
        },
    )
    .await?;
    let anna = &fx.operators[0];
    anna.set_status("active").await?;
    let mut ws = anna.ws().await?;

    let script = spawn_script(
        "widget.mjs",
        &[
            ("BASE", server.base.as_str()),
            ("KEY", fx.widget_key.as_str()),
        ],
    )?;

    // The visitor's message reaches the operator as an offer.
    let offer = ws
        .wait_for("chat_offered", Duration::from_secs(60), |e| {
            e["chat"]["preview"] == "Hello from Chromium"
        })
        .await?;
    let chat = offer["chat"]["id"].as_str().unwrap_or_default().to_owned();
    anna.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;
    anna.post(
        &format!("/api/v1/chats/{chat}/messages"),
        json!({"text": "Hello from the operator"}),
    )
    .await?
    .ok()?;

    let verdict = script.verdict().await?;
    assert!(verdict.starts_with("PASS"), "{verdict}");
    Ok(())
}

/// A browser script running in node.
struct Script {
    node: tokio::process::Child,
    out: tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
}

/// Starts `tests/browser/<script>` with the given environment (screenshots to `artifacts/`).
fn spawn_script(script: &str, env: &[(&str, &str)]) -> Result<Script> {
    let mut cmd = tokio::process::Command::new("node");
    cmd.arg(format!("{}/browser/{script}", env!("CARGO_MANIFEST_DIR")))
        .env(
            "SHOTS",
            concat!(env!("CARGO_MANIFEST_DIR"), "/browser/artifacts"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut node = cmd.spawn().context("starting node")?;
    let out = BufReader::new(node.stdout.take().context("stdout")?).lines();
    Ok(Script { node, out })
}

impl Script {
    /// Waits for the script's PASS/FAIL line, echoing its steps.
    async fn verdict(mut self) -> Result<String> {
        let verdict = tokio::time::timeout(Duration::from_secs(180), async {
            while let Some(line) = self.out.next_line().await? {
                eprintln!("[browser] {line}");
                if line.starts_with("PASS") || line.starts_with("FAIL") {
                    return Ok::<_, anyhow::Error>(line);
                }
            }
            bail!("browser script ended without a verdict")
        })
        .await
        .context("browser verdict timed out")??;
        self.node.wait().await?;
        Ok(verdict)
    }
}

/// Runs a browser script to its verdict.
async fn run_script(script: &str, env: &[(&str, &str)]) -> Result<String> {
    spawn_script(script, env)?.verdict().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn operator_app_in_chromium() -> Result<()> {
    if !browser_available()? {
        return Ok(());
    }
    let (_db, server) = setup!(Backend::Sqlite);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    fx.admin
        .post("/api/v1/templates", json!({"name": "Greeting", "body": "Hello, {{contact.first_name}}! I am {{operator.first_name}}."}))
        .await?
        .ok()?;
    let verdict = run_script(
        "operator.mjs",
        &[
            ("BASE", server.base.as_str()),
            ("KEY", fx.widget_key.as_str()),
            ("PASSWORD", ferrydesk_tests::PASSWORD),
        ],
    )
    .await?;
    assert!(verdict.starts_with("PASS"), "{verdict}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn chats_section_in_chromium() -> Result<()> {
    if !browser_available()? {
        return Ok(());
    }
    let (_db, server) = setup!(Backend::Sqlite);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let anna = &fx.operators[0];
    anna.set_status("active").await?;
    let ch = fx.channel();
    let done = ch
        .post("/api/v1/channel/messages", json!({"external_id": "d1", "sender": {"id": "done", "name": "Client done"}, "text": "hi"}))
        .await?
        .ok()?;
    let done = done["chat_id"].as_str().unwrap_or_default().to_owned();
    anna.post_empty(&format!("/api/v1/chats/{done}/accept"))
        .await?
        .ok()?;
    anna.post(
        &format!("/api/v1/chats/{done}/messages"),
        json!({"text": "hello"}),
    )
    .await?
    .ok()?;
    anna.post_empty(&format!("/api/v1/chats/{done}/finish"))
        .await?
        .ok()?;
    ch.post(
        "/api/v1/channel/messages",
        json!({"external_id": "o1", "sender": {"id": "open", "name": "Client open"}, "text": "hi"}),
    )
    .await?
    .ok()?;
    let verdict = run_script(
        "section.mjs",
        &[
            ("BASE", server.base.as_str()),
            ("ADMIN_PASSWORD", ferrydesk_tests::ADMIN_PASSWORD),
        ],
    )
    .await?;
    assert!(verdict.starts_with("PASS"), "{verdict}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn admin_screens_in_chromium() -> Result<()> {
    if !browser_available()? {
        return Ok(());
    }
    let (_db, server) = setup!(Backend::Sqlite);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let verdict = run_script(
        "admin.mjs",
        &[
            ("BASE", server.base.as_str()),
            ("KEY", fx.widget_key.as_str()),
            ("PASSWORD", ferrydesk_tests::PASSWORD),
            ("ADMIN_PASSWORD", ferrydesk_tests::ADMIN_PASSWORD),
        ],
    )
    .await?;
    assert!(verdict.starts_with("PASS"), "{verdict}");
    Ok(())
}

/// Admin → Plugins (enabled plugins listed, settings form generated from the manifest's schema
/// saved) and a chat's Actions menu running the "Create case" process, in Chromium.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn plugins_in_chromium() -> Result<()> {
    if !browser_available()? {
        return Ok(());
    }
    let (_db, server) = setup!(Backend::Sqlite);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    for name in ["create-case", "greeting"] {
        crate::plugins::install(&fx.admin, name).await?;
        fx.admin
            .post(&format!("/api/v1/plugins/{name}/enable"), json!({}))
            .await?
            .ok()?;
    }
    let anna = &fx.operators[0];
    anna.set_status("active").await?;
    let m = fx
        .inbound("p1", "paula", "My parcel arrived broken")
        .await?;
    let chat = m["chat_id"].as_str().unwrap_or_default().to_owned();
    anna.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;
    let verdict = run_script(
        "plugins.mjs",
        &[
            ("BASE", server.base.as_str()),
            ("ADMIN_USER", "admin"),
            ("ADMIN_PASS", ferrydesk_tests::ADMIN_PASSWORD),
            ("OP_USER", "op0"),
            ("OP_PASS", ferrydesk_tests::PASSWORD),
            ("CHAT_ID", chat.as_str()),
        ],
    )
    .await?;
    assert!(verdict.starts_with("PASS"), "{verdict}");
    Ok(())
}

/// Duplicate contacts in Chromium: a Telegram client and a widget visitor with the same phone
/// written two ways; the operator finds the duplicate from the chat's contact card, merges it
/// keeping the visitor's name, and the merged contact's old page redirects to the master.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicates_in_chromium() -> Result<()> {
    if !browser_available()? {
        return Ok(());
    }
    let (db, server) = setup!(Backend::Sqlite);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let op = &fx.operators[0];
    op.set_status("active").await?;
    // A Telegram client, through the Telegram connector plugin on a fake Bot API.
    let tg = ferrydesk_tests::fakes::FakeTelegram::start(crate::plugins::TOKEN).await?;
    let chat = crate::plugins::telegram_client_chat(&fx, &db, &tg, "Hello").await?;
    op.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;
    let visitor = ferrydesk_tests::Visitor::new(&server.base, &fx.widget_key).await?;
    let sent = visitor.send("Hi").await?;
    let widget_chat = sent["chat_id"].as_str().unwrap_or_default().to_owned();
    let contact_of = |v: serde_json::Value| {
        v["chat"]["contact_id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let master = contact_of(op.get(&format!("/api/v1/chats/{chat}")).await?.ok()?);
    let merged = contact_of(
        fx.admin
            .get(&format!("/api/v1/chats/{widget_chat}"))
            .await?
            .ok()?,
    );
    assert!(!master.is_empty() && !merged.is_empty() && master != merged);
    op.put(
        &format!("/api/v1/contacts/{master}"),
        json!({"name": "Ivan Petrov", "phone": "+7 912 345-67-89"}),
    )
    .await?
    .ok()?;
    op.put(
        &format!("/api/v1/contacts/{merged}"),
        json!({"name": "Maria Petrova", "phone": "8 912 345 67 89"}),
    )
    .await?
    .ok()?;
    let verdict = run_script(
        "duplicates.mjs",
        &[
            ("BASE", server.base.as_str()),
            ("OP_USER", "op0"),
            ("OP_PASS", ferrydesk_tests::PASSWORD),
            ("CHAT_ID", chat.as_str()),
            ("OTHER_NAME", "Maria Petrova"),
            ("MERGED_ID", merged.as_str()),
            ("MASTER_ID", master.as_str()),
        ],
    )
    .await?;
    assert!(verdict.starts_with("PASS"), "{verdict}");
    Ok(())
}

/// Bulk duplicate review in Chromium: the admin enables the "Similar name" rule in Admin →
/// Duplicate rules, runs the search over all contacts from Chats section → Duplicates, dismisses
/// the «Иванов Иван» / "Ivan Ivanov" group (not "Ivan Petrov") and merges the same-phone pair,
/// whose group then shows as resolved.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn duplicate_review_in_chromium() -> Result<()> {
    if !browser_available()? {
        return Ok(());
    }
    let (_db, server) = setup!(Backend::Sqlite);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let op = &fx.operators[0];
    op.set_status("active").await?;
    let mut ids = Vec::new();
    for (ext, sender, name) in [
        ("r-1", "s1", "Иванов Иван"),
        ("r-2", "s2", "Ivan Ivanov"),
        ("r-3", "s3", "Ivan Petrov"),
        ("r-4", "s4", "Maria Petrova"),
        ("r-5", "s5", "M. P."),
    ] {
        let m = fx.inbound_from(ext, sender, name, "hi").await?;
        let chat = m["chat_id"].as_str().unwrap_or_default().to_owned();
        // Finished chats: two contacts with chats in progress on one channel cannot merge.
        op.accept_and_finish(&chat).await?;
        ids.push(m["contact_id"].as_str().unwrap_or_default().to_owned());
    }
    for (id, name, phone) in [
        (&ids[3], "Maria Petrova", "+7 912 000-11-22"),
        (&ids[4], "M. P.", "8 (912) 000 11 22"),
    ] {
        fx.admin.set_contact_phone(id, name, phone).await?;
    }
    let verdict = run_script(
        "duplicate-review.mjs",
        &[
            ("BASE", server.base.as_str()),
            ("ADMIN_USER", "admin"),
            ("ADMIN_PASS", ferrydesk_tests::ADMIN_PASSWORD),
            ("RU_ID", ids[0].as_str()),
            ("EN_ID", ids[1].as_str()),
            ("PETROV_ID", ids[2].as_str()),
            ("P1_ID", ids[3].as_str()),
            ("P2_ID", ids[4].as_str()),
        ],
    )
    .await?;
    assert!(verdict.starts_with("PASS"), "{verdict}");
    Ok(())
}

/// One service task running the create-case plugin step, tried once: with the plugin disabled
/// it ends in an incident. With a diagram, so the admin's instance page can draw it.
const PREPARE_BPMN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:bpmndi="http://www.omg.org/spec/BPMN/20100524/DI" xmlns:dc="http://www.omg.org/spec/DD/20100524/DC" xmlns:di="http://www.omg.org/spec/DD/20100524/DI" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="Definitions_prepare" targetNamespace="http://bpmn.io/schema/bpmn">
  <bpmn:process id="browser-prepare" name="Prepare a case" isExecutable="true">
    <bpmn:startEvent id="start" />
    <bpmn:serviceTask id="work" name="Read the chat">
      <bpmn:extensionElements><zeebe:taskDefinition type="plugin:create-case/create-case" retries="1" /></bpmn:extensionElements>
    </bpmn:serviceTask>
    <bpmn:endEvent id="end" />
    <bpmn:sequenceFlow id="f1" sourceRef="start" targetRef="work" />
    <bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="end" />
  </bpmn:process>
  <bpmndi:BPMNDiagram id="Diagram_prepare">
    <bpmndi:BPMNPlane id="Plane_prepare" bpmnElement="browser-prepare">
      <bpmndi:BPMNShape id="start_di" bpmnElement="start"><dc:Bounds x="152" y="102" width="36" height="36" /></bpmndi:BPMNShape>
      <bpmndi:BPMNShape id="work_di" bpmnElement="work"><dc:Bounds x="240" y="80" width="100" height="80" /></bpmndi:BPMNShape>
      <bpmndi:BPMNShape id="end_di" bpmnElement="end"><dc:Bounds x="392" y="102" width="36" height="36" /></bpmndi:BPMNShape>
      <bpmndi:BPMNEdge id="f1_di" bpmnElement="f1"><di:waypoint x="188" y="120" /><di:waypoint x="240" y="120" /></bpmndi:BPMNEdge>
      <bpmndi:BPMNEdge id="f2_di" bpmnElement="f2"><di:waypoint x="340" y="120" /><di:waypoint x="392" y="120" /></bpmndi:BPMNEdge>
    </bpmndi:BPMNPlane>
  </bpmndi:BPMNDiagram>
</bpmn:definitions>"#;

/// Processes in Chromium: "Create case" from a chat's Actions menu, the case page and the
/// contact's timeline; a callback task completed through its form in the task list; the
/// admin's process screens (a refused deployment, the chat Actions menu, an instance's
/// diagram) and retrying an incident until its instance completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn processes_in_chromium() -> Result<()> {
    if !browser_available()? {
        return Ok(());
    }
    let (_db, server) = setup!(Backend::Sqlite);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    crate::plugins::install(&fx.admin, "create-case").await?;
    fx.admin
        .post("/api/v1/plugins/create-case/enable", json!({}))
        .await?
        .ok()?;
    let op = &fx.operators[0];
    op.set_status("active").await?;
    let m = fx
        .inbound("p1", "paula", "My parcel arrived broken")
        .await?;
    let chat = m["chat_id"].as_str().unwrap_or_default().to_owned();
    op.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;

    // "Call back" joins the menu; op0 starts it from the chat, so the task is theirs.
    let mut entries = fx
        .admin
        .get("/api/v1/settings/chat-actions")
        .await?
        .ok()?
        .as_array()
        .cloned()
        .unwrap_or_default();
    entries.push(json!({"caption": "Call back", "kind": "process", "target": "callback"}));
    fx.admin
        .put("/api/v1/settings/chat-actions", json!(entries))
        .await?
        .ok()?;
    let run = op
        .post(
            &format!("/api/v1/chats/{chat}/processes/callback"),
            json!({"variables": {}}),
        )
        .await?
        .ok()?;
    let instance = run["instance_id"].as_str().unwrap_or_default().to_owned();

    // An incident: the plugin behind the only task is disabled, so its one attempt fails.
    fx.admin
        .post_empty("/api/v1/plugins/create-case/disable")
        .await?
        .ok()?;
    fx.admin
        .raw(
            reqwest::Method::POST,
            "/api/v1/processes",
            "application/xml",
            PREPARE_BPMN.as_bytes().to_vec(),
        )
        .await?
        .ok()?;
    let started = fx
        .admin
        .post(
            "/api/v1/processes/browser-prepare/instances",
            json!({"chat_id": chat, "variables": {}}),
        )
        .await?
        .ok()?;
    let failing = started["id"].as_str().unwrap_or_default().to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let list = fx.admin.get("/api/v1/incidents").await?.ok()?;
        if list
            .as_array()
            .into_iter()
            .flatten()
            .any(|i| i["instance_id"] == failing.as_str())
        {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            bail!("no incident for instance {failing}: {list}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Fixed: the admin's Retry in the browser lets the instance finish.
    fx.admin
        .post("/api/v1/plugins/create-case/enable", json!({}))
        .await?
        .ok()?;

    let verdict = run_script(
        "processes.mjs",
        &[
            ("BASE", server.base.as_str()),
            ("ADMIN_USER", "admin"),
            ("ADMIN_PASS", ferrydesk_tests::ADMIN_PASSWORD),
            ("OP_USER", "op0"),
            ("OP_PASS", ferrydesk_tests::PASSWORD),
            ("OP_NAME", "Operator 0"),
            ("CONTACT_NAME", "Client paula"),
            ("TASK_NAME", "Call the client back"),
            ("CHAT_ID", chat.as_str()),
            ("INSTANCE_ID", instance.as_str()),
            ("INCIDENT_INSTANCE_ID", failing.as_str()),
        ],
    )
    .await?;
    assert!(verdict.starts_with("PASS"), "{verdict}");
    Ok(())
}
