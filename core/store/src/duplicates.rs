//! Duplicate rules, candidate lookups by normalised keys and name-token prefixes, and merging
//! one contact into another.

use ferrydesk_domain::*;
use sqlx::AssertSqlSafe;

use crate::{Conn, Result};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RuleRow {
    pub id: String,
    pub name: String,
    pub position: i64,
    pub enabled: i64,
    /// JSON array of conditions.
    pub conditions: String,
    pub created_at: i64,
    pub updated_at: i64,
}

pub async fn list_rules(conn: &mut Conn) -> Result<Vec<RuleRow>> {
    Ok(sqlx::query_as(
        "SELECT id, name, position, enabled, conditions, created_at, updated_at \
         FROM duplicate_rules ORDER BY position, id",
    )
    .fetch_all(conn)
    .await?)
}

pub async fn count_rules(conn: &mut Conn) -> Result<i64> {
    Ok(sqlx::query_scalar("SELECT COUNT(*) FROM duplicate_rules")
        .fetch_one(conn)
        .await?)
}

/// Replaces every rule.
pub async fn replace_rules(conn: &mut Conn, rules: &[RuleRow]) -> Result<()> {
    sqlx::query("DELETE FROM duplicate_rules")
        .execute(&mut *conn)
        .await?;
    for r in rules {
        sqlx::query(
            "INSERT INTO duplicate_rules (id, name, position, enabled, conditions, created_at, \
             updated_at) VALUES ($1,$2,$3,$4,$5,$6,$7)",
        )
        .bind(&r.id)
        .bind(&r.name)
        .bind(r.position)
        .bind(r.enabled)
        .bind(&r.conditions)
        .bind(r.created_at)
        .bind(r.updated_at)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// A contact's keys, as duplicate search compares them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub phone_key: Option<String>,
    pub email_key: Option<String>,
    pub name_key: Option<String>,
}

const KEY_COLS: &str = "id, name, phone_key, email_key, name_key";

pub async fn keys_of(conn: &mut Conn, ids: &[String]) -> Result<Vec<KeyRow>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(100) {
        let list: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let mut q = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {KEY_COLS} FROM contacts WHERE merged_into IS NULL AND id IN ({})",
            list.join(",")
        )));
        for id in chunk {
            q = q.bind(id.clone());
        }
        let rows: Vec<KeyRow> = q.fetch_all(&mut *conn).await?;
        out.extend(rows);
    }
    Ok(out)
}

/// Contacts that may duplicate `id`: the same phone or email key, the same external id on a
/// channel of the same kind, or a name token with the same 3-letter prefix (at most `limit`).
pub async fn candidates(conn: &mut Conn, id: &ContactId, limit: i64) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT c.id FROM contacts c JOIN contacts me ON me.id = $1 \
         WHERE c.id <> me.id AND c.merged_into IS NULL AND \
           ((me.phone_key IS NOT NULL AND c.phone_key = me.phone_key) OR \
            (me.email_key IS NOT NULL AND c.email_key = me.email_key)) \
         UNION \
         SELECT i2.contact_id FROM contact_identities i1 \
           JOIN channels ch1 ON ch1.id = i1.channel_id \
           JOIN contact_identities i2 ON i2.external_id = i1.external_id AND i2.contact_id <> i1.contact_id \
           JOIN channels ch2 ON ch2.id = i2.channel_id AND ch2.kind = ch1.kind \
         WHERE i1.contact_id = $1 \
         UNION \
         SELECT t2.contact_id FROM contact_name_tokens t1 \
           JOIN contact_name_tokens t2 ON t2.prefix = t1.prefix AND t2.contact_id <> t1.contact_id \
         WHERE t1.contact_id = $1 \
         LIMIT {}",
        limit.clamp(1, 10_000)
    )))
    .bind(id.as_str())
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Pairs of contacts sharing an external id on channels of the same kind.
pub async fn shared_identities(conn: &mut Conn, a: &str, b: &str) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT i1.external_id FROM contact_identities i1 \
         JOIN channels ch1 ON ch1.id = i1.channel_id \
         JOIN contact_identities i2 ON i2.external_id = i1.external_id \
         JOIN channels ch2 ON ch2.id = i2.channel_id AND ch2.kind = ch1.kind \
         WHERE i1.contact_id = $1 AND i2.contact_id = $2",
    )
    .bind(a)
    .bind(b)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Channels on which both contacts have an unfinished chat (a merge would put two open chats
/// on one channel for one contact).
pub async fn open_chat_clashes(
    conn: &mut Conn,
    a: &ContactId,
    b: &ContactId,
) -> Result<Vec<String>> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT channel_id FROM chats WHERE contact_id IN ($1, $2) AND status <> 'completed' \
         GROUP BY channel_id HAVING COUNT(DISTINCT contact_id) > 1",
    )
    .bind(a.as_str())
    .bind(b.as_str())
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|r| r.0).collect())
}

/// Moves everything of `merged` to `master` and leaves a redirect (`merged_into`); earlier
/// redirects to `merged` now point at `master`. Call inside the merge's transaction.
pub async fn move_to_master(conn: &mut Conn, master: &ContactId, merged: &ContactId) -> Result<()> {
    for sql in [
        "UPDATE contact_identities SET contact_id = $1 WHERE contact_id = $2",
        "UPDATE chats SET contact_id = $1 WHERE contact_id = $2",
        "UPDATE cases SET contact_id = $1 WHERE contact_id = $2",
        "UPDATE process_instances SET contact_id = $1 WHERE contact_id = $2",
        "UPDATE contacts SET merged_into = $1 WHERE merged_into = $2",
        "UPDATE contacts SET merged_into = $1, phone_key = NULL, email_key = NULL, name_key = NULL \
         WHERE id = $2",
    ] {
        sqlx::query(sql)
            .bind(master.as_str())
            .bind(merged.as_str())
            .execute(&mut *conn)
            .await?;
    }
    sqlx::query("DELETE FROM contact_name_tokens WHERE contact_id = $1")
        .bind(merged.as_str())
        .execute(&mut *conn)
        .await?;
    Ok(())
}

pub async fn merged_into(conn: &mut Conn, id: &ContactId) -> Result<Option<ContactId>> {
    let v: Option<Option<String>> =
        sqlx::query_scalar("SELECT merged_into FROM contacts WHERE id = $1")
            .bind(id.as_str())
            .fetch_optional(conn)
            .await?;
    Ok(v.flatten().map(ContactId))
}

pub async fn insert_merge(
    conn: &mut Conn,
    master: &ContactId,
    merged: &ContactId,
    actor: Option<&UserId>,
    detail: &serde_json::Value,
    now: Ts,
) -> Result<String> {
    let id = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO contact_merges (id, master_id, merged_id, actor_id, at, detail) \
         VALUES ($1,$2,$3,$4,$5,$6)",
    )
    .bind(&id)
    .bind(master.as_str())
    .bind(merged.as_str())
    .bind(actor.map(|a| a.as_str()))
    .bind(now.0)
    .bind(detail.to_string())
    .execute(conn)
    .await?;
    Ok(id)
}
