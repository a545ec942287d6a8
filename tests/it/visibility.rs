//! The visibility rule (S10): operator B gets 404 on every surface for operator A's unfinished
//! chat, and A's socket stops receiving the chat after a transfer away from A.

use std::time::Duration;

use anyhow::Result;
use ferrydesk_tests::{Backend, Fixture, FixtureOptions, Visitor};
use serde_json::{Value, json};

use crate::chats::png_bytes;
use crate::{on_both_backends, setup};

on_both_backends!(visibility);

async fn visibility(b: Backend) -> Result<()> {
    let (_db, server) = setup!(b);
    let fx = Fixture::new(
        &server,
        FixtureOptions {
            operators: 3,
            ..Default::default()
        },
    )
    .await?;
    let (a, bop, c) = (&fx.operators[0], &fx.operators[1], &fx.operators[2]);
    a.set_status("active").await?;
    let visitor = Visitor::new(&server.base, &fx.widget_key).await?;
    let sent = visitor.send("private question").await?;
    let chat = sent["chat_id"].as_str().unwrap_or_default().to_owned();
    let contact = sent["contact_id"].as_str().unwrap_or_default().to_owned();
    a.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;
    let f = a
        .upload("/api/v1/files", "a.png", "image/png", png_bytes())
        .await?
        .ok()?;
    let fid = f["id"].as_str().unwrap_or_default().to_owned();
    a.post(
        &format!("/api/v1/chats/{chat}/messages"),
        json!({"text": "secret answer", "files": [fid]}),
    )
    .await?
    .ok()?;
    let tpl = fx
        .admin
        .post(
            "/api/v1/templates",
            json!({"name": "T", "body": "Hi {{contact.name}}"}),
        )
        .await?
        .ok()?;
    let tid = tpl["id"].as_str().unwrap_or_default();

    // Every surface answers 404 for B (no hint that the chat exists).
    let paths_get = [
        format!("/api/v1/chats/{chat}"),
        format!("/api/v1/chats/{chat}/draft"),
        format!("/api/v1/chats/{chat}/routing"),
        format!("/api/v1/files/{fid}"),
        format!("/api/v1/templates?chat_id={chat}"),
    ];
    for p in &paths_get {
        let r = bop.get(p).await?;
        assert_eq!(r.status, 404, "GET {p}: {}", r.text);
    }
    let paths_post = [
        (
            format!("/api/v1/chats/{chat}/messages"),
            json!({"text": "hijack"}),
        ),
        (format!("/api/v1/chats/{chat}/accept"), json!(null)),
        (format!("/api/v1/chats/{chat}/finish"), json!(null)),
        (format!("/api/v1/chats/{chat}/read"), json!(null)),
        (
            format!("/api/v1/chats/{chat}/transfer"),
            json!({"operator": bop.id()}),
        ),
        (
            format!("/api/v1/chats/{chat}/templates/{tid}/render"),
            json!(null),
        ),
    ];
    for (p, body) in &paths_post {
        let r = if body.is_null() {
            bop.post_empty(p).await?
        } else {
            bop.post(p, body.clone()).await?
        };
        assert!(
            r.status == 404 || r.status == 409,
            "POST {p}: {} {}",
            r.status,
            r.text
        );
        assert!(!r.text.contains("secret"), "POST {p} leaked content");
    }
    let draft = bop
        .put(&format!("/api/v1/chats/{chat}/draft"), json!({"text": "x"}))
        .await?;
    assert_eq!(draft.status, 404);
    // Lists and the contact timeline show no content of the chat.
    let list = bop.get("/api/v1/chats").await?.ok()?;
    assert!(
        !list.to_string().contains(&chat),
        "the chats list shows A's chat to B"
    );
    let timeline = bop
        .get(&format!("/api/v1/contacts/{contact}"))
        .await?
        .ok()?;
    assert!(
        !timeline.to_string().contains("secret")
            && !timeline.to_string().contains("private question")
    );
    // Supervisors and admins may read it.
    assert_eq!(
        fx.admin.get(&format!("/api/v1/chats/{chat}")).await?.status,
        200
    );

    // Sockets: A hears the client; after a transfer to C, A hears nothing more, C does.
    let mut a_ws = a.ws().await?;
    let mut b_ws = bop.ws().await?;
    let mut c_ws = c.ws().await?;
    visitor.send("still private").await?;
    a_ws.wait_for("message_created", Duration::from_secs(5), |e| {
        e["message"]["body"] == "still private"
    })
    .await?;
    a.post(
        &format!("/api/v1/chats/{chat}/transfer"),
        json!({"operator": c.id()}),
    )
    .await?
    .ok()?;
    a_ws.wait_for("chat_withdrawn", Duration::from_secs(5), |e| {
        e["chat_id"] == chat.as_str()
    })
    .await?;
    visitor.send("after transfer").await?;
    c_ws.wait_for("message_created", Duration::from_secs(5), |e| {
        e["message"]["body"] == "after transfer"
    })
    .await?;
    let a_events = a_ws.drain(Duration::from_millis(700)).await?;
    assert!(
        !a_events
            .iter()
            .any(|e| e.to_string().contains("after transfer")),
        "A still receives: {a_events:?}"
    );
    let b_events = b_ws.drain(Duration::from_millis(300)).await?;
    assert!(
        !b_events.iter().any(|e| e.to_string().contains("private")),
        "B receives: {b_events:?}"
    );
    // And A's REST access ended too.
    assert_eq!(a.get(&format!("/api/v1/chats/{chat}")).await?.status, 404);
    assert_eq!(c.get(&format!("/api/v1/chats/{chat}")).await?.status, 200);

    // Widget visitors only see their own conversation.
    let other = Visitor::new(&server.base, &fx.widget_key).await?;
    assert_eq!(
        other
            .api
            .get(&format!("/widget/v1/files/{fid}"))
            .await?
            .status,
        404
    );
    assert_eq!(
        other
            .api
            .get("/widget/v1/messages")
            .await?
            .ok()?
            .as_array()
            .map(Vec::len),
        Some(0)
    );
    assert_eq!(
        visitor
            .api
            .get(&format!("/widget/v1/files/{fid}"))
            .await?
            .status,
        200
    );
    Ok(())
}

