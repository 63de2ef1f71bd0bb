//! Authentication of REST requests as an extractor: a handler that takes [`AuthUser`] runs only
//! for a verified connection token (`Authorization: Bearer <JWT>`) or a live API key
//! (`Authorization: Bearer gsk_…`); otherwise the request is answered 401 with the error body of
//! [`ApiError`]. A key, or a token exchanged for one, carries scopes: the route's scope
//! ([`required_scope`]) must be among them (403 `insufficient_scope` otherwise).

use axum::extract::FromRequestParts;
use axum::http::HeaderMap;
use axum::http::request::Parts;
use sha2::Digest;

use super::AppState;
use super::error::ApiError;
use crate::auth::{AuthError, Claims};
use crate::clock::unix_now_ms;
use crate::store::keys::KeyRow;
use crate::tier::Tier;

/// The caller's verified claims.
#[derive(Debug, Clone)]
pub struct AuthUser(pub Claims);

impl FromRequestParts<AppState> for AuthUser {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        let token = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .ok_or_else(|| ApiError::unauthorized("Authorization: Bearer <token> required"))?;
        if token.trim().starts_with("gsk_") {
            let (key, tier) = key_of(app, &parts.headers).await?;
            let claims = Claims {
                sub: key.user_id,
                tier,
                exp: 0,
                iat: None,
                jti: Some(crate::auth::key_jti(&key.id)),
                scopes: Some(key.scopes.split_whitespace().map(str::to_owned).collect()),
                iss: None,
                aud: None,
            };
            super::layers::record_user(&claims.sub);
            check_scope(&claims, parts)?;
            app.limits.check_user(&claims.sub, claims.tier)?;
            return Ok(AuthUser(claims));
        }
        let claims = app.hub.verifier.verify_fresh(token.trim()).await.map_err(|e| match e {
            AuthError::Expired => ApiError::unauthorized("token expired"),
            _ => ApiError::unauthorized("invalid token"),
        })?;
        // A revoked token is refused here as on the socket (on every node: the user state is shared).
        if let Some(jti) = &claims.jti {
            match app.hub.users().is_revoked(jti).await {
                Ok(false) => {}
                Ok(true) => return Err(ApiError::unauthorized("token revoked")),
                Err(e) => {
                    tracing::warn!(error = %e, "checking a token's revocation failed");
                    return Err(ApiError::unavailable("cannot check the token now, retry"));
                }
            }
        }
        super::layers::record_user(&claims.sub);
        check_scope(&claims, parts)?;
        app.limits.check_user(&claims.sub, claims.tier)?;
        // The tier the user's tokens carry now decides whether their rules may post to webhooks.
        if !claims.from_key() {
            app.alerts.note_tier(&claims.sub, claims.tier);
        }
        Ok(AuthUser(claims))
    }
}

/// The scope a REST route needs from an API key (`None`: a user's own token only).
pub fn required_scope(method: &axum::http::Method, path: &str) -> Option<&'static str> {
    let read = method == axum::http::Method::GET;
    if path.starts_with("/api/v1/market/") && read {
        Some("market:read")
    } else if path.starts_with("/api/v1/alerts/") {
        Some(if read { "alerts:read" } else { "alerts:write" })
    } else if path.starts_with("/api/v1/conversations") && read {
        Some("advisor")
    } else {
        None
    }
}

fn check_scope(claims: &Claims, parts: &Parts) -> Result<(), ApiError> {
    if !claims.from_key() {
        return Ok(());
    }
    let path = parts.uri.path();
    match required_scope(&parts.method, path) {
        Some(scope) if claims.allows(scope) => Ok(()),
        Some(scope) => Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "insufficient_scope",
            format!("this API key lacks the `{scope}` scope"),
        )),
        // Key management is in keys.rs (it refuses keys itself); the rest needs the user's token.
        None if path.starts_with("/api/v1/keys") => Ok(()),
        None => Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "insufficient_scope",
            "this needs your own token, not an API key",
        )),
    }
}

/// The stored form of a key.
pub fn key_hash(key: &str) -> String {
    hex::encode(sha2::Sha256::digest(key.as_bytes()))
}

/// The live key in `Authorization: Bearer gsk_…`, with its owner's stored tier.
pub async fn key_of(app: &AppState, headers: &HeaderMap) -> Result<(KeyRow, Tier), ApiError> {
    let key = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(str::trim)
        .filter(|k| k.starts_with("gsk_"))
        .ok_or_else(|| ApiError::unauthorized("Authorization: Bearer gsk_… (an API key) required"))?;
    let row = app
        .store
        .key_by_hash(&key_hash(key))
        .await?
        .ok_or_else(|| ApiError::unauthorized("unknown or revoked API key"))?;
    let tier = app
        .store
        .user_tier(&row.user_id)
        .await?
        .and_then(|t| t.parse().ok())
        .unwrap_or(Tier::Free);
    if let Err(e) = app.store.touch_key(&row.id, unix_now_ms() as i64).await {
        tracing::debug!(error = %e, "noting a key's use failed");
    }
    Ok((row, tier))
}
