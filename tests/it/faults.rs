//! Storage faults a real deployment meets, recovered without a restart: the SQLite disk fills
//! up and is freed, the data directory turns read-only and back, PostgreSQL becomes
//! unreachable and comes back. Every answer in between is a fast `503 storage_unavailable`
//! with `Retry-After`, and every acknowledged message is stored exactly once.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use ferrydesk_tests::{Backend, Fixture, FixtureOptions};
use serde_json::json;

/// A tmpfs mounted over a directory, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// Mounts a tmpfs of `mib` MiB over `dir`, or explains why not: mounting needs root,
    /// which the CI machine has. Elsewhere the test is skipped with a message, unless
    /// `FERRYDESK_REQUIRE_MOUNT=1`.
    fn mount(dir: &Path, mib: u32) -> Result<Option<Tmpfs>> {
        let size = format!("size={mib}m");
        Self::run_mount(&["-t", "tmpfs", "-o", &size, "tmpfs"], None, dir)
    }

    /// Binds `src` at `dst` (unmounted on drop), or skips like [`Tmpfs::mount`].
    fn bind(src: &Path, dst: &Path) -> Result<Option<Tmpfs>> {
        Self::run_mount(&["--bind"], Some(src), dst)
    }

    fn run_mount(args: &[&str], src: Option<&Path>, at: &Path) -> Result<Option<Tmpfs>> {
        let mut cmd = std::process::Command::new("mount");
        cmd.args(args);
        if let Some(src) = src {
            cmd.arg(src);
        }
        match cmd.arg(at).output() {
            Ok(o) if o.status.success() => Ok(Some(Tmpfs(at.to_owned()))),
            other => {
                let why = match other {
                    Ok(o) => String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                    Err(e) => e.to_string(),
                };
                if std::env::var("FERRYDESK_REQUIRE_MOUNT").as_deref() == Ok("1") {
                    bail!("cannot mount (FERRYDESK_REQUIRE_MOUNT=1): {why}");
                }
                eprintln!("SKIPPED: cannot mount ({why}); run as root to test disk faults");
                Ok(None)
            }
        }
    }

    fn remount(&self, opt: &str) -> Result<()> {
        let o = std::process::Command::new("mount")
            .args(["-o", &format!("remount,{opt}")])
            .arg(&self.0)
            .output()?;
        if !o.status.success() {
            bail!("remount {opt}: {}", String::from_utf8_lossy(&o.stderr));
        }
        Ok(())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// A plain answer with its headers, timed.
struct Answer {
    status: u16,
    code: String,
    message: String,
    retry_after: Option<String>,
    took: Duration,
}

async fn call(req: reqwest::RequestBuilder) -> Result<Answer> {
    let t = Instant::now();
    let r = req.send().await?;
    let status = r.status().as_u16();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let text = r.text().await?;
    let body: serde_json::Value = serde_json::from_str(&text).unwrap_or(json!(text));
    Ok(Answer {
        status,
        code: body["code"].as_str().unwrap_or_default().to_owned(),
        message: body["message"]
            .as_str()
            .or(body.as_str())
            .unwrap_or_default()
            .to_owned(),
        retry_after,
        took: t.elapsed(),
    })
}

/// Posts message `n` to an API-channel conversation of its own.
fn post(fx: &Fixture, http: &reqwest::Client, n: usize) -> reqwest::RequestBuilder {
    http.post(format!("{}/api/v1/channel/messages", fx.admin.base))
        .bearer_auth(&fx.api_token)
        .json(&json!({
            "external_id": format!("full-{n}"),
            "sender": {"id": format!("s-{}", n % 40), "name": "Client"},
            "text": format!("message {n} {}", "x".repeat(2000)),
        }))
}

async fn stored_messages(db: &ferrydesk_tests::Db, prefix: &str) -> Result<i64> {
    db.scalar_i64(&format!(
        "SELECT COUNT(*) FROM messages WHERE body LIKE '{prefix}%'"
    ))
    .await
}

/// The disk under the SQLite file fills up under load; once space is freed, writes resume
/// on the same process. With the free-space guard off, SQLite itself runs out mid-write: 503
/// `storage_unavailable` naming the full disk, with `Retry-After`, reads still served, and
/// exactly the acknowledged messages stored. With the guard on (restarted), writes and
/// `/readyz` answer 503 before SQLite runs out, and resume when space is freed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_disk_full_recovers_without_restart() -> Result<()> {
    let Some(db) = ferrydesk_tests::Db::new(Backend::Sqlite).await? else {
        return Ok(());
    };
    let Some(_fs) = Tmpfs::mount(db.dir.path(), 160)? else {
        return Ok(());
    };
    db.add_admin().await?;
    let filler = db.dir.path().join("filler");
    let mut acknowledged = 0usize;
    let mut n = 0usize;
    {
        let server =
            ferrydesk_tests::Server::start_with(&db, &[("FERRYDESK_MIN_FREE_DISK_MB", "0")])
                .await?;
        let pid = server.pid();
        let fx = Fixture::new(&server, FixtureOptions::default()).await?;
        let http = reqwest::Client::new();

        // Fill the disk but for ~1 MiB, then keep posting until writes fail.
        fill(&filler, 1 << 20)?;
        let mut refused = Vec::new();
        let started = Instant::now();
        while refused.len() < 20 {
            if started.elapsed() > Duration::from_secs(120) {
                bail!("the disk never filled: {acknowledged} messages acknowledged");
            }
            let a = call(post(&fx, &http, n)).await?;
            n += 1;
            match a.status {
                200..=299 => acknowledged += 1,
                _ => refused.push(a),
            }
        }
        for a in &refused {
            assert_eq!(
                (a.status, a.code.as_str(), a.retry_after.as_deref()),
                (503, "storage_unavailable", Some("2")),
                "{}",
                a.message
            );
            assert!(a.message.contains("disk is full"), "{}", a.message);
            assert!(a.took < Duration::from_secs(3), "took {:?}", a.took);
        }
        // Reads are still served.
        let chats = fx.admin.get("/api/v1/chats").await?;
        assert_eq!(chats.status, 200, "{}", chats.text);

        // Space is freed: the same process writes again, within seconds.
        std::fs::remove_file(&filler)?;
        let back = Instant::now();
        loop {
            let a = call(post(&fx, &http, n)).await?;
            n += 1;
            if a.status < 300 {
                acknowledged += 1;
                break;
            }
            if back.elapsed() > Duration::from_secs(10) {
                bail!(
                    "writes did not resume within 10 s of freeing space: {} {}",
                    a.status,
                    a.message
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        eprintln!(
            "disk full (guard off): {acknowledged} acknowledged, {} refused; writes resumed {:?} after space was freed",
            refused.len(),
            back.elapsed()
        );
        for _ in 0..20 {
            let a = call(post(&fx, &http, n)).await?;
            n += 1;
            assert!(a.status < 300, "{} {}", a.status, a.message);
            acknowledged += 1;
        }
        assert_eq!(
            call(http.get(format!("{}/readyz", fx.admin.base)))
                .await?
                .status,
            200
        );
        assert_eq!(server.pid(), pid, "the server restarted");
        // Exactly the acknowledged messages are stored: none lost, none from a refused call.
        assert_eq!(stored_messages(&db, "message ").await?, acknowledged as i64);
    }

    // The guard on: 4 MiB.
    let server =
        ferrydesk_tests::Server::start_with(&db, &[("FERRYDESK_MIN_FREE_DISK_MB", "4")]).await?;
    let pid = server.pid();
    let admin = server
        .login("admin", ferrydesk_tests::ADMIN_PASSWORD)
        .await?;
    let http = reqwest::Client::new();
    let ready = || http.get(format!("{}/readyz", admin.base));
    assert_eq!(call(ready()).await?.status, 200);
    fill(&filler, 1 << 20)?;
    let low = Instant::now();
    let r = loop {
        let r = call(ready()).await?;
        if r.status != 200 || low.elapsed() > Duration::from_secs(10) {
            break r;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(r.status, 503, "readyz with 1 MiB free: {}", r.message);
    assert!(r.message.contains("disk is full"), "{}", r.message);
    assert!(r.took < Duration::from_secs(1), "readyz took {:?}", r.took);
    let w = admin
        .post("/api/v1/queues", json!({"name": "Low", "routing_rule": "all_operators", "accept_timeout_secs": 60, "members": []}))
        .await?;
    assert_eq!(
        (w.status, w.code()),
        (503, "storage_unavailable"),
        "{}",
        w.text
    );
    assert_eq!(admin.get("/api/v1/queues").await?.status, 200);
    std::fs::remove_file(&filler)?;
    let freed = Instant::now();
    while call(ready()).await?.status != 200 {
        if freed.elapsed() > Duration::from_secs(10) {
            bail!("readyz still 503 10 s after space was freed");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    admin
        .post("/api/v1/queues", json!({"name": "Low", "routing_rule": "all_operators", "accept_timeout_secs": 60, "members": []}))
        .await?
        .ok()?;
    assert_eq!(server.pid(), pid, "the server restarted");
    assert_eq!(stored_messages(&db, "message ").await?, acknowledged as i64);
    Ok(())
}

/// Fills the file system under `path` but for `leave` bytes, with a file at `path`.
fn fill(path: &Path, leave: u64) -> Result<()> {
    use std::io::Write as _;
    let dir = path.parent().context("a file in a directory")?;
    let mut left = fs_free(dir)?.saturating_sub(leave);
    let mut f = std::fs::File::create(path)?;
    let chunk = vec![0u8; 1 << 20];
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        f.write_all(&chunk[..n])?;
        left -= n as u64;
    }
    f.sync_all()?;
    Ok(())
}

fn fs_free(dir: &Path) -> Result<u64> {
    let out = std::process::Command::new("df")
        .args(["--output=avail", "-B1"])
        .arg(dir)
        .output()
        .context("df")?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .context("df output")
}

/// A read-only data directory at start: the node refuses to start with one line naming the
/// cause (it used to start, answer `/readyz` 200 and fail every write with 500).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sqlite_read_only_data_directory() -> Result<()> {
    let Some(db) = ferrydesk_tests::Db::new(Backend::Sqlite).await? else {
        return Ok(());
    };
    db.add_admin().await?;
    // The same directory, mounted read-only elsewhere.
    let ro = tempfile::tempdir()?;
    let Some(view) = Tmpfs::bind(db.dir.path(), ro.path())? else {
        return Ok(());
    };
    view.remount("bind,ro")?;
    let url = db.url.replace(
        &db.dir.path().display().to_string(),
        &ro.path().display().to_string(),
    );
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new(ferrydesk_tests::server_bin())
            .arg("serve")
            .env("FERRYDESK_LISTEN", "127.0.0.1:0")
            .env("FERRYDESK_DATABASE_URL", &url)
            .env("FERRYDESK_DATA_DIR", ro.path())
            .env("RUST_BACKTRACE", "1")
            .output(),
    )
    .await
    .context("a server on a read-only directory did not exit within 20 s")??;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("error: ") && last.to_lowercase().contains("read-only file system"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("backtrace") && !stderr.contains("panicked"),
        "{stderr}"
    );
    drop(view);
    // The same files on the writable mount serve as before.
    let server = ferrydesk_tests::Server::start(&db).await?;
    let admin = server
        .login("admin", ferrydesk_tests::ADMIN_PASSWORD)
        .await?;
    admin
        .post("/api/v1/queues", json!({"name": "Q", "routing_rule": "all_operators", "accept_timeout_secs": 60, "members": []}))
        .await?
        .ok()?;
    Ok(())
}

/// A TCP forwarder between the server and PostgreSQL that the test can cut (every open
/// connection reset, new ones refused) and restore on the same port.
struct Cable {
    addr: std::net::SocketAddr,
    upstream: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Cable {
    async fn new(upstream: &str) -> Result<Cable> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let mut c = Cable {
            addr,
            upstream: upstream.to_owned(),
            task: None,
        };
        c.serve(listener);
        Ok(c)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let upstream = self.upstream.clone();
        self.task = Some(tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((mut down, _)) = listener.accept().await {
                let upstream = upstream.clone();
                conns.spawn(async move {
                    if let Ok(mut up) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut down, &mut up).await;
                    }
                });
            }
        }));
    }

    /// Resets every connection and refuses new ones.
    fn cut(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }

    async fn restore(&mut self) -> Result<()> {
        let listener = tokio::net::TcpListener::bind(self.addr).await?;
        self.serve(listener);
        Ok(())
    }
}

