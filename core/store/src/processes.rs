//! The process engine's tables: definitions, instances, history, jobs, message subscriptions,
//! user tasks and incidents. The engine composes these inside one transaction per command.

use sqlx::AssertSqlSafe;

use crate::{Backend, Conn, Error, Result};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DefinitionRow {
    pub id: String,
    pub process_key: String,
    pub version: i64,
    pub name: Option<String>,
    pub xml: String,
    pub sha256: String,
    pub start_messages: String,
    pub deployed_by: Option<String>,
    pub deployed_at: i64,
}

const DEF_COLS: &str =
    "id, process_key, version, name, xml, sha256, start_messages, deployed_by, deployed_at";

pub async fn insert_definition(conn: &mut Conn, d: &DefinitionRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO process_definitions (id, process_key, version, name, xml, sha256, \
         start_messages, deployed_by, deployed_at) VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9)",
    )
    .bind(&d.id)
    .bind(&d.process_key)
    .bind(d.version)
    .bind(&d.name)
    .bind(&d.xml)
    .bind(&d.sha256)
    .bind(&d.start_messages)
    .bind(&d.deployed_by)
    .bind(d.deployed_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get_definition(conn: &mut Conn, id: &str) -> Result<Option<DefinitionRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {DEF_COLS} FROM process_definitions WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// The newest version of a process.
pub async fn latest_definition(conn: &mut Conn, key: &str) -> Result<Option<DefinitionRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {DEF_COLS} FROM process_definitions WHERE process_key = $1 \
         ORDER BY version DESC LIMIT 1"
    )))
    .bind(key)
    .fetch_optional(conn)
    .await?)
}

/// Every version of every process, newest first within a process.
pub async fn list_definitions(conn: &mut Conn) -> Result<Vec<DefinitionRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {DEF_COLS} FROM process_definitions ORDER BY process_key, version DESC"
    )))
    .fetch_all(conn)
    .await?)
}

/// The newest version of each process.
pub async fn latest_definitions(conn: &mut Conn) -> Result<Vec<DefinitionRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {DEF_COLS} FROM process_definitions d WHERE version = \
         (SELECT MAX(version) FROM process_definitions x WHERE x.process_key = d.process_key) \
         ORDER BY process_key"
    )))
    .fetch_all(conn)
    .await?)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct InstanceRow {
    pub id: String,
    pub definition_id: String,
    pub process_key: String,
    pub state: String,
    pub data: String,
    pub revision: i64,
    pub parent_id: Option<String>,
    pub parent_token: Option<i64>,
    pub chat_id: Option<String>,
    pub contact_id: Option<String>,
    pub case_id: Option<String>,
    pub started_by: Option<String>,
    pub start_key: Option<String>,
    pub incidents: i64,
    pub started_at: i64,
    pub updated_at: i64,
    pub ended_at: Option<i64>,
    /// History rows written so far (the next row's sequence number is this + 1).
    pub events: i64,
}

pub(crate) const INST_COLS: &str = "id, definition_id, process_key, state, data, revision, parent_id, \
    parent_token, chat_id, contact_id, case_id, started_by, start_key, incidents, started_at, \
    updated_at, ended_at, events";

pub async fn insert_instance(conn: &mut Conn, i: &InstanceRow) -> Result<()> {
    insert_instances(conn, std::slice::from_ref(i)).await
}

/// An instance, row-locked for the rest of the transaction on PostgreSQL (SQLite's
/// `BEGIN IMMEDIATE` already serialises writers).
pub async fn lock_instance(
    conn: &mut Conn,
    backend: Backend,
    id: &str,
) -> Result<Option<InstanceRow>> {
    let lock = match backend {
        Backend::Postgres => "FOR UPDATE",
        Backend::Sqlite => "",
    };
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {INST_COLS} FROM process_instances WHERE id = $1 {lock}"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

pub async fn get_instance(conn: &mut Conn, id: &str) -> Result<Option<InstanceRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {INST_COLS} FROM process_instances WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

pub async fn instance_by_start_key(conn: &mut Conn, key: &str) -> Result<Option<InstanceRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {INST_COLS} FROM process_instances WHERE start_key = $1"
    )))
    .bind(key)
    .fetch_optional(conn)
    .await?)
}

