//! Authentication and RBAC: argon2id hashes, sessions with CSRF, throttled logins, API tokens,
//! role checks on every administrative surface.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use ferrydesk_tests::{
    ADMIN_PASSWORD, Api, Backend, Db, Fixture, FixtureOptions, PASSWORD, Server, Visitor,
};
use serde_json::json;

use crate::{on_both_backends, setup};

on_both_backends!(
    auth_and_rbac,
    login_throttling,
    credentials_end_sockets,
    password_change,
    visitor_sessions
);

async fn auth_and_rbac(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let anna = &fx.operators[0];

    let hash: String = {
        let mut c = db.sql().await?;
        sqlx::query_scalar("SELECT password_hash FROM users WHERE username = 'op0'")
            .fetch_one(&mut c)
            .await?
    };
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    let session_hash: String = {
        let mut c = db.sql().await?;
        sqlx::query_scalar("SELECT token_hash FROM sessions LIMIT 1")
            .fetch_one(&mut c)
            .await?
    };
    assert!(
        !anna
            .cookie
            .clone()
            .unwrap_or_default()
            .contains(&session_hash),
        "sessions are stored hashed"
    );

    // Unauthenticated and CSRF.
    assert_eq!(
        Api::new(&server.base).get("/api/v1/me/inbox").await?.status,
        401
    );
    let mut no_csrf = anna.clone();
    no_csrf.csrf = None;
    let r = no_csrf
        .put("/api/v1/me/status", json!({"status": "active"}))
        .await?;
    assert_eq!(r.status, 403, "{}", r.text);
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM users WHERE username = 'op0' AND status = 'active'")
            .await?,
        0
    );

    // RBAC: operators cannot administer.
    for (m, p, body) in [
        (
            "POST",
            "/api/v1/users",
            json!({"username": "z", "display_name": "Z", "password": "longenough", "role": "admin"}),
        ),
        ("POST", "/api/v1/queues", json!({"name": "Q"})),
        (
            "POST",
            "/api/v1/channels",
            json!({"kind": "api", "name": "C", "queue_id": fx.queue}),
        ),
        ("PUT", "/api/v1/settings", json!({"simultaneous_chats": 50})),
        (
            "PATCH",
            &format!("/api/v1/users/{}", anna.id()),
            json!({"chat_limit": 50}),
        ),
        (
            "PUT",
            &format!("/api/v1/users/{}/status", fx.operators[1].id()),
            json!({"status": "active"}),
        ),
    ] {
        let r = match m {
            "POST" => anna.post(p, body).await?,
            "PUT" => anna.put(p, body).await?,
            _ => anna.patch(p, body).await?,
        };
        assert_eq!(r.status, 403, "{m} {p}: {}", r.text);
    }
    assert_eq!(anna.get("/api/v1/users").await?.status, 403);
    // …but may change their own name.
    anna.patch(
        &format!("/api/v1/users/{}", anna.id()),
        json!({"display_name": "Anna"}),
    )
    .await?
    .ok()?;

    // API tokens: bearer access without CSRF; revocation ends it.
    let t = fx
        .admin
        .post(
            &format!("/api/v1/users/{}/tokens", anna.id()),
            json!({"name": "crm"}),
        )
        .await?
        .ok()?;
    let token = t["token"].as_str().unwrap_or_default();
    let integ = Api::new(&server.base).with_bearer(token);
    integ
        .put("/api/v1/me/status", json!({"status": "active"}))
        .await?
        .ok()?;
    assert_eq!(
        db.scalar_i64(&format!(
            "SELECT COUNT(*) FROM api_tokens WHERE token_hash = '{token}'"
        ))
        .await?,
        0,
        "tokens are stored hashed"
    );
    fx.admin
        .delete(&format!(
            "/api/v1/users/{}/tokens/{}",
            anna.id(),
            t["id"].as_str().unwrap_or_default()
        ))
        .await?;
    assert_eq!(integ.get("/api/v1/me/inbox").await?.status, 401);

    // Unknown users get the same answer as wrong passwords.
    let r = Api::new(&server.base)
        .post(
            "/api/v1/auth/login",
            json!({"username": "nobody", "password": "whatever1"}),
        )
        .await?;
    assert_eq!((r.status, r.code()), (401, "unauthenticated"));

    // Logout ends the session and sets Inactive (S3).
    anna.post_empty("/api/v1/auth/logout").await?;
    assert_eq!(anna.get("/api/v1/me/inbox").await?.status, 401);
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM users WHERE username = 'op0' AND status = 'inactive'")
            .await?,
        1
    );

    // Disabling a user ends their sessions.
    let boris = &fx.operators[1];
    fx.admin
        .patch(
            &format!("/api/v1/users/{}", boris.id()),
            json!({"disabled": true}),
        )
        .await?
        .ok()?;
    assert_eq!(boris.get("/api/v1/me/inbox").await?.status, 401);
    Ok(())
}

