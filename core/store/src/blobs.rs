//! File contents stored in the database, by SHA-256 (the `database` blob store).

use crate::{Conn, Result};

/// Stores `bytes` under `sha256` unless a row has it already.
pub async fn put(conn: &mut Conn, sha256: &str, bytes: &[u8], now_ms: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO blob_data (sha256, bytes, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (sha256) DO NOTHING",
    )
    .bind(sha256)
    .bind(bytes.to_vec())
    .bind(now_ms)
    .execute(conn)
    .await?;
    Ok(())
}

/// The bytes stored under `sha256`.
pub async fn get(conn: &mut Conn, sha256: &str) -> Result<Option<Vec<u8>>> {
    Ok(
        sqlx::query_scalar("SELECT bytes FROM blob_data WHERE sha256 = $1")
            .bind(sha256)
            .fetch_optional(conn)
            .await?,
    )
}
