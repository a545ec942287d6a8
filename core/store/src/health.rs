//! Whether the database can be reached and written: what a failed storage call means for the
//! caller (an outage, a full disk, a read-only file — all temporary — or a real error), and a
//! watchdog that makes requests fail fast while the database cannot be reached.
//!
//! The watchdog probes the database every second with a deadline. Once a probe fails, every
//! acquire that is waiting and every new one fails at once with [`Error::Unavailable`] instead
//! of waiting out the pool's acquire timeout (a refused TCP connection is retried by sqlx until
//! then); it keeps probing every 500 ms and the store serves again on the first success. A full
//! disk or a read-only file is not a reason to refuse reads, so those are only classified: the
//! writes fail at once on their own, and `/readyz` probes a write.

use std::time::Duration;

use tokio::sync::watch;

use crate::Error;

/// Why the database cannot serve a call right now; each passes without a restart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unavailable {
    /// The database server cannot be reached (refused, reset, shut down, probe timed out).
    Unreachable,
    /// The disk under the database is full.
    Full,
    /// The database file or server is read-only (a read-only mount, a standby).
    ReadOnly,
    /// The storage reports I/O errors.
    Io,
}

impl Unavailable {
    /// What an operator reads: in the API's 503 answer, `/readyz` and the log.
    pub fn describe(self) -> &'static str {
        match self {
            Unavailable::Unreachable => "the database cannot be reached",
            Unavailable::Full => "the database's disk is full",
            Unavailable::ReadOnly => "the database is read-only",
            Unavailable::Io => "the database's storage reports I/O errors",
        }
    }
}

/// How long a probe may take before the database counts as unreachable.
pub const PROBE_DEADLINE: Duration = Duration::from_millis(1500);
const PROBE_EVERY_UP: Duration = Duration::from_secs(1);
const PROBE_EVERY_DOWN: Duration = Duration::from_millis(500);

impl Error {
    /// The temporary condition this error shows, if it is one (the API answers 503 with
    /// `Retry-After` for these and 500 for the rest).
    pub fn unavailable(&self) -> Option<Unavailable> {
        match self {
            Error::Unavailable(u) => Some(*u),
            Error::Db(e) => sqlx_unavailable(e),
            Error::Native(rusqlite::Error::SqliteFailure(e, _)) => sqlite_code(e.extended_code),
            _ => None,
        }
    }
}

fn sqlx_unavailable(e: &sqlx::Error) -> Option<Unavailable> {
    match e {
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::PoolClosed => {
            Some(Unavailable::Unreachable)
        }
        sqlx::Error::Database(d) => {
            let code = d.code().unwrap_or_default();
            match &*code {
                "53100" => Some(Unavailable::Full),
                "25006" => Some(Unavailable::ReadOnly),
                "58030" => Some(Unavailable::Io),
                "57P01" | "57P02" | "57P03" => Some(Unavailable::Unreachable),
                c if c.starts_with("08") => Some(Unavailable::Unreachable),
                c => c.parse::<i32>().ok().and_then(sqlite_code),
            }
        }
        _ => None,
    }
}

/// SQLite result codes (the primary code is the low byte of the extended one).
fn sqlite_code(extended: i32) -> Option<Unavailable> {
    match extended & 0xff {
        13 => Some(Unavailable::Full),    // SQLITE_FULL
        8 => Some(Unavailable::ReadOnly), // SQLITE_READONLY
        10 | 14 => Some(Unavailable::Io), // SQLITE_IOERR, SQLITE_CANTOPEN
        _ => None,
    }
}

/// The watchdog's last verdict, shared by every clone of the store.
#[derive(Debug)]
pub(crate) struct Health {
    state: watch::Sender<Option<Unavailable>>,
    /// SQLite: the disk under the file has less free space than the guard wants.
    disk_low: std::sync::atomic::AtomicBool,
}

