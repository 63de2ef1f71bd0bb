//! The dashboard (`web/`, at `/`) and the JavaScript SDK (`client-sdk/js/src/`, at `/sdk/`),
//! compiled into the binary so the hub serves them from anywhere. With `server.static_dir` set
//! (a checkout's root), they are read from disk instead, for working on them without rebuilding.

use std::path::{Component, Path, PathBuf};

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use include_dir::{Dir, include_dir};

use super::AppState;
use super::error::ApiError;

static WEB: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/web");
static SDK: Dir<'static> = include_dir!("$CARGO_MANIFEST_DIR/client-sdk/js/src");

fn content_type(path: &str) -> &'static str {
    match Path::new(path).extension().and_then(|e| e.to_str()) {
        Some("html") => "text/html; charset=utf-8",
        Some("js" | "mjs") => "text/javascript; charset=utf-8",
        Some("css") => "text/css; charset=utf-8",
        Some("json" | "map") => "application/json",
        Some("svg") => "image/svg+xml",
        Some("png") => "image/png",
        Some("ico") => "image/x-icon",
        Some("ts") => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    }
}

/// A relative path with no `..`, or `None`.
fn safe(rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    p.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| p.to_path_buf())
}

async fn load(app: &AppState, embedded: &'static Dir<'static>, disk_root: &str, rel: &str) -> Option<Vec<u8>> {
    let rel = safe(rel)?;
    let dir = &app.settings.server.static_dir;
    if !dir.is_empty() {
        return tokio::fs::read(Path::new(dir).join(disk_root).join(&rel)).await.ok();
    }
    embedded.get_file(&rel).map(|f| f.contents().to_vec())
}

/// A strong validator of a file's bytes: the first 16 bytes of its SHA-256, quoted.
fn etag(body: &[u8]) -> String {
    use sha2::Digest;
    format!("\"{}\"", hex::encode(&sha2::Sha256::digest(body)[..16]))
}

/// The file, or 304 when the client's copy (`If-None-Match`) is current. `no-cache`: browsers
/// keep the file and revalidate it, so a new dashboard is picked up at once and an unchanged one
/// costs a 304.
fn respond(path: &str, body: Vec<u8>, request: &HeaderMap) -> Response {
    let tag = etag(&body);
    let current = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut r = if current {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, body).into_response()
    };
    let h = r.headers_mut();
    if !current {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    }
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

/// `/sdk/<file>`: the JavaScript SDK as ES modules.
pub async fn sdk(State(app): State<AppState>, uri: Uri, request: HeaderMap) -> Response {
    let rel = uri.path().trim_start_matches("/sdk/");
    match load(&app, &SDK, "client-sdk/js/src", rel).await {
        Some(body) => respond(rel, body, &request),
        None => ApiError::not_found("no such SDK file").into_response(),
    }
}

/// Everything else: the dashboard's files (`/` is `index.html`), or a JSON 404.
pub async fn web(State(app): State<AppState>, uri: Uri, request: HeaderMap) -> Response {
    let path = uri.path();
    if path.starts_with("/api/") {
        return ApiError::not_found("no such route").into_response();
    }
    let rel = match path.trim_start_matches('/') {
        "" => "index.html",
        other => other,
    };
    match load(&app, &WEB, "web", rel).await {
        Some(body) => respond(rel, body, &request),
        None => ApiError::not_found("no such route").into_response(),
    }
}
