//! A user's alert e-mail address: set (a confirmation link is mailed first), shown, removed;
//! the link that confirms it and the one in every alert mail that unsubscribes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::{Deserialize, Serialize};
use sha2::Digest;
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::AuthUser;
use super::bodies::ErrorBody;
use super::error::ApiError;
use super::query::ApiQuery;
use crate::alerts::email::{MailError, Mailer, confirm_mail};
use crate::backoff::Backoff;
use crate::clock::unix_now_ms;
use crate::store::email::NewAddress;

/// Confirmation mails a user may ask for per hour (each goes to an address they typed).
const CONFIRMATIONS_PER_HOUR: i64 = 5;

fn mailer(app: &AppState) -> Result<&Mailer, ApiError> {
    app.alerts
        .mailer()
        .ok_or_else(|| ApiError::not_found("e-mail is off (email.smtp_url is empty)"))
}

fn token_hash(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// The body of `PUT /api/v1/me/email`.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"email": "host@example.com"}))]
pub struct EmailRequest {
    /// One mailbox, no display name, at most 254 bytes.
    #[schema(format = Email, max_length = 254)]
    email: String,
}

/// The user's alert address.
#[derive(Serialize, ToSchema)]
pub struct EmailAddress {
    pub email: String,
    /// Alerts go to it only once it is confirmed.
    pub confirmed: bool,
    pub confirmed_at_ms: Option<i64>,
    /// `sent` when a confirmation link was just mailed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmation: Option<String>,
}

/// What following a link from a mail did (a browser gets a small page instead).
#[derive(Serialize, ToSchema)]
pub struct LinkResult {
    /// `confirmed` or `unsubscribed`.
    pub result: String,
    pub message: String,
}

/// An address as the user typed it, checked: one mailbox, no display name, at most 254 bytes.
fn parse_address(body: &[u8]) -> Result<String, ApiError> {
    let invalid = |m: &str| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_email", m);
    let request: EmailRequest = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => invalid("the body is {\"email\": \"you@example.com\"}"),
        _ => ApiError::bad_request(format!("invalid JSON: {e}")),
    })?;
    let email = request.email.trim().to_owned();
    if email.len() > 254 || !email.contains('@') || email.parse::<lettre::Address>().is_err() {
        return Err(invalid("`email` is not an e-mail address"));
    }
    Ok(email)
}

/// `PUT /api/v1/me/email` `{"email"}`: store the address unconfirmed and mail it a confirmation
/// link; alerts go to it once the link is followed. 202.
#[utoipa::path(put, path = "/api/v1/me/email", tag = "delivery", security(("bearer" = [])),
    request_body = EmailRequest,
    responses(
        (status = 202, description = "Stored unconfirmed; a confirmation link is on its way", body = EmailAddress),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 404, description = "E-mail is off on this hub", body = ErrorBody),
        (status = 422, description = "Not one valid address", body = ErrorBody),
    ))]
pub async fn set(State(app): State<AppState>, AuthUser(claims): AuthUser, body: Bytes) -> Result<Response, ApiError> {
    let mailer = mailer(&app)?;
    let email = parse_address(&body)?;
    let now = unix_now_ms() as i64;
    let asked = app
        .store
        .email_sends_since(&claims.sub, &["confirm"], now - 3_600_000)
        .await?;
    if asked >= CONFIRMATIONS_PER_HOUR {
        let mut response = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("at most {CONFIRMATIONS_PER_HOUR} confirmation mails an hour"),
        )
        .into_response();
        response.headers_mut().insert(header::RETRY_AFTER, 3600.into());
        return Ok(response);
    }
    let token = hex::encode(rand::random::<[u8; 32]>());
    let unsubscribe = hex::encode(rand::random::<[u8; 24]>());
    let ttl_ms = app.settings.email.confirm_ttl_s as i64 * 1000;
    app.store
        .set_user_email(&NewAddress {
            user_id: &claims.sub,
            email: &email,
            confirm_token_hash: &token_hash(&token),
            confirm_expires_ms: now + ttl_ms,
            unsubscribe_token: &unsubscribe,
            now_ms: now,
        })
        .await?;
    app.store.record_email_send(&claims.sub, "confirm", now).await?;
    let link = mailer.link(&format!("/api/v1/me/email/confirm?token={token}"));
    let (alerts, to) = (app.alerts.clone(), email.clone());
    app.tracker.spawn(async move {
        let Some(mailer) = alerts.mailer() else { return };
        let backoff = Backoff::from_millis(1000, 30_000);
        for attempt in 0..4 {
            match mailer.send(&to, confirm_mail(&link)).await {
                Ok(()) => return,
                Err(MailError::Permanent(e)) => {
                    tracing::warn!(error = %e, "the confirmation mail was refused");
                    return;
                }
                Err(MailError::Transient(e)) => {
                    tracing::warn!(error = %e, attempt, "sending a confirmation mail failed; retrying");
                    tokio::time::sleep(backoff.wait(attempt)).await;
                }
            }
        }
    });
    let body = EmailAddress {
        email,
        confirmed: false,
        confirmed_at_ms: None,
        confirmation: Some("sent".into()),
    };
    Ok((StatusCode::ACCEPTED, Json(body)).into_response())
}

