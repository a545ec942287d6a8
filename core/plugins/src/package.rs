//! Plugin packages: a directory with `plugin.json` and the component it names, or the same two
//! files in a tar archive (`ferrydesk plugin pack`), where the manifest carries the component's
//! SHA-256. A package may carry `plugin.sig`: the Ed25519 signature (base64) by the key the
//! manifest names in `publisher.key` over [`signed_message`] (the SHA-256 of the manifest text
//! and of the component), made with `ed25519-dalek` (the RustCrypto implementation).

use std::io::Read;
use std::path::Path;

use ferrydesk_desk::Error;
use sha2::Digest;

/// A manifest and its component, as read from a package.
#[derive(Debug, Clone)]
pub struct Package {
    pub manifest_text: String,
    pub wasm: Vec<u8>,
    /// `plugin.sig`, if the package has one.
    pub signature: Option<String>,
    /// Read from a directory on the server (the plugins directory, the demo, the command
    /// line), not uploaded.
    pub local: bool,
}

/// What a publisher signs: a domain tag, the SHA-256 of the manifest text and of the component.
pub fn signed_message(manifest_text: &str, wasm: &[u8]) -> Vec<u8> {
    format!(
        "ferrydesk-plugin-v1\n{}\n{}\n",
        hex::encode(sha2::Sha256::digest(manifest_text.as_bytes())),
        hex::encode(sha2::Sha256::digest(wasm))
    )
    .into_bytes()
}

/// Signs a package's manifest and component with `key`; the result is `plugin.sig`.
pub fn sign(manifest_text: &str, wasm: &[u8], key: &ed25519_dalek::SigningKey) -> String {
    use base64::Engine as _;
    use ed25519_dalek::Signer as _;
    base64::engine::general_purpose::STANDARD
        .encode(key.sign(&signed_message(manifest_text, wasm)).to_bytes())
}

/// `ed25519:<base64>` for a public key, as the manifest's `publisher.key` names it.
pub fn publisher_key(key: &ed25519_dalek::VerifyingKey) -> String {
    use base64::Engine as _;
    format!(
        "ed25519:{}",
        base64::engine::general_purpose::STANDARD.encode(key.as_bytes())
    )
}

/// Checks the package's signature against the manifest's publisher key. A package whose
/// manifest names no publisher is unsigned (any `plugin.sig` is ignored) and gets `None`.
pub fn verify(pkg: &Package, publisher: Option<&str>) -> Result<Option<String>, Error> {
    use base64::Engine as _;
    let Some(key_text) = publisher else {
        return Ok(None);
    };
    let b64 = key_text.strip_prefix("ed25519:").ok_or_else(|| {
        Error::invalid(
            "/publisher/key",
            "must be `ed25519:` and a base64 public key",
        )
    })?;
    let key_bytes: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::invalid("/publisher/key", "is not a 32-byte Ed25519 key"))?;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&key_bytes)
        .map_err(|_| Error::invalid("/publisher/key", "is not a valid Ed25519 key"))?;
    let sig_text = pkg.signature.as_deref().ok_or_else(|| {
        Error::invalid(
            "plugin.sig",
            "the manifest names a publisher key but the package is not signed (plugin.sig is missing)",
        )
    })?;
    let sig_bytes: [u8; 64] = base64::engine::general_purpose::STANDARD
        .decode(sig_text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| Error::invalid("plugin.sig", "is not a base64 Ed25519 signature"))?;
    let sig = ed25519_dalek::Signature::from_bytes(&sig_bytes);
    key.verify_strict(&signed_message(&pkg.manifest_text, &pkg.wasm), &sig)
        .map_err(|_| {
            Error::invalid(
                "plugin.sig",
                "the signature does not match the manifest's publisher key (the package was changed or signed by someone else)",
            )
        })?;
    Ok(Some(key_text.to_owned()))
}

const MAX_MANIFEST: u64 = 256 << 10;
const MAX_COMPONENT: u64 = 16 << 20;

fn invalid(msg: impl Into<String>) -> Error {
    Error::invalid("package", msg)
}

