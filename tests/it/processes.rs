//! The process engine against the real server: "Create case" from a chat, user tasks with
//! forms, boundary timers and message catches, deploy and versions, incidents and retries,
//! a crash in the middle of a service task, two nodes sharing a thousand instances.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Result, bail};
use axum::Router;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use ferrydesk_tests::{Api, Backend, Fixture, FixtureOptions, Server};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::plugins::install;
use crate::{on_both_backends, setup};

on_both_backends!(
    create_case_from_a_chat,
    user_task_timer_and_reply,
    deploy_versions_and_rejections,
    incident_and_retry,
    crash_during_a_service_task,
    restart_releases_its_own_jobs,
    buffered_messages,
    buffered_chat_signal
);

/// Polls `f` until it returns `Some`, for up to `secs`.
pub(crate) async fn until<T, F, Fut>(secs: u64, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await? {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A new client chat accepted by `op`; returns the chat id.
async fn accepted_chat(
    fx: &Fixture,
    op: &Api,
    ext: &str,
    sender: &str,
    text: &str,
) -> Result<String> {
    let m = fx.inbound(ext, sender, text).await?;
    let chat = m["chat_id"].as_str().unwrap_or_default().to_owned();
    op.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;
    Ok(chat)
}

async fn enable(admin: &Api, plugin: &str, grant: Value) -> Result<()> {
    install(
        admin,
        if plugin == "evil" {
            "testing/evil"
        } else {
            plugin
        },
    )
    .await?;
    admin
        .post(&format!("/api/v1/plugins/{plugin}/enable"), grant)
        .await?
        .ok()?;
    Ok(())
}

async fn instance(api: &Api, id: &str) -> Result<Value> {
    api.get(&format!("/api/v1/process-instances/{id}"))
        .await?
        .ok()
}

/// Deploys a BPMN file as `admin`.
pub(crate) async fn deploy(admin: &Api, xml: &str) -> Result<ferrydesk_tests::Resp> {
    admin
        .raw(
            reqwest::Method::POST,
            "/api/v1/processes",
            "application/xml",
            xml.as_bytes().to_vec(),
        )
        .await
}

async fn create_case_from_a_chat(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    enable(&fx.admin, "create-case", json!({})).await?;
    let (anna, boris) = (&fx.operators[0], &fx.operators[1]);
    anna.set_status("active").await?;
    let me = anna.get("/api/v1/auth/me").await?.ok()?;
    let chat = accepted_chat(&fx, anna, "c-1", "carl", "My parcel is late\nOrder 42").await?;
    anna.post(
        &format!("/api/v1/chats/{chat}/messages"),
        json!({"text": "Sorry to hear that, let me check"}),
    )
    .await?
    .ok()?;

    // The default menu offers the process, not the plugin step behind it.
    let menu = anna
        .get(&format!("/api/v1/chats/{chat}/actions"))
        .await?
        .ok()?;
    let entries: Vec<(String, String)> = menu
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["kind"].as_str().unwrap_or("").to_owned(),
                a["process"]
                    .as_str()
                    .or(a["plugin"].as_str())
                    .unwrap_or("")
                    .to_owned(),
            )
        })
        .collect();
    assert!(
        entries.contains(&("process".into(), "create-case".into())),
        "{menu}"
    );
    assert!(
        !entries
            .iter()
            .any(|(k, p)| k == "plugin" && p == "create-case"),
        "{menu}"
    );
    // Boris cannot read anna's chat: no menu, no process.
    let r = boris
        .post(
            &format!("/api/v1/chats/{chat}/processes/create-case"),
            json!({}),
        )
        .await?;
    assert_eq!(r.status, 404, "{}", r.text);
    // A process that is not in the menu cannot be started from the chat.
    let r = anna
        .post(
            &format!("/api/v1/chats/{chat}/processes/callback"),
            json!({}),
        )
        .await?;
    assert_eq!(r.status, 404, "{}", r.text);

    let run = anna
        .post(
            &format!("/api/v1/chats/{chat}/processes/create-case"),
            json!({}),
        )
        .await?
        .ok()?;
    assert_eq!(run["state"], "completed", "{run}");
    let case = &run["case"];
    assert_eq!(case["subject"], "My parcel is late");
    assert_eq!(
        case["description"],
        "Client: My parcel is late\nOrder 42\nOperator: Sorry to hear that, let me check"
    );
    assert_eq!(case["responsible_id"], me["user"]["id"]);
    assert_eq!(case["contact_name"], "Client carl");
    assert_eq!(case["channel_id"].as_str(), Some(fx.api_channel.as_str()));
    assert_eq!(case["chat_id"].as_str(), Some(chat.as_str()));
    assert_eq!(case["priority"], "normal");
    assert_eq!(case["status"], "new");
    let case_id = case["id"].as_str().unwrap_or_default().to_owned();
    let number = case["number"].as_i64().unwrap_or_default();
    assert!(number >= 1);

    // The chat links to the case and says so.
    let view = anna.get(&format!("/api/v1/chats/{chat}")).await?.ok()?;
    assert_eq!(view["chat"]["case_id"].as_str(), Some(case_id.as_str()));
    assert!(
        view["messages"].as_array().into_iter().flatten().any(|m| {
            m["direction"] == "system"
                && m["body"] == format!("Case #{number} created: My parcel is late")
        }),
        "{view}"
    );
    // The contact's timeline shows it.
    let contact = case["contact_id"].as_str().unwrap_or_default();
    let c = anna
        .get(&format!("/api/v1/contacts/{contact}"))
        .await?
        .ok()?;
    assert!(
        c["timeline"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|e| e["type"] == "case" && e["case"]["id"] == case["id"]),
        "{c}"
    );
    // The instance history: both tasks once, and the instance completed once.
    let inst = instance(&fx.admin, run["instance_id"].as_str().unwrap_or("")).await?;
    let completed: Vec<&str> = inst["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["event"] == "completed")
        .filter_map(|h| h["element"].as_str())
        .collect();
    assert_eq!(
        completed,
        [
            "StartEvent_chat",
            "Task_prepare",
            "Task_create",
            "End_created",
            ""
        ]
    );
    assert_eq!(db.scalar_i64("SELECT COUNT(*) FROM process_jobs").await?, 0);

    // Cases: listed, searched, edited (validation names the field).
    let list = anna.get("/api/v1/cases?q=parcel").await?.ok()?;
    assert_eq!(list["total"], 1);
    let r = anna
        .patch(
            &format!("/api/v1/cases/{case_id}"),
            json!({"subject": "  "}),
        )
        .await?;
    assert_eq!((r.status, r.body["field"].as_str()), (422, Some("subject")));
    let r = anna
        .patch(
            &format!("/api/v1/cases/{case_id}"),
            json!({"status": "resolved", "priority": "high"}),
        )
        .await?
        .ok()?;
    assert_eq!(r["status"], "resolved");
    assert!(r["closed_at"].is_string());
    let r = anna
        .post(
            "/api/v1/cases",
            json!({"subject": "x", "contact_id": "nope"}),
        )
        .await?;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (422, Some("contact_id"))
    );

    // S22: a chat started from the case (after the first one finished) is linked to it.
    anna.post_empty(&format!("/api/v1/chats/{chat}/finish"))
        .await?
        .ok()?;
    let started = anna
        .post(
            &format!("/api/v1/cases/{case_id}/chats"),
            json!({"text": "Your parcel is on its way"}),
        )
        .await?;
    assert_eq!(started.status, 201, "{}", started.text);
    assert_eq!(started.body["case_id"].as_str(), Some(case_id.as_str()));
    let cv = anna.get(&format!("/api/v1/cases/{case_id}")).await?.ok()?;
    assert_eq!(cv["chats"].as_array().map(Vec::len), Some(2), "{cv}");
    Ok(())
}

