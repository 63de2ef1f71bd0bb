//! Wiring: `Application::build` chooses the backends the settings ask for, builds every part
//! whole from its parts, starts the background tasks and binds the listener;
//! `run_until_stopped` serves until shutdown or the death of a critical task, then drains.
//!
//! The only place that chooses a backend, and the only place that connects parts.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::advisor::anthropic::AnthropicProvider;
use crate::advisor::gemini::GeminiProvider;
use crate::advisor::offline::OfflineProvider;
use crate::advisor::openai::OpenAiProvider;
use crate::advisor::{self, Advisor, AdvisorParts, LlmProvider, Timeouts};
use crate::alerts::DeliveryChannel;
use crate::alerts::delivery::{AlertService, Delivery};
use crate::alerts::email::Mailer;
use crate::alerts::push::PushSender;
use crate::auth::TokenVerifier;
use crate::bus::leader::Leadership;
use crate::bus::redis::redis_builder;
use crate::bus::snapshots::SnapshotReplica;
use crate::bus::users::{HEARTBEAT_EVERY, LocalUsers, RedisUsers, UserState};
use crate::bus::{Bus, MemoryBus, RedisBus};
use crate::clock::unix_now_s;
use crate::config::{AdvisorProviderKind, Settings};
use crate::http::{self, AppParts, AppState};
use crate::hub::{Hub, HubParts};
use crate::ingest;
use crate::ingest::runner::{Role, RunnerParts};
use crate::ingest::snapshots::MarketSnapshots;
use crate::market::Market;
use crate::portfolio::vast_host::VastHost;
use crate::portfolio::{Portfolio, PortfolioParts};
use crate::secrets::Sealer;
use crate::store::Store;
use crate::store::queue::WriteQueue;
use crate::store::retention::Cutoffs;
use crate::tasks::Tasks;
use crate::telemetry::Metrics;
use crate::tier::Tier;

pub struct Application {
    listener: TcpListener,
    local_addr: SocketAddr,
    state: AppState,
    tasks: Tasks,
}

/// The parts that differ between one node and several sharing Redis.
struct Cluster {
    /// This node's id (new at each start), as the other nodes know it.
    node_id: String,
    bus: Arc<dyn Bus>,
    users: Arc<dyn UserState>,
    role: Role,
}

impl Application {
    /// Build every part from the settings, start the background tasks and bind the listener
    /// (port 0 picks a free one). Parts are built bottom-up: store and cluster, market, alerts,
    /// advisor, then the hub from all of them; nothing is wired in afterwards.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        settings.validate()?;
        install_tls_provider();
        let settings = Arc::new(settings);
        let tasks = Tasks::new(CancellationToken::new());
        let store = open_store(&settings).await?;
        let metrics = Arc::new(Metrics::default());
        let cluster = connect_cluster(&settings, uuid::Uuid::new_v4().to_string(), &tasks, &metrics).await?;
        restore_revocations(&store, cluster.users.as_ref()).await?;
        let market = Market::default();
        let (writes, writer) = WriteQueue::new(metrics.clone());
        tasks.spawn_critical("store-writer", writer.run(tasks.stop_token().clone()));

        let portfolio = start_portfolio(&settings, &store, &cluster, &market)?;
        let alerts = AlertService::start(
            store.clone(),
            writes.clone(),
            cluster.bus.clone(),
            alert_delivery(&settings, &metrics)?,
            portfolio.clone(),
        )
        .await
        .context("loading alert rules")?;
        let advisor = start_advisor(&settings, &store, &cluster, &market, &portfolio, &metrics, &tasks).await;
        let verifier = token_verifier(&settings).await?;
        let snapshots = subscribe_snapshots(&settings, &cluster, &market, &portfolio, &metrics);
        let hub = build_hub(&settings, &cluster, verifier, &metrics, snapshots, &advisor, &tasks);
        spawn_node_tasks(&hub, &advisor, &alerts, &cluster.role, &tasks);
        spawn_retention(&store, &settings, &cluster.role, &tasks);
        spawn_portfolio(&portfolio, &hub, &cluster.role, &tasks);
        let runner = RunnerParts {
            market: market.clone(),
            bus: cluster.bus.clone(),
            metrics,
            store: store.clone(),
            writes,
            alerts: alerts.clone(),
            role: cluster.role,
        };
        ingest::runner::spawn(runner, &settings.ingest, &tasks);

