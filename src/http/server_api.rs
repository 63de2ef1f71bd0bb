//! The server API in Centrifugo's HTTP API form (`/api/publish`, `/api/broadcast`, `/api/history`,
//! `/api/info`), so its server libraries (`cent` on PyPI, `cent.js`) work, plus the development
//! token endpoint.
//!
//! Like Centrifugo, a request that reached the API gets HTTP 200 with `{"result":...}` or
//! `{"error":{"code":N,"message":...}}` using the protocol's numeric codes; a missing or wrong key
//! gets 401, a body that is not the expected JSON 400.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::auth::{Tier, constant_time_eq, unix_now_s};
use crate::bus::{HistoryQuery, StreamPosition};
use crate::hub::Hub;
use crate::hub::client::VERSION;
use crate::protocol::ProtoError;

fn check_key(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let key = app.settings.api.key.expose_secret();
    if key.is_empty() {
        return Err(ApiError::not_found(
            "the server API is disabled (api.key is empty)",
        ));
    }
    let given = headers
        .get("x-api-key")
        .and_then(|v| v.to_str().ok())
        .or_else(|| {
            headers
                .get("authorization")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.strip_prefix("apikey "))
        });
    match given {
        Some(g) if constant_time_eq(g.trim().as_bytes(), key.as_bytes()) => Ok(()),
        Some(_) => Err(ApiError::unauthorized("wrong API key")),
        None => Err(ApiError::unauthorized("X-API-Key header required")),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, Response> {
    serde_json::from_slice(body).map_err(|e| {
        let body = json!({"error": {"code": 107, "message": format!("bad request: {e}")}});
        (StatusCode::BAD_REQUEST, Json(body)).into_response()
    })
}

fn api_error(e: &ProtoError) -> Value {
    json!({"error": {"code": e.code, "message": e.message}})
}

fn result(value: Value) -> Response {
    Json(json!({ "result": value })).into_response()
}

#[derive(Deserialize)]
pub struct PublishBody {
    #[serde(default)]
    channel: String,
    data: Option<Box<RawValue>>,
}

async fn publish_one(hub: &Hub, channel: &str, data: &RawValue) -> Result<Value, ProtoError> {
    if channel.is_empty() {
        return Err(ProtoError::bad_request().with_message("channel required"));
    }
    if !Hub::known_channel(channel) {
        return Err(ProtoError::unknown_channel());
    }
    let position = hub.publish(channel, data).await.map_err(|e| match e {
        crate::bus::BusError::InvalidData => {
            ProtoError::bad_request().with_message("data must be JSON")
        }
        crate::bus::BusError::Unavailable(_) => ProtoError::internal(),
    })?;
    Ok(json!({"offset": position.offset, "epoch": position.epoch}))
}

pub async fn publish(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = check_key(&app, &headers) {
        return e.into_response();
    }
    let req: PublishBody = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(data) = req.data else {
        return Json(api_error(
            &ProtoError::bad_request().with_message("data required"),
        ))
        .into_response();
    };
    match publish_one(&app.hub, &req.channel, &data).await {
        Ok(v) => result(v),
        Err(e) => Json(api_error(&e)).into_response(),
    }
}

#[derive(Deserialize)]
pub struct BroadcastBody {
    #[serde(default)]
    channels: Vec<String>,
    data: Option<Box<RawValue>>,
}

pub async fn broadcast(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = check_key(&app, &headers) {
        return e.into_response();
    }
    let req: BroadcastBody = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    let Some(data) = req.data else {
        return Json(api_error(
            &ProtoError::bad_request().with_message("data required"),
        ))
        .into_response();
    };
    if req.channels.is_empty() {
        return Json(api_error(
            &ProtoError::bad_request().with_message("channels required"),
        ))
        .into_response();
    }
    let mut responses = Vec::with_capacity(req.channels.len());
    for channel in &req.channels {
        responses.push(match publish_one(&app.hub, channel, &data).await {
            Ok(v) => json!({ "result": v }),
            Err(e) => api_error(&e),
        });
    }
    result(json!({ "responses": responses }))
}

#[derive(Deserialize)]
pub struct HistoryBody {
    #[serde(default)]
    channel: String,
    /// 0: only the position; negative: everything kept.
    #[serde(default)]
    limit: i64,
    since: Option<SinceBody>,
    #[serde(default)]
    reverse: bool,
}

#[derive(Deserialize)]
pub struct SinceBody {
    #[serde(default)]
    offset: u64,
    #[serde(default)]
    epoch: String,
}

pub async fn history(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> Response {
    if let Err(e) = check_key(&app, &headers) {
        return e.into_response();
    }
    let req: HistoryBody = match parse(&body) {
        Ok(r) => r,
        Err(r) => return r,
    };
    if req.channel.is_empty() {
        return Json(api_error(
            &ProtoError::bad_request().with_message("channel required"),
        ))
        .into_response();
    }
    if !Hub::known_channel(&req.channel) {
        return Json(api_error(&ProtoError::unknown_channel())).into_response();
    }
    let max = app.settings.bus.history_size;
    let limit = if req.limit < 0 {
        max
    } else {
        (req.limit as usize).min(max)
    };
    let since = req.since.map(|s| StreamPosition {
        offset: s.offset,
        epoch: s.epoch,
    });
    if let Some(s) = &since {
        // A position from another epoch cannot be continued from.
        let top = app
            .hub
            .bus
            .history(&req.channel, HistoryQuery::default())
            .await;
        if let Ok(top) = top
            && !s.epoch.is_empty()
            && top.position.epoch != s.epoch
        {
            return Json(api_error(&ProtoError::unrecoverable_position())).into_response();
        }
    }
    let query = HistoryQuery {
        since,
        limit,
        reverse: req.reverse,
    };
    match app.hub.bus.history(&req.channel, query).await {
        Ok(h) => {
            let publications: Vec<Value> = h
                .publications
                .iter()
                .map(|p| {
                    let data: Value = serde_json::from_slice(&p.data).unwrap_or(Value::Null);
                    json!({"data": data, "offset": p.offset})
                })
                .collect();
            result(
                json!({"publications": publications, "offset": h.position.offset, "epoch": h.position.epoch}),
            )
        }
        Err(_) => Json(api_error(&ProtoError::internal())).into_response(),
    }
}

pub async fn info(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(e) = check_key(&app, &headers) {
        return e.into_response();
    }
    let hub = &app.hub;
    let subs = hub
        .metrics
        .subscriptions
        .load(std::sync::atomic::Ordering::Relaxed);
    result(json!({"nodes": [{
        "uid": hub.node_id(),
        "name": "gpuscout",
        "version": VERSION,
        "num_clients": hub.num_clients(),
        "num_users": hub.num_users(),
        "num_channels": hub.num_channels(),
        "num_subs": subs,
        "uptime": hub.uptime_s(),
    }]}))
}

#[derive(Deserialize)]
pub struct DevTokenQuery {
    user: Option<String>,
    tier: Option<String>,
    ttl: Option<u64>,
}

/// A development login: a token for any user and tier. Only with `auth.dev_mode = true`.
pub async fn dev_token(
    State(app): State<AppState>,
    Query(q): Query<DevTokenQuery>,
) -> Result<Response, ApiError> {
    if !app.settings.auth.dev_mode {
        return Err(ApiError::not_found(
            "dev mode is off (auth.dev_mode = false)",
        ));
    }
    let user = q.user.unwrap_or_else(|| "demo".into());
    let tier: Tier = q
        .tier
        .as_deref()
        .unwrap_or("professional")
        .parse()
        .map_err(ApiError::bad_request)?;
    let ttl = q.ttl.unwrap_or(3600).clamp(10, 7 * 24 * 3600);
    let token = app
        .hub
        .verifier
        .mint(&user, tier, ttl)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(
        Json(json!({"token": token, "user": user, "tier": tier, "expires_at": unix_now_s() + ttl}))
            .into_response(),
    )
}