async fn user_task_timer_and_reply(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let (anna, boris) = (&fx.operators[0], &fx.operators[1]);
    anna.set_status("active").await?;
    // The admin puts "Call back" into the menu, for this queue only.
    let mut entries = fx
        .admin
        .get("/api/v1/settings/chat-actions")
        .await?
        .ok()?
        .as_array()
        .cloned()
        .unwrap_or_default();
    entries.push(json!({"caption": "Call back", "kind": "process", "target": "callback", "queues": [fx.queue]}));
    fx.admin
        .put("/api/v1/settings/chat-actions", json!(entries))
        .await?
        .ok()?;
    let chat = accepted_chat(&fx, anna, "t-1", "tina", "Please call me back").await?;
    let run = anna
        .post(
            &format!("/api/v1/chats/{chat}/processes/callback"),
            json!({"variables": {"escalateAfter": "PT1S"}}),
        )
        .await?
        .ok()?;
    assert_eq!(run["state"], "active");
    let id = run["instance_id"].as_str().unwrap_or_default().to_owned();

    // The task is anna's (assignee = the operator who started it); boris does not see it.
    let tasks = anna.get("/api/v1/tasks").await?.ok()?;
    let task = tasks
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["instance_id"] == id.as_str())
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("no task in anna's list: {tasks}"))?;
    assert_eq!(task["name"], "Call the client back");
    assert_eq!(
        task["form"]["properties"]["outcome"]["enum"],
        json!(["reached", "no_answer"])
    );
    let tid = task["id"].as_str().unwrap_or_default().to_owned();
    let theirs = boris.get("/api/v1/tasks").await?.ok()?;
    assert!(
        !theirs
            .as_array()
            .into_iter()
            .flatten()
            .any(|t| t["id"] == tid.as_str()),
        "{theirs}"
    );
    assert_eq!(
        boris
            .post(
                &format!("/api/v1/tasks/{tid}/complete"),
                json!({"variables": {"outcome": "reached"}})
            )
            .await?
            .status,
        404
    );

    // The non-interrupting boundary timer escalates after a second; the task stays open.
    until(20, "the overdue note", || async {
        let v = anna.get(&format!("/api/v1/chats/{chat}")).await?.ok()?;
        Ok(v["messages"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| {
                m["body"]
                    .as_str()
                    .unwrap_or("")
                    .contains("callback is overdue")
            })
            .then_some(()))
    })
    .await?;
    let i = instance(&fx.admin, &id).await?;
    assert!(
        i["active"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["element"] == "Task_call" && a["waiting_for"] == "user_task"),
        "{i}"
    );

    // The form is checked against its schema, naming the pointer.
    let r = anna
        .post(
            &format!("/api/v1/tasks/{tid}/complete"),
            json!({"variables": {"outcome": "maybe"}}),
        )
        .await?;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (422, Some("/outcome")),
        "{}",
        r.text
    );
    anna.post(
        &format!("/api/v1/tasks/{tid}/complete"),
        json!({"variables": {"outcome": "no_answer", "notes": "voicemail"}}),
    )
    .await?
    .ok()?;
    // Completing again is refused.
    let r = anna
        .post(
            &format!("/api/v1/tasks/{tid}/complete"),
            json!({"variables": {"outcome": "reached"}}),
        )
        .await?;
    assert_eq!(r.status, 409, "{}", r.text);
    let i = instance(&fx.admin, &id).await?;
    assert_eq!(i["instance"]["state"], "active");
    assert!(
        i["active"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|a| a["element"] == "Catch_reply" && a["waiting_for"] == "message"),
        "{i}"
    );
    // Another chat's client writing does not move it; this client's reply does.
    fx.inbound("t-x", "someone-else", "hello").await?;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        instance(&fx.admin, &id).await?["instance"]["state"],
        "active"
    );
    fx.inbound("t-2", "tina", "I am back").await?;
    until(20, "the instance to complete on the reply", || async {
        let i = instance(&fx.admin, &id).await?;
        Ok((i["instance"]["state"] == "completed").then_some(i))
    })
    .await?;
    let vars = instance(&fx.admin, &id).await?["variables"].clone();
    assert_eq!(vars["notes"], "voicemail");
    assert_eq!(vars["text"], "I am back");
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT COUNT(*) FROM process_subscriptions WHERE instance_id = '{id}'"
        ))
        .await?,
        0
    );
    Ok(())
}

