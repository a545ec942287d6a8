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
/// channel of the same kind (at most `limit`), and names sharing two 3-letter token prefixes
/// (one, for a name with one prefix; at most `limit` more).
pub async fn candidates(conn: &mut Conn, id: &ContactId, limit: i64) -> Result<Vec<String>> {
    let limit = limit.clamp(1, 10_000);
    // The strong keys first, so that a crowd of similar names cannot push them out.
    let strong: Vec<(String,)> = sqlx::query_as(AssertSqlSafe(format!(
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
         LIMIT {limit}"
    )))
    .bind(id.as_str())
    .fetch_all(&mut *conn)
    .await?;
    let names: Vec<(String,)> = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT t2.contact_id FROM contact_name_tokens t1 \
           JOIN contact_name_tokens t2 ON t2.prefix = t1.prefix AND t2.contact_id <> t1.contact_id \
         WHERE t1.contact_id = $1 GROUP BY t2.contact_id \
         HAVING COUNT(*) >= (SELECT CASE WHEN COUNT(*) >= 2 THEN 2 ELSE 1 END \
                             FROM contact_name_tokens WHERE contact_id = $1) \
         LIMIT {limit}"
    )))
    .bind(id.as_str())
    .fetch_all(&mut *conn)
    .await?;
    let mut out: Vec<String> = strong.into_iter().map(|r| r.0).collect();
    let known: std::collections::HashSet<String> = out.iter().cloned().collect();
    out.extend(
        names
            .into_iter()
            .map(|r| r.0)
            .filter(|c| !known.contains(c)),
    );
    Ok(out)
}

/// `(other contact, external id)` for every contact sharing an external id with `id` on a
/// channel of the same kind.
pub async fn identity_twins(conn: &mut Conn, id: &str) -> Result<Vec<(String, String)>> {
    Ok(sqlx::query_as(
        "SELECT DISTINCT i2.contact_id, i1.external_id FROM contact_identities i1 \
         JOIN channels ch1 ON ch1.id = i1.channel_id \
         JOIN contact_identities i2 ON i2.external_id = i1.external_id \
           AND i2.contact_id <> i1.contact_id \
         JOIN channels ch2 ON ch2.id = i2.channel_id AND ch2.kind = ch1.kind \
         WHERE i1.contact_id = $1 ORDER BY i1.external_id",
    )
    .bind(id)
    .fetch_all(conn)
    .await?)
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
        // The revision moves so that an engine's cached copy of the instance is not used.
        "UPDATE process_instances SET contact_id = $1, revision = revision + 1 \
         WHERE contact_id = $2",
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

/// Locks the two contacts of a merge (PostgreSQL; on SQLite the write transaction is already
/// exclusive), in id order so that concurrent merges cannot deadlock, and answers which of
/// them were already merged into another contact.
pub async fn lock_for_merge(
    conn: &mut Conn,
    backend: crate::Backend,
    a: &ContactId,
    b: &ContactId,
) -> Result<Vec<(String, Option<String>)>> {
    let lock = match backend {
        crate::Backend::Postgres => "FOR UPDATE",
        crate::Backend::Sqlite => "",
    };
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT id, merged_into FROM contacts WHERE id IN ($1, $2) ORDER BY id {lock}"
    )))
    .bind(a.as_str())
    .bind(b.as_str())
    .fetch_all(conn)
    .await?)
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

// ---- bulk search: scans, groups for review, dismissed pairs -------------------------------

