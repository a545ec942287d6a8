//! Plugins: administration (install, upgrade, enable with grants, configure, disable,
//! uninstall), chat actions, connector channels and their webhooks, contact photos.

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json as Out, Router};
use ferrydesk_domain::*;
use ferrydesk_plugins::{ActionResult, Grant, PluginInfo};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Auth, Json, Query};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/plugins", get(list))
        .route("/plugins/{id}", get(get_one).delete(uninstall))
        .route("/plugins/{id}/enable", post(enable))
        .route("/plugins/{id}/disable", post(disable))
        .route("/plugins/{id}/config", axum::routing::put(configure))
        .route("/connector-types", get(connector_types))
        .route("/chats/{id}/actions/{plugin}/{action}", post(run_action))
        .route("/connector-channels", post(create_channel))
        .route(
            "/connector-channels/{id}",
            get(channel_config).put(configure_channel),
        )
        .route("/photos/{id}", get(photo))
}

/// Installing a package: a component of up to 16 MiB, so outside the JSON body limit.
pub fn package_router() -> Router<AppState> {
    Router::new().route("/plugins", post(install))
}

/// The webhook route: no session (providers authenticate by signature or secret), its own
/// body limit.
pub fn webhook_router() -> Router<AppState> {
    Router::new().route(
        "/api/v1/channels/{id}/webhook",
        post(webhook).get(webhook_get),
    )
}