/// `GET /api/v1/me/email`: the address and whether it is confirmed; 404 when none is set.
#[utoipa::path(get, path = "/api/v1/me/email", tag = "delivery", security(("bearer" = [])),
    responses(
        (status = 200, description = "The address", body = EmailAddress),
        (status = 404, description = "No address is set, or e-mail is off", body = ErrorBody),
    ))]
pub async fn get(State(app): State<AppState>, AuthUser(claims): AuthUser) -> Result<Json<EmailAddress>, ApiError> {
    mailer(&app)?;
    let address = app
        .store
        .user_email(&claims.sub)
        .await?
        .ok_or_else(|| ApiError::not_found("no e-mail address is set"))?;
    Ok(Json(EmailAddress {
        email: address.email,
        confirmed: address.confirmed_at_ms.is_some(),
        confirmed_at_ms: address.confirmed_at_ms,
        confirmation: None,
    }))
}

/// `DELETE /api/v1/me/email`: no more alert mail. 204, or 404 when none was set.
#[utoipa::path(delete, path = "/api/v1/me/email", tag = "delivery", security(("bearer" = [])),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No address was set", body = ErrorBody),
    ))]
pub async fn delete(State(app): State<AppState>, AuthUser(claims): AuthUser) -> Result<StatusCode, ApiError> {
    if app.store.delete_user_email(&claims.sub).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("no e-mail address is set"))
    }
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenQuery {
    /// The token in the mail's link.
    token: String,
}

/// The answer to a link followed from a mail: a small page for a browser, JSON otherwise.
fn link_answer(headers: &HeaderMap, status: StatusCode, code: &'static str, message: &str) -> Response {
    let browser = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("text/html"));
    if browser {
        let page = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>GPUScout</title></head>\
             <body style=\"font-family:sans-serif\"><h2>GPUScout</h2><p>{message}</p><p><a href=\"/\">Open the dashboard</a></p></body></html>"
        );
        return (status, Html(page)).into_response();
    }
    if status.is_success() {
        let body = LinkResult {
            result: code.into(),
            message: message.into(),
        };
        return (status, Json(body)).into_response();
    }
    ApiError::new(status, code, message).into_response()
}

/// `GET /api/v1/me/email/confirm?token=…`: the link in the confirmation mail.
#[utoipa::path(get, path = "/api/v1/me/email/confirm", tag = "delivery", params(TokenQuery),
    responses(
        (status = 200, description = "Confirmed (an HTML page for a browser)", body = LinkResult),
        (status = 400, description = "No token", body = ErrorBody),
        (status = 404, description = "An invalid or expired link, or e-mail is off", body = ErrorBody),
        (status = 503, description = "The database cannot answer now", body = ErrorBody),
    ))]
pub async fn confirm(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<TokenQuery>,
) -> Result<Response, ApiError> {
    mailer(&app)?;
    let now = unix_now_ms() as i64;
    Ok(match app.store.confirm_user_email(&token_hash(&q.token), now).await? {
        Some(a) => link_answer(
            &headers,
            StatusCode::OK,
            "confirmed",
            &format!("{} is confirmed: alerts you send to e-mail arrive there.", a.email),
        ),
        None => link_answer(
            &headers,
            StatusCode::NOT_FOUND,
            "invalid_token",
            "This confirmation link is not valid or has expired; set the address again for a new one.",
        ),
    })
}

/// `GET` or `POST /api/v1/me/email/unsubscribe?token=…`: the link in every alert mail (and its
/// one-click `List-Unsubscribe-Post`): the address is removed.
#[utoipa::path(method(get, post), path = "/api/v1/me/email/unsubscribe", tag = "delivery", params(TokenQuery),
    responses(
        (status = 200, description = "Unsubscribed (an HTML page for a browser)", body = LinkResult),
        (status = 400, description = "No token", body = ErrorBody),
        (status = 404, description = "An invalid link", body = ErrorBody),
        (status = 503, description = "The database cannot answer now", body = ErrorBody),
    ))]
pub async fn unsubscribe(
    State(app): State<AppState>,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<TokenQuery>,
) -> Result<Response, ApiError> {
    Ok(if app.store.unsubscribe_email(&q.token).await? {
        link_answer(
            &headers,
            StatusCode::OK,
            "unsubscribed",
            "You will get no more alert mail. Set an address in the dashboard to get it again.",
        )
    } else {
        link_answer(
            &headers,
            StatusCode::NOT_FOUND,
            "invalid_token",
            "This unsubscribe link is not valid (the address may already be removed).",
        )
    })
}
