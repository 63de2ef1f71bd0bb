//! Web Push: what a browser needs before it subscribes.

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;

/// `GET /api/v1/push/vapid-public-key`: the key a browser passes to
/// `pushManager.subscribe({applicationServerKey})`; 404 while Web Push is off.
pub async fn vapid_public_key(State(app): State<AppState>) -> Result<Json<Value>, ApiError> {
    let push = &app.settings.push;
    if !push.enabled() {
        return Err(ApiError::not_found("Web Push is off (push.vapid_public_key is empty)"));
    }
    Ok(Json(json!({"public_key": push.vapid_public_key})))
}
