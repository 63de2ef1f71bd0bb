//! `GET /api/v1/market/snapshot` and `GET /api/v1/market/history`, for holders of a connection
//! token (`Authorization: Bearer <JWT>`). The free tier sees the last minute snapshot, as on
//! `market:summary.1m`; other tiers the current aggregates.

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::AuthUser;
use super::bodies::{ChannelSnapshot, ErrorBody};
use super::error::ApiError;
use super::query::ApiQuery;
use crate::channels::MARKET_SUMMARY_1M;
use crate::clock::unix_now_ms;
use crate::market::aggregate::ModelAggregate;
use crate::market::state::SourceHealth;
use crate::store::MarketPoint;
use crate::tier::Tier;

/// The market now: every model's aggregates and every source's health.
#[derive(Serialize, ToSchema)]
pub struct MarketSnapshot {
    /// The sources the numbers come from (`500.farm`, `simulated`, …).
    pub source: String,
    pub ts: i64,
    pub models: Vec<ModelAggregate>,
    pub sources: Vec<SourceHealth>,
}

/// The free tier gets the last minute's `market:summary.1m` snapshot; the others the market now.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
pub enum SnapshotAnswer {
    Live(MarketSnapshot),
    Minute(ChannelSnapshot),
}

/// `GET /api/v1/market/snapshot`.
#[utoipa::path(get, path = "/api/v1/market/snapshot", tag = "market",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The market now (the free tier: as of the last minute)", body = SnapshotAnswer)))]
pub async fn snapshot(State(app): State<AppState>, AuthUser(claims): AuthUser) -> Json<SnapshotAnswer> {
    let now = unix_now_ms() as i64;
    let state = app.market.read();
    if claims.tier == Tier::Free {
        let minute = state.snapshot(MARKET_SUMMARY_1M, now).unwrap_or(Value::Null);
        return Json(SnapshotAnswer::Minute(ChannelSnapshot(minute)));
    }
    Json(SnapshotAnswer::Live(MarketSnapshot {
        source: state.label(),
        ts: now,
        models: state.aggregates().values().cloned().collect(),
        sources: state.health().values().cloned().collect(),
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct HistoryQuery {
    /// The model's slug (`rtx-4090`).
    #[param(required, min_length = 1)]
    model: Option<String>,
    /// Milliseconds since the epoch; default: `to` minus 24 hours.
    from: Option<i64>,
    /// Milliseconds since the epoch; default: now.
    to: Option<i64>,
    /// Seconds per point; the last stored point of each step is returned. Default 60; at least
    /// 3600 for an hourly answer.
    #[param(minimum = 60, maximum = 604800)]
    step: Option<i64>,
}

const MAX_RANGE_MS: i64 = 731 * 24 * 3600 * 1000;

/// A model's stored minutes over a range.
#[derive(Serialize, ToSchema)]
pub struct History {
    pub model: String,
    pub from: i64,
    pub to: i64,
    /// Seconds per point.
    pub step: i64,
    /// `minute`: stored minutes; `hour`: the hours' averages (ranges longer than 2 days, or
    /// reaching past `store.market_snapshot_retention_days`).
    pub resolution: Resolution,
    pub points: Vec<MarketPoint>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Resolution {
    Minute,
    Hour,
}

/// Ranges longer than this are answered from hourly rows.
const MINUTE_RANGE_MS: i64 = 2 * 24 * 3600 * 1000;

/// `GET /api/v1/market/history?model=&from=&to=&step=`.
#[utoipa::path(get, path = "/api/v1/market/history", tag = "market",
    security(("bearer" = []), ("api_key" = [])), params(HistoryQuery),
    responses(
        (status = 200, description = "The model's points, oldest first", body = History),
        (status = 400, description = "A parameter of the wrong type", body = ErrorBody),
        (status = 422, description = "A parameter out of range", body = ErrorBody),
    ))]
pub async fn history(
    State(app): State<AppState>,
    _user: AuthUser,
    ApiQuery(q): ApiQuery<HistoryQuery>,
) -> Result<Json<History>, ApiError> {
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
        return Err(unprocessable("the range may span at most 731 days"));
    }
    if !(60..=86_400 * 7).contains(&step_s) {
        return Err(unprocessable("`step` is in seconds, from 60 to 604800"));
    }
    let now = unix_now_ms() as i64;
    let minutes_kept_from = now - i64::from(app.settings.store.market_snapshot_retention_days) * 24 * 3600 * 1000;
    let resolution = if to - from > MINUTE_RANGE_MS || from < minutes_kept_from {
        Resolution::Hour
    } else {
        Resolution::Minute
    };
    let (points, step_s) = match resolution {
        Resolution::Minute => (app.store.market_history(&model, from, to).await?, step_s),
        Resolution::Hour => (
            app.store.market_history_hourly(&model, from, to).await?,
            step_s.max(3600),
        ),
    };
    let out = last_of_each_step(points, from, step_s * 1000);
    Ok(Json(History {
        model,
        from,
        to,
        step: step_s,
        resolution,
        points: out,
    }))
}

/// The last point of each `step_ms`-wide bucket counted from `from`.
fn last_of_each_step(points: Vec<MarketPoint>, from: i64, step_ms: i64) -> Vec<MarketPoint> {
    let mut out: Vec<MarketPoint> = Vec::new();
    let mut last_bucket = None;
    for p in points {
        let bucket = (p.ts_ms - from) / step_ms;
        if last_bucket == Some(bucket) {
            if let Some(last) = out.last_mut() {
                *last = p;
            }
        } else {
            out.push(p);
            last_bucket = Some(bucket);
        }
    }
    out
}
