//! Manifests as plugin authors write them, good and bad; errors must name the pointer and rule.

use ferrydesk_plugin_manifest::{Kind, parse};

const SHA: &str = "0000000000000000000000000000000000000000000000000000000000000000";

fn create_case() -> serde_json::Value {
    serde_json::json!({
        "$schema": "../../sdk/schema/plugin-manifest.schema.json",
        "id": "create-case",
        "name": { "en": "Create case", "ru": "Создать обращение" },
        "version": "0.1.0",
        "api_version": "0.1",
        "kind": "action",
        "component": { "path": "create_case.wasm", "sha256": SHA },
        "capabilities": { "records": { "read": ["chat", "contact"], "write": ["case"] } },
        "limits": { "memory_mb": 16, "timeout_ms": 2000 },
        "config_schema": { "type": "object", "properties": { "token": { "type": "string", "writeOnly": true }, "prefix": { "type": "string" } } },
        "actions": [{
            "id": "create-case",
            "title": { "en": "Create case", "ru": "Создать обращение" },
            "placement": ["chat"],
            "input_schema": { "type": "object", "properties": { "subject": { "type": "string" } }, "additionalProperties": false }
        }]
    })
}

fn problems(v: serde_json::Value) -> Vec<(String, String)> {
    match parse(&v.to_string()) {
        Ok(_) => Vec::new(),
        Err(e) => e
            .problems
            .into_iter()
            .map(|p| (p.pointer, p.rule))
            .collect(),
    }
}

#[test]
fn a_good_manifest_parses_into_types() {
    let m = parse(&create_case().to_string()).expect("valid");
    assert_eq!(m.kind, Kind::Action);
    assert_eq!(m.version, semver::Version::new(0, 1, 0));
    assert_eq!(m.name.get("ru"), "Создать обращение");
    assert_eq!(m.name.get("de"), "Create case");
    assert_eq!(m.secret_keys(), ["token"]);
    assert!(m.api_supported());
}

#[test]
fn errors_name_the_pointer_and_the_rule() {
    let mut v = create_case();
    v["version"] = "1.0".into();
    v["component"]["sha256"] = "xyz".into();
    v["limits"]["memory_mb"] = 4096.into();
    v["surprise"] = true.into();
    let p = problems(v);
    assert!(p.contains(&("/version".into(), "pattern".into())), "{p:?}");
    assert!(
        p.contains(&("/component/sha256".into(), "pattern".into())),
        "{p:?}"
    );
    assert!(
        p.contains(&("/limits/memory_mb".into(), "maximum".into())),
        "{p:?}"
    );
    assert!(
        p.contains(&("".into(), "additionalProperties".into())),
        "{p:?}"
    );
}

#[test]
fn kind_specific_sections_are_required() {
    let mut v = create_case();
    v.as_object_mut().map(|o| o.remove("actions"));
    let p = problems(v);
    assert!(
        p.iter()
            .any(|(ptr, rule)| ptr.is_empty() && rule == "required"),
        "{p:?}"
    );

    let mut v = create_case();
    v["kind"] = "connector".into();
    assert!(problems(v).iter().any(|(_, rule)| rule == "required"));
}

#[test]
fn host_rules_beyond_the_schema() {
    let mut v = create_case();
    let a = v["actions"][0].clone();
    v["actions"] = serde_json::json!([a.clone(), a]);
    assert_eq!(
        problems(v),
        [("/actions/1/id".to_owned(), "unique".to_owned())]
    );

    let mut v = create_case();
    v["actions"][0]["input_schema"] = serde_json::json!({ "type": "objekt" });
    assert_eq!(
        problems(v),
        [("/actions/0/input_schema".to_owned(), "schema".to_owned())]
    );

    let err = parse("{ not json")
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("not JSON") && err.contains("line 1"), "{err}");
}

#[test]
fn connectors_verify_webhooks_with_a_declared_secret() {
    let v = serde_json::json!({
        "id": "telegram", "name": "Telegram", "version": "0.1.0", "api_version": "0.1", "kind": "connector",
        "component": { "path": "telegram.wasm", "sha256": SHA },
        "capabilities": { "http": { "allowed_hosts": ["https://api.telegram.org"] }, "kv": true },
        "config_schema": { "type": "object", "properties": { "bot_token": { "type": "string", "writeOnly": true } } },
        "connector": { "channel_type": "telegram", "delivery": "webhook", "features": ["text", "photos"],
                        "webhook": { "verify": "header_secret", "header": "X-Telegram-Bot-Api-Secret-Token", "secret_config_key": "webhook_secret" } }
    });
    assert_eq!(
        problems(v.clone()),
        [(
            "/connector/webhook/secret_config_key".to_owned(),
            "config".to_owned()
        )]
    );
    let mut ok = v;
    ok["config_schema"]["properties"]["webhook_secret"] =
        serde_json::json!({ "type": "string", "writeOnly": true });
    let m = parse(&ok.to_string()).expect("valid connector");
    assert_eq!(m.secret_keys().len(), 2);

    let mut bad = ok.clone();
    bad["capabilities"]["http"]["allowed_hosts"] = serde_json::json!(["api.telegram.org/path"]);
    assert_eq!(
        problems(bad),
        [(
            "/capabilities/http/allowed_hosts/0".to_owned(),
            "pattern".to_owned()
        )]
    );
}
