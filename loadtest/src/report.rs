//! Measurements and their presentation: process stats from /proc, latency percentiles, a progress
//! bar, the printed table and the SVG percentile plot.

use std::io::IsTerminal;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

pub fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// RSS (bytes) and CPU seconds of processes, summed; `None` without pids or when one is gone.
pub fn procs_stats(pids: &[u32]) -> Option<(u64, f64)> {
    if pids.is_empty() {
        return None;
    }
    pids.iter()
        .map(|p| proc_stats(*p))
        .try_fold((0, 0.0), |acc, s| s.map(|s| (acc.0 + s.0, acc.1 + s.1)))
}

/// RSS (bytes) and CPU seconds of a process.
fn proc_stats(pid: u32) -> Option<(u64, f64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let rss_kb: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit(')').next()?.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some((rss_kb * 1024, ticks / 100.0))
}

/// The machine's 1, 5 and 15-minute load averages (`/proc/loadavg`), as text.
pub fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(text.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
}

/// System calls counted by `perf stat` (kernel tracepoints, little overhead) on processes for a
/// while: all of them, and the socket writes among them.
pub struct SyscallCount(Option<std::process::Child>);

/// The events counted; the first is every system call, the others the ways a socket is written.
const SYSCALL_EVENTS: &str = "raw_syscalls:sys_enter,syscalls:sys_enter_sendto,syscalls:sys_enter_sendmsg,\
syscalls:sys_enter_write,syscalls:sys_enter_writev";

impl SyscallCount {
    /// Count for `seconds` from now; counts nothing without pids, or where perf is missing or not
    /// allowed (then the report says `null`).
    pub fn start(pids: &[u32], seconds: f64) -> Self {
        if pids.is_empty() {
            return Self(None);
        }
        let pids = pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
        let child = std::process::Command::new("perf")
            .args(["stat", "-x", ",", "-e", SYSCALL_EVENTS, "-p", &pids, "--", "sleep"])
            .arg(format!("{seconds:.1}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn();
        Self(child.ok())
    }

    /// Wait for the count to end: (every system call, socket writes) per second.
    pub async fn finish(self, seconds: f64) -> (Option<f64>, Option<f64>) {
        let Some(child) = self.0 else { return (None, None) };
        let Ok(Ok(out)) = tokio::task::spawn_blocking(move || child.wait_with_output()).await else {
            return (None, None);
        };
        let text = String::from_utf8_lossy(&out.stderr);
        let counts: Vec<(String, f64)> = text
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(',').collect();
                Some((f.get(2)?.to_string(), f.first()?.parse().ok()?))
            })
            .collect();
        let all = counts.iter().find(|(e, _)| e == "raw_syscalls:sys_enter").map(|c| c.1);
        let writes: f64 = counts
            .iter()
            .filter(|(e, _)| e != "raw_syscalls:sys_enter")
            .map(|c| c.1)
            .sum();
        let per_second = |v: f64| v / seconds.max(1e-9);
        (all.map(per_second), all.map(|_| per_second(writes)))
    }
}

/// A counter's value in a hub's Prometheus text (`/metrics`); `None` when the server has none
/// (the bare server) or the metric is absent.
pub async fn hub_counter(http: &reqwest::Client, hub: std::net::SocketAddr, name: &str) -> Option<f64> {
    let text = http
        .get(format!("http://{hub}/metrics"))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
}

/// Frames per second and deliveries per frame between two readings of the frame counter, and
/// the system calls counted meanwhile ([`SyscallCount`]) per second and per delivery.
pub fn write_rates(
    frames: (Option<f64>, Option<f64>),
    syscalls: (Option<f64>, Option<f64>),
    deliveries: u64,
    seconds: f64,
) -> Value {
    let frames = match frames {
        (Some(b), Some(a)) => Some(a - b),
        _ => None,
    };
    let per_delivery = deliveries as f64 / seconds.max(1e-9);
    json!({
        "hub_frames_per_second": frames.map(|f| f / seconds.max(1e-9)),
        "deliveries_per_frame": frames.filter(|f| *f > 0.0).map(|f| deliveries as f64 / f),
        "hub_syscalls_per_second": syscalls.0,
        "hub_socket_write_syscalls_per_second": syscalls.1,
        "hub_syscalls_per_delivery": syscalls.0.filter(|_| per_delivery > 0.0).map(|s| s / per_delivery),
    })
}

/// The hub's memory and CPU between two readings, per connection where there are any.
pub fn hub_usage(before: Option<(u64, f64)>, after: Option<(u64, f64)>, connections: u64) -> Value {
    json!({
        "hub_rss_bytes_before": before.map(|s| s.0),
        "hub_rss_bytes_after": after.map(|s| s.0),
        "hub_rss_bytes_per_connection": match (before, after) {
            (Some(b), Some(a)) if connections > 0 => Some(a.0.saturating_sub(b.0) / connections),
            _ => None,
        },
        "hub_cpu_seconds": match (before, after) { (Some(b), Some(a)) => Some(a.1 - b.1), _ => None },
    })
}

