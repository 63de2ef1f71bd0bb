//! `/api/v1/alerts`: a user's alert rules and fired alerts, with their connection token
//! (`Authorization: Bearer <JWT>`). Another user's rule or alert is 404, never 403: its existence
//! is not disclosed.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::{IntoParams, ToSchema};

use super::AppState;
use super::auth::AuthUser;
use super::bodies::ErrorBody;
use super::error::ApiError;
use super::query::ApiQuery;
use crate::alerts::delivery::TestReport;
use crate::alerts::{Condition, DeliveryChannel, Rule, WebhookFormat};
use crate::auth::Claims;
use crate::clock::unix_now_ms;
use crate::market::models::canonical_slug;
use crate::store::alerts::AlertEvent;
use crate::upstream::check_user_url;

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_rule", message)
}

/// A rule as answered: its webhook's signing secret only when it was just made.
#[derive(Serialize, ToSchema)]
pub struct RuleAnswer {
    #[serde(flatten)]
    rule: Rule,
    /// `whsec_…`: verifies the webhook's signatures. Shown once, when the webhook is set.
    #[serde(skip_serializing_if = "Option::is_none")]
    webhook_secret: Option<String>,
}

impl RuleAnswer {
    fn of(rule: Rule) -> Self {
        Self {
            rule,
            webhook_secret: None,
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct RuleList {
    pub rules: Vec<Rule>,
}

/// A rule's webhook as a request gives it.
#[derive(Deserialize, ToSchema)]
pub struct WebhookRequest {
    /// An https URL (http only where `alerts.webhook_allow_http` is set).
    #[serde(default)]
    url: String,
    /// `json` (default) or `discord`.
    #[serde(default)]
    #[schema(value_type = Option<WebhookFormat>)]
    format: Option<String>,
}

/// The body of `POST /api/v1/alerts/rules` and `PUT /api/v1/alerts/rules/{id}`: the rule's own
/// fields, with the condition's (`kind`, `model`, `direction`, …) beside them.
#[derive(Deserialize, ToSchema)]
#[schema(example = json!({"name": "cheap 4090", "kind": "price", "model": "rtx-4090", "stat": "median",
    "direction": "below", "threshold_usd": 0.3, "deliver": ["socket"]}))]
pub struct RuleRequest {
    /// 1-100 characters.
    #[schema(required, min_length = 1, max_length = 100, pattern = r"\S")]
    name: Option<String>,
    /// Seconds between two alerts of the rule, 60 to 2592000 (default `alerts.default_cooldown_s`).
    #[schema(minimum = 60, maximum = 2592000)]
    cooldown_s: Option<i64>,
    enabled: Option<bool>,
    webhook: Option<WebhookRequest>,
    /// Where its alerts go (default: the socket, and the webhook when there is one).
    #[schema(value_type = Option<Vec<DeliveryChannel>>)]
    deliver: Option<Vec<String>>,
    #[serde(flatten)]
    #[schema(value_type = Condition)]
    condition: Map<String, Value>,
}

/// A rule request with every field checked on its own; what depends on the user's tier and the
/// market is checked by [`new_rule`].
struct RuleDraft {
    name: String,
    cooldown_s: Option<i64>,
    enabled: bool,
    webhook: Option<(String, WebhookFormat)>,
    deliver: Option<Vec<DeliveryChannel>>,
    condition: Condition,
}

impl TryFrom<RuleRequest> for RuleDraft {
    type Error = ApiError;

