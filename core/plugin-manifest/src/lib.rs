//! Plugin manifests (`plugin.json`): checked against `sdk/schema/plugin-manifest.schema.json`
//! (JSON Schema 2020-12, the file plugin authors' editors use), then parsed into typed values
//! once, with the checks a schema cannot express. Every problem names its JSON pointer and the
//! rule it breaks.

use std::collections::{BTreeMap, HashSet};
use std::sync::OnceLock;

use serde::Deserialize;

/// The schema shipped in the SDK, embedded so the host checks exactly what editors check.
pub const SCHEMA: &str = include_str!("../../../sdk/schema/plugin-manifest.schema.json");

/// Template helper names that are built in (handlebars' own and the desk's); plugins may not
/// take them.
pub const RESERVED_HELPERS: &[&str] = &[
    "if",
    "unless",
    "each",
    "with",
    "lookup",
    "log",
    "raw",
    "eq",
    "ne",
    "gt",
    "gte",
    "lt",
    "lte",
    "and",
    "or",
    "not",
    "len",
    "date",
    "upper",
    "lower",
    "default",
    "first_name",
];

/// Interface versions this host implements.
pub const SUPPORTED_API_VERSIONS: &[&str] = &["0.1"];

/// One problem in a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// JSON pointer of the offending value ("" for the whole document).
    pub pointer: String,
    /// The rule broken: a JSON Schema keyword ("required", "pattern", …) or a host rule
    /// ("unique", "json", "schema").
    pub rule: String,
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let at = if self.pointer.is_empty() {
            "/"
        } else {
            &self.pointer
        };
        write!(f, "{at}: {} ({})", self.message, self.rule)
    }
}

/// A manifest that is not acceptable, with every problem found.
#[derive(Debug, thiserror::Error)]
#[error("invalid plugin manifest: {}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct Error {
    pub problems: Vec<Problem>,
}

impl Error {
    fn one(pointer: impl Into<String>, rule: &str, message: impl Into<String>) -> Error {
        Error {
            problems: vec![Problem {
                pointer: pointer.into(),
                rule: rule.into(),
                message: message.into(),
            }],
        }
    }
}

/// A text, or texts by language.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Localized {
    Text(String),
    ByLanguage(BTreeMap<String, String>),
}

