//! The embedded fast lane: the process engine's batch commands on SQLite, run on one
//! rusqlite connection of their own instead of through sqlx.
//!
//! sqlx runs each SQLite connection on a worker thread and hands every statement and every
//! result row across a channel; for the engine's group commits (hundreds of small rows per
//! transaction) those hand-offs cost more than SQLite's own work. Here a batch runs on one
//! blocking thread, start to commit, with prepared statements kept between batches.
//!
//! Writers stay serialised: a batch holds the store's single writer slot (the sqlx write
//! pool's only connection) while it runs, so it never contends with the desk's writes for
//! SQLite's lock. Other processes on the same file (the CLI) are waited for by the busy
//! timeout, as with sqlx.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use rusqlite::{OptionalExtension, params};

use crate::processes::{HistoryRow, INST_COLS, InstanceRow, JOB_COLS, JobRow};
use crate::{Error, Result, Store};

/// A connection to the store's SQLite file for the engine's batches.
#[derive(Debug)]
pub struct Native {
    path: PathBuf,
    conn: Mutex<Option<rusqlite::Connection>>,
    /// Transactions committed on this lane (tests check that the lane is really used).
    commits: AtomicU64,
    /// Time spent in this lane's transactions, begin to commit, in microseconds.
    busy_us: AtomicU64,
}

impl Native {
    pub(crate) fn new(path: &Path) -> Arc<Native> {
        Arc::new(Native {
            path: path.to_owned(),
            conn: Mutex::new(None),
            commits: AtomicU64::new(0),
            busy_us: AtomicU64::new(0),
        })
    }

    /// Transactions committed on this lane so far.
    pub fn commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// Time this lane has spent in transactions (from `BEGIN IMMEDIATE`, which may wait for
    /// another process's lock, to commit or rollback) so far: how busy SQLite's one writer
    /// was with the engine's batches.
    pub fn busy(&self) -> std::time::Duration {
        std::time::Duration::from_micros(self.busy_us.load(Ordering::Relaxed))
    }

    fn open(&self) -> Result<rusqlite::Connection> {
        // The file exists: the store's own connections created it and ran the migrations.
        let c = rusqlite::Connection::open_with_flags(
            &self.path,
            rusqlite::OpenFlags::SQLITE_OPEN_READ_WRITE | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // As the sqlx connections are set up (lib.rs), and like the writer it never
        // checkpoints inline: the store's background task does.
        c.execute_batch(
            "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; PRAGMA busy_timeout=10000; \
             PRAGMA foreign_keys=ON; PRAGMA wal_autocheckpoint=0; \
             PRAGMA cache_size=-16384;",
        )?;
        c.set_prepared_statement_cache_capacity(32);
        Ok(c)
    }
}

/// One write transaction on the fast lane. Statements are prepared once per connection.
pub struct NativeTx<'c> {
    conn: &'c rusqlite::Connection,
}

impl Store {
    /// The fast lane, on SQLite files.
    pub fn native(&self) -> Option<&Arc<Native>> {
        self.native.as_ref()
    }

