//! Telegram Bot API channel.
//!
//! Webhook mode: `setup` registers `public_url` with a secret token; the host checks the
//! `X-Telegram-Bot-Api-Secret-Token` header before `inbound` sees the update. Polling mode:
//! the host calls `poll`, which long-polls `getUpdates` from the stored offset (the host commits
//! the new offset only after the messages are stored, so a crash re-reads rather than loses).
//! Files (photos: the largest size; documents) and the sender's profile photo are returned as
//! `getFile` URLs, which the host downloads with this plugin's HTTP grant; they contain the bot
//! token, so the host never logs or stores them.

use ferrydesk_sdk::prelude::*;

struct Telegram;

fn base(ctx: &Ctx) -> String {
    ctx.config("api_base")
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "https://api.telegram.org".into())
        .trim_end_matches('/')
        .to_owned()
}

fn token(ctx: &Ctx) -> PluginResult<String> {
    ctx.secret("bot_token")
        .ok_or_else(|| PluginError::new("not_configured", "setting `bot_token` is not set"))
}

/// Maps a Bot API answer to its `result`, or to an error that says whether to retry.
pub fn result_of(status: u16, body: &Json) -> PluginResult<Json> {
    if status == 200 && body.get("ok") == Some(&Json::Bool(true)) {
        return Ok(body.get("result").cloned().unwrap_or(Json::Null));
    }
    let description = body
        .get("description")
        .and_then(Json::as_str)
        .unwrap_or("no description")
        .to_owned();
    if status == 429 {
        let after = body
            .pointer("/parameters/retry_after")
            .and_then(Json::as_u64)
            .unwrap_or(1);
        return Err(PluginError::retryable(
            "rate_limited",
            format!("retry_after={after}"),
        ));
    }
    if status >= 500 || status == 0 {
        return Err(PluginError::retryable(
            "upstream_unavailable",
            format!("Telegram answered {status}: {description}"),
        ));
    }
    Err(PluginError::new(
        "rejected",
        format!("Telegram answered {status}: {description}"),
    ))
}

fn call(ctx: &Ctx, method: &str, body: &Json) -> PluginResult<Json> {
    let url = format!("{}/bot{}/{method}", base(ctx), token(ctx)?);
    let resp = Request::post(url).json(body).send()?;
    let json = serde_json::from_slice(&resp.body).unwrap_or(Json::Null);
    result_of(resp.status, &json)
}

fn file_url(ctx: &Ctx, file_id: &str) -> PluginResult<String> {
    let file = call(ctx, "getFile", &json!({ "file_id": file_id }))?;
    let path = file
        .get("file_path")
        .and_then(Json::as_str)
        .ok_or_else(|| {
            PluginError::retryable("upstream_invalid", "getFile returned no file_path")
        })?;
    Ok(format!("{}/file/bot{}/{path}", base(ctx), token(ctx)?))
}

/// The sender's profile photo, looked up once per user (remembered in the plugin's kv).
fn profile_photo(ctx: &Ctx, user_id: i64) -> Option<String> {
    let key = format!("seen:{user_id}");
    if store::get(&key).is_some() {
        return None;
    }
    let _ = store::set(&key, b"1");
    let photos = call(
        ctx,
        "getUserProfilePhotos",
        &json!({ "user_id": user_id, "limit": 1 }),
    )
    .ok()?;
    let sizes = photos.pointer("/photos/0")?.as_array()?;
    let file_id = sizes.last()?.get("file_id")?.as_str()?;
    file_url(ctx, file_id).ok()
}

/// Turns one update into a message, or `None` for updates a chat desk ignores.
fn parse_update(ctx: &Ctx, update: &Json) -> PluginResult<Option<InboundMessage>> {
    let Some(msg) = update.get("message") else {
        return Ok(None);
    };
    let chat_id = msg
        .pointer("/chat/id")
        .and_then(Json::as_i64)
        .ok_or_else(|| PluginError::invalid_input("message.chat.id is missing"))?;
    let message_id = msg
        .get("message_id")
        .and_then(Json::as_i64)
        .ok_or_else(|| PluginError::invalid_input("message.message_id is missing"))?;
    let from = msg.get("from").cloned().unwrap_or(Json::Null);
    let name = [from.get("first_name"), from.get("last_name")]
        .into_iter()
        .flatten()
        .filter_map(Json::as_str)
        .collect::<Vec<_>>()
        .join(" ");
    let name = if name.is_empty() {
        from.get("username")
            .and_then(Json::as_str)
            .map(str::to_owned)
    } else {
        Some(name)
    };
    let photo_url = from
        .get("id")
        .and_then(Json::as_i64)
        .and_then(|id| profile_photo(ctx, id));
    let text = msg
        .get("text")
        .or_else(|| msg.get("caption"))
        .and_then(Json::as_str)
        .unwrap_or("")
        .to_owned();
    let mut files = Vec::new();
    if let Some(largest) = msg
        .get("photo")
        .and_then(Json::as_array)
        .and_then(|s| s.last())
        && let Some(id) = largest.get("file_id").and_then(Json::as_str)
    {
        files.push(FileRef {
            url: Some(file_url(ctx, id)?),
            data: None,
            name: Some(format!("photo-{message_id}.jpg")),
            content_type: Some("image/jpeg".into()),
        });
    }
    if let Some(doc) = msg.get("document")
        && let Some(id) = doc.get("file_id").and_then(Json::as_str)
    {
        files.push(FileRef {
            url: Some(file_url(ctx, id)?),
            data: None,
            name: doc
                .get("file_name")
                .and_then(Json::as_str)
                .map(str::to_owned),
            content_type: doc
                .get("mime_type")
                .and_then(Json::as_str)
                .map(str::to_owned),
        });
    }
    if text.is_empty() && files.is_empty() {
        return Ok(None); // stickers, locations, … are not chat messages here
    }
    Ok(Some(InboundMessage {
        external_id: format!("{chat_id}:{message_id}"),
        sender: Sender {
            id: chat_id.to_string(),
            name,
            photo_url,
        },
        text,
        files,
    }))
}