/// Writes an instance's new state; the revision must match the one read (a lost update is an
/// error rather than silent).
pub async fn update_instance(
    conn: &mut Conn,
    id: &str,
    revision: i64,
    state: &str,
    data: &str,
    case_id: Option<&str>,
    now: i64,
) -> Result<bool> {
    let ended = (state != "active").then_some(now);
    let r = sqlx::query(
        "UPDATE process_instances SET state = $1, data = $2, revision = revision + 1, \
         updated_at = $3, ended_at = COALESCE(ended_at, $4), case_id = COALESCE($5, case_id) \
         WHERE id = $6 AND revision = $7",
    )
    .bind(state)
    .bind(data)
    .bind(now)
    .bind(ended)
    .bind(case_id)
    .bind(id)
    .bind(revision)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn add_incidents(conn: &mut Conn, id: &str, delta: i64) -> Result<()> {
    sqlx::query("UPDATE process_instances SET incidents = incidents + $1 WHERE id = $2")
        .bind(delta)
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(Debug, Clone, Default)]
pub struct InstanceFilter {
    pub state: Option<String>,
    pub process_key: Option<String>,
    pub chat_id: Option<String>,
    pub contact_id: Option<String>,
    pub case_id: Option<String>,
    pub with_incidents: bool,
    pub limit: i64,
    pub offset: i64,
}

pub async fn list_instances(conn: &mut Conn, f: &InstanceFilter) -> Result<Vec<InstanceRow>> {
    let mut sql = format!("SELECT {INST_COLS} FROM process_instances WHERE 1 = 1");
    let mut binds: Vec<String> = Vec::new();
    for (col, v) in [
        ("state", &f.state),
        ("process_key", &f.process_key),
        ("chat_id", &f.chat_id),
        ("contact_id", &f.contact_id),
        ("case_id", &f.case_id),
    ] {
        if let Some(v) = v {
            binds.push(v.clone());
            sql.push_str(&format!(" AND {col} = ${}", binds.len()));
        }
    }
    if f.with_incidents {
        sql.push_str(" AND incidents > 0");
    }
    sql.push_str(&format!(
        " ORDER BY started_at DESC, id DESC LIMIT {} OFFSET {}",
        f.limit.clamp(1, 1000),
        f.offset.max(0)
    ));
    let mut q = sqlx::query_as(AssertSqlSafe(sql));
    for b in &binds {
        q = q.bind(b.clone());
    }
    Ok(q.fetch_all(conn).await?)
}

pub async fn count_instances(conn: &mut Conn, state: &str) -> Result<i64> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM process_instances WHERE state = $1")
            .bind(state)
            .fetch_one(conn)
            .await?,
    )
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    pub seq: i64,
    pub at: i64,
    pub element: String,
    pub event: String,
    pub detail: Option<String>,
}

/// One history event as stored: element (empty for the instance itself), event, detail.
pub type HistoryEvent = (String, String, Option<String>);

/// History rows for `events` (time, element, event, detail) numbered from `first`: one row per
/// run of events with the same time (a command's events share it).
pub fn history_rows(
    instance: &str,
    first: i64,
    events: &[(i64, String, String, Option<String>)],
) -> Result<Vec<HistoryRow>> {
    let mut rows = Vec::new();
    let mut seq = first;
    for run in events.chunk_by(|a, b| a.0 == b.0) {
        let folded: Vec<(&str, &str, Option<&str>)> = run
            .iter()
            .map(|(_, el, ev, d)| (el.as_str(), ev.as_str(), d.as_deref()))
            .collect();
        let json = serde_json::to_string(&folded).map_err(|e| Error::Corrupt(e.to_string()))?;
        rows.push((instance.to_owned(), seq, run[0].0, json));
        seq += run.len() as i64;
    }
    Ok(rows)
}

/// Appends history after the instance's last event: the instance row's `events` counter
/// hands out the sequence numbers (one update, then the rows).
pub async fn append_events(
    conn: &mut Conn,
    instance: &str,
    events: &[(i64, String, String, Option<String>)],
) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let last: i64 = sqlx::query_scalar(
        "UPDATE process_instances SET events = events + $1 WHERE id = $2 RETURNING events",
    )
    .bind(events.len() as i64)
    .bind(instance)
    .fetch_one(&mut *conn)
    .await?;
    let rows = history_rows(instance, last - events.len() as i64 + 1, events)?;
    insert_events(conn, &rows).await
}

