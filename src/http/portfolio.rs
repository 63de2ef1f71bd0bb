//! The portfolio's REST side (DESIGN §15): linked accounts, hand-entered machines, the
//! portfolio itself, applying a price on the platform, and the record of such changes.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::AuthUser;
use super::bodies::{ChannelSnapshot, ErrorBody};
use super::error::ApiError;
use crate::auth::Claims;
use crate::clock::unix_now_ms;
use crate::portfolio::Portfolio;
use crate::portfolio::machine::{Machine, ManualMachine};
use crate::portfolio::vast_host::HostError;
use crate::store::portfolio::{AccountRow, ChangeRow, MachineRow};

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_request", message)
}

fn limit(what: &str, n: u32, claims: &Claims) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "limit_exceeded",
        format!("the {} tier allows {n} {what}", claims.tier),
    )
}

/// Read a JSON body: 400 for JSON that does not parse, 422 for a field of the wrong type.
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => invalid(format!("the body must be {what}: {e}")),
        _ => ApiError::bad_request(format!("invalid JSON: {e}")),
    })
}

fn portfolio(app: &AppState) -> &Portfolio {
    &app.portfolio
}

/// Recompute the user's portfolio wherever it runs (here, and through the control channel).
async fn changed(app: &AppState, user: &str) {
    app.portfolio.mark_changed(user);
    if let Err(e) = app.hub.users().portfolio_changed(user).await {
        tracing::warn!(user, error = %e, "announcing a portfolio change failed; the leader's next refresh catches it");
    }
}

/// The body of `POST /api/v1/portfolio/accounts`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LinkRequest {
    /// `vast`.
    #[schema(pattern = "^vast$")]
    platform: String,
    /// The platform's API key (read-only suffices; `machine_write` to apply prices).
    #[schema(min_length = 1, max_length = 512, pattern = r"^\S+$")]
    api_key: String,
    /// 1-100 characters (default `Vast.ai`).
    #[schema(min_length = 1, max_length = 100, pattern = r"\S")]
    label: Option<String>,
}

#[derive(Serialize, ToSchema)]
pub struct AccountList {
    pub accounts: Vec<AccountRow>,
}

#[derive(Serialize, ToSchema)]
pub struct ChangeList {
    /// Newest first, at most 200.
    pub changes: Vec<ChangeRow>,
}

/// A price applied on the platform.
#[derive(Serialize, ToSchema)]
pub struct PriceApplied {
    /// `applied`.
    pub result: String,
    pub machine_id: String,
    pub price_per_gpu_hour_usd: f64,
}

/// `POST /api/v1/portfolio/accounts` `{platform: "vast", api_key, label?}`: the key is sealed
/// at once and never shown again; the account waits for its first poll.
#[utoipa::path(post, path = "/api/v1/portfolio/accounts", tag = "portfolio", security(("bearer" = [])), request_body = LinkRequest,
    responses(
        (status = 201, description = "Linked; its machines appear after the first poll", body = AccountRow),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "A field is missing or invalid", body = ErrorBody),
    ))]
pub async fn link_account(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    bytes: Bytes,
) -> Result<(StatusCode, Json<AccountRow>), ApiError> {
    let req: LinkRequest = body(&bytes, "{\"platform\": \"vast\", \"api_key\": \"…\", \"label\": \"…\"}")?;
    if req.platform != "vast" {
        return Err(invalid(
            "`platform`: only `vast` accounts can be linked; add other machines by hand (POST /api/v1/portfolio/machines)",
        ));
    }
    let key = req.api_key.trim();
    if key.is_empty() || key.len() > 512 || key.chars().any(char::is_whitespace) {
        return Err(invalid(
            "`api_key` is the Vast.ai API key (one word, at most 512 characters)",
        ));
    }
    let label = req.label.as_deref().map(str::trim).unwrap_or("Vast.ai").to_owned();
    if label.is_empty() || label.len() > 100 {
        return Err(invalid("`label` is 1-100 characters"));
    }
    let max = app.settings.tier(claims.tier).portfolio_accounts;
    let account = AccountRow {
        id: uuid::Uuid::new_v4().to_string(),
        user_id: claims.sub.clone(),
        platform: "vast".into(),
        label,
        api_key_sealed: portfolio(&app).sealer().seal(key),
        status: "waiting".into(),
        last_success_ms: None,
        last_error: None,
        earnings: None,
        earnings_at_ms: None,
        created_at_ms: unix_now_ms() as i64,
    };
    if !app.store.insert_account(&account, i64::from(max)).await? {
        return Err(limit("linked accounts", max, &claims));
    }
    changed(&app, &claims.sub).await;
    Ok((StatusCode::CREATED, Json(account)))
}

