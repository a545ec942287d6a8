//! Persistence for Ferrydesk: the only crate that speaks SQL.
//!
//! One query layer serves both backends through sqlx's `Any` driver: the SQL is portable
//! (`$1` placeholders, `ON CONFLICT`, `RETURNING`, partial indexes, times as Unix milliseconds,
//! flags as 0/1 integers, JSON as text). The few places where the backends differ are methods
//! of [`Backend`] (`FOR UPDATE SKIP LOCKED`, transaction start, notifications).
//!
//! Functions take `&mut Conn` so that the desk services compose them inside one transaction.

pub mod blobs;
pub mod cases;
pub mod chats;
pub mod contacts;
pub mod directory;
pub mod duplicates;
pub mod health;
pub mod idempotency;
pub mod messages;
pub mod native;
pub mod plugins;
pub mod processes;
pub mod rows;
pub mod security;

use std::str::FromStr;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyPool, Executor};

pub use health::Unavailable;
pub use sqlx::AnyConnection as Conn;

/// A write transaction. Commit it explicitly; dropping it rolls back.
pub type Tx = sqlx::Transaction<'static, sqlx::Any>;

/// A savepoint inside a transaction: commit releases it, rollback (or drop) undoes only it.
pub type Savepoint<'c> = sqlx::Transaction<'c, sqlx::Any>;

/// Opens a savepoint in `conn`'s transaction.
pub async fn savepoint(conn: &mut Conn) -> Result<Savepoint<'_>> {
    Ok(sqlx::Acquire::begin(conn).await?)
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database error: {0}")]
    Db(#[from] sqlx::Error),
    #[error("database error: {0}")]
    Native(#[from] rusqlite::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{}", .0.describe())]
    Unavailable(Unavailable),
    #[error("stored value is corrupt: {0}")]
    Corrupt(String),
    #[error("unsupported database URL `{0}`: use sqlite://PATH or postgres://…")]
    UnsupportedUrl(String),
    #[error("cannot open the SQLite database {path}: {reason}")]
    SqliteOpen { path: String, reason: String },
    #[error("cannot create the directory of the SQLite file {path}: {source}")]
    SqliteDir {
        path: String,
        source: std::io::Error,
    },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// A unique or primary-key constraint rejected the write.
    pub fn is_unique_violation(&self) -> bool {
        match self {
            Error::Db(sqlx::Error::Database(e)) => e.is_unique_violation(),
            Error::Native(rusqlite::Error::SqliteFailure(e, _)) => {
                e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_PRIMARYKEY
                    || e.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE
            }
            _ => false,
        }
    }

    /// The database asks the caller to retry (deadlock, serialization failure, busy).
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Db(sqlx::Error::Database(e)) => {
                let code = e.code().unwrap_or_default();
                matches!(&*code, "40001" | "40P01" | "5" | "6" | "517")
            }
            Error::Db(sqlx::Error::PoolTimedOut) => true,
            Error::Native(rusqlite::Error::SqliteFailure(e, _)) => matches!(
                e.code,
                rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
            ),
            _ => false,
        }
    }
}

/// Which database engine the store talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// Row-lock clause for claiming rows that other nodes may claim concurrently.
    /// SQLite has a single writer, so the clause is empty there.
    pub fn skip_locked(self) -> &'static str {
        match self {
            Backend::Sqlite => "",
            Backend::Postgres => "FOR UPDATE SKIP LOCKED",
        }
    }

    fn begin_statement(self) -> &'static str {
        match self {
            // A deferred transaction that reads first fails with SQLITE_BUSY when it then writes.
            Backend::Sqlite => "BEGIN IMMEDIATE",
            Backend::Postgres => "BEGIN",
        }
    }
}

/// Connection options.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    pub url: String,
    /// Maximum connections for readers (and writers on PostgreSQL).
    pub max_connections: u32,
    /// On a SQLite file, run the process engine's batches on the fast lane ([`native`]).
    /// Off, they go through sqlx like everything else (benchmarks compare the two).
    pub fast_lane: bool,
    /// SQLite: refuse writes while the file system under the database has less than this
    /// many MiB free (0: off); see [`health`].
    pub min_free_disk_mb: u64,
}