/// Active instances called by `parent` (its call activities).
pub async fn children_of(conn: &mut Conn, parent: &str) -> Result<Vec<InstanceRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {INST_COLS} FROM process_instances WHERE parent_id = $1 ORDER BY started_at"
    )))
    .bind(parent)
    .fetch_all(conn)
    .await?)
}

pub async fn subscription_exists(conn: &mut Conn, instance: &str, token: i64) -> Result<bool> {
    let n: i64 = sqlx::query_scalar(
        "SELECT COUNT(*) FROM process_subscriptions WHERE instance_id = $1 AND token = $2",
    )
    .bind(instance)
    .bind(token)
    .fetch_one(conn)
    .await?;
    Ok(n > 0)
}

/// Removes a subscription; false if it was not there (its token was cancelled meanwhile).
pub async fn delete_subscription(conn: &mut Conn, instance: &str, token: i64) -> Result<bool> {
    let r = sqlx::query("DELETE FROM process_subscriptions WHERE instance_id = $1 AND token = $2")
        .bind(instance)
        .bind(token)
        .execute(conn)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// An instance's history, one entry per event, in order.
pub async fn list_events(conn: &mut Conn, instance: &str) -> Result<Vec<EventRow>> {
    let rows: Vec<(i64, i64, String)> = sqlx::query_as(
        "SELECT seq, at, events FROM process_history WHERE instance_id = $1 ORDER BY seq",
    )
    .bind(instance)
    .fetch_all(conn)
    .await?;
    let mut out = Vec::new();
    for (seq, at, events) in rows {
        let events: Vec<HistoryEvent> = serde_json::from_str(&events)
            .map_err(|e| Error::Corrupt(format!("history of {instance}: {e}")))?;
        for (k, (element, event, detail)) in events.into_iter().enumerate() {
            out.push(EventRow {
                seq: seq + k as i64,
                at,
                element,
                event,
                detail,
            });
        }
    }
    Ok(out)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRow {
    pub id: String,
    pub instance_id: String,
    pub token: i64,
    pub element: String,
    pub kind: String,
    pub task_type: String,
    pub state: String,
    pub retries: i64,
    pub due_at: i64,
    pub attempt: i64,
    pub lock_owner: Option<String>,
    pub lock_expires: Option<i64>,
    pub payload: String,
    pub last_error: Option<String>,
    pub created_at: i64,
}

pub(crate) const JOB_COLS: &str = "id, instance_id, token, element, kind, task_type, state, retries, due_at, \
    attempt, lock_owner, lock_expires, payload, last_error, created_at";

pub async fn insert_job(conn: &mut Conn, j: &JobRow) -> Result<()> {
    insert_jobs(conn, std::slice::from_ref(j)).await
}

pub async fn get_job(conn: &mut Conn, id: &str) -> Result<Option<JobRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {JOB_COLS} FROM process_jobs WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

pub async fn jobs_of_instance(conn: &mut Conn, instance: &str) -> Result<Vec<JobRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {JOB_COLS} FROM process_jobs WHERE instance_id = $1 ORDER BY created_at, id"
    )))
    .bind(instance)
    .fetch_all(conn)
    .await?)
}

/// Releases the jobs leased to an earlier run of this node (owners starting with `prefix`,
/// other than `current`): they become due now, and the next claim bumps their attempt, which
/// fences any late completion. `prefix` holds no `LIKE` wildcards (`%`, `_`). Returns how many.
pub async fn release_jobs_of(
    conn: &mut Conn,
    prefix: &str,
    current: &str,
    now: i64,
) -> Result<u64> {
    if prefix.contains(['%', '_', '\\']) {
        return Err(crate::Error::Corrupt(format!(
            "node identity `{prefix}` has LIKE wildcards"
        )));
    }
    Ok(sqlx::query(
        "UPDATE process_jobs SET state = 'ready', lock_owner = NULL, lock_expires = NULL, due_at = $3 \
         WHERE state = 'locked' AND lock_owner LIKE $1 AND lock_owner <> $2",
    )
    .bind(format!("{prefix}%"))
    .bind(current)
    .bind(now)
    .execute(conn)
    .await?
    .rows_affected())
}