    fn try_from(r: RuleRequest) -> Result<Self, ApiError> {
        let name = match r.name.as_deref().map(str::trim) {
            Some(n) if !n.is_empty() && n.len() <= 100 => n.to_owned(),
            _ => return Err(invalid("`name` is required (1-100 characters)")),
        };
        if r.cooldown_s.is_some_and(|c| !(60..=30 * 86_400).contains(&c)) {
            return Err(invalid("`cooldown_s` must be from 60 to 2592000 seconds"));
        }
        let webhook = match r.webhook {
            None => None,
            Some(w) => {
                if !(w.url.starts_with("https://") || w.url.starts_with("http://")) || w.url.len() > 2000 {
                    return Err(invalid("`webhook.url` must be an http(s) URL"));
                }
                if reqwest::Url::parse(&w.url).is_err() {
                    return Err(invalid("`webhook.url` is not a valid URL"));
                }
                let format: WebhookFormat = w
                    .format
                    .as_deref()
                    .unwrap_or("json")
                    .parse()
                    .map_err(|_| invalid("`webhook.format` is `json` or `discord`"))?;
                Some((w.url, format))
            }
        };
        let deliver = match r.deliver {
            None => None,
            Some(list) => {
                let mut channels: Vec<DeliveryChannel> = list
                    .iter()
                    .map(|c| c.parse())
                    .collect::<Result<_, _>>()
                    .map_err(invalid)?;
                channels.sort();
                channels.dedup();
                if channels.is_empty() {
                    return Err(invalid("`deliver` lists at least one of socket, push, email, webhook"));
                }
                if channels.contains(&DeliveryChannel::Webhook) && webhook.is_none() {
                    return Err(invalid("`deliver` has `webhook`, so the rule needs a `webhook`"));
                }
                Some(channels)
            }
        };
        let condition: Condition =
            serde_json::from_value(Value::Object(r.condition)).map_err(|e| invalid(format!("condition: {e}")))?;
        Ok(RuleDraft {
            name,
            cooldown_s: r.cooldown_s,
            enabled: r.enabled.unwrap_or(true),
            webhook,
            deliver,
            condition,
        })
    }
}

/// Read a rule request body: 400 for JSON that does not parse, 422 for a field of the wrong type.
fn rule_request(body: &[u8]) -> Result<RuleDraft, ApiError> {
    let request: RuleRequest = serde_json::from_slice(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => invalid(format!("the body must be a JSON object of a rule: {e}")),
        _ => ApiError::bad_request(format!("invalid JSON: {e}")),
    })?;
    RuleDraft::try_from(request)
}

/// The rule a user asked for: their tier must allow a webhook, the model must be one the market
/// knows (any canonical name before the first poll).
fn new_rule(
    app: &AppState,
    claims: &Claims,
    draft: RuleDraft,
    id: String,
    created_at_ms: i64,
) -> Result<Rule, ApiError> {
    if draft.webhook.is_some() && !app.settings.tier(claims.tier).webhooks {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "limit_exceeded",
            format!("webhooks are not part of the {} tier", claims.tier),
        ));
    }
    for channel in draft.deliver.iter().flatten() {
        check_delivery(app, claims, *channel)?;
    }
    if let Some((url, _)) = &draft.webhook {
        let a = &app.settings.alerts;
        check_user_url(url, a.webhook_allow_http, a.webhook_allow_private)
            .map_err(|e| invalid(format!("`webhook.url` {e}")))?;
    }
    {
        let state = app.market.read();
        let aggregates = state.aggregates();
        let known = |m: &str| {
            if aggregates.is_empty() {
                canonical_slug(m).as_deref() == Some(m)
            } else {
                aggregates.contains_key(m)
            }
        };
        draft.condition.validate(known).map_err(invalid)?;
    }
    let cooldown_s = draft
        .cooldown_s
        .unwrap_or(app.settings.alerts.default_cooldown_s as i64);
    let mut rule = Rule::new(
        id,
        claims.sub.clone(),
        draft.name,
        draft.condition,
        cooldown_s,
        unix_now_ms() as i64,
    );
    rule.created_at_ms = created_at_ms;
    rule.enabled = draft.enabled;
    rule.deliver = draft.deliver;
    if let Some((url, format)) = draft.webhook {
        rule.webhook_secret = Some(crate::alerts::delivery::new_webhook_secret());
        rule.webhook_url = Some(url);
        rule.webhook_format = Some(format);
    }
    Ok(rule)
}

/// A channel a rule may deliver to: one the user's tier allows and this hub sends.
fn check_delivery(app: &AppState, claims: &Claims, channel: DeliveryChannel) -> Result<(), ApiError> {
    if !app.settings.tier(claims.tier).delivers(channel.as_str()) {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "limit_exceeded",
            format!("{} delivery is not part of the {} tier", channel.as_str(), claims.tier),
        ));
    }
    let off = match channel {
        DeliveryChannel::Push => !app.settings.push.enabled(),
        DeliveryChannel::Email => !app.settings.email.enabled(),
        _ => false,
    };
    if off {
        return Err(invalid(format!("this hub does not send {} alerts", channel.as_str())));
    }
    Ok(())
}

