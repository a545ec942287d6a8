//! The parts shared by every kind of plugin (context, logging, configuration) and the trait of
//! the kind this crate is built for.

use crate::bindings::ferrydesk::plugin::{config, log as wit_log, types};
use crate::{Json, PluginError, PluginResult};

/// Who and what a call is about: the installation, the operator, the chat and contact, the
/// locale. Never carries secrets; read those with [`Ctx::secret`].
#[derive(Debug, Clone)]
pub struct Ctx {
    /// The installation (plugin id) making the call.
    pub installation: String,
    /// The operator or admin on whose behalf the plugin runs.
    pub actor: Option<String>,
    /// The chat the call is about.
    pub chat: Option<String>,
    /// The contact the call is about.
    pub contact: Option<String>,
    /// BCP 47 language of the actor, e.g. `ru`.
    pub locale: String,
    /// Correlates the plugin's log lines with the host's.
    pub trace_id: String,
}

impl Ctx {
    #[doc(hidden)]
    pub fn from_wit(c: types::CallContext) -> Ctx {
        Ctx {
            installation: c.installation,
            actor: c.actor,
            chat: c.chat,
            contact: c.contact,
            locale: c.locale,
            trace_id: c.trace_id,
        }
    }

    /// An admin setting (a property of the manifest's `config_schema`).
    pub fn config(&self, key: &str) -> Option<String> {
        config::get(key)
    }

    /// A secret setting (a `writeOnly` property); the host never logs it.
    pub fn secret(&self, key: &str) -> Option<String> {
        config::secret(key)
    }

    /// A required setting, or an error naming it.
    pub fn require_config(&self, key: &str) -> PluginResult<String> {
        self.config(key)
            .or_else(|| self.secret(key))
            .ok_or_else(|| {
                PluginError::new("not_configured", format!("setting `{key}` is not set"))
            })
    }
}

/// Writes to the host's log, tagged with the plugin id.
pub mod log {
    use super::wit_log::{Level, log};
    /// Debug detail.
    pub fn debug(msg: &str) {
        log(Level::Debug, msg)
    }
    /// Normal operation.
    pub fn info(msg: &str) {
        log(Level::Info, msg)
    }
    /// Something unexpected that the plugin handled.
    pub fn warn(msg: &str) {
        log(Level::Warn, msg)
    }
    /// A failure.
    pub fn error(msg: &str) {
        log(Level::Error, msg)
    }
}

#[doc(hidden)]
pub fn error_to_wit(e: PluginError) -> types::PluginError {
    types::PluginError {
        code: e.code,
        message: e.message,
        retryable: e.retryable,
    }
}

#[doc(hidden)]
pub fn parse_json(text: &str) -> Result<Json, types::PluginError> {
    serde_json::from_str(text).map_err(|e| error_to_wit(PluginError::invalid_input(e.to_string())))
}

#[cfg(any(feature = "action", feature = "connector"))]
pub use io::*;

#[cfg(any(feature = "action", feature = "connector"))]
mod io {
    use crate::bindings::ferrydesk::plugin::{http as wit_http, kv};
    use crate::{Json, PluginError, PluginResult};

    /// Plugin-scoped key-value storage (the manifest must declare `capabilities.kv`).
    pub mod store {
        use super::*;
        /// Reads a value.
        pub fn get(key: &str) -> Option<Vec<u8>> {
            kv::get(key)
        }
        /// Writes a value.
        pub fn set(key: &str, value: &[u8]) -> PluginResult<()> {
            kv::set(key, value).map_err(|e| PluginError::retryable("kv", e))
        }
        /// Deletes a value.
        pub fn delete(key: &str) {
            kv::delete(key)
        }
    }

    /// An HTTP response.
    #[derive(Debug, Clone)]
    pub struct Response {
        /// Status code.
        pub status: u16,
        /// Headers, names in lower case.
        pub headers: Vec<(String, String)>,
        /// Body bytes.
        pub body: Vec<u8>,
    }

    impl Response {
        /// The body as JSON.
        pub fn json(&self) -> PluginResult<Json> {
            serde_json::from_slice(&self.body).map_err(|e| {
                PluginError::retryable("upstream_invalid", format!("response is not JSON: {e}"))
            })
        }
        /// A header by (case-insensitive) name.
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
    }

    /// An outbound HTTP request, sent by the host to hosts the manifest declares and the admin
    /// granted.
    #[derive(Debug, Clone)]
    pub struct Request {
        method: String,
        url: String,
        headers: Vec<(String, String)>,
        body: Option<Vec<u8>>,
    }

