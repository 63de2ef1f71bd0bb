//! The market's current state and the publications each change produces.
//!
//! `MarketState` takes each source's latest offers and health, rebuilds the book, diffs it,
//! aggregates it, and returns the payloads to publish per channel (DESIGN §5). It is also where
//! subscribe snapshots come from. Pure: the caller publishes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use super::Offer;
use super::aggregate::{self, ModelAggregate, Segment};
use super::book::{BookDiff, MarketBook};
use super::feed::{Changes, Feed, to_value};

pub const SUMMARY: &str = "market:summary";
pub const SUMMARY_1M: &str = "market:summary.1m";
pub const SOURCES_STATUS: &str = "sources:status";
pub const OFFERS_ALL: &str = "offers:all";

/// One source's health as `sources:status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceHealth {
    pub source: String,
    /// `ok`, `degraded` (failing, last data kept) or `waiting` (no data yet).
    pub state: String,
    /// Its data is older than the configured stale age.
    pub stale: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_success_ms: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error_ms: Option<i64>,
    pub consecutive_failures: u32,
    pub offers: u32,
    /// The circuit breaker is open: polls are paused until it half-opens.
    pub circuit_open: bool,
}

/// A payload to publish on a channel.
#[derive(Debug, Clone)]
pub struct Outgoing {
    pub channel: String,
    pub payload: Value,
}

#[derive(Default)]
pub struct MarketState {
    sources: BTreeMap<&'static str, Vec<Arc<Offer>>>,
    book: MarketBook,
    aggregates: BTreeMap<String, ModelAggregate>,
    segments: BTreeMap<String, BTreeMap<String, Segment>>,
    health: BTreeMap<String, SourceHealth>,
    feeds: HashMap<String, Feed>,
    last_minute: Option<Value>,
    minute_seq: u64,
    /// Where every channel's `seq` starts (0, or a time on a node that took over as leader, so the
    /// new leader's deltas follow the old one's and clients see a gap and resync, never a repeat).
    seq_base: u64,
    /// On a follower node: the leader's source label, with aggregates and health mirrored from it.
    mirror_label: Option<String>,
}

fn model_of(channel: &str, prefix: &str) -> Option<String> {
    channel.strip_prefix(prefix).map(str::to_owned)
}

impl MarketState {
    pub fn new() -> Self {
        Self::default()
    }