/// An HTTP client whose connections come from `ip` (any 127.0.0.0/8 address is loopback).
fn client_from(ip: &str) -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .local_address(ip.parse::<IpAddr>()?)
        .build()?)
}

/// One login attempt: the status and the `Retry-After` seconds.
async fn try_login(
    http: &reqwest::Client,
    base: &str,
    user: &str,
    password: &str,
    forwarded_for: Option<&str>,
) -> Result<(u16, Option<u64>)> {
    let mut b = http
        .post(format!("{base}/api/v1/auth/login"))
        .json(&json!({"username": user, "password": password}));
    if let Some(f) = forwarded_for {
        b = b.header("x-forwarded-for", f);
    }
    let r = b.send().await?;
    let retry = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    Ok((r.status().as_u16(), retry))
}

/// Row 13: failures are counted before the password is checked, per (username, address) and
/// per address, with growing delays instead of a lock a stranger could hold.
async fn login_throttling(b: Backend) -> Result<()> {
    let Some(db) = Db::new(b).await? else {
        return Ok(());
    };
    db.add_admin().await?;
    let server = Server::start_with(&db, &[("FERRYDESK_TRUSTED_PROXIES", "127.0.0.9")]).await?;
    let _fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let base = server.base.as_str();

    // 60 wrong passwords for op1 at once from one address: only the free attempts reach the
    // password check (401); the others are refused before it (429 with Retry-After).
    let attacker = client_from("127.0.0.2")?;
    let answers = futures::future::join_all(
        (0..60).map(|_| try_login(&attacker, base, "op1", "wrong-password", None)),
    )
    .await;
    let mut checked = 0;
    for a in answers {
        match a? {
            (401, _) => checked += 1,
            (429, Some(secs)) => assert!((1..=900).contains(&secs), "Retry-After {secs}"),
            other => bail!("unexpected answer {other:?}"),
        }
    }
    eprintln!(
        "60 parallel wrong passwords: {checked} checked (401), {} refused (429)",
        60 - checked
    );
    // 5 free; one more only if the burst outlasted the first 1 s delay.
    assert!(
        (5..=6).contains(&checked),
        "{checked} of 60 parallel attempts reached the password check"
    );
    // The real user signs in at once from an address that has not been failing.
    assert_eq!(
        try_login(&client_from("127.0.0.3")?, base, "op1", PASSWORD, None)
            .await?
            .0,
        200
    );

    // A stranger cannot lock the admin out: their failures delay only their own address.
    let stranger = client_from("127.0.0.4")?;
    let mut statuses = Vec::new();
    for _ in 0..12 {
        statuses.push(
            try_login(&stranger, base, "admin", "wrong-password", None)
                .await?
                .0,
        );
    }
    let wrong = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        (5..=8).contains(&wrong) && statuses.contains(&429),
        "{statuses:?}"
    );
    assert!(statuses[..5].iter().all(|s| *s == 401), "{statuses:?}");
    server.login("admin", ADMIN_PASSWORD).await?;

    // X-Forwarded-For from a peer that is not a trusted proxy changes nothing.
    let mut statuses = Vec::new();
    for i in 0..8 {
        let fake = format!("198.51.100.{i}");
        statuses.push(
            try_login(&stranger, base, "op0", "wrong-password", Some(&fake))
                .await?
                .0,
        );
    }
    assert!(
        statuses.contains(&429),
        "spoofed addresses were trusted: {statuses:?}"
    );

    // Behind a trusted proxy, X-Forwarded-For names the client.
    let proxy = client_from("127.0.0.9")?;
    let mut statuses = Vec::new();
    for _ in 0..8 {
        statuses.push(
            try_login(&proxy, base, "op0", "wrong-password", Some("203.0.113.5"))
                .await?
                .0,
        );
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    let (status, _) =
        try_login(&proxy, base, "op0", PASSWORD, Some("1.2.3.4, 203.0.113.6")).await?;
    assert_eq!(status, 200, "another client behind the proxy signs in");

    // Per address: one address trying many usernames is slowed down after 20 failures, for
    // usernames it has not tried yet too.
    let sprayer = client_from("127.0.0.5")?;
    let mut first_refused = None;
    for i in 0..30 {
        let (status, _) = try_login(
            &sprayer,
            base,
            &format!("nobody{i}"),
            "wrong-password",
            None,
        )
        .await?;
        if status == 429 {
            first_refused = Some(i);
            break;
        }
        assert_eq!(status, 401);
    }
    let n = first_refused.ok_or_else(|| anyhow::anyhow!("30 usernames tried unhindered"))?;
    assert!((20..=23).contains(&n), "first refusal after {n} failures");

    // Per username: guesses at the admin spread over many addresses (one each, so neither the
    // pair nor the address key ever delays them) slow down together after 20 …
    let mut first_refused = None;
    for i in 0..40 {
        let hop = format!("198.18.0.{i}");
        let (status, _) = try_login(&proxy, base, "admin", "wrong-password", Some(&hop)).await?;
        if status == 429 {
            first_refused = Some(i);
            break;
        }
        assert_eq!(status, 401);
    }
    let n = first_refused.ok_or_else(|| anyhow::anyhow!("40 addresses guessed unhindered"))?;
    eprintln!("guesses at one username from distinct addresses: first refusal after {n}");
    assert!(n <= 20, "first refusal after {n} distinct addresses");
    // … while the real admin, from the address they signed in from before, is not held up.
    server.login("admin", ADMIN_PASSWORD).await?;
    // A new address of theirs waits like the attacker's (the documented trade-off).
    let (status, _) = try_login(&proxy, base, "admin", ADMIN_PASSWORD, Some("198.18.1.1")).await?;
    assert_eq!(status, 429);
    Ok(())
}