/// Add the keys of `extra` (an object) to `report`.
pub fn merge(report: &mut Value, extra: Value) {
    if let (Some(r), Value::Object(e)) = (report.as_object_mut(), extra) {
        r.extend(e);
    }
}

/// Percentiles plotted and kept in reports: denser towards the tail.
const CURVE: [f64; 16] = [
    0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 97.5, 99.0, 99.5, 99.75, 99.9, 99.95, 99.99, 99.999, 100.0,
];

/// Latency summary of microsecond samples, recorded in an HDR histogram (3 significant digits),
/// in milliseconds, with the curve to plot.
pub fn latency(samples: &[u64]) -> Value {
    let mut h = histogram();
    for s in samples {
        record(&mut h, *s);
    }
    summary(&h)
}

/// An empty histogram of 3 significant digits that grows to any value recorded.
pub fn histogram() -> hdrhistogram::Histogram<u64> {
    hdrhistogram::Histogram::<u64>::new(3).expect("3 significant digits is valid")
}

/// Record one sample.
pub fn record(h: &mut hdrhistogram::Histogram<u64>, sample: u64) {
    // `record` grows the histogram to the value (`saturating_record` would clamp it to the
    // range so far).
    if h.record(sample).is_err() {
        h.saturating_record(sample);
    }
}

/// The summary of a histogram of microseconds, in milliseconds.
pub fn summary(h: &hdrhistogram::Histogram<u64>) -> Value {
    let ms = |us: u64| us as f64 / 1000.0;
    let at = |p: f64| {
        if h.is_empty() {
            0.0
        } else {
            ms(h.value_at_quantile(p / 100.0))
        }
    };
    let curve: Vec<Value> = CURVE.iter().map(|p| json!([p, at(*p)])).collect();
    json!({
        "samples": h.len(),
        "p50": at(50.0), "p90": at(90.0), "p99": at(99.0), "p99.9": at(99.9),
        "max": if h.is_empty() { 0.0 } else { ms(h.max()) },
        "curve": curve,
    })
}

/// Every latency summary in a report (nested ones too), as (label, curve) series.
pub fn series_of(report: &Value) -> Vec<(String, Vec<(f64, f64)>)> {
    let label = report["label"].as_str().unwrap_or("run").to_owned();
    let mut out = Vec::new();
    collect_series(report, &label, &mut out);
    out
}

fn collect_series(v: &Value, label: &str, out: &mut Vec<(String, Vec<(f64, f64)>)>) {
    let Some(obj) = v.as_object() else { return };
    for (key, value) in obj {
        if let Some(curve) = value.get("curve").and_then(Value::as_array) {
            let points = curve
                .iter()
                .filter_map(|p| Some((p.get(0)?.as_f64()?, p.get(1)?.as_f64()?)))
                .collect();
            let name = format!("{label} {}", key.trim_end_matches("_ms"));
            out.push((name, points));
        } else if value.is_object() {
            collect_series(value, label, out);
        }
    }
}

