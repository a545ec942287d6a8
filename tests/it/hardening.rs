//! What an operator of the server meets before any user does: start-up errors as one line,
//! SQLite URLs without a mode, security headers on every kind of response, a token on `/metrics`.

use std::process::Stdio;

use anyhow::Result;
use ferrydesk_tests::{Backend, Db, Server, server_bin};

use crate::setup;

/// Runs `ferrydesk <args>` with `RUST_BACKTRACE=1` (as these machines set it) and returns
/// (success, stderr).
async fn run(args: &[&str], env: &[(&str, &str)]) -> Result<(bool, String)> {
    let mut cmd = tokio::process::Command::new(server_bin());
    cmd.args(args)
        .env("RUST_BACKTRACE", "1")
        .env_remove("FERRYDESK_DATABASE_URL")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().await?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

fn assert_one_line(stderr: &str, mentions: &str) {
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one line expected, got:\n{stderr}");
    assert!(lines[0].starts_with("error: "), "{stderr}");
    assert!(lines[0].contains(mentions), "{stderr}");
    assert!(!stderr.to_lowercase().contains("backtrace"), "{stderr}");
}

#[tokio::test]
async fn sqlite_url_without_mode_creates_the_file_and_its_directory() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let file = dir.path().join("not-yet").join("f.db");
    let url = format!("sqlite://{}", file.display());
    let (ok, stderr) = run(
        &["migrate"],
        &[
            ("FERRYDESK_DATABASE_URL", &url),
            ("FERRYDESK_DATA_DIR", &dir.path().display().to_string()),
        ],
    )
    .await?;
    assert!(ok, "{stderr}");
    assert!(file.exists(), "{} was not created", file.display());

    // The server itself starts on such a URL and writes to it.
    let db = Db::new(Backend::Sqlite).await?.expect("sqlite");
    db.add_admin().await?;
    let other = db.dir.path().join("second").join("g.db");
    let server = Server::start_with(
        &db,
        &[(
            "FERRYDESK_DATABASE_URL",
            &format!("sqlite://{}", other.display()),
        )],
    )
    .await?;
    assert_eq!(server.api().get("/healthz").await?.status, 200);
    assert!(other.exists());
    Ok(())
}

#[tokio::test]
async fn start_up_errors_print_one_line_without_a_backtrace() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let blocker = dir.path().join("a-file");
    std::fs::write(&blocker, b"x")?;
    // The database's directory cannot be created: it would be inside a regular file.
    let url = format!("sqlite://{}/f.db", blocker.display());
    let (ok, stderr) = run(&["migrate"], &[("FERRYDESK_DATABASE_URL", &url)]).await?;
    assert!(!ok);
    assert_one_line(&stderr, "a-file");

    // A configuration file TOML rejects (its message spans several lines with a caret).
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "listen = \"x\"\nunknown_key = 1\n")?;
    let (ok, stderr) = run(&["--config", &cfg.display().to_string(), "migrate"], &[]).await?;
    assert!(!ok);
    assert_one_line(&stderr, "unknown_key");

    // An unsupported database URL.
    let (ok, stderr) = run(&["migrate"], &[("FERRYDESK_DATABASE_URL", "mysql://x/y")]).await?;
    assert!(!ok);
    assert_one_line(&stderr, "unsupported database URL");
    Ok(())
}

#[tokio::test]
async fn every_kind_of_response_carries_its_security_headers() -> Result<()> {
    let (_db, server) = setup!(Backend::Sqlite);
    let http = reqwest::Client::new();
    let get = |path: &str| http.get(format!("{}{path}", server.base)).send();

    for page in ["/", "/chats/whatever", "/widget/demo"] {
        let r = get(page).await?;
        let h = r.headers();
        let csp = h
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(csp.contains("frame-ancestors 'none'"), "{page}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{page}: {csp}");
        assert!(!csp.contains("script-src 'self' 'unsafe-inline'"), "{page}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{page}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{page}");
        assert_eq!(h["x-frame-options"], "DENY", "{page}");
    }
    for api in [
        "/api/v1/auth/me",
        "/api/openapi.json",
        "/widget/v1/messages",
    ] {
        let r = get(api).await?;
        let h = r.headers();
        let csp = h
            .get("content-security-policy")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        assert!(csp.starts_with("default-src 'none'"), "{api}: {csp}");
        assert!(csp.contains("sandbox"), "{api}: {csp}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{api}");
    }
    // The widget script is embedded by other sites: no page policy, but never sniffed.
    let r = get("/widget.js").await?;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    assert!(r.headers().get("content-security-policy").is_none());
    Ok(())
}

#[tokio::test]
async fn metrics_can_require_a_token() -> Result<()> {
    let Some(db) = Db::new(Backend::Sqlite).await? else {
        return Ok(());
    };
    let server = Server::start_with(&db, &[("FERRYDESK_METRICS_TOKEN", "m-3tr1cs-secret")]).await?;
    let http = reqwest::Client::new();
    let url = format!("{}/metrics", server.base);
    assert_eq!(http.get(&url).send().await?.status(), 401);
    let wrong = http.get(&url).bearer_auth("m-3tr1cs-secreX").send().await?;
    assert_eq!(wrong.status(), 401);
    let right = http.get(&url).bearer_auth("m-3tr1cs-secret").send().await?;
    assert_eq!(right.status(), 200);
    Ok(())
}