/// Claims due jobs for `owner` until `lock_until`: ready jobs whose time has come, and locked
/// jobs whose lease expired (their worker died). Each claim bumps `attempt`, which fences the
/// previous holder's completion. On PostgreSQL concurrent claimers skip each other's rows.
pub async fn claim_jobs(
    conn: &mut Conn,
    backend: Backend,
    owner: &str,
    now: i64,
    lock_until: i64,
    limit: i64,
) -> Result<Vec<JobRow>> {
    let skip = backend.skip_locked();
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE process_jobs SET state = 'locked', lock_owner = $1, lock_expires = $2, \
         attempt = attempt + 1 \
         WHERE id IN (SELECT id FROM process_jobs \
           WHERE (state = 'ready' AND due_at <= $3) OR (state = 'locked' AND lock_expires < $3) \
           ORDER BY due_at LIMIT $4 {skip}) \
         RETURNING {JOB_COLS}"
    )))
    .bind(owner)
    .bind(lock_until)
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// The earliest time a job becomes due (for the worker's sleep).
pub async fn next_due(conn: &mut Conn) -> Result<Option<i64>> {
    Ok(sqlx::query_scalar(
        "SELECT MIN(t) FROM (SELECT MIN(due_at) AS t FROM process_jobs WHERE state = 'ready' \
         UNION ALL SELECT MIN(lock_expires) FROM process_jobs WHERE state = 'locked') x",
    )
    .fetch_one(conn)
    .await?)
}