    impl Request {
        /// A request with `method` to `url`.
        pub fn new(method: &str, url: impl Into<String>) -> Request {
            Request {
                method: method.into(),
                url: url.into(),
                headers: Vec::new(),
                body: None,
            }
        }
        /// A GET request.
        pub fn get(url: impl Into<String>) -> Request {
            Request::new("GET", url)
        }
        /// A POST request.
        pub fn post(url: impl Into<String>) -> Request {
            Request::new("POST", url)
        }
        /// Adds a header.
        pub fn header(mut self, name: &str, value: impl Into<String>) -> Request {
            self.headers.push((name.into(), value.into()));
            self
        }
        /// A JSON body.
        pub fn json(self, body: &Json) -> Request {
            let bytes = serde_json::to_vec(body).unwrap_or_default();
            self.header("content-type", "application/json").body(bytes)
        }
        /// A raw body.
        pub fn body(mut self, body: Vec<u8>) -> Request {
            self.body = Some(body);
            self
        }
        /// A `multipart/form-data` body: text fields and one file.
        pub fn multipart(
            self,
            fields: &[(&str, &str)],
            file: Option<(&str, &str, &str, &[u8])>,
        ) -> Request {
            let boundary = "ferrydesk-boundary-7d1c3f";
            let mut b = Vec::new();
            for (k, v) in fields {
                b.extend_from_slice(format!("--{boundary}\r\ncontent-disposition: form-data; name=\"{k}\"\r\n\r\n{v}\r\n").as_bytes());
            }
            if let Some((field, name, ctype, data)) = file {
                b.extend_from_slice(format!("--{boundary}\r\ncontent-disposition: form-data; name=\"{field}\"; filename=\"{name}\"\r\ncontent-type: {ctype}\r\n\r\n").as_bytes());
                b.extend_from_slice(data);
                b.extend_from_slice(b"\r\n");
            }
            b.extend_from_slice(format!("--{boundary}--\r\n").as_bytes());
            self.header(
                "content-type",
                format!("multipart/form-data; boundary={boundary}"),
            )
            .body(b)
        }
        /// Sends it. Denied hosts, timeouts and oversized responses are errors; any status
        /// code is a response.
        pub fn send(self) -> PluginResult<Response> {
            let req = wit_http::Request {
                method: self.method,
                url: self.url,
                headers: self.headers,
                body: self.body,
            };
            match wit_http::fetch(&req) {
                Ok(r) => Ok(Response {
                    status: r.status,
                    headers: r.headers,
                    body: r.body,
                }),
                Err(wit_http::HttpError::Denied(why)) => Err(PluginError::new("http_denied", why)),
                Err(wit_http::HttpError::Timeout) => Err(PluginError::retryable(
                    "upstream_timeout",
                    "the upstream did not answer in time",
                )),
                Err(wit_http::HttpError::TooLarge) => Err(PluginError::new(
                    "upstream_too_large",
                    "the response is larger than the plugin's limit",
                )),
                Err(wit_http::HttpError::Transport(why)) => {
                    Err(PluginError::retryable("upstream_unavailable", why))
                }
            }
        }
    }
}

#[cfg(feature = "action")]
pub use action::*;
#[cfg(feature = "action")]
mod action {
    use super::*;
    use crate::bindings::exports::ferrydesk::plugin::action_handler as wit;
    use crate::bindings::ferrydesk::plugin::records;

    /// What an action returns: output for the caller plus effects the host applies in one
    /// transaction.
    #[derive(Debug, Clone)]
    pub struct Outcome {
        output: Json,
        effects: Vec<wit::Effect>,
    }

    impl Outcome {
        /// An outcome with `output` (validated against the action's `output_schema`).
        pub fn new(output: Json) -> Outcome {
            Outcome {
                output,
                effects: Vec::new(),
            }
        }
        /// Posts a message to the client in the chat.
        pub fn post_message(mut self, text: impl Into<String>) -> Outcome {
            self.effects.push(wit::Effect::PostMessage(text.into()));
            self
        }
        /// Posts an internal note in the chat.
        pub fn post_note(mut self, text: impl Into<String>) -> Outcome {
            self.effects.push(wit::Effect::PostNote(text.into()));
            self
        }
        /// Creates a record of a kind the manifest may write.
        pub fn create_record(mut self, kind: &str, fields: Json) -> Outcome {
            self.effects
                .push(wit::Effect::CreateRecord((kind.into(), fields.to_string())));
            self
        }
        /// Updates a record of a kind the manifest may write.
        pub fn update_record(mut self, kind: &str, id: &str, fields: Json) -> Outcome {
            self.effects.push(wit::Effect::UpdateRecord((
                kind.into(),
                id.into(),
                fields.to_string(),
            )));
            self
        }
    }

