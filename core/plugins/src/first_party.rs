//! First-party plugins: the ids Ferrydesk ships (`plugins/` in the source tree) belong to the
//! project. An uploaded package may use one of them only when it is signed by a first-party
//! key: the Ferrydesk release key below, whose secret half only the release pipeline holds
//! (`plugins/release.sh`), or a key the operator adds with `FERRYDESK_PLUGIN_FIRST_PARTY_KEYS`
//! (a fork's own release key). Refusing is the default: with no plugin installed under the id,
//! an unsigned or foreign-signed `create-case` is still refused, so uninstalling the real one
//! does not open the id to anyone. A directory on the server (`plugins_dir`, the demo,
//! `ferrydesk plugin install DIR`) is the operator's own choice and installs as `local`; for
//! these ids `local` and a first-party key are the same publisher, so a signed release package
//! upgrades the plugin the demo installed from its directory.

/// The public half of the Ferrydesk release key (`ed25519:` and base64).
pub const RELEASE_KEY: &str = "ed25519:VfDNQEMdyodmvo3/DscL46iX4331ciTUfrJlUSbujmw=";

/// The plugin ids Ferrydesk ships.
pub const IDS: &[&str] = &["greeting", "create-case", "webhook", "telegram"];

/// Whether `id` is one of the ids Ferrydesk ships.
pub fn reserved(id: &str) -> bool {
    IDS.contains(&id)
}

/// The keys that sign first-party packages: the release key and those in
/// `FERRYDESK_PLUGIN_FIRST_PARTY_KEYS` (comma-separated `ed25519:` keys).
pub fn keys() -> Vec<String> {
    let mut keys = vec![RELEASE_KEY.to_owned()];
    if let Ok(extra) = std::env::var("FERRYDESK_PLUGIN_FIRST_PARTY_KEYS") {
        keys.extend(
            extra
                .split(',')
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .map(str::to_owned),
        );
    }
    keys
}

/// Who owns a plugin id, for the rule "only the same publisher replaces a plugin": for a
/// first-party id, `local` and every first-party key are one owner, the project.
pub fn owner(id: &str, identity: &str, keys: &[String]) -> String {
    if reserved(id) && (identity == "local" || keys.iter().any(|k| k == identity)) {
        "first-party".to_owned()
    } else {
        identity.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_key_is_a_valid_ed25519_key() -> Result<(), Box<dyn std::error::Error>> {
        use base64::Engine as _;
        let b64 = RELEASE_KEY
            .strip_prefix("ed25519:")
            .ok_or("no ed25519: prefix")?;
        let bytes: [u8; 32] = base64::engine::general_purpose::STANDARD
            .decode(b64)?
            .try_into()
            .map_err(|_| "not 32 bytes")?;
        ed25519_dalek::VerifyingKey::from_bytes(&bytes)?;
        Ok(())
    }

    #[test]
    fn ids_are_the_plugins_in_the_source_tree() -> Result<(), Box<dyn std::error::Error>> {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../plugins");
        for id in IDS {
            let dir = root.join(id);
            let m: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(dir.join("plugin.json"))?)?;
            assert_eq!(m["id"], *id, "{}", dir.display());
        }
        Ok(())
    }

    #[test]
    fn local_and_first_party_keys_are_one_owner_only_for_reserved_ids() {
        let keys = vec![RELEASE_KEY.to_owned(), "ed25519:other".to_owned()];
        assert_eq!(owner("create-case", "local", &keys), "first-party");
        assert_eq!(owner("create-case", RELEASE_KEY, &keys), "first-party");
        assert_eq!(owner("create-case", "ed25519:other", &keys), "first-party");
        assert_eq!(owner("create-case", "unsigned", &keys), "unsigned");
        assert_eq!(owner("create-case", "ed25519:x", &keys), "ed25519:x");
        assert_eq!(owner("mine", "local", &keys), "local");
        assert_eq!(owner("mine", RELEASE_KEY, &keys), RELEASE_KEY);
    }
}