/// Removes a job if `owner` still holds it at `attempt` (the fence). False: a stale worker.
pub async fn finish_job(conn: &mut Conn, id: &str, owner: &str, attempt: i64) -> Result<bool> {
    let r = sqlx::query(
        "DELETE FROM process_jobs WHERE id = $1 AND state = 'locked' AND lock_owner = $2 \
         AND attempt = $3",
    )
    .bind(id)
    .bind(owner)
    .bind(attempt)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Records a failed attempt (fenced): back to `ready` at `due_at` with `retries` left, or to
/// `incident` when none are left.
pub async fn fail_job(
    conn: &mut Conn,
    id: &str,
    owner: &str,
    attempt: i64,
    retries: i64,
    due_at: i64,
    error: &str,
) -> Result<bool> {
    let state = if retries > 0 { "ready" } else { "incident" };
    let r = sqlx::query(
        "UPDATE process_jobs SET state = $1, retries = $2, due_at = $3, last_error = $4, \
         lock_owner = NULL, lock_expires = NULL \
         WHERE id = $5 AND state = 'locked' AND lock_owner = $6 AND attempt = $7",
    )
    .bind(state)
    .bind(retries)
    .bind(due_at)
    .bind(error)
    .bind(id)
    .bind(owner)
    .bind(attempt)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// An incident's job runs again with `retries` attempts.
pub async fn retry_job(conn: &mut Conn, id: &str, retries: i64, now: i64) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE process_jobs SET state = 'ready', retries = $1, due_at = $2, lock_owner = NULL, \
         lock_expires = NULL WHERE id = $3 AND state = 'incident'",
    )
    .bind(retries)
    .bind(now)
    .bind(id)
    .execute(conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Deletes the waits of cancelled tokens: jobs, subscriptions; open user tasks are cancelled.
pub async fn cancel_tokens(
    conn: &mut Conn,
    instance: &str,
    tokens: &[u64],
    now: i64,
) -> Result<()> {
    for t in tokens {
        let t = *t as i64;
        sqlx::query("DELETE FROM process_jobs WHERE instance_id = $1 AND token = $2")
            .bind(instance)
            .bind(t)
            .execute(&mut *conn)
            .await?;
        sqlx::query("DELETE FROM process_subscriptions WHERE instance_id = $1 AND token = $2")
            .bind(instance)
            .bind(t)
            .execute(&mut *conn)
            .await?;
        sqlx::query(
            "UPDATE user_tasks SET state = 'canceled', completed_at = $1 \
             WHERE instance_id = $2 AND token = $3 AND state = 'open'",
        )
        .bind(now)
        .bind(instance)
        .bind(t)
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Deletes every wait of an instance (it ended).
pub async fn clear_instance(conn: &mut Conn, instance: &str, now: i64) -> Result<()> {
    sqlx::query("DELETE FROM process_jobs WHERE instance_id = $1")
        .bind(instance)
        .execute(&mut *conn)
        .await?;
    sqlx::query("DELETE FROM process_subscriptions WHERE instance_id = $1")
        .bind(instance)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "UPDATE user_tasks SET state = 'canceled', completed_at = $1 \
         WHERE instance_id = $2 AND state = 'open'",
    )
    .bind(now)
    .bind(instance)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

pub async fn insert_subscription(
    conn: &mut Conn,
    instance: &str,
    token: u64,
    element: &str,
    name: &str,
    key: &str,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO process_subscriptions (instance_id, token, element, message_name, \
         correlation_key, created_at) VALUES ($1,$2,$3,$4,$5,$6)",
    )
    .bind(instance)
    .bind(token as i64)
    .bind(element)
    .bind(name)
    .bind(key)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Subscriptions waiting for a message, oldest first.
pub async fn subscriptions_for(
    conn: &mut Conn,
    name: &str,
    key: &str,
) -> Result<Vec<(String, i64)>> {
    Ok(sqlx::query_as(
        "SELECT instance_id, token FROM process_subscriptions \
         WHERE message_name = $1 AND correlation_key = $2 ORDER BY created_at",
    )
    .bind(name)
    .bind(key)
    .fetch_all(conn)
    .await?)
}

pub async fn subscriptions_of(
    conn: &mut Conn,
    instance: &str,
) -> Result<Vec<(i64, String, String, String)>> {
    Ok(sqlx::query_as(
        "SELECT token, element, message_name, correlation_key FROM process_subscriptions \
         WHERE instance_id = $1 ORDER BY token",
    )
    .bind(instance)
    .fetch_all(conn)
    .await?)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct UserTaskRow {
    pub id: String,
    pub instance_id: String,
    pub token: i64,
    pub element: String,
    pub name: Option<String>,
    pub process_key: String,
    pub assignee: Option<String>,
    pub candidate_groups: Option<String>,
    pub form: Option<String>,
    pub state: String,
    pub chat_id: Option<String>,
    pub case_id: Option<String>,
    pub created_at: i64,
    pub completed_at: Option<i64>,
    pub completed_by: Option<String>,
    pub result: Option<String>,
}

const TASK_COLS: &str = "id, instance_id, token, element, name, process_key, assignee, \
    candidate_groups, form, state, chat_id, case_id, created_at, completed_at, completed_by, result";

pub async fn insert_user_task(conn: &mut Conn, t: &UserTaskRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO user_tasks (id, instance_id, token, element, name, process_key, assignee, \
         candidate_groups, form, state, chat_id, case_id, created_at) \
         VALUES ($1,$2,$3,$4,$5,$6,$7,$8,$9,$10,$11,$12,$13)",
    )
    .bind(&t.id)
    .bind(&t.instance_id)
    .bind(t.token)
    .bind(&t.element)
    .bind(&t.name)
    .bind(&t.process_key)
    .bind(&t.assignee)
    .bind(&t.candidate_groups)
    .bind(&t.form)
    .bind(&t.state)
    .bind(&t.chat_id)
    .bind(&t.case_id)
    .bind(t.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get_user_task(conn: &mut Conn, id: &str) -> Result<Option<UserTaskRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {TASK_COLS} FROM user_tasks WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// User tasks in a state (newest first); `instance` narrows to one instance.
pub async fn list_user_tasks(
    conn: &mut Conn,
    state: &str,
    instance: Option<&str>,
    limit: i64,
) -> Result<Vec<UserTaskRow>> {
    let (cond, inst) = match instance {
        Some(i) => ("AND instance_id = $2", i),
        None => ("AND $2 = ''", ""),
    };
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {TASK_COLS} FROM user_tasks WHERE state = $1 {cond} \
         ORDER BY created_at DESC LIMIT {}",
        limit.clamp(1, 1000)
    )))
    .bind(state)
    .bind(inst)
    .fetch_all(conn)
    .await?)
}

pub async fn update_user_task(conn: &mut Conn, t: &UserTaskRow) -> Result<()> {
    sqlx::query(
        "UPDATE user_tasks SET assignee = $1, state = $2, completed_at = $3, completed_by = $4, \
         result = $5 WHERE id = $6",
    )
    .bind(&t.assignee)
    .bind(&t.state)
    .bind(t.completed_at)
    .bind(&t.completed_by)
    .bind(&t.result)
    .bind(&t.id)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct IncidentRow {
    pub id: String,
    pub instance_id: String,
    pub job_id: Option<String>,
    pub element: String,
    pub message: String,
    pub created_at: i64,
    pub resolved_at: Option<i64>,
    pub resolved_by: Option<String>,
}

const INC_COLS: &str =
    "id, instance_id, job_id, element, message, created_at, resolved_at, resolved_by";

pub async fn insert_incident(conn: &mut Conn, i: &IncidentRow) -> Result<()> {
    sqlx::query(
        "INSERT INTO process_incidents (id, instance_id, job_id, element, message, created_at) \
         VALUES ($1,$2,$3,$4,$5,$6)",
    )
    .bind(&i.id)
    .bind(&i.instance_id)
    .bind(&i.job_id)
    .bind(&i.element)
    .bind(&i.message)
    .bind(i.created_at)
    .execute(&mut *conn)
    .await?;
    add_incidents(conn, &i.instance_id, 1).await
}

pub async fn get_incident(conn: &mut Conn, id: &str) -> Result<Option<IncidentRow>> {
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {INC_COLS} FROM process_incidents WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(conn)
    .await?)
}

/// Open incidents (all, or of one instance), newest first.
pub async fn open_incidents(conn: &mut Conn, instance: Option<&str>) -> Result<Vec<IncidentRow>> {
    let (cond, inst) = match instance {
        Some(i) => ("AND instance_id = $1", i),
        None => ("AND $1 = ''", ""),
    };
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "SELECT {INC_COLS} FROM process_incidents WHERE resolved_at IS NULL {cond} \
         ORDER BY created_at DESC LIMIT 500"
    )))
    .bind(inst)
    .fetch_all(conn)
    .await?)
}

