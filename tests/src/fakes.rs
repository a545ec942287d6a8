//! Fakes of third parties that cannot be reached from here, behaving like the real APIs:
//! the Telegram Bot API (token in the path, `ok`/`result` envelopes, 401 for a wrong token,
//! 409 for getUpdates while a webhook is set, 429 with `parameters.retry_after`, getFile paths
//! and downloads, long-polling getUpdates with offsets) and a custom webhook endpoint that
//! checks HMAC signatures and fails on demand.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

async fn serve(app: Router) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(format!("http://{addr}"))
}

/// A file the fake serves through getFile.
#[derive(Clone)]
pub struct TgFile {
    pub path: String,
    pub bytes: Vec<u8>,
}

/// What the fake saw and will do.
#[derive(Default)]
pub struct TgState {
    pub token: String,
    /// (method, parameters) of every call with the right token.
    pub calls: Vec<(String, Value)>,
    /// Calls with a wrong token.
    pub unauthorized: u32,
    pub webhook: Option<(String, Option<String>)>,
    /// Updates not yet confirmed by a getUpdates offset.
    pub pending: Vec<Value>,
    pub files: HashMap<String, TgFile>,
    pub profile_photos: HashMap<i64, String>,
    /// The next N send* calls answer 429 with retry_after = 1.
    pub rate_limit_sends: u32,
    /// Messages the bot sent: (method, chat_id, text or caption, file bytes).
    pub sent: Vec<(String, String, String, Option<Vec<u8>>)>,
    pub next_message_id: i64,
    pub offsets: Vec<i64>,
}

#[derive(Clone)]
pub struct FakeTelegram {
    pub base: String,
    pub state: Arc<Mutex<TgState>>,
}

fn tg_ok(result: Value) -> Response {
    Json(json!({"ok": true, "result": result})).into_response()
}

fn tg_err(status: StatusCode, description: &str, extra: Value) -> Response {
    let mut body = json!({"ok": false, "error_code": status.as_u16(), "description": description});
    if let (Some(o), Some(e)) = (body.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            o.insert(k.clone(), v.clone());
        }
    }
    (status, Json(body)).into_response()
}

