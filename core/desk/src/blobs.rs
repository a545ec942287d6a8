//! File contents: a blob store behind a trait (a local directory by default; an object store
//! can replace it) and the checks files pass before they are stored.

use std::io;
use std::path::PathBuf;

use ferrydesk_domain::*;
use ferrydesk_store::messages;
use futures::future::BoxFuture;
use sha2::{Digest, Sha256};

use crate::{Desk, Error, Principal, Result};

/// Content-addressed storage of file bytes.
pub trait BlobStore: Send + Sync + 'static {
    /// Stores bytes under their SHA-256 (hex) and returns it.
    fn put(&self, bytes: Vec<u8>) -> BoxFuture<'_, io::Result<String>>;
    fn get(&self, sha256: &str) -> BoxFuture<'_, io::Result<Vec<u8>>>;
}

/// Blobs as files under a directory, written atomically (temp file, fsync, rename).
pub struct LocalBlobStore {
    root: PathBuf,
}

impl LocalBlobStore {
    pub fn new(root: impl Into<PathBuf>) -> io::Result<LocalBlobStore> {
        let root = root.into();
        std::fs::create_dir_all(&root)?;
        Ok(LocalBlobStore { root })
    }
    fn path(&self, sha: &str) -> io::Result<PathBuf> {
        if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "bad blob key"));
        }
        Ok(self.root.join(&sha[..2]).join(sha))
    }
}

impl BlobStore for LocalBlobStore {
    fn put(&self, bytes: Vec<u8>) -> BoxFuture<'_, io::Result<String>> {
        Box::pin(async move {
            let sha = hex::encode(Sha256::digest(&bytes));
            let path = self.path(&sha)?;
            if tokio::fs::try_exists(&path).await? {
                return Ok(sha);
            }
            let dir = path
                .parent()
                .map(PathBuf::from)
                .unwrap_or_else(|| self.root.clone());
            tokio::fs::create_dir_all(&dir).await?;
            let tmp = dir.join(format!(".{sha}.{}", uuid::Uuid::new_v4()));
            let write = async {
                use tokio::io::AsyncWriteExt;
                let mut f = tokio::fs::File::create(&tmp).await?;
                f.write_all(&bytes).await?;
                f.sync_all().await?;
                tokio::fs::rename(&tmp, &path).await
            };
            if let Err(e) = write.await {
                let _ = tokio::fs::remove_file(&tmp).await;
                return Err(e);
            }
            Ok(sha)
        })
    }

    fn get(&self, sha256: &str) -> BoxFuture<'_, io::Result<Vec<u8>>> {
        let path = self.path(sha256);
        Box::pin(async move { tokio::fs::read(path?).await })
    }
}

/// Blobs as rows of the database (`blob_data`): every node of a deployment that shares only
/// its PostgreSQL database sees every file. Suits files up to tens of MiB (`max_file_bytes`);
/// an object store is the choice for large volumes.
pub struct DatabaseBlobStore {
    store: ferrydesk_store::Store,
}

impl DatabaseBlobStore {
    pub fn new(store: ferrydesk_store::Store) -> DatabaseBlobStore {
        DatabaseBlobStore { store }
    }
}

fn io_error(e: ferrydesk_store::Error) -> io::Error {
    io::Error::other(e.to_string())
}

impl BlobStore for DatabaseBlobStore {
    fn put(&self, bytes: Vec<u8>) -> BoxFuture<'_, io::Result<String>> {
        Box::pin(async move {
            let sha = hex::encode(Sha256::digest(&bytes));
            let mut tx = self.store.begin().await.map_err(io_error)?;
            ferrydesk_store::blobs::put(&mut tx, &sha, &bytes, Ts::now().0)
                .await
                .map_err(io_error)?;
            tx.commit()
                .await
                .map_err(|e| io::Error::other(e.to_string()))?;
            Ok(sha)
        })
    }

    fn get(&self, sha256: &str) -> BoxFuture<'_, io::Result<Vec<u8>>> {
        let sha = sha256.to_owned();
        Box::pin(async move {
            let mut conn = self.store.read().await.map_err(io_error)?;
            ferrydesk_store::blobs::get(&mut conn, &sha)
                .await
                .map_err(io_error)?
                .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such blob"))
        })
    }
}

/// Content types accepted from clients and operators.
const ALLOWED: &[&str] = &[
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/pdf",
    "text/plain",
    "text/csv",
    "application/zip",
    "application/msword",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "application/vnd.ms-excel",
    "audio/mpeg",
    "audio/ogg",
    "video/mp4",
];

