//! Liveness, readiness and metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;

/// The process is up and serving HTTP.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready when the bus and the database answer.
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let bus = app.hub.bus.ready().await;
    let db = app.store.ping().await.is_ok();
    let status = if bus && db {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "status": if bus && db { "ready" } else { "not_ready" },
        "checks": {"bus": if bus { "ok" } else { "down" }, "database": if db { "ok" } else { "down" }},
    });
    (status, Json(body))
}

/// Prometheus text exposition.
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let hub = &app.hub;
    let channels = hub.num_channels() as f64;
    let users = hub.num_users() as f64;
    let uptime = hub.uptime_s() as f64;
    let text = hub.metrics.render(&[
        ("gpuscout_channels", "Channels with local subscribers.", channels),
        ("gpuscout_users", "Distinct users connected to this node.", users),
        ("gpuscout_uptime_seconds", "Seconds since the node started.", uptime),
    ]);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
}