const WITH_TASK: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d">
  <bpmn:process id="KEY" name="NAME" isExecutable="true">
    <bpmn:startEvent id="s" />
    <bpmn:serviceTask id="work"><bpmn:extensionElements><zeebe:taskDefinition type="TYPE" retries="RETRIES" /><zeebe:ioMapping>INPUTS</zeebe:ioMapping></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:endEvent id="e" />
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="work" />
    <bpmn:sequenceFlow id="f2" sourceRef="work" targetRef="e" />
  </bpmn:process>
</bpmn:definitions>"#;

fn one_task(key: &str, name: &str, task_type: &str, retries: u32, inputs: &str) -> String {
    WITH_TASK
        .replace("KEY", key)
        .replace("NAME", name)
        .replace("TYPE", task_type)
        .replace("RETRIES", &retries.to_string())
        .replace("INPUTS", inputs)
}

async fn deploy_versions_and_rejections(b: Backend) -> Result<()> {
    let (_db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    // The first-party processes were deployed at start.
    let defs = fx.admin.get("/api/v1/processes").await?.ok()?;
    let keys: Vec<&str> = defs
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|d| d["key"].as_str())
        .collect();
    assert!(
        keys.contains(&"create-case") && keys.contains(&"callback"),
        "{defs}"
    );

    // Only admins deploy.
    let xml = one_task("notes", "Notes", "chat.note", 3, "");
    let r = fx.operators[0]
        .raw(
            reqwest::Method::POST,
            "/api/v1/processes",
            "application/xml",
            xml.clone().into_bytes(),
        )
        .await?;
    assert_eq!(r.status, 403);
    // An unsupported element is refused with its id; nothing is stored.
    let bad = xml.replace(
        r#"<bpmn:endEvent id="e" />"#,
        r#"<bpmn:endEvent id="e" /><bpmn:scriptTask id="Script_1" />"#,
    );
    let r = deploy(&fx.admin, &bad).await?;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["field"], "bpmn:Script_1");
    assert!(
        r.body["message"]
            .as_str()
            .unwrap_or("")
            .contains("scriptTask is not supported"),
        "{}",
        r.text
    );
    let r = deploy(&fx.admin, "<not-bpmn/>").await?;
    assert_eq!(r.status, 422);
    let r = deploy(
        &fx.admin,
        &xml.replace(r#"targetRef="e""#, r#"targetRef="nowhere""#),
    )
    .await?;
    assert_eq!(r.status, 422);
    assert_eq!(r.body["field"], "bpmn:f2");
    assert!(
        !fx.admin
            .get("/api/v1/processes")
            .await?
            .text
            .contains("\"notes\""),
        "a rejected file deploys nothing"
    );
    // Versions: unchanged content is not a new version; changed content is.
    let v1 = deploy(&fx.admin, &xml).await?;
    assert_eq!(v1.status, 201, "{}", v1.text);
    assert_eq!(v1.body[0]["version"], 1);
    let same = deploy(&fx.admin, &xml).await?;
    assert_eq!(
        (
            same.body[0]["version"].as_i64(),
            same.body[0]["created"].as_bool()
        ),
        (Some(1), Some(false))
    );
    let v2 = deploy(&fx.admin, &xml.replace("Notes", "Notes v2")).await?;
    assert_eq!(v2.body[0]["version"], 2);

    // A timer start event with a cycle starts an instance per occurrence, then stops.
    let ticking = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="d">
  <bpmn:process id="ticking" isExecutable="true">
    <bpmn:startEvent id="tick"><bpmn:timerEventDefinition><bpmn:timeCycle>R2/PT1S</bpmn:timeCycle></bpmn:timerEventDefinition></bpmn:startEvent>
    <bpmn:endEvent id="e" />
    <bpmn:sequenceFlow id="f" sourceRef="tick" targetRef="e" />
  </bpmn:process>
</bpmn:definitions>"#;
    deploy(&fx.admin, ticking).await?.ok()?;
    let count = || async {
        let l = fx
            .admin
            .get("/api/v1/process-instances?process=ticking")
            .await?
            .ok()?;
        Ok::<_, anyhow::Error>(l.as_array().map(Vec::len).unwrap_or(0))
    };
    until(20, "two timer-started instances", || async {
        Ok((count().await? == 2).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(count().await?, 2, "R2: two occurrences, no more");

    // A non-interrupting boundary timer with a cycle reminds twice while the task waits.
    let reminding = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" id="d">
  <bpmn:process id="reminding" isExecutable="true">
    <bpmn:startEvent id="s" />
    <bpmn:userTask id="review" name="Review" />
    <bpmn:boundaryEvent id="remind" attachedToRef="review" cancelActivity="false"><bpmn:timerEventDefinition><bpmn:timeCycle>R2/PT1S</bpmn:timeCycle></bpmn:timerEventDefinition></bpmn:boundaryEvent>
    <bpmn:endEvent id="reminded" />
    <bpmn:endEvent id="e" />
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="review" />
    <bpmn:sequenceFlow id="f2" sourceRef="review" targetRef="e" />
    <bpmn:sequenceFlow id="f3" sourceRef="remind" targetRef="reminded" />
  </bpmn:process>
</bpmn:definitions>"#;
    deploy(&fx.admin, reminding).await?.ok()?;
    let started = fx
        .admin
        .post("/api/v1/processes/reminding/instances", json!({}))
        .await?
        .ok()?;
    let id = started["id"].as_str().unwrap_or_default().to_owned();
    let reminders = || async {
        let i = instance(&fx.admin, &id).await?;
        let n = i["history"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| h["element"] == "remind" && h["event"] == "completed")
            .count();
        Ok::<_, anyhow::Error>((n, i))
    };
    until(20, "two reminders", || async {
        Ok((reminders().await?.0 == 2).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (n, i) = reminders().await?;
    assert_eq!(n, 2, "R2: two reminders, no more");
    assert_eq!(
        i["instance"]["state"], "active",
        "the task still waits: {i}"
    );
    Ok(())
}

async fn incident_and_retry(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let anna = &fx.operators[0];
    anna.set_status("active").await?;
    install(&fx.admin, "create-case").await?; // installed, not enabled: the task keeps failing
    let chat = accepted_chat(&fx, anna, "i-1", "ivan", "Where is my refund?").await?;
    let xml = one_task(
        "prepare",
        "Prepare",
        "plugin:create-case/create-case",
        2,
        "",
    );
    deploy(&fx.admin, &xml).await?.ok()?;
    // Running instances keep their version: start on v1, then deploy v2.
    let started = fx
        .admin
        .post(
            "/api/v1/processes/prepare/instances",
            json!({"chat_id": chat}),
        )
        .await?
        .ok()?;
    let id = started["id"].as_str().unwrap_or_default().to_owned();
    deploy(&fx.admin, &xml.replace("Prepare", "Prepare v2"))
        .await?
        .ok()?;
    let incident = until(30, "an incident", || async {
        let list = fx.admin.get("/api/v1/incidents").await?.ok()?;
        Ok(list
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["instance_id"] == id.as_str())
            .cloned())
    })
    .await?;
    assert_eq!(incident["element"], "work");
    assert!(
        incident["message"]
            .as_str()
            .unwrap_or("")
            .contains("create-case` is disabled"),
        "{incident}"
    );
    let i = instance(&fx.admin, &id).await?;
    assert_eq!(i["version"], 1);
    assert_eq!(i["instance"]["incidents"], 1);
    let failed = i["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["event"] == "failed" || h["event"] == "incident")
        .count();
    assert_eq!(
        failed, 2,
        "two attempts (retries=2), then the incident: {i}"
    );
    // Operators may not retry; the admin fixes the cause and retries.
    let iid = incident["id"].as_str().unwrap_or_default();
    assert_eq!(
        anna.post(&format!("/api/v1/incidents/{iid}/retry"), json!({}))
            .await?
            .status,
        403
    );
    fx.admin
        .post("/api/v1/plugins/create-case/enable", json!({}))
        .await?
        .ok()?;
    let r = fx
        .admin
        .post(
            &format!("/api/v1/incidents/{iid}/retry"),
            json!({"retries": 1}),
        )
        .await?;
    assert_eq!(r.status, 204, "{}", r.text);
    until(30, "the retried instance to complete", || async {
        let i = instance(&fx.admin, &id).await?;
        Ok((i["instance"]["state"] == "completed").then_some(()))
    })
    .await?;
    let i = instance(&fx.admin, &id).await?;
    assert_eq!(i["variables"]["subject"], "Where is my refund?");
    assert_eq!(i["instance"]["incidents"], 0);
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM process_incidents WHERE resolved_at IS NULL")
            .await?,
        0
    );
    Ok(())
}

/// An HTTP sink that records each request's `idempotency-key` and holds the first one forever.
#[derive(Clone, Default)]
struct Sink {
    keys: Arc<Mutex<Vec<String>>>,
    first: Arc<tokio::sync::Notify>,
}

impl Sink {
    async fn start(&self) -> Result<String> {
        async fn hit(State(s): State<Sink>, headers: HeaderMap) -> &'static str {
            let key = headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_owned();
            let first = {
                let mut k = s.keys.lock().expect("sink");
                k.push(key);
                k.len() == 1
            };
            if first {
                // The test kills the server now, while the job is in flight.
                s.first.notify_one();
                std::future::pending::<()>().await;
            }
            "ok"
        }
        let app = Router::new()
            .route("/hook", get(hit))
            .with_state(self.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(format!("http://{addr}/hook"))
    }
    fn keys(&self) -> Vec<String> {
        self.keys.lock().expect("sink").clone()
    }
}

async fn crash_during_a_service_task(b: Backend) -> Result<()> {
    // Short leases, so a dead worker's job is taken over quickly.
    crash_and_restart(b, "3", 30).await
}

/// The node restarts at once with the default 60 s lease: it releases the job its previous
/// run held at start (its identity is `data_dir/node-id`), so the instance completes long
/// before the lease would have run out (issue 15, row 6).
async fn restart_releases_its_own_jobs(b: Backend) -> Result<()> {
    crash_and_restart(b, "60", 15).await
}

async fn crash_and_restart(b: Backend, lease_secs: &str, complete_within: u64) -> Result<()> {
    let Some(db) = ferrydesk_tests::Db::new(b).await? else {
        return Ok(());
    };
    db.add_admin().await?;
    let mut server = Server::start_with(&db, &[("FERRYDESK_JOB_LEASE_SECS", lease_secs)]).await?;
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    enable(
        &fx.admin,
        "evil",
        json!({"grant": {"hosts": ["http://127.0.0.1:*"], "private": true}}),
    )
    .await?;
    let sink = Sink::default();
    let url = sink.start().await?;
    let xml = one_task(
        "hook",
        "Call the hook",
        "plugin:evil/fetch",
        3,
        r#"<zeebe:input source="=url" target="url" />"#,
    );
    deploy(&fx.admin, &xml).await?.ok()?;
    let id = fx
        .admin
        .post(
            "/api/v1/processes/hook/instances",
            json!({"variables": {"url": url}}),
        )
        .await?
        .ok()?["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    tokio::time::timeout(Duration::from_secs(20), sink.first.notified()).await?;
    // Killed between the service task's start and its completion.
    server.kill().await;
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM process_jobs WHERE state = 'locked'")
            .await?,
        1
    );
    server.restart().await?;
    let admin = server
        .login("admin", ferrydesk_tests::ADMIN_PASSWORD)
        .await?;
    let restarted = std::time::Instant::now();
    until(
        complete_within,
        "the instance to complete after the restart",
        || async {
            let i = instance(&admin, &id).await?;
            Ok((i["instance"]["state"] == "completed").then_some(()))
        },
    )
    .await?;
    eprintln!(
        "lease {lease_secs} s: completed {:?} after the restart",
        restarted.elapsed()
    );
    let keys = sink.keys();
    assert_eq!(keys.len(), 2, "ran again once: {keys:?}");
    assert_eq!(keys[0], keys[1], "the same idempotency key on the rerun");
    assert_eq!(keys[0], format!("{id}:1"));
    // Completed exactly once.
    let i = instance(&admin, &id).await?;
    let count = |ev: &str, el: &str| {
        i["history"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|h| h["event"] == ev && h["element"] == el)
            .count()
    };
    assert_eq!(
        (count("completed", "work"), count("completed", "")),
        (1, 1),
        "{i}"
    );
    assert_eq!(db.scalar_i64("SELECT COUNT(*) FROM process_jobs").await?, 0);
    Ok(())
}

/// A PostgreSQL database with an admin, two server processes on it, and a fixture (no
/// operators) on the first; `None` when PostgreSQL is unavailable and not required.
async fn two_nodes() -> Result<Option<(ferrydesk_tests::Db, Server, Server, Fixture)>> {
    let Some(db) = ferrydesk_tests::Db::new(Backend::Postgres).await? else {
        return Ok(None);
    };
    db.add_admin().await?;
    let a = Server::start(&db).await?;
    let b = Server::start(&db).await?;
    let fx = Fixture::new(
        &a,
        FixtureOptions {
            operators: 0,
            ..Default::default()
        },
    )
    .await?;
    Ok(Some((db, a, b, fx)))
}

/// Two server processes on one PostgreSQL run 1,000 instances together: every service job runs,
/// every instance completes once, and both nodes did work.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_nodes_thousand_instances_postgres() -> Result<()> {
    let Some((db, _a, b, fx)) = two_nodes().await? else {
        return Ok(());
    };
    enable(&fx.admin, "evil", json!({})).await?;
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d">
  <bpmn:process id="fanout" isExecutable="true">
    <bpmn:startEvent id="s" />
    <bpmn:serviceTask id="echo"><bpmn:extensionElements><zeebe:taskDefinition type="plugin:evil/echo" /><zeebe:ioMapping><zeebe:input source="=n" target="n" /><zeebe:output source="=n * 2" target="doubled" /></zeebe:ioMapping></bpmn:extensionElements></bpmn:serviceTask>
    <bpmn:exclusiveGateway id="gw" default="odd" />
    <bpmn:endEvent id="e_even" />
    <bpmn:endEvent id="e_odd" />
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="echo" />
    <bpmn:sequenceFlow id="f2" sourceRef="echo" targetRef="gw" />
    <bpmn:sequenceFlow id="even" sourceRef="gw" targetRef="e_even"><bpmn:conditionExpression>=doubled &lt; 1000</bpmn:conditionExpression></bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="odd" sourceRef="gw" targetRef="e_odd" />
  </bpmn:process>
</bpmn:definitions>"#;
    deploy(&fx.admin, xml).await?.ok()?;
    let admin_b = b.login("admin", ferrydesk_tests::ADMIN_PASSWORD).await?;
    let apis = [fx.admin.clone(), admin_b.clone()];
    let n = 1000;
    let mut started = futures::stream::iter(0..n)
        .map(|i: usize| {
            let api = apis[i % 2].clone();
            async move {
                api.post(
                    "/api/v1/processes/fanout/instances",
                    json!({"variables": {"n": i}}),
                )
                .await?
                .ok()
                .map(|v| v["id"].as_str().unwrap_or_default().to_owned())
            }
        })
        .buffer_unordered(16);
    let mut ids = Vec::with_capacity(n);
    while let Some(id) = started.next().await {
        ids.push(id?);
    }
    assert_eq!(ids.len(), n);
    until(300, "1,000 completed instances", || async {
        let done = db
            .scalar_i64("SELECT COUNT(*) FROM process_instances WHERE process_key = 'fanout' AND state = 'completed'")
            .await?;
        Ok((done == n as i64).then_some(()))
    })
    .await?;
    assert_eq!(db.scalar_i64("SELECT COUNT(*) FROM process_jobs").await?, 0);
    // Each job ran exactly once (no lease expired in this run) and each instance ended once.
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM plugin_runs WHERE plugin_id = 'evil' AND ok = 1")
            .await?,
        n as i64
    );
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM process_history e JOIN process_instances i ON i.id = e.instance_id WHERE i.process_key = 'fanout' AND e.events LIKE '%[\"\",\"completed\",null]%'").await?,
        n as i64
    );
    let even = db
        .scalar_i64("SELECT COUNT(*) FROM process_history WHERE events LIKE '%[\"e_even\",%'")
        .await?;
    assert_eq!(even, (n / 2) as i64, "n * 2 < 1000 for the first half");
    // Both nodes ran jobs.
    let mut per_node = HashMap::new();
    for (name, api) in [("a", &fx.admin), ("b", &admin_b)] {
        let m = api.get("/metrics").await?.text;
        let ran: f64 = m
            .lines()
            .find(|l| l.starts_with("ferrydesk_process_jobs_completed_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0);
        per_node.insert(name, ran);
    }
    assert!(per_node.values().all(|v| *v > 0.0), "{per_node:?}");
    assert_eq!(per_node.values().sum::<f64>(), n as f64, "{per_node:?}");
    Ok(())
}

/// A message published with a time to live before the instance reaches its catch is kept and
/// taken when the catch opens; without one, or once expired, it is not.
async fn buffered_messages(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let paying = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d">
  <bpmn:message id="m" name="paid"><bpmn:extensionElements><zeebe:subscription correlationKey="=orderId" /></bpmn:extensionElements></bpmn:message>
  <bpmn:process id="paying" isExecutable="true">
    <bpmn:startEvent id="s" />
    <bpmn:intermediateCatchEvent id="wait"><bpmn:timerEventDefinition><bpmn:timeDuration>PT1S</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:intermediateCatchEvent>
    <bpmn:intermediateCatchEvent id="pay"><bpmn:messageEventDefinition messageRef="m" /></bpmn:intermediateCatchEvent>
    <bpmn:endEvent id="e" />
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="wait" />
    <bpmn:sequenceFlow id="f2" sourceRef="wait" targetRef="pay" />
    <bpmn:sequenceFlow id="f3" sourceRef="pay" targetRef="e" />
  </bpmn:process>
</bpmn:definitions>"#;
    deploy(&fx.admin, paying).await?.ok()?;
    let mut ids = Vec::new();
    for order in ["o-1", "o-2", "o-3"] {
        let started = fx
            .admin
            .post(
                "/api/v1/processes/paying/instances",
                json!({"variables": {"orderId": order}}),
            )
            .await?
            .ok()?;
        ids.push(started["id"].as_str().unwrap_or_default().to_owned());
    }
    // Bad input names the field and keeps nothing.
    let bad = fx
        .admin
        .post(
            "/api/v1/messages",
            json!({"name": "paid", "correlation_key": "o-1", "time_to_live_ms": -1}),
        )
        .await?;
    assert_eq!(bad.status, 422, "{}", bad.text);
    assert_eq!(bad.body["field"], "time_to_live_ms", "{}", bad.text);
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM process_messages")
            .await?,
        0
    );
    // All three instances sit on their timer: nothing takes the messages now.
    let publish = |key: &'static str, ttl: i64, amount: i64| {
        let admin = fx.admin.clone();
        async move {
            admin
                .post(
                    "/api/v1/messages",
                    json!({"name": "paid", "correlation_key": key, "variables": {"amount": amount},
                           "time_to_live_ms": ttl}),
                )
                .await?
                .ok()
        }
    };
    let kept = publish("o-1", 60_000, 42).await?;
    assert_eq!(kept["instances"], json!([]), "{kept}");
    assert!(kept["buffered"].is_string(), "{kept}");
    let dropped = publish("o-2", 0, 7).await?;
    assert_eq!(
        (dropped["instances"].clone(), dropped["buffered"].clone()),
        (json!([]), Value::Null)
    );
    let expiring = publish("o-3", 300, 9).await?;
    assert!(expiring["buffered"].is_string(), "{expiring}");

    // After the timer, o-1's catch takes the buffered message and the instance completes with
    // its variables.
    let done = until(20, "o-1 completes", || async {
        let i = instance(&fx.admin, &ids[0]).await?;
        Ok((i["instance"]["state"] == "completed").then_some(i))
    })
    .await?;
    assert_eq!(done["variables"]["amount"], 42, "{done}");
    // o-2 (no time to live) and o-3 (expired) wait at the catch.
    until(20, "o-2 and o-3 wait at the catch", || async {
        let mut waiting = 0;
        for id in &ids[1..] {
            let i = instance(&fx.admin, id).await?;
            let at_catch = i["history"]
                .as_array()
                .into_iter()
                .flatten()
                .any(|h| h["element"] == "wait" && h["event"] == "completed");
            if at_catch && i["instance"]["state"] == "active" {
                waiting += 1;
            }
        }
        Ok((waiting == 2).then_some(()))
    })
    .await?;
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM process_messages WHERE correlation_key = 'o-1'")
            .await?,
        0,
        "the buffered message was taken once"
    );
    // Now o-2 is waiting: publishing continues it at once.
    let now = publish("o-2", 0, 7).await?;
    assert_eq!(now["instances"], json!([ids[1].clone()]), "{now}");
    assert_eq!(now["buffered"], Value::Null);
    let i = instance(&fx.admin, &ids[2]).await?;
    assert_eq!(
        i["instance"]["state"], "active",
        "the expired message was not taken: {i}"
    );

    // A kept message the process cannot take (its gateway has no path for it) stays kept; the
    // timer that opened the catch still fires, and a good message later continues it.
    let strict = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d">
  <bpmn:message id="m" name="paid-strict"><bpmn:extensionElements><zeebe:subscription correlationKey="=orderId" /></bpmn:extensionElements></bpmn:message>
  <bpmn:process id="strict" isExecutable="true">
    <bpmn:startEvent id="s" />
    <bpmn:intermediateCatchEvent id="wait"><bpmn:timerEventDefinition><bpmn:timeDuration>PT1S</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:intermediateCatchEvent>
    <bpmn:intermediateCatchEvent id="pay"><bpmn:messageEventDefinition messageRef="m" /></bpmn:intermediateCatchEvent>
    <bpmn:exclusiveGateway id="gw" />
    <bpmn:endEvent id="e" />
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="wait" />
    <bpmn:sequenceFlow id="f2" sourceRef="wait" targetRef="pay" />
    <bpmn:sequenceFlow id="f3" sourceRef="pay" targetRef="gw" />
    <bpmn:sequenceFlow id="f4" sourceRef="gw" targetRef="e"><bpmn:conditionExpression xsi:type="bpmn:tFormalExpression">=amount &gt; 0</bpmn:conditionExpression></bpmn:sequenceFlow>
  </bpmn:process>
</bpmn:definitions>"#;
    deploy(&fx.admin, strict).await?.ok()?;
    let started = fx
        .admin
        .post(
            "/api/v1/processes/strict/instances",
            json!({"variables": {"orderId": "o-9"}}),
        )
        .await?
        .ok()?;
    let sid = started["id"].as_str().unwrap_or_default().to_owned();
    let bad = fx
        .admin
        .post(
            "/api/v1/messages",
            json!({"name": "paid-strict", "correlation_key": "o-9", "variables": {"amount": -1},
                   "time_to_live_ms": 60_000}),
        )
        .await?
        .ok()?;
    assert!(bad["buffered"].is_string(), "{bad}");
    until(20, "the timer fires and the catch opens", || async {
        let i = instance(&fx.admin, &sid).await?;
        let fired = i["history"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|h| h["element"] == "wait" && h["event"] == "completed");
        Ok(fired.then_some(()))
    })
    .await?;
    let i = instance(&fx.admin, &sid).await?;
    assert_eq!(i["instance"]["state"], "active", "{i}");
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM process_messages WHERE correlation_key = 'o-9'")
            .await?,
        1,
        "the refused message stays kept"
    );
    let good = fx
        .admin
        .post(
            "/api/v1/messages",
            json!({"name": "paid-strict", "correlation_key": "o-9", "variables": {"amount": 5}}),
        )
        .await?
        .ok()?;
    assert_eq!(good["instances"], json!([sid.clone()]), "{good}");
    let i = instance(&fx.admin, &sid).await?;
    assert_eq!(i["instance"]["state"], "completed", "{i}");
    Ok(())
}