pub async fn resolve_incident(conn: &mut Conn, id: &str, by: &str, now: i64) -> Result<bool> {
    let r = sqlx::query(
        "UPDATE process_incidents SET resolved_at = $1, resolved_by = $2 \
         WHERE id = $3 AND resolved_at IS NULL",
    )
    .bind(now)
    .bind(by)
    .bind(id)
    .execute(&mut *conn)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Records a chat event for the process engine, in the caller's transaction.
pub async fn insert_signal(
    conn: &mut Conn,
    name: &str,
    correlation_key: &str,
    variables: &serde_json::Value,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO process_signals (id, name, correlation_key, variables, created_at) \
         VALUES ($1,$2,$3,$4,$5)",
    )
    .bind(uuid::Uuid::now_v7().to_string())
    .bind(name)
    .bind(correlation_key)
    .bind(variables.to_string())
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct SignalRow {
    pub id: String,
    pub name: String,
    pub correlation_key: String,
    pub variables: String,
    pub created_at: i64,
}

/// Claims the oldest signals for processing (a lease; the caller deletes each one in the
/// transaction that acts on it).
pub async fn claim_signals(
    conn: &mut Conn,
    backend: Backend,
    now: i64,
    lease_until: i64,
    limit: i64,
) -> Result<Vec<SignalRow>> {
    let skip = backend.skip_locked();
    Ok(sqlx::query_as(AssertSqlSafe(format!(
        "UPDATE process_signals SET locked_until = $1 WHERE id IN (SELECT id FROM process_signals \
         WHERE locked_until IS NULL OR locked_until < $2 ORDER BY created_at, id LIMIT $3 {skip}) \
         RETURNING id, name, correlation_key, variables, created_at"
    )))
    .bind(lease_until)
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await?)
}

/// Deletes a processed signal; false when another node already did.
pub async fn delete_signal(conn: &mut Conn, id: &str) -> Result<bool> {
    let r = sqlx::query("DELETE FROM process_signals WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(r.rows_affected() == 1)
}

pub async fn delete_job(conn: &mut Conn, id: &str) -> Result<()> {
    sqlx::query("DELETE FROM process_jobs WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Removes the timer start jobs of a process (a new version replaces them).
pub async fn delete_start_timers(conn: &mut Conn, process_key: &str) -> Result<()> {
    sqlx::query("DELETE FROM process_jobs WHERE kind = 'start_timer' AND task_type = $1")
        .bind(process_key)
        .execute(conn)
        .await?;
    Ok(())
}

// ---- set-based forms for batches of commands (group commit) -------------------------------

/// Parameters per multi-row statement. Fewer statements save round trips to the database
/// thread, but binding gets slower per parameter as a statement's parameter count grows
/// (the SQLite driver looks each `$n` up by name), so statements stay around this size.
pub(crate) const BIND_PARAMS: usize = 128;
/// Ids per `IN (…)` list.
const BIND_ROWS_1: usize = 100;

/// `($1,$2,…),($n+1,…)` for `rows` rows of `cols` placeholders, starting after `offset`.
pub(crate) fn placeholders(rows: usize, cols: usize, offset: usize) -> String {
    let mut s = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            s.push(',');
        }
        s.push('(');
        for c in 0..cols {
            if c > 0 {
                s.push(',');
            }
            s.push_str(&format!("${}", offset + r * cols + c + 1));
        }
        s.push(')');
    }
    s
}

/// Removes the jobs `owner` holds among `ids`; returns `(id, attempt)` of those removed (the
/// caller checks the attempts, the fence).
pub async fn finish_jobs(conn: &mut Conn, owner: &str, ids: &[&str]) -> Result<Vec<(String, i64)>> {
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(BIND_ROWS_1) {
        let list: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 2)).collect();
        let mut q = sqlx::query_as(AssertSqlSafe(format!(
            "DELETE FROM process_jobs WHERE lock_owner = $1 AND state = 'locked' AND id IN ({}) \
             RETURNING id, attempt",
            list.join(",")
        )))
        .bind(owner);
        for id in chunk {
            q = q.bind(*id);
        }
        let rows: Vec<(String, i64)> = q.fetch_all(&mut *conn).await?;
        out.extend(rows);
    }
    Ok(out)
}

