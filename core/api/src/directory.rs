//! Administration endpoints: users, queues, channels, settings, templates, contacts.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use axum::{Json as Out, Router};
use ferrydesk_desk::admin::{
    ChannelInput, ContactInput, ContactView, CreatedChannel, NewUserInput, QueueInput, Settings,
    UserPatchInput,
};
use ferrydesk_desk::templates::TemplateInput;
use ferrydesk_domain::*;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::AppState;
use crate::error::{ApiResult, ErrorBody};
use crate::extract::{Auth, Json, Query};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/users", get(list_users).post(create_user))
        .route("/users/{id}", get(get_user).patch(update_user))
        .route("/queues", get(list_queues).post(create_queue))
        .route("/queues/{id}", put(update_queue).delete(delete_queue))
        .route("/channels", get(list_channels).post(create_channel))
        .route("/channels/{id}", get(get_channel).put(update_channel))
        .route("/channels/{id}/token", axum::routing::post(rotate_token))
        .route("/settings", get(get_settings).put(put_settings))
        .route("/templates", get(search_templates).post(create_template))
        .route(
            "/templates/{id}",
            put(update_template).delete(delete_template),
        )
        .route("/contacts", get(search_contacts))
        .route("/contacts/{id}", get(get_contact).put(update_contact))
        .route("/contacts/{id}/duplicates", get(find_duplicates))
        .route("/contacts/merge", post(merge_contacts))
        .route(
            "/duplicate-rules",
            get(duplicate_rules).put(put_duplicate_rules),
        )
        .route("/duplicate-scans", post(start_duplicate_scan))
        .route("/duplicate-scans/{id}", get(get_duplicate_scan))
        .route("/duplicate-groups", get(list_duplicate_groups))
        .route(
            "/duplicate-groups/{id}/dismiss",
            post(dismiss_duplicate_group),
        )
}

