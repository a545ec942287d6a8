//! Authentication and RBAC: argon2id hashes, sessions with CSRF, throttled logins, API tokens,
//! role checks on every administrative surface.

use anyhow::Result;
use ferrydesk_tests::{Api, Backend, Fixture, FixtureOptions};
use serde_json::json;

use crate::{on_both_backends, setup};

on_both_backends!(auth_and_rbac);

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

    // Login throttling: five failures lock the username, even for the right password.
    for _ in 0..5 {
        let mut a = Api::new(&server.base);
        assert!(a.login("op1", "wrong-password").await.is_err());
    }
    let r = Api::new(&server.base)
        .post(
            "/api/v1/auth/login",
            json!({"username": "op1", "password": ferrydesk_tests::PASSWORD}),
        )
        .await?;
    assert_eq!(r.status, 429);
    assert_eq!(r.code(), "rate_limited");
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