/// `GET /api/v1/portfolio/accounts`: the linked accounts and how their polls go.
#[utoipa::path(get, path = "/api/v1/portfolio/accounts", tag = "portfolio", security(("bearer" = [])),
    responses((status = 200, description = "The caller's linked accounts", body = AccountList)))]
pub async fn list_accounts(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
) -> Result<Json<AccountList>, ApiError> {
    let accounts = app.store.accounts(Some(&claims.sub)).await?;
    Ok(Json(AccountList { accounts }))
}

/// `DELETE /api/v1/portfolio/accounts/{id}`: the account, its sealed key and its machines.
#[utoipa::path(delete, path = "/api/v1/portfolio/accounts/{id}", tag = "portfolio", security(("bearer" = [])),
    params(("id" = String, Path, description = "The account's id")),
    responses(
        (status = 204, description = "Unlinked"),
        (status = 404, description = "No such account of the caller's", body = ErrorBody),
    ))]
pub async fn unlink_account(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !app.store.delete_account(&claims.sub, &id).await? {
        return Err(ApiError::not_found("no such account"));
    }
    changed(&app, &claims.sub).await;
    Ok(StatusCode::NO_CONTENT)
}

fn manual(app: &AppState, bytes: &[u8], id: String) -> Result<Machine, ApiError> {
    let req: ManualMachine = body(
        bytes,
        "a machine: {platform, gpu_model, num_gpus, price_per_gpu_hour_usd, verified?, datacenter?, country?, rented_gpus?}",
    )?;
    // A model the market holds (any canonical name before the first poll), as alert rules take.
    let state = app.market.read();
    let aggregates = state.aggregates();
    let known = |m: &str| aggregates.is_empty() || aggregates.contains_key(m);
    req.into_machine(id, known).map_err(invalid)
}

/// `POST /api/v1/portfolio/machines`: a machine entered by hand.
#[utoipa::path(post, path = "/api/v1/portfolio/machines", tag = "portfolio", security(("bearer" = [])), request_body = ManualMachine,
    responses(
        (status = 201, description = "The machine", body = Machine),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 422, description = "A field is missing or invalid", body = ErrorBody),
    ))]
pub async fn add_machine(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    bytes: Bytes,
) -> Result<(StatusCode, Json<Machine>), ApiError> {
    let machine = manual(&app, &bytes, uuid::Uuid::new_v4().to_string())?;
    let now = unix_now_ms() as i64;
    let max = app.settings.tier(claims.tier).portfolio_machines;
    let row = MachineRow {
        id: machine.id.clone(),
        user_id: claims.sub.clone(),
        account_id: None,
        platform_id: None,
        data: serde_json::to_string(&machine).unwrap_or_default(),
        last_rented_at_ms: (machine.gpus_rented() > 0).then_some(now),
        first_seen_ms: now,
        updated_at_ms: now,
    };
    if !app.store.insert_machine(&row, i64::from(max)).await? {
        return Err(limit("machines", max, &claims));
    }
    changed(&app, &claims.sub).await;
    Ok((StatusCode::CREATED, Json(machine)))
}