/// One page of the keys of every live contact, by id (keyset pagination).
pub async fn keys_page(conn: &mut Conn, after: &str, limit: i64) -> Result<Vec<KeyRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {KEY_COLS} FROM contacts WHERE merged_into IS NULL AND id > $1 \
         ORDER BY id LIMIT $2"
    )))
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// One page of `(identity id, channel kind, external id, contact id)` for identities whose
/// external id appears more than once (on any channel), by identity id.
pub async fn shared_identity_page(
    conn: &mut Conn,
    after: &str,
    limit: i64,
) -> Result<Vec<(String, String, String, String)>> {
    Ok(sqlx::query_as(
        "SELECT i.id, ch.kind, i.external_id, i.contact_id FROM contact_identities i \
         JOIN channels ch ON ch.id = i.channel_id \
         WHERE i.id > $1 AND i.external_id IN \
           (SELECT external_id FROM contact_identities GROUP BY external_id HAVING COUNT(*) > 1) \
         ORDER BY i.id LIMIT $2",
    )
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Every pair a reviewer marked "not duplicates", as `(a, b)` with `a < b`.
pub async fn dismissed_pairs(conn: &mut Conn) -> Result<Vec<(String, String)>> {
    Ok(sqlx::query_as("SELECT a, b FROM duplicate_dismissals")
        .fetch_all(conn)
        .await?)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ScanRow {
    pub id: String,
    pub state: String,
    pub started_by: Option<String>,
    pub started_at: i64,
    pub heartbeat_at: i64,
    pub finished_at: Option<i64>,
    pub contacts: i64,
    pub compared: i64,
    pub groups_found: i64,
    pub duration_ms: Option<i64>,
    /// JSON: per-rule counts, blocks too large to compare.
    pub stats: String,
    pub error: Option<String>,
}

const SCAN_COLS: &str = "id, state, started_by, started_at, heartbeat_at, finished_at, contacts, \
     compared, groups_found, duration_ms, stats, error";

/// Starts a scan unless one is running: returns `None` when another scan holds the single
/// running slot. A running scan whose heartbeat is older than `stale_before` (its node
/// stopped) is marked failed first.
pub async fn insert_scan(
    conn: &mut Conn,
    id: &str,
    by: Option<&UserId>,
    now: Ts,
    stale_before: Ts,
) -> Result<Option<ScanRow>> {
    sqlx::query(
        "UPDATE duplicate_scans SET state = 'failed', finished_at = $1, \
         error = 'the node running the scan stopped' \
         WHERE state = 'running' AND heartbeat_at < $2",
    )
    .bind(now.0)
    .bind(stale_before.0)
    .execute(&mut *conn)
    .await?;
    let done = sqlx::query(
        "INSERT INTO duplicate_scans (id, state, started_by, started_at, heartbeat_at) \
         VALUES ($1, 'running', $2, $3, $3) ON CONFLICT DO NOTHING",
    )
    .bind(id)
    .bind(by.map(|u| u.as_str()))
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    if done.rows_affected() == 0 {
        return Ok(None);
    }
    get_scan(conn, id).await
}

pub async fn get_scan(conn: &mut Conn, id: &str) -> Result<Option<ScanRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {SCAN_COLS} FROM duplicate_scans WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// The newest scan, running or not.
pub async fn latest_scan(conn: &mut Conn) -> Result<Option<ScanRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {SCAN_COLS} FROM duplicate_scans ORDER BY started_at DESC, id DESC LIMIT 1"
    )))
    .fetch_optional(conn)
    .await?)
}

/// The newest finished scan, whose groups are the ones under review.
pub async fn latest_done_scan(conn: &mut Conn) -> Result<Option<String>> {
    Ok(sqlx::query_scalar(
        "SELECT id FROM duplicate_scans WHERE state = 'done' \
         ORDER BY started_at DESC, id DESC LIMIT 1",
    )
    .fetch_optional(conn)
    .await?)
}

/// Keeps a running scan's heartbeat; false when it is no longer running (marked stale).
pub async fn heartbeat_scan(conn: &mut Conn, id: &str, now: Ts) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE duplicate_scans SET heartbeat_at = $1 WHERE id = $2 AND state = 'running'",
    )
    .bind(now.0)
    .bind(id)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Updates a finished scan's duration and figures (after its groups were written).
