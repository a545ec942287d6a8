//! Operator chat endpoints: inbox, chats section, accept, reply, transfer, finish, drafts,
//! templates for a chat, analytics.

use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json as Out, Router};
use ferrydesk_desk::analytics::{GroupBy, TotalsReport};
use ferrydesk_desk::chats::{ChatView, Inbox, Reply, TransferOperator, TransferTarget};
use ferrydesk_desk::templates::Rendered;
use ferrydesk_domain::*;
use ferrydesk_store::chats::ChatFilter;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Auth, Json, Query};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/me/inbox", get(inbox))
        .route("/chats", get(list))
        .route("/chats/export.csv", get(export))
        .route("/chats/{id}", get(view))
        .route("/chats/{id}/accept", post(accept))
        .route("/chats/{id}/messages", post(reply))
        .route("/chats/{id}/transfer", post(transfer))
        .route("/chats/{id}/finish", post(finish))
        .route("/chats/{id}/read", post(read))
        .route("/chats/{id}/draft", get(get_draft).put(put_draft))
        .route("/chats/{id}/routing", get(routing))
        .route("/chats/{id}/templates/{template}/render", post(render))
        .route("/transfer-targets", get(transfer_targets))
        .route("/contacts/{id}/chats", post(start_chat))
        .route("/analytics/totals", get(totals))
}

/// The operator's Chats tab: status, load vs limit, new and active chats (S4, S5).
#[utoipa::path(get, path = "/api/v1/me/inbox", tag = "chats", responses((status = 200, body = Inbox)))]
async fn inbox(State(s): State<AppState>, Auth(p): Auth) -> ApiResult<Out<Inbox>> {
    Ok(Out(s.desk.inbox(&p).await?))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<ChatStatus>,
    channel_id: Option<String>,
    queue_id: Option<String>,
    operator_id: Option<String>,
    contact_id: Option<String>,
    case_id: Option<String>,
    /// RFC 3339; chats started at or after.
    #[param(format = DateTime)]
    from: Option<String>,
    /// RFC 3339; chats started before.
    #[param(format = DateTime)]
    to: Option<String>,
    limit: Option<i64>,
    offset: Option<i64>,
}

fn parse_ts(field: &str, v: &Option<String>) -> ApiResult<Option<Ts>> {
    v.as_deref()
        .map(|s| {
            Ts::parse_rfc3339(s)
                .ok_or_else(|| ApiError::invalid(field, "expected an RFC 3339 date-time"))
        })
        .transpose()
}

impl ListQuery {
    fn filter(&self) -> ApiResult<ChatFilter> {
        Ok(ChatFilter {
            status: self.status,
            channel: self.channel_id.clone().map(ChannelId),
            queue: self.queue_id.clone().map(QueueId),
            operator: self.operator_id.clone().map(UserId),
            contact: self.contact_id.clone().map(ContactId),
            case: self.case_id.clone().map(CaseId),
            identity: None,
            visible_to: None,
            from: parse_ts("from", &self.from)?,
            to: parse_ts("to", &self.to)?,
            limit: self.limit.unwrap_or(50),
            offset: self.offset.unwrap_or(0).max(0),
        })
    }
}

#[derive(Serialize, ToSchema)]
pub struct ChatPage {
    pub items: Vec<Chat>,
    pub total: i64,
}

/// Chats section list with filters and paging (S25).
#[utoipa::path(get, path = "/api/v1/chats", tag = "chats", params(ListQuery), responses((status = 200, body = ChatPage)))]
async fn list(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<ListQuery>,
) -> ApiResult<Out<ChatPage>> {
    let (items, total) = s.desk.list_chats(&p, q.filter()?).await?;
    Ok(Out(ChatPage { items, total }))
}

/// CSV export of the chats matching the filters.
#[utoipa::path(get, path = "/api/v1/chats/export.csv", tag = "chats", params(ListQuery), responses((status = 200, content_type = "text/csv", body = String)))]
async fn export(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<ListQuery>,
) -> ApiResult<impl IntoResponse> {
    let csv = s.desk.export_csv(&p, q.filter()?).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"chats.csv\"",
            ),
        ],
        csv,
    ))
}

