//! The SDK's WIT package parses and has the worlds and exports plugin kinds rely on.

use wit_parser::{Resolve, WorldItem, WorldKey};

#[test]
fn wit_package_defines_the_three_worlds() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../sdk/wit/since_v0.1.0");
    let mut resolve = Resolve::default();
    let (pkg, _) = resolve.push_dir(dir).expect("the WIT package parses");
    let package = &resolve.packages[pkg];
    assert_eq!(package.name.to_string(), "ferrydesk:plugin@0.1.0");
    let export_names = |world: &str| -> Vec<String> {
        let w = &resolve.worlds[package.worlds[world]];
        w.exports
            .iter()
            .filter_map(|(k, item)| match (k, item) {
                (WorldKey::Interface(id), WorldItem::Interface { .. }) => resolve.id_of(*id),
                _ => None,
            })
            .collect()
    };
    // Exports are interfaces, so the version is part of every export name.
    assert_eq!(
        export_names("action"),
        ["ferrydesk:plugin/action-handler@0.1.0"]
    );
    assert_eq!(
        export_names("macro"),
        ["ferrydesk:plugin/helper-handler@0.1.0"]
    );
    assert_eq!(
        export_names("connector"),
        ["ferrydesk:plugin/connector-handler@0.1.0"]
    );
    // Macros are pure: no http, kv or records imports.
    let macro_world = &resolve.worlds[package.worlds["macro"]];
    let imports: Vec<String> = macro_world
        .imports
        .keys()
        .filter_map(|k| match k {
            WorldKey::Interface(id) => resolve.id_of(*id),
            WorldKey::Name(n) => Some(n.clone()),
        })
        .collect();
    assert!(
        imports
            .iter()
            .all(|i| !i.contains("/http") && !i.contains("/kv") && !i.contains("/records")),
        "{imports:?}"
    );
}