    /// Reads a record the manifest declares in `capabilities.records.read`.
    pub fn read_record(kind: &str, id: &str) -> PluginResult<Option<Json>> {
        match records::get(kind, id) {
            Ok(Some(text)) => Ok(Some(serde_json::from_str(&text)?)),
            Ok(None) => Ok(None),
            Err(e) => Err(PluginError::new("records_denied", e)),
        }
    }

    /// A plugin of kind `action`.
    pub trait Action {
        /// Runs action `action` (an id from the manifest) with `input`, already validated
        /// against its `input_schema`.
        fn run(ctx: &Ctx, action: &str, input: Json) -> PluginResult<Outcome>;
    }

    #[doc(hidden)]
    pub fn dispatch<A: Action>(
        ctx: wit::CallContext,
        action: String,
        input: String,
    ) -> Result<wit::Outcome, wit::PluginError> {
        let input = parse_json(&input)?;
        let out = A::run(&Ctx::from_wit(ctx), &action, input).map_err(error_to_wit)?;
        Ok(wit::Outcome {
            output: out.output.to_string(),
            effects: out.effects,
        })
    }

    /// Exports a type implementing [`Action`] as the plugin's action handler.
    #[macro_export]
    macro_rules! export_action {
        ($t:ty) => {
            struct __FerrydeskExport;
            impl $crate::bindings::exports::ferrydesk::plugin::action_handler::Guest
                for __FerrydeskExport
            {
                fn run(
                    ctx: $crate::bindings::ferrydesk::plugin::types::CallContext,
                    action: String,
                    input: String,
                ) -> Result<
                    $crate::bindings::exports::ferrydesk::plugin::action_handler::Outcome,
                    $crate::bindings::ferrydesk::plugin::types::PluginError,
                > {
                    $crate::dispatch::<$t>(ctx, action, input)
                }
            }
            $crate::bindings::export!(__FerrydeskExport);
        };
    }
}

#[cfg(feature = "macro")]
pub use helpers::*;
#[cfg(feature = "macro")]
mod helpers {
    use super::*;

    /// A plugin of kind `macro`: template helpers such as `{{greeting}}`.
    pub trait Helpers {
        /// Renders helper `helper` with positional `params`, named `hash` (an object) and the
        /// template's `context`. Pure: no HTTP, no storage.
        fn render(
            ctx: &Ctx,
            helper: &str,
            params: &[Json],
            hash: &Json,
            context: &Json,
        ) -> PluginResult<String>;
    }

    #[doc(hidden)]
    pub fn dispatch<H: Helpers>(
        ctx: types::CallContext,
        helper: String,
        params: Vec<String>,
        hash: String,
        context: String,
    ) -> Result<String, types::PluginError> {
        let params = params
            .iter()
            .map(|p| parse_json(p))
            .collect::<Result<Vec<_>, _>>()?;
        let hash = parse_json(&hash)?;
        let context = parse_json(&context)?;
        H::render(&Ctx::from_wit(ctx), &helper, &params, &hash, &context).map_err(error_to_wit)
    }

    /// Exports a type implementing [`Helpers`] as the plugin's helper handler.
    #[macro_export]
    macro_rules! export_helpers {
        ($t:ty) => {
            struct __FerrydeskExport;
            impl $crate::bindings::exports::ferrydesk::plugin::helper_handler::Guest
                for __FerrydeskExport
            {
                fn render(
                    ctx: $crate::bindings::ferrydesk::plugin::types::CallContext,
                    helper: String,
                    params: Vec<String>,
                    hash: String,
                    context: String,
                ) -> Result<String, $crate::bindings::ferrydesk::plugin::types::PluginError> {
                    $crate::dispatch::<$t>(ctx, helper, params, hash, context)
                }
            }
            $crate::bindings::export!(__FerrydeskExport);
        };
    }
}

#[cfg(feature = "connector")]
pub use connector::*;
#[cfg(feature = "connector")]
mod connector {
    use super::*;
    use crate::bindings::exports::ferrydesk::plugin::connector_handler as wit;

    pub use wit::{
        FileRef, HttpReply, InboundMessage, InboundRequest, OutboundMessage, Parsed, Sender,
    };

