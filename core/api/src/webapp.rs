//! The operator and admin web app, built from `web/` by Vite and embedded in the binary.
//! Asset paths are served as files; every other page path gets `index.html` (client routing).

use axum::Router;
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use rust_embed::RustEmbed;

use crate::AppState;

#[derive(RustEmbed)]
#[folder = "../../web/dist"]
struct Assets;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/assets/{*path}", get(asset))
}

async fn index() -> Response {
    serve("index.html", false)
}

async fn asset(uri: Uri) -> Response {
    serve(uri.path().trim_start_matches('/'), true)
}

/// Client-side routes of the app (anything that is not the API, the widget or an asset).
pub async fn page(uri: Uri) -> Response {
    let p = uri.path();
    if p.starts_with("/api/") || p.starts_with("/widget/") {
        return crate::ops::not_found().await.into_response();
    }
    serve("index.html", false)
}

fn serve(path: &str, immutable: bool) -> Response {
    match Assets::get(path) {
        Some(f) => {
            let mime = mime_guess::from_path(path).first_or_octet_stream();
            let mut r = f.data.into_owned().into_response();
            if let Ok(v) = HeaderValue::from_str(mime.as_ref()) {
                r.headers_mut().insert(header::CONTENT_TYPE, v);
            }
            let cache = if immutable {
                "public, max-age=31536000, immutable"
            } else {
                "no-cache"
            };
            r.headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
            r
        }
        None => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}