/// PostgreSQL unreachable: `/readyz` and API calls answer 503 within seconds instead of
/// hanging for the pool's 30 s, and the node serves again by itself when it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_unreachable_fails_fast_and_recovers() -> Result<()> {
    let Some(mut db) = ferrydesk_tests::Db::new(Backend::Postgres).await? else {
        return Ok(());
    };
    let upstream = db
        .url
        .split('@')
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .context("PostgreSQL URL host")?
        .to_owned();
    let mut cable = Cable::new(&upstream).await?;
    db.url = db.url.replacen(&upstream, &cable.addr.to_string(), 1);
    db.add_admin().await?;
    let server = ferrydesk_tests::Server::start(&db).await?;
    let pid = server.pid();
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let http = reqwest::Client::new();
    assert!(call(post(&fx, &http, 0)).await?.status < 300);

    cable.cut();
    let cut = Instant::now();
    // Within the watchdog's probe, every call fails fast.
    let mut first_fast = None;
    while first_fast.is_none() {
        let a = call(post(&fx, &http, 1)).await?;
        if a.status == 503 && a.took < Duration::from_secs(1) {
            assert_eq!(
                (a.code.as_str(), a.retry_after.as_deref()),
                ("storage_unavailable", Some("2")),
                "{}",
                a.message
            );
            assert!(a.message.contains("cannot be reached"), "{}", a.message);
            first_fast = Some(cut.elapsed());
        } else {
            assert!(
                a.status >= 500,
                "a write succeeded with the database cut off"
            );
        }
        if cut.elapsed() > Duration::from_secs(10) {
            bail!(
                "calls still not failing fast 10 s after the cut: {} in {:?}",
                a.status,
                a.took
            );
        }
    }
    let r = call(http.get(format!("{}/readyz", fx.admin.base))).await?;
    assert_eq!(r.status, 503, "{}", r.message);
    assert!(r.took < Duration::from_secs(1), "readyz took {:?}", r.took);
    let t = Instant::now();
    let chats = fx.admin.get("/api/v1/chats").await?;
    assert_eq!(
        (chats.status, chats.code()),
        (503, "storage_unavailable"),
        "{}",
        chats.text
    );
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "chats took {:?}",
        t.elapsed()
    );

    cable.restore().await?;
    let back = Instant::now();
    loop {
        let a = call(post(&fx, &http, 2)).await?;
        if a.status < 300 {
            break;
        }
        if back.elapsed() > Duration::from_secs(10) {
            bail!("writes did not resume: {} {}", a.status, a.message);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!(
        "postgres cut: failing fast after {:?}; serving again {:?} after it came back",
        first_fast.unwrap_or_default(),
        back.elapsed()
    );
    assert_eq!(
        call(http.get(format!("{}/readyz", fx.admin.base)))
            .await?
            .status,
        200
    );
    assert_eq!(server.pid(), pid, "the server restarted");
    assert_eq!(stored_messages(&db, "message ").await?, 2);
    Ok(())
}

/// A node's connection to the other nodes' events (PostgreSQL `LISTEN`) is cut five times
/// while chats arrive through the other node: the operator's socket on it gets `resync` after
/// each reconnect, and a client that reloads its inbox on `resync` sees every offer — none lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_listener_drops_lose_no_offer() -> Result<()> {
    const CHATS: usize = 120;
    const CUTS: usize = 5;
    let Some(db) = ferrydesk_tests::Db::new(Backend::Postgres).await? else {
        return Ok(());
    };
    db.add_admin().await?;
    let a = ferrydesk_tests::Server::start(&db).await?;
    let b = ferrydesk_tests::Server::start(&db).await?;
    let fx = Fixture::new(
        &a,
        FixtureOptions {
            operators: 1,
            ..Default::default()
        },
    )
    .await?;
    let op = b.login("op0", ferrydesk_tests::PASSWORD).await?;
    op.set_status("active").await?;
    let mut ws = op.ws().await?;

    let channel = fx.channel();
    let poster = tokio::spawn(async move {
        let mut created = std::collections::BTreeSet::new();
        for i in 0..CHATS {
            let m = channel
                .post(
                    "/api/v1/channel/messages",
                    json!({"external_id": format!("l-{i}"), "sender": {"id": format!("l-{i}"), "name": "Client"}, "text": "hello"}),
                )
                .await?
                .ok()?;
            created.insert(m["chat_id"].as_str().unwrap_or_default().to_owned());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        Ok::<_, anyhow::Error>(created)
    });
    let mut conn = db.sql().await?;
    let killer = tokio::spawn(async move {
        let mut killed = 0;
        for _ in 0..CUTS {
            tokio::time::sleep(Duration::from_millis(150)).await;
            killed += sqlx::query_scalar::<_, i64>(
                "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
            )
            .fetch_one(&mut conn)
            .await?;
        }
        Ok::<_, anyhow::Error>(killed)
    });

    let mut seen = std::collections::BTreeSet::new();
    let mut resyncs = 0;
    let reload = |seen: &mut std::collections::BTreeSet<String>, inbox: serde_json::Value| {
        for c in inbox["new_chats"].as_array().into_iter().flatten() {
            seen.insert(c["id"].as_str().unwrap_or_default().to_owned());
        }
    };
    let handle = |ev: serde_json::Value, seen: &mut std::collections::BTreeSet<String>| -> bool {
        match ev["type"].as_str() {
            Some("chat_offered") => {
                seen.insert(ev["chat"]["id"].as_str().unwrap_or_default().to_owned());
                false
            }
            Some("resync") => true,
            _ => false,
        }
    };
    while !poster.is_finished() {
        if let Some(ev) = ws.next_event(Duration::from_millis(200)).await?
            && handle(ev, &mut seen)
        {
            resyncs += 1;
            reload(&mut seen, op.get("/api/v1/me/inbox").await?.ok()?);
        }
    }
    let created = poster.await??;
    let killed = killer.await??;
    // Until every created chat is seen, or 10 s pass with some missing.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !created.is_subset(&seen) && Instant::now() < deadline {
        if let Some(ev) = ws.next_event(Duration::from_millis(200)).await?
            && handle(ev, &mut seen)
        {
            resyncs += 1;
            reload(&mut seen, op.get("/api/v1/me/inbox").await?.ok()?);
        }
    }
    let missing: Vec<_> = created.difference(&seen).collect();
    eprintln!(
        "listener cuts: {killed} LISTEN connections ended, {resyncs} resyncs, {} chats, {} missing",
        created.len(),
        missing.len()
    );
    assert_eq!(created.len(), CHATS);
    assert!(killed >= CUTS as i64, "only {killed} listeners were ended");
    assert!(resyncs >= 1, "no resync after {killed} cuts");
    assert!(missing.is_empty(), "offers lost: {missing:?}");
    Ok(())
}

