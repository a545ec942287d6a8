//! A generic JSON channel for custom integrations.
//!
//! Inbound: `POST /api/v1/channels/{id}/webhook` with `X-Ferrydesk-Signature: sha256=<hex HMAC-SHA256
//! of the raw body>` (checked by the host) and a body of one message or `{"messages": [...]}`:
//! `{"id": "m-1", "sender": {"id": "u-1", "name": "Ann", "photo_url": "https://…"}, "text": "Hi",
//! "files": [{"url": "https://…", "name": "a.pdf", "content_type": "application/pdf"}]}`.
//!
//! Outbound: `POST <outbound_url>` with the same signature header and
//! `{"message_id", "recipient", "text", "files": [{"name", "content_type", "data_base64"}]}`;
//! a 2xx answer may carry `{"id": "…"}`; 429 with `Retry-After` and 5xx are retried.

use base64::Engine as _;
use ferrydesk_sdk::prelude::*;
use hmac::{Hmac, Mac};

struct Webhook;

#[derive(Deserialize)]
struct InSender {
    id: String,
    name: Option<String>,
    photo_url: Option<String>,
}

#[derive(Deserialize)]
struct InFile {
    url: String,
    name: Option<String>,
    content_type: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InMessage {
    id: String,
    sender: InSender,
    #[serde(default)]
    text: String,
    #[serde(default)]
    files: Vec<InFile>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Body {
    Batch { messages: Vec<InMessage> },
    One(InMessage),
}

/// `sha256=<hex>` of the body under `secret`.
pub fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac =
        Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

impl Connector for Webhook {
    fn inbound(_ctx: &Ctx, req: InboundRequest) -> PluginResult<Parsed> {
        let body: Body = serde_json::from_slice(&req.body)
            .map_err(|e| PluginError::invalid_input(format!("body: {e}")))?;
        let list = match body {
            Body::Batch { messages } => messages,
            Body::One(m) => vec![m],
        };
        let n = list.len();
        let messages = list
            .into_iter()
            .map(|m| InboundMessage {
                external_id: m.id,
                sender: Sender {
                    id: m.sender.id,
                    name: m.sender.name,
                    photo_url: m.sender.photo_url,
                },
                text: m.text,
                files: m
                    .files
                    .into_iter()
                    .map(|f| FileRef {
                        url: Some(f.url),
                        data: None,
                        name: f.name,
                        content_type: f.content_type,
                    })
                    .collect(),
            })
            .collect();
        Ok(Parsed {
            messages,
            reply: HttpReply::json(&json!({ "ok": true, "accepted": n })),
        })
    }

    fn send(ctx: &Ctx, msg: OutboundMessage) -> PluginResult<String> {
        let url = ctx.require_config("outbound_url")?;
        let secret = ctx.require_config("secret")?;
        let files: Vec<Json> = msg
            .files
            .iter()
            .map(|f| {
                json!({
                    "name": f.name,
                    "content_type": f.content_type,
                    "data_base64": base64::engine::general_purpose::STANDARD.encode(f.data.as_deref().unwrap_or_default()),
                })
            })
            .collect();
        let body = serde_json::to_vec(&json!({
            "message_id": msg.message_id,
            "recipient": msg.recipient,
            "text": msg.text,
            "files": files,
        }))?;
        let resp = Request::post(url)
            .header("content-type", "application/json")
            .header("x-ferrydesk-signature", sign(&secret, &body))
            .header("idempotency-key", msg.message_id.clone())
            .body(body)
            .send()?;
        match resp.status {
            200..=299 => Ok(resp
                .json()
                .ok()
                .and_then(|j| j.get("id").and_then(Json::as_str).map(str::to_owned))
                .unwrap_or(msg.message_id)),
            429 => {
                let after = resp
                    .header("retry-after")
                    .and_then(|v| v.parse::<u64>().ok())
                    .unwrap_or(1);
                Err(PluginError::retryable(
                    "rate_limited",
                    format!("retry_after={after}"),
                ))
            }
            500..=599 => Err(PluginError::retryable(
                "upstream_unavailable",
                format!("the endpoint answered {}", resp.status),
            )),
            s => Err(PluginError::new(
                "rejected",
                format!(
                    "the endpoint answered {s}: {}",
                    String::from_utf8_lossy(&resp.body)
                ),
            )),
        }
    }
}

export_connector!(Webhook);

#[cfg(test)]
mod tests {
    #[test]
    fn signature_matches_a_known_vector() {
        // RFC 4231 test case 2.
        assert_eq!(
            super::sign("Jefe", b"what do ya want for nothing?"),
            "sha256=5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