/// With `FERRYDESK_CHAT_MESSAGE_TTL_SECS`, a client's message that arrives while the process is
/// not yet at its catch is kept, and the catch takes it when it opens; a message from before
/// the process started is not taken.
async fn buffered_chat_signal(b: Backend) -> Result<()> {
    let Some(db) = ferrydesk_tests::Db::new(b).await? else {
        return Ok(());
    };
    db.add_admin().await?;
    let server = Server::start_with(&db, &[("FERRYDESK_CHAT_MESSAGE_TTL_SECS", "60")]).await?;
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let anna = &fx.operators[0];
    anna.set_status("active").await?;
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d">
  <bpmn:message id="m" name="chat.message.received"><bpmn:extensionElements><zeebe:subscription correlationKey="=chatId" /></bpmn:extensionElements></bpmn:message>
  <bpmn:process id="asking" isExecutable="true">
    <bpmn:startEvent id="s" />
    <bpmn:intermediateCatchEvent id="ask"><bpmn:timerEventDefinition><bpmn:timeDuration>PT1S</bpmn:timeDuration></bpmn:timerEventDefinition></bpmn:intermediateCatchEvent>
    <bpmn:receiveTask id="answer" messageRef="m" />
    <bpmn:endEvent id="e" />
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="ask" />
    <bpmn:sequenceFlow id="f2" sourceRef="ask" targetRef="answer" />
    <bpmn:sequenceFlow id="f3" sourceRef="answer" targetRef="e" />
  </bpmn:process>
</bpmn:definitions>"#;
    deploy(&fx.admin, xml).await?.ok()?;
    let chat = accepted_chat(&fx, anna, "q-1", "quinn", "Hello").await?;
    let started = fx
        .admin
        .post(
            "/api/v1/processes/asking/instances",
            json!({"chat_id": chat, "variables": {"chatId": chat}}),
        )
        .await?
        .ok()?;
    let id = started["id"].as_str().unwrap_or_default().to_owned();
    // The client answers while the process still waits on its timer.
    fx.inbound("q-2", "quinn", "My number is 12345").await?;
    let done = until(20, "the receive task takes the kept message", || async {
        let i = instance(&fx.admin, &id).await?;
        Ok((i["instance"]["state"] == "completed").then_some(i))
    })
    .await?;
    assert_eq!(done["variables"]["text"], "My number is 12345", "{done}");
    let answered = done["history"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|h| h["element"] == "answer" && h["event"] == "completed")
        .count();
    assert_eq!(answered, 1, "{done}");
    // The answer was taken; "Hello", from before the process started, is still kept (and
    // was not taken for an answer).
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT COUNT(*) FROM process_messages WHERE correlation_key = '{chat}'"
        ))
        .await?,
        1
    );
    Ok(())
}