on_both_backends!(
    case_from_an_unfinished_chat,
    case_edits_and_history,
    widget_after_a_merge
);

/// `/api/v1/…` GET as `api`, the body as text (for "does it contain…" checks).
async fn text_of(api: &ferrydesk_tests::Api, path: &str) -> Result<(u16, String)> {
    let r = api.get(path).await?;
    Ok((r.status, r.text))
}

/// A process started on a chat with one user task for every operator (candidate group
/// `operator`), so only the visibility rule keeps it from others.
const REVIEW_BPMN: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<bpmn:definitions xmlns:bpmn="http://www.omg.org/spec/BPMN/20100524/MODEL" xmlns:zeebe="http://camunda.org/schema/zeebe/1.0" id="d" targetNamespace="x">
  <bpmn:process id="review" name="Review" isExecutable="true">
    <bpmn:startEvent id="Start"><bpmn:outgoing>f1</bpmn:outgoing></bpmn:startEvent>
    <bpmn:userTask id="Task_review" name="Review the chat">
      <bpmn:extensionElements>
        <zeebe:assignmentDefinition candidateGroups="operator" />
      </bpmn:extensionElements>
      <bpmn:incoming>f1</bpmn:incoming><bpmn:outgoing>f2</bpmn:outgoing>
    </bpmn:userTask>
    <bpmn:endEvent id="End"><bpmn:incoming>f2</bpmn:incoming></bpmn:endEvent>
    <bpmn:sequenceFlow id="f1" sourceRef="Start" targetRef="Task_review" />
    <bpmn:sequenceFlow id="f2" sourceRef="Task_review" targetRef="End" />
  </bpmn:process>
</bpmn:definitions>"#;

