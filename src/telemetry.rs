//! Logging (tracing, pretty or JSON) and the Prometheus metrics registry.
//!
//! Metrics are plain atomics rendered in the Prometheus text format: the hot path pays one relaxed
//! atomic add per event and nothing else. Series with labels of events far rarer than deliveries
//! (HTTP requests, source polls, alert deliveries, advisor answers) sit behind one short lock
//! ([`Labelled`]); the process figures are read from `/proc` when scraped ([`process`]).

mod process;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Install the global tracing subscriber. `RUST_LOG` wins over `log.level`.
pub fn init_tracing(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    // Colours only for a person at a terminal: a log file or journald gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        // A log line that cannot be written (stderr a pipe whose reader is gone) is dropped; the
        // default reports it with `eprintln!`, which panics on that same stderr.
        .log_internal_errors(false)
        .with_writer(std::io::stderr);
    let _ = match settings.format {
        LogFormat::Json => builder.json().try_init(),
        LogFormat::Pretty => builder.try_init(),
    };
}

/// The commands whose latency is measured separately.
#[derive(Debug, Clone, Copy)]
pub enum CommandKind {
    Connect,
    Subscribe,
    Unsubscribe,
    Rpc,
    Refresh,
    SubRefresh,
    Publish,
    Other,
}

impl CommandKind {
    const ALL: [CommandKind; 8] = [
        CommandKind::Connect,
        CommandKind::Subscribe,
        CommandKind::Unsubscribe,
        CommandKind::Rpc,
        CommandKind::Refresh,
        CommandKind::SubRefresh,
        CommandKind::Publish,
        CommandKind::Other,
    ];
    fn label(self) -> &'static str {
        match self {
            CommandKind::Connect => "connect",
            CommandKind::Subscribe => "subscribe",
            CommandKind::Unsubscribe => "unsubscribe",
            CommandKind::Rpc => "rpc",
            CommandKind::Refresh => "refresh",
            CommandKind::SubRefresh => "sub_refresh",
            CommandKind::Publish => "publish",
            CommandKind::Other => "other",
        }
    }
}

/// Upper bounds (seconds) of the command latency histogram buckets.
const LATENCY_BUCKETS_S: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// Upper bounds (seconds) of the HTTP request and advisor first-token histograms: requests that
/// wait on a database or a model take milliseconds to seconds.
const SLOW_BUCKETS_S: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

struct Histogram {
    bounds: &'static [f64],
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_ns: AtomicU64::new(0),
        }
    }

    fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = self.bounds.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    /// This histogram's series for one label set (`labels`: `key="value",…`): cumulative
    /// buckets, `+Inf`, sum and count.
    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bucket, le) in self.buckets.iter().zip(self.bounds) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{le}\"}} {cumulative}");
        }
        // Prometheus wants the `+Inf` bucket to equal the count, including slower observations
        // that no finite bucket holds.
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
    }
}

/// How one attempt to deliver an alert by push, e-mail or webhook ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum DeliveryResult {
    Delivered,
    /// Failed, to be tried again later.
    Retried,
    /// Failed for good (a refusal, or the last attempt).
    Failed,
}

impl DeliveryResult {
    fn label(self) -> &'static str {
        match self {
            DeliveryResult::Delivered => "delivered",
            DeliveryResult::Retried => "retried",
            DeliveryResult::Failed => "failed",
        }
    }
}

/// The labelled series: keys are label values, in the order their metric names them.
#[derive(Default)]
struct Labelled {
    /// route → status → request latency (by route first, so a request finds its series
    /// without allocating).
    http: BTreeMap<String, BTreeMap<u16, Histogram>>,
    /// (source, "ok" | "error") → polls.
    polls: BTreeMap<(&'static str, &'static str), u64>,
    /// (channel, result) → delivery attempts.
    alert_deliveries: BTreeMap<(String, DeliveryResult), u64>,
    /// provider → time to the first token of an answer.
    advisor_first_token: BTreeMap<&'static str, Histogram>,
    /// provider → failed requests.
    advisor_errors: BTreeMap<&'static str, u64>,
}