/// Build a rule from a request body, checking every field.
fn parse_rule(app: &AppState, claims: &Claims, body: &[u8], id: String, created_at_ms: i64) -> Result<Rule, ApiError> {
    new_rule(app, claims, rule_request(body)?, id, created_at_ms)
}

/// A machine rule watches one of the user's own portfolio machines.
async fn check_machine(app: &AppState, claims: &Claims, rule: &Rule) -> Result<(), ApiError> {
    let Some(id) = rule.condition.machine() else {
        return Ok(());
    };
    let mine = app.store.machines(Some(&claims.sub)).await?;
    if mine.iter().any(|m| m.id == id) {
        Ok(())
    } else {
        Err(invalid(format!(
            "unknown machine `{id}`: use the id of one of your machines (GET /api/v1/portfolio)"
        )))
    }
}

/// Tell every node that rule `id` changed, so the evaluating one reloads it at once; if the bus
/// is away, the periodic reconcile (`alerts.reconcile_interval_ms`) catches it.
async fn announce(app: &AppState, id: &str) {
    if let Err(e) = app.hub.users().rule_changed(id).await {
        tracing::warn!(rule = id, error = %e, "announcing a rule change failed; the reconcile catches it");
    }
}

/// `POST /api/v1/alerts/rules`.
#[utoipa::path(post, path = "/api/v1/alerts/rules", tag = "alerts",
    security(("bearer" = []), ("api_key" = [])), request_body = RuleRequest,
    responses(
        (status = 201, description = "The rule (with `webhook_secret` when it has a webhook)", body = RuleAnswer),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "A field is missing or out of range", body = ErrorBody),
    ))]
pub async fn create_rule(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    body: Bytes,
) -> Result<(StatusCode, Json<RuleAnswer>), ApiError> {
    let limit = app.settings.tier(claims.tier).alert_rules;
    let now = unix_now_ms() as i64;
    let rule = parse_rule(&app, &claims, &body, uuid::Uuid::new_v4().to_string(), now)?;
    check_machine(&app, &claims, &rule).await?;
    if !app.store.insert_rule(&rule.to_row(), i64::from(limit)).await? {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "limit_exceeded",
            format!("the {} tier allows {limit} alert rules", claims.tier),
        ));
    }
    app.alerts.upsert(rule.clone());
    announce(&app, &rule.id).await;
    // The signing secret is shown once, at creation.
    let webhook_secret = rule.webhook_secret.clone();
    Ok((StatusCode::CREATED, Json(RuleAnswer { rule, webhook_secret })))
}

/// `GET /api/v1/alerts/rules`.
#[utoipa::path(get, path = "/api/v1/alerts/rules", tag = "alerts",
    security(("bearer" = []), ("api_key" = [])),
    responses((status = 200, description = "The caller's rules", body = RuleList)))]
pub async fn list_rules(State(app): State<AppState>, AuthUser(claims): AuthUser) -> Result<Json<RuleList>, ApiError> {
    let rules = crate::alerts::rules_of(app.store.rules_of(&claims.sub).await?)?;
    Ok(Json(RuleList { rules }))
}

async fn owned_rule(app: &AppState, claims: &Claims, id: &str) -> Result<Rule, ApiError> {
    let row = app.store.rule(&claims.sub, id).await?;
    let row = row.ok_or_else(|| ApiError::not_found("no such rule"))?;
    Rule::try_from(row).map_err(ApiError::from)
}

/// `GET /api/v1/alerts/rules/{id}`.
#[utoipa::path(get, path = "/api/v1/alerts/rules/{id}", tag = "alerts",
    security(("bearer" = []), ("api_key" = [])), params(("id" = String, Path, description = "The rule's id")),
    responses(
        (status = 200, description = "The rule", body = Rule),
        (status = 404, description = "No such rule of the caller's", body = ErrorBody),
    ))]