/// Instances by id, row-locked on PostgreSQL.
pub async fn lock_instances(
    conn: &mut Conn,
    backend: Backend,
    ids: &[&str],
) -> Result<Vec<InstanceRow>> {
    let lock = match backend {
        Backend::Postgres => "FOR UPDATE",
        Backend::Sqlite => "",
    };
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(BIND_ROWS_1) {
        let list: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 1)).collect();
        let mut q = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT {INST_COLS} FROM process_instances WHERE id IN ({}) ORDER BY id {lock}",
            list.join(",")
        )));
        for id in chunk {
            q = q.bind(*id);
        }
        let rows: Vec<InstanceRow> = q.fetch_all(&mut *conn).await?;
        out.extend(rows);
    }
    Ok(out)
}

pub async fn insert_jobs(conn: &mut Conn, jobs: &[JobRow]) -> Result<()> {
    for chunk in jobs.chunks(BIND_PARAMS / 15) {
        let mut q = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO process_jobs (id, instance_id, token, element, kind, task_type, state, \
             retries, due_at, attempt, lock_owner, lock_expires, payload, last_error, created_at) \
             VALUES {}",
            placeholders(chunk.len(), 15, 0)
        )));
        for j in chunk {
            q = q
                .bind(j.id.clone())
                .bind(j.instance_id.clone())
                .bind(j.token)
                .bind(j.element.clone())
                .bind(j.kind.clone())
                .bind(j.task_type.clone())
                .bind(j.state.clone())
                .bind(j.retries)
                .bind(j.due_at)
                .bind(j.attempt)
                .bind(j.lock_owner.clone())
                .bind(j.lock_expires)
                .bind(j.payload.clone())
                .bind(j.last_error.clone())
                .bind(j.created_at);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// A history row to insert: instance id, the first event's sequence number, time, and the
/// events as a JSON array of [`HistoryEvent`]s (see [`history_rows`]).
pub type HistoryRow = (String, i64, i64, String);

/// History rows with their sequence numbers already assigned (`events` counters kept by the
/// caller and written with [`update_instances`]).
pub async fn insert_events(conn: &mut Conn, rows: &[HistoryRow]) -> Result<()> {
    for chunk in rows.chunks(BIND_PARAMS / 4) {
        let mut q = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO process_history (instance_id, seq, at, events) VALUES {}",
            placeholders(chunk.len(), 4, 0)
        )));
        for (instance, seq, at, events) in chunk {
            q = q
                .bind(instance.clone())
                .bind(*seq)
                .bind(*at)
                .bind(events.clone());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

pub async fn insert_instances(conn: &mut Conn, rows: &[InstanceRow]) -> Result<()> {
    for chunk in rows.chunks(BIND_PARAMS / 18) {
        let mut q = sqlx::query(AssertSqlSafe(format!(
            "INSERT INTO process_instances (id, definition_id, process_key, state, data, revision, \
             parent_id, parent_token, chat_id, contact_id, case_id, started_by, start_key, \
             incidents, started_at, updated_at, ended_at, events) VALUES {}",
            placeholders(chunk.len(), 18, 0)
        )));
        for i in chunk {
            q = q
                .bind(i.id.clone())
                .bind(i.definition_id.clone())
                .bind(i.process_key.clone())
                .bind(i.state.clone())
                .bind(i.data.clone())
                .bind(i.revision)
                .bind(i.parent_id.clone())
                .bind(i.parent_token)
                .bind(i.chat_id.clone())
                .bind(i.contact_id.clone())
                .bind(i.case_id.clone())
                .bind(i.started_by.clone())
                .bind(i.start_key.clone())
                .bind(i.incidents)
                .bind(i.started_at)
                .bind(i.updated_at)
                .bind(i.ended_at)
                .bind(i.events);
        }
        q.execute(&mut *conn).await?;
    }
    Ok(())
}

/// Writes many instances' new state at once, each only if its revision is still the one read;
/// returns how many were written.
pub async fn update_instances(conn: &mut Conn, rows: &[InstanceRow], now: i64) -> Result<u64> {
    let mut n = 0;
    for chunk in rows.chunks(BIND_PARAMS / 8) {
        let mut q = sqlx::query(AssertSqlSafe(format!(
            "UPDATE process_instances SET state = v.column2, data = v.column3, \
             revision = process_instances.revision + 1, events = v.column4, updated_at = v.column5, \
             ended_at = COALESCE(process_instances.ended_at, v.column6), \
             case_id = COALESCE(v.column7, process_instances.case_id) \
             FROM (VALUES {}) AS v \
             WHERE process_instances.id = v.column1 AND process_instances.revision = v.column8",
            placeholders(chunk.len(), 8, 0)
        )));
        for i in chunk {
            let ended = (i.state != "active").then_some(now);
            q = q
                .bind(i.id.clone())
                .bind(i.state.clone())
                .bind(i.data.clone())
                .bind(i.events)
                .bind(now)
                .bind(ended)
                .bind(i.case_id.clone())
                .bind(i.revision);
        }
        n += q.execute(&mut *conn).await?.rows_affected();
    }
    Ok(n)
}

/// Serialises, until the transaction ends, everything that correlates or subscribes to this
/// message name and correlation key (PostgreSQL; SQLite has one writer anyway). Without it a
/// message published on one node while another node opens the matching subscription could
/// see neither the subscription nor, there, the buffered message.
pub async fn lock_message_key(
    conn: &mut Conn,
    backend: Backend,
    name: &str,
    key: &str,
) -> Result<()> {
    if backend == Backend::Postgres {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))::text")
            .bind(format!("process-message:{name}\u{1f}{key}"))
            .execute(conn)
            .await?;
    }
    Ok(())
}