/// A chat record with its transcript and earlier history (S11, S21, S26).
#[utoipa::path(get, path = "/api/v1/chats/{id}", tag = "chats", responses((status = 200, body = ChatView), (status = 404, body = ErrorBody)))]
async fn view(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<ChatView>> {
    Ok(Out(s.desk.chat_view(&p, &ChatId(id)).await?))
}

/// Accepts a new chat (S9). 409 `chat_taken` when another operator was first,
/// 409 `chats_exceeded` at the limit.
#[utoipa::path(post, path = "/api/v1/chats/{id}/accept", tag = "chats", responses((status = 200, body = Chat), (status = 409, body = ErrorBody)))]
async fn accept(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<Chat>> {
    Ok(Out(s.desk.accept(&p, &ChatId(id)).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReplyRequest {
    #[serde(default)]
    pub text: String,
    /// Ids of files uploaded through `POST /api/v1/files`.
    #[serde(default)]
    pub files: Vec<FileId>,
}

/// Sends a reply with text and files.
#[utoipa::path(post, path = "/api/v1/chats/{id}/messages", tag = "chats", request_body = ReplyRequest, responses((status = 201, body = Message)))]
async fn reply(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(r): Json<ReplyRequest>,
) -> ApiResult<(StatusCode, Out<Message>)> {
    let m = s
        .desk
        .reply(
            &p,
            &ChatId(id),
            Reply {
                text: r.text,
                files: r.files,
            },
        )
        .await?;
    Ok((StatusCode::CREATED, Out(m)))
}

/// Transfers to a queue (`{"queue": id}`) or an operator (`{"operator": id}`) (S15).
#[utoipa::path(post, path = "/api/v1/chats/{id}/transfer", tag = "chats", request_body = TransferTarget, responses((status = 200, body = Chat)))]
async fn transfer(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(t): Json<TransferTarget>,
) -> ApiResult<Out<Chat>> {
    Ok(Out(s.desk.transfer(&p, &ChatId(id), t).await?))
}

/// Finishes the chat (S19).
#[utoipa::path(post, path = "/api/v1/chats/{id}/finish", tag = "chats", responses((status = 200, body = Chat)))]
async fn finish(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<Chat>> {
    Ok(Out(s.desk.finish(&p, &ChatId(id)).await?))
}

/// Marks the chat read (unread count 0).
#[utoipa::path(post, path = "/api/v1/chats/{id}/read", tag = "chats", responses((status = 204)))]
async fn read(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    s.desk.mark_read(&p, &ChatId(id)).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Draft {
    pub text: String,
    #[serde(default, skip_deserializing)]
    pub updated_at: Option<Ts>,
}

/// The caller's saved draft for the chat (S14).
#[utoipa::path(get, path = "/api/v1/chats/{id}/draft", tag = "chats", responses((status = 200, body = Draft)))]
async fn get_draft(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<Draft>> {
    let d = s.desk.draft(&p, &ChatId(id)).await?;
    Ok(Out(match d {
        Some((text, at)) => Draft {
            text,
            updated_at: Some(at),
        },
        None => Draft {
            text: String::new(),
            updated_at: None,
        },
    }))
}

/// Saves the draft; an empty text deletes it.
#[utoipa::path(put, path = "/api/v1/chats/{id}/draft", tag = "chats", request_body = Draft, responses((status = 204)))]
async fn put_draft(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(d): Json<Draft>,
) -> ApiResult<StatusCode> {
    s.desk.save_draft(&p, &ChatId(id), &d.text).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Why the chat went where it went: every routing decision with its candidates.
#[utoipa::path(get, path = "/api/v1/chats/{id}/routing", tag = "chats", responses((status = 200, body = Vec<RoutingDecision>)))]
async fn routing(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Out<Vec<RoutingDecision>>> {
    Ok(Out(s.desk.routing_decisions(&p, &ChatId(id)).await?))
}

/// A template with its macros substituted for this chat (S12).
#[utoipa::path(post, path = "/api/v1/chats/{id}/templates/{template}/render", tag = "templates", responses((status = 200, body = Rendered), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, description = "the template failed to render: a limit (output size, time, work, nesting) or a missing value, named in `message`; field `body`", body = ErrorBody)))]
async fn render(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path((id, t)): Path<(String, String)>,
) -> ApiResult<Out<Rendered>> {
    Ok(Out(s
        .desk
        .render_template(&p, &ChatId(id), &TemplateId(t))
        .await?))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct SearchQuery {
    #[serde(default)]
    q: String,
}

/// Operators with their status for the transfer dialog: active, inactive, chats exceeded.
#[utoipa::path(get, path = "/api/v1/transfer-targets", tag = "chats", params(SearchQuery), responses((status = 200, body = Vec<TransferOperator>)))]
async fn transfer_targets(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<SearchQuery>,
) -> ApiResult<Out<Vec<TransferOperator>>> {
    Ok(Out(s.desk.transfer_operators(&p, &q.q).await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartChatRequest {
    /// Which identity (channel) to write to when the contact has several.
    #[serde(default)]
    pub identity_id: Option<IdentityId>,
    #[serde(default)]
    pub text: String,
}

/// Starts a chat with a contact (S22).
#[utoipa::path(post, path = "/api/v1/contacts/{id}/chats", tag = "contacts", request_body = StartChatRequest, responses((status = 201, body = Chat)))]
async fn start_chat(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
    Json(r): Json<StartChatRequest>,
) -> ApiResult<(StatusCode, Out<Chat>)> {
    let c = s
        .desk
        .start_chat(&p, &ContactId(id), r.identity_id.as_ref(), &r.text)
        .await?;
    Ok((StatusCode::CREATED, Out(c)))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct TotalsQuery {
    #[param(format = DateTime)]
    from: String,
    #[param(format = DateTime)]
    to: String,
    #[serde(default)]
    group_by: Option<String>,
}

/// Totals: chats by status, waiting time, first response, handling time, auto-finished and
/// missed counts, grouped by channel, queue, operator or day (S25).
#[utoipa::path(get, path = "/api/v1/analytics/totals", tag = "analytics", params(TotalsQuery), responses((status = 200, body = TotalsReport)))]
async fn totals(
    State(s): State<AppState>,
    Auth(p): Auth,
    Query(q): Query<TotalsQuery>,
) -> ApiResult<Out<TotalsReport>> {
    let from = parse_ts("from", &Some(q.from))?.unwrap_or(Ts(0));
    let to = parse_ts("to", &Some(q.to))?.unwrap_or(Ts(0));
    let group_by = match q.group_by.as_deref().unwrap_or("none") {
        "none" => GroupBy::None,
        "channel" => GroupBy::Channel,
        "queue" => GroupBy::Queue,
        "operator" => GroupBy::Operator,
        "day" => GroupBy::Day,
        _ => {
            return Err(ApiError::invalid(
                "group_by",
                "must be none, channel, queue, operator or day",
            ));
        }
    };
    Ok(Out(s.desk.totals(&p, from, to, group_by).await?))
}