pub async fn get_rule(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<Rule>, ApiError> {
    Ok(Json(owned_rule(&app, &claims, &id).await?))
}

/// `PUT /api/v1/alerts/rules/{id}`: the rule replaced (its id, creation time and firing history kept).
#[utoipa::path(put, path = "/api/v1/alerts/rules/{id}", tag = "alerts",
    security(("bearer" = []), ("api_key" = [])), params(("id" = String, Path, description = "The rule's id")), request_body = RuleRequest,
    responses(
        (status = 200, description = "The rule (with `webhook_secret` when its webhook changed)", body = RuleAnswer),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 404, description = "No such rule of the caller's", body = ErrorBody),
        (status = 422, description = "A field is missing or out of range", body = ErrorBody),
    ))]
pub async fn update_rule(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<Json<RuleAnswer>, ApiError> {
    let existing = owned_rule(&app, &claims, &id).await?;
    let mut rule = parse_rule(&app, &claims, &body, id, existing.created_at_ms)?;
    check_machine(&app, &claims, &rule).await?;
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
    announce(&app, &rule.id).await;
    let mut out = RuleAnswer::of(rule);
    if out.rule.webhook_secret != existing.webhook_secret {
        out.webhook_secret = out.rule.webhook_secret.clone();
    }
    Ok(Json(out))
}

/// `DELETE /api/v1/alerts/rules/{id}`.
#[utoipa::path(delete, path = "/api/v1/alerts/rules/{id}", tag = "alerts",
    security(("bearer" = []), ("api_key" = [])), params(("id" = String, Path, description = "The rule's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such rule of the caller's", body = ErrorBody),
    ))]
pub async fn delete_rule(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !app.store.delete_rule(&claims.sub, &id).await? {
        return Err(ApiError::not_found("no such rule"));
    }
    app.alerts.remove(&id);
    announce(&app, &id).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/alerts/rules/{id}/test`: a test alert to each of the rule's channels, not recorded.
#[utoipa::path(post, path = "/api/v1/alerts/rules/{id}/test", tag = "alerts",
    security(("bearer" = []), ("api_key" = [])), params(("id" = String, Path, description = "The rule's id")),
    responses(
        (status = 200, description = "What each channel did", body = TestReport),
        (status = 404, description = "No such rule of the caller's", body = ErrorBody),
    ))]
pub async fn test_rule(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    Path(id): Path<String>,
) -> Result<Json<TestReport>, ApiError> {
    let rule = owned_rule(&app, &claims, &id).await?;
    Ok(Json(app.alerts.test_delivery(&rule).await))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only this rule's alerts.
    rule: Option<String>,
    /// Fired at or after (milliseconds since the epoch).
    from: Option<i64>,
    /// Fired at or before (milliseconds since the epoch).
    to: Option<i64>,
    /// Cursor: the `next_before` of the previous page.
    before: Option<i64>,
    /// Alerts per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<i64>,
}

/// A page of fired alerts, newest first.
#[derive(Serialize, ToSchema)]
pub struct EventPage {
    pub events: Vec<AlertEvent>,
    /// Pass as `before` for the next page; `null` on the last.
    pub next_before: Option<i64>,
}

/// `GET /api/v1/alerts/events`.
#[utoipa::path(get, path = "/api/v1/alerts/events", tag = "alerts",
    security(("bearer" = []), ("api_key" = [])), params(EventsQuery),
    responses(
        (status = 200, description = "A page of the caller's alerts", body = EventPage),
        (status = 400, description = "A parameter of the wrong type", body = ErrorBody),
        (status = 422, description = "A parameter out of range", body = ErrorBody),
    ))]
pub async fn list_events(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Json<EventPage>, ApiError> {
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
    Ok(Json(EventPage {
        events,
        next_before: next,
    }))
}

/// `POST /api/v1/alerts/events/{id}/ack`.
#[utoipa::path(post, path = "/api/v1/alerts/events/{id}/ack", tag = "alerts",
    security(("bearer" = []), ("api_key" = [])),
    params(("id" = String, Path, description = "The alert's id")),
    responses(
        (status = 204, description = "Acknowledged"),
        (status = 404, description = "No such alert of the caller's", body = ErrorBody),
    ))]
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