/// Waits until the socket closes, failing on any `chat_offered` or when it stays open `wait`.
async fn closes_without_offers(ws: &mut ferrydesk_tests::Ws, wait: Duration) -> Result<()> {
    let deadline = Instant::now() + wait;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ws.next_event(left).await {
            Err(_) => return Ok(()),
            Ok(None) => bail!("the socket is still open after {wait:?}"),
            Ok(Some(e)) => assert_ne!(e["type"], "chat_offered", "{e}"),
        }
    }
}

/// Row 14: revoking a token, resetting a password or disabling a user closes the open
/// sockets within seconds, on every node.
async fn credentials_end_sockets(b: Backend) -> Result<()> {
    let (db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let anna = &fx.operators[0];
    let boris = &fx.operators[1];
    boris.set_status("inactive").await?;

    // A token's socket: revoked while open → closed, and no chat is offered on it.
    let t = anna
        .post(
            &format!("/api/v1/users/{}/tokens", anna.id()),
            json!({"name": "crm"}),
        )
        .await?
        .ok()?;
    let integ = Api::new(&server.base).with_bearer(t["token"].as_str().unwrap_or_default());
    integ.set_status("active").await?;
    let mut ws = integ.ws().await?;
    let started = Instant::now();
    anna.delete(&format!(
        "/api/v1/users/{}/tokens/{}",
        anna.id(),
        t["id"].as_str().unwrap_or_default()
    ))
    .await?;
    Visitor::new(&server.base, &fx.widget_key)
        .await?
        .send("hello after the revocation")
        .await?;
    closes_without_offers(&mut ws, Duration::from_secs(5)).await?;
    eprintln!(
        "revoked token's socket closed after {:?}",
        started.elapsed()
    );
    assert!(started.elapsed() < Duration::from_secs(5));

    // A session's socket: an admin password reset closes it.
    let mut ws = anna.ws().await?;
    fx.admin
        .patch(
            &format!("/api/v1/users/{}", anna.id()),
            json!({"password": "reset-password-1"}),
        )
        .await?
        .ok()?;
    closes_without_offers(&mut ws, Duration::from_secs(5)).await?;

    // Disabling a user closes theirs.
    let mut ws = boris.ws().await?;
    fx.admin
        .patch(
            &format!("/api/v1/users/{}", boris.id()),
            json!({"disabled": true}),
        )
        .await?
        .ok()?;
    closes_without_offers(&mut ws, Duration::from_secs(5)).await?;

    // PostgreSQL: a token revoked on one node closes its socket on another.
    if b == Backend::Postgres {
        let other = Server::start(&db).await?;
        let admin = &fx.admin;
        let t = admin
            .post(
                &format!("/api/v1/users/{}/tokens", admin.id()),
                json!({"name": "node b"}),
            )
            .await?
            .ok()?;
        let on_b = Api::new(&other.base).with_bearer(t["token"].as_str().unwrap_or_default());
        let mut ws = on_b.ws().await?;
        admin
            .delete(&format!(
                "/api/v1/users/{}/tokens/{}",
                admin.id(),
                t["id"].as_str().unwrap_or_default()
            ))
            .await?;
        closes_without_offers(&mut ws, Duration::from_secs(5)).await?;
    }
    Ok(())
}

/// Row 15: changing one's own password needs the current one; a change ends the user's other
/// sessions and API tokens, an admin reset all of them.
async fn password_change(b: Backend) -> Result<()> {
    let (_db, server) = setup!(b);
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let anna = &fx.operators[0];
    let me = format!("/api/v1/users/{}", anna.id());
    let other_session = server.login("op0", PASSWORD).await?;
    let t = anna
        .post(&format!("{me}/tokens"), json!({"name": "crm"}))
        .await?
        .ok()?;
    let integ = Api::new(&server.base).with_bearer(t["token"].as_str().unwrap_or_default());

    let r = anna
        .patch(&me, json!({"password": "new-password-1"}))
        .await?;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (422, Some("current_password")),
        "{}",
        r.text
    );
    let r = anna
        .patch(
            &me,
            json!({"password": "new-password-1", "current_password": "not-my-password"}),
        )
        .await?;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (422, Some("current_password")),
        "{}",
        r.text
    );
    // Nothing changed.
    assert_eq!(other_session.get("/api/v1/auth/me").await?.status, 200);
    assert_eq!(integ.get("/api/v1/auth/me").await?.status, 200);

    anna.patch(
        &me,
        json!({"password": "new-password-1", "current_password": PASSWORD}),
    )
    .await?
    .ok()?;
    assert_eq!(
        anna.get("/api/v1/auth/me").await?.status,
        200,
        "this session stays"
    );
    assert_eq!(other_session.get("/api/v1/auth/me").await?.status, 401);
    assert_eq!(integ.get("/api/v1/auth/me").await?.status, 401);
    server.login("op0", "new-password-1").await?;
    assert!(server.login("op0", PASSWORD).await.is_err());

    // An admin reset ends every session and token of the user; no current password is asked.
    let boris = &fx.operators[1];
    let t = boris
        .post(
            &format!("/api/v1/users/{}/tokens", boris.id()),
            json!({"name": "crm"}),
        )
        .await?
        .ok()?;
    let boris_integ = Api::new(&server.base).with_bearer(t["token"].as_str().unwrap_or_default());
    let r = fx
        .admin
        .patch(
            &format!("/api/v1/users/{}", boris.id()),
            json!({"password": "reset-password-1", "current_password": "x"}),
        )
        .await?;
    assert_eq!(
        (r.status, r.body["field"].as_str()),
        (422, Some("current_password")),
        "current_password is only for one's own: {}",
        r.text
    );
    fx.admin
        .patch(
            &format!("/api/v1/users/{}", boris.id()),
            json!({"password": "reset-password-1"}),
        )
        .await?
        .ok()?;
    assert_eq!(boris.get("/api/v1/auth/me").await?.status, 401);
    assert_eq!(boris_integ.get("/api/v1/auth/me").await?.status, 401);
    server.login("op1", "reset-password-1").await?;

    // An operator cannot reset someone else's password.
    let r = anna
        .patch(
            &format!("/api/v1/users/{}", boris.id()),
            json!({"password": "operator-takeover-1"}),
        )
        .await?;
    assert_eq!(r.status, 403);
    Ok(())
}