/// `PUT /api/v1/portfolio/machines/{id}`: replace a hand-entered machine.
#[utoipa::path(put, path = "/api/v1/portfolio/machines/{id}", tag = "portfolio", security(("bearer" = [])), params(("id" = String, Path, description = "The machine's portfolio id")),
    request_body = ManualMachine,
    responses(
        (status = 200, description = "The machine", body = Machine),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 404, description = "No such hand-entered machine of the caller's", body = ErrorBody),
        (status = 422, description = "A field is missing or invalid", body = ErrorBody),
    ))]
pub async fn update_machine(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<Machine>, ApiError> {
    let machine = manual(&app, &bytes, id.clone())?;
    let data = serde_json::to_string(&machine).unwrap_or_default();
    if !app
        .store
        .update_manual_machine(&claims.sub, &id, &data, unix_now_ms() as i64)
        .await?
    {
        return Err(ApiError::not_found("no such hand-entered machine"));
    }
    changed(&app, &claims.sub).await;
    Ok(Json(machine))
}

/// `DELETE /api/v1/portfolio/machines/{id}`: a hand-entered machine (a linked account's
/// machines come and go with the account).
#[utoipa::path(delete, path = "/api/v1/portfolio/machines/{id}", tag = "portfolio", security(("bearer" = [])), params(("id" = String, Path, description = "The machine's portfolio id")),
    responses(
        (status = 204, description = "Removed"),
        (status = 404, description = "No such hand-entered machine of the caller's", body = ErrorBody),
    ))]
pub async fn delete_machine(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    if !app.store.delete_machine(&claims.sub, &id, true).await? {
        return Err(ApiError::not_found("no such hand-entered machine"));
    }
    changed(&app, &claims.sub).await;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/portfolio`: what `portfolio:#<uid>` starts from (machines placed in the market,
/// suggestions, totals).
#[utoipa::path(get, path = "/api/v1/portfolio", tag = "portfolio", security(("bearer" = [])),
    responses((status = 200, description = "The `portfolio:#<uid>` snapshot: `items` by machine id, and `totals`", body = ChannelSnapshot)))]
pub async fn get_portfolio(State(app): State<AppState>, AuthUser(claims): AuthUser) -> Json<ChannelSnapshot> {
    Json(ChannelSnapshot(app.portfolio.current(&claims.sub).await))
}

/// The body of `POST /api/v1/portfolio/machines/{id}/price`.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PriceRequest {
    /// The host's price per GPU-hour, above 0 and at most 1000.
    #[schema(exclusive_minimum = 0, maximum = 1000)]
    price_per_gpu_hour_usd: f64,
    /// Must be `true`: this changes the listing on the platform.
    confirm: Option<bool>,
}

/// `POST /api/v1/portfolio/machines/{id}/price` `{price_per_gpu_hour_usd, confirm: true}`: list a
/// linked machine at this price on its platform; recorded whatever the platform answers.
#[utoipa::path(post, path = "/api/v1/portfolio/machines/{id}/price", tag = "portfolio", security(("bearer" = [])), params(("id" = String, Path, description = "The machine's portfolio id")),
    request_body = PriceRequest,
    responses(
        (status = 200, description = "The platform took the price", body = PriceApplied),
        (status = 400, description = "The body is not JSON", body = ErrorBody),
        (status = 404, description = "No such machine of the caller's", body = ErrorBody),
        (status = 422, description = "Not confirmed, a hand-entered machine, or the platform refused the price", body = ErrorBody),
    ))]
