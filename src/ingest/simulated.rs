//! The simulated market: a small random walk over a few GPU models so the hub has live data
//! offline. Every payload says `"source":"simulated"`.
//!
//! It publishes per-model aggregates to `market:summary` (only the models that changed) and a
//! full snapshot to `market:summary.1m` every `summary_interval_s`; both channels' subscribe
//! snapshots are kept current.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use serde_json::json;
use serde_json::value::RawValue;
use tokio_util::sync::CancellationToken;

use crate::auth::unix_now_ms;
use crate::config::SimulatedSourceSettings;
use crate::hub::Hub;

/// Models, GPU counts and median prices (USD per GPU-hour) the walk starts from.
const MODELS: &[(&str, &str, u32, f64)] = &[
    ("rtx-4090", "RTX 4090", 1800, 0.38),
    ("rtx-3090", "RTX 3090", 1400, 0.20),
    ("rtx-5090", "RTX 5090", 600, 0.65),
    ("a100-sxm4-80gb", "A100 SXM4 80GB", 500, 1.05),
    ("h100-sxm", "H100 SXM", 900, 1.85),
    ("l40s", "L40S", 300, 0.70),
    ("rtx-a6000", "RTX A6000", 400, 0.45),
    ("rtx-4080", "RTX 4080", 350, 0.26),
];

#[derive(Debug, Clone, Serialize)]
pub struct ModelSummary {
    pub model: &'static str,
    pub name: &'static str,
    pub gpus_total: u32,
    pub gpus_rented: u32,
    pub gpus_available: u32,
    pub utilisation: f64,
    pub price_median: f64,
    pub price_p10: f64,
    pub price_p90: f64,
}

pub struct SimulatedMarket {
    rng: StdRng,
    models: Vec<ModelSummary>,
    seq: u64,
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

impl SimulatedMarket {
    pub fn new(seed: u64) -> Self {
        let mut rng = if seed == 0 {
            StdRng::from_os_rng()
        } else {
            StdRng::seed_from_u64(seed)
        };
        let models = MODELS
            .iter()
            .map(|(slug, name, total, median)| {
                let rented = (*total as f64 * rng.random_range(0.55..0.85)) as u32;
                ModelSummary {
                    model: slug,
                    name,
                    gpus_total: *total,
                    gpus_rented: rented,
                    gpus_available: total - rented,
                    utilisation: round4(rented as f64 / *total as f64),
                    price_median: *median,
                    price_p10: round4(median * 0.7),
                    price_p90: round4(median * 1.5),
                }
            })
            .collect();
        Self { rng, models, seq: 0 }
    }

    /// One poll: some models see rentals start or end and prices drift. Returns what changed.
    pub fn step(&mut self) -> Vec<ModelSummary> {
        let mut changed = Vec::new();
        for m in &mut self.models {
            if !self.rng.random_bool(0.35) {
                continue;
            }
            let swing = (m.gpus_total / 50).max(1) as i64;
            let delta = self.rng.random_range(-swing..=swing);
            m.gpus_rented = (m.gpus_rented as i64 + delta).clamp(0, m.gpus_total as i64) as u32;
            m.gpus_available = m.gpus_total - m.gpus_rented;
            m.utilisation = round4(m.gpus_rented as f64 / m.gpus_total as f64);
            let drift = 1.0 + self.rng.random_range(-0.01..0.01);
            m.price_median = round4((m.price_median * drift).max(0.01));
            m.price_p10 = round4(m.price_median * 0.7);
            m.price_p90 = round4(m.price_median * 1.5);
            changed.push(m.clone());
        }
        if !changed.is_empty() {
            self.seq += 1;
        }
        changed
    }

    pub fn snapshot(&self) -> serde_json::Value {
        json!({"type": "snapshot", "source": "simulated", "seq": self.seq, "ts": unix_now_ms(), "models": self.models})
    }
}

fn raw(value: &serde_json::Value) -> Box<RawValue> {
    // Serialising a Value to JSON text cannot fail.
    RawValue::from_string(value.to_string()).unwrap_or_else(|_| RawValue::NULL.to_owned())
}

/// Run the simulated source until `stop` is cancelled.
pub async fn run(hub: Arc<Hub>, settings: SimulatedSourceSettings, stop: CancellationToken) {
    let mut market = SimulatedMarket::new(settings.seed);
    let mut poll = tokio::time::interval(Duration::from_millis(settings.poll_interval_ms));
    let mut summary = tokio::time::interval(Duration::from_secs(settings.summary_interval_s));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    summary.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let snapshot = raw(&market.snapshot());
    hub.set_snapshot("market:summary", snapshot.clone());
    hub.set_snapshot("market:summary.1m", snapshot);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = poll.tick() => {
                let prev = market.seq;
                let changes = market.step();
                if changes.is_empty() {
                    continue;
                }
                let delta = json!({
                    "type": "delta", "source": "simulated", "seq": market.seq, "prev_seq": prev,
                    "ts": unix_now_ms(), "changes": changes,
                });
                hub.set_snapshot("market:summary", raw(&market.snapshot()));
                if let Err(e) = hub.publish("market:summary", &raw(&delta)).await {
                    tracing::warn!(error = %e, "simulated market: publish failed");
                }
            }
            _ = summary.tick() => {
                let snapshot = raw(&market.snapshot());
                hub.set_snapshot("market:summary.1m", snapshot.clone());
                if let Err(e) = hub.publish("market:summary.1m", &snapshot).await {
                    tracing::warn!(error = %e, "simulated market: publish failed");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn walk_keeps_counts_consistent_and_labels_source() {
        let mut m = SimulatedMarket::new(7);
        for _ in 0..200 {
            for c in m.step() {
                assert_eq!(c.gpus_rented + c.gpus_available, c.gpus_total);
                assert!(c.price_p10 <= c.price_median && c.price_median <= c.price_p90);
            }
        }
        assert!(m.seq > 0);
        assert_eq!(m.snapshot()["source"], "simulated");
    }
}
