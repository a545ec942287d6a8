//! `ferrydesk backup FILE` and `ferrydesk restore FILE` for a SQLite deployment: one tar file
//! with a consistent copy of the database (SQLite's `VACUUM INTO`, taken while the server
//! runs) and the blob directory. Blobs are content-addressed and written before the rows that
//! name them, so every blob the copy refers to is on disk when the copy has been taken.
//! PostgreSQL deployments back up with `pg_dump` and their blob store (docs/operations.md).

use std::io::Read as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use sha2::Digest as _;

use crate::config::Config;

const DB_ENTRY: &str = "ferrydesk.db";
const BLOBS: &str = "blobs";

/// The SQLite file of the configured database, or an error naming what to do instead.
fn sqlite_file(cfg: &Config) -> anyhow::Result<PathBuf> {
    let url = cfg.database_url();
    if !url.starts_with("sqlite:") {
        bail!(
            "backup and restore work on SQLite; for PostgreSQL ({}) use pg_dump/pg_restore and copy the blob directory {} (see docs/operations.md, Backups)",
            cfg.database_label(),
            cfg.data_dir.join(BLOBS).display()
        );
    }
    use std::str::FromStr as _;
    let o = sqlx::sqlite::SqliteConnectOptions::from_str(&url)
        .with_context(|| format!("database URL {url}"))?;
    Ok(o.get_filename().to_owned())
}

/// Writes the backup to `out` (through `out.partial`, renamed when complete).
pub async fn backup(cfg: &Config, out: &Path) -> anyhow::Result<()> {
    sqlite_file(cfg)?;
    if out.exists() {
        bail!("{} exists; choose a new file name", out.display());
    }
    let store = crate::open_store(cfg).await?;
    let work = tempfile::Builder::new()
        .prefix(".ferrydesk-backup-")
        .tempdir_in(
            out.parent()
                .filter(|p| !p.as_os_str().is_empty())
                .unwrap_or(Path::new(".")),
        )
        .context("creating a work directory next to the backup file")?;
    let copy = work.path().join(DB_ENTRY);
    store
        .snapshot_to(&copy)
        .await
        .context("copying the database")?;
    let [chats, messages, files, cases] = store.counts().await?;
    store.close().await;
    let partial = out.with_extension("partial");
    let written = (|| -> anyhow::Result<u64> {
        let f = std::fs::File::create(&partial)
            .with_context(|| format!("creating {}", partial.display()))?;
        let mut tar = tar::Builder::new(std::io::BufWriter::new(f));
        tar.append_path_with_name(&copy, DB_ENTRY)?;
        let blobs = cfg.data_dir.join(BLOBS);
        let mut n = 0u64;
        if blobs.is_dir() {
            for shard in std::fs::read_dir(&blobs)? {
                let shard = shard?;
                if !shard.file_type()?.is_dir() {
                    continue;
                }
                for blob in std::fs::read_dir(shard.path())? {
                    let blob = blob?;
                    let name = blob.file_name().to_string_lossy().into_owned();
                    if !is_blob_name(&name) {
                        // A partly written upload; not referenced by any row.
                        continue;
                    }
                    tar.append_path_with_name(
                        blob.path(),
                        format!("{BLOBS}/{}/{name}", &name[..2]),
                    )?;
                    n += 1;
                }
            }
        }
        let w = tar.into_inner()?;
        w.into_inner().map_err(|e| e.into_error())?.sync_all()?;
        Ok(n)
    })();
    let blobs = match written {
        Ok(n) => n,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e.context(format!("writing {}", partial.display())));
        }
    };
    std::fs::rename(&partial, out).with_context(|| format!("renaming to {}", out.display()))?;
    let size = std::fs::metadata(out).map(|m| m.len()).unwrap_or(0);
    println!(
        "backup written: {} ({chats} chats, {messages} messages, {files} files, {cases} cases, {blobs} blobs, {size} bytes)",
        out.display()
    );
    Ok(())
}

fn is_blob_name(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Restores a backup into the configured (empty) database file and data directory.
pub async fn restore(cfg: &Config, from: &Path) -> anyhow::Result<()> {
    let db_file = sqlite_file(cfg)?;
    if db_file.exists() {
        bail!(
            "{} exists; restore into a new data directory (FERRYDESK_DATA_DIR) or move the database away first",
            db_file.display()
        );
    }
    let file = std::fs::File::open(from).with_context(|| format!("opening {}", from.display()))?;
    let blobs_dir = cfg.data_dir.join(BLOBS);
    if let Some(dir) = db_file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let partial_db = db_file.with_extension("restoring");
    let mut archive = tar::Archive::new(std::io::BufReader::new(file));
    let mut have_db = false;
    let mut blobs = 0u64;
    for entry in archive
        .entries()
        .with_context(|| format!("{} is not a backup", from.display()))?
    {
        let mut entry = entry.with_context(|| format!("{} is damaged", from.display()))?;
        let name = entry.path()?.to_string_lossy().into_owned();
        if name == DB_ENTRY {
            entry
                .unpack(&partial_db)
                .with_context(|| format!("writing {}", partial_db.display()))?;
            have_db = true;
            continue;
        }
        // Only `blobs/xx/<sha256>`, and only bytes that hash to their name.
        let parts: Vec<&str> = name.split('/').collect();
        let ok = parts.len() == 3
            && parts[0] == BLOBS
            && is_blob_name(parts[2])
            && parts[1] == &parts[2][..2];
        if !ok {
            bail!(
                "{}: unexpected entry `{name}`; not a Ferrydesk backup",
                from.display()
            );
        }
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        if hex::encode(sha2::Sha256::digest(&bytes)) != parts[2].to_ascii_lowercase() {
            bail!(
                "{}: blob {} does not match its checksum; the backup is damaged",
                from.display(),
                parts[2]
            );
        }
        let dest = blobs_dir.join(parts[1]).join(parts[2]);
        std::fs::create_dir_all(blobs_dir.join(parts[1]))?;
        std::fs::write(&dest, bytes).with_context(|| format!("writing {}", dest.display()))?;
        blobs += 1;
    }
    if !have_db {
        bail!(
            "{} holds no {DB_ENTRY}; not a Ferrydesk backup",
            from.display()
        );
    }
    std::fs::rename(&partial_db, &db_file)?;
    // Checked, and migrated if the backup comes from an older version.
    let store = crate::open_store(cfg).await?;
    store
        .integrity_check()
        .await
        .context("the restored database fails SQLite's integrity check")?;
    let [chats, messages, files, cases] = store.counts().await?;
    store.close().await;
    println!(
        "restored {} into {} ({chats} chats, {messages} messages, {files} files, {cases} cases, {blobs} blobs)",
        from.display(),
        db_file.display()
    );
    Ok(())
}