pub async fn set_scan_figures(
    conn: &mut Conn,
    id: &str,
    duration_ms: i64,
    stats: &str,
) -> Result<()> {
    sqlx::query("UPDATE duplicate_scans SET duration_ms = $1, stats = $2 WHERE id = $3")
        .bind(duration_ms)
        .bind(stats)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

pub async fn fail_scan(conn: &mut Conn, id: &str, error: &str, now: Ts) -> Result<()> {
    sqlx::query(
        "UPDATE duplicate_scans SET state = 'failed', error = $1, finished_at = $2 \
         WHERE id = $3 AND state = 'running'",
    )
    .bind(error)
    .bind(now.0)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(())
}

/// A group of likely duplicates as a scan stores it.
#[derive(Debug, Clone)]
pub struct NewGroup {
    pub id: String,
    pub rule_id: String,
    pub rule: String,
    pub members: Vec<String>,
    /// JSON array of links (pairs, rule, reasons).
    pub links: String,
}

/// Figures a finished scan records.
#[derive(Debug, Clone)]
pub struct ScanFinish {
    pub contacts: i64,
    pub compared: i64,
    pub duration_ms: i64,
    pub stats: String,
}

/// Finishes a running scan: its groups replace those of earlier scans. Returns false (and
/// writes nothing) when the scan is no longer running.
pub async fn finish_scan(
    conn: &mut Conn,
    id: &str,
    groups: &[NewGroup],
    fin: &ScanFinish,
    now: Ts,
) -> Result<bool> {
    let ok = sqlx::query(
        "UPDATE duplicate_scans SET state = 'done', finished_at = $1, contacts = $2, \
         compared = $3, groups_found = $4, duration_ms = $5, stats = $6 \
         WHERE id = $7 AND state = 'running'",
    )
    .bind(now.0)
    .bind(fin.contacts)
    .bind(fin.compared)
    .bind(groups.len() as i64)
    .bind(fin.duration_ms)
    .bind(&fin.stats)
    .bind(id)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    if !ok {
        return Ok(false);
    }
    sqlx::query(
        "DELETE FROM duplicate_group_members WHERE group_id IN \
         (SELECT id FROM duplicate_groups WHERE scan_id <> $1)",
    )
    .bind(id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("DELETE FROM duplicate_groups WHERE scan_id <> $1")
        .bind(id)
        .execute(&mut *conn)
        .await?;
    use crate::processes::{BIND_PARAMS, placeholders};
    let positioned: Vec<(usize, &NewGroup)> = groups.iter().enumerate().collect();
    for chunk in positioned.chunks(BIND_PARAMS / 7) {
        let mut q = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO duplicate_groups (id, scan_id, position, rule_id, rule, size, links) \
             VALUES {}",
            placeholders(chunk.len(), 7, 0)
        )));
        for (pos, g) in chunk {
            q = q
                .bind(&g.id)
                .bind(id)
                .bind(*pos as i64)
                .bind(&g.rule_id)
                .bind(&g.rule)
                .bind(g.members.len() as i64)
                .bind(&g.links);
        }
        q.execute(&mut *conn).await?;
    }
    let members: Vec<(&str, &str, i64)> = groups
        .iter()
        .flat_map(|g| {
            g.members
                .iter()
                .enumerate()
                .map(|(i, m)| (g.id.as_str(), m.as_str(), i as i64))
        })
        .collect();
    for chunk in members.chunks(BIND_PARAMS / 3) {
        let mut q = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO duplicate_group_members (group_id, contact_id, position) VALUES {}",
            placeholders(chunk.len(), 3, 0)
        )));
        for (g, m, i) in chunk {
            q = q.bind(*g).bind(*m).bind(*i);
        }
        q.execute(&mut *conn).await?;
    }
    // Reviews that happened while the scan ran: contacts merged since it read them, and
    // pairs dismissed since it started.
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE duplicate_groups SET status = 'resolved', reviewed_at = $2 \
         WHERE scan_id = $1 AND status = 'open' AND {LIVE_MEMBERS} < 2"
    )))
    .bind(id)
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        "UPDATE duplicate_groups SET status = 'dismissed', reviewed_at = $2 \
         WHERE scan_id = $1 AND status = 'open' AND EXISTS ( \
           SELECT 1 FROM duplicate_group_members m1 \
           JOIN duplicate_group_members m2 ON m2.group_id = m1.group_id \
           JOIN duplicate_dismissals d ON d.a = m1.contact_id AND d.b = m2.contact_id \
           WHERE m1.group_id = duplicate_groups.id \
             AND d.at >= (SELECT started_at FROM duplicate_scans WHERE id = $1))",
    )
    .bind(id)
    .bind(now.0)
    .execute(&mut *conn)
    .await?;
    Ok(true)
}

/// How many distinct people a group still holds: members merged into one master count once.
const LIVE_MEMBERS: &str = "(SELECT COUNT(DISTINCT COALESCE(c.merged_into, c.id)) \
     FROM duplicate_group_members m JOIN contacts c ON c.id = m.contact_id \
     WHERE m.group_id = duplicate_groups.id)";

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GroupRow {
    pub id: String,
    pub scan_id: String,
    pub position: i64,
    pub rule_id: String,
    pub rule: String,
    pub size: i64,
    pub links: String,
    pub status: String,
    pub reviewed_by: Option<String>,
    pub reviewed_at: Option<i64>,
}

