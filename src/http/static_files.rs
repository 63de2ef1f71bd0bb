//! The dashboard (`web/`, at `/`) and the JavaScript SDK (`client-sdk/js/src/`, at `/sdk/`),
//! compiled into the binary so the hub serves them from anywhere. With `server.static_dir` set
//! (a checkout's root), they are read from disk instead, for working on them without rebuilding.
//!
//! Caching: every file carries an `ETag` (its SHA-256) and `no-cache`, so a browser revalidates
//! and gets a 304 while it is unchanged. `index.html` names its stylesheet and script with the
//! hash in the URL (`/app.js?v=<hash>`); a request with the current hash is answered
//! `immutable` for a year, as a new dashboard comes with new URLs. Compiled-in files are
//! compressed once (brotli, gzip), off the request path, and served in the encoding the client
//! accepts.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Component, Path, PathBuf};
use std::sync::{LazyLock, Once, OnceLock};

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

/// A file under `server.static_dir` (read on every request: for working on the files).
async fn load(app: &AppState, disk_root: &str, rel: &str) -> Option<Vec<u8>> {
    let rel = safe(rel)?;
    let dir = &app.settings.server.static_dir;
    tokio::fs::read(Path::new(dir).join(disk_root).join(&rel)).await.ok()
}

/// The hash of a file's bytes: the first 16 bytes of its SHA-256, in hex.
fn hash(body: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(&sha2::Sha256::digest(body)[..16])
}

/// A file ready to serve: its bytes, their hash, and (compiled-in files) the bytes compressed.
struct Asset {
    body: Vec<u8>,
    hash: String,
    br: Option<Vec<u8>>,
    gzip: Option<Vec<u8>>,
}

impl Asset {
    fn plain(body: Vec<u8>) -> Self {
        Self {
            hash: hash(&body),
            body,
            br: None,
            gzip: None,
        }
    }

    /// With its brotli and gzip forms, when they are smaller (images are not).
    fn compressed(body: Vec<u8>) -> Self {
        let mut br = Vec::new();
        let params = brotli::enc::BrotliEncoderParams {
            quality: 11,
            ..Default::default()
        };
        let br = brotli::BrotliCompress(&mut &body[..], &mut br, &params)
            .ok()
            .map(|_| br)
            .filter(|b| b.len() < body.len());
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        let gzip = gz
            .write_all(&body)
            .and_then(|()| gz.finish())
            .ok()
            .filter(|g| g.len() < body.len());
        Self {
            br,
            gzip,
            ..Self::plain(body)
        }
    }
}

/// The compiled-in files of `dir`, by path; `index.html` with its stylesheet and script named by
/// hash. Hashing them is quick and done on first use; compressing them (brotli at its best is
/// slow) runs once on a thread of its own, started then: until it is done the files are served
/// plain and the compression layer compresses each answer as it goes.
fn compiled(dir: &'static Dir<'static>) -> &'static HashMap<String, Asset> {
    static WEB_PLAIN: LazyLock<HashMap<String, Asset>> = LazyLock::new(|| assets(&WEB, false));
    static SDK_PLAIN: LazyLock<HashMap<String, Asset>> = LazyLock::new(|| assets(&SDK, false));
    static WEB_COMPRESSED: OnceLock<HashMap<String, Asset>> = OnceLock::new();
    static SDK_COMPRESSED: OnceLock<HashMap<String, Asset>> = OnceLock::new();
    static STARTED: Once = Once::new();
    STARTED.call_once(|| {
        std::thread::spawn(|| {
            let _ = WEB_COMPRESSED.set(assets(&WEB, true));
            let _ = SDK_COMPRESSED.set(assets(&SDK, true));
        });
    });
    let (plain, compressed) = if std::ptr::eq(dir, &WEB) {
        (&*WEB_PLAIN, &WEB_COMPRESSED)
    } else {
        (&*SDK_PLAIN, &SDK_COMPRESSED)
    };
    compressed.get().unwrap_or(plain)
}

