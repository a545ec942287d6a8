//! Security headers on every response: what a browser may load, frame and send along.
//!
//! Three kinds of response get three policies:
//! - JSON and files of the API (`/api/…`, `/widget/v1/…`): nothing may run or be framed
//!   (`default-src 'none'; frame-ancestors 'none'; sandbox`), so an uploaded HTML file opened
//!   from a download link cannot script the desk's origin.
//! - `/widget.js`: a script that other sites embed; no CSP of its own (a CSP on a script response
//!   is ignored), only `nosniff` so it is never run as anything but JavaScript.
//! - Pages (the web app, the widget demo page) and their assets: the web app's strict policy —
//!   scripts only from this origin, no inline script, no plugins, no framing by other sites.
//!
//! A handler that set its own `Content-Security-Policy` keeps it.

use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::middleware::Next;
use axum::response::Response;

/// The web app's policy. React sets styles through the CSSOM (not blocked by `style-src`),
/// but recharts and the widget's shadow root use `style` attributes and `<style>` elements,
/// hence `'unsafe-inline'` for styles only. `connect-src 'self'` covers the same-origin
/// WebSocket (`ws:`/`wss:` of the page's host, CSP Level 3).
pub const PAGE_CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
     img-src 'self' data: blob:; media-src 'self' data: blob:; connect-src 'self'; \
     font-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; \
     frame-ancestors 'none'";

/// The policy of API answers and downloaded files.
pub const API_CSP: &str = "default-src 'none'; frame-ancestors 'none'; sandbox";

/// Adds the security headers to every response (see the module docs).
pub async fn security_headers(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_owned();
    let mut res = next.run(req).await;
    apply(&path, res.headers_mut());
    res
}

fn apply(path: &str, h: &mut HeaderMap) {
    set(h, header::X_CONTENT_TYPE_OPTIONS, "nosniff");
    set(h, header::REFERRER_POLICY, "no-referrer");
    if path == "/widget.js" {
        return;
    }
    let api = path.starts_with("/api/") || path.starts_with("/widget/v1/");
    set(
        h,
        header::CONTENT_SECURITY_POLICY,
        if api { API_CSP } else { PAGE_CSP },
    );
    set(h, header::X_FRAME_OPTIONS, "DENY");
}

fn set(h: &mut HeaderMap, name: header::HeaderName, value: &'static str) {
    if !h.contains_key(&name) {
        h.insert(name, HeaderValue::from_static(value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_page_and_script_get_their_policies() {
        let mut h = HeaderMap::new();
        apply("/api/v1/chats", &mut h);
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], API_CSP);
        assert_eq!(h[header::X_CONTENT_TYPE_OPTIONS], "nosniff");
        let mut h = HeaderMap::new();
        apply("/chats/123", &mut h);
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], PAGE_CSP);
        assert_eq!(h[header::X_FRAME_OPTIONS], "DENY");
        let mut h = HeaderMap::new();
        apply("/widget.js", &mut h);
        assert!(!h.contains_key(header::CONTENT_SECURITY_POLICY));
        assert_eq!(h[header::REFERRER_POLICY], "no-referrer");
    }

    #[test]
    fn a_handlers_own_policy_is_kept() {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("sandbox"),
        );
        apply("/api/v1/files/x", &mut h);
        assert_eq!(h[header::CONTENT_SECURITY_POLICY], "sandbox");
    }
}