/// Row 10 of issue 14: Anna creates a case from her unfinished chat (the real "Create case"
/// process and plugin). Boris, an operator who cannot open the chat, reads none of its content
/// on any surface: case list, case search, case view, case history, contact timeline, CSV
/// export, analytics, process instances (variables, history), tasks (forms), plugin actions.
/// Once the chat is finished (completed chats are readable by every operator) he sees the case.
async fn case_from_an_unfinished_chat(b: Backend) -> Result<()> {
    let (_db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    crate::plugins::install(&fx.admin, "create-case").await?;
    fx.admin
        .post("/api/v1/plugins/create-case/enable", json!({}))
        .await?
        .ok()?;
    let (anna, boris) = (&fx.operators[0], &fx.operators[1]);
    anna.set_status("active").await?;
    boris.set_status("active").await?;
    let m = fx.inbound("v-1", "vera", "Parcel secret 7731").await?;
    let chat = m["chat_id"].as_str().unwrap_or_default().to_owned();
    let contact = m["contact_id"].as_str().unwrap_or_default().to_owned();
    anna.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;
    anna.post(
        &format!("/api/v1/chats/{chat}/messages"),
        json!({"text": "Operator reply confidential"}),
    )
    .await?
    .ok()?;
    let run = anna
        .post(
            &format!("/api/v1/chats/{chat}/processes/create-case"),
            json!({}),
        )
        .await?
        .ok()?;
    let case_id = run["case"]["id"].as_str().unwrap_or_default().to_owned();
    let instance = run["instance_id"].as_str().unwrap_or_default().to_owned();
    assert!(
        run["case"]["description"]
            .as_str()
            .is_some_and(|d| d.contains("Parcel secret")),
        "{run}"
    );
    // A process with a task for every operator, on the same chat.
    let r = fx
        .admin
        .raw(
            reqwest::Method::POST,
            "/api/v1/processes",
            "application/xml",
            REVIEW_BPMN.as_bytes().to_vec(),
        )
        .await?;
    assert!((200..300).contains(&r.status), "{}", r.text);
    let started = fx
        .admin
        .post(
            "/api/v1/processes/review/instances",
            json!({"chat_id": chat, "variables": {"note": "Parcel secret again"}}),
        )
        .await?
        .ok()?;
    let review = started["id"].as_str().unwrap_or_default().to_owned();
    let anna_tasks = anna.get("/api/v1/tasks").await?.ok()?;
    let task = anna_tasks
        .as_array()
        .into_iter()
        .flatten()
        .find(|t| t["instance_id"] == review.as_str())
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("anna does not see the review task: {anna_tasks}"))?;
    let tid = task["id"].as_str().unwrap_or_default().to_owned();

    let leaks = |what: &str, status: u16, text: &str| {
        assert!(
            !text.contains("Parcel secret") && !text.contains("confidential"),
            "{what} ({status}) shows the chat's content to Boris: {text}"
        );
    };
    // Lists and search: the case is not there, and the total does not count it.
    for path in [
        "/api/v1/cases".to_owned(),
        "/api/v1/cases?q=parcel".to_owned(),
        format!("/api/v1/cases?contact_id={contact}"),
    ] {
        let r = boris.get(&path).await?;
        assert_eq!(r.status, 200, "{path}: {}", r.text);
        leaks(&path, r.status, &r.text);
        assert_eq!(r.body["total"], 0, "{path}: {}", r.text);
    }
    // The case itself, its history, the start of a chat from it: not found.
    for path in [
        format!("/api/v1/cases/{case_id}"),
        format!("/api/v1/cases/{case_id}/history"),
        format!("/api/v1/process-instances/{instance}"),
        format!("/api/v1/process-instances/{review}"),
        format!("/api/v1/process-instances?chat_id={chat}"),
        format!("/api/v1/tasks/{tid}"),
    ] {
        let (status, text) = text_of(boris, &path).await?;
        assert_eq!(status, 404, "{path}: {text}");
        leaks(&path, status, &text);
    }
    let r = boris
        .post(
            &format!("/api/v1/cases/{case_id}/chats"),
            json!({"text": "hello"}),
        )
        .await?;
    assert_eq!(r.status, 404, "{}", r.text);
    // The contact's timeline, the task list.
    for path in [
        format!("/api/v1/contacts/{contact}"),
        "/api/v1/tasks".into(),
    ] {
        let (status, text) = text_of(boris, &path).await?;
        assert_eq!(status, 200, "{path}: {text}");
        leaks(&path, status, &text);
        assert!(!text.contains(&case_id), "{path} lists the case: {text}");
        assert!(!text.contains(&tid), "{path} lists the task: {text}");
    }
    for path in [
        format!("/api/v1/tasks/{tid}/claim"),
        format!("/api/v1/tasks/{tid}/complete"),
    ] {
        let r = boris.post(&path, json!({})).await?;
        assert_eq!(r.status, 404, "{path}: {}", r.text);
    }
    // Exports and analytics are for supervisors (who read every chat).
    for path in [
        "/api/v1/chats/export.csv",
        "/api/v1/analytics/totals?from=2020-01-01T00:00:00Z&to=2100-01-01T00:00:00Z",
    ] {
        let (status, text) = text_of(boris, path).await?;
        assert_eq!(status, 403, "{path}: {text}");
        leaks(path, status, &text);
    }
    // A plugin reads records as the operator running it: Boris cannot run it on the chat.
    let r = boris
        .post(
            &format!("/api/v1/chats/{chat}/actions/create-case/create-case"),
            json!({}),
        )
        .await?;
    assert_eq!(r.status, 404, "{}", r.text);
    leaks("plugin action", r.status, &r.text);
    // A case cannot be attached to a chat Boris cannot read.
    let r = boris
        .post("/api/v1/cases", json!({"subject": "mine", "chat_id": chat}))
        .await?;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (422, Some("chat_id")),
        "{}",
        r.text
    );

    // Anna and the admin see it all.
    assert_eq!(anna.get("/api/v1/cases?q=parcel").await?.ok()?["total"], 1);
    anna.get(&format!("/api/v1/cases/{case_id}")).await?.ok()?;
    fx.admin
        .get(&format!("/api/v1/process-instances/{instance}"))
        .await?
        .ok()?;

    // Finished chats are readable by every operator, and so is the case made from one.
    anna.post_empty(&format!("/api/v1/chats/{chat}/finish"))
        .await?
        .ok()?;
    assert_eq!(boris.get("/api/v1/cases?q=parcel").await?.ok()?["total"], 1);
    let v = boris.get(&format!("/api/v1/cases/{case_id}")).await?.ok()?;
    assert_eq!(v["case"]["id"], case_id.as_str());
    let tasks = boris.get("/api/v1/tasks").await?.ok()?;
    assert!(tasks.to_string().contains(&tid), "{tasks}");
    Ok(())
}

