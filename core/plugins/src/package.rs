//! Plugin packages: a directory with `plugin.json` and the component it names, or the same two
//! files in a tar archive (`ferrydesk plugin pack`), where the manifest carries the component's
//! SHA-256.

use std::io::Read;
use std::path::Path;

use ferrydesk_desk::Error;
use sha2::Digest;

/// A manifest and its component, as read from a package.
#[derive(Debug, Clone)]
pub struct Package {
    pub manifest_text: String,
    pub wasm: Vec<u8>,
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
    Ok(Package {
        manifest_text,
        wasm,
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
    })
}

fn component_path(manifest_text: &str) -> Result<String, Error> {
    let v: serde_json::Value = serde_json::from_str(manifest_text)
        .map_err(|e| Error::invalid("/", format!("plugin.json is not JSON: {e}")))?;
    let p = v
        .pointer("/component/path")
        .and_then(|p| p.as_str())
        .ok_or_else(|| Error::invalid("/component/path", "is required"))?;
    if p.contains("..") || p.starts_with('/') {
        return Err(Error::invalid(
            "/component/path",
            "must be a relative path inside the package",
        ));
    }
    Ok(p.to_owned())
}

/// Packs a plugin directory into a tar archive whose manifest carries the SHA-256.
pub fn pack(dir: &Path) -> Result<Vec<u8>, Error> {
    let pkg = read_dir(dir)?;
    let mut v: serde_json::Value =
        serde_json::from_str(&pkg.manifest_text).map_err(|e| invalid(e.to_string()))?;
    let path = component_path(&pkg.manifest_text)?;
    v["component"]["sha256"] = hex::encode(sha2::Sha256::digest(&pkg.wasm)).into();
    if let Some(o) = v.as_object_mut() {
        o.remove("$schema");
    }
    let manifest = serde_json::to_vec_pretty(&v).map_err(|e| invalid(e.to_string()))?;
    let mut out = Vec::new();
    {
        let mut b = tar::Builder::new(&mut out);
        for (name, data) in [
            ("plugin.json", &manifest[..]),
            (path.as_str(), &pkg.wasm[..]),
        ] {
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