impl Localized {
    /// The text for `lang`, falling back to English, then to any.
    pub fn get(&self, lang: &str) -> &str {
        match self {
            Localized::Text(t) => t,
            Localized::ByLanguage(m) => m
                .get(lang)
                .or_else(|| m.get("en"))
                .or_else(|| m.values().next())
                .map(String::as_str)
                .unwrap_or(""),
        }
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Action,
    Macro,
    Connector,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum RecordKind {
    Chat,
    Contact,
    Message,
    Case,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Component {
    pub path: String,
    pub sha256: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpCapability {
    pub allowed_hosts: Vec<String>,
    #[serde(default)]
    pub allow_private: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordAccess {
    #[serde(default)]
    pub read: Vec<RecordKind>,
    #[serde(default)]
    pub write: Vec<RecordKind>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Capabilities {
    pub http: Option<HttpCapability>,
    #[serde(default)]
    pub kv: bool,
    #[serde(default)]
    pub records: RecordAccess,
}

/// Resource limits; absent values take the host's defaults.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    pub memory_mb: Option<u32>,
    pub timeout_ms: Option<u32>,
    pub http_requests: Option<u32>,
    /// Calls of this plugin running at once on one node.
    pub concurrency: Option<u32>,
    /// Largest result of one call, in bytes.
    pub output_bytes: Option<u32>,
    /// Effects one action call may return.
    pub effects: Option<u32>,
    /// Total bytes of the effects one action call returns.
    pub effect_bytes: Option<u32>,
    /// Key-value quota of one scope (installation or channel): bytes of keys and values.
    pub kv_bytes: Option<u64>,
    /// Key-value quota of one scope: number of keys.
    pub kv_keys: Option<u64>,
}

/// Who publishes a plugin: an Ed25519 public key. Only packages signed with the matching key
/// may upgrade an installation of this id.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Publisher {
    pub name: Option<String>,
    /// `ed25519:` followed by the 32-byte public key in base64.
    pub key: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Action {
    pub id: String,
    pub title: Localized,
    #[serde(default)]
    pub placement: Vec<String>,
    pub input_schema: Option<serde_json::Value>,
    pub output_schema: Option<serde_json::Value>,
    pub confirm: Option<Localized>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HelperParam {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: Option<String>,
    #[serde(default)]
    pub required: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Helper {
    pub name: String,
    pub description: Option<Localized>,
    #[serde(default)]
    pub params: Vec<HelperParam>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub verify: String,
    pub header: Option<String>,
    pub secret_config_key: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Connector {
    pub channel_type: String,
    #[serde(default)]
    pub features: Vec<String>,
    pub delivery: String,
    pub webhook: Option<Webhook>,
}

/// A parsed, checked manifest.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(rename = "$schema", default)]
    pub schema: Option<String>,
    pub id: String,
    pub name: Localized,
    pub version: semver::Version,
    pub api_version: String,
    pub kind: Kind,
    pub component: Component,
    pub description: Option<Localized>,
    #[serde(default)]
    pub authors: Vec<String>,
    pub license: Option<String>,
    #[serde(default)]
    pub capabilities: Capabilities,
    #[serde(default)]
    pub limits: Limits,
    pub publisher: Option<Publisher>,
    pub config_schema: Option<serde_json::Value>,
    #[serde(default)]
    pub actions: Vec<Action>,
    #[serde(default)]
    pub helpers: Vec<Helper>,
    pub connector: Option<Connector>,
}

fn validator() -> &'static jsonschema::Validator {
    static V: OnceLock<jsonschema::Validator> = OnceLock::new();
    V.get_or_init(|| {
        let schema: serde_json::Value =
            serde_json::from_str(SCHEMA).expect("the SDK schema is JSON");
        jsonschema::draft202012::new(&schema).expect("the SDK schema compiles")
    })
}

/// Parses and checks `plugin.json`.
pub fn parse(text: &str) -> Result<Manifest, Error> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| Error::one("", "json", format!("not JSON: {e}")))?;
    let mut problems: Vec<Problem> = validator()
        .iter_errors(&value)
        .map(|e| Problem {
            pointer: e.instance_path().to_string(),
            rule: e.kind().keyword().to_owned(),
            message: e.to_string(),
        })
        .collect();
    if !problems.is_empty() {
        problems.sort_by(|a, b| a.pointer.cmp(&b.pointer));
        return Err(Error { problems });
    }
    let manifest: Manifest =
        serde_json::from_value(value).map_err(|e| Error::one("", "type", e.to_string()))?;
    let problems = check(&manifest);
    if problems.is_empty() {
        Ok(manifest)
    } else {
        Err(Error { problems })
    }
}

/// Rules the schema cannot express.
fn check(m: &Manifest) -> Vec<Problem> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, a) in m.actions.iter().enumerate() {
        if !seen.insert(&a.id) {
            out.push(Problem {
                pointer: format!("/actions/{i}/id"),
                rule: "unique".into(),
                message: format!("action id `{}` is declared twice", a.id),
            });
        }
        for (field, schema) in [
            ("input_schema", &a.input_schema),
            ("output_schema", &a.output_schema),
        ] {
            if let Some(s) = schema {
                check_schema(&mut out, &format!("/actions/{i}/{field}"), s);
            }
        }
    }
    let mut seen = HashSet::new();
    for (i, h) in m.helpers.iter().enumerate() {
        if RESERVED_HELPERS.contains(&h.name.as_str()) {
            out.push(Problem {
                pointer: format!("/helpers/{i}/name"),
                rule: "reserved".into(),
                message: format!("`{}` is a built-in template helper", h.name),
            });
        }
        if !seen.insert(&h.name) {
            out.push(Problem {
                pointer: format!("/helpers/{i}/name"),
                rule: "unique".into(),
                message: format!("helper `{}` is declared twice", h.name),
            });
        }
    }
    if let Some(s) = &m.config_schema {
        check_schema(&mut out, "/config_schema", s);
    }
    if let Some(c) = &m.connector
        && let Some(w) = &c.webhook
        && w.verify != "none"
    {
        let key = w.secret_config_key.as_deref().unwrap_or_default();
        let declared = m
            .config_schema
            .as_ref()
            .and_then(|s| s.pointer(&format!("/properties/{key}")))
            .is_some();
        if !declared {
            out.push(Problem {
                pointer: "/connector/webhook/secret_config_key".into(),
                rule: "config".into(),
                message: "webhook verification needs `secret_config_key` naming a property of `config_schema`".into(),
            });
        }
    }
    if m.kind != Kind::Action && !m.actions.is_empty() {
        out.push(Problem {
            pointer: "/actions".into(),
            rule: "kind".into(),
            message: "only action plugins declare actions".into(),
        });
    }
    if m.kind != Kind::Macro && !m.helpers.is_empty() {
        out.push(Problem {
            pointer: "/helpers".into(),
            rule: "kind".into(),
            message: "only macro plugins declare helpers".into(),
        });
    }
    out
}

fn check_schema(out: &mut Vec<Problem>, pointer: &str, schema: &serde_json::Value) {
    if let Err(e) = jsonschema::draft202012::new(schema) {
        out.push(Problem {
            pointer: pointer.into(),
            rule: "schema".into(),
            message: format!("not a valid JSON Schema: {e}"),
        });
    }
}

impl Manifest {
    /// Names of `config_schema` properties marked `writeOnly`: secrets, never logged or shown.
    pub fn secret_keys(&self) -> Vec<String> {
        let Some(props) = self
            .config_schema
            .as_ref()
            .and_then(|s| s.get("properties"))
            .and_then(|p| p.as_object())
        else {
            return Vec::new();
        };
        props
            .iter()
            .filter(|(_, v)| v.get("writeOnly").and_then(|w| w.as_bool()) == Some(true))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Secret values never leave the host: the plugin reads them through `config.secret`,
    /// the API shows only whether they are set.
    pub fn is_secret(&self, key: &str) -> bool {
        self.secret_keys().iter().any(|k| k == key)
    }

    /// Checks an admin configuration against `config_schema`, naming each problem's pointer.
    pub fn check_config(&self, config: &serde_json::Value) -> Result<(), Error> {
        let Some(schema) = &self.config_schema else {
            return match config.as_object() {
                Some(o) if o.is_empty() => Ok(()),
                _ => Err(Error::one("", "config", "this plugin takes no settings")),
            };
        };
        let validator = jsonschema::draft202012::new(schema)
            .map_err(|e| Error::one("/config_schema", "schema", e.to_string()))?;
        let mut problems: Vec<Problem> = validator
            .iter_errors(config)
            .map(|e| Problem {
                pointer: e.instance_path().to_string(),
                rule: e.kind().keyword().to_owned(),
                message: e.to_string(),
            })
            .collect();
        if problems.is_empty() {
            return Ok(());
        }
        problems.sort_by(|a, b| a.pointer.cmp(&b.pointer));
        Err(Error { problems })
    }

    /// The action with `id`.
    pub fn action(&self, id: &str) -> Option<&Action> {
        self.actions.iter().find(|a| a.id == id)
    }

    /// Whether this host implements the manifest's interface version.
    pub fn api_supported(&self) -> bool {
        SUPPORTED_API_VERSIONS.contains(&self.api_version.as_str())
    }
}