const GROUP_COLS: &str =
    "id, scan_id, position, rule_id, rule, size, links, status, reviewed_by, reviewed_at";

/// Groups of a scan, in review order, with the total.
pub async fn list_groups(
    conn: &mut Conn,
    scan: &str,
    status: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<(Vec<GroupRow>, i64)> {
    let total: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM duplicate_groups WHERE scan_id = $1 AND ($2 = '' OR status = $2)",
    )
    .bind(scan)
    .bind(status.unwrap_or(""))
    .fetch_one(&mut *conn)
    .await?;
    let rows = sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {GROUP_COLS} FROM duplicate_groups WHERE scan_id = $1 AND ($2 = '' OR status = $2) \
         ORDER BY position LIMIT $3 OFFSET $4"
    )))
    .bind(scan)
    .bind(status.unwrap_or(""))
    .bind(limit)
    .bind(offset)
    .fetch_all(&mut *conn)
    .await?;
    Ok((rows, total))
}

pub async fn get_group(conn: &mut Conn, id: &str) -> Result<Option<GroupRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {GROUP_COLS} FROM duplicate_groups WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// `(group id, contact id, merged_into)` of the members of the given groups, in order.
pub async fn group_members(
    conn: &mut Conn,
    groups: &[&str],
) -> Result<Vec<(String, String, Option<String>)>> {
    let mut out = Vec::new();
    for chunk in groups.chunks(100) {
        let list: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let mut q = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT m.group_id, m.contact_id, c.merged_into FROM duplicate_group_members m \
             JOIN contacts c ON c.id = m.contact_id WHERE m.group_id IN ({}) \
             ORDER BY m.group_id, m.position",
            list.join(",")
        )));
        for g in chunk {
            q = q.bind(*g);
        }
        let rows: Vec<(String, String, Option<String>)> = q.fetch_all(&mut *conn).await?;
        out.extend(rows);
    }
    Ok(out)
}

/// Marks an open group reviewed (`dismissed`); false when it was not open.
pub async fn review_group(
    conn: &mut Conn,
    id: &str,
    status: &str,
    by: &UserId,
    now: Ts,
) -> Result<bool> {
    Ok(sqlx::query(
        "UPDATE duplicate_groups SET status = $1, reviewed_by = $2, reviewed_at = $3 \
         WHERE id = $4 AND status = 'open'",
    )
    .bind(status)
    .bind(by.as_str())
    .bind(now.0)
    .bind(id)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// Remembers pairs as "not duplicates" (each `(a, b)` with `a < b`).
pub async fn insert_dismissals(
    conn: &mut Conn,
    pairs: &[(String, String)],
    by: &UserId,
    now: Ts,
) -> Result<()> {
    use crate::processes::{BIND_PARAMS, placeholders};
    for chunk in pairs.chunks(BIND_PARAMS / 4) {
        let mut q = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO duplicate_dismissals (a, b, by_id, at) VALUES {} ON CONFLICT DO NOTHING",
            placeholders(chunk.len(), 4, 0)
        )));
        for (a, b) in chunk {
            q = q.bind(a).bind(b).bind(by.as_str()).bind(now.0);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// After a merge: open groups that no longer hold two people (members merged into one master
/// count once) are resolved. Call inside the merge's transaction.
pub async fn resolve_groups_of(
    conn: &mut Conn,
    merged: &ContactId,
    by: Option<&UserId>,
    now: Ts,
) -> Result<()> {
    sqlx::query(AssertSqlSafe(format!(
        "UPDATE duplicate_groups SET status = 'resolved', reviewed_at = $2, reviewed_by = $3 \
         WHERE status = 'open' \
           AND id IN (SELECT group_id FROM duplicate_group_members WHERE contact_id = $1) \
           AND {LIVE_MEMBERS} < 2"
    )))
    .bind(merged.as_str())
    .bind(now.0)
    .bind(by.map(|u| u.as_str()))
    .execute(conn)
    .await?;
    Ok(())
}
