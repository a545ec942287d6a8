//! The permission matrix (issue 14, "Visibility everywhere"): every mutating endpoint of the
//! running server's OpenAPI document (POST, PUT, PATCH, DELETE) is called by every role —
//! anonymous, the operator who owns the object, another operator, a supervisor, an admin — and
//! the status must be what the rule in [`RULES`] requires. An endpoint in the document without a
//! rule fails the test, so a new endpoint cannot ship without a decided rule.
//!
//! What "allowed" and "denied" mean here: a denied caller gets 401 (anonymous) or 403/404 (a
//! role or object it may not act on) — never 2xx, never a validation error that would show the
//! check comes after the input is looked at. An allowed caller gets anything but 401/403 and 5xx
//! (the fake ids and minimal bodies mostly make it a 404 or 422, which is fine: the permission
//! check let it through). Object-scoped endpoints get real objects of the owning operator (a
//! fresh chat in progress, a case made from it), so "another operator" is a real test.

use anyhow::{Result, bail};
use ferrydesk_tests::{Api, Backend, Fixture, FixtureOptions, PASSWORD};
use serde_json::{Value, json};

use crate::{on_both_backends, setup};

on_both_backends!(permission_matrix);

/// Who may call an endpoint.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Rule {
    /// Anyone, signed in or not (login, widget sessions, signed webhooks): only "no 5xx".
    Public,
    /// Only a widget visitor token: every user role is refused (401).
    Visitor,
    /// Only an API channel token: every user role is refused (401).
    Channel,
    /// Every signed-in user (operators, supervisors, admins).
    Staff,
    /// Operators for their own chat/case/user (another operator is refused), supervisors and
    /// admins for any.
    Owner,
    /// The user themselves, or an admin (another operator and supervisors are refused).
    SelfOrAdmin,
    /// The user themselves, or a supervisor or admin.
    SelfOrSupervisor,
    Supervisor,
    Admin,
}