/// Who uploads a file.
pub enum Uploader<'a> {
    User(&'a UserId),
    Visitor(&'a IdentityId),
    /// An API-channel integration, for its inbound messages.
    Channel(&'a ChannelId),
}

/// Checks the bytes against the declared type and the allow-list; returns the type to store.
pub fn check_content(declared: &str, bytes: &[u8]) -> Result<String> {
    let declared = declared
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_lowercase();
    if bytes.is_empty() {
        return Err(Error::invalid("file", "the file is empty"));
    }
    let detected = infer::get(bytes).map(|t| t.mime_type().to_owned());
    let effective = match detected {
        // OOXML documents are zip files: trust the declared subtype when the bytes are a zip.
        Some(d)
            if d == "application/zip" && declared.starts_with("application/vnd.openxmlformats") =>
        {
            declared.clone()
        }
        Some(d) => d,
        None if declared.starts_with("text/") && std::str::from_utf8(bytes).is_ok() => {
            declared.clone()
        }
        None => {
            return Err(Error::invalid(
                "file",
                format!("cannot recognise the content as {declared}"),
            ));
        }
    };
    if !ALLOWED.contains(&effective.as_str()) {
        return Err(Error::invalid(
            "file",
            format!("files of type {effective} are not accepted"),
        ));
    }
    if !declared.is_empty() && declared != "application/octet-stream" && declared != effective {
        return Err(Error::invalid(
            "file",
            format!("the content is {effective}, not {declared} as declared"),
        ));
    }
    Ok(effective)
}

fn clean_filename(name: &str) -> String {
    let base = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let s: String = base.chars().filter(|c| !c.is_control()).take(200).collect();
    if s.trim().is_empty() {
        "file".into()
    } else {
        s
    }
}

impl Desk {
    /// Stores an uploaded file, not yet attached to any message.
    pub async fn upload(
        &self,
        who: Uploader<'_>,
        filename: &str,
        content_type: &str,
        bytes: Vec<u8>,
    ) -> Result<Attachment> {
        let limit = self.options().max_file_bytes;
        if bytes.len() as u64 > limit {
            return Err(Error::TooLarge {
                what: "file",
                limit,
            });
        }
        let content_type = check_content(content_type, &bytes)?;
        let size = bytes.len() as i64;
        let sha = self.blobs().put(bytes).await?;
        let id = FileId::generate();
        let filename = clean_filename(filename);
        let mut tx = self.store().begin().await?;
        let (u, v, c) = match who {
            Uploader::User(u) => (Some(u), None, None),
            Uploader::Visitor(v) => (None, Some(v), None),
            Uploader::Channel(c) => (None, None, Some(c)),
        };
        messages::insert_file(
            &mut tx,
            messages::NewFile {
                id: &id,
                sha256: &sha,
                size,
                content_type: &content_type,
                filename: &filename,
                uploader_user: u,
                uploader_identity: v,
                uploader_channel: c,
                now: Ts::now(),
            },
        )
        .await?;
        tx.commit().await.map_err(ferrydesk_store::Error::from)?;
        Ok(Attachment {
            id,
            filename,
            content_type,
            size,
            sha256: sha,
        })
    }

    /// A file's bytes for a staff member: attached files follow the chat's visibility rule,
    /// unattached ones are readable by their uploader only.
    pub async fn download(&self, p: &Principal, id: &FileId) -> Result<(Attachment, Vec<u8>)> {
        let mut conn = self.store().read().await?;
        let rec = messages::get_file(&mut conn, id)
            .await?
            .ok_or(Error::not_found("file"))?;
        match &rec.chat_id {
            Some(chat) => {
                self.readable_chat(&mut conn, p, chat)
                    .await
                    .map_err(|_| Error::not_found("file"))?;
            }
            None if rec.uploader_user.as_ref() == Some(p.id()) => {}
            None => return Err(Error::not_found("file")),
        }
        drop(conn);
        let bytes = self.blobs().get(&rec.attachment.sha256).await?;
        Ok((rec.attachment, bytes))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR";

    #[test]
    fn content_must_match_the_declared_type() {
        assert_eq!(
            check_content("image/png", PNG).ok().as_deref(),
            Some("image/png")
        );
        assert_eq!(
            check_content("application/octet-stream", PNG)
                .ok()
                .as_deref(),
            Some("image/png")
        );
        let e = check_content("image/jpeg", PNG)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(
            e,
            "file: the content is image/png, not image/jpeg as declared"
        );
        let e = check_content("image/png", b"plain words")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert_eq!(e, "file: cannot recognise the content as image/png");
    }

    #[test]
    fn text_is_accepted_only_as_utf8_and_executables_never() {
        assert_eq!(
            check_content("text/plain; charset=utf-8", "привет".as_bytes())
                .ok()
                .as_deref(),
            Some("text/plain")
        );
        assert!(check_content("text/plain", &[0xff, 0xfe, 0x00]).is_err());
        let mut elf = b"\x7fELF\x02\x01\x01".to_vec();
        elf.extend([0u8; 64]);
        let e = check_content("application/octet-stream", &elf)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(e.contains("not accepted"), "{e}");
        assert!(check_content("text/plain", b"").is_err());
    }

    #[test]
    fn filenames_lose_paths_and_control_characters() {
        assert_eq!(clean_filename("../../etc/passwd"), "passwd");
        assert_eq!(clean_filename("C:\\Users\\a\\report.pdf"), "report.pdf");
        assert_eq!(clean_filename("a\u{0}b\nc.txt"), "abc.txt");
        assert_eq!(clean_filename(""), "file");
    }
}
