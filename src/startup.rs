//! Wiring: `Application::build` chooses the backends the settings ask for, binds the listener and
//! starts the background tasks; `run_until_stopped` serves until shutdown, then drains.
//!
//! The only place that chooses a backend.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::advisor::anthropic::AnthropicProvider;
use crate::advisor::gemini::GeminiProvider;
use crate::advisor::offline::OfflineProvider;
use crate::advisor::openai::OpenAiProvider;
use crate::advisor::{self, Advisor, LlmProvider, Timeouts};
use crate::alerts::delivery::AlertService;
use crate::auth::TokenVerifier;
use crate::bus::leader::Leadership;
use crate::bus::redis::redis_builder;
use crate::bus::users::{HEARTBEAT_EVERY, LocalUsers, RedisUsers, UserState};
use crate::bus::{Bus, MemoryBus, RedisBus};
use crate::config::AdvisorProviderKind;
use crate::config::Settings;
use crate::http::{self, AppState};
use crate::hub::Hub;
use crate::ingest;
use crate::ingest::replica::SnapshotReplica;
use crate::ingest::runner::Role;
use crate::store::Store;
use crate::telemetry::Metrics;

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: AppState,
    shutdown: CancellationToken,
    background: TaskTracker,
}

impl Application {
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.validate()?;
        install_tls_provider();
        let settings = Arc::new(settings);
        let store = Store::connect(&settings.database)
            .await
            .context("connecting to the database")?;
        store.migrate().await.context("running database migrations")?;

        let redis = if settings.bus.redis_url.is_empty() {
            None
        } else {
            let bus = RedisBus::connect(&settings.bus)
                .await
                .context("connecting to Redis (bus.redis_url)")?;
            Some(Arc::new(bus))
        };
        let bus: Arc<dyn Bus> = match &redis {
            Some(bus) => bus.clone(),
            None => Arc::new(MemoryBus::new(&settings.bus)),
        };
        let verifier = Arc::new(TokenVerifier::new(&settings.auth).context("auth settings")?);
        let shutdown = CancellationToken::new();
        let hub = Hub::new(
            settings.clone(),
            bus,
            verifier,
            Arc::new(Metrics::default()),
            shutdown.clone(),
        );

        let addr = settings.server.listen_addr()?;
        let listener = TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding server.listen = {addr}"))?;
        let local_addr = listener.local_addr()?;