pub async fn apply_price(
    State(app): State<AppState>,
    AuthUser(claims): AuthUser,
    Path(id): Path<String>,
    bytes: Bytes,
) -> Result<Json<PriceApplied>, ApiError> {
    let req: PriceRequest = body(&bytes, "{\"price_per_gpu_hour_usd\": 0.4, \"confirm\": true}")?;
    let price = req.price_per_gpu_hour_usd;
    if !(price.is_finite() && price > 0.0 && price <= 1000.0) {
        return Err(invalid("`price_per_gpu_hour_usd` must be above 0 and at most 1000"));
    }
    if req.confirm != Some(true) {
        return Err(invalid(
            "`confirm: true` is required: this changes the machine's listing on Vast.ai",
        ));
    }
    let (row, machine_id, key) = linked_machine(&app, &claims, &id).await?;
    let old: Option<f64> = serde_json::from_str::<Machine>(&row.data)
        .ok()
        .and_then(|m| m.price_per_gpu_hour_usd);
    let outcome = portfolio(&app).host().set_price(&key, machine_id, price).await;
    let result = match &outcome {
        Ok(_) => "applied".to_owned(),
        Err(e) => e.words(),
    };
    app.store
        .record_change(&ChangeRow {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: claims.sub.clone(),
            machine_id: id.clone(),
            field: "price_per_gpu_hour_usd".into(),
            old_value: old.map(|p| p.to_string()),
            new_value: price.to_string(),
            result: result.clone(),
            at_ms: unix_now_ms() as i64,
        })
        .await?;
    match outcome {
        Ok(_) => {
            changed(&app, &claims.sub).await;
            Ok(Json(PriceApplied {
                result: "applied".into(),
                machine_id: id,
                price_per_gpu_hour_usd: price,
            }))
        }
        Err(e) => Err(refusal(&e, result)),
    }
}

/// The answer when the platform did not take a price (`result`: what it said, in words).
fn refusal(e: &HostError, result: String) -> ApiError {
    match e {
        HostError::Unauthorized(_) => ApiError::new(
            StatusCode::FORBIDDEN,
            "platform_refused_key",
            "Vast.ai refused the key for this change: it needs the machine_write permission",
        ),
        HostError::Refused { error, .. } => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "platform_refused",
            match error.as_deref() {
                Some("price_out_of_bounds") => format!("Vast.ai does not accept this price for the machine: {result}"),
                _ => result,
            },
        ),
        HostError::Unavailable { .. } => ApiError::unavailable(result),
    }
}

/// A linked machine of the user: its row, its Vast.ai id, and its account's key (opened).
async fn linked_machine(app: &AppState, claims: &Claims, id: &str) -> Result<(MachineRow, u64, String), ApiError> {
    let rows = app.store.machines(Some(&claims.sub)).await?;
    let row = rows
        .into_iter()
        .find(|m| m.id == id)
        .ok_or_else(|| ApiError::not_found("no such machine"))?;
    let (Some(account_id), Some(platform_id)) = (&row.account_id, &row.platform_id) else {
        return Err(invalid(
            "a hand-entered machine has no linked account to change its price through",
        ));
    };
    let machine_id: u64 = platform_id
        .parse()
        .map_err(|_| invalid("the machine has no Vast.ai id"))?;
    let account = app
        .store
        .accounts(Some(&claims.sub))
        .await?
        .into_iter()
        .find(|a| &a.id == account_id)
        .ok_or_else(|| ApiError::not_found("the machine's account is gone"))?;
    let key = portfolio(app)
        .sealer()
        .open(&account.api_key_sealed)
        .map_err(|_| ApiError::unavailable("the account's key cannot be opened; link the account again"))?;
    Ok((row, machine_id, key))
}

/// `GET /api/v1/portfolio/changes`: the price changes made for the user, newest first.
#[utoipa::path(get, path = "/api/v1/portfolio/changes", tag = "portfolio", security(("bearer" = [])),
    responses((status = 200, description = "The price changes made for the caller", body = ChangeList)))]
pub async fn changes(State(app): State<AppState>, AuthUser(claims): AuthUser) -> Result<Json<ChangeList>, ApiError> {
    let changes = app.store.changes(&claims.sub, 200).await?;
    Ok(Json(ChangeList { changes }))
}
