//! API keys for third-party programs: created (shown once), listed, revoked; and exchanged for
//! short-lived connection tokens (`POST /api/v1/token`) that carry the key's scopes.
//!
//! A key is `gsk_` and 32 random bytes in base62; the hub keeps only its SHA-256 and a short
//! prefix to show. Every token exchanged for one key carries the same `jti` (`key-<id>`), so
//! revoking the key revokes them all, on every node, through the token revocation the hub has.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::{AuthUser, key_hash, key_of};
use super::error::ApiError;
use crate::auth::{Claims, SCOPES, key_jti};
use crate::clock::{unix_now_ms, unix_now_s};
use crate::store::keys::KeyRow;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// A new key: `gsk_` and 32 random bytes in base62 (43 characters).
fn new_key() -> String {
    let bytes: [u8; 32] = rand::random();
    // Base62 of the 256-bit number, most significant digit first.
    let mut n = bytes.to_vec();
    let mut digits = Vec::new();
    while n.iter().any(|b| *b != 0) {
        let mut rem = 0u32;
        for b in n.iter_mut() {
            let acc = (rem << 8) | u32::from(*b);
            *b = (acc / 62) as u8;
            rem = acc % 62;
        }
        digits.push(BASE62[rem as usize]);
    }
    digits.resize(43, b'0');
    digits.reverse();
    format!("gsk_{}", String::from_utf8(digits).unwrap_or_default())
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
}

/// The body of `POST /api/v1/keys`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({"name": "price bot", "scopes": ["subscribe", "market:read"]}))]
pub struct KeyRequest {
    /// 1-100 characters, to recognise the key in lists.
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    name: String,
    /// What the key may do.
    #[schema(min_items = 1)]
    scopes: Vec<Scope>,
}

/// What an API key may do: subscribe to channels, read the market, read or write alert rules,
/// ask the advisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize, ToSchema)]
pub enum Scope {
    #[serde(rename = "subscribe")]
    Subscribe,
    #[serde(rename = "market:read")]
    MarketRead,
    #[serde(rename = "alerts:read")]
    AlertsRead,
    #[serde(rename = "alerts:write")]
    AlertsWrite,
    #[serde(rename = "advisor")]
    Advisor,
}

impl Scope {
    /// The scope as tokens carry it (one of [`SCOPES`]).
    fn as_str(self) -> &'static str {
        SCOPES[self as usize]
    }
}

/// An API key as lists show it (never the key itself).
#[derive(Serialize, ToSchema)]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    /// The key's first 12 characters (`gsk_` and 8 more).
    pub prefix: String,
    pub scopes: Vec<String>,
    pub created_at_ms: i64,
    pub last_used_ms: Option<i64>,
}

impl From<&KeyRow> for ApiKey {
    fn from(k: &KeyRow) -> Self {
        Self {
            id: k.id.clone(),
            name: k.name.clone(),
            prefix: k.prefix.clone(),
            scopes: k.scopes.split_whitespace().map(str::to_owned).collect(),
            created_at_ms: k.created_at_ms,
            last_used_ms: k.last_used_ms,
        }
    }
}

/// A new key: the key itself is in this answer only.
#[derive(Serialize, ToSchema)]
pub struct NewApiKey {
    #[serde(flatten)]
    pub listed: ApiKey,
    /// `gsk_` and 43 base62 characters. Keep it: the hub stores only its hash.
    pub key: String,
}

#[derive(Serialize, ToSchema)]
pub struct KeyList {
    pub keys: Vec<ApiKey>,
}

/// A connection token exchanged for a key.
#[derive(Serialize, ToSchema)]
pub struct ExchangedToken {
    /// A JWT for the WebSocket (`token` of the connect command) and for REST.
    pub token: String,
    /// Seconds since the epoch.
    pub expires_at: u64,
}

/// Only a user's own token manages keys (a key cannot make more keys).
fn own_token(claims: &Claims) -> Result<(), ApiError> {
    if claims.from_key() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "insufficient_scope",
            "API keys are managed with your own token, not with an API key",
        ));
    }
    Ok(())
}

/// `POST /api/v1/keys` `{name, scopes}`: the key is in the answer, once.
#[utoipa::path(post, path = "/api/v1/keys", tag = "keys", security(("bearer" = [])),
    request_body = KeyRequest,
    responses(
        (status = 201, description = "The new key, shown this once", body = NewApiKey),
        (status = 400, description = "The body is not JSON", body = super::bodies::ErrorBody),
        (status = 422, description = "A field is missing or out of range", body = super::bodies::ErrorBody),
    ))]