/// Buffers a message until `expires_at` (see migration 0008).
pub async fn insert_message(
    conn: &mut Conn,
    name: &str,
    key: &str,
    variables: &str,
    published_at: i64,
    expires_at: i64,
    earlier_only: bool,
) -> Result<String> {
    let id = uuid::Uuid::now_v7().to_string();
    sqlx::query(
        "INSERT INTO process_messages (id, name, correlation_key, variables, created_at, \
         expires_at, earlier_only) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(name)
    .bind(key)
    .bind(variables)
    .bind(published_at)
    .bind(expires_at)
    .bind(earlier_only as i64)
    .execute(conn)
    .await?;
    Ok(id)
}

/// Takes (deletes and returns the variables of) the oldest live buffered message with this name
/// and correlation key that an instance started at `started_at` may take. On PostgreSQL a
/// message another transaction is taking is skipped, so a message is taken once.
pub async fn take_message(
    conn: &mut Conn,
    backend: Backend,
    name: &str,
    key: &str,
    now: i64,
    started_at: i64,
) -> Result<Option<String>> {
    let skip = backend.skip_locked();
    Ok(sqlx::query_scalar(AssertSqlSafe(format!(
        "DELETE FROM process_messages WHERE id = (SELECT id FROM process_messages \
         WHERE name = $1 AND correlation_key = $2 AND expires_at > $3 \
         AND (earlier_only = 0 OR created_at >= $4) \
         ORDER BY created_at, id LIMIT 1 {skip}) RETURNING variables"
    )))
    .bind(name)
    .bind(key)
    .bind(now)
    .bind(started_at)
    .fetch_optional(conn)
    .await?)
}

/// Drops expired buffered messages; returns how many.
pub async fn delete_expired_messages(conn: &mut Conn, now: i64) -> Result<u64> {
    Ok(
        sqlx::query("DELETE FROM process_messages WHERE expires_at <= $1")
            .bind(now)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}