/// Freeing a slot offers the waiting chats of an "all operators" queue only to an operator who
/// was not offered them already (issue 15, row 7: every finished chat re-offered every waiting
/// chat, 25,000 offers for 300 chats).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn freed_capacity_offers_each_waiting_chat_once() -> Result<()> {
    const WAITING: usize = 20;
    let (_db, server) = crate::setup!(Backend::Sqlite);
    let fx = Fixture::new(
        &server,
        FixtureOptions {
            operators: 1,
            ..Default::default()
        },
    )
    .await?;
    let op = &fx.operators[0];
    fx.admin
        .patch(
            &format!("/api/v1/users/{}", op.id()),
            json!({"chat_limit": 3}),
        )
        .await?
        .ok()?;
    op.set_status("active").await?;
    let mut mine: Vec<String> = Vec::new();
    for i in 0..3 {
        let m = fx
            .inbound(&format!("mine-{i}"), &format!("m-{i}"), "hi")
            .await?;
        let chat = m["chat_id"].as_str().unwrap_or_default().to_owned();
        op.post_empty(&format!("/api/v1/chats/{chat}/accept"))
            .await?
            .ok()?;
        mine.push(chat);
    }
    // At the limit: these wait, offered to nobody.
    for i in 0..WAITING {
        fx.inbound(&format!("wait-{i}"), &format!("w-{i}"), "waiting")
            .await?;
    }
    let mut ws = op.ws().await?;
    // From the limit to a free slot: every waiting chat is offered, once.
    finish_then_mark(op, &mine[0], &mine[2], "marker-1").await?;
    assert_eq!(offers_until(&mut ws, "marker-1").await?, WAITING);
    // Below the limit already: they were offered; nothing is sent again.
    finish_then_mark(op, &mine[1], &mine[2], "marker-2").await?;
    assert_eq!(offers_until(&mut ws, "marker-2").await?, 0);
    Ok(())
}

