//! The dashboard (`web/`, at `/`) and the JavaScript SDK (`client-sdk/js/src/`, at `/sdk/`),
//! compiled into the binary so the hub serves them from anywhere. With `server.static_dir` set
//! (a checkout's root), they are read from disk instead, for working on them without rebuilding.

use std::path::{Component, Path, PathBuf};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, Uri, header};
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

fn respond(path: &str, body: Vec<u8>) -> Response {
    let mut r = (StatusCode::OK, body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

/// `/sdk/<file>`: the JavaScript SDK as ES modules.
pub async fn sdk(State(app): State<AppState>, uri: Uri) -> Response {
    let rel = uri.path().trim_start_matches("/sdk/");
    match load(&app, &SDK, "client-sdk/js/src", rel).await {
        Some(body) => respond(rel, body),
        None => ApiError::not_found("no such SDK file").into_response(),
    }
}

/// Everything else: the dashboard's files (`/` is `index.html`), or a JSON 404.
pub async fn web(State(app): State<AppState>, uri: Uri) -> Response {
    let path = uri.path();
    if path.starts_with("/api/") {
        return ApiError::not_found("no such route").into_response();
    }
    let rel = match path.trim_start_matches('/') {
        "" => "index.html",
        other => other,
    };
    match load(&app, &WEB, "web", rel).await {
        Some(body) => respond(rel, body),
        None => ApiError::not_found("no such route").into_response(),
    }
}
