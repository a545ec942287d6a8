//! Rows 1–4 of issue 14 against the real server: what an admin's process cannot do. A loop
//! without a wait state is refused at deploy naming its elements; a walk that fails at run
//! time (the step budget, an expression error) becomes an incident, also when an anonymous
//! widget message starts it; deep FEEL and deep XML are refused at deploy; overflowing date
//! arithmetic is an incident, not a timer firing at once. The server answers throughout.

use std::time::Duration;

use anyhow::{Result, bail};
use ferrydesk_tests::{Api, Backend, Fixture, FixtureOptions, Server, Visitor};
use serde_json::{Value, json};

use crate::processes::{deploy, until};
use crate::{on_both_backends, setup};

on_both_backends!(
    loop_refused_and_runtime_failure_is_an_incident,
    widget_message_start_that_fails_is_an_incident,
    deep_feel_and_deep_xml_are_refused,
    overflowing_date_arithmetic_is_an_incident,
    a_process_calling_itself_is_bounded,
    a_message_whose_catch_fails_is_an_incident,
    a_parallel_fork_bomb_of_calls_is_one_incident,
    called_processes_share_the_step_budget,
    kept_messages_are_taken_in_a_loop_within_the_budget,
    a_deep_chain_of_called_instances_completes_without_recursion
);

/// `/healthz` answers 200 within a second.
async fn alive(server: &Server) -> Result<()> {
    let r = tokio::time::timeout(Duration::from_secs(1), server.api().get("/healthz")).await;
    match r {
        Ok(Ok(r)) if r.status == 200 => Ok(()),
        Ok(Ok(r)) => bail!("/healthz answered {}", r.status),
        Ok(Err(e)) => bail!("/healthz failed: {e}"),
        Err(_) => bail!("/healthz did not answer within 1 s"),
    }
}

fn definitions(process: &str, start: &str, body: &str) -> String {
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d">
  <bpmn:message id="m" name="chat.message.received"><bpmn:extensionElements><zeebe:subscription correlationKey="=chatId" /></bpmn:extensionElements></bpmn:message>
  <bpmn:process id="{process}" isExecutable="true">
    {start}
    {body}
  </bpmn:process>
</bpmn:definitions>"#
    )
}

const NONE_START: &str = r#"<bpmn:startEvent id="s" />"#;
const MESSAGE_START: &str =
    r#"<bpmn:startEvent id="s"><bpmn:messageEventDefinition messageRef="m" /></bpmn:startEvent>"#;

