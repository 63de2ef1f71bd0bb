//! `GET /api/v1/conversations` and `GET /api/v1/conversations/{id}/messages`: the caller's advisor
//! conversations, for holders of a connection token (`Authorization: Bearer <JWT>`). Another user's
//! conversation is a 404, like one that does not exist.

use axum::Json;
use axum::extract::{Path, State};
use serde::Serialize;
use utoipa::ToSchema;

use super::AppState;
use super::auth::AuthUser;
use super::bodies::ErrorBody;
use super::error::ApiError;
use crate::store::advisor::{Conversation, Message};

/// Most conversations listed.
const LIST_LIMIT: i64 = 200;

#[derive(Serialize, ToSchema)]
pub struct Conversations {
    /// The most recently updated first, at most 200.
    pub conversations: Vec<Conversation>,
}

#[derive(Serialize, ToSchema)]
pub struct ConversationMessages {
    pub conversation: Conversation,
    /// Oldest first.
    pub messages: Vec<Message>,
}

#[utoipa::path(get, path = "/api/v1/conversations", tag = "advisor",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The caller's conversations", body = Conversations)))]
pub async fn conversations(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
) -> Result<Json<Conversations>, ApiError> {
    let conversations = app.store.conversations(&claims.sub, LIST_LIMIT).await?;
    Ok(Json(Conversations { conversations }))
}

#[utoipa::path(get, path = "/api/v1/conversations/{id}/messages", tag = "advisor",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "The conversation's id")),
    responses(
        (status = 200, description = "The conversation and its messages", body = ConversationMessages),
        (status = 404, description = "No such conversation of the caller's", body = ErrorBody),
    ))]
pub async fn messages(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<ConversationMessages>, ApiError> {
    let conversation = app
        .store
        .conversation(&id)
        .await?
        .filter(|c| c.user_id == claims.sub)
        .ok_or_else(|| ApiError::not_found("no such conversation"))?;
    let messages = app.store.messages(&conversation.id).await?;
    Ok(Json(ConversationMessages { conversation, messages }))
}