/// The default of [`StoreOptions::min_free_disk_mb`].
pub const DEFAULT_MIN_FREE_DISK_MB: u64 = 64;

/// Handle to the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    read: AnyPool,
    write: AnyPool,
    backend: Backend,
    url: String,
    /// The engine's fast lane, on SQLite files.
    native: Option<std::sync::Arc<native::Native>>,
    health: std::sync::Arc<health::Health>,
}

/// A SQLite URL as the store opens it: without a `mode`, `rwc` (the file is created, as the
/// default data directory's URL does), and the file's directory created. In-memory URLs and
/// explicit modes are left alone.
fn sqlite_url(url: &str) -> Result<String> {
    if url.contains("mode=") || url.contains(":memory:") {
        return Ok(url.to_owned());
    }
    let file = sqlx::sqlite::SqliteConnectOptions::from_str(url)?;
    let file = file.get_filename();
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|source| Error::SqliteDir {
            path: file.display().to_string(),
            source,
        })?;
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    Ok(format!("{url}{sep}mode=rwc"))
}

impl Store {
    pub async fn connect(opts: &StoreOptions) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let backend = if opts.url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if opts.url.starts_with("postgres:") || opts.url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(Error::UnsupportedUrl(opts.url.clone()));
        };
        let url = match backend {
            Backend::Sqlite => sqlite_url(&opts.url)?,
            Backend::Postgres => opts.url.clone(),
        };
        let opts = &StoreOptions {
            url,
            ..opts.clone()
        };
        let connect = AnyConnectOptions::from_str(&opts.url)?;
        match backend {
            Backend::Sqlite => {
                let pragmas = "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL; \
                               PRAGMA busy_timeout=10000; PRAGMA foreign_keys=ON;";
                // The writer never checkpoints inline (that would stall a commit for tens of
                // milliseconds); a background task checkpoints from a reader instead.
                let writer_pragmas = "PRAGMA wal_autocheckpoint=0;";
                let mk = |max: u32, extra: &'static str| {
                    AnyPoolOptions::new()
                        .max_connections(max)
                        .acquire_timeout(Duration::from_secs(30))
                        .after_connect(move |conn, _| {
                            Box::pin(async move {
                                conn.execute(pragmas).await?;
                                if !extra.is_empty() {
                                    conn.execute(extra).await?;
                                }
                                Ok(())
                            })
                        })
                };
                // Open the file once directly first: a pool retries a failing open until its
                // acquire timeout, which would turn "cannot open" into a 30 s hang at start.
                let file = sqlx::sqlite::SqliteConnectOptions::from_str(&opts.url)?;
                let file = file.get_filename().to_owned();
                {
                    use sqlx::{ConnectOptions as _, Connection as _};
                    let opened = async {
                        let mut c = connect.connect().await?;
                        c.execute(pragmas).await?;
                        c.close().await
                    }
                    .await;
                    if let Err(e) = opened {
                        return Err(health::diagnose_open(&file, e));
                    }
                }
                // One writer connection: SQLite serialises writers anyway, and queuing them in
                // the pool avoids SQLITE_BUSY storms.
                // SQLite ends a transaction by itself on some errors (SQLITE_FULL, I/O
                // errors); sqlx's ROLLBACK then fails and its transaction depth stays at 1, so
                // every later BEGIN on the one writer connection would fail until a restart.
                // A writer that comes back still in a transaction is closed instead; the pool
                // opens a fresh one. (The ping runs after the queued rollback.)
                let write = mk(1, writer_pragmas)
                    .after_release(|conn, _| {
                        Box::pin(async move {
                            use sqlx::Connection as _;
                            conn.ping().await?;
                            if conn.is_in_transaction() {
                                tracing::warn!("closing the SQLite writer connection: it was left in a failed transaction");
                                return Ok(false);
                            }
                            Ok(true)
                        })
                    })
                    .connect_with(connect.clone())
                    .await?;
                let read = mk(opts.max_connections.max(2), "")
                    .connect_with(connect)
                    .await?;
                let checkpointer = read.clone();
                tokio::spawn(async move {
                    let mut tick = tokio::time::interval(Duration::from_millis(250));
                    loop {
                        tick.tick().await;
                        if checkpointer.is_closed() {
                            return;
                        }
                        // PASSIVE: copies what it can without blocking the writer or readers.
                        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                            .execute(&checkpointer)
                            .await
                        {
                            tracing::debug!(error = %e, "WAL checkpoint");
                        }
                    }
                });
                // Only a plain, writable file: an in-memory database (sqlx names those
                // `file:sqlx-in-memory-…`) or a read-only one keeps everything on sqlx.
                let name = file.to_string_lossy();
                let plain = !name.is_empty()
                    && !name.starts_with("file:")
                    && !name.contains(":memory:")
                    && !opts.url.contains("mode=memory")
                    && !opts.url.contains("mode=ro");
                let health = std::sync::Arc::new(health::Health::new());
                if plain && opts.min_free_disk_mb > 0 {
                    health::watch_disk(
                        file.to_path_buf(),
                        opts.min_free_disk_mb << 20,
                        read.clone(),
                        health.clone(),
                    );
                }
                let native = (opts.fast_lane && plain).then(|| native::Native::new(&file));
                Ok(Store {
                    read,
                    write,
                    backend,
                    url: opts.url.clone(),
                    native,
                    health,
                })
            }
            Backend::Postgres => {
                let pool = AnyPoolOptions::new()
                    .max_connections(opts.max_connections.max(4))
                    .acquire_timeout(Duration::from_secs(30))
                    .connect_with(connect.clone())
                    .await?;
                let health = std::sync::Arc::new(health::Health::new());
                health::watch(connect, pool.clone(), health.clone());
                Ok(Store {
                    read: pool.clone(),
                    write: pool,
                    backend,
                    url: opts.url.clone(),
                    native: None,
                    health,
                })
            }
        }
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The URL the store connected with (PostgreSQL listeners open their own connection).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Pool for reads outside a transaction.
    pub fn reader(&self) -> &AnyPool {
        &self.read
    }

    /// Applies pending migrations from `migrations/<backend>/`.
    pub async fn migrate(&self) -> Result<()> {
        match self.backend {
            Backend::Sqlite => {
                sqlx::migrate!("../../migrations/sqlite")
                    .run(&self.write)
                    .await?
            }
            Backend::Postgres => {
                sqlx::migrate!("../../migrations/postgres")
                    .run(&self.write)
                    .await?
            }
        }
        Ok(())
    }

    /// Starts a write transaction (`BEGIN IMMEDIATE` on SQLite). Fails at once with
    /// [`Error::Unavailable`] while the database cannot be reached ([`health`]).
    pub async fn begin(&self) -> Result<Tx> {
        self.writable()?;
        tokio::select! {
            tx = self.write.begin_with(self.backend.begin_statement()) => Ok(tx?),
            u = self.health.went_down() => Err(Error::Unavailable(u)),
        }
    }

    /// A read connection; fails fast like [`Store::begin`].
    pub async fn read(&self) -> Result<sqlx::pool::PoolConnection<sqlx::Any>> {
        self.available()?;
        tokio::select! {
            conn = self.read.acquire() => Ok(conn?),
            u = self.health.went_down() => Err(Error::Unavailable(u)),
        }
    }

    /// `Err(Unavailable)` while the watchdog finds the database unreachable.
    pub fn available(&self) -> Result<()> {
        match self.health.current() {
            Some(u) => Err(Error::Unavailable(u)),
            None => Ok(()),
        }
    }

    /// `Err(Unavailable)` while the database is unreachable or its disk is (nearly) full.
    pub fn writable(&self) -> Result<()> {
        self.available()?;
        match self.health.disk() {
            Some(u) => Err(Error::Unavailable(u)),
            None => Ok(()),
        }
    }

    /// Writes one row (the `ready_probe` setting) in a transaction of its own: whether this
    /// node can write now. `/readyz` and start-up call it.
    pub async fn probe_write(&self) -> Result<()> {
        self.try_write()
            .await
            .map_err(|e| match (self.backend, e.unavailable()) {
                // Say why a SQLite file is read-only when it is its directory.
                (Backend::Sqlite, Some(Unavailable::ReadOnly | Unavailable::Io)) => {
                    match sqlx::sqlite::SqliteConnectOptions::from_str(&self.url) {
                        Ok(o) => health::diagnose_open(o.get_filename(), e),
                        Err(_) => e,
                    }
                }
                _ => e,
            })
    }

    async fn try_write(&self) -> Result<()> {
        let mut tx = self.begin().await?;
        settings::set(
            &mut tx,
            "ready_probe",
            &serde_json::json!(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0)
            ),
        )
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Publishes a notification that other nodes receive after this transaction commits.
    /// A no-op on SQLite, where there is only one node.
    pub async fn notify(&self, conn: &mut Conn, channel: &str, payload: &str) -> Result<()> {
        if self.backend == Backend::Postgres {
            sqlx::query("SELECT pg_notify($1, $2)")
                .bind(channel)
                .bind(payload)
                .execute(conn)
                .await?;
        }
        Ok(())
    }

    /// SQLite: writes a consistent copy of the whole database to `dest` (which must not exist)
    /// with `VACUUM INTO`, from a read transaction, so writers carry on meanwhile.
    pub async fn snapshot_to(&self, dest: &std::path::Path) -> Result<()> {
        if self.backend != Backend::Sqlite {
            return Err(Error::UnsupportedUrl(
                "a snapshot needs SQLite; back PostgreSQL up with pg_dump".into(),
            ));
        }
        let mut conn = self.read().await?;
        sqlx::query("VACUUM INTO $1")
            .bind(dest.display().to_string())
            .execute(&mut *conn)
            .await?;
        Ok(())
    }

    /// SQLite: `PRAGMA integrity_check`; `Ok(())` when it answers `ok`, else what it found.
    pub async fn integrity_check(&self) -> Result<()> {
        if self.backend != Backend::Sqlite {
            return Ok(());
        }
        let mut conn = self.read().await?;
        let rows: Vec<String> = sqlx::query_scalar("PRAGMA integrity_check")
            .fetch_all(&mut *conn)
            .await?;
        if rows.len() == 1 && rows[0] == "ok" {
            Ok(())
        } else {
            Err(Error::Corrupt(rows.join("; ")))
        }
    }

    /// Row counts for a summary: chats, messages, files, cases.
    pub async fn counts(&self) -> Result<[i64; 4]> {
        let mut conn = self.read().await?;
        let mut out = [0; 4];
        for (i, table) in ["chats", "messages", "files", "cases"].iter().enumerate() {
            out[i] =
                sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT COUNT(*) FROM {table}")))
                    .fetch_one(&mut *conn)
                    .await?;
        }
        Ok(out)
    }

    pub async fn close(&self) {
        self.write.close().await;
        self.read.close().await;
    }
}

