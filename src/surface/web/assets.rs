//! CSS and the vendored htmx, compiled into the binary and served with long cache
//! lifetimes. Pages link them with `?v=<content hash>`, so a new build busts caches.

use std::sync::LazyLock;

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

const APP_CSS: &str = include_str!("../../../static/app.css");
const HTMX_JS: &[u8] = include_bytes!("../../../static/htmx.min.js");
const APP_JS: &str = include_str!("../../../static/app.js");
const FAVICON: &str = include_str!("../../../static/favicon.svg");

static VERSION: LazyLock<String> = LazyLock::new(|| {
    let mut hasher = Sha256::new();
    hasher.update(APP_CSS.as_bytes());
    hasher.update(HTMX_JS);
    hasher.update(APP_JS.as_bytes());
    hex::encode(hasher.finalize())[..12].to_string()
});

/// The content hash appended to asset URLs.
pub fn version() -> &'static str {
    VERSION.as_str()
}

/// `GET /static/{file}`.
pub async fn serve(Path(file): Path<String>) -> Response {
    let (body, content_type): (&'static [u8], &str) = match file.as_str() {
        "app.css" => (APP_CSS.as_bytes(), "text/css; charset=utf-8"),
        "app.js" => (APP_JS.as_bytes(), "text/javascript; charset=utf-8"),
        "htmx.min.js" => (HTMX_JS, "text/javascript; charset=utf-8"),
        "favicon.svg" => (FAVICON.as_bytes(), "image/svg+xml"),
        _ => return super::not_found_page(),
    };
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "public, max-age=31536000, immutable")],
        body,
    )
        .into_response()
}

/// `GET /favicon.ico`: browsers ask for it on every page whatever the `<link rel="icon">`
/// says; the SVG icon answers (browsers read the type, not the name), cached for a day.
pub async fn favicon() -> Response {
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "image/svg+xml"), (header::CACHE_CONTROL, "public, max-age=86400")],
        FAVICON,
    )
        .into_response()
}