/// Two nodes on one PostgreSQL: instances open their message catch on node A while node B
/// publishes the matching messages (with a time to live) at the same moment. Whichever comes
/// first, each message is either correlated at once or buffered and taken: every instance
/// completes, and no message is left over.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn buffered_messages_two_nodes_postgres() -> Result<()> {
    let Some((db, _a, b, fx)) = two_nodes().await? else {
        return Ok(());
    };
    let admin_b = b.login("admin", ferrydesk_tests::ADMIN_PASSWORD).await?;
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d">
  <bpmn:message id="m" name="go"><bpmn:extensionElements><zeebe:subscription correlationKey="=key" /></bpmn:extensionElements></bpmn:message>
  <bpmn:process id="racing" isExecutable="true">
    <bpmn:startEvent id="s" />
    <bpmn:intermediateCatchEvent id="go"><bpmn:messageEventDefinition messageRef="m" /></bpmn:intermediateCatchEvent>
    <bpmn:endEvent id="e" />
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="go" />
    <bpmn:sequenceFlow id="f2" sourceRef="go" targetRef="e" />
  </bpmn:process>
</bpmn:definitions>"#;
    deploy(&fx.admin, xml).await?.ok()?;
    const N: usize = 60;
    let starts = futures::future::join_all((0..N).map(|k| {
        let admin = fx.admin.clone();
        async move {
            admin
                .post(
                    "/api/v1/processes/racing/instances",
                    json!({"variables": {"key": format!("k-{k}")}}),
                )
                .await?
                .ok()
        }
    }));
    let publishes = futures::future::join_all((0..N).map(|k| {
        let admin = admin_b.clone();
        async move {
            admin
                .post(
                    "/api/v1/messages",
                    json!({"name": "go", "correlation_key": format!("k-{k}"),
                           "time_to_live_ms": 60_000}),
                )
                .await?
                .ok()
        }
    }));
    let (started, published) = tokio::join!(starts, publishes);
    for r in started.into_iter().chain(published) {
        r?;
    }
    until(30, "every instance completes", || async {
        let done = db
            .scalar_i64(
                "SELECT COUNT(*) FROM process_instances WHERE process_key = 'racing' \
                 AND state = 'completed'",
            )
            .await?;
        Ok((done == N as i64).then_some(()))
    })
    .await?;
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM process_messages")
            .await?,
        0,
        "every buffered message was taken"
    );
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM process_subscriptions")
            .await?,
        0
    );
    Ok(())
}