        let (listener, local_addr) = bind(&settings).await?;
        let state = AppState::new(AppParts {
            hub,
            store,
            market,
            alerts,
            portfolio,
            limits: Arc::new(http::limits::RestLimits::new(&settings)),
            settings,
            tracker: TaskTracker::new(),
            tasks: tasks.clone(),
        });
        Ok(Self {
            listener,
            local_addr,
            state,
            tasks,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Cancelling this token shuts the application down gracefully.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.tasks.stop_token().clone()
    }

    pub fn hub(&self) -> Arc<Hub> {
        self.state.hub.clone()
    }

    /// The background tasks (the critical ones can be killed through it, for fault tests).
    pub fn tasks(&self) -> Tasks {
        self.tasks.clone()
    }

    /// Serve until the shutdown token is cancelled or a critical task dies; then close every
    /// session with 3001, wait for connection and background tasks (up to
    /// `server.shutdown_grace_ms`), and return: `Err` naming the task when one died.
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        let Self {
            listener, state, tasks, ..
        } = self;
        let shutdown = tasks.stop_token().clone();
        let grace = Duration::from_millis(state.settings.server.shutdown_grace_ms);
        let tracker = state.tracker.clone();
        let store = state.store.clone();
        let state_header_timeout_ms = state.settings.server.header_timeout_ms;
        let app = http::router(state);
        tracing::info!(addr = %listener.local_addr()?, "gpuscout hub listening");
        let header_timeout = Duration::from_millis(state_header_timeout_ms);
        let server = http::serve::serve(listener, app, header_timeout, shutdown.clone(), grace);
        let died = tokio::select! {
            () = server => None,
            name = tasks.first_death() => Some(name),
        };
        // Sessions saw the same token and are closing with 3001.
        shutdown.cancel();
        tracker.close();
        let drained = tokio::time::timeout(grace, async {
            tracker.wait().await;
            tasks.close_and_wait().await;
        })
        .await;
        if drained.is_err() {
            tracing::warn!("shutdown grace period over with tasks still running");
        }
        store.close().await;
        if let Some(name) = died {
            tracing::error!(task = %name, "gpuscout hub stopped: a critical task died");
            anyhow::bail!("critical task `{name}` died; the node stopped");
        }
        tracing::info!("gpuscout hub stopped");
        Ok(())
    }
}

/// The hub, from every part it serves: subscribe snapshots from the market, RPC from the advisor.
fn build_hub(
    settings: &Arc<Settings>,
    cluster: &Cluster,
    verifier: Arc<TokenVerifier>,
    metrics: &Arc<Metrics>,
    snapshots: Arc<MarketSnapshots>,
    advisor: &Arc<Advisor>,
    tasks: &Tasks,
) -> Arc<Hub> {
    let parts = HubParts {
        settings: settings.clone(),
        bus: cluster.bus.clone(),
        verifier,
        metrics: metrics.clone(),
        users: cluster.users.clone(),
        snapshots,
        rpc: advisor.rpc_handlers().into_iter().collect(),
        leadership: cluster.role.leadership.clone(),
        shutdown: tasks.stop_token().clone(),
    };
    Hub::new(parts, cluster.node_id.clone())
}

/// The listener on `server.listen`, and the address it got.
async fn bind(settings: &Settings) -> anyhow::Result<(TcpListener, SocketAddr)> {
    let addr = settings.server.listen_addr()?;
    let listener = listen(addr).with_context(|| format!("binding server.listen = {addr}"))?;
    let local_addr = listener.local_addr()?;
    Ok((listener, local_addr))
}

