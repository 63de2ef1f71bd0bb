//! `GET /api/v1/market/snapshot` and `GET /api/v1/market/history`, for holders of a connection
//! token (`Authorization: Bearer <JWT>`). The free tier sees the last minute snapshot, as on
//! `market:summary.1m`; other tiers the current aggregates.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::AuthUser;
use super::error::ApiError;
use super::query::ApiQuery;
use crate::channels::MARKET_SUMMARY_1M;
use crate::clock::unix_now_ms;
use crate::tier::Tier;

pub async fn snapshot(State(app): State<AppState>, AuthUser(claims): AuthUser) -> Result<Json<Value>, ApiError> {
    let now = unix_now_ms() as i64;
    let state = app.market.read();
    if claims.tier == Tier::Free {
        return Ok(Json(state.snapshot(MARKET_SUMMARY_1M, now).unwrap_or(Value::Null)));
    }
    let models: Vec<Value> = state
        .aggregates()
        .values()
        .map(|a| serde_json::to_value(a).unwrap_or_default())
        .collect();
    let sources: Vec<Value> = state
        .health()
        .values()
        .map(|h| serde_json::to_value(h).unwrap_or_default())
        .collect();
    Ok(Json(
        json!({"source": state.label(), "ts": now, "models": models, "sources": sources}),
    ))
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    model: Option<String>,
    /// Milliseconds since the epoch; default: `to` minus 24 hours.
    from: Option<i64>,
    /// Milliseconds since the epoch; default: now.
    to: Option<i64>,
    /// Seconds per point (≥ 60); the last stored minute of each step is returned. Default 60.
    step: Option<i64>,
}

const MAX_RANGE_MS: i64 = 90 * 24 * 3600 * 1000;

pub async fn history(
    State(app): State<AppState>,
    _user: AuthUser,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<Value>, ApiError> {
    let unprocessable = |m: &str| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_query", m);
    let model = q
        .model
        .filter(|m| !m.is_empty())
        .ok_or_else(|| unprocessable("`model` is required"))?;
    let to = q.to.unwrap_or_else(|| unix_now_ms() as i64);
    let from = q.from.unwrap_or(to.saturating_sub(24 * 3600 * 1000));
    let step_s = q.step.unwrap_or(60);
    if from > to {
        return Err(unprocessable("`from` must not be after `to`"));
    }
    // Checked: `from` and `to` may be any i64, and their difference then overflows.
    if to.checked_sub(from).is_none_or(|range| range > MAX_RANGE_MS) {
        return Err(unprocessable("the range may span at most 90 days"));
    }
    if !(60..=86_400 * 7).contains(&step_s) {
        return Err(unprocessable("`step` is in seconds, from 60 to 604800"));
    }
    let points = app.store.market_history(&model, from, to).await?;
    // Keep the last point of each step-wide bucket.
    let step_ms = step_s * 1000;
    let mut out: Vec<Value> = Vec::new();
    let mut last_bucket = None;
    for p in points {
        let bucket = (p.ts_ms - from) / step_ms;
        let value = serde_json::to_value(&p).unwrap_or_default();
        if last_bucket == Some(bucket) {
            if let Some(last) = out.last_mut() {
                *last = value;
            }
        } else {
            out.push(value);
            last_bucket = Some(bucket);
        }
    }
    Ok(Json(
        json!({"model": model, "from": from, "to": to, "step": step_s, "points": out}),
    ))
}