/// The rule of every mutating endpoint, by `METHOD path` as in the OpenAPI document, with the
/// body to send (`None`: `{}`). Keep in step with docs/api.md, "Permissions".
#[rustfmt::skip]
const RULES: &[(&str, Rule, Option<&str>)] = &[
    ("POST /api/v1/auth/login", Rule::Public, Some(r#"{"username":"nobody","password":"wrong-password"}"#)),
    ("POST /api/v1/auth/logout", Rule::Public, None),
    ("POST /api/v1/cases", Rule::Staff, Some(r#"{"subject":"Matrix case"}"#)),
    ("PATCH /api/v1/cases/{id}", Rule::Owner, Some(r#"{"priority":"high"}"#)),
    ("POST /api/v1/cases/{id}/chats", Rule::Owner, Some(r#"{"text":"from the case"}"#)),
    ("GET /api/v1/cases/{id}/history", Rule::Owner, None),
    ("POST /api/v1/channel/files", Rule::Channel, None),
    ("POST /api/v1/channel/messages", Rule::Channel, None),
    ("POST /api/v1/channel/outbound/{id}/ack", Rule::Channel, None),
    ("POST /api/v1/channels", Rule::Admin, Some(r#"{"kind":"widget","name":"M","queue_id":"QUEUE"}"#)),
    ("PUT /api/v1/channels/{id}", Rule::Admin, Some(r#"{"kind":"widget","name":"M","queue_id":"QUEUE"}"#)),
    ("POST /api/v1/channels/{id}/token", Rule::Admin, None),
    ("POST /api/v1/channels/{id}/webhook", Rule::Public, None),
    ("POST /api/v1/chats/{id}/accept", Rule::Owner, None),
    ("POST /api/v1/chats/{id}/actions/{plugin}/{action}", Rule::Owner, None),
    ("PUT /api/v1/chats/{id}/draft", Rule::Owner, Some(r#"{"text":"draft"}"#)),
    ("POST /api/v1/chats/{id}/finish", Rule::Owner, None),
    ("POST /api/v1/chats/{id}/messages", Rule::Owner, Some(r#"{"text":"hello"}"#)),
    ("POST /api/v1/chats/{id}/processes/{key}", Rule::Owner, None),
    ("POST /api/v1/chats/{id}/read", Rule::Owner, None),
    ("POST /api/v1/chats/{id}/templates/{template}/render", Rule::Owner, None),
    ("POST /api/v1/chats/{id}/transfer", Rule::Owner, Some(r#"{"queue":"QUEUE"}"#)),
    ("POST /api/v1/connector-channels", Rule::Admin, Some(r#"{"plugin":"telegram","name":"T","queue_id":"QUEUE","config":{}}"#)),
    ("PUT /api/v1/connector-channels/{id}", Rule::Admin, Some(r#"{"config":{}}"#)),
    ("POST /api/v1/contacts/merge", Rule::Staff, Some(r#"{"master_id":"nope-1","merged_id":"nope-2"}"#)),
    ("PUT /api/v1/contacts/{id}", Rule::Staff, Some(r#"{"name":"Renamed"}"#)),
    ("POST /api/v1/contacts/{id}/chats", Rule::Staff, Some(r#"{"text":"hello"}"#)),
    ("POST /api/v1/duplicate-groups/{id}/dismiss", Rule::Supervisor, None),
    ("PUT /api/v1/duplicate-rules", Rule::Admin, Some("[]")),
    ("POST /api/v1/duplicate-scans", Rule::Supervisor, None),
    ("POST /api/v1/files", Rule::Staff, None),
    ("POST /api/v1/incidents/{id}/retry", Rule::Admin, None),
    ("PUT /api/v1/me/status", Rule::Staff, Some(r#"{"status":"inactive"}"#)),
    ("POST /api/v1/messages", Rule::Admin, Some(r#"{"name":"matrix","correlation_key":"k"}"#)),
    ("POST /api/v1/plugins", Rule::Admin, Some(r#"{"path":"/nonexistent"}"#)),
    ("DELETE /api/v1/plugins/{id}", Rule::Admin, None),
    ("PUT /api/v1/plugins/{id}/config", Rule::Admin, Some(r#"{"config":{}}"#)),
    ("POST /api/v1/plugins/{id}/disable", Rule::Admin, None),
    ("POST /api/v1/plugins/{id}/enable", Rule::Admin, None),
    ("POST /api/v1/process-instances/{id}/cancel", Rule::Admin, None),
    ("POST /api/v1/processes", Rule::Admin, None),
    ("POST /api/v1/processes/{key}/instances", Rule::Admin, None),
    ("POST /api/v1/queues", Rule::Admin, Some(r#"{"name":"M","routing_rule":"all_operators","members":[]}"#)),
    ("PUT /api/v1/queues/{id}", Rule::Admin, Some(r#"{"name":"M","routing_rule":"all_operators","members":[]}"#)),
    ("DELETE /api/v1/queues/{id}", Rule::Admin, None),
    ("PUT /api/v1/settings", Rule::Admin, Some(r#"{"simultaneous_chats":5}"#)),
    ("PUT /api/v1/settings/chat-actions", Rule::Admin, Some("[]")),
    ("POST /api/v1/tasks/{id}/claim", Rule::Staff, None),
    ("POST /api/v1/tasks/{id}/complete", Rule::Staff, None),
    ("POST /api/v1/templates", Rule::Admin, Some(r#"{"name":"M","body":"x"}"#)),
    ("PUT /api/v1/templates/{id}", Rule::Admin, Some(r#"{"name":"M","body":"x"}"#)),
    ("DELETE /api/v1/templates/{id}", Rule::Admin, None),
    ("POST /api/v1/users", Rule::Admin, Some(r#"{"username":"matrix","display_name":"M","password":"matrix-password-1","role":"operator"}"#)),
    ("PATCH /api/v1/users/{id}", Rule::SelfOrAdmin, Some(r#"{"display_name":"Renamed"}"#)),
    ("PUT /api/v1/users/{id}/status", Rule::SelfOrSupervisor, Some(r#"{"status":"inactive"}"#)),
    ("POST /api/v1/users/{id}/tokens", Rule::SelfOrAdmin, Some(r#"{"name":"matrix"}"#)),
    ("DELETE /api/v1/users/{id}/tokens/{token}", Rule::SelfOrAdmin, None),
    ("POST /widget/v1/files", Rule::Visitor, None),
    ("POST /widget/v1/messages", Rule::Visitor, Some(r#"{"text":"hi"}"#)),
    ("POST /widget/v1/sessions", Rule::Public, Some(r#"{"key":"WIDGET"}"#)),
];

#[derive(Debug, Clone, Copy, PartialEq)]
enum Who {
    Anonymous,
    OtherOperator,
    Operator,
    Supervisor,
    Admin,
}

const EVERYONE: [Who; 5] = [
    Who::Anonymous,
    Who::OtherOperator,
    Who::Operator,
    Who::Supervisor,
    Who::Admin,
];

/// Whether the rule lets `who` through (for `Owner` and `Self…` rules the objects belong to
/// `Who::Operator`).
fn allowed(rule: Rule, who: Who) -> Option<bool> {
    use Who::*;
    Some(match rule {
        Rule::Public => return None,
        Rule::Visitor | Rule::Channel => false,
        Rule::Staff => who != Anonymous,
        Rule::Owner | Rule::SelfOrSupervisor => matches!(who, Operator | Supervisor | Admin),
        Rule::SelfOrAdmin => matches!(who, Operator | Admin),
        Rule::Supervisor => matches!(who, Supervisor | Admin),
        Rule::Admin => who == Admin,
    })
}

/// The mutating operations of the served OpenAPI document, as `METHOD path`. The case history
/// (a GET) is added: it is the one read whose rule this test also pins.
async fn mutating_operations(api: &Api) -> Result<Vec<String>> {
    let doc = api.get("/api/openapi.json").await?.ok()?;
    let mut out = Vec::new();
    for (path, ops) in doc["paths"].as_object().into_iter().flatten() {
        for method in ["post", "put", "patch", "delete"] {
            if ops.get(method).is_some() {
                out.push(format!("{} {path}", method.to_uppercase()));
            }
        }
    }
    if doc["paths"]["/api/v1/cases/{id}/history"]["get"].is_object() {
        out.push("GET /api/v1/cases/{id}/history".into());
    }
    out.sort();
    Ok(out)
}

async fn permission_matrix(b: Backend) -> Result<()> {
    let (_db, server) = setup!(b);
    let fx = Fixture::new(
        &server,
        FixtureOptions {
            operators: 2,
            ..Default::default()
        },
    )
    .await?;
    crate::plugins::install(&fx.admin, "create-case").await?;
    fx.admin
        .post("/api/v1/plugins/create-case/enable", json!({}))
        .await?
        .ok()?;
    fx.admin
        .post("/api/v1/users", json!({"username": "sue", "display_name": "Sue", "password": PASSWORD, "role": "supervisor"}))
        .await?
        .ok()?;
    let sue = server.login("sue", PASSWORD).await?;
    let anon = server.api();
    let (op, other) = (&fx.operators[0], &fx.operators[1]);
    // The owner accepts one chat per endpoint.
    fx.admin
        .patch(
            &format!("/api/v1/users/{}", op.id()),
            json!({"chat_limit": 100}),
        )
        .await?
        .ok()?;
    let template = fx
        .admin
        .post(
            "/api/v1/templates",
            json!({"name": "Hello", "body": "Hello {{contact.name}}"}),
        )
        .await?
        .ok()?["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();

    let ops = mutating_operations(&anon).await?;
    let missing: Vec<&String> = ops
        .iter()
        .filter(|o| !RULES.iter().any(|(k, ..)| k == o))
        .collect();
    if !missing.is_empty() {
        bail!(
            "endpoints without a permission rule in tests/it/permissions.rs (decide one, and \
             document it in docs/api.md): {missing:?}"
        );
    }
    let stale: Vec<&str> = RULES
        .iter()
        .map(|(k, ..)| *k)
        .filter(|k| !ops.iter().any(|o| o == k))
        .collect();
    assert!(
        stale.is_empty(),
        "rules for endpoints that are gone: {stale:?}"
    );

    let mut failures = Vec::new();
    let mut n = 0;
    // Logging out ends the caller's session: last.
    let mut ordered = ops.clone();
    ordered.sort_by_key(|o| o == "POST /api/v1/auth/logout");
    for key in &ordered {
        let (_, rule, body) = RULES
            .iter()
            .find(|(k, ..)| k == key)
            .copied()
            .ok_or_else(|| anyhow::anyhow!("no rule for {key}"))?;
        let (method, template_path) = key.split_once(' ').unwrap_or(("POST", key));
        // Fresh objects of the owning operator for every endpoint, so an earlier call
        // (finishing the chat, say) does not change what the next one tests.
        n += 1;
        op.set_status("active").await?;
        let m = fx
            .inbound(
                &format!("perm-{n}"),
                &format!("perm-sender-{n}"),
                "matrix secret",
            )
            .await?;
        let chat = m["chat_id"].as_str().unwrap_or_default().to_owned();
        let contact = m["contact_id"].as_str().unwrap_or_default().to_owned();
        op.post_empty(&format!("/api/v1/chats/{chat}/accept"))
            .await?
            .ok()?;
        let case = op
            .post(
                "/api/v1/cases",
                json!({"subject": "matrix secret", "chat_id": chat, "responsible_id": op.id()}),
            )
            .await?
            .ok()?["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let path = template_path
            .replace("/chats/{id}", &format!("/chats/{chat}"))
            .replace("/cases/{id}", &format!("/cases/{case}"))
            .replace("/contacts/{id}", &format!("/contacts/{contact}"))
            .replace("/users/{id}", &format!("/users/{}", op.id()))
            .replace("{plugin}", "create-case")
            .replace("{action}", "create-case")
            .replace("/processes/{key}", "/processes/create-case")
            .replace("{template}", &template)
            .replace("{id}", "nonexistent")
            .replace("{key}", "nonexistent")
            .replace("{token}", "nonexistent");
        let body: Value = serde_json::from_str(
            &body
                .unwrap_or("{}")
                .replace("QUEUE", &fx.queue)
                .replace("WIDGET", &fx.widget_key),
        )?;
        for who in EVERYONE {
            let api = match who {
                Who::Anonymous => &anon,
                Who::OtherOperator => other,
                Who::Operator => op,
                Who::Supervisor => &sue,
                Who::Admin => &fx.admin,
            };
            let r = match method {
                "GET" => api.get(&path).await?,
                "POST" => api.post(&path, body.clone()).await?,
                "PUT" => api.put(&path, body.clone()).await?,
                "PATCH" => api.patch(&path, body.clone()).await?,
                "DELETE" => api.delete(&path).await?,
                other => bail!("unexpected method {other}"),
            };
            let s = r.status;
            let ok = match allowed(rule, who) {
                _ if s >= 500 => false,
                None => true,
                Some(true) => s != 401 && s != 403,
                Some(false) if who == Who::Anonymous => s == 401,
                // Accepting a chat someone else took answers `chat_taken` (the loser of a
                // race for an offer learns why), without any of the chat's content.
                Some(false) if key.ends_with("/accept") && s == 409 => {
                    r.code() == "chat_taken" && !r.text.contains("matrix secret")
                }
                Some(false) => matches!(s, 401 | 403 | 404),
            };
            if !ok {
                failures.push(format!(
                    "{key} ({path}) as {who:?}: HTTP {s} breaks rule {rule:?}: {}",
                    r.text.chars().take(200).collect::<String>()
                ));
            }
        }
    }
    if !failures.is_empty() {
        bail!(
            "{} permission failures:\n{}",
            failures.len(),
            failures.join("\n")
        );
    }
    Ok(())
}