    /// Runs `f` in one write transaction on the fast lane, on a blocking thread, holding the
    /// store's writer slot. `f` returning an error rolls the transaction back.
    pub async fn native_write<R, E, F>(&self, f: F) -> std::result::Result<R, E>
    where
        F: FnOnce(&mut NativeTx<'_>) -> std::result::Result<R, E> + Send + 'static,
        R: Send + 'static,
        E: From<Error> + Send + 'static,
    {
        let Some(native) = self.native.clone() else {
            return Err(Error::Corrupt("the fast lane exists only on SQLite".into()).into());
        };
        // The writer slot: while this is held, no sqlx write transaction runs.
        let slot = self.write.acquire().await.map_err(Error::from)?;
        tokio::task::spawn_blocking(move || {
            // Released when the batch is over, even if the caller stopped waiting.
            let _slot = slot;
            // A batch that panicked left its connection in an unknown state: reopen it.
            let mut guard = native.conn.lock().unwrap_or_else(|poisoned| {
                let mut g = poisoned.into_inner();
                *g = None;
                g
            });
            if guard.is_none() {
                *guard = Some(native.open()?);
            }
            let conn = guard.as_ref().expect("opened above");
            let started = std::time::Instant::now();
            let _busy = Busy(&native.busy_us, started);
            conn.execute_batch("BEGIN IMMEDIATE").map_err(Error::from)?;
            let mut tx = NativeTx { conn };
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(&mut tx)));
            let ok = match ran {
                Ok(Ok(r)) => match conn.execute_batch("COMMIT") {
                    Ok(()) => {
                        native.commits.fetch_add(1, Ordering::Relaxed);
                        return Ok(r);
                    }
                    Err(e) => Err(Error::from(e).into()),
                },
                Ok(Err(e)) => Err(e),
                Err(_) => Err(Error::Corrupt("a fast lane batch panicked".into()).into()),
            };
            // Anything but a commit rolls back; a connection that cannot is closed (which
            // rolls back too) and reopened for the next batch, so SQLite's write lock is never
            // left held.
            if let Err(e) = conn.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, "fast lane rollback failed; reopening");
                *guard = None;
            }
            ok
        })
        .await
        .map_err(|e| Error::Corrupt(format!("fast lane task failed: {e}")))?
    }
}

/// Adds the time since its start to a counter when dropped.
struct Busy<'a>(&'a AtomicU64, std::time::Instant);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0
            .fetch_add(self.1.elapsed().as_micros() as u64, Ordering::Relaxed);
    }
}

fn job_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<JobRow> {
    Ok(JobRow {
        id: r.get(0)?,
        instance_id: r.get(1)?,
        token: r.get(2)?,
        element: r.get(3)?,
        kind: r.get(4)?,
        task_type: r.get(5)?,
        state: r.get(6)?,
        retries: r.get(7)?,
        due_at: r.get(8)?,
        attempt: r.get(9)?,
        lock_owner: r.get(10)?,
        lock_expires: r.get(11)?,
        payload: r.get(12)?,
        last_error: r.get(13)?,
        created_at: r.get(14)?,
    })
}

fn instance_from(r: &rusqlite::Row<'_>) -> rusqlite::Result<InstanceRow> {
    Ok(InstanceRow {
        id: r.get(0)?,
        definition_id: r.get(1)?,
        process_key: r.get(2)?,
        state: r.get(3)?,
        data: r.get(4)?,
        revision: r.get(5)?,
        parent_id: r.get(6)?,
        parent_token: r.get(7)?,
        chat_id: r.get(8)?,
        contact_id: r.get(9)?,
        case_id: r.get(10)?,
        started_by: r.get(11)?,
        start_key: r.get(12)?,
        incidents: r.get(13)?,
        started_at: r.get(14)?,
        updated_at: r.get(15)?,
        ended_at: r.get(16)?,
        events: r.get(17)?,
    })
}

