//! `ferrydesk backup` while the server runs, `ferrydesk restore` into a new data directory,
//! and every chat, message and file read back from a server started on it.

use anyhow::{Result, bail};
use ferrydesk_tests::{Backend, Fixture, FixtureOptions};
use serde_json::json;

async fn cli(args: &[&str], env: &[(&str, &std::path::Path)]) -> Result<(bool, String)> {
    let mut cmd = tokio::process::Command::new(ferrydesk_tests::server_bin());
    cmd.args(args)
        .env("RUST_BACKTRACE", "1")
        .env("FERRYDESK_LOG", "warn");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await?;
    Ok((
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    ))
}

async fn rows(db: &ferrydesk_tests::Db, sql: &str) -> Result<Vec<(String, String)>> {
    let mut c = db.sql().await?;
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(sql.to_owned()))
        .fetch_all(&mut c)
        .await?)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn backup_while_running_and_restore() -> Result<()> {
    let Some(db) = ferrydesk_tests::Db::new(Backend::Sqlite).await? else {
        return Ok(());
    };
    db.add_admin().await?;
    let server = ferrydesk_tests::Server::start(&db).await?;
    let fx = Fixture::new(
        &server,
        FixtureOptions {
            operators: 1,
            ..Default::default()
        },
    )
    .await?;
    let op = &fx.operators[0];
    op.set_status("active").await?;
    for i in 0..12 {
        fx.inbound(&format!("b-{i}"), &format!("s-{i}"), &format!("hello {i}"))
            .await?;
    }
    let chat = op.get("/api/v1/me/inbox").await?.ok()?["new_chats"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    op.post_empty(&format!("/api/v1/chats/{chat}/accept"))
        .await?
        .ok()?;
    let bytes: Vec<u8> = b"name;qty\nparcel;1\n".repeat(50);
    let f = op
        .upload("/api/v1/files", "order.csv", "text/csv", bytes.clone())
        .await?
        .ok()?;
    let fid = f["id"].as_str().unwrap_or_default().to_owned();
    op.post(
        &format!("/api/v1/chats/{chat}/messages"),
        json!({"text": "your order", "files": [fid]}),
    )
    .await?
    .ok()?;
    let before = rows(&db, "SELECT id, body FROM messages ORDER BY id").await?;

    // Writes go on while the backup runs.
    let channel = fx.channel();
    let writer = tokio::spawn(async move {
        let mut n = 0;
        for i in 0..40 {
            channel
                .post(
                    "/api/v1/channel/messages",
                    json!({"external_id": format!("w-{i}"), "sender": {"id": format!("w-{}", i % 5), "name": "Client"}, "text": format!("during {i}")}),
                )
                .await?
                .ok()?;
            n += 1;
        }
        Ok::<_, anyhow::Error>(n)
    });
    let work = tempfile::tempdir()?;
    let file = work.path().join("ferrydesk.backup");
    let data = db.dir.path();
    let url = std::path::PathBuf::from(&db.url);
    let (ok, said) = cli(
        &["backup", &file.display().to_string()],
        &[
            ("FERRYDESK_DATA_DIR", data),
            ("FERRYDESK_DATABASE_URL", &url),
        ],
    )
    .await?;
    assert!(ok, "{said}");
    assert!(said.contains("backup written"), "{said}");
    assert_eq!(writer.await??, 40);

    // Restore into a new data directory and start a server there.
    let restored_dir = tempfile::tempdir()?;
    let (ok, said) = cli(
        &["restore", &file.display().to_string()],
        &[("FERRYDESK_DATA_DIR", restored_dir.path())],
    )
    .await?;
    assert!(ok, "{said}");
    assert!(said.contains("restored"), "{said}");
    // Not over an existing database: one line, nothing changed.
    let (ok, said) = cli(
        &["restore", &file.display().to_string()],
        &[("FERRYDESK_DATA_DIR", restored_dir.path())],
    )
    .await?;
    assert!(!ok);
    assert_eq!(said.trim().lines().count(), 1, "{said}");
    assert!(
        said.starts_with("error: ") && said.contains("exists"),
        "{said}"
    );

    let restored = ferrydesk_tests::Db::sqlite_in(restored_dir);
    // Every message stored before the backup is there, with its text; what was written
    // during it is there or not, never changed; nothing else.
    let back = rows(&restored, "SELECT id, body FROM messages ORDER BY id").await?;
    let live = rows(&db, "SELECT id, body FROM messages ORDER BY id").await?;
    for m in &before {
        assert!(back.contains(m), "message {m:?} missing from the restore");
    }
    for m in &back {
        assert!(
            live.contains(m),
            "restored message {m:?} is not in the live database"
        );
    }
    let chats_live = rows(&db, "SELECT id, status FROM chats ORDER BY id").await?;
    let chats_back = rows(&restored, "SELECT id, status FROM chats ORDER BY id").await?;
    assert!(chats_back.len() >= 12, "{chats_back:?}");
    for c in &chats_back {
        assert!(chats_live.iter().any(|l| l.0 == c.0), "{c:?}");
    }
    eprintln!(
        "backup: {} of {} messages ({} before the backup), {} chats",
        back.len(),
        live.len(),
        before.len(),
        chats_back.len()
    );

    let server2 = ferrydesk_tests::Server::start(&restored).await?;
    let op2 = server2.login("op0", ferrydesk_tests::PASSWORD).await?;
    let view = op2.get(&format!("/api/v1/chats/{chat}")).await?.ok()?;
    let texts: Vec<&str> = view["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["body"].as_str())
        .collect();
    if !texts.contains(&"your order") {
        bail!("the restored chat lost the reply: {view}");
    }
    let dl = reqwest::Client::new()
        .get(format!("{}/api/v1/files/{fid}", server2.base))
        .header("cookie", op2.cookie.clone().unwrap_or_default())
        .send()
        .await?;
    assert_eq!(dl.status(), 200);
    assert_eq!(dl.bytes().await?.to_vec(), bytes);

    // A damaged backup is refused before anything is used.
    let mut damaged = std::fs::read(&file)?;
    let at = damaged.len() - 2048;
    let pos = damaged[..at]
        .windows(8)
        .rposition(|w| w == b"parcel;1")
        .unwrap_or(0);
    damaged[pos] ^= 1;
    let bad = work.path().join("damaged.backup");
    std::fs::write(&bad, damaged)?;
    let empty = tempfile::tempdir()?;
    let (ok, said) = cli(
        &["restore", &bad.display().to_string()],
        &[("FERRYDESK_DATA_DIR", empty.path())],
    )
    .await?;
    assert!(!ok && said.contains("checksum"), "{said}");
    Ok(())
}