impl Health {
    pub(crate) fn new() -> Health {
        Health {
            state: watch::channel(None).0,
            disk_low: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// `Some(Full)` while the free-space guard refuses writes.
    pub(crate) fn disk(&self) -> Option<Unavailable> {
        self.disk_low
            .load(std::sync::atomic::Ordering::Relaxed)
            .then_some(Unavailable::Full)
    }

    pub(crate) fn current(&self) -> Option<Unavailable> {
        *self.state.borrow()
    }

    pub(crate) fn set(&self, now: Option<Unavailable>) {
        let before = self.state.send_replace(now);
        match (before, now) {
            (None, Some(u)) => tracing::error!(
                "{}: answering 503 until it is back (probing every {} ms)",
                u.describe(),
                PROBE_EVERY_DOWN.as_millis()
            ),
            (Some(_), None) => tracing::warn!("the database is back: serving again"),
            _ => {}
        }
    }

    /// Resolves when the database goes down (immediately if it is down).
    pub(crate) async fn went_down(&self) -> Unavailable {
        let mut rx = self.state.subscribe();
        let down = rx.wait_for(|s| s.is_some()).await.map(|s| *s);
        match down {
            Ok(s) => s.unwrap_or(Unavailable::Unreachable),
            // The sender lives as long as the store; never resolve without it.
            Err(_) => std::future::pending().await,
        }
    }
}

/// Probes the database on a connection of its own (so a busy pool is not an outage) until
/// `pool` is closed: connect and `SELECT 1` within [`PROBE_DEADLINE`].
pub(crate) fn watch(
    connect: sqlx::any::AnyConnectOptions,
    pool: sqlx::AnyPool,
    health: std::sync::Arc<Health>,
) {
    use sqlx::ConnectOptions as _;
    tokio::spawn(async move {
        let mut conn: Option<sqlx::AnyConnection> = None;
        loop {
            let every = if health.current().is_some() {
                PROBE_EVERY_DOWN
            } else {
                PROBE_EVERY_UP
            };
            tokio::time::sleep(every).await;
            if pool.is_closed() {
                return;
            }
            let probe = async {
                let c = match conn.as_mut() {
                    Some(c) => c,
                    None => conn.insert(connect.connect().await?),
                };
                sqlx::query("SELECT 1").execute(&mut *c).await?;
                Ok::<_, sqlx::Error>(())
            };
            let verdict = match tokio::time::timeout(PROBE_DEADLINE, probe).await {
                Ok(Ok(())) => None,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "database probe");
                    sqlx_unavailable(&e).or(Some(Unavailable::Unreachable))
                }
                Err(_) => Some(Unavailable::Unreachable),
            };
            if verdict.is_some() {
                // A connection that failed or timed out is in an unknown state.
                conn = None;
            }
            if pool.is_closed() {
                return;
            }
            health.set(verdict);
        }
    });
}

/// SQLite's free-space guard: every second, the free space of the file system under `file`;
/// below `min_free` bytes, writes are refused ([`Health::disk`]) until it is back above. SQLite
/// running out of space mid-transaction is survivable (the writer connection is replaced), but
/// refusing early keeps the space for checkpoints and the WAL, as RabbitMQ's `disk_free_limit`
/// does for its queues.
pub(crate) fn watch_disk(
    file: std::path::PathBuf,
    min_free: u64,
    pool: sqlx::AnyPool,
    health: std::sync::Arc<Health>,
) {
    use std::sync::atomic::Ordering;
    let dir = dir_of(&file).to_owned();
    tokio::spawn(async move {
        loop {
            if pool.is_closed() {
                return;
            }
            match rustix::fs::statvfs(&dir) {
                Ok(st) => {
                    let free = st.f_bavail.saturating_mul(st.f_frsize);
                    let low = free < min_free;
                    let was = health.disk_low.swap(low, Ordering::Relaxed);
                    if low && !was {
                        tracing::error!(
                            free_bytes = free,
                            min_free_bytes = min_free,
                            dir = %dir.display(),
                            "the disk under the database is almost full: refusing writes (503) until space is freed"
                        );
                    } else if was && !low {
                        tracing::warn!(free_bytes = free, "disk space is back: writing again");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "statvfs"),
            }
            tokio::time::sleep(PROBE_EVERY_UP).await;
        }
    });
}

/// The directory a SQLite file lives in (`.` for a bare file name).
fn dir_of(file: &std::path::Path) -> &std::path::Path {
    match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => std::path::Path::new("."),
    }
}

/// The error for a SQLite file that cannot be opened, with the cause an operator can act on
/// when it is the directory (read-only, missing permissions).
pub(crate) fn diagnose_open(file: &std::path::Path, e: impl std::fmt::Display) -> Error {
    let dir = dir_of(file);
    match rustix::fs::access(dir, rustix::fs::Access::WRITE_OK) {
        Err(why) => Error::SqliteOpen {
            path: file.display().to_string(),
            reason: format!(
                "its directory {} is not writable ({}), and SQLite needs to create its WAL files there",
                dir.display(),
                std::io::Error::from(why)
            ),
        },
        Ok(()) => Error::SqliteOpen {
            path: file.display().to_string(),
            reason: e.to_string(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_codes_classify_by_primary_code() {
        assert_eq!(sqlite_code(13), Some(Unavailable::Full));
        assert_eq!(sqlite_code(8), Some(Unavailable::ReadOnly));
        assert_eq!(sqlite_code(1032), Some(Unavailable::ReadOnly)); // READONLY_DBMOVED
        assert_eq!(sqlite_code(778), Some(Unavailable::Io)); // IOERR_WRITE
        assert_eq!(sqlite_code(5), None); // BUSY is retryable, not an outage
        assert_eq!(sqlite_code(19), None); // CONSTRAINT
        assert_eq!(sqlite_code(2067), None); // CONSTRAINT_UNIQUE
    }
}
