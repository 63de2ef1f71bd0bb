//! The HTTP surface: one router built in one place. Handlers translate between HTTP and the
//! hub/store; they hold no business rules.

pub mod advisor;
pub mod alerts;
pub mod auth;
pub mod bodies;
pub mod email;
pub mod error;
pub mod health;
pub mod keys;
pub mod layers;
pub mod limits;
pub mod market;
pub mod openapi;
pub mod portfolio;
pub mod push;
pub mod query;
pub mod serve;
pub mod server_api;
pub mod static_files;
pub mod upgrade;
pub mod ws;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio_util::task::TaskTracker;

use crate::alerts::delivery::AlertService;
use crate::config::Settings;
use crate::hub::Hub;
use crate::market::Market;
use crate::portfolio::Portfolio;
use crate::store::Store;
use crate::tasks::Tasks;

/// Shared state of every handler, behind one `Arc`: axum clones the state for every request
/// (and layer), and one reference count is cheaper than one per part, above all with the
/// connects of a reconnect storm on both cores at once.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    pub fn new(parts: AppParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;
    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// The parts of [`AppState`].
pub struct AppParts {
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
    let http = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/api/publish", post(server_api::publish))
        .route("/api/broadcast", post(server_api::broadcast))
        .route("/api/history", post(server_api::history))
        .route("/api/info", post(server_api::info))
        .route("/api/revoke_token", post(server_api::revoke_token))
        .merge(openapi::api_router(&state))
        .route("/sdk/{*file}", get(static_files::sdk))
        .fallback(static_files::web);
    let router = Router::new()
        .route("/ws", get(ws::upgrade))
        .route("/connection/websocket", get(ws::upgrade))
        .merge(layers::plain_http(http, &state))
        .layer(DefaultBodyLimit::max(state.settings.server.max_body_bytes))
        .with_state(state.clone());
    layers::every_route(router, &state)
}
