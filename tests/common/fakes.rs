//! Local fake upstreams (500.farm, Vast.ai, RunPod) on free ports. They serve real captured payloads
//! or data built from them, honour `If-None-Match` like the 500.farm exporter (exact match → 304),
//! gzip when asked, and fail on demand the ways real upstreams fail.

use std::collections::{HashMap, VecDeque};
use std::io::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// A failure to serve instead of the current body, once.
#[derive(Debug, Clone)]
pub enum Failure {
    Status(u16),
    TooManyRequests {
        retry_after_s: u64,
    },
    /// Answer after this long (longer than the hub's timeout: a timeout).
    Hang(Duration),
    /// The start of the body only, with a 200.
    Truncated,
    /// Not JSON at all.
    Invalid,
}

#[derive(Default)]
struct Route {
    body: String,
    version: u64,
    failures: VecDeque<Failure>,
}

#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub headers: HeaderMap,
    pub status: u16,
}

#[derive(Default)]
struct Inner {
    routes: HashMap<String, Route>,
    seen: Vec<Seen>,
}

#[derive(Clone, Default)]
pub struct Fake(Arc<Mutex<Inner>>);

pub struct FakeServer {
    pub url: String,
    pub fake: Fake,
}

impl FakeServer {
    pub async fn start() -> Self {
        let fake = Fake::default();
        let url = super::serve(axum::Router::new().fallback(serve).with_state(fake.clone())).await;
        Self { url, fake }
    }
}

impl Fake {
    /// Serve `body` at `path` from now on (a new version: a new ETag).
    pub fn set(&self, path: &str, body: impl Into<String>) {
        let mut inner = self.0.lock().unwrap();
        let route = inner.routes.entry(path.to_owned()).or_default();
        route.body = body.into();
        route.version += 1;
    }

    /// Serve these failures, one per request, before the body again.
    pub fn fail(&self, path: &str, failures: impl IntoIterator<Item = Failure>) {
        let mut inner = self.0.lock().unwrap();
        inner
            .routes
            .entry(path.to_owned())
            .or_default()
            .failures
            .extend(failures);
    }

    pub fn seen(&self) -> Vec<Seen> {
        self.0.lock().unwrap().seen.clone()
    }

    pub fn count(&self, path: &str, status: u16) -> usize {
        self.seen()
            .iter()
            .filter(|s| s.path == path && s.status == status)
            .count()
    }
}

fn gzip(body: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(body).unwrap();
    e.finish().unwrap()
}

async fn serve(State(fake): State<Fake>, request: Request) -> Response {
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let headers = request.headers().clone();
    let _body: Bytes = axum::body::to_bytes(request.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    let (failure, body, etag) = {
        let mut inner = fake.0.lock().unwrap();
        match inner.routes.get_mut(&path) {
            None => (None, None, String::new()),
            Some(route) => {
                let f = route.failures.pop_front();
                (f, Some(route.body.clone()), format!("\"v{:016x}\"", route.version))
            }
        }
    };
    let response = match (failure, body) {
        (_, None) => (StatusCode::NOT_FOUND, "404 page not found").into_response(),
        (Some(Failure::Status(code)), _) => {
            (StatusCode::from_u16(code).unwrap(), r#"{"error":"upstream failure"}"#).into_response()
        }
        (Some(Failure::TooManyRequests { retry_after_s }), _) => (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, retry_after_s.to_string())],
            "slow down",
        )
            .into_response(),
        (Some(Failure::Hang(d)), _) => {
            tokio::time::sleep(d).await;
            (StatusCode::OK, "{}").into_response()
        }
        (Some(Failure::Truncated), Some(body)) => {
            let cut = body.len() / 2;
            (
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/json")],
                body[..cut].to_owned(),
            )
                .into_response()
        }
        (Some(Failure::Invalid), _) => (StatusCode::OK, "<html>maintenance</html>").into_response(),
        (None, Some(body)) => {
            // Like the exporter: If-None-Match compared byte for byte.
            if headers.get(header::IF_NONE_MATCH).and_then(|v| v.to_str().ok()) == Some(etag.as_str()) {
                (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response()
            } else {
                let gz = headers
                    .get(header::ACCEPT_ENCODING)
                    .and_then(|v| v.to_str().ok())
                    .is_some_and(|v| v.contains("gzip"));
                let mut r = if gz {
                    (StatusCode::OK, gzip(body.as_bytes())).into_response()
                } else {
                    (StatusCode::OK, body).into_response()
                };
                let h = r.headers_mut();
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                h.insert(header::ETAG, HeaderValue::from_str(&etag).unwrap());
                h.insert(
                    header::LAST_MODIFIED,
                    HeaderValue::from_static("Sat, 28 Nov 2026 00:00:00 GMT"),
                );
                if gz {
                    h.insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                }
                r
            }
        }
    };
    fake.0.lock().unwrap().seen.push(Seen {
        method,
        path,
        headers,
        status: response.status().as_u16(),
    });
    response
}

/// A `/machines` response built from offers (500.farm's shape: one record per machine).
pub fn machines_body(offers: &[gpuscout_hub::market::Offer]) -> String {
    let records: Vec<serde_json::Value> = offers
        .iter()
        .map(|o| {
            serde_json::json!({
                "machine_id": o.machine_id.as_deref().unwrap_or("0").parse::<u64>().unwrap_or(0),
                "host_id": o.host_id.as_deref().unwrap_or("0").parse::<u64>().unwrap_or(0),
                "gpu_name": o.model_name,
                "num_gpus": o.num_gpus,
                "num_gpus_rented": o.gpus_rented,
                "dph_base": o.price_per_gpu_hour_usd * o.num_gpus as f64,
                "verification": if o.verified { "verified" } else { "unverified" },
                "verified": o.verified,
                "hosting_type": if o.datacenter { 1 } else { 0 },
                "geolocation": o.region,
                "reliability2": o.reliability,
                "gpu_ram": o.vram_gb.map(|g| g * 1024.0),
                "chunks": [],
                "min_chunk": 1,
            })
        })
        .collect();
    serde_json::json!({
        "url": "/machines",
        "timestamp": "2026-11-28T00:00:00.123456789Z",
        "count": records.len(),
        "note": "Sorted from newest to oldest.",
        "offers": records,
    })
    .to_string()
}