/// The same statements as [`crate::processes`], one row at a time: in-process, a prepared
/// single-row statement costs no more per row than a multi-row one.
impl NativeTx<'_> {
    /// See [`crate::processes::claim_jobs`] (SQLite has one writer: no row locks needed).
    pub fn claim_jobs(
        &mut self,
        owner: &str,
        now: i64,
        lock_until: i64,
        limit: i64,
    ) -> Result<Vec<JobRow>> {
        let mut st = self.conn.prepare_cached(&format!(
            "UPDATE process_jobs SET state = 'locked', lock_owner = ?1, lock_expires = ?2, \
             attempt = attempt + 1 \
             WHERE id IN (SELECT id FROM process_jobs \
               WHERE (state = 'ready' AND due_at <= ?3) OR (state = 'locked' AND lock_expires < ?3) \
               ORDER BY due_at LIMIT ?4) \
             RETURNING {JOB_COLS}"
        ))?;
        let rows = st.query_map(params![owner, lock_until, now, limit], job_from)?;
        Ok(rows.collect::<rusqlite::Result<_>>()?)
    }

    /// See [`crate::processes::finish_jobs`]: removes each of `jobs` (id, attempt) that
    /// `owner` still holds at that attempt, and returns those removed. (Fenced in the
    /// statement itself: a job this node claimed again since is not removed.)
    pub fn finish_jobs(&mut self, owner: &str, jobs: &[(&str, i64)]) -> Result<Vec<(String, i64)>> {
        let mut st = self.conn.prepare_cached(
            "DELETE FROM process_jobs WHERE id = ?1 AND lock_owner = ?2 AND state = 'locked' \
             AND attempt = ?3",
        )?;
        let mut out = Vec::with_capacity(jobs.len());
        for (id, attempt) in jobs {
            if st.execute(params![id, owner, attempt])? == 1 {
                out.push(((*id).to_owned(), *attempt));
            }
        }
        Ok(out)
    }

    /// Instances by id, in id order (see [`crate::processes::lock_instances`]).
    pub fn instances(&mut self, ids: &[&str]) -> Result<Vec<InstanceRow>> {
        let mut st = self.conn.prepare_cached(&format!(
            "SELECT {INST_COLS} FROM process_instances WHERE id = ?1"
        ))?;
        let mut sorted = ids.to_vec();
        sorted.sort_unstable();
        let mut out = Vec::with_capacity(ids.len());
        for id in sorted {
            if let Some(r) = st.query_row(params![id], instance_from).optional()? {
                out.push(r);
            }
        }
        Ok(out)
    }

    /// A definition's XML and process key, for the engine's cache.
    pub fn definition(&mut self, id: &str) -> Result<Option<(String, String)>> {
        let mut st = self
            .conn
            .prepare_cached("SELECT xml, process_key FROM process_definitions WHERE id = ?1")?;
        Ok(st
            .query_row(params![id], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    pub fn insert_jobs(&mut self, jobs: &[JobRow]) -> Result<()> {
        let mut st = self.conn.prepare_cached(&format!(
            "INSERT INTO process_jobs ({JOB_COLS}) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
        ))?;
        for j in jobs {
            st.execute(params![
                j.id,
                j.instance_id,
                j.token,
                j.element,
                j.kind,
                j.task_type,
                j.state,
                j.retries,
                j.due_at,
                j.attempt,
                j.lock_owner,
                j.lock_expires,
                j.payload,
                j.last_error,
                j.created_at
            ])?;
        }
        Ok(())
    }

    /// See [`crate::processes::insert_events`].
    pub fn insert_events(&mut self, rows: &[HistoryRow]) -> Result<()> {
        let mut st = self.conn.prepare_cached(
            "INSERT INTO process_history (instance_id, seq, at, events) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for (instance, seq, at, events) in rows {
            st.execute(params![instance, seq, at, events])?;
        }
        Ok(())
    }

    pub fn insert_instances(&mut self, rows: &[InstanceRow]) -> Result<()> {
        let mut st = self.conn.prepare_cached(&format!(
            "INSERT INTO process_instances ({INST_COLS}) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, \
             ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
        ))?;
        for i in rows {
            st.execute(params![
                i.id,
                i.definition_id,
                i.process_key,
                i.state,
                i.data,
                i.revision,
                i.parent_id,
                i.parent_token,
                i.chat_id,
                i.contact_id,
                i.case_id,
                i.started_by,
                i.start_key,
                i.incidents,
                i.started_at,
                i.updated_at,
                i.ended_at,
                i.events
            ])?;
        }
        Ok(())
    }

    /// See [`crate::processes::update_instances`]: each row only if its revision and its
    /// history count (`read_events`, one per row) are still the ones planned from; returns
    /// how many were written.
    pub fn update_instances(
        &mut self,
        rows: &[InstanceRow],
        read_events: &[i64],
        now: i64,
    ) -> Result<u64> {
        let mut st = self.conn.prepare_cached(
            "UPDATE process_instances SET state = ?2, data = ?3, revision = revision + 1, \
             events = ?4, updated_at = ?5, ended_at = COALESCE(ended_at, ?6), \
             case_id = COALESCE(?7, case_id) WHERE id = ?1 AND revision = ?8 AND events = ?9",
        )?;
        let mut n = 0;
        for (i, read) in rows.iter().zip(read_events) {
            let ended = (i.state != "active").then_some(now);
            n += st.execute(params![
                i.id, i.state, i.data, i.events, now, ended, i.case_id, i.revision, read
            ])? as u64;
        }
        Ok(n)
    }
}