/// Connections the kernel queues before the hub accepts them (capped by `net.core.somaxconn`):
/// room for the clients of a drained node reconnecting at once, where the standard 128 would
/// drop SYNs and make them wait a second or more to retry.
const LISTEN_BACKLOG: u32 = 4096;

fn listen(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(LISTEN_BACKLOG)
}

/// The in-process bus for one node; with `bus.redis_url`, the Redis bus, shared user state and
/// a campaign for leadership (a critical task).
async fn connect_cluster(
    settings: &Settings,
    node_id: String,
    tasks: &Tasks,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<Cluster> {
    let b = &settings.bus;
    if b.redis_url.is_empty() {
        return Ok(Cluster {
            node_id,
            bus: Arc::new(MemoryBus::new(b)),
            users: Arc::new(LocalUsers::default()),
            role: Role::single_node(),
        });
    }
    let (bus, delivery) = RedisBus::connect(b, tasks.stop_token(), metrics.clone())
        .await
        .context("connecting to Redis (bus.redis_url)")?;
    tasks.spawn_critical("bus-delivery", delivery);
    let (leadership, campaign) = Leadership::campaign(
        bus.client(),
        format!("{}.leader", b.redis_prefix),
        node_id.clone(),
        Duration::from_millis(b.leader_lease_ms),
        tasks.stop_token().clone(),
    );
    tasks.spawn_critical("leadership", campaign);
    let subscriber = redis_builder(&b.redis_url, 64)?
        .build_subscriber_client()
        .context("bus.redis_url")?;
    let (users, control) = RedisUsers::start(bus.clients(), subscriber, &b.redis_prefix, &node_id, tasks.stop_token())
        .await
        .context("connecting to Redis (bus.redis_url)")?;
    tasks.spawn_critical("control-listener", control);
    let replica = SnapshotReplica::new(bus.client(), &b.redis_prefix);
    Ok(Cluster {
        node_id,
        bus: Arc::new(bus),
        users: Arc::new(users),
        role: Role {
            leadership,
            replica: Some(Arc::new(replica)),
        },
    })
}

/// Give memory freed in bulk back to the system: glibc keeps freed small allocations in its
/// arenas, so a hub that freed 100,000 idle channels would otherwise stay at its peak.
fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only releases free heap memory; it touches no live allocation.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Revoked tokens stay revoked across a restart: the stored ones are handed to the user state
/// (on Redis they are usually still there; in memory they are not).
async fn restore_revocations(store: &Store, users: &dyn UserState) -> anyhow::Result<()> {
    let revoked = store
        .revoked_tokens(unix_now_s() as i64)
        .await
        .context("reading revoked tokens")?;
    for (jti, expire_at_s) in &revoked {
        users
            .revoke(jti, u64::try_from(*expire_at_s).unwrap_or(0))
            .await
            .context("restoring revoked tokens")?;
    }
    if !revoked.is_empty() {
        tracing::info!(tokens = revoked.len(), "revoked tokens restored");
    }
    Ok(())
}

/// The advisor on the configured provider. One node runs the advisor on this database at a
/// time, so answers left streaming by a stopped hub are marked failed first.
async fn start_advisor(
    settings: &Arc<Settings>,
    store: &Store,
    cluster: &Cluster,
    market: &Market,
    portfolio: &Arc<Portfolio>,
    metrics: &Arc<Metrics>,
    tasks: &Tasks,
) -> Arc<Advisor> {
    match store.fail_unfinished_messages().await {
        Ok(0) => {}
        Ok(n) => tracing::info!(answers = n, "marked interrupted advisor answers as failed"),
        Err(e) => tracing::warn!(error = %e, "marking interrupted advisor answers failed"),
    }
    let parts = AdvisorParts {
        bus: cluster.bus.clone(),
        users: cluster.users.clone(),
        store: store.clone(),
        market: market.clone(),
        settings: settings.clone(),
        provider: llm_provider(settings),
        portfolio: portfolio.clone(),
        metrics: metrics.clone(),
    };
    let advisor = Advisor::new(parts, tasks);
    tracing::info!(
        provider = advisor.provider().name(),
        model = advisor.provider().model(),
        "advisor ready"
    );
    advisor
}

/// The node's own critical tasks besides the market's: the connection heartbeat, limiter
/// pruning, the control-message followers, and the webhook outbox (on the leader).
/// The portfolio: platform keys sealed with `secrets.encryption_key`, the host API, and the
/// leader's task that polls linked accounts and keeps every user's `portfolio:#<uid>` current.
fn start_portfolio(
    settings: &Arc<Settings>,
    store: &Store,
    cluster: &Cluster,
    market: &Market,
) -> anyhow::Result<Arc<Portfolio>> {
    use secrecy::ExposeSecret;
    let s = &settings.secrets;
    let previous: Vec<&str> = s.previous_encryption_keys.iter().map(|k| k.expose_secret()).collect();
    let sealer = Sealer::new(s.current_key(), &previous).context("secrets.encryption_key")?;
    let host = &settings.ingest.vast_host;
    Ok(Portfolio::new(PortfolioParts {
        store: store.clone(),
        bus: cluster.bus.clone(),
        market: market.clone(),
        settings: settings.portfolio.clone(),
        sealer,
        host: VastHost::new(
            crate::upstream::http_client(),
            &host.base_url,
            Duration::from_millis(host.timeout_ms),
        ),
        replica: cluster.role.replica.clone(),
        leadership: cluster.role.leadership.clone(),
    }))
}

/// The token verifier; with `auth.jwks_url`, the provider's keys fetched now (a failure is
/// retried when the first token arrives).
async fn token_verifier(settings: &Settings) -> anyhow::Result<Arc<TokenVerifier>> {
    let verifier = TokenVerifier::new(&settings.auth).context("auth settings")?;
    if let Err(e) = verifier.load_jwks().await {
        tracing::warn!(error = %e, "the JWKS could not be fetched at start; retried on the first token");
    }
    Ok(Arc::new(verifier))
}

/// The database, connected and migrated.
async fn open_store(settings: &Settings) -> anyhow::Result<Store> {
    let store = Store::connect(&settings.database)
        .await
        .context("connecting to the database")?;
    store.migrate().await.context("running database migrations")?;
    Ok(store)
}

/// Subscribe snapshots: the market channels and the users' portfolios.
fn subscribe_snapshots(
    settings: &Settings,
    cluster: &Cluster,
    market: &Market,
    portfolio: &Arc<Portfolio>,
    metrics: &Arc<Metrics>,
) -> Arc<MarketSnapshots> {
    Arc::new(
        MarketSnapshots::new(
            market.clone(),
            cluster.role.leadership.clone(),
            cluster.role.replica.clone(),
            settings.api.allow_market_channels,
        )
        .with_portfolio(portfolio.clone())
        .with_metrics(metrics.clone()),
    )
}

/// A host's machines are polled and priced by the leader alone.
fn spawn_portfolio(portfolio: &Arc<Portfolio>, hub: &Arc<Hub>, role: &Role, tasks: &Tasks) {
    tasks.spawn_critical(
        "portfolio",
        leader_only(role.leadership.clone(), tasks.stop_token().clone(), {
            let (portfolio, control) = (portfolio.clone(), hub.users().control().clone());
            move |stop| portfolio.clone().run(control.clone(), stop)
        }),
    );
}

/// How alerts leave the hub: the channels each tier allows, Web Push and e-mail when set.
fn alert_delivery(settings: &Settings, metrics: &Arc<Metrics>) -> anyhow::Result<Delivery> {
    let tier_channels = Tier::ALL
        .into_iter()
        .map(|t| {
            let allowed = DeliveryChannel::ALL
                .into_iter()
                .filter(|c| settings.tier(t).delivers(c.as_str()))
                .collect();
            (t, allowed)
        })
        .collect();
    Ok(Delivery {
        settings: settings.alerts.clone(),
        tier_channels,
        push: PushSender::new(&settings.push),
        mailer: Mailer::new(&settings.email).context("email settings")?,
        max_emails_per_hour: settings.email.max_per_hour,
        metrics: metrics.clone(),
    })
}

fn spawn_node_tasks(hub: &Arc<Hub>, advisor: &Arc<Advisor>, alerts: &Arc<AlertService>, role: &Role, tasks: &Tasks) {
    let stop = tasks.stop_token().clone();
    tasks.spawn_critical(
        "user-heartbeat",
        every(HEARTBEAT_EVERY, stop.clone(), {
            let hub = hub.clone();
            // Keep this node's connection entries alive in the shared counts.
            move || {
                let hub = hub.clone();
                async move { hub.users().heartbeat(hub.session_pairs()).await }
            }
        }),
    );
    tasks.spawn_critical(
        "limiter-pruning",
        every(Duration::from_secs(60), stop.clone(), {
            let hub = hub.clone();
            move || {
                hub.prune_limiters();
                std::future::ready(())
            }
        }),
    );
    let idle = Duration::from_secs(hub.settings.bus.idle_channel_ttl_s);
    tasks.spawn_critical(
        "channel-pruning",
        every(
            (idle / 2).clamp(Duration::from_secs(1), Duration::from_secs(60)),
            stop.clone(),
            {
                let hub = hub.clone();
                move || {
                    let pruned = hub.bus.prune_idle();
                    if pruned > 0 {
                        tracing::debug!(channels = pruned, "idle channels freed");
                    }
                    if pruned >= 100 {
                        return_freed_memory();
                    }
                    std::future::ready(())
                }
            },
        ),
    );
    tasks.spawn_critical("control:hub", hub.follow_revocations());
    let reconcile = Duration::from_millis(hub.settings.alerts.reconcile_interval_ms);
    tasks.spawn_critical(
        "control:alerts",
        alerts.follow_rule_changes(hub.users().control(), reconcile, stop.clone()),
    );
    tasks.spawn_critical("control:advisor", advisor.follow_cancellations());
    // Webhooks are delivered by the leader alone (one worker on the shared outbox).
    tasks.spawn_critical(
        "webhook-outbox",
        leader_only(role.leadership.clone(), stop, {
            let alerts = alerts.clone();
            move |stop| alerts.clone().run_outbox(stop)
        }),
    );
}

/// The leader folds and deletes old rows every `store.retention_interval_s` (the first pass at
/// once), as `store.*_retention_days` say.
fn spawn_retention(store: &Store, settings: &Settings, role: &Role, tasks: &Tasks) {
    let period = Duration::from_secs(settings.store.retention_interval_s);
    let retention = settings.store.clone();
    let store = store.clone();
    tasks.spawn_critical(
        "retention",
        leader_only(role.leadership.clone(), tasks.stop_token().clone(), move |stop| {
            let (store, retention) = (store.clone(), retention.clone());
            every(period, stop, move || {
                let (store, retention) = (store.clone(), retention.clone());
                async move {
                    let cutoffs = Cutoffs::of(&retention, crate::clock::unix_now_ms() as i64);
                    match store.enforce_retention(&cutoffs).await {
                        Ok(p) => tracing::info!(
                            hours_folded = p.hours_folded,
                            minutes_deleted = p.minutes_deleted,
                            hours_deleted = p.hours_deleted,
                            alert_events_deleted = p.alert_events_deleted,
                            messages_deleted = p.messages_deleted,
                            "retention pass"
                        ),
                        Err(e) => tracing::warn!(error = %e, "retention pass failed; the next one retries"),
                    }
                }
            })
        }),
    );
}

/// Run `work` every `period` (the first at once) until `stop`.
async fn every<F, Fut>(period: Duration, stop: CancellationToken, mut work: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut ticks = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = ticks.tick() => work().await,
        }
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