/// Installed plugins with their capabilities, grants, settings (secrets masked) and call
/// statistics. Admins only.
#[utoipa::path(get, path = "/api/v1/plugins", operation_id = "list_plugins", tag = "plugins", responses((status = 200, body = Vec<PluginInfo>), (status = 403, body = ErrorBody)))]
async fn list(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<Out<Vec<PluginInfo>>> {
    Ok(Out(s.plugins.list(&p).await?))
}

#[utoipa::path(get, path = "/api/v1/plugins/{id}", operation_id = "get_plugin", tag = "plugins", responses((status = 200, body = PluginInfo), (status = 404, body = ErrorBody)))]
async fn get_one(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<PluginInfo>> {
    Ok(Out(s.plugins.get(&p, &id).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct InstallQuery {
    /// Replace the installed version with this newer one.
    #[serde(default)]
    upgrade: bool,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstallFromDir {
    /// A plugin directory on the server (plugin.json and its component).
    pub path: String,
}

/// Installs a plugin: the body is a package made by `ferrydesk plugin pack` (`application/x-tar`),
/// or `{"path": "/dir/on/server"}` (`application/json`). The component is compiled and checked
/// (imports, exports, checksum) before anything is stored. The plugin starts disabled.
#[utoipa::path(post, path = "/api/v1/plugins", operation_id = "install_plugin", tag = "plugins", params(InstallQuery),
    request_body(content = InstallFromDir, description = "or an application/x-tar package"),
    responses((status = 201, body = PluginInfo), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn install(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<InstallQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<(StatusCode, Out<PluginInfo>)> {
    p.require(Role::Admin)?;
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let pkg = if ctype.starts_with("application/json") {
        let req: InstallFromDir =
            serde_json::from_slice(&body).map_err(|e| ApiError::invalid("path", e.to_string()))?;
        s.plugins.package_from_path(&req.path)?
    } else {
        ferrydesk_plugins::package::read_tar(&body)?
    };
    let info = s.plugins.install(Some(&p), pkg, q.upgrade).await?;
    Ok((StatusCode::CREATED, Out(info)))
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnableRequest {
    /// What the admin grants; by default every origin the manifest names and no private
    /// addresses.
    pub grant: Option<Grant>,
}

/// Enables a plugin with the grants the admin approves.
#[utoipa::path(post, path = "/api/v1/plugins/{id}/enable", tag = "plugins", request_body = EnableRequest,
    responses((status = 200, body = PluginInfo), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn enable(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(req): Json<EnableRequest>,
) -> ApiResult<Out<PluginInfo>> {
    Ok(Out(s.plugins.enable(Some(&p), &id, req.grant).await?))
}

#[utoipa::path(post, path = "/api/v1/plugins/{id}/disable", tag = "plugins", responses((status = 200, body = PluginInfo)))]
async fn disable(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<PluginInfo>> {
    Ok(Out(s.plugins.disable(Some(&p), &id).await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConfigRequest {
    /// Values for `config_schema`. Secrets left out keep their stored value; `null` clears one.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
}

/// Replaces a plugin's settings; problems name their JSON pointer.
#[utoipa::path(put, path = "/api/v1/plugins/{id}/config", tag = "plugins", request_body = ConfigRequest,
    responses((status = 200, body = PluginInfo), (status = 422, body = ErrorBody)))]
async fn configure(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(req): Json<ConfigRequest>,
) -> ApiResult<Out<PluginInfo>> {
    Ok(Out(s.plugins.configure(Some(&p), &id, req.config).await?))
}

#[utoipa::path(delete, path = "/api/v1/plugins/{id}", tag = "plugins", responses((status = 204), (status = 409, body = ErrorBody)))]
async fn uninstall(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.plugins.uninstall(Some(&p), &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A channel type an enabled connector plugin provides.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConnectorType {
    pub plugin: String,
    #[schema(value_type = Object)]
    pub name: serde_json::Value,
    #[schema(value_type = Object)]
    pub connector: serde_json::Value,
    #[schema(value_type = Object)]
    pub config_schema: serde_json::Value,
}

/// Channel types from enabled connector plugins, for the channel admin screens.
#[utoipa::path(get, path = "/api/v1/connector-types", tag = "plugins", responses((status = 200, body = Vec<ConnectorType>)))]
async fn connector_types(
    State(s): State<AppState>,
    Auth(p): Auth,
) -> ApiResult<Out<Vec<ConnectorType>>> {
    let all = s.plugins.list(&p).await?;
    Ok(Out(all
        .into_iter()
        .filter(|i| i.kind == "connector" && i.enabled)
        .map(|i| ConnectorType {
            plugin: i.id,
            name: i.name,
            connector: i.connector,
            config_schema: i.config_schema,
        })
        .collect()))
}

/// The Actions menu of a chat: actions of enabled plugins the operator can run here.
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RunActionRequest {
    /// Validated against the action's `input_schema`.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub input: serde_json::Value,
}

/// Runs an action on a chat; its effects (notes, messages, record changes) are applied in one
/// transaction. A plugin that fails, times out or misbehaves answers 409 with the reason.
#[utoipa::path(post, path = "/api/v1/chats/{id}/actions/{plugin}/{action}", tag = "plugins", request_body = RunActionRequest,
    responses((status = 200, body = ActionResult), (status = 404, body = ErrorBody), (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn run_action(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path((id, plugin, action)): Path<(String, String, String)>,
    Json(req): Json<RunActionRequest>,
) -> ApiResult<Out<ActionResult>> {
    let input = if req.input.is_null() {
        serde_json::json!({})
    } else {
        req.input
    };
    let chat = ChatId(id);
    // The chat settings decide which actions the menu offers, for the API too.
    s.engine
        .plugin_action_allowed(&p, &chat, &plugin, &action)
        .await?;
    Ok(Out(s
        .plugins
        .run_chat_action(&p, &chat, &plugin, &action, input)
        .await?))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ConnectorChannelInput {
    pub plugin: String,
    pub name: String,
    pub queue_id: QueueId,
    /// Values for the plugin's `config_schema`.
    #[schema(value_type = Object)]
    pub config: serde_json::Value,
}

/// Creates a channel served by a connector plugin and runs the plugin's `setup` (e.g.
/// registering the webhook); a setup failure is reported with the channel.
#[utoipa::path(post, path = "/api/v1/connector-channels", operation_id = "create_connector_channel", tag = "plugins", request_body = ConnectorChannelInput,
    responses((status = 201, body = ferrydesk_plugins::ConnectorChannel), (status = 422, body = ErrorBody)))]
async fn create_channel(
    State(s): State<AppState>,
    Auth(p): Auth,
    Json(req): Json<ConnectorChannelInput>,
) -> ApiResult<(StatusCode, Out<ferrydesk_plugins::ConnectorChannel>)> {
    let c = s
        .plugins
        .create_channel(&p, &req.plugin, &req.name, &req.queue_id, req.config)
        .await?;
    Ok((StatusCode::CREATED, Out(c)))
}

#[utoipa::path(get, path = "/api/v1/connector-channels/{id}", operation_id = "get_connector_channel", tag = "plugins", responses((status = 200, body = ferrydesk_plugins::ConnectorChannel)))]
async fn channel_config(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<ferrydesk_plugins::ConnectorChannel>> {
    Ok(Out(s.plugins.channel_config(&p, &ChannelId(id)).await?))
}

#[utoipa::path(put, path = "/api/v1/connector-channels/{id}", operation_id = "configure_connector_channel", tag = "plugins", request_body = ConfigRequest,
    responses((status = 200, body = ferrydesk_plugins::ConnectorChannel), (status = 422, body = ErrorBody)))]
async fn configure_channel(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(req): Json<ConfigRequest>,
) -> ApiResult<Out<ferrydesk_plugins::ConnectorChannel>> {
    Ok(Out(s
        .plugins
        .configure_channel(&p, &ChannelId(id), req.config)
        .await?))
}

/// A provider's webhook call for a connector channel: verified as the plugin's manifest says
/// (secret header or HMAC-SHA256 of the raw body), parsed by the plugin, stored, then answered
/// with the plugin's reply. Failures a retry may cure answer 503.
#[utoipa::path(post, path = "/api/v1/channels/{id}/webhook", tag = "plugins", request_body(content = String, content_type = "application/json"),
    responses((status = 200), (status = 401), (status = 404), (status = 503)))]
async fn webhook(
    State(s): State<AppState>,
    Path(id): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    hook(s, id, "POST", uri, headers, body).await
}

async fn webhook_get(
    State(s): State<AppState>,
    Path(id): Path<String>,
    uri: axum::http::Uri,
    headers: HeaderMap,
) -> Response {
    hook(s, id, "GET", uri, headers, Bytes::new()).await
}

async fn hook(
    s: AppState,
    id: String,
    method: &str,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = ferrydesk_plugin_host::InboundRequest {
        method: method.into(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect(),
        body: body.to_vec(),
    };
    let r = s.plugins.webhook(&ChannelId(id), req).await;
    let mut resp = (
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::OK),
        r.body,
    )
        .into_response();
    for (k, v) in r.headers {
        if let (Ok(k), Ok(v)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            axum::http::HeaderValue::from_str(&v),
        ) {
            resp.headers_mut().insert(k, v);
        }
    }
    resp
}

/// A contact's photo as a channel delivered it. Any signed-in staff member.
#[utoipa::path(get, path = "/api/v1/photos/{id}", tag = "plugins", responses((status = 200, content_type = "image/jpeg", body = Vec<u8>), (status = 404, body = ErrorBody)))]
async fn photo(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (a, bytes) = s.desk.contact_photo(&p, &FileId(id)).await?;
    Ok(crate::files::file_response(&a, bytes))
}
