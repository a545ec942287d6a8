//! Property tests: any text, and mutations of a valid manifest, parse to a manifest or to
//! problems with pointers; never a panic, and each case in bounded time.

use std::time::{Duration, Instant};

use proptest::prelude::*;

const VALID: &str = include_str!("../../../plugins/testing/evil/plugin.json");

fn check(text: &str) {
    let t0 = Instant::now();
    match ferrydesk_plugin_manifest::parse(text) {
        Ok(m) => {
            let _ = m.secret_keys();
            let _ = m.check_config(&serde_json::json!({}));
        }
        Err(e) => assert!(!e.problems.is_empty()),
    }
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());
}

/// A random JSON value, nested a few levels.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        "[a-z_${}/.:*-]{0,12}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z_]{1,10}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

const KEYS: &[&str] = &[
    "id",
    "name",
    "version",
    "api_version",
    "kind",
    "component",
    "capabilities",
    "limits",
    "config_schema",
    "actions",
    "helpers",
    "connector",
    "publisher",
    "description",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_text_never_panics(s in "\\PC{0,400}") {
        check(&s);
    }

    #[test]
    fn random_bytes_of_a_manifest_never_panic(cut in 0usize..VALID.len(), byte in any::<u8>(), at in 0usize..VALID.len()) {
        let mut b = VALID.as_bytes().to_vec();
        b[at] = byte;
        b.truncate(cut.max(at + 1));
        check(&String::from_utf8_lossy(&b));
    }

    #[test]
    fn replaced_fields_never_panic(key in prop::sample::select(KEYS), value in json()) {
        let mut v: serde_json::Value = serde_json::from_str(VALID).unwrap_or_default();
        v[key] = value;
        check(&v.to_string());
    }

    #[test]
    fn replaced_nested_values_never_panic(path in prop::collection::vec("[a-z_]{1,8}|[0-3]", 1..4), value in json()) {
        let mut v: serde_json::Value = serde_json::from_str(VALID).unwrap_or_default();
        let mut at = &mut v;
        for p in &path {
            at = match p.parse::<usize>() {
                Ok(i) if at.as_array().is_some_and(|a| a.len() > i) => &mut at[i],
                _ if at.is_object() => &mut at[p.as_str()],
                _ => break,
            };
        }
        *at = value;
        check(&v.to_string());
    }
}
