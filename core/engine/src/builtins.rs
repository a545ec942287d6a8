//! Built-in task types, bound with `zeebe:taskDefinition type="…"`:
//!
//! - `case.create` — creates a case from the task's inputs `subject`, `description`,
//!   `priority` (`low`/`normal`/`high`), `contactId`, `channelId`, `chatId`, `responsibleId`;
//!   outputs `caseId`, `caseNumber` and `case` (`{id, number, subject}`). The job key makes it
//!   idempotent: a retried job returns the case created the first time. The originating chat
//!   gets a link and a system note.
//! - `chat.note` — posts a system note `text` into the chat (`chatId`, default: the instance's
//!   chat); idempotent per job.

use ferrydesk_desk::cases::CaseInput;
use ferrydesk_domain::*;
use serde_json::{Value, json};

use crate::{Engine, Job, JobError};

pub const NAMES: &[&str] = &["case.create", "chat.note"];

fn text(job: &Job, key: &str) -> Option<String> {
    match job.inputs.get(key).or_else(|| job.variables.get(key)) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Null) | None => None,
        Some(other) => Some(other.to_string()),
    }
}

fn desk_error(e: ferrydesk_desk::Error) -> JobError {
    match e {
        // Bad input will not get better by retrying: fail fast into an incident with the field.
        ferrydesk_desk::Error::Invalid { field, message } => JobError::Failed {
            message: format!("input `{field}`: {message}"),
            retry_after: None,
        },
        other => JobError::failed(other.to_string()),
    }
}

pub(crate) fn register(engine: &Engine) {
    let e = engine.clone();
    engine.register(
        "case.create",
        std::sync::Arc::new(move |job: Job| {
            let e = e.clone();
            Box::pin(async move {
                let priority = match text(&job, "priority").as_deref() {
                    None | Some("") => None,
                    Some(p) => Some(p.parse::<CasePriority>().map_err(|_| {
                        JobError::failed(format!(
                            "input `priority`: `{p}` is not one of low, normal, high"
                        ))
                    })?),
                };
                let input = CaseInput {
                    subject: text(&job, "subject").unwrap_or_default(),
                    description: text(&job, "description").unwrap_or_default(),
                    priority,
                    contact_id: text(&job, "contactId")
                        .map(ContactId)
                        .or(job.contact_id.clone()),
                    channel_id: text(&job, "channelId").map(ChannelId),
                    chat_id: text(&job, "chatId").map(ChatId).or(job.chat_id.clone()),
                    responsible_id: text(&job, "responsibleId").map(UserId),
                };
                let case = e
                    .desk()
                    .create_case(job.started_by.as_ref(), input, Some(&job.key))
                    .await
                    .map_err(desk_error)?;
                Ok(json!({
                    "caseId": case.id,
                    "caseNumber": case.number,
                    "case": {"id": case.id, "number": case.number, "subject": case.subject},
                }))
            })
        }),
    );
    let e = engine.clone();
    engine.register(
        "chat.note",
        std::sync::Arc::new(move |job: Job| {
            let e = e.clone();
            Box::pin(async move {
                let chat = text(&job, "chatId")
                    .map(ChatId)
                    .or(job.chat_id.clone())
                    .ok_or_else(|| JobError::failed("input `chatId`: the instance has no chat"))?;
                let body = text(&job, "text")
                    .filter(|t| !t.trim().is_empty())
                    .ok_or_else(|| JobError::failed("input `text`: is required"))?;
                let id = e
                    .desk()
                    .system_note(&chat, &body, &job.key)
                    .await
                    .map_err(desk_error)?;
                Ok(json!({ "noteId": id }))
            })
        }),
    );
}
