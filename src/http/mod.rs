//! The HTTP surface: one router built in one place. Handlers translate between HTTP and the
//! hub/store; they hold no business rules.

pub mod advisor;
pub mod alerts;
pub mod auth;
pub mod email;
pub mod error;
pub mod health;
pub mod keys;
pub mod limits;
pub mod market;
pub mod portfolio;
pub mod push;
pub mod query;
pub mod serve;
pub mod server_api;
pub mod static_files;
pub mod ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post, put};
use tokio_util::task::TaskTracker;

use crate::alerts::delivery::AlertService;
use crate::config::Settings;
use crate::hub::Hub;
use crate::market::Market;
use crate::portfolio::Portfolio;
use crate::store::Store;
use crate::tasks::Tasks;

/// Shared state of every handler.
#[derive(Clone)]
pub struct AppState {
    /// Connections, subscriptions, fan-out, and the bus behind them.
    pub hub: Arc<Hub>,
    /// The database.
    pub store: Store,
    /// The market's current state (aggregates, book, source health).
    pub market: Market,
    /// Alert rules' evaluation and delivery.
    pub alerts: Arc<AlertService>,
    /// The users' own machines.
    pub portfolio: Arc<Portfolio>,
    /// REST rate limits per user and per client address.
    pub limits: Arc<limits::RestLimits>,
    pub settings: Arc<Settings>,
    /// Tracks connection tasks so shutdown can wait for them to finish.
    pub tracker: TaskTracker,
    /// The background tasks, whose deaths make the node unready.
    pub tasks: Tasks,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/connection/websocket", get(ws::upgrade))
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/api/publish", post(server_api::publish))
        .route("/api/broadcast", post(server_api::broadcast))
        .route("/api/history", post(server_api::history))
        .route("/api/info", post(server_api::info))
        .route("/api/revoke_token", post(server_api::revoke_token))
        .route("/api/v1/keys", post(keys::create).get(keys::list))
        .route("/api/v1/keys/{id}", axum::routing::delete(keys::revoke))
        .merge(open_routes(&state))
        .merge(alert_routes())
        .merge(portfolio_routes())
        .route("/api/v1/market/snapshot", get(market::snapshot))
        .route("/api/v1/market/history", get(market::history))
        .route("/api/v1/conversations", get(advisor::conversations))
        .route("/api/v1/conversations/{id}/messages", get(advisor::messages))
        .route("/sdk/{*file}", get(static_files::sdk))
        .fallback(static_files::web)
        .layer(DefaultBodyLimit::max(state.settings.server.max_body_bytes))
        .with_state(state)
}

/// Alert rules and events, and where alerts go (e-mail address, push subscriptions).
fn alert_routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/alerts/rules",
            post(alerts::create_rule).get(alerts::list_rules),
        )
        .route(
            "/api/v1/alerts/rules/{id}",
            get(alerts::get_rule)
                .put(alerts::update_rule)
                .delete(alerts::delete_rule),
        )
        .route("/api/v1/alerts/rules/{id}/test", post(alerts::test_rule))
        .route("/api/v1/alerts/events", get(alerts::list_events))
        .route("/api/v1/alerts/events/{id}/ack", post(alerts::ack_event))
        .route(
            "/api/v1/me/email",
            put(email::set).get(email::get).delete(email::delete),
        )
        .route("/api/v1/push/subscriptions", post(push::subscribe).get(push::list))
        .route(
            "/api/v1/push/subscriptions/{id}",
            axum::routing::delete(push::unsubscribe),
        )
}

/// The routes that need no token (links from mails, the key exchange, the VAPID key, the
/// development login): limited per client address.
fn open_routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v1/token", post(keys::exchange))
        .route("/api/v1/me/email/confirm", get(email::confirm))
        .route(
            "/api/v1/me/email/unsubscribe",
            get(email::unsubscribe).post(email::unsubscribe),
        )
        .route("/api/v1/push/vapid-public-key", get(push::vapid_public_key))
        .route(
            "/api/v1/dev/token",
            post(server_api::dev_token).get(server_api::dev_token),
        )
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), limits::per_ip))
}

/// A host's own machines (DESIGN §15).
fn portfolio_routes() -> Router<AppState> {
    Router::new()
        .route("/api/v1/portfolio", get(portfolio::get_portfolio))
        .route(
            "/api/v1/portfolio/accounts",
            post(portfolio::link_account).get(portfolio::list_accounts),
        )
        .route(
            "/api/v1/portfolio/accounts/{id}",
            axum::routing::delete(portfolio::unlink_account),
        )
        .route("/api/v1/portfolio/machines", post(portfolio::add_machine))
        .route(
            "/api/v1/portfolio/machines/{id}",
            put(portfolio::update_machine).delete(portfolio::delete_machine),
        )
        .route("/api/v1/portfolio/machines/{id}/price", post(portfolio::apply_price))
        .route("/api/v1/portfolio/changes", get(portfolio::changes))
}