pub async fn create(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    body: Bytes,
) -> Result<(StatusCode, Json<NewApiKey>), ApiError> {
    own_token(&claims)?;
    let req: KeyRequest = serde_json::from_slice(&body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => invalid(format!("the body is {{\"name\", \"scopes\": [...]}}: {e}")),
        _ => ApiError::bad_request(format!("invalid JSON: {e}")),
    })?;
    let name = req.name.trim();
    if name.is_empty() || name.len() > 100 {
        return Err(invalid("`name` is 1-100 characters"));
    }
    let mut scopes: Vec<&str> = req.scopes.iter().map(|s| s.as_str()).collect();
    scopes.sort_unstable();
    scopes.dedup();
    if scopes.is_empty() {
        return Err(invalid(format!("`scopes` lists some of: {}", SCOPES.join(", "))));
    }
    let max = app.settings.tier(claims.tier).api_keys;
    let key = new_key();
    let now = unix_now_ms() as i64;
    let row = KeyRow {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: claims.sub.clone(),
        name: name.to_owned(),
        prefix: key[..12].to_owned(),
        key_hash: key_hash(&key),
        scopes: scopes.join(" "),
        created_at_ms: now,
        last_used_ms: None,
        revoked_at_ms: None,
    };
    // The key belongs to a user the store knows, at the tier their token says.
    app.store.upsert_user(&claims.sub, claims.tier.as_str(), now).await?;
    if !app.store.insert_key(&row, i64::from(max)).await? {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "limit_exceeded",
            format!("the {} tier allows {max} API keys", claims.tier),
        ));
    }
    let listed = ApiKey::from(&row);
    Ok((StatusCode::CREATED, Json(NewApiKey { listed, key })))
}

/// `GET /api/v1/keys`: the caller's live keys.
#[utoipa::path(get, path = "/api/v1/keys", tag = "keys", security(("bearer" = [])),
    responses((status = 200, description = "The caller's keys", body = KeyList)))]
pub async fn list(State(app): State<AppState>, AuthUser(claims): AuthUser) -> Result<Json<KeyList>, ApiError> {
    own_token(&claims)?;
    let keys = app.store.keys(&claims.sub).await?;
    Ok(Json(KeyList {
        keys: keys.iter().map(ApiKey::from).collect(),
    }))
}

/// `DELETE /api/v1/keys/{id}`: the key stops working, and so does every token exchanged for
/// it, on every node (its `jti` is revoked for as long as such a token can live).
#[utoipa::path(delete, path = "/api/v1/keys/{id}", tag = "keys", security(("bearer" = [])),
    params(("id" = String, Path, description = "The key's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such key of the caller's", body = super::bodies::ErrorBody),
    ))]
pub async fn revoke(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    own_token(&claims)?;
    if !app.store.revoke_key(&claims.sub, &id, unix_now_ms() as i64).await? {
        return Err(ApiError::not_found("no such key"));
    }
    let until = unix_now_s() + app.settings.auth.exchange_ttl_s + app.settings.auth.leeway_s + 60;
    let jti = key_jti(&id);
    app.store.revoke_token(&jti, until as i64).await?;
    if let Err(e) = app.hub.users().revoke(&jti, until).await {
        tracing::warn!(key = %id, error = %e, "announcing a key's revocation failed; its tokens end within their lifetime");
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/token` with `Authorization: Bearer gsk_…`: a connection token for the key's
/// owner, at their tier, carrying the key's scopes, valid `auth.exchange_ttl_s`.
#[utoipa::path(post, path = "/api/v1/token", tag = "keys", security(("api_key" = [])),
    responses(
        (status = 200, description = "A connection token carrying the key's scopes", body = ExchangedToken),
        (status = 401, description = "No key, or an unknown or revoked one", body = super::bodies::ErrorBody),
        (status = 501, description = "This hub verifies tokens of another issuer and mints none", body = super::bodies::ErrorBody),
        (status = 503, description = "The database cannot answer now", body = super::bodies::ErrorBody),
    ))]
pub async fn exchange(State(app): State<AppState>, headers: HeaderMap) -> Result<Json<ExchangedToken>, ApiError> {
    let (key, tier) = key_of(&app, &headers).await?;
    let scopes: Vec<String> = key.scopes.split_whitespace().map(str::to_owned).collect();
    let (token, expires_at) = app
        .hub
        .verifier
        .mint_for_key(&key.user_id, tier, &key.id, scopes, app.settings.auth.exchange_ttl_s)
        .map_err(|_| {
            ApiError::new(
                StatusCode::NOT_IMPLEMENTED,
                "exchange_unavailable",
                "this hub verifies tokens from another issuer and cannot mint them (auth.algorithm is not HS256)",
            )
        })?;
    Ok(Json(ExchangedToken { token, expires_at }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_scope_reads_as_the_name_tokens_carry() {
        for name in SCOPES {
            let scope: Scope = serde_json::from_value(serde_json::json!(name)).unwrap();
            assert_eq!(scope.as_str(), name);
        }
    }

    #[test]
    fn keys_are_long_random_base62() {
        let (a, b) = (new_key(), new_key());
        assert_ne!(a, b);
        assert_eq!(a.len(), 4 + 43, "{a}");
        assert!(
            a.starts_with("gsk_") && a[4..].bytes().all(|c| c.is_ascii_alphanumeric()),
            "{a}"
        );
        assert_eq!(key_hash(&a).len(), 64);
    }
}
