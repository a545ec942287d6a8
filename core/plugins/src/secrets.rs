//! Plugin and channel settings at rest: sealed with ChaCha20-Poly1305 (the RustCrypto
//! `chacha20poly1305` crate: audited, constant-time, pure Rust) under a 32-byte node key, with
//! the settings' scope as associated data so a sealed row cannot be moved to another scope.
//!
//! * The key comes from `FERRYDESK_SECRET_KEY` (base64 of 32 bytes) or, if that is unset, from
//!   `<data dir>/secret.key`, created on first start with mode 0600. Every node of a
//!   PostgreSQL deployment needs the same key.
//! * Rotation: start with the new key in `FERRYDESK_SECRET_KEY` and the old one in
//!   `FERRYDESK_SECRET_KEY_OLD`; rows sealed with the old key are read, and every row is
//!   sealed again with the new key at start-up; then drop the old key.
//! * Rows written before encryption (plain JSON) are read as they are and sealed at start-up
//!   and on their next write.

use std::io::Write;
use std::path::Path;

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};

const PREFIX: &str = "enc:v1:";
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// Why the secret key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{var} must be 32 bytes in base64 (e.g. `openssl rand -base64 32`)")]
    BadKey { var: String },
    #[error("the secret key file {path}: {source}")]
    File {
        path: String,
        source: std::io::Error,
    },
    #[error(
        "a sealed setting could not be opened: it was sealed with another key (set FERRYDESK_SECRET_KEY_OLD to the previous key)"
    )]
    WrongKey,
    #[error("a sealed setting is corrupt")]
    Corrupt,
}

/// The node's settings key (and the previous one during a rotation).
#[derive(Clone)]
pub struct Secrets {
    key: Key,
    old: Option<Key>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets(..)")
    }
}

fn parse_key(var: &str, text: &str) -> Result<Key, Error> {
    let bytes = B64.decode(text.trim()).map_err(|_| Error::BadKey {
        var: var.to_owned(),
    })?;
    let arr: [u8; 32] = bytes.try_into().map_err(|_| Error::BadKey {
        var: var.to_owned(),
    })?;
    Ok(arr.into())
}

impl Secrets {
    /// A fixed key (tests, tools).
    pub fn from_key(key: [u8; 32]) -> Secrets {
        Secrets {
            key: key.into(),
            old: None,
        }
    }

