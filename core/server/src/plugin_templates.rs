//! The files `ferrydesk plugin new` writes.

pub fn files(name: &str, krate: &str, kind: &str, sdk: &str) -> Vec<(&'static str, String)> {
    let cargo = format!(
        r#"[package]
name = "{name}"
version = "0.1.0"
edition = "2024"
publish = false

[lib]
crate-type = ["cdylib"]

[dependencies]
ferrydesk-sdk = {{ path = "{sdk}", features = ["{kind}"] }}
serde = {{ version = "1", features = ["derive"] }}
serde_json = "1"

# A plugin is its own workspace.
[workspace]

# Small, fast-to-instantiate components.
[profile.release]
opt-level = "s"
lto = true
codegen-units = 1
panic = "abort"
strip = true
"#
    );
    let config = r#"[target.wasm32-wasip2]
# A 64 KiB guest stack instead of Rust's 1 MiB: a fresh instance per call stays cheap.
rustflags = ["-C", "link-arg=-zstack-size=65536"]
"#
    .to_owned();
    let component = format!("target/wasm32-wasip2/release/{krate}.wasm");
    let (manifest_extra, code) = match kind {
        "action" => (
            format!(
                r#"  "capabilities": {{ "records": {{ "read": ["chat"] }} }},
  "limits": {{ "memory_mb": 16, "timeout_ms": 2000 }},
  "actions": [
    {{
      "id": "{name}",
      "title": {{ "en": "{name}", "ru": "{name}" }},
      "placement": ["chat"],
      "input_schema": {{
        "type": "object",
        "additionalProperties": false,
        "properties": {{ "comment": {{ "type": "string", "maxLength": 500, "title": "Comment" }} }}
      }},
      "output_schema": {{ "type": "object", "required": ["messages"] }}
    }}
  ]"#
            ),
            r#"//! A chat action: counts the chat's messages and leaves a note for the operators.

use ferrydesk_sdk::prelude::*;

struct Plugin;

#[derive(Deserialize)]
struct Input {
    comment: Option<String>,
}

/// The note this action writes (kept pure so `cargo test` can check it natively).
pub fn note(messages: usize, comment: Option<&str>) -> String {
    match comment {
        Some(c) if !c.is_empty() => format!("This chat has {messages} messages. {c}"),
        _ => format!("This chat has {messages} messages."),
    }
}

impl Action for Plugin {
    fn run(ctx: &Ctx, _action: &str, input: Json) -> PluginResult<Outcome> {
        let input: Input = from_json(input)?;
        let chat_id = ctx.chat.clone().ok_or_else(|| PluginError::invalid_input("runs on a chat"))?;
        let chat = read_record("chat", &chat_id)?.ok_or_else(|| PluginError::new("not_found", "the chat is gone"))?;
        let n = chat.get("messages").and_then(Json::as_array).map(Vec::len).unwrap_or(0);
        Ok(Outcome::new(json!({ "messages": n })).post_note(note(n, input.comment.as_deref())))
    }
}

export_action!(Plugin);

#[cfg(test)]
mod tests {
    #[test]
    fn note_counts_messages() {
        assert_eq!(super::note(3, Some("Call back.")), "This chat has 3 messages. Call back.");
        assert_eq!(super::note(0, None), "This chat has 0 messages.");
    }
}
"#
            .to_owned(),
        ),
        "macro" => (
            format!(
                r#"  "limits": {{ "memory_mb": 8, "timeout_ms": 100 }},
  "helpers": [{{ "name": "{krate}", "description": "Shouts its argument", "params": [{{ "name": "text", "type": "string", "required": true }}] }}]"#
            ),
            format!(
                r#"//! A template helper: `{{{{{krate} contact.name}}}}`.

use ferrydesk_sdk::prelude::*;

struct Plugin;

/// What the helper writes (pure, so `cargo test` can check it natively).
pub fn shout(text: &str) -> String {{
    format!("{{}}!", text.to_uppercase())
}}

impl Helpers for Plugin {{
    fn render(_ctx: &Ctx, _helper: &str, params: &[Json], _hash: &Json, _context: &Json) -> PluginResult<String> {{
        let text = params.first().and_then(Json::as_str).ok_or_else(|| PluginError::invalid_input("needs a text"))?;
        Ok(shout(text))
    }}
}}

export_helpers!(Plugin);

#[cfg(test)]
mod tests {{
    #[test]
    fn shouts() {{
        assert_eq!(super::shout("hi"), "HI!");
    }}
}}
"#
            ),
        ),
        _ => (
            format!(
                r#"  "capabilities": {{ "http": {{ "allowed_hosts": ["{{{{outbound_url}}}}"] }} }},
  "limits": {{ "memory_mb": 32, "timeout_ms": 10000, "http_requests": 2 }},
  "config_schema": {{
    "type": "object",
    "required": ["secret", "outbound_url"],
    "properties": {{
      "secret": {{ "type": "string", "minLength": 16, "writeOnly": true, "title": "Shared secret" }},
      "outbound_url": {{ "type": "string", "pattern": "^https?://", "title": "Where replies go" }}
    }}
  }},
  "connector": {{
    "channel_type": "{krate}",
    "features": ["text"],
    "delivery": "webhook",
    "webhook": {{ "verify": "header_secret", "header": "x-{name}-secret", "secret_config_key": "secret" }}
  }}"#
            ),
            r##"//! A channel: `{"id", "from", "name", "text"}` in, `{"to", "text"}` out.

use ferrydesk_sdk::prelude::*;

struct Plugin;

#[derive(Deserialize)]
struct In {
    id: String,
    from: String,
    name: Option<String>,
    text: String,
}

/// Parses one webhook body (pure, so `cargo test` can check it natively).
pub fn parse(body: &[u8]) -> PluginResult<(String, String, Option<String>, String)> {
    let m: In = serde_json::from_slice(body).map_err(|e| PluginError::invalid_input(e.to_string()))?;
    Ok((m.id, m.from, m.name, m.text))
}

impl Connector for Plugin {
    fn inbound(_ctx: &Ctx, req: InboundRequest) -> PluginResult<Parsed> {
        let (id, from, name, text) = parse(&req.body)?;
        Ok(Parsed {
            messages: vec![InboundMessage {
                external_id: id,
                sender: Sender { id: from, name, photo_url: None },
                text,
                files: vec![],
            }],
            reply: HttpReply::ok(),
        })
    }

    fn send(ctx: &Ctx, msg: OutboundMessage) -> PluginResult<String> {
        let url = ctx.require_config("outbound_url")?;
        let r = Request::post(url).json(&json!({ "to": msg.recipient, "text": msg.text })).send()?;
        match r.status {
            200..=299 => Ok(msg.message_id),
            429 | 500..=599 => Err(PluginError::retryable("upstream_unavailable", format!("answered {}", r.status))),
            s => Err(PluginError::new("rejected", format!("answered {s}"))),
        }
    }
}

export_connector!(Plugin);

#[cfg(test)]
mod tests {
    #[test]
    fn parses_a_message() {
        let (id, from, _, text) = super::parse(br#"{"id":"1","from":"u","text":"hi"}"#).unwrap();
        assert_eq!((id.as_str(), from.as_str(), text.as_str()), ("1", "u", "hi"));
    }
}
"##
            .to_owned(),
        ),
    };
    let article = if kind == "action" { "An" } else { "A" };
    let manifest = format!(
        r#"{{
  "$schema": "https://ferrydesk.dev/schema/plugin-manifest.schema.json",
  "id": "{name}",
  "name": "{name}",
  "version": "0.1.0",
  "api_version": "0.1",
  "kind": "{kind}",
  "component": {{ "path": "{component}" }},
  "description": "{article} {kind} plugin.",
  "license": "Apache-2.0",
{manifest_extra}
}}
"#
    );
    let readme = format!(
        "# {name}\n\nA Ferrydesk {kind} plugin.\n\n```sh\ncargo test                                    # unit tests, natively\ncargo build --release --target wasm32-wasip2  # the component\nferrydesk plugin check .                      # manifest + component in the real host\nferrydesk plugin pack . -o {name}.tar          # a package for Admin → Plugins → Install\n```\n"
    );
    vec![
        ("Cargo.toml", cargo),
        (".cargo/config.toml", config),
        ("plugin.json", manifest),
        ("src/lib.rs", code),
        ("README.md", readme),
        (".gitignore", "/target\n*.tar\n".to_owned()),
    ]
}
