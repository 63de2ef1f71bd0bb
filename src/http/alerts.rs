//! `/api/v1/alerts`: a user's alert rules and fired alerts, with their connection token
//! (`Authorization: Bearer <JWT>`). Another user's rule or alert is 404, never 403: its existence
//! is not disclosed.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::AppState;
use super::auth::AuthUser;
use super::error::ApiError;
use crate::alerts::{Condition, Rule, WebhookFormat};
use crate::auth::Claims;
use crate::clock::unix_now_ms;
use crate::market::models::canonical_slug;

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_rule", message)
}

fn rule_json(rule: &Rule) -> Value {
    serde_json::to_value(rule).unwrap_or_default()
}

/// Build a rule from a request body, checking every field.
fn parse_rule(app: &AppState, claims: &Claims, body: &[u8], id: String, created_at_ms: i64) -> Result<Rule, ApiError> {
    let mut fields: Map<String, Value> = match serde_json::from_slice(body) {
        Ok(Value::Object(m)) => m,
        Ok(_) => return Err(invalid("the body must be a JSON object")),
        Err(e) => return Err(ApiError::bad_request(format!("invalid JSON: {e}"))),
    };
    let name = match fields.remove("name") {
        Some(Value::String(s)) if !s.trim().is_empty() && s.len() <= 100 => s.trim().to_owned(),
        _ => return Err(invalid("`name` is required (1-100 characters)")),
    };
    let cooldown_s = match fields.remove("cooldown_s") {
        None => app.settings.alerts.default_cooldown_s as i64,
        Some(v) => match v.as_i64() {
            Some(c) if (60..=30 * 86_400).contains(&c) => c,
            _ => return Err(invalid("`cooldown_s` must be from 60 to 2592000 seconds")),
        },
    };
    let enabled = match fields.remove("enabled") {
        None => true,
        Some(Value::Bool(b)) => b,
        Some(_) => return Err(invalid("`enabled` must be true or false")),
    };
    let webhook = fields.remove("webhook");
    let (webhook_url, webhook_format) = match webhook {
        None | Some(Value::Null) => (None, None),
        Some(w) => {
            if !app.settings.tier(claims.tier).webhooks {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "limit_exceeded",
                    format!("webhooks are not part of the {} tier", claims.tier),
                ));
            }
            let url = w["url"].as_str().unwrap_or_default();
            if !(url.starts_with("https://") || url.starts_with("http://")) || url.len() > 2000 {
                return Err(invalid("`webhook.url` must be an http(s) URL"));
            }
            let format: WebhookFormat = w["format"]
                .as_str()
                .unwrap_or("json")
                .parse()
                .map_err(|_| invalid("`webhook.format` is `json` or `discord`"))?;
            (Some(url.to_owned()), Some(format))
        }
    };
    let condition: Condition =
        serde_json::from_value(Value::Object(fields)).map_err(|e| invalid(format!("condition: {e}")))?;
    {
        let state = app.market.read();
        let aggregates = state.aggregates();
        condition
            .validate(|m| {
                if aggregates.is_empty() {
                    canonical_slug(m).as_deref() == Some(m)
                } else {
                    aggregates.contains_key(m)
                }
            })
            .map_err(invalid)?;
    }
    let mut rule = Rule::new(
        id,
        claims.sub.clone(),
        name,
        condition,
        cooldown_s,
        unix_now_ms() as i64,
    );
    rule.created_at_ms = created_at_ms;
    rule.enabled = enabled;
    rule.webhook_secret = webhook_url.as_ref().map(|_| hex::encode(rand::random::<[u8; 24]>()));
    rule.webhook_url = webhook_url;
    rule.webhook_format = webhook_format;
    Ok(rule)
}