#[utoipa::path(get, path = "/api/v1/users", tag = "admin", responses((status = 200, body = Vec<User>)))]
async fn list_users(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<Out<Vec<User>>> {
    Ok(Out(s.desk.list_users(&p).await?))
}

#[utoipa::path(post, path = "/api/v1/users", tag = "admin", request_body = NewUserInput, responses((status = 201, body = User), (status = 422, body = ErrorBody)))]
async fn create_user(
    State(s): State<AppState>,
    Auth(p): Auth,
    Json(u): Json<NewUserInput>,
) -> ApiResult<(StatusCode, Out<User>)> {
    Ok((
        StatusCode::CREATED,
        Out(s.desk.create_user(Some(&p), u).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "admin", responses((status = 200, body = User)))]
async fn get_user(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<User>> {
    Ok(Out(s.desk.get_user(&p, &UserId(id)).await?))
}

/// Changes a user. Changing one's own password needs `current_password` (422 naming it when
/// missing or wrong; throttled like logins: 429); a password change or a disable ends the
/// user's other sessions, API tokens (password) and open sockets.
#[utoipa::path(patch, path = "/api/v1/users/{id}", tag = "admin", request_body = UserPatchInput,
    responses((status = 200, body = User), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
async fn update_user(
    State(s): State<AppState>,
    Auth(p): Auth,
    crate::auth::ClientAddr(client): crate::auth::ClientAddr,
    Path(id): Path<String>,
    Json(u): Json<UserPatchInput>,
) -> ApiResult<Out<User>> {
    Ok(Out(s.desk.update_user(&p, &UserId(id), u, &client).await?))
}

#[utoipa::path(get, path = "/api/v1/queues", tag = "admin", responses((status = 200, body = Vec<Queue>)))]
async fn list_queues(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<Out<Vec<Queue>>> {
    Ok(Out(s.desk.list_queues(&p).await?))
}

#[utoipa::path(post, path = "/api/v1/queues", tag = "admin", request_body = QueueInput, responses((status = 201, body = Queue)))]
async fn create_queue(
    State(s): State<AppState>,
    Auth(p): Auth,
    Json(q): Json<QueueInput>,
) -> ApiResult<(StatusCode, Out<Queue>)> {
    Ok((
        StatusCode::CREATED,
        Out(s.desk.save_queue(&p, None, q).await?),
    ))
}

#[utoipa::path(put, path = "/api/v1/queues/{id}", tag = "admin", request_body = QueueInput, responses((status = 200, body = Queue)))]
async fn update_queue(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(q): Json<QueueInput>,
) -> ApiResult<Out<Queue>> {
    Ok(Out(s.desk.save_queue(&p, Some(&QueueId(id)), q).await?))
}

#[utoipa::path(delete, path = "/api/v1/queues/{id}", tag = "admin", responses((status = 204)))]
async fn delete_queue(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.desk.delete_queue(&p, &QueueId(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/api/v1/channels", tag = "admin", responses((status = 200, body = Vec<Channel>)))]
async fn list_channels(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<Out<Vec<Channel>>> {
    Ok(Out(s.desk.list_channels(&p).await?))
}

/// Creates a widget or API channel; an API channel's token is shown once.
#[utoipa::path(post, path = "/api/v1/channels", tag = "admin", request_body = ChannelInput, responses((status = 201, body = CreatedChannel)))]
async fn create_channel(
    State(s): State<AppState>,
    Auth(p): Auth,
    Json(c): Json<ChannelInput>,
) -> ApiResult<(StatusCode, Out<CreatedChannel>)> {
    Ok((
        StatusCode::CREATED,
        Out(s.desk.create_channel(&p, c).await?),
    ))
}

#[utoipa::path(get, path = "/api/v1/channels/{id}", tag = "admin", responses((status = 200, body = Channel)))]
async fn get_channel(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<Channel>> {
    Ok(Out(s.desk.get_channel(&p, &ChannelId(id)).await?))
}

#[utoipa::path(put, path = "/api/v1/channels/{id}", tag = "admin", request_body = ChannelInput, responses((status = 200, body = Channel)))]
async fn update_channel(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(c): Json<ChannelInput>,
) -> ApiResult<Out<Channel>> {
    Ok(Out(s.desk.update_channel(&p, &ChannelId(id), c).await?))
}

#[derive(serde::Serialize, utoipa::ToSchema)]
pub struct ChannelToken {
    pub api_token: String,
}

/// Issues a new token for an API channel; the previous one stops working.
#[utoipa::path(post, path = "/api/v1/channels/{id}/token", tag = "admin", responses((status = 200, body = ChannelToken)))]
async fn rotate_token(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<ChannelToken>> {
    Ok(Out(ChannelToken {
        api_token: s.desk.rotate_channel_token(&p, &ChannelId(id)).await?,
    }))
}

#[utoipa::path(get, path = "/api/v1/settings", tag = "admin", responses((status = 200, body = Settings)))]
async fn get_settings(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<Out<Settings>> {
    Ok(Out(s.desk.settings(&p).await?))
}

#[utoipa::path(put, path = "/api/v1/settings", tag = "admin", request_body = Settings, responses((status = 200, body = Settings)))]
async fn put_settings(
    State(s): State<AppState>,
    Auth(p): Auth,
    Json(v): Json<Settings>,
) -> ApiResult<Out<Settings>> {
    Ok(Out(s.desk.update_settings(&p, v).await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TemplateQuery {
    /// Part of the name or text (the `//` picker).
    #[serde(default)]
    q: String,
    /// Include templates of this chat's queue.
    chat_id: Option<String>,
}

/// Templates matching `q` by name or text (S12, S13).
#[utoipa::path(get, path = "/api/v1/templates", tag = "templates", params(TemplateQuery), responses((status = 200, body = Vec<Template>)))]
async fn search_templates(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<TemplateQuery>,
) -> ApiResult<Out<Vec<Template>>> {
    let chat = q.chat_id.map(ChatId);
    Ok(Out(s
        .desk
        .search_templates(&p, &q.q, chat.as_ref())
        .await?))
}

#[utoipa::path(post, path = "/api/v1/templates", tag = "templates", request_body = TemplateInput, responses((status = 201, body = Template), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 422, description = "invalid input, or a body that cannot render with a sample chat or breaks a template limit (field `body`, the reason in `message`)", body = ErrorBody)))]
async fn create_template(
    State(s): State<AppState>,
    Auth(p): Auth,
    Json(t): Json<TemplateInput>,
) -> ApiResult<(StatusCode, Out<Template>)> {
    Ok((
        StatusCode::CREATED,
        Out(s.desk.save_template(&p, None, t).await?),
    ))
}

#[utoipa::path(put, path = "/api/v1/templates/{id}", tag = "templates", request_body = TemplateInput, responses((status = 200, body = Template), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, description = "invalid input, or a body that cannot render with a sample chat or breaks a template limit (field `body`, the reason in `message`)", body = ErrorBody)))]
async fn update_template(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(t): Json<TemplateInput>,
) -> ApiResult<Out<Template>> {
    Ok(Out(s
        .desk
        .save_template(&p, Some(&TemplateId(id)), t)
        .await?))
}

#[utoipa::path(delete, path = "/api/v1/templates/{id}", tag = "templates", responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn delete_template(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.desk.delete_template(&p, &TemplateId(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ContactQuery {
    #[serde(default)]
    q: String,
    limit: Option<i64>,
    offset: Option<i64>,
}

#[utoipa::path(get, path = "/api/v1/contacts", tag = "contacts", params(ContactQuery), responses((status = 200, body = Vec<Contact>)))]
async fn search_contacts(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<ContactQuery>,
) -> ApiResult<Out<Vec<Contact>>> {
    Ok(Out(s
        .desk
        .search_contacts(&p, &q.q, q.limit.unwrap_or(50), q.offset.unwrap_or(0))
        .await?))
}

/// A contact with identities and the timeline of chats (S23, S24).
#[utoipa::path(get, path = "/api/v1/contacts/{id}", tag = "contacts", responses((status = 200, body = ContactView)))]
async fn get_contact(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<ContactView>> {
    Ok(Out(s.desk.contact_view(&p, &ContactId(id)).await?))
}

#[utoipa::path(put, path = "/api/v1/contacts/{id}", tag = "contacts", request_body = ContactInput, responses((status = 200, body = Contact)))]
async fn update_contact(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(c): Json<ContactInput>,
) -> ApiResult<Out<Contact>> {
    Ok(Out(s.desk.update_contact(&p, &ContactId(id), c).await?))
}

/// Likely duplicates of a contact by the enabled rules, with the rule and the reasons (S18).
#[utoipa::path(get, path = "/api/v1/contacts/{id}/duplicates", operation_id = "find_duplicates", tag = "contacts", responses((status = 200, body = Vec<ferrydesk_desk::duplicates::DuplicateMatch>), (status = 404, body = crate::error::ErrorBody)))]
async fn find_duplicates(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<Vec<ferrydesk_desk::duplicates::DuplicateMatch>>> {
    Ok(Out(s.desk.find_duplicates(&p, &ContactId(id)).await?))
}

/// Merges one contact into another in one transaction (S18); the merged contact redirects.
#[utoipa::path(post, path = "/api/v1/contacts/merge", operation_id = "merge_contacts", tag = "contacts", request_body = ferrydesk_desk::duplicates::MergeInput,
    responses((status = 200, body = ferrydesk_desk::duplicates::MergeResult), (status = 409, body = crate::error::ErrorBody), (status = 422, body = crate::error::ErrorBody)))]
async fn merge_contacts(
    State(s): State<AppState>,
    Auth(p): Auth,
    Json(input): Json<ferrydesk_desk::duplicates::MergeInput>,
) -> ApiResult<Out<ferrydesk_desk::duplicates::MergeResult>> {
    Ok(Out(s.desk.merge_contacts(&p, input).await?))
}

/// Duplicate rules, in order (the defaults on first use).
#[utoipa::path(get, path = "/api/v1/duplicate-rules", operation_id = "list_duplicate_rules", tag = "contacts", responses((status = 200, body = Vec<ferrydesk_desk::duplicates::DuplicateRule>)))]
async fn duplicate_rules(
    State(s): State<AppState>,
    Auth(p): Auth,
) -> ApiResult<Out<Vec<ferrydesk_desk::duplicates::DuplicateRule>>> {
    Ok(Out(s.desk.duplicate_rules(&p).await?))
}

/// Replaces the duplicate rules (admins); problems name `rules[i].field`.
#[utoipa::path(put, path = "/api/v1/duplicate-rules", operation_id = "put_duplicate_rules", tag = "contacts", request_body = Vec<ferrydesk_desk::duplicates::DuplicateRule>,
    responses((status = 200, body = Vec<ferrydesk_desk::duplicates::DuplicateRule>), (status = 422, body = crate::error::ErrorBody)))]
async fn put_duplicate_rules(
    State(s): State<AppState>,
    Auth(p): Auth,
    Json(rules): Json<Vec<ferrydesk_desk::duplicates::DuplicateRule>>,
) -> ApiResult<Out<Vec<ferrydesk_desk::duplicates::DuplicateRule>>> {
    Ok(Out(s.desk.set_duplicate_rules(&p, rules).await?))
}

/// Starts the bulk duplicate search over all contacts in the background (supervisors and
/// admins); 409 while one runs. Poll `GET /duplicate-scans/{id}` for its state and figures.
#[utoipa::path(post, path = "/api/v1/duplicate-scans", operation_id = "start_duplicate_scan", tag = "contacts",
    responses((status = 202, body = ferrydesk_desk::duplicate_scan::DuplicateScan), (status = 409, body = crate::error::ErrorBody)))]
async fn start_duplicate_scan(
    State(s): State<AppState>,
    Auth(p): Auth,
) -> ApiResult<(
    StatusCode,
    Out<ferrydesk_desk::duplicate_scan::DuplicateScan>,
)> {
    Ok((
        StatusCode::ACCEPTED,
        Out(s.desk.start_duplicate_scan(&p).await?),
    ))
}

/// A bulk duplicate search by id, or the newest with `latest`.
#[utoipa::path(get, path = "/api/v1/duplicate-scans/{id}", operation_id = "get_duplicate_scan", tag = "contacts",
    responses((status = 200, body = ferrydesk_desk::duplicate_scan::DuplicateScan), (status = 404, body = crate::error::ErrorBody)))]
async fn get_duplicate_scan(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<ferrydesk_desk::duplicate_scan::DuplicateScan>> {
    Ok(Out(s.desk.duplicate_scan(&p, &id).await?))
}

#[derive(Deserialize, IntoParams)]
pub struct GroupQuery {
    /// `open`, `dismissed` or `resolved`; all when absent.
    #[param(pattern = "^(open|dismissed|resolved)$")]
    status: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

/// Groups of likely duplicates from the newest finished bulk search, in review order.
#[utoipa::path(get, path = "/api/v1/duplicate-groups", operation_id = "list_duplicate_groups", tag = "contacts", params(GroupQuery),
    responses((status = 200, body = ferrydesk_desk::duplicate_scan::DuplicateGroupPage), (status = 422, body = crate::error::ErrorBody)))]
async fn list_duplicate_groups(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<GroupQuery>,
) -> ApiResult<Out<ferrydesk_desk::duplicate_scan::DuplicateGroupPage>> {
    Ok(Out(s
        .desk
        .duplicate_groups(
            &p,
            q.status.as_deref().filter(|s| !s.is_empty()),
            q.limit.unwrap_or(20),
            q.offset.unwrap_or(0),
        )
        .await?))
}

/// Marks a group "not duplicates"; later searches keep its contacts apart.
#[utoipa::path(post, path = "/api/v1/duplicate-groups/{id}/dismiss", operation_id = "dismiss_duplicate_group", tag = "contacts",
    responses((status = 200, body = ferrydesk_desk::duplicate_scan::DuplicateGroup), (status = 404, body = crate::error::ErrorBody), (status = 409, body = crate::error::ErrorBody)))]
async fn dismiss_duplicate_group(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<ferrydesk_desk::duplicate_scan::DuplicateGroup>> {
    Ok(Out(s.desk.dismiss_duplicate_group(&p, &id).await?))
}