    /// Mirror the leader's aggregates and sources' health from its `market:summary` and
    /// `sources:status` snapshots (a follower node: its REST answers and advisor read them).
    pub fn mirror(&mut self, summary: &Value, status: &Value) {
        if let Some(items) = summary.get("items").and_then(Value::as_object) {
            self.aggregates = items
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), serde_json::from_value(v.clone()).ok()?)))
                .collect();
        }
        if let Some(items) = status.get("items").and_then(Value::as_object) {
            self.health = items
                .iter()
                .filter_map(|(k, v)| Some((k.clone(), serde_json::from_value(v.clone()).ok()?)))
                .collect();
        }
        self.mirror_label = summary.get("source").and_then(Value::as_str).map(str::to_owned);
    }

    /// Whether this state holds data polled by this node (not only a mirror).
    pub fn has_own_data(&self) -> bool {
        !self.sources.is_empty()
    }

    /// A fresh state whose channels' `seq` start at `base`.
    pub fn with_seq_base(base: u64) -> Self {
        Self {
            seq_base: base,
            minute_seq: base,
            ..Self::default()
        }
    }

    pub fn book(&self) -> &MarketBook {
        &self.book
    }

    pub fn aggregates(&self) -> &BTreeMap<String, ModelAggregate> {
        &self.aggregates
    }

    pub fn health(&self) -> &BTreeMap<String, SourceHealth> {
        &self.health
    }

    /// The label every payload carries: the sources whose data it holds (`simulated`, `farm500+vast`).
    pub fn label(&self) -> String {
        let names: Vec<&str> = self.sources.keys().copied().collect();
        if names.is_empty()
            && let Some(label) = &self.mirror_label
        {
            return label.clone();
        }
        if names.is_empty() {
            "none".into()
        } else {
            names.join("+")
        }
    }

    fn header(&self, now_ms: i64) -> Map<String, Value> {
        let mut h = Map::new();
        h.insert("source".into(), self.label().into());
        h.insert("ts".into(), now_ms.into());
        h
    }

    fn feed(&mut self, channel: &str) -> &mut Feed {
        self.feeds
            .entry(channel.to_owned())
            .or_insert_with(|| Feed::starting_at(channel, self.seq_base))
    }

    fn publish(&mut self, channel: &str, changes: &Changes, header: &Map<String, Value>, out: &mut Vec<Outgoing>) {
        if let Some(payload) = self.feed(channel).apply(changes, header) {
            out.push(Outgoing {
                channel: channel.to_owned(),
                payload,
            });
        }
    }

    /// A source's new offers (a full replacement of what it reported before).
    pub fn apply_offers(&mut self, source: &'static str, offers: Vec<Offer>, now_ms: i64) -> Vec<Outgoing> {
        self.sources.insert(source, offers.into_iter().map(Arc::new).collect());
        let book = MarketBook::merge(self.sources.values());
        let diff = BookDiff::between(&self.book, &book);
        self.book = book;
        let mut out = Vec::new();
        if diff.is_empty() {
            return out;
        }
        let header = self.header(now_ms);

        // Per-model aggregates (market:summary).
        let aggregates = aggregate::aggregate(self.book.offers.values().map(|o| o.as_ref()));
        let changes = Changes::between(&self.aggregates, &aggregates);
        self.aggregates = aggregates;
        self.publish(SUMMARY, &changes, &header, &mut out);

        // Models with offer-level changes: their gpu:<model> and offers:<model> channels.
        let touched: Vec<String> = diff.models().into_iter().map(str::to_owned).collect();
        let by_model = self.book.by_model();
        let mut new_segments = Vec::new();
        for model in &touched {
            let offers = by_model.get(model.as_str()).map(|v| v.as_slice()).unwrap_or(&[]);
            new_segments.push((model.clone(), aggregate::model_segments(offers.iter().copied())));
        }
        drop(by_model);
        for (model, segments) in new_segments {
            let empty = BTreeMap::new();
            let old = self.segments.get(&model).unwrap_or(&empty);
            let changes = Changes::between(old, &segments);
            self.publish(&format!("gpu:{model}"), &changes, &header, &mut out);
            if segments.is_empty() {
                self.segments.remove(&model);
            } else {
                self.segments.insert(model, segments);
            }
        }

        // Offer-level deltas, per model and all together.
        let mut per_model: BTreeMap<&str, Changes> = BTreeMap::new();
        let mut all = Changes::default();
        for offer in &diff.added {
            let item = (offer.key(), to_value(offer.as_ref()));
            per_model.entry(&*offer.model).or_default().added.push(item.clone());
            all.added.push(item);
        }
        for offer in &diff.changed {
            let item = (offer.key(), to_value(offer.as_ref()));
            per_model.entry(&*offer.model).or_default().changed.push(item.clone());
            all.changed.push(item);
        }
        for offer in &diff.removed {
            per_model.entry(&*offer.model).or_default().removed.push(offer.key());
            all.removed.push(offer.key());
        }
        let per_model: Vec<(String, Changes)> = per_model.into_iter().map(|(m, c)| (m.to_owned(), c)).collect();
        for (model, changes) in per_model {
            self.publish(&format!("offers:{model}"), &changes, &header, &mut out);
        }
        self.publish(OFFERS_ALL, &all, &header, &mut out);
        out
    }

    /// A source's health; published on `sources:status` when it changed.
    pub fn apply_health(&mut self, health: SourceHealth, now_ms: i64) -> Option<Outgoing> {
        let mut next = self.health.clone();
        next.insert(health.source.clone(), health);
        let changes = Changes::between(&self.health, &next);
        self.health = next;
        let header = self.header(now_ms);
        let mut out = Vec::new();
        self.publish(SOURCES_STATUS, &changes, &header, &mut out);
        out.pop()
    }

    /// The once-a-minute full snapshot of `market:summary.1m`.
    pub fn minute_snapshot(&mut self, now_ms: i64) -> Outgoing {
        self.minute_seq += 1;
        let items = self.summary_items();
        let checksum = super::feed::checksum_of(&items);
        let mut payload = Map::new();
        payload.insert("type".into(), "snapshot".into());
        payload.insert("channel".into(), SUMMARY_1M.into());
        payload.extend(self.header(now_ms));
        payload.insert("seq".into(), self.minute_seq.into());
        payload.insert("checksum".into(), checksum.into());
        payload.insert("items".into(), Value::Object(items));
        let payload = Value::Object(payload);
        self.last_minute = Some(payload.clone());
        Outgoing {
            channel: SUMMARY_1M.into(),
            payload,
        }
    }

    fn summary_items(&self) -> Map<String, Value> {
        self.aggregates.iter().map(|(k, v)| (k.clone(), to_value(v))).collect()
    }

    /// The subscribe snapshot of a market channel (`None` for channels the market does not feed).
    pub fn snapshot(&self, channel: &str, now_ms: i64) -> Option<Value> {
        let header = self.header(now_ms);
        let empty = Feed::starting_at(channel, self.seq_base);
        let feed = self.feeds.get(channel).unwrap_or(&empty);
        let items: Map<String, Value> = if channel == SUMMARY {
            self.summary_items()
        } else if channel == SUMMARY_1M {
            return Some(match &self.last_minute {
                Some(v) => v.clone(),
                None => {
                    let items = self.summary_items();
                    let checksum = super::feed::checksum_of(&items);
                    json!({"type": "snapshot", "channel": SUMMARY_1M, "source": self.label(), "ts": now_ms,
                           "seq": 0, "checksum": checksum, "items": items})
                }
            });
        } else if channel == SOURCES_STATUS {
            self.health.iter().map(|(k, v)| (k.clone(), to_value(v))).collect()
        } else if channel == OFFERS_ALL {
            self.book
                .offers
                .iter()
                .map(|(k, o)| (k.to_string(), to_value(o.as_ref())))
                .collect()
        } else if let Some(model) = model_of(channel, "gpu:") {
            self.segments
                .get(&model)
                .map(|s| s.iter().map(|(k, v)| (k.clone(), to_value(v))).collect())
                .unwrap_or_default()
        } else if let Some(model) = model_of(channel, "offers:") {
            self.book
                .offers
                .iter()
                .filter(|(_, o)| *o.model == *model)
                .map(|(k, o)| (k.to_string(), to_value(o.as_ref())))
                .collect()
        } else {
            return None;
        };
        Some(feed.snapshot(items, &header))
    }

    /// Per-model rows for storage and the REST API: slug → aggregate.
    pub fn rows(&self) -> Vec<(&str, &ModelAggregate)> {
        self.aggregates.iter().map(|(k, v)| (k.as_str(), v)).collect()
    }
}
