//! The API channel: integrations post inbound client messages and read outbound replies,
//! authenticated with the channel's token (`Authorization: Bearer fdc_…`).

use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::routing::{get, post};
use axum::{Json as Out, Router};
use ferrydesk_desk::ingest::{Inbound, IngestOutcome};
use ferrydesk_desk::widget::OutboundItem;
use ferrydesk_domain::*;
use serde::Deserialize;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{Json, Query, bearer};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/channel/messages", post(inbound))
        .route("/channel/outbound", get(outbound))
        .route("/channel/outbound/{id}/ack", post(ack))
        .route("/channel/files/{id}", get(download))
}

/// The API channel the request is authenticated as.
pub struct ChannelAuth(pub Channel);

impl FromRequestParts<AppState> for ChannelAuth {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, s: &AppState) -> Result<Self, Self::Rejection> {
        let token = bearer(parts).ok_or(ApiError(ferrydesk_desk::Error::Unauthenticated))?;
        Ok(ChannelAuth(s.desk.authenticate_channel(token).await?))
    }
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Sender {
    /// The sender's id in the integration.
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub photo_url: Option<String>,
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InboundRequest {
    /// The integration's message id: repeated posts with the same id are stored once.
    pub external_id: String,
    pub sender: Sender,
    #[serde(default)]
    pub text: String,
    /// Ids of files uploaded through `POST /api/v1/channel/files`.
    #[serde(default)]
    pub files: Vec<FileId>,
}

/// Posts a client message. 201 when stored, 200 when it was a duplicate.
#[utoipa::path(post, path = "/api/v1/channel/messages", tag = "channel", request_body = InboundRequest,
    responses((status = 201, body = IngestOutcome), (status = 200, body = IngestOutcome), (status = 422, body = ErrorBody)), security(("channel_token" = [])))]
async fn inbound(
    State(s): State<AppState>,
    ChannelAuth(ch): ChannelAuth,
    Json(r): Json<InboundRequest>,
) -> ApiResult<(StatusCode, Out<IngestOutcome>)> {
    let out = s
        .desk
        .ingest(Inbound {
            channel: ch.id,
            external_id: Some(r.external_id),
            sender: r.sender.id,
            sender_name: r.sender.name,
            sender_photo_url: r.sender.photo_url,
            text: r.text,
            files: r.files,
        })
        .await?;
    Ok((
        if out.duplicate {
            StatusCode::OK
        } else {
            StatusCode::CREATED
        },
        Out(out),
    ))
}

#[derive(Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
pub struct OutboundQuery {
    limit: Option<i64>,
}

/// Operator replies not acknowledged yet, oldest first. Deliver each, then ack it; unacked
/// messages are listed again (at-least-once; the message id is the idempotency key).
#[utoipa::path(get, path = "/api/v1/channel/outbound", tag = "channel", params(OutboundQuery), responses((status = 200, body = Vec<OutboundItem>)), security(("channel_token" = [])))]
async fn outbound(
    State(s): State<AppState>,
    ChannelAuth(ch): ChannelAuth,
    Query(q): Query<OutboundQuery>,
) -> ApiResult<Out<Vec<OutboundItem>>> {
    Ok(Out(s
        .desk
        .channel_outbound(&ch, q.limit.unwrap_or(100))
        .await?))
}

#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AckRequest {
    pub status: DeliveryStatus,
}

/// Reports the delivery state of an outbound message.
#[utoipa::path(post, path = "/api/v1/channel/outbound/{id}/ack", tag = "channel", request_body = AckRequest, responses((status = 204)), security(("channel_token" = [])))]
async fn ack(
    State(s): State<AppState>,
    ChannelAuth(ch): ChannelAuth,
    Path(id): Path<String>,
    Json(r): Json<AckRequest>,
) -> ApiResult<StatusCode> {
    s.desk.channel_ack(&ch, &MessageId(id), r.status).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Uploads a client's file (multipart field `file`) to reference from an inbound message.
#[utoipa::path(post, path = "/api/v1/channel/files", tag = "channel", request_body(content_type = "multipart/form-data", content = String),
    responses((status = 201, body = Attachment), (status = 422, body = ErrorBody)), security(("channel_token" = [])))]
pub(crate) async fn upload(
    State(s): State<AppState>,
    ChannelAuth(ch): ChannelAuth,
    crate::files::FormData(mp): crate::files::FormData,
) -> ApiResult<(StatusCode, Out<Attachment>)> {
    let (name, ct, bytes) =
        crate::files::read_file_field(mp, s.desk.options().max_file_bytes).await?;
    let a = s
        .desk
        .upload(
            ferrydesk_desk::blobs::Uploader::Channel(&ch.id),
            &name,
            &ct,
            bytes,
        )
        .await?;
    Ok((StatusCode::CREATED, Out(a)))
}

/// Downloads a file of one of this channel's chats (e.g. an operator's attachment to deliver).
#[utoipa::path(get, path = "/api/v1/channel/files/{id}", tag = "channel", responses((status = 200, body = Vec<u8>), (status = 404, body = ErrorBody)), security(("channel_token" = [])))]
async fn download(
    State(s): State<AppState>,
    ChannelAuth(ch): ChannelAuth,
    Path(id): Path<String>,
) -> ApiResult<axum::response::Response> {
    let (a, bytes) = s.desk.channel_download(&ch, &FileId(id)).await?;
    Ok(crate::files::file_response(&a, bytes))
}