/// Finishes `chat`, then replies `marker` in `other`: the reply's event reaches the operator's
/// socket after every event of the finish (a socket gets events in commit order).
async fn finish_then_mark(
    op: &ferrydesk_tests::Api,
    chat: &str,
    other: &str,
    marker: &str,
) -> Result<()> {
    op.post_empty(&format!("/api/v1/chats/{chat}/finish"))
        .await?
        .ok()?;
    op.post(
        &format!("/api/v1/chats/{other}/messages"),
        json!({"text": marker}),
    )
    .await?
    .ok()?;
    Ok(())
}

/// `chat_offered` events on `ws` before the operator's `marker` message.
async fn offers_until(ws: &mut ferrydesk_tests::Ws, marker: &str) -> Result<usize> {
    let mut offers = 0;
    loop {
        let ev = ws
            .next_event(Duration::from_secs(10))
            .await?
            .context("no marker within 10 s")?;
        match ev["type"].as_str() {
            Some("chat_offered") => offers += 1,
            Some("message_created") if ev["message"]["body"] == marker => return Ok(offers),
            _ => {}
        }
    }
}

/// Two nodes that share only the PostgreSQL database: with `blob_store = "database"`, a file
/// uploaded through node A downloads through node B (issue 15, row 8), and no node keeps it
/// on its own disk.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_files_shared_across_nodes() -> Result<()> {
    let Some(db) = ferrydesk_tests::Db::new(Backend::Postgres).await? else {
        return Ok(());
    };
    db.add_admin().await?;
    let dir_b = tempfile::tempdir()?;
    let a =
        ferrydesk_tests::Server::start_with(&db, &[("FERRYDESK_BLOB_STORE", "database")]).await?;
    let b = ferrydesk_tests::Server::start_with(
        &db,
        &[
            ("FERRYDESK_BLOB_STORE", "database"),
            ("FERRYDESK_DATA_DIR", &dir_b.path().display().to_string()),
        ],
    )
    .await?;
    let fx = Fixture::new(
        &a,
        FixtureOptions {
            operators: 1,
            ..Default::default()
        },
    )
    .await?;
    let bytes = b"sku;qty\nparcel;2\n".repeat(100);
    let f = fx.operators[0]
        .upload("/api/v1/files", "order.csv", "text/csv", bytes.clone())
        .await?
        .ok()?;
    let fid = f["id"].as_str().unwrap_or_default().to_owned();
    let on_b = b.login("op0", ferrydesk_tests::PASSWORD).await?;
    let dl = reqwest::Client::new()
        .get(format!("{}/api/v1/files/{fid}", b.base))
        .header("cookie", on_b.cookie.clone().unwrap_or_default())
        .send()
        .await?;
    assert_eq!(dl.status(), 200);
    assert_eq!(dl.bytes().await?.to_vec(), bytes);
    // Nothing on either node's disk.
    for dir in [db.dir.path(), dir_b.path()] {
        let blobs = dir.join("blobs");
        let n = std::fs::read_dir(&blobs).map(|d| d.count()).unwrap_or(0);
        assert_eq!(n, 0, "{} has blobs", blobs.display());
    }
    assert_eq!(db.scalar_i64("SELECT COUNT(*) FROM blob_data").await?, 1);
    Ok(())
}