/// `stages` parallel splits doubling the tokens: no loop, but 2^stages tokens in one command.
fn fan_out(stages: usize) -> String {
    let mut body = String::from(r#"<bpmn:sequenceFlow id="f0" sourceRef="s" targetRef="p0" />"#);
    for k in 0..stages {
        let next = if k + 1 == stages {
            "e".to_owned()
        } else {
            format!("p{}", k + 1)
        };
        body.push_str(&format!(
            r#"
    <bpmn:parallelGateway id="p{k}" />
    <bpmn:exclusiveGateway id="x{k}" default="n{k}" />
    <bpmn:sequenceFlow id="a{k}" sourceRef="p{k}" targetRef="x{k}" />
    <bpmn:sequenceFlow id="b{k}" sourceRef="p{k}" targetRef="x{k}" />
    <bpmn:sequenceFlow id="n{k}" sourceRef="x{k}" targetRef="{next}" />"#
        ));
    }
    body.push_str(r#"<bpmn:endEvent id="e" />"#);
    body
}

/// The open incident of an instance, waiting for it.
async fn incident_of(admin: &Api, instance: &str) -> Result<Value> {
    until(20, "an incident", || async {
        let list = admin.get("/api/v1/incidents").await?.ok()?;
        Ok(list
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| i["instance_id"] == instance)
            .cloned())
    })
    .await
}

async fn loop_refused_and_runtime_failure_is_an_incident(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    // The issue's process: `gw1 -default-> gw2 -default-> gw1`.
    let looping = definitions(
        "looping",
        NONE_START,
        r#"<bpmn:exclusiveGateway id="gw1" default="f2" />
    <bpmn:exclusiveGateway id="gw2" default="f3" />
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="gw1" />
    <bpmn:sequenceFlow id="f2" sourceRef="gw1" targetRef="gw2" />
    <bpmn:sequenceFlow id="f3" sourceRef="gw2" targetRef="gw1" />"#,
    );
    let r = deploy(&fx.admin, &looping).await?;
    assert_eq!(r.status, 422, "{}", r.text);
    let msg = r.body["message"].as_str().unwrap_or_default();
    assert!(
        msg.contains("gw1 → gw2 → gw1") && msg.contains("no wait state"),
        "{}",
        r.text
    );
    assert_eq!(r.body["field"], "bpmn:gw1", "{}", r.text);
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM process_definitions WHERE process_key = 'looping'")
            .await?,
        0
    );
    alive(&server).await?;

    // A walk past the step budget (a huge fan-out, legitimate but too large for one command):
    // the instance is created and waits in an incident naming the budget; nothing of the
    // walk is kept.
    deploy(&fx.admin, &definitions("fanning", NONE_START, &fan_out(14)))
        .await?
        .ok()?;
    let started = tokio::time::timeout(
        Duration::from_secs(10),
        fx.admin.post(
            "/api/v1/processes/fanning/instances",
            json!({"variables": {"k": 1}}),
        ),
    )
    .await??;
    let started = started.ok()?;
    let id = started["id"].as_str().unwrap_or_default().to_owned();
    let inc = incident_of(&fx.admin, &id).await?;
    assert!(
        inc["message"]
            .as_str()
            .unwrap_or_default()
            .contains("without reaching a wait state"),
        "{inc}"
    );
    let i = fx
        .admin
        .get(&format!("/api/v1/process-instances/{id}"))
        .await?
        .ok()?;
    assert_eq!(i["instance"]["state"], "active", "{i}");
    assert_eq!(i["instance"]["incidents"], 1, "{i}");
    assert_eq!(i["variables"]["k"], 1, "{i}");
    // Retrying fails the same way: the incident stays, the server carries on.
    let iid = inc["id"].as_str().unwrap_or_default();
    let r = fx
        .admin
        .post(
            &format!("/api/v1/incidents/{iid}/retry"),
            json!({"retries": 1}),
        )
        .await?;
    assert_eq!(r.status, 409, "{}", r.text);
    incident_of(&fx.admin, &id).await?;
    alive(&server).await?;
    Ok(())
}

async fn widget_message_start_that_fails_is_an_incident(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    // Started by every client message; its walk exceeds the step budget.
    deploy(
        &fx.admin,
        &definitions("greeting", MESSAGE_START, &fan_out(14)),
    )
    .await?
    .ok()?;
    let visitor = Visitor::new(&server.base, &fx.widget_key).await?;
    visitor.send("Hello").await?;
    let inc = until(30, "an incident on the started instance", || async {
        let list = fx.admin.get("/api/v1/incidents").await?.ok()?;
        Ok(list
            .as_array()
            .into_iter()
            .flatten()
            .find(|i| {
                i["message"]
                    .as_str()
                    .unwrap_or_default()
                    .contains("without reaching a wait state")
            })
            .cloned())
    })
    .await?;
    let id = inc["instance_id"].as_str().unwrap_or_default().to_owned();
    let i = fx
        .admin
        .get(&format!("/api/v1/process-instances/{id}"))
        .await?
        .ok()?;
    assert_eq!(i["instance"]["process_key"], "greeting", "{i}");
    alive(&server).await?;
    // The signal was consumed once (not left to come back when its lease runs out), and the
    // server keeps serving visitors: the next message starts the next instance.
    until(10, "the signal to be consumed", || async {
        Ok((db
            .scalar_i64("SELECT COUNT(*) FROM process_signals")
            .await?
            == 0)
            .then_some(()))
    })
    .await?;
    visitor.send("Still there?").await?;
    until(30, "a second incident", || async {
        let list = fx.admin.get("/api/v1/incidents").await?.ok()?;
        Ok((list.as_array().map(Vec::len).unwrap_or(0) >= 2).then_some(()))
    })
    .await?;
    alive(&server).await?;
    Ok(())
}

