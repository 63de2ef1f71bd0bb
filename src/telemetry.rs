//! Logging (tracing, pretty or JSON) and the Prometheus metrics registry.
//!
//! Metrics are plain atomics rendered in the Prometheus text format: the hot path pays one relaxed
//! atomic add per event and nothing else.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use tracing_subscriber::EnvFilter;

use crate::config::{LogFormat, LogSettings};

/// Install the global tracing subscriber. `RUST_LOG` wins over `log.level`.
pub fn init_tracing(settings: &LogSettings) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&settings.level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len()],
    count: AtomicU64,
    sum_ns: AtomicU64,
}

impl Histogram {
    fn observe(&self, elapsed: Duration) {
        let secs = elapsed.as_secs_f64();
        if let Some(i) = LATENCY_BUCKETS_S.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ns.fetch_add(elapsed.as_nanos() as u64, Ordering::Relaxed);
    }

    /// This histogram's series for one command: cumulative buckets, `+Inf`, sum and count.
    fn render(&self, out: &mut String, name: &str, label: &str) {
        let mut cumulative = 0;
        for (bucket, le) in self.buckets.iter().zip(LATENCY_BUCKETS_S) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{command=\"{label}\",le=\"{le}\"}} {cumulative}");
        }
        // Prometheus wants the `+Inf` bucket to equal the count, including slower commands that no
        // finite bucket holds.
        let count = self.count.load(Ordering::Relaxed);
        let _ = writeln!(out, "{name}_bucket{{command=\"{label}\",le=\"+Inf\"}} {count}");
        let sum = self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(out, "{name}_sum{{command=\"{label}\"}} {sum}");
        let _ = writeln!(out, "{name}_count{{command=\"{label}\"}} {count}");
    }
}

/// Every counter and gauge the hub exports.
#[derive(Default)]
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
    pub commands_rejected_rate_total: AtomicU64,
    /// Source polls this node made (only the leader polls).
    pub source_polls_total: AtomicU64,
    command_latency: [Histogram; CommandKind::ALL.len()],
}

impl Metrics {
    pub fn observe_command(&self, kind: CommandKind, elapsed: Duration) {
        self.command_latency[kind as usize].observe(elapsed);
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
        // Values only the caller knows (channels, users, leadership) follow as gauges.
        for (name, help, value) in extra {
            write_sample(&mut out, name, help, MetricKind::Gauge, value);
        }
        out
    }

    /// The command latency histogram, one series per command kind.
    fn render_command_latency(&self, out: &mut String) {
        let name = "gpuscout_command_duration_seconds";
        let _ = writeln!(
            out,
            "# HELP {name} Time to handle a client command.\n# TYPE {name} histogram"
        );
        for kind in CommandKind::ALL {
            self.command_latency[kind as usize].render(out, name, kind.label());
        }
    }
}

/// A metric's Prometheus type.
#[derive(Debug, Clone, Copy)]
enum MetricKind {
    Gauge,
    Counter,
}

impl MetricKind {
    /// The name on the `# TYPE` line.
    fn as_str(self) -> &'static str {
        match self {
            MetricKind::Gauge => "gauge",
            MetricKind::Counter => "counter",
        }
    }
}

/// Reads a metric's current value. `i128` holds every `i64` gauge and `u64` counter exactly, so the
/// printed digits are those of the atomic itself.
type Read = fn(&Metrics) -> i128;

/// The plain gauges and counters, in the order they are rendered: (name, help, kind, read).
const SCALARS: [(&str, &str, MetricKind, Read); 18] = [
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
        "gpuscout_commands_rate_limited_total",
        "Commands refused with 111 (too many requests).",
        MetricKind::Counter,
        |m| m.commands_rejected_rate_total.load(Ordering::Relaxed).into(),
    ),
    (
        "gpuscout_source_polls_total",
        "Source polls made by this node (only the leader polls).",
        MetricKind::Counter,
        |m| m.source_polls_total.load(Ordering::Relaxed).into(),
    ),
];

/// One metric without labels: its `# HELP` and `# TYPE` lines and its sample.
fn write_sample(out: &mut String, name: &str, help: &str, kind: MetricKind, value: impl std::fmt::Display) {
    let kind = kind.as_str();
    // Writing to a String cannot fail.
    let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}");
}