/// Splits `n` items into chunks of a few fixed sizes (64, 16, 4, 1), so that multi-row
/// statements come in a handful of shapes that stay prepared in the statement cache, and each
/// keeps its parameter count small.
pub(crate) fn fixed_chunks(n: usize) -> Vec<std::ops::Range<usize>> {
    let mut out = Vec::new();
    let mut start = 0;
    for size in [64, 16, 4, 1] {
        while n - start >= size {
            out.push(start..start + size);
            start += size;
        }
    }
    out
}

/// Settings stored as JSON text under a key.
pub mod settings {
    use super::*;

    pub async fn get(conn: &mut Conn, key: &str) -> Result<Option<serde_json::Value>> {
        let v: Option<String> = sqlx::query_scalar("SELECT value FROM settings WHERE key = $1")
            .bind(key)
            .fetch_optional(conn)
            .await?;
        v.map(|s| serde_json::from_str(&s).map_err(|e| Error::Corrupt(e.to_string())))
            .transpose()
    }

    pub async fn set(conn: &mut Conn, key: &str, value: &serde_json::Value) -> Result<()> {
        sqlx::query(
            "INSERT INTO settings (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(key)
        .bind(value.to_string())
        .execute(conn)
        .await?;
        Ok(())
    }

    pub async fn all(conn: &mut Conn) -> Result<Vec<(String, serde_json::Value)>> {
        let rows: Vec<(String, String)> = sqlx::query_as("SELECT key, value FROM settings")
            .fetch_all(conn)
            .await?;
        rows.into_iter()
            .map(|(k, v)| {
                let v = serde_json::from_str(&v).map_err(|e| Error::Corrupt(e.to_string()))?;
                Ok((k, v))
            })
            .collect()
    }
}
