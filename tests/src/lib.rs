//! Test harness: real `ferrydesk` server processes on loopback, on a fresh SQLite file or a
//! fresh PostgreSQL database, and a small typed HTTP/WebSocket client.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

pub mod fakes;

use anyhow::{Context, Result, anyhow, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

pub const ADMIN_PASSWORD: &str = "admin-password-1";
pub const PASSWORD: &str = "operator-password-1";

/// The built `ferrydesk` binary next to the test executable (`target/debug/ferrydesk`).
pub fn server_bin() -> PathBuf {
    if let Ok(p) = std::env::var("FERRYDESK_BIN") {
        return PathBuf::from(p);
    }
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe.parent().and_then(|p| p.parent()).expect("target dir");
    let bin = dir.join("ferrydesk");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p ferrydesk` before the tests",
        bin.display()
    );
    bin
}

/// Which database a test runs on.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A fresh database (and data directory) for one test.
pub struct Db {
    pub backend: Backend,
    pub url: String,
    pub dir: tempfile::TempDir,
    pg_name: Option<String>,
}

pub fn pg_admin_url() -> String {
    std::env::var("FERRYDESK_TEST_PG_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

impl Db {
    pub async fn new(backend: Backend) -> Result<Option<Db>> {
        let dir = tempfile::tempdir()?;
        match backend {
            Backend::Sqlite => {
                let url = format!(
                    "sqlite://{}?mode=rwc",
                    dir.path().join("ferrydesk.db").display()
                );
                Ok(Some(Db {
                    backend,
                    url,
                    dir,
                    pg_name: None,
                }))
            }
            Backend::Postgres => {
                use sqlx::Connection;
                let admin = pg_admin_url();
                let mut conn = match sqlx::PgConnection::connect(&admin).await {
                    Ok(c) => c,
                    Err(e) => {
                        if std::env::var("FERRYDESK_REQUIRE_PG").as_deref() == Ok("1") {
                            bail!(
                                "PostgreSQL is required (FERRYDESK_REQUIRE_PG=1) but unreachable at {admin}: {e}"
                            );
                        }
                        eprintln!(
                            "SKIPPED: PostgreSQL unreachable at {admin} ({e}); set FERRYDESK_TEST_PG_URL or FERRYDESK_REQUIRE_PG=1"
                        );
                        return Ok(None);
                    }
                };
                let name = format!("fd_test_{}", uuid::Uuid::new_v4().simple());
                sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
                    .execute(&mut conn)
                    .await?;
                let base = admin
                    .rsplit_once('/')
                    .map(|(b, _)| b.to_owned())
                    .unwrap_or(admin.clone());
                Ok(Some(Db {
                    backend,
                    url: format!("{base}/{name}"),
                    dir,
                    pg_name: Some(name),
                }))
            }
        }
    }

    /// A SQLite database in `dir` (`ferrydesk.db`, as the server's default data directory
    /// holds it), e.g. one restored from a backup.
    pub fn sqlite_in(dir: tempfile::TempDir) -> Db {
        Db {
            backend: Backend::Sqlite,
            url: format!(
                "sqlite://{}?mode=rwc",
                dir.path().join("ferrydesk.db").display()
            ),
            dir,
            pg_name: None,
        }
    }

    /// A SQL connection to the test database, for assertions on stored state.
    pub async fn sql(&self) -> Result<sqlx::AnyConnection> {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        Ok(sqlx::AnyConnection::connect(&self.url).await?)
    }

    pub async fn scalar_i64(&self, sql: &str) -> Result<i64> {
        let mut c = self.sql().await?;
        Ok(
            sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql.to_owned()))
                .fetch_one(&mut c)
                .await?,
        )
    }

    pub async fn exec(&self, sql: &str) -> Result<u64> {
        let mut c = self.sql().await?;
        Ok(sqlx::query(sqlx::AssertSqlSafe(sql.to_owned()))
            .execute(&mut c)
            .await?
            .rows_affected())
    }

    /// Creates the first admin with the CLI, as an operator of the system would.
    pub async fn add_admin(&self) -> Result<()> {
        let out = Command::new(server_bin())
            .args(["user", "add", "admin", "--role", "admin", "--name", "Admin"])
            .env("FERRYDESK_PASSWORD", ADMIN_PASSWORD)
            .env("FERRYDESK_DATABASE_URL", &self.url)
            .env("FERRYDESK_DATA_DIR", self.dir.path())
            .output()
            .await?;
        if !out.status.success() {
            bail!("user add failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(())
    }
}

impl Drop for Db {
    fn drop(&mut self) {
        if let Some(name) = self.pg_name.take() {
            // Best effort, outside the async runtime.
            let admin = pg_admin_url();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build();
                if let Ok(rt) = rt {
                    rt.block_on(async move {
                        use sqlx::Connection;
                        if let Ok(mut c) = sqlx::PgConnection::connect(&admin).await {
                            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                            )))
                            .execute(&mut c)
                            .await;
                        }
                    });
                }
            })
            .join()
            .ok();
        }
    }
}

/// A running `ferrydesk serve` process.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    url: String,
    dir: PathBuf,
    tick_ms: u64,
    extra_env: Vec<(String, String)>,
}

impl Server {
    pub async fn start(db: &Db) -> Result<Server> {
        Self::start_with(db, &[]).await
    }

    /// The server process's id (to read its memory use from `/proc`).
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(|c| c.id())
    }

    pub async fn start_with(db: &Db, env: &[(&str, &str)]) -> Result<Server> {
        let mut s = Server {
            child: None,
            base: String::new(),
            url: db.url.clone(),
            dir: db.dir.path().to_path_buf(),
            tick_ms: 50,
            extra_env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        s.spawn().await?;
        Ok(s)
    }

    async fn spawn(&mut self) -> Result<()> {
        let mut cmd = Command::new(server_bin());
        cmd.arg("serve")
            .env("FERRYDESK_LISTEN", "127.0.0.1:0")
            .env("FERRYDESK_DATABASE_URL", &self.url)
            .env("FERRYDESK_DATA_DIR", &self.dir)
            .env("FERRYDESK_TIMER_TICK_MS", self.tick_ms.to_string())
            .env("FERRYDESK_LOG_JSON", "true")
            .env("FERRYDESK_LOG", "info,tower_http=warn,sqlx=warn")
            .env(
                "FERRYDESK_PROCESSES_DIR",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../processes"),
            )
            .env("FERRYDESK_JOB_BACKOFF_MS", "200")
            .env(
                "FERRYDESK_PLUGINS_DIR",
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugins"),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().context("spawning ferrydesk")?;
        let stderr = child.stderr.take().ok_or_else(|| anyhow!("no stderr"))?;
        let mut lines = BufReader::new(stderr).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && let Some(u) = v.pointer("/fields/url").and_then(|u| u.as_str())
                {
                    return Ok::<_, anyhow::Error>(u.to_owned());
                }
                eprintln!("[server] {line}");
            }
            bail!("server exited before listening")
        })
        .await
        .context("server start timed out")??;
        // Keep draining logs so the server never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("\"ERROR\"") || line.contains("\"WARN\"") {
                    eprintln!("[server] {line}");
                }
            }
        });
        self.base = url;
        self.child = Some(child);
        Ok(())
    }

    /// Kills the process with SIGKILL (a crash), without any shutdown.
    pub async fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill().await;
        }
    }

    /// Starts the process again on the same database and data directory.
    pub async fn restart(&mut self) -> Result<()> {
        self.kill().await;
        self.spawn().await
    }

    pub fn api(&self) -> Api {
        Api::new(&self.base)
    }

    pub async fn login(&self, user: &str, password: &str) -> Result<Api> {
        let mut a = self.api();
        a.login(user, password).await?;
        Ok(a)
    }
}

/// An HTTP client for one principal.
#[derive(Clone)]
pub struct Api {
    pub base: String,
    http: reqwest::Client,
    pub cookie: Option<String>,
    pub csrf: Option<String>,
    pub bearer: Option<String>,
    pub user: Option<Value>,
}

/// A response: status and JSON body (or `null`).
#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub body: Value,
    pub text: String,
    pub headers: reqwest::header::HeaderMap,
}

impl Resp {
    pub fn ok(self) -> Result<Value> {
        if (200..300).contains(&self.status) {
            Ok(self.body)
        } else {
            bail!("HTTP {}: {}", self.status, self.text)
        }
    }
    pub fn code(&self) -> &str {
        self.body
            .get("code")
            .and_then(|c| c.as_str())
            .unwrap_or_default()
    }
}

impl Api {
    pub fn new(base: &str) -> Api {
        Api {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(4)
                .build()
                .expect("http client"),
            cookie: None,
            csrf: None,
            bearer: None,
            user: None,
        }
    }

    pub fn with_bearer(&self, token: &str) -> Api {
        let mut a = Api::new(&self.base);
        a.bearer = Some(token.to_owned());
        a
    }

    pub fn id(&self) -> String {
        self.user
            .as_ref()
            .and_then(|u| u["id"].as_str())
            .unwrap_or_default()
            .to_owned()
    }

    pub async fn login(&mut self, user: &str, password: &str) -> Result<()> {
        let r = self
            .http
            .post(format!("{}/api/v1/auth/login", self.base))
            .json(&json!({"username": user, "password": password}))
            .send()
            .await?;
        let status = r.status().as_u16();
        let cookie = r
            .headers()
            .get("set-cookie")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.split(';').next().unwrap_or_default().to_owned());
        let body: Value = r.json().await.unwrap_or(Value::Null);
        if status != 200 {
            bail!("login {user}: HTTP {status} {body}");
        }
        self.cookie = cookie;
        self.csrf = body["csrf_token"].as_str().map(str::to_owned);
        self.user = Some(body["user"].clone());
        Ok(())
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut b = self
            .http
            .request(method.clone(), format!("{}{}", self.base, path));
        if let Some(c) = &self.cookie {
            b = b.header("cookie", c);
        }
        if let Some(t) = &self.bearer {
            b = b.bearer_auth(t);
        }
        if method != reqwest::Method::GET
            && let Some(c) = &self.csrf
        {
            b = b.header("x-csrf-token", c);
        }
        b
    }

    pub async fn send(&self, b: reqwest::RequestBuilder) -> Result<Resp> {
        let r = b.send().await?;
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let text = r.text().await?;
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Ok(Resp {
            status,
            body,
            text,
            headers,
        })
    }

    /// A write with an `Idempotency-Key`.
    pub async fn send_keyed(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
        key: &str,
    ) -> Result<Resp> {
        self.send(
            self.req(method, path)
                .header("idempotency-key", key)
                .json(body),
        )
        .await
    }

    /// The request a keyed write sends, to send it in ways `send` does not (dropped early).
    pub fn keyed_request(
        &self,
        method: reqwest::Method,
        path: &str,
        body: &Value,
        key: &str,
    ) -> reqwest::RequestBuilder {
        self.req(method, path)
            .header("idempotency-key", key)
            .json(body)
    }

    pub async fn get(&self, path: &str) -> Result<Resp> {
        self.send(self.req(reqwest::Method::GET, path)).await
    }
    pub async fn post(&self, path: &str, body: Value) -> Result<Resp> {
        self.send(self.req(reqwest::Method::POST, path).json(&body))
            .await
    }
    pub async fn post_empty(&self, path: &str) -> Result<Resp> {
        self.send(self.req(reqwest::Method::POST, path)).await
    }
    pub async fn put(&self, path: &str, body: Value) -> Result<Resp> {
        self.send(self.req(reqwest::Method::PUT, path).json(&body))
            .await
    }
    pub async fn patch(&self, path: &str, body: Value) -> Result<Resp> {
        self.send(self.req(reqwest::Method::PATCH, path).json(&body))
            .await
    }
    pub async fn delete(&self, path: &str) -> Result<Resp> {
        self.send(self.req(reqwest::Method::DELETE, path)).await
    }
    /// Sends a raw body with a content type.
    pub async fn raw(
        &self,
        method: reqwest::Method,
        path: &str,
        content_type: &str,
        body: Vec<u8>,
    ) -> Result<Resp> {
        self.send(
            self.req(method, path)
                .header("content-type", content_type)
                .body(body),
        )
        .await
    }
    pub async fn upload(
        &self,
        path: &str,
        filename: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<Resp> {
        let part = reqwest::multipart::Part::bytes(bytes)
            .file_name(filename.to_owned())
            .mime_str(content_type)?;
        let form = reqwest::multipart::Form::new().part("file", part);
        self.send(self.req(reqwest::Method::POST, path).multipart(form))
            .await
    }

    /// Accepts a chat and finishes it (an operator who is active).
    pub async fn accept_and_finish(&self, chat: &str) -> Result<()> {
        self.post_empty(&format!("/api/v1/chats/{chat}/accept"))
            .await?
            .ok()?;
        self.post_empty(&format!("/api/v1/chats/{chat}/finish"))
            .await?
            .ok()?;
        Ok(())
    }

    /// Sets a contact's name and phone.
    pub async fn set_contact_phone(&self, contact: &str, name: &str, phone: &str) -> Result<()> {
        self.put(
            &format!("/api/v1/contacts/{contact}"),
            json!({"name": name, "phone": phone}),
        )
        .await?
        .ok()?;
        Ok(())
    }

    pub async fn set_status(&self, status: &str) -> Result<()> {
        self.put("/api/v1/me/status", json!({"status": status}))
            .await?
            .ok()?;
        Ok(())
    }

    /// Opens the operator WebSocket.
    pub async fn ws(&self) -> Result<Ws> {
        let url = format!("{}/api/v1/ws", self.base.replace("http://", "ws://"));
        let mut req = url.into_client_request()?;
        if let Some(c) = &self.cookie {
            req.headers_mut().insert("cookie", c.parse()?);
        }
        if let Some(t) = &self.bearer {
            req.headers_mut()
                .insert("authorization", format!("Bearer {t}").parse()?);
        }
        let (stream, _) = tokio_tungstenite::connect_async(req).await?;
        let mut ws = Ws { stream };
        let hello = ws
            .next_event(Duration::from_secs(5))
            .await?
            .ok_or_else(|| anyhow!("no hello"))?;
        assert_eq!(hello["type"], "hello");
        Ok(ws)
    }
}

/// A WebSocket of events.
pub struct Ws {
    stream: tokio_tungstenite::WebSocketStream<
        tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>,
    >,
}

impl Ws {
    pub async fn open(url: &str) -> Result<Ws> {
        let (stream, _) = tokio_tungstenite::connect_async(url).await?;
        Ok(Ws { stream })
    }

    /// The next JSON event, or `None` when none arrives within `wait`.
    pub async fn next_event(&mut self, wait: Duration) -> Result<Option<Value>> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(left, self.stream.next()).await {
                Err(_) => return Ok(None),
                Ok(None) => bail!("socket closed"),
                Ok(Some(m)) => match m? {
                    tokio_tungstenite::tungstenite::Message::Text(t) => {
                        return Ok(Some(serde_json::from_str(&t)?));
                    }
                    tokio_tungstenite::tungstenite::Message::Ping(p) => {
                        self.stream
                            .send(tokio_tungstenite::tungstenite::Message::Pong(p))
                            .await?;
                    }
                    tokio_tungstenite::tungstenite::Message::Close(_) => bail!("socket closed"),
                    _ => {}
                },
            }
        }
    }

    /// Waits for an event of `kind` matching `pred`, skipping others.
    pub async fn wait_for(
        &mut self,
        kind: &str,
        wait: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Result<Value> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_event(left).await? {
                Some(e) if e["type"] == kind && pred(&e) => return Ok(e),
                Some(_) => continue,
                None => bail!("no {kind} event within {wait:?}"),
            }
        }
    }

    /// All events arriving within `wait`.
    pub async fn drain(&mut self, wait: Duration) -> Result<Vec<Value>> {
        let mut out = Vec::new();
        while let Some(e) = self.next_event(wait).await? {
            out.push(e);
        }
        Ok(out)
    }
}

/// A desk with an admin, a queue, a widget and an API channel, and `n` operators.
pub struct Fixture {
    pub admin: Api,
    pub queue: String,
    pub widget_key: String,
    pub widget_channel: String,
    pub api_channel: String,
    pub api_token: String,
    pub operators: Vec<Api>,
}

pub struct FixtureOptions {
    pub operators: usize,
    pub routing_rule: &'static str,
    pub accept_timeout_secs: i64,
}

impl Default for FixtureOptions {
    fn default() -> Self {
        FixtureOptions {
            operators: 2,
            routing_rule: "all_operators",
            accept_timeout_secs: 300,
        }
    }
}

impl Fixture {
    pub async fn new(server: &Server, opts: FixtureOptions) -> Result<Fixture> {
        let admin = server.login("admin", ADMIN_PASSWORD).await?;
        let mut ids = Vec::new();
        for i in 0..opts.operators {
            let u = admin
                .post("/api/v1/users", json!({"username": format!("op{i}"), "display_name": format!("Operator {i}"), "password": PASSWORD, "role": "operator"}))
                .await?
                .ok()?;
            ids.push(u["id"].as_str().unwrap_or_default().to_owned());
        }
        let q = admin
            .post("/api/v1/queues", json!({"name": "Support", "routing_rule": opts.routing_rule, "accept_timeout_secs": opts.accept_timeout_secs, "members": ids}))
            .await?
            .ok()?;
        let queue = q["id"].as_str().unwrap_or_default().to_owned();
        let w = admin
            .post(
                "/api/v1/channels",
                json!({"kind": "widget", "name": "Website", "queue_id": queue}),
            )
            .await?
            .ok()?;
        let a = admin
            .post(
                "/api/v1/channels",
                json!({"kind": "api", "name": "API", "queue_id": queue}),
            )
            .await?
            .ok()?;
        let mut operators = Vec::new();
        for i in 0..opts.operators {
            operators.push(server.login(&format!("op{i}"), PASSWORD).await?);
        }
        Ok(Fixture {
            admin,
            queue,
            widget_key: w["channel"]["public_key"]
                .as_str()
                .unwrap_or_default()
                .to_owned(),
            widget_channel: w["channel"]["id"].as_str().unwrap_or_default().to_owned(),
            api_channel: a["channel"]["id"].as_str().unwrap_or_default().to_owned(),
            api_token: a["api_token"].as_str().unwrap_or_default().to_owned(),
            operators,
        })
    }

    /// The API channel as an integration sees it.
    pub fn channel(&self) -> Api {
        self.admin.with_bearer(&self.api_token)
    }

    /// A message from `sender` named `name` on the API channel; answers the stored message
    /// (`message_id`, `chat_id`, `contact_id`, …).
    pub async fn inbound_from(
        &self,
        external_id: &str,
        sender: &str,
        name: &str,
        text: &str,
    ) -> Result<Value> {
        self.channel()
            .post(
                "/api/v1/channel/messages",
                json!({"external_id": external_id, "sender": {"id": sender, "name": name}, "text": text}),
            )
            .await?
            .ok()
    }

    /// Posts a client message through the API channel (the sender named `Client <sender>`).
    pub async fn inbound(&self, external_id: &str, sender: &str, text: &str) -> Result<Value> {
        self.inbound_from(external_id, sender, &format!("Client {sender}"), text)
            .await
    }
}

/// A widget visitor speaking the widget API.
pub struct Visitor {
    pub api: Api,
    pub token: String,
}

impl Visitor {
    pub async fn new(base: &str, key: &str) -> Result<Visitor> {
        let api = Api::new(base);
        let s = api
            .post("/widget/v1/sessions", json!({"key": key}))
            .await?
            .ok()?;
        let token = s["token"].as_str().unwrap_or_default().to_owned();
        Ok(Visitor {
            api: api.with_bearer(&token),
            token,
        })
    }
    pub async fn send(&self, text: &str) -> Result<Value> {
        self.api
            .post(
                "/widget/v1/messages",
                json!({"text": text, "client_id": uuid::Uuid::new_v4().to_string()}),
            )
            .await?
            .ok()
    }
    pub async fn ws(&self) -> Result<Ws> {
        Ws::open(&format!(
            "{}/widget/v1/ws?token={}",
            self.api.base.replace("http://", "ws://"),
            self.token
        ))
        .await
    }
}
