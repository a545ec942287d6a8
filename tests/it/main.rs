//! Integration tests: real `ferrydesk` processes over loopback HTTP, on SQLite and PostgreSQL.
//! Every scenario runs on both backends (`<scenario>::sqlite`, `<scenario>::postgres`).

mod auth;
mod backup;
mod browser;
mod chats;
mod duplicates;
mod engine;
mod faults;
mod hardening;
mod idempotency;
mod ingest;
mod input;
mod permissions;
mod plugins;
mod process_limits;
mod processes;
mod race;
mod templates;
mod timers;
mod visibility;

/// Declares `mod $name { sqlite, postgres }` tests calling `$name(backend)`.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn sqlite() -> anyhow::Result<()> {
                super::$name(ferrydesk_tests::Backend::Sqlite).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn postgres() -> anyhow::Result<()> {
                super::$name(ferrydesk_tests::Backend::Postgres).await
            }
        }
    )+};
}

/// Starts a fresh database, an admin and a server, or returns from the test when the backend
/// is unavailable (and not required).
#[macro_export]
macro_rules! setup {
    ($backend:expr) => {{
        let Some(db) = ferrydesk_tests::Db::new($backend).await? else {
            return Ok(());
        };
        db.add_admin().await?;
        let server = ferrydesk_tests::Server::start(&db).await?;
        (db, server)
    }};
}
