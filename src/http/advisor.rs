//! `GET /api/v1/conversations` and `GET /api/v1/conversations/{id}/messages`: the caller's advisor
//! conversations, for holders of a connection token (`Authorization: Bearer <JWT>`). Another user's
//! conversation is a 404, like one that does not exist.

use axum::Json;
use axum::extract::{Path, State};
use serde_json::{Value, json};

use super::AppState;
use super::auth::AuthUser;
use super::error::ApiError;

/// Most conversations listed.
const LIST_LIMIT: i64 = 200;

pub async fn conversations(State(app): State<AppState>, AuthUser(claims): AuthUser) -> Result<Json<Value>, ApiError> {
    let list = app.store.conversations(&claims.sub, LIST_LIMIT).await?;
    Ok(Json(json!({"conversations": list})))
}

pub async fn messages(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let conversation = app
        .store
        .conversation(&id)
        .await?
        .filter(|c| c.user_id == claims.sub)
        .ok_or_else(|| ApiError::not_found("no such conversation"))?;
    let messages = app.store.messages(&conversation.id).await?;
    Ok(Json(json!({"conversation": conversation, "messages": messages})))
}