/// Reads a plugin directory.
pub fn read_dir(dir: &Path) -> Result<Package, Error> {
    let manifest_path = dir.join("plugin.json");
    let manifest_text = std::fs::read_to_string(&manifest_path)
        .map_err(|e| invalid(format!("{}: {e}", manifest_path.display())))?;
    let path = component_path(&manifest_text)?;
    let wasm_path = dir.join(&path);
    let wasm = std::fs::read(&wasm_path).map_err(|e| {
        invalid(format!(
            "{}: {e} (build the plugin first: cargo build --release --target wasm32-wasip2)",
            wasm_path.display()
        ))
    })?;
    let signature = match std::fs::read(dir.join("plugin.sig")) {
        Ok(b) if b.len() <= 1024 => Some(String::from_utf8_lossy(&b).trim().to_owned()),
        Ok(_) => return Err(invalid("plugin.sig is larger than 1024 bytes")),
        Err(_) => None,
    };
    Ok(Package {
        manifest_text,
        wasm,
        signature,
        local: true,
    })
}

/// Reads a packaged plugin (tar). The manifest must carry the component's SHA-256.
pub fn read_tar(bytes: &[u8]) -> Result<Package, Error> {
    let mut manifest_text = None;
    let mut files: Vec<(String, Vec<u8>)> = Vec::new();
    let mut archive = tar::Archive::new(bytes);
    let entries = archive
        .entries()
        .map_err(|e| invalid(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| invalid(format!("corrupt tar archive: {e}")))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let name = entry
            .path()
            .map_err(|e| invalid(e.to_string()))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        let limit = if name == "plugin.json" {
            MAX_MANIFEST
        } else if name == "plugin.sig" {
            1024
        } else {
            MAX_COMPONENT
        };
        if entry.size() > limit {
            return Err(invalid(format!("{name} is larger than {limit} bytes")));
        }
        let mut buf = Vec::new();
        entry
            .by_ref()
            .take(limit)
            .read_to_end(&mut buf)
            .map_err(|e| invalid(e.to_string()))?;
        if name == "plugin.json" {
            manifest_text =
                Some(String::from_utf8(buf).map_err(|_| invalid("plugin.json is not UTF-8"))?);
        } else {
            files.push((name, buf));
        }
    }
    let manifest_text = manifest_text.ok_or_else(|| invalid("the archive has no plugin.json"))?;
    let signature = files
        .iter()
        .find(|(n, _)| n == "plugin.sig")
        .map(|(_, b)| String::from_utf8_lossy(b).trim().to_owned());
    let path = component_path(&manifest_text)?;
    let (_, wasm) = files
        .into_iter()
        .find(|(n, _)| *n == path)
        .ok_or_else(|| invalid(format!("the archive has no {path}")))?;
    let v: serde_json::Value =
        serde_json::from_str(&manifest_text).map_err(|e| invalid(e.to_string()))?;
    if v.pointer("/component/sha256")
        .and_then(|s| s.as_str())
        .is_none()
    {
        return Err(Error::invalid(
            "/component/sha256",
            "a packaged plugin must carry its component's SHA-256 (use `ferrydesk plugin pack`)",
        ));
    }
    Ok(Package {
        manifest_text,
        wasm,
        signature,
        local: false,
    })
}

fn component_path(manifest_text: &str) -> Result<String, Error> {
    let v: serde_json::Value = serde_json::from_str(manifest_text)
        .map_err(|e| Error::invalid("/", format!("plugin.json is not JSON: {e}")))?;
    let p = v
        .pointer("/component/path")
        .and_then(|p| p.as_str())
        .ok_or_else(|| Error::invalid("/component/path", "is required"))?;
    if p.contains("..") || p.starts_with('/') || p == "plugin.json" || p == "plugin.sig" {
        return Err(Error::invalid(
            "/component/path",
            "must be a relative path inside the package",
        ));
    }
    Ok(p.to_owned())
}