    impl InboundRequest {
        /// A header by (case-insensitive) name.
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        }
        /// The body as JSON.
        pub fn json(&self) -> PluginResult<Json> {
            serde_json::from_slice(&self.body)
                .map_err(|e| PluginError::invalid_input(format!("body is not JSON: {e}")))
        }
    }

    impl HttpReply {
        /// `200 OK` with an empty body.
        pub fn ok() -> HttpReply {
            HttpReply {
                status: 200,
                headers: Vec::new(),
                body: Vec::new(),
            }
        }
        /// `200 OK` with a JSON body.
        pub fn json(body: &Json) -> HttpReply {
            HttpReply {
                status: 200,
                headers: vec![("content-type".into(), "application/json".into())],
                body: serde_json::to_vec(body).unwrap_or_default(),
            }
        }
    }

    impl Parsed {
        /// No messages (e.g. an event the connector ignores), answered `200 OK`.
        pub fn empty() -> Parsed {
            Parsed {
                messages: Vec::new(),
                reply: HttpReply::ok(),
            }
        }
    }

    /// A plugin of kind `connector`: a messenger or custom channel.
    pub trait Connector {
        /// Registers the webhook or checks credentials (called when the channel is saved).
        fn setup(_ctx: &Ctx) -> PluginResult<()> {
            Ok(())
        }
        /// Parses a provider's webhook call; the host has checked its signature or secret.
        fn inbound(ctx: &Ctx, req: InboundRequest) -> PluginResult<Parsed>;
        /// Delivers an operator reply; returns the provider's message id. Return a retryable
        /// error with code `rate_limited` and message `retry_after=<seconds>` to ask the host
        /// to wait.
        fn send(ctx: &Ctx, msg: OutboundMessage) -> PluginResult<String>;
        /// Fetches new messages (connectors whose manifest says `"delivery": "polling"`).
        fn poll(_ctx: &Ctx) -> PluginResult<Vec<InboundMessage>> {
            Ok(Vec::new())
        }
    }

    #[doc(hidden)]
    pub fn setup<C: Connector>(ctx: types::CallContext) -> Result<(), types::PluginError> {
        C::setup(&Ctx::from_wit(ctx)).map_err(error_to_wit)
    }
    #[doc(hidden)]
    pub fn inbound<C: Connector>(
        ctx: types::CallContext,
        req: InboundRequest,
    ) -> Result<Parsed, types::PluginError> {
        C::inbound(&Ctx::from_wit(ctx), req).map_err(error_to_wit)
    }
    #[doc(hidden)]
    pub fn send<C: Connector>(
        ctx: types::CallContext,
        msg: OutboundMessage,
    ) -> Result<String, types::PluginError> {
        C::send(&Ctx::from_wit(ctx), msg).map_err(error_to_wit)
    }
    #[doc(hidden)]
    pub fn poll<C: Connector>(
        ctx: types::CallContext,
    ) -> Result<Vec<InboundMessage>, types::PluginError> {
        C::poll(&Ctx::from_wit(ctx)).map_err(error_to_wit)
    }

    /// Exports a type implementing [`Connector`] as the plugin's connector handler.
    #[macro_export]
    macro_rules! export_connector {
        ($t:ty) => {
            struct __FerrydeskExport;
            impl $crate::bindings::exports::ferrydesk::plugin::connector_handler::Guest
                for __FerrydeskExport
            {
                fn setup(
                    ctx: $crate::bindings::ferrydesk::plugin::types::CallContext,
                ) -> Result<(), $crate::bindings::ferrydesk::plugin::types::PluginError> {
                    $crate::setup::<$t>(ctx)
                }
                fn inbound(
                    ctx: $crate::bindings::ferrydesk::plugin::types::CallContext,
                    req: $crate::InboundRequest,
                ) -> Result<$crate::Parsed, $crate::bindings::ferrydesk::plugin::types::PluginError>
                {
                    $crate::inbound::<$t>(ctx, req)
                }
                fn send(
                    ctx: $crate::bindings::ferrydesk::plugin::types::CallContext,
                    msg: $crate::OutboundMessage,
                ) -> Result<String, $crate::bindings::ferrydesk::plugin::types::PluginError> {
                    $crate::send::<$t>(ctx, msg)
                }
                fn poll(
                    ctx: $crate::bindings::ferrydesk::plugin::types::CallContext,
                ) -> Result<
                    Vec<$crate::InboundMessage>,
                    $crate::bindings::ferrydesk::plugin::types::PluginError,
                > {
                    $crate::poll::<$t>(ctx)
                }
            }
            $crate::bindings::export!(__FerrydeskExport);
        };
    }
}
