//! What every HTTP answer goes through, outermost first: a request id (`x-request-id`, the
//! client's own echoed or a new one), a span per request with one access line when it is
//! answered, CORS for the origins `server.cors_origins` names, the security headers, the request
//! count and latency by route and status (`gpuscout_http_requests_total`,
//! `gpuscout_http_request_duration_seconds`), and (on everything but the WebSocket upgrade) a
//! deadline and gzip/brotli compression.

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderName, HeaderValue, Method, Response, header};
use axum::middleware::Next;
use axum::response::IntoResponse;
use tower_http::compression::CompressionLayer;
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::TraceLayer;
use tracing::Span;

use super::AppState;
use super::error::ApiError;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The dashboard's Content-Security-Policy: its own scripts, styles and workers only, sockets to
/// this origin, never framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; worker-src 'self'; manifest-src 'self'; object-src 'none'; \
    base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// The routes a probe or scraper calls every few seconds: their access lines are at debug level.
fn quiet(path: &str) -> bool {
    matches!(path, "/healthz" | "/readyz" | "/metrics")
}

/// The span of one request: method, route (the pattern, not the raw path), request id, and the
/// user once a token is verified ([`record_user`]).
fn request_span(request: &Request) -> Span {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| request.uri().path().to_owned(), |m| m.as_str().to_owned());
    let id = request
        .headers()
        .get(&REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    tracing::info_span!("http", method = %request.method(), route, request_id = id, user = tracing::field::Empty)
}

/// One access line per request, in the request's span.
fn access_line<B>(response: &Response<B>, latency: Duration, _span: &Span) {
    let status = response.status().as_u16();
    let latency_ms = (latency.as_secs_f64() * 1e6).round() / 1e3;
    if response.extensions().get::<Quiet>().is_some() {
        tracing::debug!(target: "gpuscout::access", status, latency_ms, "request");
    } else {
        tracing::info!(target: "gpuscout::access", status, latency_ms, "request");
    }
}

/// Marks the answer of a [`quiet`] route.
#[derive(Clone, Copy)]
struct Quiet;

async fn mark_quiet(request: Request, next: Next) -> axum::response::Response {
    let is_quiet = quiet(request.uri().path());
    let mut response = next.run(request).await;
    if is_quiet {
        response.extensions_mut().insert(Quiet);
    }
    response
}

/// The route label of requests no route matched: the dashboard's files and unknown paths.
const FALLBACK_ROUTE: &str = "fallback";

/// Count and time each answer by its route pattern and status, as the client got it.
async fn http_metrics(State(app): State<AppState>, request: Request, next: Next) -> axum::response::Response {
    let route = request.extensions().get::<MatchedPath>().cloned();
    let started = Instant::now();
    let response = next.run(request).await;
    let route = route.as_ref().map_or(FALLBACK_ROUTE, MatchedPath::as_str);
    app.hub
        .metrics
        .observe_http(route, response.status().as_u16(), started.elapsed());
    response
}

/// Note the verified user on the request's span (and so on its access line).
pub fn record_user(user: &str) {
    Span::current().record("user", user);
}

/// A request that takes longer than `server.request_timeout_ms` is answered 503 with the JSON
/// error body (the work is dropped).
async fn deadline(State(app): State<AppState>, request: Request, next: Next) -> axum::response::Response {
    let limit = Duration::from_millis(app.settings.server.request_timeout_ms);
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!("the request took longer than {} ms", limit.as_millis()),
        )
        .into_response(),
    }
}

/// `X-Content-Type-Options`, `Referrer-Policy` on every answer; the Content-Security-Policy on
/// the dashboard's pages (HTML), which set what they may load.
async fn security_headers(request: Request, next: Next) -> axum::response::Response {
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    let html = h
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|t| t.starts_with("text/html"));
    if html {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
        h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    response
}

/// CORS for `server.cors_origins` (`*`: any origin); none configured, none sent: browsers then
/// allow this origin only.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, REQUEST_ID])
            .expose_headers([
                REQUEST_ID,
                header::RETRY_AFTER,
                HeaderName::from_static("ratelimit-limit"),
                HeaderName::from_static("ratelimit-remaining"),
                HeaderName::from_static("ratelimit-reset"),
            ])
            .max_age(Duration::from_secs(600)),
    )
}

/// The layers of the routes that answer HTTP (not the WebSocket upgrade): the deadline and
/// compression.
pub fn plain_http(router: axum::Router<AppState>, state: &AppState) -> axum::Router<AppState> {
    router
        .layer(axum::middleware::from_fn_with_state(state.clone(), deadline))
        .layer(CompressionLayer::new().gzip(true).br(true))
}

/// The layers of every route, the WebSocket upgrade included.
pub fn every_route(router: axum::Router, state: &AppState) -> axum::Router {
    let router = router
        .layer(axum::middleware::from_fn_with_state(state.clone(), http_metrics))
        .layer(axum::middleware::from_fn(security_headers))
        .layer(axum::middleware::from_fn(mark_quiet));
    let router = match cors(&state.settings.server.cors_origins) {
        Some(layer) => router.layer(layer),
        None => router,
    };
    router
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(request_span)
                .on_request(())
                .on_response(access_line)
                .on_failure(()),
        )
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
}