/// Packs a plugin directory into a tar archive whose manifest carries the SHA-256. If
/// `FERRYDESK_PLUGIN_SIGNING_KEY` names a file holding an Ed25519 secret key (32 bytes in
/// base64), the manifest gets that key's `publisher.key` and the archive a `plugin.sig`.
pub fn pack(dir: &Path) -> Result<Vec<u8>, Error> {
    let key = match std::env::var("FERRYDESK_PLUGIN_SIGNING_KEY") {
        Ok(path) if !path.is_empty() => Some(read_signing_key(Path::new(&path))?),
        _ => None,
    };
    pack_signed(dir, key.as_ref())
}

/// Reads an Ed25519 secret key file (32 bytes in base64).
pub fn read_signing_key(path: &Path) -> Result<ed25519_dalek::SigningKey, Error> {
    use base64::Engine as _;
    let text = std::fs::read_to_string(path)
        .map_err(|e| invalid(format!("signing key {}: {e}", path.display())))?;
    let bytes: [u8; 32] = base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| invalid("the signing key must be 32 bytes in base64"))?;
    Ok(ed25519_dalek::SigningKey::from_bytes(&bytes))
}

/// [`pack`] with an explicit signing key (none: unsigned).
pub fn pack_signed(dir: &Path, key: Option<&ed25519_dalek::SigningKey>) -> Result<Vec<u8>, Error> {
    let pkg = read_dir(dir)?;
    let mut v: serde_json::Value =
        serde_json::from_str(&pkg.manifest_text).map_err(|e| invalid(e.to_string()))?;
    let path = component_path(&pkg.manifest_text)?;
    v["component"]["sha256"] = hex::encode(sha2::Sha256::digest(&pkg.wasm)).into();
    if let Some(o) = v.as_object_mut() {
        o.remove("$schema");
    }
    if let Some(k) = key {
        v["publisher"]["key"] = publisher_key(&k.verifying_key()).into();
    }
    let manifest = serde_json::to_vec_pretty(&v).map_err(|e| invalid(e.to_string()))?;
    let manifest_text = String::from_utf8(manifest).map_err(|e| invalid(e.to_string()))?;
    let signature = key.map(|k| sign(&manifest_text, &pkg.wasm, k));
    let mut out = Vec::new();
    {
        let mut b = tar::Builder::new(&mut out);
        let mut files = vec![
            ("plugin.json", manifest_text.as_bytes()),
            (path.as_str(), &pkg.wasm[..]),
        ];
        if let Some(sig) = &signature {
            files.push(("plugin.sig", sig.as_bytes()));
        }
        for (name, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_cksum();
            b.append_data(&mut h, name, data)
                .map_err(|e| invalid(e.to_string()))?;
        }
        b.finish().map_err(|e| invalid(e.to_string()))?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pkg(manifest: &str, wasm: &[u8], sig: Option<String>) -> Package {
        Package {
            manifest_text: manifest.to_owned(),
            wasm: wasm.to_vec(),
            signature: sig,
            local: false,
        }
    }

    #[test]
    fn signatures_bind_the_publisher_key_to_manifest_and_component() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let other = ed25519_dalek::SigningKey::from_bytes(&[4; 32]);
        let pubkey = publisher_key(&key.verifying_key());
        let m = format!(r#"{{"id":"x","publisher":{{"key":"{pubkey}"}}}}"#);
        let sig = sign(&m, b"wasm", &key);
        assert_eq!(
            verify(&pkg(&m, b"wasm", Some(sig.clone())), Some(&pubkey)).ok(),
            Some(Some(pubkey.clone()))
        );
        // Another component, another manifest, another signer, no signature: refused.
        assert!(verify(&pkg(&m, b"wasn", Some(sig.clone())), Some(&pubkey)).is_err());
        assert!(verify(&pkg(&format!("{m} "), b"wasm", Some(sig)), Some(&pubkey)).is_err());
        let forged = sign(&m, b"wasm", &other);
        assert!(verify(&pkg(&m, b"wasm", Some(forged)), Some(&pubkey)).is_err());
        assert!(verify(&pkg(&m, b"wasm", None), Some(&pubkey)).is_err());
        // No publisher: unsigned.
        assert_eq!(verify(&pkg(&m, b"wasm", None), None).ok(), Some(None));
    }
}