impl Connector for Telegram {
    fn setup(ctx: &Ctx) -> PluginResult<()> {
        call(ctx, "getMe", &json!({}))?;
        match ctx.config("mode").as_deref().unwrap_or("webhook") {
            "polling" => {
                call(ctx, "deleteWebhook", &json!({}))?;
            }
            _ => {
                let url = ctx.require_config("public_url")?;
                let secret = ctx.secret("webhook_secret").ok_or_else(|| {
                    PluginError::new("not_configured", "webhook mode needs `webhook_secret`")
                })?;
                call(
                    ctx,
                    "setWebhook",
                    &json!({ "url": url, "secret_token": secret, "allowed_updates": ["message"] }),
                )?;
            }
        }
        Ok(())
    }

    fn inbound(ctx: &Ctx, req: InboundRequest) -> PluginResult<Parsed> {
        let update = req.json()?;
        let messages = parse_update(ctx, &update)?.into_iter().collect();
        Ok(Parsed {
            messages,
            reply: HttpReply::ok(),
        })
    }

    fn send(ctx: &Ctx, msg: OutboundMessage) -> PluginResult<String> {
        let chat_id = msg.recipient.clone();
        let mut last = None;
        if msg.files.is_empty() {
            last = Some(call(
                ctx,
                "sendMessage",
                &json!({ "chat_id": chat_id, "text": msg.text }),
            )?);
        }
        for (i, f) in msg.files.iter().enumerate() {
            let ctype = f
                .content_type
                .as_deref()
                .unwrap_or("application/octet-stream");
            let (method, field) = if ctype.starts_with("image/") {
                ("sendPhoto", "photo")
            } else {
                ("sendDocument", "document")
            };
            let caption = if i == 0 { msg.text.as_str() } else { "" };
            let url = format!("{}/bot{}/{method}", base(ctx), token(ctx)?);
            let name = f.name.as_deref().unwrap_or("file");
            let resp = Request::post(url)
                .multipart(
                    &[("chat_id", &chat_id), ("caption", caption)],
                    Some((field, name, ctype, f.data.as_deref().unwrap_or_default())),
                )
                .send()?;
            let json = serde_json::from_slice(&resp.body).unwrap_or(Json::Null);
            last = Some(result_of(resp.status, &json)?);
        }
        let id = last
            .as_ref()
            .and_then(|r| r.get("message_id"))
            .and_then(Json::as_i64)
            .ok_or_else(|| {
                PluginError::retryable("upstream_invalid", "Telegram returned no message_id")
            })?;
        Ok(format!("{chat_id}:{id}"))
    }

    fn poll(ctx: &Ctx) -> PluginResult<Vec<InboundMessage>> {
        let offset: i64 = store::get("offset")
            .and_then(|v| String::from_utf8(v).ok())
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let timeout: u64 = ctx
            .config("poll_timeout")
            .and_then(|v| v.parse().ok())
            .unwrap_or(25);
        let updates = call(
            ctx,
            "getUpdates",
            &json!({ "offset": offset, "timeout": timeout, "allowed_updates": ["message"] }),
        )?;
        let mut out = Vec::new();
        let mut next = offset;
        for u in updates.as_array().map(Vec::as_slice).unwrap_or_default() {
            let Some(id) = u.get("update_id").and_then(Json::as_i64) else {
                continue;
            };
            // update_id deduplication: anything below the confirmed offset was seen already.
            if id < offset {
                continue;
            }
            next = next.max(id + 1);
            if let Some(m) = parse_update(ctx, u)? {
                out.push(m);
            }
        }
        if next != offset {
            store::set("offset", next.to_string().as_bytes())?;
        }
        Ok(out)
    }
}

export_connector!(Telegram);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limits_are_retryable_with_their_delay() {
        let e = result_of(429, &json!({"ok": false, "error_code": 429, "description": "Too Many Requests", "parameters": {"retry_after": 7}})).unwrap_err();
        assert!(e.retryable);
        assert_eq!(e.message, "retry_after=7");
        let e = result_of(
            403,
            &json!({"ok": false, "description": "Forbidden: bot was blocked by the user"}),
        )
        .unwrap_err();
        assert!(!e.retryable);
    }
}