async fn deep_feel_and_deep_xml_are_refused(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let cond = format!("={}x{}", "(".repeat(1000), ")".repeat(1000));
    let xml = definitions(
        "deep",
        NONE_START,
        &format!(
            r#"<bpmn:exclusiveGateway id="gw" default="f3" />
    <bpmn:endEvent id="e" />
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="gw" />
    <bpmn:sequenceFlow id="f2" sourceRef="gw" targetRef="e"><bpmn:conditionExpression>{cond}</bpmn:conditionExpression></bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="f3" sourceRef="gw" targetRef="e" />"#
        ),
    );
    let r = deploy(&fx.admin, &xml).await?;
    assert_eq!(r.status, 422, "{}", r.text);
    assert_eq!(r.body["field"], "bpmn:f2", "{}", r.text);
    assert!(r.text.contains("nests deeper than 64 levels"), "{}", r.text);
    alive(&server).await?;

    let deep = format!(
        r#"<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL">{}{}</bpmn:definitions>"#,
        "<bpmn:a>".repeat(65_000),
        "</bpmn:a>".repeat(65_000)
    );
    let r = deploy(&fx.admin, &deep).await?;
    assert_eq!(r.status, 422, "{}", r.text);
    assert!(r.text.contains("nest deeper than 128 levels"), "{}", r.text);
    alive(&server).await?;
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM process_definitions WHERE process_key = 'deep'")
            .await?,
        0
    );
    Ok(())
}