        let background = TaskTracker::new();
        let role = match &redis {
            None => Role::single_node(),
            Some(bus) => Role {
                leadership: Leadership::campaign(
                    bus.client(),
                    format!("{}.leader", settings.bus.redis_prefix),
                    hub.node_id().to_owned(),
                    Duration::from_millis(settings.bus.leader_lease_ms),
                    shutdown.clone(),
                ),
                replica: Some(Arc::new(SnapshotReplica::new(bus.client(), &settings.bus.redis_prefix))),
            },
        };
        hub.set_leadership(role.leadership.clone());
        let users: Arc<dyn UserState> = match &redis {
            Some(bus) => {
                let subscriber = redis_builder(&settings.bus.redis_url, 64)?
                    .build_subscriber_client()
                    .context("bus.redis_url")?;
                let users = RedisUsers::start(bus.client(), subscriber, &settings.bus.redis_prefix, hub.node_id())
                    .await
                    .context("connecting to Redis (bus.redis_url)")?;
                Arc::new(users)
            }
            None => Arc::new(LocalUsers::default()),
        };
        hub.set_user_state(users);
        {
            // Keep this node's connection entries alive in the shared counts.
            let hub = hub.clone();
            let stop = shutdown.clone();
            background.spawn(async move {
                let mut every = tokio::time::interval(HEARTBEAT_EVERY);
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = every.tick() => hub.users().heartbeat(hub.session_pairs()).await,
                    }
                }
            });
        }
        let client = ingest::http_client();
        let alerts = AlertService::start(store.clone(), hub.clone(), settings.alerts.clone(), client)
            .await
            .context("loading alert rules")?;
        // Webhooks are delivered by the leader alone (one worker on the shared outbox).
        background.spawn(leader_only(role.leadership.clone(), shutdown.clone(), {
            let alerts = alerts.clone();
            move |stop| alerts.clone().run_outbox(stop)
        }));
        let market = ingest::runner::spawn(
            hub.clone(),
            store.clone(),
            alerts.clone(),
            &settings.ingest,
            role.clone(),
            &background,
            shutdown.clone(),
        );
        // One node runs the advisor on this database: answers left streaming by a stopped hub never end.
        match store.fail_unfinished_messages().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(answers = n, "marked interrupted advisor answers as failed"),
            Err(e) => tracing::warn!(error = %e, "marking interrupted advisor answers failed"),
        }
        let advisor = Advisor::new(
            &hub,
            store.clone(),
            market.clone(),
            llm_provider(&settings),
            background.clone(),
            shutdown.clone(),
        );
        advisor.register(&hub);
        tracing::info!(
            provider = advisor.provider().name(),
            model = advisor.provider().model(),
            "advisor ready"
        );
        {
            let hub = hub.clone();
            let stop = shutdown.clone();
            background.spawn(async move {
                let mut every = tokio::time::interval(Duration::from_secs(60));
                loop {
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = every.tick() => hub.prune_limiters(),
                    }
                }
            });
        }

        let state = AppState {
            hub,
            store,
            market,
            alerts,
            settings,
            tracker: TaskTracker::new(),
        };
        Ok(Self {
            listener,
            local_addr,
            state,
            shutdown,
            background,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Cancelling this token shuts the application down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    pub fn hub(&self) -> Arc<Hub> {
        self.state.hub.clone()
    }

    /// Serve until the shutdown token is cancelled; then close every session with 3001, wait for
    /// connection and background tasks (up to `server.shutdown_grace_ms`), and return.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            listener,
            state,
            shutdown,
            background,
            ..
        } = self;
        let grace = Duration::from_millis(state.settings.server.shutdown_grace_ms);
        let tracker = state.tracker.clone();
        let store = state.store.clone();
        let app = http::router(state);
        tracing::info!(addr = %listener.local_addr()?, "gpuscout hub listening");
        let stop = shutdown.clone();
        // Pushes are small writes that must leave at once: no Nagle delay behind an unacked one.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!(error = %e, "TCP_NODELAY not set");
            }
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await
            .context("HTTP server")?;
        // Sessions saw the same token and are closing with 3001.
        shutdown.cancel();
        tracker.close();
        background.close();
        let drained = tokio::time::timeout(grace, async {
            tracker.wait().await;
            background.wait().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("shutdown grace period over with tasks still running");
        }
        store.close().await;
        tracing::info!("gpuscout hub stopped");
        Ok(())
    }
}

/// reqwest uses rustls with the ring provider, which must be installed before any HTTP client is
/// built. Idempotent.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// The advisor's language model, as `advisor.provider` says.
fn llm_provider(settings: &Settings) -> Arc<dyn LlmProvider> {
    let a = &settings.advisor;
    let timeouts = Timeouts {
        first_byte: Duration::from_millis(a.first_byte_timeout_ms),
        idle: Duration::from_millis(a.idle_timeout_ms),
    };
    match a.provider {
        AdvisorProviderKind::Offline => {
            Arc::new(OfflineProvider::new(Duration::from_millis(a.offline_delta_interval_ms)))
        }
        AdvisorProviderKind::Anthropic => {
            Arc::new(AnthropicProvider::new(advisor::http_client(), &a.anthropic, timeouts))
        }
        AdvisorProviderKind::Gemini => Arc::new(GeminiProvider::new(advisor::http_client(), &a.gemini, timeouts)),
        AdvisorProviderKind::Openai => Arc::new(OpenAiProvider::new(advisor::http_client(), &a.openai, timeouts)),
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}

/// Run `task` while this node is the leader: started when it gains the lead, stopped when it
/// loses it, until `shutdown`.
async fn leader_only<F, Fut>(leadership: Leadership, shutdown: CancellationToken, task: F)
where
    F: Fn(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = leadership.until_leader() => {}
        }
        let stop = shutdown.child_token();
        tokio::select! {
            _ = task(stop.clone()) => {}
            _ = leadership.until_follower() => stop.cancel(),
        }
        if shutdown.is_cancelled() {
            return;
        }
    }
}
