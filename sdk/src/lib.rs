//! The Ferrydesk plugin SDK.
//!
//! A plugin is a WebAssembly component built with `cargo build --target wasm32-wasip2` from a
//! crate that depends on this one with exactly one feature: `action`, `macro` or `connector`.
//! Implement the trait of that kind and export it:
//!
//! ```ignore
//! use ferrydesk_sdk::prelude::*;
//!
//! struct Hello;
//! impl Action for Hello {
//!     fn run(ctx: &Ctx, action: &str, input: Json) -> PluginResult<Outcome> {
//!         let name: String = ctx.config("name").unwrap_or_else(|| "world".into());
//!         Ok(Outcome::new(json!({ "said": name })).post_note(format!("Hello, {name}!")))
//!     }
//! }
//! export_action!(Hello);
//! ```
//!
//! The host gives a plugin nothing it did not ask for in `plugin.json` and the admin did not
//! grant: no files, no environment, no sockets; HTTP only to granted hosts.
#![deny(missing_docs)]

#[cfg(any(
    all(feature = "action", feature = "macro"),
    all(feature = "action", feature = "connector"),
    all(feature = "macro", feature = "connector"),
))]
compile_error!(
    "enable exactly one of the features `action`, `macro`, `connector`: a plugin is one kind"
);

/// Generated WIT bindings of the selected world (`ferrydesk:plugin@0.1.0`).
#[doc(hidden)]
#[allow(missing_docs, unsafe_op_in_unsafe_fn, clippy::all)]
pub mod bindings {
    #[cfg(feature = "action")]
    wit_bindgen::generate!({
        world: "action",
        path: "wit/since_v0.1.0",
        pub_export_macro: true,
        default_bindings_module: "ferrydesk_sdk::bindings",
    });
    #[cfg(feature = "macro")]
    wit_bindgen::generate!({
        world: "macro",
        path: "wit/since_v0.1.0",
        pub_export_macro: true,
        default_bindings_module: "ferrydesk_sdk::bindings",
    });
    #[cfg(feature = "connector")]
    wit_bindgen::generate!({
        world: "connector",
        path: "wit/since_v0.1.0",
        pub_export_macro: true,
        default_bindings_module: "ferrydesk_sdk::bindings",
    });
}

#[cfg(any(feature = "action", feature = "macro", feature = "connector"))]
mod kinds;
#[cfg(any(feature = "action", feature = "macro", feature = "connector"))]
pub use kinds::*;

pub use serde_json::{Value as Json, json};

/// An error a plugin returns: shown to the operator or admin, with a stable code.
#[derive(Debug, Clone, PartialEq)]
pub struct PluginError {
    /// Stable machine-readable code, e.g. `not_found`, `upstream_unavailable`.
    pub code: String,
    /// Shown to people.
    pub message: String,
    /// Whether calling again may succeed (processes retry such errors).
    pub retryable: bool,
}

impl PluginError {
    /// A permanent error.
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> PluginError {
        PluginError {
            code: code.into(),
            message: message.into(),
            retryable: false,
        }
    }
    /// An error worth retrying (an upstream outage, a rate limit).
    pub fn retryable(code: impl Into<String>, message: impl Into<String>) -> PluginError {
        PluginError {
            retryable: true,
            ..PluginError::new(code, message)
        }
    }
    /// Input that does not have the expected shape.
    pub fn invalid_input(message: impl Into<String>) -> PluginError {
        PluginError::new("invalid_input", message)
    }
}

impl std::fmt::Display for PluginError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl From<serde_json::Error> for PluginError {
    fn from(e: serde_json::Error) -> PluginError {
        PluginError::invalid_input(e.to_string())
    }
}

/// The result type of plugin functions.
pub type PluginResult<T> = Result<T, PluginError>;

/// Reads JSON into a typed value, naming the problem if it does not fit.
pub fn from_json<T: serde::de::DeserializeOwned>(value: Json) -> PluginResult<T> {
    serde_json::from_value(value).map_err(PluginError::from)
}

/// Everything a plugin usually imports.
pub mod prelude {
    #[cfg(feature = "action")]
    pub use crate::export_action;
    #[cfg(feature = "connector")]
    pub use crate::export_connector;
    #[cfg(feature = "macro")]
    pub use crate::export_helpers;
    #[cfg(any(feature = "action", feature = "macro", feature = "connector"))]
    pub use crate::kinds::*;
    pub use crate::{Json, PluginError, PluginResult, from_json, json};
    pub use serde::{Deserialize, Serialize};
}