async fn overflowing_date_arithmetic_is_an_incident(b: Backend) -> Result<()> {
    let (_db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    for (key, when) in [
        (
            "far",
            r#"<bpmn:timeDate>=now() + duration("P999999999999D")</bpmn:timeDate>"#,
        ),
        (
            "years",
            r#"<bpmn:timeDate>=duration("P999999999999Y") + now()</bpmn:timeDate>"#,
        ),
        (
            "beyond",
            r#"<bpmn:timeDate>=now() + duration("P3000000D")</bpmn:timeDate>"#,
        ),
    ] {
        let xml = definitions(
            key,
            NONE_START,
            &format!(
                r#"<bpmn:intermediateCatchEvent id="wait"><bpmn:timerEventDefinition>{when}</bpmn:timerEventDefinition></bpmn:intermediateCatchEvent>
    <bpmn:endEvent id="e" />
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="wait" />
    <bpmn:sequenceFlow id="f2" sourceRef="wait" targetRef="e" />"#
            ),
        );
        deploy(&fx.admin, &xml).await?.ok()?;
        let started = fx
            .admin
            .post(&format!("/api/v1/processes/{key}/instances"), json!({}))
            .await?
            .ok()?;
        let id = started["id"].as_str().unwrap_or_default().to_owned();
        let inc = incident_of(&fx.admin, &id).await?;
        assert_eq!(inc["element"], "wait", "{inc}");
        let m = inc["message"].as_str().unwrap_or_default();
        assert!(
            m.contains("20,000 years")
                || m.contains("years and months")
                || m.contains("leaves the years"),
            "{inc}"
        );
        // The timer did not fire: the instance waits in its incident, nothing completed.
        let i = fx
            .admin
            .get(&format!("/api/v1/process-instances/{id}"))
            .await?
            .ok()?;
        assert_eq!(i["instance"]["state"], "active", "{i}");
        let fired = i["history"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|h| h["element"] == "wait" && h["event"] == "completed");
        assert!(!fired, "{i}");
    }
    alive(&server).await?;
    Ok(())
}

/// Call activities start their child in the same command: a process calling itself would
/// nest without end. The chain stops at the limit with an incident on the deepest call.
async fn a_process_calling_itself_is_bounded(b: Backend) -> Result<()> {
    let (_db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let xml = definitions(
        "recursing",
        NONE_START,
        r#"<bpmn:callActivity id="again"><bpmn:extensionElements><zeebe:calledElement processId="recursing" /></bpmn:extensionElements></bpmn:callActivity>
    <bpmn:endEvent id="e" />
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="again" />
    <bpmn:sequenceFlow id="f2" sourceRef="again" targetRef="e" />"#,
    );
    deploy(&fx.admin, &xml).await?.ok()?;
    let started = tokio::time::timeout(
        Duration::from_secs(20),
        fx.admin
            .post("/api/v1/processes/recursing/instances", json!({})),
    )
    .await??;
    started.ok()?;
    let list = fx.admin.get("/api/v1/incidents").await?.ok()?;
    let deepest: Vec<&Value> = list
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| {
            i["message"]
                .as_str()
                .unwrap_or_default()
                .contains("nest deeper than 16 levels")
        })
        .collect();
    assert_eq!(deepest.len(), 1, "{list}");
    assert_eq!(deepest[0]["element"], "again");
    let all = fx
        .admin
        .get("/api/v1/process-instances?process=recursing")
        .await?
        .ok()?;
    let n = all.as_array().map(Vec::len).unwrap_or(0);
    assert!((1..=17).contains(&n), "{n} instances: {all}");
    alive(&server).await?;
    Ok(())
}

/// A client's message that a waiting instance cannot take (its output mapping overflows) is
/// an incident on that instance keeping the message, not a signal dropped in the log.
async fn a_message_whose_catch_fails_is_an_incident(b: Backend) -> Result<()> {
    let (_db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let anna = &fx.operators[0];
    anna.set_status("active").await?;
    let xml = definitions(
        "answering",
        NONE_START,
        r#"<bpmn:intermediateCatchEvent id="answer">
      <bpmn:extensionElements><zeebe:ioMapping><zeebe:output source="=now() + duration(text)" target="due" /></zeebe:ioMapping></bpmn:extensionElements>
      <bpmn:messageEventDefinition messageRef="m" />
    </bpmn:intermediateCatchEvent>
    <bpmn:exclusiveGateway id="gw" default="f4" />
    <bpmn:endEvent id="e" />
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="answer" />
    <bpmn:sequenceFlow id="f2" sourceRef="answer" targetRef="gw" />
    <bpmn:sequenceFlow id="f3" sourceRef="gw" targetRef="answer"><bpmn:conditionExpression>=due = null</bpmn:conditionExpression></bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="f4" sourceRef="gw" targetRef="e" />"#,
    );
    // Messages that are no duration (`due` is null) loop back to the catch: a loop through a
    // wait state, which deploys.
    deploy(&fx.admin, &xml).await?.ok()?;
    let m = fx.inbound("a-1", "alma", "Hello").await?;
    let chat = m["chat_id"].as_str().unwrap_or_default().to_owned();
    anna.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;
    let started = fx
        .admin
        .post(
            "/api/v1/processes/answering/instances",
            json!({"chat_id": chat, "variables": {"chatId": chat}}),
        )
        .await?
        .ok()?;
    let id = started["id"].as_str().unwrap_or_default().to_owned();
    fx.inbound("a-2", "alma", "P999999999999D").await?;
    let inc = match incident_of(&fx.admin, &id).await {
        Ok(inc) => inc,
        Err(e) => {
            let i = fx
                .admin
                .get(&format!("/api/v1/process-instances/{id}"))
                .await?
                .text;
            bail!("{e}: {i}");
        }
    };
    assert_eq!(inc["element"], "answer", "{inc}");
    assert!(
        inc["message"]
            .as_str()
            .unwrap_or_default()
            .contains("longer than 20,000 years"),
        "{inc}"
    );
    let i = fx
        .admin
        .get(&format!("/api/v1/process-instances/{id}"))
        .await?
        .ok()?;
    assert_eq!(i["instance"]["state"], "active", "{i}");
    // `due` is still the null of the first ("Hello") pass: nothing of the failed walk kept.
    assert!(
        i["variables"]["due"].is_null(),
        "nothing of the failed walk kept: {i}"
    );
    // Retrying applies the kept message again: it fails again, and the incident stays.
    let iid = inc["id"].as_str().unwrap_or_default();
    let r = fx
        .admin
        .post(
            &format!("/api/v1/incidents/{iid}/retry"),
            json!({"retries": 1}),
        )
        .await?;
    assert_eq!(r.status, 409, "{}", r.text);
    alive(&server).await?;
    Ok(())
}

/// A process whose parallel split of `k` flows each calls the process itself.
fn fork_bomb(k: usize) -> String {
    let mut body = String::from(
        r#"<bpmn:parallelGateway id="p" />
    <bpmn:callActivity id="again"><bpmn:extensionElements><zeebe:calledElement processId="bomb" /></bpmn:extensionElements></bpmn:callActivity>
    <bpmn:endEvent id="e" />
    <bpmn:sequenceFlow id="f0" sourceRef="s" targetRef="p" />
    <bpmn:sequenceFlow id="fe" sourceRef="again" targetRef="e" />"#,
    );
    for i in 0..k {
        body.push_str(&format!(
            r#"
    <bpmn:sequenceFlow id="c{i}" sourceRef="p" targetRef="again" />"#
        ));
    }
    definitions("bomb", NONE_START, &body)
}

/// Issue 14 review, HIGH: called processes had a depth limit but no total. A parallel split of
/// k flows into a call activity calling its own process started k^16 instances in one
/// command and one transaction (2^17 for k = 2; k = 4 never ends). Now one command starts at
/// most 1,000 called instances: past that the whole start is rolled back and the instance
/// waits in one incident at its start; the server answers throughout.
async fn a_parallel_fork_bomb_of_calls_is_one_incident(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    for k in [2, 4] {
        deploy(&fx.admin, &fork_bomb(k)).await?.ok()?;
        let t = std::time::Instant::now();
        let started = tokio::time::timeout(
            Duration::from_secs(30),
            fx.admin.post("/api/v1/processes/bomb/instances", json!({})),
        )
        .await??;
        let started = started.ok()?;
        eprintln!("fork bomb k={k}: the start answered in {:?}", t.elapsed());
        let id = started["id"].as_str().unwrap_or_default().to_owned();
        let inc = incident_of(&fx.admin, &id).await?;
        assert!(
            inc["message"]
                .as_str()
                .unwrap_or_default()
                .contains("more than 1000 called process instances"),
            "{inc}"
        );
        // Nothing of the rolled-back walk stays: one instance per start, no children.
        assert_eq!(
            db.scalar_i64(&format!(
                "SELECT COUNT(*) FROM process_instances WHERE parent_id = '{id}'"
            ))
            .await?,
            0
        );
        alive(&server).await?;
    }
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM process_instances WHERE process_key = 'bomb'")
            .await?,
        2
    );
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM process_incidents")
            .await?,
        2
    );
    Ok(())
}

