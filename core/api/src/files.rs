//! File upload and download for staff.

use axum::extract::{Multipart, Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json as Out, Router};
use ferrydesk_desk::blobs::Uploader;
use ferrydesk_domain::*;

use crate::AppState;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::Auth;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/files", post(upload))
        .route("/files/{id}", get(download))
        .route("/channel/files", post(crate::channel::upload))
}

/// A `multipart/form-data` body; a request that is not one (wrong content type, no boundary)
/// is `422 invalid` on `file`, like every other bad upload, instead of axum's plain 400.
pub(crate) struct FormData(pub Multipart);

impl<S: Send + Sync> axum::extract::FromRequest<S> for FormData {
    type Rejection = ApiError;

    async fn from_request(req: axum::extract::Request, state: &S) -> Result<Self, Self::Rejection> {
        Multipart::from_request(req, state)
            .await
            .map(FormData)
            .map_err(|e| ApiError::invalid("file", e.body_text()))
    }
}

/// Reads the multipart field `file`: `(filename, content type, bytes)`.
pub(crate) async fn read_file_field(
    mut mp: Multipart,
    limit: u64,
) -> ApiResult<(String, String, Vec<u8>)> {
    let bad = |e: axum::extract::multipart::MultipartError| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError(ferrydesk_desk::Error::TooLarge {
                what: "file",
                limit,
            })
        } else {
            ApiError::invalid("file", e.body_text())
        }
    };
    while let Some(field) = mp.next_field().await.map_err(bad)? {
        if field.name() != Some("file") {
            continue;
        }
        let name = field.file_name().unwrap_or("file").to_owned();
        let ct = field
            .content_type()
            .unwrap_or("application/octet-stream")
            .to_owned();
        let bytes = field.bytes().await.map_err(bad)?;
        return Ok((name, ct, bytes.to_vec()));
    }
    Err(ApiError::invalid(
        "file",
        "multipart field `file` is missing",
    ))
}

/// Uploads a file (multipart field `file`) to attach to a reply. Size and content-type are
/// checked against the bytes.
#[utoipa::path(post, path = "/api/v1/files", tag = "files", request_body(content_type = "multipart/form-data", content = String),
    responses((status = 201, body = Attachment), (status = 413, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn upload(
    State(s): State<AppState>,
    Auth(p): Auth,
    FormData(mp): FormData,
) -> ApiResult<(StatusCode, Out<Attachment>)> {
    let (name, ct, bytes) = read_file_field(mp, s.desk.options().max_file_bytes).await?;
    let a = s
        .desk
        .upload(Uploader::User(p.id()), &name, &ct, bytes)
        .await?;
    Ok((StatusCode::CREATED, Out(a)))
}

/// Downloads a file of a chat the caller may read.
#[utoipa::path(get, path = "/api/v1/files/{id}", tag = "files", responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>), (status = 404, body = ErrorBody)))]
async fn download(
    State(s): State<AppState>,
    Auth(p): Auth,
    Path(id): Path<String>,
) -> ApiResult<Response> {
    let (a, bytes) = s.desk.download(&p, &FileId(id)).await?;
    Ok(file_response(&a, bytes))
}

pub(crate) fn file_response(a: &Attachment, bytes: Vec<u8>) -> Response {
    let inline = a.content_type.starts_with("image/") || a.content_type == "application/pdf";
    let disp = format!(
        "{}; filename*=UTF-8''{}",
        if inline { "inline" } else { "attachment" },
        a.filename
            .bytes()
            .map(|b| if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            })
            .collect::<String>()
    );
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&a.content_type) {
        h.insert(header::CONTENT_TYPE, v);
    }
    if let Ok(v) = HeaderValue::from_str(&disp) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("sandbox"),
    );
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("private, max-age=3600"),
    );
    r
}
