//! "Create case": reads a chat and prepares a case from it — subject from the client's first
//! message, description from the transcript. It runs as the first task of
//! `processes/create-case.bpmn`; the process's built-in `case.create` task then creates the
//! case from these outputs (through a mapping the admin can change).

use ferrydesk_sdk::prelude::*;

struct CreateCase;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Input {
    subject: Option<String>,
    #[serde(default)]
    priority: Option<String>,
}

/// The first line of the client's first message, at most 80 characters.
pub fn subject_from(first: &str) -> String {
    let line = first
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim();
    let mut s: String = line.chars().take(80).collect();
    if line.chars().count() > 80 {
        s.push('…');
    }
    s
}

impl Action for CreateCase {
    fn run(ctx: &Ctx, action: &str, input: Json) -> PluginResult<Outcome> {
        if action != "create-case" {
            return Err(PluginError::new(
                "unknown_action",
                format!("no action `{action}` in this plugin"),
            ));
        }
        let input: Input = from_json(input)?;
        let chat_id = ctx
            .chat
            .clone()
            .ok_or_else(|| PluginError::invalid_input("this action runs on a chat"))?;
        let chat = read_record("chat", &chat_id)?
            .ok_or_else(|| PluginError::new("not_found", "the chat is gone"))?;
        let messages = chat
            .get("messages")
            .and_then(Json::as_array)
            .cloned()
            .unwrap_or_default();
        let first_client = messages
            .iter()
            .find(|m| m.get("direction").and_then(Json::as_str) == Some("inbound"))
            .and_then(|m| m.get("body").and_then(Json::as_str))
            .unwrap_or("");
        let subject = input
            .subject
            .filter(|s| !s.trim().is_empty())
            .unwrap_or_else(|| subject_from(first_client));
        let subject = if subject.is_empty() {
            "Chat".to_owned()
        } else {
            subject
        };
        let transcript: Vec<String> = messages
            .iter()
            .filter(|m| m.get("direction").and_then(Json::as_str) != Some("system"))
            .map(|m| {
                let who = if m.get("direction").and_then(Json::as_str) == Some("inbound") {
                    "Client"
                } else {
                    "Operator"
                };
                format!(
                    "{who}: {}",
                    m.get("body").and_then(Json::as_str).unwrap_or("")
                )
            })
            .collect();
        let priority = input.priority.unwrap_or_else(|| "normal".into());
        let contact = chat.get("contact_id").cloned().unwrap_or(Json::Null);
        Ok(Outcome::new(json!({
            "subject": subject,
            "description": transcript.join("\n"),
            "priority": priority,
            "contact": contact,
            "chat": chat_id,
        })))
    }
}

export_action!(CreateCase);

#[cfg(test)]
mod tests {
    #[test]
    fn subject_is_the_first_line_clipped() {
        assert_eq!(
            super::subject_from("\n  My order is late\nmore"),
            "My order is late"
        );
        assert_eq!(super::subject_from(&"x".repeat(100)).chars().count(), 81);
    }
}
