//! `GET /api/v1/conversations` and `GET /api/v1/conversations/{id}/messages`: the caller's advisor
//! conversations, for holders of a connection token (`Authorization: Bearer <JWT>`). Another user's
//! conversation is a 404, like one that does not exist.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::market::bearer_claims;

/// Most conversations listed.
const LIST_LIMIT: i64 = 200;

fn database(e: impl std::fmt::Display) -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "database", e.to_string())
}

pub async fn conversations(State(app): State<AppState>, headers: HeaderMap) -> Result<Json<Value>, ApiError> {
    let claims = bearer_claims(&app, &headers)?;
    let list = app
        .store
        .conversations(&claims.sub, LIST_LIMIT)
        .await
        .map_err(database)?;
    Ok(Json(json!({"conversations": list})))
}

pub async fn messages(
    State(app): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let claims = bearer_claims(&app, &headers)?;
    let conversation = app
        .store
        .conversation(&id)
        .await
        .map_err(database)?
        .filter(|c| c.user_id == claims.sub)
        .ok_or_else(|| ApiError::not_found("no such conversation"))?;
    let messages = app.store.messages(&conversation.id).await.map_err(database)?;
    Ok(Json(json!({"conversation": conversation, "messages": messages})))
}
