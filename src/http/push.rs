//! Web Push: the key a browser needs to subscribe, and the subscriptions it hands over.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::AuthUser;
use super::bodies::ErrorBody;
use super::error::ApiError;
use crate::clock::unix_now_ms;
use crate::store::push::PushSubscription;
use crate::upstream::check_user_url;

/// `GET /api/v1/push/vapid-public-key`: the key a browser passes to
/// `pushManager.subscribe({applicationServerKey})`; 404 while Web Push is off.
#[utoipa::path(get, path = "/api/v1/push/vapid-public-key", tag = "delivery",
    responses(
        (status = 200, description = "The VAPID public key", body = VapidKey),
        (status = 404, description = "Web Push is off on this hub", body = ErrorBody),
    ))]
pub async fn vapid_public_key(State(app): State<AppState>) -> Result<Json<VapidKey>, ApiError> {
    let push = &app.settings.push;
    if !push.enabled() {
        return Err(ApiError::not_found("Web Push is off (push.vapid_public_key is empty)"));
    }
    Ok(Json(VapidKey {
        public_key: push.vapid_public_key.clone(),
    }))
}

/// Most push subscriptions a user keeps (browsers and devices).
const MAX_SUBSCRIPTIONS: i64 = 20;

/// The browser's `PushSubscription` JSON (`subscription.toJSON()`).
#[derive(Deserialize, ToSchema)]
pub struct SubscriptionRequest {
    /// The push service's URL for this browser.
    endpoint: String,
    keys: SubscriptionKeys,
}

#[derive(Deserialize, ToSchema)]
pub struct SubscriptionKeys {
    /// The browser's P-256 public key (65 bytes, base64url).
    p256dh: String,
    /// The 16-byte authentication secret (base64url).
    auth: String,
}

/// The key for `pushManager.subscribe({applicationServerKey})`.
#[derive(Serialize, ToSchema)]
pub struct VapidKey {
    /// The P-256 public key, base64url.
    pub public_key: String,
}

#[derive(Serialize, ToSchema)]
pub struct SubscriptionList {
    pub subscriptions: Vec<PushSubscription>,
}

fn enabled(app: &AppState) -> Result<(), ApiError> {
    if app.settings.push.enabled() {
        Ok(())
    } else {
        Err(ApiError::not_found("Web Push is off (push.vapid_public_key is empty)"))
    }
}

/// Check a subscription: an endpoint the hub may post to (the webhooks' address guard) and the
/// browser's keys (the 65-byte P-256 point and the 16-byte authentication secret, base64url).
fn check(req: &SubscriptionRequest, app: &AppState) -> Result<(), ApiError> {
    use base64::Engine;
    let invalid = |m: &str| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_subscription", m);
    let a = &app.settings.alerts;
    if req.endpoint.len() > 2000 {
        return Err(invalid("`endpoint` is too long"));
    }
    check_user_url(&req.endpoint, a.webhook_allow_http, a.webhook_allow_private)
        .map_err(|e| invalid(&format!("`endpoint` {e}")))?;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let decode = |s: &str| b64.decode(s.trim_end_matches('=')).ok();
    if !decode(&req.keys.p256dh).is_some_and(|k| k.len() == 65 && k[0] == 4) {
        return Err(invalid(
            "`keys.p256dh` must be the 65-byte P-256 public key in base64url",
        ));
    }
    if decode(&req.keys.auth).is_none_or(|k| k.len() != 16) {
        return Err(invalid("`keys.auth` must be the 16-byte secret in base64url"));
    }
    Ok(())
}

/// `POST /api/v1/push/subscriptions`: store the browser's subscription (201; the same endpoint
/// again updates its keys).
#[utoipa::path(post, path = "/api/v1/push/subscriptions", tag = "delivery", security(("bearer" = [])),
    request_body = SubscriptionRequest,
    responses(
        (status = 201, description = "Stored", body = PushSubscription),
        (status = 404, description = "Web Push is off on this hub", body = ErrorBody),
        (status = 422, description = "Not a PushSubscription, or an endpoint the hub may not post to", body = ErrorBody),
    ))]
pub async fn subscribe(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    body: Bytes,
) -> Result<(StatusCode, Json<PushSubscription>), ApiError> {
    enabled(&app)?;
    let req: SubscriptionRequest = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_subscription",
            format!("a PushSubscription JSON: {e}"),
        )
    })?;
    check(&req, &app)?;
    let subscription = PushSubscription {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: claims.sub.clone(),
        endpoint: req.endpoint,
        p256dh: req.keys.p256dh,
        auth: req.keys.auth,
        created_at_ms: unix_now_ms() as i64,
    };
    let saved = app
        .store
        .save_push_subscription(&subscription, MAX_SUBSCRIPTIONS)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::FORBIDDEN,
                "limit_exceeded",
                format!("at most {MAX_SUBSCRIPTIONS} push subscriptions per user"),
            )
        })?;
    Ok((StatusCode::CREATED, Json(saved)))
}

/// `GET /api/v1/push/subscriptions`: the user's subscriptions (id, endpoint, created).
#[utoipa::path(get, path = "/api/v1/push/subscriptions", tag = "delivery", security(("bearer" = [])),
    responses(
        (status = 200, description = "The caller's subscriptions", body = SubscriptionList),
        (status = 404, description = "Web Push is off on this hub", body = ErrorBody),
    ))]
pub async fn list(State(app): State<AppState>, AuthUser(claims): AuthUser) -> Result<Json<SubscriptionList>, ApiError> {
    enabled(&app)?;
    let subscriptions = app.store.push_subscriptions(&claims.sub).await?;
    Ok(Json(SubscriptionList { subscriptions }))
}

/// `DELETE /api/v1/push/subscriptions/{id}`: 204, or 404 for one that is not the user's.
#[utoipa::path(delete, path = "/api/v1/push/subscriptions/{id}", tag = "delivery", security(("bearer" = [])),
    params(("id" = String, Path, description = "The subscription's id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such subscription of the caller's, or Web Push is off", body = ErrorBody),
    ))]
pub async fn unsubscribe(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    enabled(&app)?;
    if !app.store.delete_push_subscription(&claims.sub, &id).await? {
        return Err(ApiError::not_found("no such subscription"));
    }
    Ok(StatusCode::NO_CONTENT)
}