/// An SVG plot of latency (ms, log scale) against percentile (log scale of 1/(1-p)).
pub fn latency_svg(series: &[(String, Vec<(f64, f64)>)]) -> String {
    const W: f64 = 760.0;
    const H: f64 = 420.0;
    const L: f64 = 70.0;
    const R: f64 = 45.0;
    const T: f64 = 30.0;
    const B: f64 = 60.0;
    // x: log10(1 / (1 - p)), p in [0, 0.99999]; the maximum sits at the right edge.
    let x_of = |p: f64| {
        let q = (p / 100.0).min(0.99999);
        let v = (1.0 / (1.0 - q)).log10() / 5.0;
        L + v * (W - L - R)
    };
    let max_ms = series
        .iter()
        .flat_map(|(_, pts)| pts.iter().map(|p| p.1))
        .fold(1.0_f64, f64::max);
    let (lo, hi) = (-2.0_f64, max_ms.log10().ceil().max(0.0));
    let y_of = |ms: f64| {
        let v = (ms.max(0.01).log10() - lo) / (hi - lo);
        H - B - v * (H - T - B)
    };
    let colours = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];
    let mut svg = format!(
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="18" text-anchor="middle" font-size="14">Latency by percentile</text>
"#,
        W / 2.0
    );
    for (p, name) in [
        (0.0, "0%"),
        (90.0, "90%"),
        (99.0, "99%"),
        (99.9, "99.9%"),
        (99.99, "99.99%"),
        (99.999, "99.999%"),
    ] {
        let x = x_of(p);
        svg += &format!(
            r##"<line x1="{x:.1}" y1="{T}" x2="{x:.1}" y2="{}" stroke="#ddd"/><text x="{x:.1}" y="{}" text-anchor="middle">{name}</text>
"##,
            H - B,
            H - B + 16.0
        );
    }
    let mut decade = lo;
    while decade <= hi {
        let ms = 10f64.powf(decade);
        let y = y_of(ms);
        let text = if ms < 1.0 { format!("{ms}") } else { format!("{ms:.0}") };
        svg += &format!(
            r##"<line x1="{L}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#ddd"/><text x="{}" y="{:.1}" text-anchor="end">{text}</text>
"##,
            W - R,
            L - 6.0,
            y + 4.0
        );
        decade += 1.0;
    }
    svg += &format!(
        r#"<text x="{}" y="{}" text-anchor="middle">percentile</text>
<text x="16" y="{}" text-anchor="middle" transform="rotate(-90 16 {})">latency (ms)</text>
"#,
        W / 2.0,
        H - 24.0,
        H / 2.0,
        H / 2.0
    );
    for (i, (name, points)) in series.iter().enumerate() {
        let colour = colours[i % colours.len()];
        let path: Vec<String> = points
            .iter()
            .map(|(p, ms)| format!("{:.1},{:.1}", x_of(*p), y_of(*ms)))
            .collect();
        svg += &format!(
            r#"<polyline fill="none" stroke="{colour}" stroke-width="2" points="{}"/>
<text x="{}" y="{}" fill="{colour}">{}</text>
"#,
            path.join(" "),
            L + 10.0,
            T + 16.0 + 16.0 * i as f64,
            xml_escape(name)
        );
    }
    svg += "</svg>\n";
    svg
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// The report as an aligned two-column table (nested sections flattened with dots; curves left
/// to the JSON and the plot).
pub fn table(report: &Value) -> String {
    let mut rows = Vec::new();
    flatten("", report, &mut rows);
    let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
    rows.iter()
        .map(|(k, v)| format!("{k:<width$}  {v}"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn flatten(prefix: &str, v: &Value, rows: &mut Vec<(String, String)>) {
    match v {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "curve" {
                    continue;
                }
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, rows);
            }
        }
        Value::Number(n) => {
            let text = match n.as_f64() {
                Some(f) if n.is_f64() => format!("{f:.2}"),
                _ => n.to_string(),
            };
            rows.push((prefix.to_owned(), text));
        }
        Value::Null => rows.push((prefix.to_owned(), "-".into())),
        Value::String(s) => rows.push((prefix.to_owned(), s.clone())),
        other => rows.push((prefix.to_owned(), other.to_string())),
    }
}

/// A progress bar on stderr for a count towards a total: redrawn in place on a terminal, a line
/// every few seconds otherwise. Stops when dropped.
pub struct Progress {
    stop: Arc<tokio::sync::Notify>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    pub fn start(label: &'static str, total: u64, done: Arc<AtomicU64>, failed: Option<Arc<AtomicU64>>) -> Self {
        let stop = Arc::new(tokio::sync::Notify::new());
        let stop_c = stop.clone();
        let task = tokio::spawn(async move {
            let tty = std::io::stderr().is_terminal();
            let started = Instant::now();
            let every = if tty {
                Duration::from_millis(200)
            } else {
                Duration::from_secs(5)
            };
            let mut finished = false;
            loop {
                let n = done.load(Ordering::Relaxed);
                let f = failed.as_ref().map(|f| f.load(Ordering::Relaxed)).unwrap_or(0);
                let filled = ((n as f64 / total.max(1) as f64) * 30.0).round().min(30.0) as usize;
                let rate = n as f64 / started.elapsed().as_secs_f64().max(0.001);
                let line = format!(
                    "{label} [{}{}] {n}/{total} ({rate:.0}/s{})",
                    "#".repeat(filled),
                    ".".repeat(30 - filled),
                    if f > 0 { format!(", {f} failed") } else { String::new() }
                );
                if tty {
                    eprint!("\r{line}");
                } else {
                    eprintln!("{line}");
                }
                if finished || n >= total {
                    if tty {
                        eprintln!();
                    }
                    return;
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop_c.notified() => finished = true,
                }
            }
        });
        Self { stop, task: Some(task) }
    }

    /// Draw the final state and stop.
    pub async fn finish(mut self) {
        self.stop.notify_one();
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_summary_is_in_milliseconds_of_microsecond_samples() {
        let samples: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let s = latency(&samples);
        assert_eq!(s["samples"], 1000);
        let near = |key: &str, ms: f64| {
            let v = s[key].as_f64().unwrap();
            assert!((v - ms).abs() / ms < 0.002, "{key}: {v} against {ms}");
        };
        near("p50", 500.0);
        near("p99", 990.0);
        near("max", 1000.0);
    }
}