/// Row 11 of issue 14: who may edit a case, and the case history. Anna is responsible for a
/// case; Boris (operator) may not change it (404 while he cannot read it, 403 once he can);
/// a supervisor may; each change is recorded (actor, field, old, new).
async fn case_edits_and_history(b: Backend) -> Result<()> {
    let (_db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let (anna, boris) = (&fx.operators[0], &fx.operators[1]);
    fx.admin
        .post("/api/v1/users", json!({"username": "sue", "display_name": "Sue", "password": ferrydesk_tests::PASSWORD, "role": "supervisor"}))
        .await?
        .ok()?;
    let sue = server.login("sue", ferrydesk_tests::PASSWORD).await?;
    anna.set_status("active").await?;
    let m = fx.inbound("e-1", "erik", "Refund please").await?;
    let chat = m["chat_id"].as_str().unwrap_or_default().to_owned();
    anna.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;
    let case = anna
        .post(
            "/api/v1/cases",
            json!({"subject": "Refund", "chat_id": chat, "responsible_id": anna.id()}),
        )
        .await?
        .ok()?;
    let id = case["id"].as_str().unwrap_or_default().to_owned();
    let path = format!("/api/v1/cases/{id}");
    let hijack =
        json!({"subject": "Boris was here", "status": "closed", "responsible_id": boris.id()});

    // While the chat is Anna's, Boris cannot even see the case.
    let r = boris.patch(&path, hijack.clone()).await?;
    assert_eq!(r.status, 404, "{}", r.text);
    // Finished: he reads it but is not its responsible, so he may not edit it.
    anna.post_empty(&format!("/api/v1/chats/{chat}/finish"))
        .await?
        .ok()?;
    boris.get(&path).await?.ok()?;
    let r = boris.patch(&path, hijack.clone()).await?;
    assert_eq!((r.status, r.code()), (403, "forbidden"), "{}", r.text);
    let unchanged = anna.get(&path).await?.ok()?;
    assert_eq!(unchanged["case"]["subject"], "Refund");
    assert_eq!(unchanged["case"]["status"], "new");

    // Anna (responsible) and a supervisor may; nothing changed records nothing.
    anna.patch(&path, json!({"priority": "high"})).await?.ok()?;
    anna.patch(&path, json!({"priority": "high"})).await?.ok()?;
    sue.patch(
        &path,
        json!({"subject": "Refund for order 42", "responsible_id": boris.id()}),
    )
    .await?
    .ok()?;
    // Now Boris is responsible and may edit; Anna no longer.
    boris
        .patch(&path, json!({"status": "resolved"}))
        .await?
        .ok()?;
    let r = anna.patch(&path, json!({"status": "new"})).await?;
    assert_eq!(r.status, 403, "{}", r.text);

    let h = boris.get(&format!("{path}/history")).await?.ok()?;
    let rows: Vec<(String, String, Value, Value)> = h
        .as_array()
        .into_iter()
        .flatten()
        .map(|e| {
            (
                e["actor_id"].as_str().unwrap_or("").to_owned(),
                e["field"].as_str().unwrap_or("").to_owned(),
                e["old_value"].clone(),
                e["new_value"].clone(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        vec![
            (anna.id(), "priority".into(), json!("normal"), json!("high")),
            (
                sue.id(),
                "subject".into(),
                json!("Refund"),
                json!("Refund for order 42")
            ),
            (
                sue.id(),
                "responsible_id".into(),
                json!(anna.id()),
                json!(boris.id())
            ),
            (boris.id(), "status".into(), json!("new"), json!("resolved")),
        ],
        "{h}"
    );
    assert!(h[0]["at"].is_string() || h[0]["at"].is_number(), "{h}");
    assert_eq!(h[1]["actor_name"], "Sue");
    Ok(())
}

/// Row 12 of issue 14: two widget visitors write (one gets a file), an operator merges their
/// contacts; each visitor's widget still shows only their own conversation and files.
async fn widget_after_a_merge(b: Backend) -> Result<()> {
    let (_db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let anna = &fx.operators[0];
    anna.set_status("active").await?;
    let va = Visitor::new(&server.base, &fx.widget_key).await?;
    let vb = Visitor::new(&server.base, &fx.widget_key).await?;
    let sa = va.send("Alice private words").await?;
    let sb = vb.send("Bob private words").await?;
    let (chat_a, contact_a) = (
        sa["chat_id"].as_str().unwrap_or_default().to_owned(),
        sa["contact_id"].as_str().unwrap_or_default().to_owned(),
    );
    let (chat_b, contact_b) = (
        sb["chat_id"].as_str().unwrap_or_default().to_owned(),
        sb["contact_id"].as_str().unwrap_or_default().to_owned(),
    );
    assert_ne!(contact_a, contact_b);
    anna.post_empty(&format!("/api/v1/chats/{chat_a}/accept"))
        .await?
        .ok()?;
    let f = anna
        .upload("/api/v1/files", "alice.png", "image/png", png_bytes())
        .await?
        .ok()?;
    let fid = f["id"].as_str().unwrap_or_default().to_owned();
    anna.post(
        &format!("/api/v1/chats/{chat_a}/messages"),
        json!({"text": "Alice's invoice", "files": [fid]}),
    )
    .await?
    .ok()?;
    anna.post_empty(&format!("/api/v1/chats/{chat_a}/finish"))
        .await?
        .ok()?;
    anna.accept_and_finish(&chat_b).await?;
    anna.post(
        "/api/v1/contacts/merge",
        json!({"master_id": contact_a, "merged_id": contact_b}),
    )
    .await?
    .ok()?;

    let transcript = |v: &Visitor| {
        let api = v.api.clone();
        async move {
            let r = api.get("/widget/v1/messages").await?;
            anyhow::ensure!(r.status == 200, "HTTP {}: {}", r.status, r.text);
            Ok::<String, anyhow::Error>(r.text)
        }
    };
    let a = transcript(&va).await?;
    assert!(
        a.contains("Alice private words") && a.contains("Alice's invoice"),
        "{a}"
    );
    assert!(
        !a.contains("Bob private words"),
        "Alice sees Bob's chat: {a}"
    );
    let bt = transcript(&vb).await?;
    assert!(bt.contains("Bob private words"), "{bt}");
    assert!(
        !bt.contains("Alice") && !bt.contains(&fid),
        "Bob sees Alice's chat: {bt}"
    );
    let file = format!("/widget/v1/files/{fid}");
    assert_eq!(
        vb.api.get(&file).await?.status,
        404,
        "Bob downloads Alice's file"
    );
    assert_eq!(va.api.get(&file).await?.status, 200);

    // They write again after the merge, both while the other's new chat is open: each gets a
    // chat of their own (one unfinished chat per identity, not per contact), and replies go
    // to the visitor who wrote.
    let again_a = va.send("Alice again").await?;
    let again_b = vb.send("Bob again").await?;
    assert_ne!(
        again_a["chat_id"], again_b["chat_id"],
        "{again_a} {again_b}"
    );
    assert_eq!(again_a["contact_id"], again_b["contact_id"]);
    let chat_b2 = again_b["chat_id"].as_str().unwrap_or_default().to_owned();
    anna.post_empty(&format!("/api/v1/chats/{chat_b2}/accept"))
        .await?
        .ok()?;
    anna.post(
        &format!("/api/v1/chats/{chat_b2}/messages"),
        json!({"text": "Answer for Bob only"}),
    )
    .await?
    .ok()?;
    let a = transcript(&va).await?;
    assert!(a.contains("Alice again"), "{a}");
    assert!(!a.contains("Bob"), "Alice sees Bob's conversation: {a}");
    let bt = transcript(&vb).await?;
    assert!(
        bt.contains("Bob again") && bt.contains("Answer for Bob only"),
        "{bt}"
    );
    assert!(!bt.contains("Alice"), "Bob sees Alice's conversation: {bt}");
    Ok(())
}