fn assets(dir: &'static Dir<'static>, compress: bool) -> HashMap<String, Asset> {
    let mut files = Vec::new();
    collect(dir, &mut files);
    let hashes: Vec<(String, String)> = files.iter().map(|(p, b)| (p.clone(), hash(b))).collect();
    files
        .into_iter()
        .map(|(path, body)| {
            let body = if path == "index.html" {
                versioned(body, &hashes)
            } else {
                body
            };
            let asset = if compress {
                Asset::compressed(body)
            } else {
                Asset::plain(body)
            };
            (path, asset)
        })
        .collect()
}

fn collect(dir: &'static Dir<'static>, out: &mut Vec<(String, Vec<u8>)>) {
    for file in dir.files() {
        out.push((file.path().to_string_lossy().into_owned(), file.contents().to_vec()));
    }
    for sub in dir.dirs() {
        collect(sub, out);
    }
}

/// `index.html` with each `"/<file>"` it names that is one of `hashes` as `"/<file>?v=<hash>"`.
fn versioned(html: Vec<u8>, hashes: &[(String, String)]) -> Vec<u8> {
    let Ok(mut text) = String::from_utf8(html.clone()) else {
        return html;
    };
    for (path, hash) in hashes {
        text = text.replace(&format!("\"/{path}\""), &format!("\"/{path}?v={hash}\""));
    }
    text.into_bytes()
}

/// The file, or 304 when the client's copy (`If-None-Match`) is current; brotli or gzip when
/// the client accepts it and the file has that form. `no-cache` (browsers keep the file and
/// revalidate it, so a new dashboard is picked up at once and an unchanged one costs a 304),
/// or a year and `immutable` for a request naming the file's current hash (`?v=`).
fn respond(path: &str, asset: &Asset, uri: &Uri, request: &HeaderMap) -> Response {
    let accepts = |coding: &str| {
        request
            .get(header::ACCEPT_ENCODING)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.split(',')
                    .any(|c| c.split(';').next().is_some_and(|c| c.trim() == coding))
            })
    };
    let (coding, body) = match (&asset.br, &asset.gzip) {
        (Some(br), _) if accepts("br") => (Some("br"), br),
        (_, Some(gz)) if accepts("gzip") => (Some("gzip"), gz),
        _ => (None, &asset.body),
    };
    // Each encoding is its own representation, with its own strong validator.
    let tag = match coding {
        Some(c) => format!("\"{}-{c}\"", asset.hash),
        None => format!("\"{}\"", asset.hash),
    };
    let current = request
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag || t.trim() == "*"));
    let mut r = if current {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        (StatusCode::OK, body.clone()).into_response()
    };
    let h = r.headers_mut();
    if !current {
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type(path)));
        if let Some(c) = coding {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(c));
        }
    }
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    let pinned = uri.query().is_some_and(|q| {
        q.split('&')
            .any(|kv| kv.strip_prefix("v=") == Some(asset.hash.as_str()))
    });
    let cache = if pinned {
        "public, max-age=31536000, immutable"
    } else {
        "no-cache"
    };
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    h.insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    h.insert("x-content-type-options", HeaderValue::from_static("nosniff"));
    r
}

/// Serve `rel` of `embedded` (or of `disk_root` under `server.static_dir`), or `None`.
async fn serve(
    app: &AppState,
    embedded: &'static Dir<'static>,
    disk_root: &str,
    rel: &str,
    uri: &Uri,
    request: &HeaderMap,
) -> Option<Response> {
    if app.settings.server.static_dir.is_empty() {
        let asset = compiled(embedded).get(safe(rel)?.to_str()?)?;
        return Some(respond(rel, asset, uri, request));
    }
    let body = load(app, disk_root, rel).await?;
    Some(respond(rel, &Asset::plain(body), uri, request))
}

/// `/sdk/<file>`: the JavaScript SDK as ES modules.
pub async fn sdk(State(app): State<AppState>, uri: Uri, request: HeaderMap) -> Response {
    let rel = uri.path().trim_start_matches("/sdk/");
    match serve(&app, &SDK, "client-sdk/js/src", rel, &uri, &request).await {
        Some(response) => response,
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
    match serve(&app, &WEB, "web", rel, &uri, &request).await {
        Some(response) => response,
        None => ApiError::not_found("no such route").into_response(),
    }
}