/// Called processes share one budget of element entries per command: three parallel calls of
/// a child that enters ~4,000 elements each exceed 10,000 together (before: each child had its
/// own 10,000 and the start succeeded with 12,000 entries).
async fn called_processes_share_the_step_budget(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    deploy(&fx.admin, &definitions("wide", NONE_START, &fan_out(10)))
        .await?
        .ok()?;
    // One child alone fits.
    let one = fx
        .admin
        .post("/api/v1/processes/wide/instances", json!({}))
        .await?
        .ok()?;
    let one = one["id"].as_str().unwrap_or_default().to_owned();
    let i = fx
        .admin
        .get(&format!("/api/v1/process-instances/{one}"))
        .await?
        .ok()?;
    assert_eq!(i["instance"]["state"], "completed", "{i}");
    let parent = definitions(
        "thrice",
        NONE_START,
        r#"<bpmn:parallelGateway id="p" />
    <bpmn:callActivity id="call"><bpmn:extensionElements><zeebe:calledElement processId="wide" /></bpmn:extensionElements></bpmn:callActivity>
    <bpmn:endEvent id="e" />
    <bpmn:sequenceFlow id="f0" sourceRef="s" targetRef="p" />
    <bpmn:sequenceFlow id="f1" sourceRef="p" targetRef="call" />
    <bpmn:sequenceFlow id="f2" sourceRef="p" targetRef="call" />
    <bpmn:sequenceFlow id="f3" sourceRef="p" targetRef="call" />
    <bpmn:sequenceFlow id="f4" sourceRef="call" targetRef="e" />"#,
    );
    deploy(&fx.admin, &parent).await?.ok()?;
    let started = fx
        .admin
        .post("/api/v1/processes/thrice/instances", json!({}))
        .await?
        .ok()?;
    let id = started["id"].as_str().unwrap_or_default().to_owned();
    let inc = incident_of(&fx.admin, &id).await?;
    assert!(
        inc["message"]
            .as_str()
            .unwrap_or_default()
            .contains("more than 10000 elements"),
        "{inc}"
    );
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT COUNT(*) FROM process_instances WHERE parent_id = '{id}'"
        ))
        .await?,
        0
    );
    alive(&server).await?;
    Ok(())
}