impl FakeTelegram {
    pub async fn start(token: &str) -> anyhow::Result<FakeTelegram> {
        let state = Arc::new(Mutex::new(TgState {
            token: token.to_owned(),
            next_message_id: 1000,
            ..Default::default()
        }));
        let app = Router::new()
            .route("/{bot}/{method}", post(Self::method))
            .route("/file/{bot}/{*path}", get(Self::file))
            .with_state(state.clone());
        Ok(FakeTelegram {
            base: serve(app).await?,
            state,
        })
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, TgState> {
        self.state.lock().expect("fake telegram state")
    }

    /// Queues an update for getUpdates.
    pub fn push_update(&self, update: Value) {
        self.lock().pending.push(update);
    }

    pub fn calls_of(&self, method: &str) -> Vec<Value> {
        self.lock()
            .calls
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, p)| p.clone())
            .collect()
    }

    async fn method(
        State(state): State<Arc<Mutex<TgState>>>,
        Path((bot, method)): Path<(String, String)>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let token_ok = {
            let s = state.lock().expect("state");
            bot.strip_prefix("bot") == Some(s.token.as_str())
        };
        if !token_ok {
            state.lock().expect("state").unauthorized += 1;
            return tg_err(StatusCode::UNAUTHORIZED, "Unauthorized", json!({}));
        }
        let ctype = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let (params, file) = if ctype.starts_with("multipart/form-data") {
            match parse_multipart(&ctype, body).await {
                Ok(x) => x,
                Err(e) => {
                    return tg_err(
                        StatusCode::BAD_REQUEST,
                        &format!("Bad Request: {e}"),
                        json!({}),
                    );
                }
            }
        } else if body.is_empty() {
            (json!({}), None)
        } else {
            match serde_json::from_slice::<Value>(&body) {
                Ok(v) => (v, None),
                Err(_) => {
                    return tg_err(
                        StatusCode::BAD_REQUEST,
                        "Bad Request: invalid JSON",
                        json!({}),
                    );
                }
            }
        };
        state
            .lock()
            .expect("state")
            .calls
            .push((method.clone(), params.clone()));
        match method.as_str() {
            "getMe" => tg_ok(
                json!({"id": 42, "is_bot": true, "first_name": "Desk", "username": "desk_bot"}),
            ),
            "setWebhook" => {
                let url = params["url"].as_str().unwrap_or_default().to_owned();
                let secret = params["secret_token"].as_str().map(str::to_owned);
                state.lock().expect("state").webhook = Some((url, secret));
                tg_ok(json!(true))
            }
            "deleteWebhook" => {
                state.lock().expect("state").webhook = None;
                tg_ok(json!(true))
            }
            "getUpdates" => {
                if state.lock().expect("state").webhook.is_some() {
                    return tg_err(
                        StatusCode::CONFLICT,
                        "Conflict: can't use getUpdates method while webhook is active; use deleteWebhook to delete the webhook first",
                        json!({}),
                    );
                }
                let offset = params["offset"].as_i64().unwrap_or(0);
                let timeout = params["timeout"].as_u64().unwrap_or(0).min(5);
                let deadline = tokio::time::Instant::now() + Duration::from_secs(timeout);
                loop {
                    let ready: Vec<Value> = {
                        let mut s = state.lock().expect("state");
                        s.offsets.push(offset);
                        // Confirmed updates are forgotten, as Telegram does.
                        s.pending
                            .retain(|u| u["update_id"].as_i64().unwrap_or(0) >= offset);
                        s.pending.clone()
                    };
                    if !ready.is_empty() || tokio::time::Instant::now() >= deadline {
                        return tg_ok(Value::Array(ready));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            "getFile" => {
                let id = params["file_id"].as_str().unwrap_or_default();
                match state.lock().expect("state").files.get(id) {
                    Some(f) => tg_ok(
                        json!({"file_id": id, "file_unique_id": id, "file_size": f.bytes.len(), "file_path": f.path}),
                    ),
                    None => tg_err(
                        StatusCode::BAD_REQUEST,
                        "Bad Request: invalid file_id",
                        json!({}),
                    ),
                }
            }
            "getUserProfilePhotos" => {
                let user = params["user_id"].as_i64().unwrap_or(0);
                match state.lock().expect("state").profile_photos.get(&user) {
                    Some(id) => tg_ok(json!({"total_count": 1, "photos": [[
                        {"file_id": format!("{id}-small"), "file_unique_id": "s", "width": 160, "height": 160},
                        {"file_id": id, "file_unique_id": "b", "width": 640, "height": 640}
                    ]]})),
                    None => tg_ok(json!({"total_count": 0, "photos": []})),
                }
            }
            "sendMessage" | "sendPhoto" | "sendDocument" => {
                let mut s = state.lock().expect("state");
                if s.rate_limit_sends > 0 {
                    s.rate_limit_sends -= 1;
                    return tg_err(
                        StatusCode::TOO_MANY_REQUESTS,
                        "Too Many Requests: retry after 1",
                        json!({"parameters": {"retry_after": 1}}),
                    );
                }
                let chat = match &params["chat_id"] {
                    Value::String(c) => c.clone(),
                    other => other.to_string(),
                };
                let text = params["text"]
                    .as_str()
                    .or(params["caption"].as_str())
                    .unwrap_or_default()
                    .to_owned();
                s.sent.push((method.clone(), chat.clone(), text, file));
                s.next_message_id += 1;
                tg_ok(json!({"message_id": s.next_message_id, "chat": {"id": chat}, "date": 0}))
            }
            other => tg_err(
                StatusCode::NOT_FOUND,
                &format!("Not Found: method {other}"),
                json!({}),
            ),
        }
    }

    async fn file(
        State(state): State<Arc<Mutex<TgState>>>,
        Path((bot, path)): Path<(String, String)>,
    ) -> Response {
        let s = state.lock().expect("state");
        if bot.strip_prefix("bot") != Some(s.token.as_str()) {
            return StatusCode::UNAUTHORIZED.into_response();
        }
        match s.files.values().find(|f| f.path == path) {
            Some(f) => (
                StatusCode::OK,
                [("content-type", "application/octet-stream")],
                f.bytes.clone(),
            )
                .into_response(),
            None => StatusCode::NOT_FOUND.into_response(),
        }
    }
}

async fn parse_multipart(ctype: &str, body: Bytes) -> anyhow::Result<(Value, Option<Vec<u8>>)> {
    let boundary = ctype
        .split("boundary=")
        .nth(1)
        .ok_or_else(|| anyhow::anyhow!("no boundary"))?
        .trim_matches('"')
        .to_owned();
    let stream = futures::stream::once(async move { Ok::<_, std::io::Error>(body) });
    let mut mp = multer::Multipart::new(stream, boundary);
    let mut params = serde_json::Map::new();
    let mut file = None;
    while let Some(field) = mp.next_field().await? {
        let name = field.name().unwrap_or_default().to_owned();
        if field.file_name().is_some() {
            file = Some(field.bytes().await?.to_vec());
        } else {
            params.insert(name, Value::String(field.text().await?));
        }
    }
    Ok((Value::Object(params), file))
}

/// A custom endpoint receiving the webhook connector's replies: checks the HMAC signature,
/// fails the first `fail_first` deliveries with 500, records the rest.
#[derive(Default)]
pub struct HookState {
    pub secret: String,
    pub fail_first: u32,
    pub attempts: u32,
    pub bad_signatures: u32,
    pub received: Vec<Value>,
}

#[derive(Clone)]
pub struct FakeEndpoint {
    pub url: String,
    pub state: Arc<Mutex<HookState>>,
}

impl FakeEndpoint {
    pub async fn start(secret: &str, fail_first: u32) -> anyhow::Result<FakeEndpoint> {
        let state = Arc::new(Mutex::new(HookState {
            secret: secret.to_owned(),
            fail_first,
            ..Default::default()
        }));
        let app = Router::new()
            .route("/replies", post(Self::reply))
            .with_state(state.clone());
        let base = serve(app).await?;
        Ok(FakeEndpoint {
            url: format!("{base}/replies"),
            state,
        })
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, HookState> {
        self.state.lock().expect("endpoint state")
    }

    async fn reply(
        State(state): State<Arc<Mutex<HookState>>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> Response {
        let mut s = state.lock().expect("state");
        s.attempts += 1;
        let sig = headers
            .get("x-ferrydesk-signature")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if sig != sign(&s.secret, &body) {
            s.bad_signatures += 1;
            return StatusCode::UNAUTHORIZED.into_response();
        }
        if s.fail_first > 0 {
            s.fail_first -= 1;
            return StatusCode::INTERNAL_SERVER_ERROR.into_response();
        }
        let v: Value = serde_json::from_slice(&body).unwrap_or_default();
        let n = s.received.len();
        s.received.push(v);
        Json(json!({"id": format!("ext-{n}")})).into_response()
    }
}

/// `sha256=<hex HMAC-SHA256>` as the webhook connector signs.
pub fn sign(secret: &str, body: &[u8]) -> String {
    use hmac::Mac;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}
