//! The server API in Centrifugo's HTTP API form (`/api/publish`, `/api/broadcast`, `/api/history`,
//! `/api/info`), so its server libraries (`cent` on PyPI, `cent.js`) work, plus the development
//! token endpoint.
//!
//! Like Centrifugo, a request that reached the API gets HTTP 200 with `{"result":...}` or
//! `{"error":{"code":N,"message":...}}` using the protocol's numeric codes; a missing or wrong key
//! gets 401, a body that is not the expected JSON 400.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::query::ApiQuery;
use crate::auth::constant_time_eq;
use crate::bus::{HistoryQuery, StreamPosition};
use crate::channels::ChannelKind;
use crate::clock::unix_now_s;
use crate::config::ApiSettings;
use crate::hub::Hub;
use crate::hub::client::VERSION;
use crate::protocol::ProtoError;
use crate::tier::Tier;

fn check_key(app: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let key = app.settings.api.key.expose_secret();
    if key.is_empty() {
        return Err(ApiError::not_found("the server API is disabled (api.key is empty)"));
    }
    let given = headers.get("x-api-key").and_then(|v| v.to_str().ok()).or_else(|| {
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

/// Why a server API call failed: HTTP-level (key, route) or a protocol error in the body.
pub enum ServerApiError {
    Http(ApiError),
    /// The body is not the JSON the method expects: HTTP 400 with code 107.
    BadBody(String),
    /// The request was understood and refused: HTTP 200 with the protocol's code, as Centrifugo does.
    Proto(ProtoError),
}

impl From<ApiError> for ServerApiError {
    fn from(e: ApiError) -> Self {
        Self::Http(e)
    }
}

impl From<ProtoError> for ServerApiError {
    fn from(e: ProtoError) -> Self {
        Self::Proto(e)
    }
}

impl IntoResponse for ServerApiError {
    fn into_response(self) -> Response {
        match self {
            Self::Http(e) => e.into_response(),
            Self::BadBody(message) => {
                let body = json!({"error": {"code": 107, "message": format!("bad request: {message}")}});
                (StatusCode::BAD_REQUEST, Json(body)).into_response()
            }
            Self::Proto(e) => Json(api_error(&e)).into_response(),
        }
    }
}

type ApiResult = Result<Json<Value>, ServerApiError>;

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, ServerApiError> {
    serde_json::from_slice(body).map_err(|e| ServerApiError::BadBody(e.to_string()))
}

fn api_error(e: &ProtoError) -> Value {
    json!({"error": {"code": e.code, "message": e.message}})
}

fn result(value: Value) -> ApiResult {
    Ok(Json(json!({ "result": value })))
}

fn required<T>(value: Option<T>, what: &str) -> Result<T, ProtoError> {
    value.ok_or_else(|| ProtoError::bad_request().with_message(format!("{what} required")))
}

#[derive(Deserialize)]
pub struct PublishBody {
    #[serde(default)]
    channel: String,
    data: Option<Box<RawValue>>,
}

/// Whether the server API may publish to `channel` (error 102 for a name the hub does not serve,
/// 103 for a kind the settings keep from it).
fn may_publish(api: &ApiSettings, channel: &str) -> Result<(), ProtoError> {
    let refused = |setting: &str, what: &str| {
        ProtoError::permission_denied().with_message(format!(
            "{what} are fed by the hub; the server API publishes there only with {setting} = true"
        ))
    };
    match ChannelKind::parse(channel) {
        None => Err(ProtoError::unknown_channel()),
        Some(ChannelKind::Alerts(_) | ChannelKind::Advisor(_) | ChannelKind::Portfolio(_))
            if !api.allow_personal_channels =>
        {
            Err(refused("api.allow_personal_channels", "users' personal channels"))
        }
        Some(ChannelKind::Alerts(_) | ChannelKind::Advisor(_) | ChannelKind::Portfolio(_)) => Ok(()),
        Some(_) if !api.allow_market_channels => Err(refused("api.allow_market_channels", "market channels")),
        Some(_) => Ok(()),
    }
}

async fn publish_one(app: &AppState, channel: &str, data: &RawValue) -> Result<Value, ProtoError> {
    if channel.is_empty() {
        return Err(ProtoError::bad_request().with_message("channel required"));
    }
    may_publish(&app.settings.api, channel)?;
    let hub = &app.hub;
    let position = hub.publish(channel, data).await.map_err(|e| match e {
        crate::bus::BusError::InvalidData => ProtoError::bad_request().with_message("data must be JSON"),
        crate::bus::BusError::Unavailable(_) => ProtoError::internal().with_message("bus unavailable, retry"),
    })?;
    Ok(json!({"offset": position.offset, "epoch": position.epoch}))
}

pub async fn publish(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    check_key(&app, &headers)?;
    let req: PublishBody = parse(&body)?;
    let data = required(req.data, "data")?;
    result(publish_one(&app, &req.channel, &data).await?)
}

#[derive(Deserialize)]
pub struct BroadcastBody {
    #[serde(default)]
    channels: Vec<String>,
    data: Option<Box<RawValue>>,
}

pub async fn broadcast(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    check_key(&app, &headers)?;
    let req: BroadcastBody = parse(&body)?;
    let data = required(req.data, "data")?;
    if req.channels.is_empty() {
        return Err(ProtoError::bad_request().with_message("channels required").into());
    }
    let mut responses = Vec::with_capacity(req.channels.len());
    for channel in &req.channels {
        responses.push(match publish_one(&app, channel, &data).await {
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

pub async fn history(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    check_key(&app, &headers)?;
    let req: HistoryBody = parse(&body)?;
    if req.channel.is_empty() {
        return Err(ProtoError::bad_request().with_message("channel required").into());
    }
    if !Hub::known_channel(&req.channel) {
        return Err(ProtoError::unknown_channel().into());
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
        let top = app.hub.bus.history(&req.channel, HistoryQuery::default()).await;
        if let Ok(top) = top
            && !s.epoch.is_empty()
            && top.position.epoch != s.epoch
        {
            return Err(ProtoError::unrecoverable_position().into());
        }
    }
    let query = HistoryQuery {
        since,
        limit,
        reverse: req.reverse,
    };
    let h = app
        .hub
        .bus
        .history(&req.channel, query)
        .await
        .map_err(|_| ProtoError::internal())?;
    let publications: Vec<Value> = h
        .publications
        .iter()
        .map(|p| {
            let data: Value = serde_json::from_slice(&p.data).unwrap_or(Value::Null);
            json!({"data": data, "offset": p.offset})
        })
        .collect();
    result(json!({"publications": publications, "offset": h.position.offset, "epoch": h.position.epoch}))
}

pub async fn info(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    check_key(&app, &headers)?;
    // No parameters: an empty body or a JSON object (what `cent` sends), nothing else.
    if !body.iter().all(u8::is_ascii_whitespace) {
        let _: serde_json::Map<String, Value> = parse(&body)?;
    }
    let hub = &app.hub;
    let subs = hub.metrics.subscriptions.load(std::sync::atomic::Ordering::Relaxed);
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

#[derive(Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct DevTokenQuery {
    /// The user id (default `demo`).
    #[param(pattern = "^[A-Za-z0-9_-]{1,64}$")]
    user: Option<String>,
    /// The tier (default `professional`).
    #[param(value_type = Option<Tier>)]
    tier: Option<String>,
    /// Seconds, 10 to 604800 (default 3600).
    #[param(minimum = 10, maximum = 604800)]
    ttl: Option<u64>,
}

/// A token minted by the development login.
#[derive(Serialize, utoipa::ToSchema)]
pub struct DevToken {
    pub token: String,
    pub user: String,
    pub tier: Tier,
    /// Seconds since the epoch.
    pub expires_at: u64,
}

/// A development login: a token for any user and tier. Only with `auth.dev_mode = true`.
#[utoipa::path(method(get, post), path = "/api/v1/dev/token", tag = "development", params(DevTokenQuery),
    responses(
        (status = 200, description = "A connection token", body = DevToken),
        (status = 400, description = "An unknown tier or a parameter of the wrong type", body = super::bodies::ErrorBody),
        (status = 404, description = "The development login is off (auth.dev_mode = false)", body = super::bodies::ErrorBody),
    ))]
pub async fn dev_token(
    State(app): State<AppState>,
    ApiQuery(q): ApiQuery<DevTokenQuery>,
) -> Result<Json<DevToken>, ApiError> {
    if !app.settings.auth.dev_mode {
        return Err(ApiError::not_found("dev mode is off (auth.dev_mode = false)"));
    }
    let user = q.user.unwrap_or_else(|| "demo".into());
    let tier: Tier = q
        .tier
        .as_deref()
        .unwrap_or("professional")
        .parse()
        .map_err(ApiError::bad_request)?;
    let ttl = q.ttl.unwrap_or(3600);
    if !(10..=7 * 24 * 3600).contains(&ttl) {
        return Err(ApiError::bad_request("`ttl` is in seconds, from 10 to 604800"));
    }
    let token = app
        .hub
        .verifier
        .mint(&user, tier, ttl)
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    Ok(Json(DevToken {
        token,
        user,
        tier,
        expires_at: unix_now_s() + ttl,
    }))
}

#[derive(Deserialize)]
pub struct RevokeTokenBody {
    #[serde(default)]
    uid: String,
    /// Seconds since the epoch until which the token id stays revoked (its expiry); default: a week.
    #[serde(default)]
    expire_at: Option<u64>,
}

/// Revoke a connection token by its id (`jti`): connects and refreshes with it are refused, and
/// the connections that use it are closed (3500) on every node.
pub async fn revoke_token(State(app): State<AppState>, headers: HeaderMap, body: Bytes) -> ApiResult {
    check_key(&app, &headers)?;
    let req: RevokeTokenBody = parse(&body)?;
    if req.uid.is_empty() || req.uid.len() > 128 {
        return Err(ProtoError::bad_request()
            .with_message("uid (the token's jti) required")
            .into());
    }
    let now = crate::clock::unix_now_s();
    let expire_at = req.expire_at.unwrap_or(now + 7 * 24 * 3600);
    if expire_at <= now {
        return Err(ProtoError::bad_request()
            .with_message("expire_at must be in the future")
            .into());
    }
    // Stored first: a node that restarts refuses the token too.
    let stored = i64::try_from(expire_at).unwrap_or(i64::MAX);
    if let Err(e) = app.store.revoke_token(&req.uid, stored).await {
        tracing::error!(error = %e, "storing a revoked token failed");
        return Err(ProtoError::internal()
            .with_message("database unavailable, retry")
            .into());
    }
    app.hub
        .users()
        .revoke(&req.uid, expire_at)
        .await
        .map_err(|_| ProtoError::internal().with_message("bus unavailable, retry"))?;
    result(json!({}))
}
