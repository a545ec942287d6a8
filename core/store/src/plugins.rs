//! Plugin installations, components, settings, key-value data, the connector outbox and the
//! audit of action runs.

use crate::{Conn, Result};

#[derive(Debug, Clone)]
pub struct PluginRow {
    pub id: String,
    pub version: String,
    pub kind: String,
    pub manifest: String,
    pub sha256: String,
    pub enabled: bool,
    pub granted: String,
    pub installed_by: Option<String>,
    pub installed_at: i64,
    pub updated_at: i64,
}

type RawRow = (
    String,
    String,
    String,
    String,
    String,
    i64,
    String,
    Option<String>,
    i64,
    i64,
);

fn from_raw(r: RawRow) -> PluginRow {
    PluginRow {
        id: r.0,
        version: r.1,
        kind: r.2,
        manifest: r.3,
        sha256: r.4,
        enabled: r.5 != 0,
        granted: r.6,
        installed_by: r.7,
        installed_at: r.8,
        updated_at: r.9,
    }
}

const COLS: &str =
    "id, version, kind, manifest, sha256, enabled, granted, installed_by, installed_at, updated_at";

pub async fn list(conn: &mut Conn) -> Result<Vec<PluginRow>> {
    let rows: Vec<RawRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM plugins ORDER BY id"
    )))
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(from_raw).collect())
}

pub async fn get(conn: &mut Conn, id: &str) -> Result<Option<PluginRow>> {
    let row: Option<RawRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLS} FROM plugins WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(from_raw))
}

/// Inserts or replaces an installation (an upgrade keeps `enabled` and `installed_at`).
pub async fn upsert(conn: &mut Conn, r: &PluginRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO plugins (id, version, kind, manifest, sha256, enabled, granted, installed_by, \
         installed_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
         ON CONFLICT (id) DO UPDATE SET version = excluded.version, kind = excluded.kind, \
         manifest = excluded.manifest, sha256 = excluded.sha256, granted = excluded.granted, \
         enabled = excluded.enabled, updated_at = excluded.updated_at",
    )
    .bind(&r.id)
    .bind(&r.version)
    .bind(&r.kind)
    .bind(&r.manifest)
    .bind(&r.sha256)
    .bind(i64::from(r.enabled))
    .bind(&r.granted)
    .bind(r.installed_by.as_deref())
    .bind(r.installed_at)
    .bind(r.updated_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn set_enabled(
    conn: &mut Conn,
    id: &str,
    enabled: bool,
    granted: &str,
    now: i64,
) -> Result<bool> {
    let r =
        sqlx::query("UPDATE plugins SET enabled = $2, granted = $3, updated_at = $4 WHERE id = $1")
            .bind(id)
            .bind(i64::from(enabled))
            .bind(granted)
            .bind(now)
            .execute(conn)
            .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn touch(conn: &mut Conn, id: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE plugins SET updated_at = $2 WHERE id = $1")
        .bind(id)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn delete(conn: &mut Conn, id: &str) -> Result<bool> {
    let r = sqlx::query("DELETE FROM plugins WHERE id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM plugin_settings WHERE plugin_id = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM plugin_kv WHERE scope = $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// `(id, updated_at, enabled)` of every installation: what other nodes compare to reload.
pub async fn versions(conn: &mut Conn) -> Result<Vec<(String, i64, bool)>> {
    let rows: Vec<(String, i64, i64)> =
        sqlx::query_as("SELECT id, updated_at, enabled FROM plugins")
            .fetch_all(conn)
            .await?;
    Ok(rows.into_iter().map(|(a, b, c)| (a, b, c != 0)).collect())
}

pub async fn put_component(conn: &mut Conn, sha256: &str, wasm_b64: &str) -> Result<()> {
    sqlx::query(
        "INSERT INTO plugin_components (sha256, wasm) VALUES ($1, $2) ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(sha256)
    .bind(wasm_b64)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get_component(conn: &mut Conn, sha256: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT wasm FROM plugin_components WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(conn)
            .await?,
    )
}

/// Settings of a scope (`plugin:<id>` or `channel:<id>`), as JSON text.
pub async fn get_settings(conn: &mut Conn, scope: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT config FROM plugin_settings WHERE scope = $1")
            .bind(scope)
            .fetch_optional(conn)
            .await?,
    )
}

pub async fn put_settings(
    conn: &mut Conn,
    scope: &str,
    plugin: &str,
    config: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO plugin_settings (scope, plugin_id, config, updated_at) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (scope) DO UPDATE SET plugin_id = excluded.plugin_id, config = excluded.config, \
         updated_at = excluded.updated_at",
    )
    .bind(scope)
    .bind(plugin)
    .bind(config)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn kv_get(conn: &mut Conn, scope: &str, key: &str) -> Result<Option<String>> {
    Ok(
        sqlx::query_scalar("SELECT value FROM plugin_kv WHERE scope = $1 AND key = $2")
            .bind(scope)
            .bind(key)
            .fetch_optional(conn)
            .await?,
    )
}

pub async fn kv_put(conn: &mut Conn, scope: &str, key: &str, value: Option<&str>) -> Result<()> {
    match value {
        Some(v) => {
            sqlx::query(
                "INSERT INTO plugin_kv (scope, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (scope, key) DO UPDATE SET value = excluded.value",
            )
            .bind(scope)
            .bind(key)
            .bind(v)
            .execute(conn)
            .await?;
        }
        None => {
            sqlx::query("DELETE FROM plugin_kv WHERE scope = $1 AND key = $2")
                .bind(scope)
                .bind(key)
                .execute(conn)
                .await?;
        }
    }
    Ok(())
}

pub async fn outbox_insert(conn: &mut Conn, message: &str, channel: &str, now: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO outbox (message_id, channel_id, attempts, next_at, created_at) \
         VALUES ($1, $2, 0, $3, $3) ON CONFLICT (message_id) DO NOTHING",
    )
    .bind(message)
    .bind(channel)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Outbox entries due now and not leased by another node.
pub async fn outbox_due(conn: &mut Conn, now: i64, limit: i64) -> Result<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT message_id, channel_id FROM outbox WHERE next_at <= $1 \
         AND (locked_until IS NULL OR locked_until < $1) ORDER BY next_at LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Leases one entry for `lease_ms`; returns the attempt number, or `None` if another node got
/// it first (the conditional update is the fence).
pub async fn outbox_claim(
    conn: &mut Conn,
    message: &str,
    now: i64,
    lease_ms: i64,
) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "UPDATE outbox SET locked_until = $2, attempts = attempts + 1 \
         WHERE message_id = $1 AND next_at <= $3 AND (locked_until IS NULL OR locked_until < $3) \
         RETURNING attempts",
    )
    .bind(message)
    .bind(now + lease_ms)
    .bind(now)
    .fetch_optional(conn)
    .await?)
}

pub async fn outbox_done(conn: &mut Conn, message: &str, attempt: i64) -> Result<bool> {
    let r = sqlx::query("DELETE FROM outbox WHERE message_id = $1 AND attempts = $2")
        .bind(message)
        .bind(attempt)
        .execute(conn)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn outbox_retry(
    conn: &mut Conn,
    message: &str,
    attempt: i64,
    next_at: i64,
    error: &str,
) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE outbox SET next_at = $3, locked_until = NULL, last_error = $4 \
         WHERE message_id = $1 AND attempts = $2",
    )
    .bind(message)
    .bind(attempt)
    .bind(next_at)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn outbox_len(conn: &mut Conn) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM outbox")
        .fetch_one(conn)
        .await?)
}

pub struct NewRun<'a> {
    pub id: &'a str,
    pub plugin: &'a str,
    pub action: &'a str,
    pub chat: Option<&'a str>,
    pub actor: Option<&'a str>,
    pub ok: bool,
    pub error: Option<&'a str>,
    pub effects: &'a str,
    pub now: i64,
}

