//! Authentication of REST requests as an extractor: a handler that takes [`AuthUser`] runs only
//! for a verified connection token (`Authorization: Bearer <JWT>`); otherwise the request is
//! answered 401 with the error body of [`ApiError`].

use axum::extract::FromRequestParts;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::auth::{AuthError, Claims};

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
        let claims = app.hub.verifier.verify(token.trim()).map_err(|e| match e {
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
        // The tier the user's tokens carry now decides whether their rules may post to webhooks.
        app.alerts.note_tier(&claims.sub, claims.tier);
        Ok(AuthUser(claims))
    }
}