/// A receive task in a loop: each pass goes through `chain` exclusive gateways and back; the
/// instance ends when the message's `i` equals its `stop`.
fn draining(process: &str, chain: usize) -> String {
    let mut body = String::from(
        r#"<bpmn:receiveTask id="r" messageRef="tick" />
    <bpmn:endEvent id="e" />
    <bpmn:sequenceFlow id="f0" sourceRef="s" targetRef="r" />
    <bpmn:sequenceFlow id="f1" sourceRef="r" targetRef="g0" />"#,
    );
    for k in 0..chain {
        if k + 1 == chain {
            body.push_str(&format!(
                r#"
    <bpmn:exclusiveGateway id="g{k}" default="back" />
    <bpmn:sequenceFlow id="back" sourceRef="g{k}" targetRef="r" />
    <bpmn:sequenceFlow id="out" sourceRef="g{k}" targetRef="e"><bpmn:conditionExpression>=i = stop</bpmn:conditionExpression></bpmn:sequenceFlow>"#
            ));
        } else {
            body.push_str(&format!(
                r#"
    <bpmn:exclusiveGateway id="g{k}" default="h{k}" />
    <bpmn:sequenceFlow id="h{k}" sourceRef="g{k}" targetRef="g{}" />"#,
                k + 1
            ));
        }
    }
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d">
  <bpmn:message id="tick" name="tick"><bpmn:extensionElements><zeebe:subscription correlationKey="=key" /></bpmn:extensionElements></bpmn:message>
  <bpmn:process id="{process}" isExecutable="true">
    {NONE_START}
    {body}
  </bpmn:process>
</bpmn:definitions>"#
    )
}

/// Issue 14 review, MEDIUM: a kept message taken by a new subscription nested one command in
/// the next (command → persist → command), as deep as the number of kept messages. Now the
/// outermost command takes them in a loop, within the command's budget: 300 kept messages
/// are all taken in order by one start; with 50 entries per pass the budget stops after 199
/// passes, and the rest stay kept, each message taken once.
async fn kept_messages_are_taken_in_a_loop_within_the_budget(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    deploy(&fx.admin, &draining("draining", 1)).await?.ok()?;
    for i in 1..=300 {
        fx.admin
            .post(
                "/api/v1/messages",
                json!({"name": "tick", "correlation_key": "k1", "variables": {"i": i},
                       "time_to_live_ms": 600_000}),
            )
            .await?
            .ok()?;
    }
    let t = std::time::Instant::now();
    let started = tokio::time::timeout(
        Duration::from_secs(60),
        fx.admin.post(
            "/api/v1/processes/draining/instances",
            json!({"variables": {"key": "k1", "stop": 300}}),
        ),
    )
    .await??
    .ok()?;
    eprintln!("300 kept messages taken in {:?}", t.elapsed());
    let id = started["id"].as_str().unwrap_or_default().to_owned();
    let i = fx
        .admin
        .get(&format!("/api/v1/process-instances/{id}"))
        .await?
        .ok()?;
    assert_eq!(i["instance"]["state"], "completed", "{}", i["instance"]);
    assert_eq!(i["variables"]["i"], 300);
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM process_messages WHERE correlation_key = 'k1'")
            .await?,
        0
    );
    alive(&server).await?;

    // 300 more for a loop of 50 entries per pass: 1 + 50 × 199 entries fit in 10,000.
    deploy(&fx.admin, &draining("heavy", 49)).await?.ok()?;
    db.exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300) \
         INSERT INTO process_messages (id, name, correlation_key, variables, created_at, \
         expires_at, earlier_only) \
         SELECT 'm' || i, 'tick', 'k2', '{\"i\": ' || i || '}', i, 9999999999999, 0 FROM n",
    )
    .await?;
    let t = std::time::Instant::now();
    let started = tokio::time::timeout(
        Duration::from_secs(60),
        fx.admin.post(
            "/api/v1/processes/heavy/instances",
            json!({"variables": {"key": "k2", "stop": 300}}),
        ),
    )
    .await??
    .ok()?;
    eprintln!("199 heavy passes in {:?}", t.elapsed());
    let id = started["id"].as_str().unwrap_or_default().to_owned();
    let i = fx
        .admin
        .get(&format!("/api/v1/process-instances/{id}"))
        .await?
        .ok()?;
    assert_eq!(i["instance"]["state"], "active", "{}", i["instance"]);
    assert_eq!(i["variables"]["i"], 199, "taken in order, once each");
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM process_messages WHERE correlation_key = 'k2'")
            .await?,
        101
    );
    // The instance still waits at the receive task for the rest.
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT COUNT(*) FROM process_subscriptions WHERE instance_id = '{id}'"
        ))
        .await?,
        1
    );
    alive(&server).await?;
    Ok(())
}