pub async fn insert_run(conn: &mut Conn, r: NewRun<'_>) -> Result<()> {
    sqlx::query(
        "INSERT INTO plugin_runs (id, plugin_id, action, chat_id, actor_id, ok, error, effects, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(r.id)
    .bind(r.plugin)
    .bind(r.action)
    .bind(r.chat)
    .bind(r.actor)
    .bind(i64::from(r.ok))
    .bind(r.error)
    .bind(r.effects)
    .bind(r.now)
    .execute(conn)
    .await?;
    Ok(())
}

/// What a key-value scope holds: (keys, bytes of keys and values). Values are stored in
/// base64, so their bytes are counted as 3/4 of the stored text.
pub async fn kv_usage(conn: &mut Conn, scope: &str) -> Result<(i64, i64)> {
    let (keys, bytes): (i64, i64) = sqlx::query_as(
        "SELECT COUNT(*), CAST(COALESCE(SUM(LENGTH(key) + (LENGTH(value) * 3) / 4), 0) AS BIGINT) \
         FROM plugin_kv WHERE scope = $1",
    )
    .bind(scope)
    .fetch_one(conn)
    .await?;
    Ok((keys, bytes))
}

/// Serialises quota checks of one key-value scope on PostgreSQL (SQLite's writers are already
/// serial): two calls of one plugin cannot both pass the quota and together exceed it.
pub async fn kv_lock(conn: &mut Conn, backend: crate::Backend, scope: &str) -> Result<()> {
    if backend == crate::Backend::Postgres {
        sqlx::query("SELECT CAST(pg_advisory_xact_lock(hashtext($1)) AS TEXT)")
            .bind(format!("plugin_kv:{scope}"))
            .fetch_optional(conn)
            .await?;
    }
    Ok(())
}

/// Every settings row: (scope, plugin, config as stored, updated_at).
pub async fn all_settings(conn: &mut Conn) -> Result<Vec<(String, String, String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT scope, plugin_id, config, updated_at FROM plugin_settings ORDER BY scope",
    )
    .fetch_all(conn)
    .await?)
}

/// Who an installation's id belongs to (`ed25519:…`, `local` or `unsigned`); `None` if the
/// plugin is not installed, `Some(None)` for a row from before publishers were recorded.
pub async fn get_publisher(conn: &mut Conn, id: &str) -> Result<Option<Option<String>>> {
    Ok(
        sqlx::query_scalar::<_, Option<String>>("SELECT publisher FROM plugins WHERE id = $1")
            .bind(id)
            .fetch_optional(conn)
            .await?,
    )
}

pub async fn set_publisher(conn: &mut Conn, id: &str, publisher: &str) -> Result<()> {
    sqlx::query("UPDATE plugins SET publisher = $2 WHERE id = $1")
        .bind(id)
        .bind(publisher)
        .execute(conn)
        .await?;
    Ok(())
}