/// Every counter and gauge the hub exports.
pub struct Metrics {
    pub connections: AtomicI64,
    pub connections_total: AtomicU64,
    pub subscriptions: AtomicI64,
    /// Node-level bus subscriptions (one per channel with local subscribers).
    pub bus_subscriptions: AtomicI64,
    pub publications_total: AtomicU64,
    pub deliveries_total: AtomicU64,
    pub queue_drops_total: AtomicU64,
    pub slow_disconnects_total: AtomicU64,
    pub disconnects_total: AtomicU64,
    pub connection_panics_total: AtomicU64,
    pub write_timeouts_total: AtomicU64,
    pub refused_connections_total: AtomicU64,
    pub store_queue_depth: AtomicI64,
    pub store_queue_dropped_total: AtomicU64,
    pub store_write_retries_total: AtomicU64,
    pub frames_written_total: AtomicU64,
    pub snapshots_built_total: AtomicU64,
    pub snapshot_replica_reads_total: AtomicU64,
    pub bus_history_cached_total: AtomicU64,
    pub commands_rejected_rate_total: AtomicU64,
    command_latency: [Histogram; CommandKind::ALL.len()],
    labelled: Mutex<Labelled>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            connections: AtomicI64::default(),
            connections_total: AtomicU64::default(),
            subscriptions: AtomicI64::default(),
            bus_subscriptions: AtomicI64::default(),
            publications_total: AtomicU64::default(),
            deliveries_total: AtomicU64::default(),
            queue_drops_total: AtomicU64::default(),
            slow_disconnects_total: AtomicU64::default(),
            disconnects_total: AtomicU64::default(),
            connection_panics_total: AtomicU64::default(),
            write_timeouts_total: AtomicU64::default(),
            refused_connections_total: AtomicU64::default(),
            store_queue_depth: AtomicI64::default(),
            store_queue_dropped_total: AtomicU64::default(),
            store_write_retries_total: AtomicU64::default(),
            frames_written_total: AtomicU64::default(),
            snapshots_built_total: AtomicU64::default(),
            snapshot_replica_reads_total: AtomicU64::default(),
            bus_history_cached_total: AtomicU64::default(),
            commands_rejected_rate_total: AtomicU64::default(),
            command_latency: std::array::from_fn(|_| Histogram::new(&LATENCY_BUCKETS_S)),
            labelled: Mutex::default(),
        }
    }
}

impl Metrics {
    pub fn observe_command(&self, kind: CommandKind, elapsed: Duration) {
        self.command_latency[kind as usize].observe(elapsed);
    }

    /// The labelled series; a panic elsewhere while it was held leaves counts worth keeping.
    fn labelled(&self) -> std::sync::MutexGuard<'_, Labelled> {
        self.labelled.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// One HTTP request answered: `route` is its pattern (`/api/v1/keys/{id}`), never the raw
    /// path, so the series stay few.
    pub fn observe_http(&self, route: &str, status: u16, elapsed: Duration) {
        let mut labelled = self.labelled();
        let by_status = match labelled.http.get_mut(route) {
            Some(by_status) => by_status,
            None => labelled.http.entry(route.to_owned()).or_default(),
        };
        by_status
            .entry(status)
            .or_insert_with(|| Histogram::new(&SLOW_BUCKETS_S))
            .observe(elapsed);
    }

    /// One poll of `source`, successful or not.
    pub fn count_poll(&self, source: &'static str, ok: bool) {
        let result = if ok { "ok" } else { "error" };
        *self.labelled().polls.entry((source, result)).or_default() += 1;
    }

    /// One attempt to deliver an alert by `channel` (push, email, webhook).
    pub fn count_alert_delivery(&self, channel: &str, result: DeliveryResult) {
        *self
            .labelled()
            .alert_deliveries
            .entry((channel.to_owned(), result))
            .or_default() += 1;
    }

    /// The first token of an advisor answer came `elapsed` after the request to `provider`.
    pub fn observe_advisor_first_token(&self, provider: &'static str, elapsed: Duration) {
        self.labelled()
            .advisor_first_token
            .entry(provider)
            .or_insert_with(|| Histogram::new(&SLOW_BUCKETS_S))
            .observe(elapsed);
    }

    /// A request to `provider` failed (each retry counts).
    pub fn count_advisor_error(&self, provider: &'static str) {
        *self.labelled().advisor_errors.entry(provider).or_default() += 1;
    }

    pub fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Render in the Prometheus text exposition format.
    pub fn render(&self, extra: &[(&str, &str, f64)]) -> String {
        let mut out = String::with_capacity(4096);
        for (name, help, kind, read) in SCALARS {
            write_sample(&mut out, name, help, kind, read(self));
        }
        self.render_command_latency(&mut out);
        self.render_labelled(&mut out);
        // Values only the caller knows (channels, users, leadership) follow as gauges.
        for (name, help, value) in extra {
            write_sample(&mut out, name, help, MetricKind::Gauge, value);
        }
        let name = "gpuscout_build_info";
        header(
            &mut out,
            name,
            "The running build: version and commit (always 1).",
            MetricKind::Gauge,
        );
        let (version, commit) = (crate::VERSION, crate::COMMIT);
        let _ = writeln!(out, "{name}{{version=\"{version}\",commit=\"{commit}\"}} 1");
        process::render(&mut out);
        out
    }