/// A chain of called instances as deep as the command's budget allows, built in one command
/// from kept messages (each takes a message, then calls the process again), that completes all
/// at once when the last message says `stop`: each completion continues its parent. That
/// continuation nested one command per level (command → persist → command) and a deep enough
/// chain overflowed the stack; now the outermost command continues the parents in a loop.
/// Cancelling the root of such a chain terminated one level per nested call and crashed the
/// server too; it is a work-list now.
async fn a_deep_chain_of_called_instances_completes_without_recursion(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d">
  <bpmn:message id="deeper" name="deeper"><bpmn:extensionElements><zeebe:subscription correlationKey="=key" /></bpmn:extensionElements></bpmn:message>
  <bpmn:process id="nest" isExecutable="true">
    <bpmn:startEvent id="s" />
    <bpmn:receiveTask id="r" messageRef="deeper" />
    <bpmn:exclusiveGateway id="x" default="go" />
    <bpmn:callActivity id="call"><bpmn:extensionElements><zeebe:calledElement processId="nest" /></bpmn:extensionElements></bpmn:callActivity>
    <bpmn:endEvent id="e" />
    <bpmn:endEvent id="e2" />
    <bpmn:sequenceFlow id="f1" sourceRef="s" targetRef="r" />
    <bpmn:sequenceFlow id="f2" sourceRef="r" targetRef="x" />
    <bpmn:sequenceFlow id="go" sourceRef="x" targetRef="call" />
    <bpmn:sequenceFlow id="stop" sourceRef="x" targetRef="e"><bpmn:conditionExpression>=stop = true</bpmn:conditionExpression></bpmn:sequenceFlow>
    <bpmn:sequenceFlow id="f3" sourceRef="call" targetRef="e2" />
  </bpmn:process>
</bpmn:definitions>"#;
    deploy(&fx.admin, xml).await?.ok()?;
    // 900 messages that go deeper, then one that stops: 900 levels, 5 entries and one
    // called instance each, within the budget.
    db.exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 901) \
         INSERT INTO process_messages (id, name, correlation_key, variables, created_at, \
         expires_at, earlier_only) \
         SELECT 'd' || i, 'deeper', 'k', CASE WHEN i = 901 THEN '{\"stop\": true}' \
         ELSE '{\"stop\": false}' END, i, 9999999999999, 0 FROM n",
    )
    .await?;
    let t = std::time::Instant::now();
    let started = tokio::time::timeout(
        Duration::from_secs(60),
        fx.admin.post(
            "/api/v1/processes/nest/instances",
            json!({"variables": {"key": "k"}}),
        ),
    )
    .await??
    .ok()?;
    eprintln!("900 nested levels completed in {:?}", t.elapsed());
    let id = started["id"].as_str().unwrap_or_default().to_owned();
    let i = fx
        .admin
        .get(&format!("/api/v1/process-instances/{id}"))
        .await?
        .ok()?;
    assert_eq!(i["instance"]["state"], "completed", "{}", i["instance"]);
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM process_instances WHERE process_key = 'nest' AND state = 'completed'")
            .await?,
        901
    );
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM process_messages")
            .await?,
        0
    );
    alive(&server).await?;

    // The same chain left waiting (no `stop`), then its root cancelled: every level is
    // terminated, in a loop (terminating nested one call per level too).
    db.exec(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 900) \
         INSERT INTO process_messages (id, name, correlation_key, variables, created_at, \
         expires_at, earlier_only) \
         SELECT 'w' || i, 'deeper', 'w', '{\"stop\": false}', i, 9999999999999, 0 FROM n",
    )
    .await?;
    let started = fx
        .admin
        .post(
            "/api/v1/processes/nest/instances",
            json!({"variables": {"key": "w"}}),
        )
        .await?
        .ok()?;
    let root = started["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        db.scalar_i64(
            "SELECT COUNT(*) FROM process_instances WHERE process_key = 'nest' AND state = 'active'"
        )
        .await?,
        901
    );
    let t = std::time::Instant::now();
    let r = tokio::time::timeout(
        Duration::from_secs(60),
        fx.admin
            .post_empty(&format!("/api/v1/process-instances/{root}/cancel")),
    )
    .await??;
    assert_eq!(r.status, 204, "{}", r.text);
    eprintln!("901 nested levels terminated in {:?}", t.elapsed());
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM process_instances WHERE process_key = 'nest' AND state = 'terminated'")
            .await?,
        901
    );
    alive(&server).await?;
    Ok(())
}
