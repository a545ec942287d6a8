//! Host bindings of `ferrydesk:plugin@0.1.0`, one module per world. The imports are generated
//! once (in `action`, the world that has them all) and shared by the other worlds with `with`.
//!
//! A future 0.2 interface gets its own `v0_2` module generated from `sdk/wit/since_v0.2.0`; a
//! loaded plugin then carries the pre-instance of the version its manifest declares, so 0.1
//! plugins keep running unchanged next to 0.2 ones.
#![allow(clippy::all, missing_docs)]

pub mod action {
    wasmtime::component::bindgen!({
        world: "action",
        path: "../../sdk/wit/since_v0.1.0",
        imports: { default: async },
        exports: { default: async },
    });
}

pub mod macros {
    wasmtime::component::bindgen!({
        world: "macro",
        path: "../../sdk/wit/since_v0.1.0",
        imports: { default: async },
        exports: { default: async },
        with: {
            "ferrydesk:plugin/types": super::action::ferrydesk::plugin::types,
            "ferrydesk:plugin/log": super::action::ferrydesk::plugin::log,
            "ferrydesk:plugin/config": super::action::ferrydesk::plugin::config,
        },
    });
}

pub mod connector {
    wasmtime::component::bindgen!({
        world: "connector",
        path: "../../sdk/wit/since_v0.1.0",
        imports: { default: async },
        exports: { default: async },
        with: {
            "ferrydesk:plugin/types": super::action::ferrydesk::plugin::types,
            "ferrydesk:plugin/log": super::action::ferrydesk::plugin::log,
            "ferrydesk:plugin/config": super::action::ferrydesk::plugin::config,
            "ferrydesk:plugin/kv": super::action::ferrydesk::plugin::kv,
            "ferrydesk:plugin/http": super::action::ferrydesk::plugin::http,
        },
    });
}

pub use action::ferrydesk::plugin::{config, http, kv, log, records, types};