/// Row 16: widget sessions are limited per address, create no contact until the visitor
/// writes, and expire when idle (also closing the visitor's socket).
async fn visitor_sessions(b: Backend) -> Result<()> {
    let Some(db) = Db::new(b).await? else {
        return Ok(());
    };
    db.add_admin().await?;
    let server = Server::start_with(&db, &[("FERRYDESK_VISITOR_SESSION_TTL_SECS", "3")]).await?;
    let fx = Fixture::new(&server, FixtureOptions::default()).await?;
    let contacts = db.scalar_i64("SELECT COUNT(*) FROM contacts").await?;

    let http = client_from("127.0.0.7")?;
    let new_session = || async {
        let r = http
            .post(format!("{}/widget/v1/sessions", server.base))
            .json(&json!({"key": fx.widget_key}))
            .send()
            .await?;
        let retry: Option<u64> = r
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse().ok());
        Ok::<_, anyhow::Error>((r.status().as_u16(), retry))
    };
    for _ in 0..20 {
        assert_eq!(new_session().await?.0, 201);
    }
    let (status, retry) = new_session().await?;
    assert_eq!(status, 429);
    assert!(retry.is_some_and(|s| (1..=60).contains(&s)), "{retry:?}");
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM contacts").await?,
        contacts,
        "sessions create no contacts"
    );

    // Another address is not affected; the contact appears with the first message.
    let silent = Visitor::new(&server.base, &fx.widget_key).await?;
    let v = Visitor::new(&server.base, &fx.widget_key).await?;
    let mut ws = v.ws().await?;
    v.send("hello").await?;
    assert_eq!(
        db.scalar_i64("SELECT COUNT(*) FROM contacts").await?,
        contacts + 1
    );
    let transcript = v.api.get("/widget/v1/messages").await?.ok()?;
    assert_eq!(transcript.as_array().map(Vec::len), Some(1), "{transcript}");

    // Unused for the TTL (3 s), the session ends: the socket closes and the token is refused.
    let started = Instant::now();
    let deadline = started + Duration::from_secs(15);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match ws.next_event(left).await {
            Err(_) => break,
            Ok(None) => bail!("the visitor socket is still open after 15 s"),
            Ok(Some(_)) => {}
        }
    }
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "closed before the TTL"
    );
    let r = v.api.get("/widget/v1/messages").await?;
    assert_eq!(r.status, 401, "{}", r.text);
    let r = silent.api.get("/widget/v1/messages").await?;
    assert_eq!(
        r.status, 401,
        "a session that never wrote ends too: {}",
        r.text
    );
    // What the widget does then: a new session, which works.
    let again = Visitor::new(&server.base, &fx.widget_key).await?;
    again.send("back again").await?;
    Ok(())
}
