//! Liveness, readiness and metrics.

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::AppState;
use crate::market::state::SourceState;

/// The process is up and serving HTTP.
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready when the bus and the database answer and every critical task runs (`tasks` lists the
/// ones that died: the node is then on its way out).
pub async fn readyz(State(app): State<AppState>) -> impl IntoResponse {
    let bus = app.hub.bus.ready().await;
    let db = app.store.ping().await.is_ok();
    let dead = app.tasks.dead();
    let ready = bus && db && dead.is_empty();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let up = |ok: bool| if ok { "ok" } else { "down" };
    let body = json!({
        "status": if ready { "ready" } else { "not_ready" },
        "checks": {"bus": up(bus), "database": up(db), "tasks": up(dead.is_empty())},
        "dead_tasks": dead,
    });
    (status, Json(body))
}

/// Prometheus text exposition.
pub async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let hub = &app.hub;
    let channels = hub.num_channels() as f64;
    let users = hub.num_users() as f64;
    let uptime = hub.uptime_s() as f64;
    let mut text = hub.metrics.render(&[
        ("gpuscout_channels", "Channels with local subscribers.", channels),
        ("gpuscout_users", "Distinct users connected to this node.", users),
        ("gpuscout_uptime_seconds", "Seconds since the node started.", uptime),
        (
            "gpuscout_leader",
            "1 while this node is the leader (polls, evaluates alerts, writes snapshots).",
            f64::from(u8::from(hub.is_leader())),
        ),
        (
            "gpuscout_leader_term",
            "Fencing term of this node's current or last leader lease (0: never led, or one node).",
            hub.leader_term() as f64,
        ),
    ]);
    source_metrics(&app, &mut text);
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        text,
    )
}

/// Per-source health gauges, labelled by source.
fn source_metrics(app: &AppState, out: &mut String) {
    use std::fmt::Write as _;
    let now = crate::clock::unix_now_ms() as i64;
    let state = app.market.read();
    let health = state.health();
    // None: no sample for that source.
    type Gauge = fn(&crate::market::state::SourceHealth, i64) -> Option<f64>;
    let gauges: [(&str, &str, Gauge); 5] = [
        (
            "gpuscout_source_up",
            "1 when the source's last poll succeeded.",
            |h, _| Some(f64::from(u8::from(h.state == SourceState::Ok))),
        ),
        (
            "gpuscout_source_stale",
            "1 when the source's data is older than its stale age.",
            |h, _| Some(f64::from(u8::from(h.stale))),
        ),
        (
            "gpuscout_source_offers",
            "Offers in the source's last successful poll.",
            |h, _| Some(f64::from(h.offers)),
        ),
        (
            "gpuscout_source_consecutive_failures",
            "Failed polls in a row.",
            |h, _| Some(f64::from(h.consecutive_failures)),
        ),
        (
            "gpuscout_source_data_age_seconds",
            "Seconds since the source's last successful poll (absent before the first).",
            |h, now| h.last_success_ms.map(|t| (now - t) as f64 / 1000.0),
        ),
    ];
    for (name, help, value) in gauges {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (source, h) in health {
            if let Some(v) = value(h, now) {
                let _ = writeln!(out, "{name}{{source=\"{source}\"}} {v}");
            }
        }
    }
}