    /// The labelled counters and histograms. Each is declared even before its first event, so
    /// a dashboard finds the name.
    fn render_labelled(&self, out: &mut String) {
        let l = self.labelled();
        let name = "gpuscout_http_requests_total";
        header(
            out,
            name,
            "HTTP requests answered, by route pattern and status.",
            MetricKind::Counter,
        );
        let http = || l.http.iter().flat_map(|(r, by)| by.iter().map(move |(s, h)| (r, s, h)));
        for (route, status, h) in http() {
            let count = h.count.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}{{route=\"{}\",status=\"{status}\"}} {count}", escape(route));
        }
        let name = "gpuscout_http_request_duration_seconds";
        header(
            out,
            name,
            "Time to answer an HTTP request, by route pattern and status.",
            MetricKind::Histogram,
        );
        for (route, status, h) in http() {
            h.render(out, name, &format!("route=\"{}\",status=\"{status}\"", escape(route)));
        }
        let name = "gpuscout_source_polls_total";
        header(
            out,
            name,
            "Source polls made by this node (only the leader polls), by result.",
            MetricKind::Counter,
        );
        for ((source, result), n) in &l.polls {
            let _ = writeln!(out, "{name}{{source=\"{source}\",result=\"{result}\"}} {n}");
        }
        let name = "gpuscout_alert_deliveries_total";
        let help = "Alert delivery attempts by push, e-mail and webhook, by channel and result.";
        header(out, name, help, MetricKind::Counter);
        for ((channel, result), n) in &l.alert_deliveries {
            let (channel, result) = (escape(channel), result.label());
            let _ = writeln!(out, "{name}{{channel=\"{channel}\",result=\"{result}\"}} {n}");
        }
        let name = "gpuscout_advisor_first_token_seconds";
        let help = "Time from an advisor request to the provider's first token, by provider.";
        header(out, name, help, MetricKind::Histogram);
        for (provider, h) in &l.advisor_first_token {
            h.render(out, name, &format!("provider=\"{provider}\""));
        }
        let name = "gpuscout_advisor_errors_total";
        header(
            out,
            name,
            "Failed advisor requests (each retry counts), by provider.",
            MetricKind::Counter,
        );
        for (provider, n) in &l.advisor_errors {
            let _ = writeln!(out, "{name}{{provider=\"{provider}\"}} {n}");
        }
    }

    /// The command latency histogram, one series per command kind.
    fn render_command_latency(&self, out: &mut String) {
        let name = "gpuscout_command_duration_seconds";
        header(out, name, "Time to handle a client command.", MetricKind::Histogram);
        for kind in CommandKind::ALL {
            let labels = format!("command=\"{}\"", kind.label());
            self.command_latency[kind as usize].render(out, name, &labels);
        }
    }
}

/// A metric's Prometheus type.
#[derive(Debug, Clone, Copy)]
enum MetricKind {
    Gauge,
    Counter,
    Histogram,
}