pub async fn create_rule(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let limit = app.settings.tier(claims.tier).alert_rules;
    let count = app.store.count_rules(&claims.sub).await?;
    if count >= i64::from(limit) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "limit_exceeded",
            format!("the {} tier allows {limit} alert rules", claims.tier),
        ));
    }
    let now = unix_now_ms() as i64;
    let rule = parse_rule(&app, &claims, &body, uuid::Uuid::new_v4().to_string(), now)?;
    app.store.insert_rule(&rule.to_row()).await?;
    app.alerts.upsert(rule.clone());
    let mut out = rule_json(&rule);
    // The signing secret is shown once, at creation.
    if let Some(secret) = &rule.webhook_secret {
        out["webhook_secret"] = json!(secret);
    }
    Ok((StatusCode::CREATED, Json(out)))
}

pub async fn list_rules(State(app): State<AppState>, AuthUser(claims): AuthUser) -> Result<Json<Value>, ApiError> {
    let rules = crate::alerts::rules_of(app.store.rules_of(&claims.sub).await?)?;
    Ok(Json(json!({"rules": rules.iter().map(rule_json).collect::<Vec<_>>()})))
}

async fn owned_rule(app: &AppState, claims: &Claims, id: &str) -> Result<Rule, ApiError> {
    let row = app.store.rule(&claims.sub, id).await?;
    let row = row.ok_or_else(|| ApiError::not_found("no such rule"))?;
    Rule::try_from(row).map_err(ApiError::from)
}

pub async fn get_rule(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(rule_json(&owned_rule(&app, &claims, &id).await?)))
}

pub async fn update_rule(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let existing = owned_rule(&app, &claims, &id).await?;
    let mut rule = parse_rule(&app, &claims, &body, id, existing.created_at_ms)?;
    // The webhook keeps its secret when its URL is unchanged.
    if rule.webhook_url.is_some() && rule.webhook_url == existing.webhook_url {
        rule.webhook_secret = existing.webhook_secret.clone();
    }
    rule.last_fired_at_ms = existing.last_fired_at_ms;
    rule.crossings = existing.crossings;
    if !app.store.update_rule(&rule.to_row()).await? {
        return Err(ApiError::not_found("no such rule"));
    }
    app.alerts.upsert(rule.clone());
    let mut out = rule_json(&rule);
    if rule.webhook_secret != existing.webhook_secret
        && let Some(secret) = &rule.webhook_secret
    {
        out["webhook_secret"] = json!(secret);
    }
    Ok(Json(out))
}

pub async fn delete_rule(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !app.store.delete_rule(&claims.sub, &id).await? {
        return Err(ApiError::not_found("no such rule"));
    }
    app.alerts.remove(&id);
    Ok(StatusCode::NO_CONTENT)
}

pub async fn test_rule(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let rule = owned_rule(&app, &claims, &id).await?;
    Ok(Json(app.alerts.test_delivery(&rule).await))
}

#[derive(Deserialize)]
pub struct EventsQuery {
    rule: Option<String>,
    from: Option<i64>,
    to: Option<i64>,
    /// Cursor: the `next_before` of the previous page.
    before: Option<i64>,
    limit: Option<i64>,
}

pub async fn list_events(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    Query(q): Query<EventsQuery>,
) -> Result<Json<Value>, ApiError> {
    let limit = q.limit.unwrap_or(50);
    if !(1..=500).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_query",
            "`limit` is from 1 to 500",
        ));
    }
    let events = app
        .store
        .alert_events(
            &claims.sub,
            q.rule.as_deref(),
            q.from.unwrap_or(0),
            q.to.unwrap_or(i64::MAX),
            q.before,
            limit,
        )
        .await?;
    let next = (events.len() as i64 == limit)
        .then(|| events.last().map(|e| e.fired_at_ms))
        .flatten();
    Ok(Json(json!({"events": events, "next_before": next})))
}

pub async fn ack_event(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if app
        .store
        .acknowledge_event(&claims.sub, &id, unix_now_ms() as i64)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("no such alert"))
    }
}