    /// The key from the environment, or from `data_dir/secret.key` (created, mode 0600).
    pub fn load(data_dir: &Path) -> Result<Secrets, Error> {
        let old = match std::env::var("FERRYDESK_SECRET_KEY_OLD") {
            Ok(v) if !v.trim().is_empty() => Some(parse_key("FERRYDESK_SECRET_KEY_OLD", &v)?),
            _ => None,
        };
        if let Ok(v) = std::env::var("FERRYDESK_SECRET_KEY")
            && !v.trim().is_empty()
        {
            return Ok(Secrets {
                key: parse_key("FERRYDESK_SECRET_KEY", &v)?,
                old,
            });
        }
        let path = data_dir.join("secret.key");
        let file_err = |source| Error::File {
            path: path.display().to_string(),
            source,
        };
        let key = match std::fs::read_to_string(&path) {
            Ok(text) => parse_key(&path.display().to_string(), &text)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                std::fs::create_dir_all(data_dir).map_err(file_err)?;
                let bytes: [u8; 32] = rand::random();
                let mut opts = std::fs::OpenOptions::new();
                opts.write(true).create_new(true);
                #[cfg(unix)]
                {
                    use std::os::unix::fs::OpenOptionsExt;
                    opts.mode(0o600);
                }
                match opts.open(&path) {
                    Ok(mut f) => {
                        f.write_all(B64.encode(bytes).as_bytes())
                            .and_then(|()| f.sync_all())
                            .map_err(file_err)?;
                        bytes.into()
                    }
                    // Another process created it first: use theirs.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                        let text = std::fs::read_to_string(&path).map_err(file_err)?;
                        parse_key(&path.display().to_string(), &text)?
                    }
                    Err(e) => return Err(file_err(e)),
                }
            }
            Err(e) => return Err(file_err(e)),
        };
        Ok(Secrets { key, old })
    }

    /// Seals `plain` for `scope`.
    pub fn seal(&self, scope: &str, plain: &str) -> String {
        let nonce: [u8; 12] = rand::random();
        let cipher = ChaCha20Poly1305::new(&self.key);
        let sealed = cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: plain.as_bytes(),
                    aad: scope.as_bytes(),
                },
            )
            // Encryption fails only for messages over 256 GiB.
            .unwrap_or_default();
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        format!("{PREFIX}{}", B64.encode(out))
    }

    /// Whether `stored` is sealed.
    pub fn is_sealed(stored: &str) -> bool {
        stored.starts_with(PREFIX)
    }

    /// Opens what [`Secrets::seal`] made for `scope` (with the current or the old key); text
    /// that is not sealed (written before encryption) is returned as it is. The flag tells
    /// whether the row should be sealed again (plain, or sealed with the old key).
    pub fn open(&self, scope: &str, stored: &str) -> Result<(String, bool), Error> {
        let Some(b64) = stored.strip_prefix(PREFIX) else {
            return Ok((stored.to_owned(), true));
        };
        let bytes = B64.decode(b64).map_err(|_| Error::Corrupt)?;
        if bytes.len() < 12 + 16 {
            return Err(Error::Corrupt);
        }
        let (nonce, sealed) = bytes.split_at(12);
        let try_key = |k: &Key| {
            ChaCha20Poly1305::new(k)
                .decrypt(
                    Nonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: scope.as_bytes(),
                    },
                )
                .ok()
        };
        let (plain, stale) = match try_key(&self.key) {
            Some(p) => (p, false),
            None => match self.old.as_ref().and_then(try_key) {
                Some(p) => (p, true),
                None => return Err(Error::WrongKey),
            },
        };
        Ok((String::from_utf8(plain).map_err(|_| Error::Corrupt)?, stale))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_settings_open_only_with_the_key_and_scope() {
        let s = Secrets::from_key([7; 32]);
        let sealed = s.seal("plugin:x", r#"{"bot_token":"123:abc"}"#);
        assert!(Secrets::is_sealed(&sealed));
        assert!(!sealed.contains("123:abc"));
        assert_eq!(
            s.open("plugin:x", &sealed).ok(),
            Some((r#"{"bot_token":"123:abc"}"#.to_owned(), false))
        );
        assert!(matches!(s.open("plugin:y", &sealed), Err(Error::WrongKey)));
        let other = Secrets::from_key([8; 32]);
        assert!(matches!(
            other.open("plugin:x", &sealed),
            Err(Error::WrongKey)
        ));
        // Rotation: the old key still opens, and asks for a reseal.
        let rotated = Secrets {
            key: [8; 32].into(),
            old: Some([7; 32].into()),
        };
        assert_eq!(
            rotated
                .open("plugin:x", &sealed)
                .ok()
                .map(|(_, stale)| stale),
            Some(true)
        );
        // Plain rows (before encryption) are read and marked for sealing.
        assert_eq!(s.open("plugin:x", "{}").ok(), Some(("{}".to_owned(), true)));
        assert!(matches!(
            s.open("plugin:x", "enc:v1:AAAA"),
            Err(Error::Corrupt)
        ));
    }

    #[test]
    fn the_key_file_is_created_once_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("ferrydesk-secrets-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        // The environment may carry a key; this test is about the file.
        if std::env::var("FERRYDESK_SECRET_KEY").is_ok() {
            return;
        }
        let a = Secrets::load(&dir).expect("load");
        let b = Secrets::load(&dir).expect("load again");
        let sealed = a.seal("s", "x");
        assert_eq!(b.open("s", &sealed).ok(), Some(("x".to_owned(), false)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.join("secret.key"))
                .expect("key file")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let _ = std::fs::remove_dir_all(&dir);
    }
}