impl MetricKind {
    /// The name on the `# TYPE` line.
    fn as_str(self) -> &'static str {
        match self {
            MetricKind::Gauge => "gauge",
            MetricKind::Counter => "counter",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// Reads a metric's current value. `i128` holds every `i64` gauge and `u64` counter exactly, so the
/// printed digits are those of the atomic itself.
type Read = fn(&Metrics) -> i128;

/// The plain gauges and counters, in the order they are rendered: (name, help, kind, read).
const SCALARS: [(&str, &str, MetricKind, Read); 20] = [
    (
        "gpuscout_store_queue_depth",
        "Database writes (alert firings, rule conditions, minute snapshots) waiting to be written.",
        MetricKind::Gauge,
        |m| m.store_queue_depth.load(Ordering::Relaxed).into(),
    ),
    (
        "gpuscout_store_queue_dropped_total",
        "Database writes dropped because the write queue was full.",
        MetricKind::Counter,
        |m| m.store_queue_dropped_total.load(Ordering::Relaxed).into(),
    ),
    (
        "gpuscout_store_write_retries_total",
        "Failed database writes of the write queue, each retried.",
        MetricKind::Counter,
        |m| m.store_write_retries_total.load(Ordering::Relaxed).into(),
    ),
    (
        "gpuscout_connections",
        "Open client connections.",
        MetricKind::Gauge,
        |m| m.connections.load(Ordering::Relaxed).into(),
    ),
    (
        "gpuscout_subscriptions",
        "Client channel subscriptions.",
        MetricKind::Gauge,
        |m| m.subscriptions.load(Ordering::Relaxed).into(),
    ),
    (
        "gpuscout_bus_subscriptions",
        "Channels this node is subscribed to on the bus.",
        MetricKind::Gauge,
        |m| m.bus_subscriptions.load(Ordering::Relaxed).into(),
    ),
    (
        "gpuscout_connections_total",
        "Connections accepted.",
        MetricKind::Counter,
        |m| m.connections_total.load(Ordering::Relaxed).into(),
    ),
    (
        "gpuscout_publications_total",
        "Publications fanned out by this node.",
        MetricKind::Counter,
        |m| m.publications_total.load(Ordering::Relaxed).into(),
    ),
    (
        "gpuscout_deliveries_total",
        "Publications queued to client connections.",
        MetricKind::Counter,
        |m| m.deliveries_total.load(Ordering::Relaxed).into(),
    ),
    (
        "gpuscout_queue_drops_total",
        "Messages dropped because a connection queue was full.",
        MetricKind::Counter,
        |m| m.queue_drops_total.load(Ordering::Relaxed).into(),
    ),
    (
        "gpuscout_slow_disconnects_total",
        "Connections closed with 3008 (slow consumer).",
        MetricKind::Counter,
        |m| m.slow_disconnects_total.load(Ordering::Relaxed).into(),
    ),
    (
        "gpuscout_disconnects_total",
        "Connections closed, for any reason.",
        MetricKind::Counter,
        |m| m.disconnects_total.load(Ordering::Relaxed).into(),
    ),
    (
        "gpuscout_refused_connections_total",
        "WebSocket upgrades answered 503 because the node held server.max_connections.",
        MetricKind::Counter,
        |m| m.refused_connections_total.load(Ordering::Relaxed).into(),
    ),
    (
        "gpuscout_write_timeouts_total",
        "Connections closed with 3008 because a write took longer than server.write_timeout_ms.",
        MetricKind::Counter,
        |m| m.write_timeouts_total.load(Ordering::Relaxed).into(),
    ),
    (
        "gpuscout_connection_panics_total",
        "Connection tasks that panicked (their sessions were freed; a bug to report).",
        MetricKind::Counter,
        |m| m.connection_panics_total.load(Ordering::Relaxed).into(),
    ),
    (
        "gpuscout_frames_written_total",
        "WebSocket frames written to clients.",
        MetricKind::Counter,
        |m| m.frames_written_total.load(Ordering::Relaxed).into(),
    ),
    (
        "gpuscout_snapshots_built_total",
        "Market channel snapshots built for subscribe replies from this node's market: one per channel and market version, shared by every subscriber of that version.",
        MetricKind::Counter,
        |m| m.snapshots_built_total.load(Ordering::Relaxed).into(),
    ),
    (
        "gpuscout_snapshot_replica_reads_total",
        "Market channel snapshots read from the leader's copy in Redis for subscribe replies (a follower; large ones are kept for a second and shared).",
        MetricKind::Counter,
        |m| m.snapshot_replica_reads_total.load(Ordering::Relaxed).into(),
    ),
    (
        "gpuscout_bus_history_cached_total",
        "Channel positions and recoveries for subscribes answered from this node's copy of a delivered channel's recent tail (read from Redis at most a second before) instead of a Redis read.",
        MetricKind::Counter,
        |m| m.bus_history_cached_total.load(Ordering::Relaxed).into(),
    ),
    (
        "gpuscout_commands_rate_limited_total",
        "Commands refused with 111 (too many requests).",
        MetricKind::Counter,
        |m| m.commands_rejected_rate_total.load(Ordering::Relaxed).into(),
    ),
];

/// A metric's `# HELP` and `# TYPE` lines.
fn header(out: &mut String, name: &str, help: &str, kind: MetricKind) {
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {}", kind.as_str());
}

/// One metric without labels: its `# HELP` and `# TYPE` lines and its sample.
fn write_sample(out: &mut String, name: &str, help: &str, kind: MetricKind, value: impl std::fmt::Display) {
    header(out, name, help, kind);
    let _ = writeln!(out, "{name} {value}");
}

/// A label value as the text format wants it: backslash, double quote and newline escaped.
fn escape(value: &str) -> std::borrow::Cow<'_, str> {
    if !value.contains(['\\', '"', '\n']) {
        return value.into();
    }
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
        .into()
}
