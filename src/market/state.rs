//! The market's current state and the publications each change produces.
//!
//! `MarketState` takes each source's latest offers and health, rebuilds the book, diffs it,
//! aggregates it, and returns the payloads to publish per channel (DESIGN §5). It is also where
//! subscribe snapshots come from. Pure: the caller publishes.
//!
//! Every payload says when it was made (`ts`) and, once any data is held, when the sources took
//! the data it reflects (`source_ts`): a poll's deltas its own data's time, snapshots and the
//! sources' health the newest data's.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::aggregate::{ModelAggregate, ModelStats, Segment};
use super::book::{BookDiff, MarketBook, Replaced, priority};
use super::feed::{Changes, Feed, Item, object_with, to_value};
use super::{Offer, Text};
use crate::channels::{self, ChannelKind, MARKET_SUMMARY, MARKET_SUMMARY_1M, OFFERS_ALL, SOURCES_STATUS};

/// Where a source stands, as `sources:status` spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum SourceState {
    /// No poll has answered yet.
    Waiting,
    /// The last poll answered.
    Ok,
    /// Polls fail; the last data is kept.
    Degraded,
}

/// One source's health as `sources:status` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SourceHealth {
    pub source: String,
    pub state: SourceState,
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
    /// JSON text.
    pub payload: String,
}

#[derive(Default)]
pub struct MarketState {
    /// Each source's latest offers.
    sources: BTreeMap<&'static str, MarketBook>,
    /// The merged book: per key, the copy of the source first in `SOURCE_PRIORITY`.
    book: MarketBook,
    /// Per model, the running counts and price histograms the aggregates are built from.
    stats: BTreeMap<Text, ModelStats>,
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
    /// Every model the market has held since start (its channels may be subscribed).
    seen: HashSet<Text>,
    /// When the sources took the newest data applied (ms since the epoch; a follower mirrors the
    /// leader's): the `source_ts` of snapshots. `None` before any data.
    source_ts_ms: Option<i64>,
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
        self.source_ts_ms = summary.get("source_ts").and_then(Value::as_i64);
        self.seen.extend(self.aggregates.keys().map(|k| super::intern(k)));
    }

    /// Whether the market has held `model` since start; `None` before it held any model.
    pub fn has_seen(&self, model: &str) -> Option<bool> {
        (!self.seen.is_empty()).then(|| self.seen.contains(model))
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

    /// Note data the sources took at `source_ts_ms`: what snapshots say from now on, if newer.
    pub fn note_source_ts(&mut self, source_ts_ms: i64) {
        self.source_ts_ms = self.source_ts_ms.max(Some(source_ts_ms));
    }

    /// The fields every payload carries: its sources, when they took its data, when it was made.
    fn header_with(&self, now_ms: i64, source_ts_ms: Option<i64>) -> Map<String, Value> {
        let mut h = Map::new();
        h.insert("source".into(), self.label().into());
        if let Some(source_ts) = source_ts_ms {
            h.insert("source_ts".into(), source_ts.into());
        }
        h.insert("ts".into(), now_ms.into());
        h
    }

    /// The header of a payload about all the market holds: the newest data's `source_ts`.
    fn header(&self, now_ms: i64) -> Map<String, Value> {
        self.header_with(now_ms, self.source_ts_ms)
    }

    fn feed(&mut self, channel: &str) -> &mut Feed {
        self.feeds
            .entry(channel.to_owned())
            .or_insert_with(|| Feed::starting_at(channel, self.seq_base))
    }

    fn publish(&mut self, channel: &str, changes: Changes, header: &Map<String, Value>, out: &mut Vec<Outgoing>) {
        if let Some(payload) = self.feed(channel).apply(changes, header) {
            out.push(Outgoing {
                channel: channel.to_owned(),
                payload,
            });
        }
    }

    /// A source's new offers, taken when they arrived: [`apply_poll`](Self::apply_poll) with
    /// `source_ts_ms` = `now_ms`.
    pub fn apply_offers(&mut self, source: &'static str, offers: Vec<Offer>, now_ms: i64) -> Vec<Outgoing> {
        self.apply_poll(source, offers, now_ms, now_ms)
    }

    /// A source's new offers (a full replacement of what it reported before), which the source
    /// took at `source_ts_ms`: the `source_ts` of the deltas they make.
    ///
    /// The work is proportional to the offers that changed, beyond one lookup and comparison per
    /// offer: the source's book keeps the shared copy of every unchanged offer, the merged book and
    /// the per-model histograms are updated by the changed offers alone, and only the models they
    /// touch are rebuilt.
    pub fn apply_poll(
        &mut self,
        source: &'static str,
        offers: Vec<Offer>,
        now_ms: i64,
        source_ts_ms: i64,
    ) -> Vec<Outgoing> {
        let diff = self.diff_book(source, offers);
        // Unchanged data is still data as of this poll: snapshots say so.
        self.note_source_ts(source_ts_ms);
        let mut out = Vec::new();
        if diff.is_empty() {
            return out;
        }
        let header = self.header_with(now_ms, Some(source_ts_ms));
        let touched = self.update_stats(&diff);
        self.publish_models(&touched, &header, &mut out);
        // Offer-level deltas, per model and all together.
        let (per_model, all) = Self::offer_changes(&diff);
        self.publish_offer_feeds(per_model, &header, &mut out);
        self.publish(OFFERS_ALL, all, &header, &mut out);
        out
    }

    /// Replace `source`'s offers and carry the change into the merged book, returning its diff.
    fn diff_book(&mut self, source: &'static str, offers: Vec<Offer>) -> BookDiff {
        if !self.has_own_data() {
            // Aggregates mirrored from a leader are not this state's to update offer by offer.
            self.aggregates.clear();
            self.mirror_label = None;
            self.source_ts_ms = None;
        }
        let replaced = self.sources.entry(source).or_default().replace(offers);
        self.merge(replaced)
    }

    /// Move the diff's outgoing and incoming offers through the per-model histograms, returning
    /// the models they touch.
    fn update_stats(&mut self, diff: &BookDiff) -> BTreeSet<Text> {
        let mut touched: BTreeSet<Text> = BTreeSet::new();
        for offer in diff.outgoing() {
            touched.insert(offer.model.clone());
            if let Some(stats) = self.stats.get_mut(&offer.model) {
                stats.remove(offer);
            }
        }
        for offer in diff.incoming() {
            touched.insert(offer.model.clone());
            if !self.seen.contains(&offer.model) {
                self.seen.insert(offer.model.clone());
            }
            self.stats.entry(offer.model.clone()).or_default().add(offer);
        }
        touched
    }

    /// Rebuild the aggregates (`market:summary`) and segments (`gpu:<model>`) of the touched
    /// models and publish their changes: the summary first, then each model's segments.
    fn publish_models(&mut self, touched: &BTreeSet<Text>, header: &Map<String, Value>, out: &mut Vec<Outgoing>) {
        let mut summary = Changes::default();
        let mut segment_changes = Vec::new();
        for model in touched {
            let stats = self.stats.get(model);
            let aggregate = stats.and_then(|s| s.aggregate(model));
            let key = model.to_string();
            Self::update_aggregate(&mut self.aggregates, &key, aggregate, &mut summary);
            let segments = stats.map(ModelStats::segments).unwrap_or_default();
            let empty = BTreeMap::new();
            let old = self.segments.get(&key).unwrap_or(&empty);
            segment_changes.push((channels::gpu(model), Changes::between(old, &segments)));
            if segments.is_empty() {
                self.segments.remove(&key);
                self.stats.remove(model);
            } else {
                self.segments.insert(key, segments);
            }
        }
        self.publish(MARKET_SUMMARY, summary, header, out);
        for (channel, changes) in segment_changes {
            self.publish(&channel, changes, header, out);
        }
    }

    /// Store one model's new aggregate (or its absence) and note in `summary` how it changed.
    fn update_aggregate(
        aggregates: &mut BTreeMap<String, ModelAggregate>,
        key: &str,
        aggregate: Option<ModelAggregate>,
        summary: &mut Changes,
    ) {
        match (aggregates.get(key), aggregate) {
            (None, Some(new)) => {
                summary.added.push(Item::new(key.to_owned(), &new));
                aggregates.insert(key.to_owned(), new);
            }
            (Some(old), Some(new)) => {
                if *old != new {
                    summary.changed.push(Item::new(key.to_owned(), &new));
                    aggregates.insert(key.to_owned(), new);
                }
            }
            (Some(_), None) => {
                summary.removed.push(key.to_owned());
                aggregates.remove(key);
            }
            (None, None) => {}
        }
    }

    /// The offer-level changes of a diff: per model (for `offers:<model>`) and all together (for
    /// `offers:all`). Each offer's item is built once and shared by both.
    fn offer_changes(diff: &BookDiff) -> (BTreeMap<&str, Changes>, Changes) {
        let mut per_model: BTreeMap<&str, Changes> = BTreeMap::new();
        let mut all = Changes::default();
        for offer in &diff.added {
            let item = Item::new(offer.key(), offer.as_ref());
            per_model.entry(&*offer.model).or_default().added.push(item.clone());
            all.added.push(item);
        }
        for (old, offer) in &diff.changed {
            let item = Item::new(offer.key(), offer.as_ref());
            if old.model != offer.model {
                // It moved to another model: gone from the old model's channel.
                per_model.entry(&*old.model).or_default().removed.push(old.key());
                per_model.entry(&*offer.model).or_default().added.push(item.clone());
            } else {
                per_model.entry(&*offer.model).or_default().changed.push(item.clone());
            }
            all.changed.push(item);
        }
        for offer in &diff.removed {
            per_model.entry(&*offer.model).or_default().removed.push(offer.key());
            all.removed.push(offer.key());
        }
        (per_model, all)
    }

    /// Publish each model's offer changes on its `offers:<model>` channel, in model order.
    fn publish_offer_feeds(
        &mut self,
        per_model: BTreeMap<&str, Changes>,
        header: &Map<String, Value>,
        out: &mut Vec<Outgoing>,
    ) {
        for (model, changes) in per_model {
            self.publish(&channels::offers(model), changes, header, out);
        }
    }

    /// Carry one source's changes into the merged book: for each key it touched, the copy of the
    /// source first in `SOURCE_PRIORITY` (of equal ones, the first in name order) is the book's.
    fn merge(&mut self, replaced: Replaced) -> BookDiff {
        let mut diff = BookDiff::default();
        for offer in replaced.upserted.iter().chain(&replaced.removed) {
            let (marketplace, id) = (offer.marketplace, offer.offer_id.as_str());
            let mut winner: Option<&Arc<Offer>> = None;
            for book in self.sources.values() {
                if let Some(o) = book.get(marketplace, id)
                    && winner.is_none_or(|w| priority(o.source) < priority(w.source))
                {
                    winner = Some(o);
                }
            }
            match (self.book.get(marketplace, id), winner) {
                (None, None) => {}
                (None, Some(w)) => {
                    let w = w.clone();
                    self.book.insert(w.clone());
                    diff.added.push(w);
                }
                (Some(_), None) => {
                    if let Some(old) = self.book.remove(marketplace, id) {
                        diff.removed.push(old);
                    }
                }
                (Some(current), Some(w)) => {
                    if !Arc::ptr_eq(current, w) {
                        let w = w.clone();
                        let unchanged = **current == *w;
                        if let Some(old) = self.book.insert(w.clone())
                            && !unchanged
                        {
                            diff.changed.push((old, w));
                        }
                    }
                }
            }
        }
        diff
    }

    /// A source's health; published on `sources:status` when it changed.
    pub fn apply_health(&mut self, health: SourceHealth, now_ms: i64) -> Option<Outgoing> {
        let mut next = self.health.clone();
        next.insert(health.source.clone(), health);
        let changes = Changes::between(&self.health, &next);
        self.health = next;
        let header = self.header(now_ms);
        let mut out = Vec::new();
        self.publish(SOURCES_STATUS, changes, &header, &mut out);
        out.pop()
    }

    /// The once-a-minute full snapshot of `market:summary.1m`.
    pub fn minute_snapshot(&mut self, now_ms: i64) -> Outgoing {
        self.minute_seq += 1;
        let payload = self.minute_payload(self.minute_seq, now_ms);
        let text = payload.to_string();
        self.last_minute = Some(payload);
        Outgoing {
            channel: MARKET_SUMMARY_1M.into(),
            payload: text,
        }
    }

    /// A `market:summary.1m` snapshot of the current aggregates.
    fn minute_payload(&self, seq: u64, now_ms: i64) -> Value {
        let items = self.summary_items();
        let checksum = super::feed::checksum_of(&items);
        let mut payload = Map::new();
        payload.insert("type".into(), "snapshot".into());
        payload.insert("channel".into(), MARKET_SUMMARY_1M.into());
        payload.extend(self.header(now_ms));
        payload.insert("seq".into(), seq.into());
        payload.insert("checksum".into(), checksum.into());
        payload.insert("items".into(), Value::Object(items));
        Value::Object(payload)
    }

    fn summary_items(&self) -> Map<String, Value> {
        self.aggregates.iter().map(|(k, v)| (k.clone(), to_value(v))).collect()
    }

    /// The subscribe snapshot of a market channel (`None` for channels the market does not feed).
    pub fn snapshot(&self, channel: &str, now_ms: i64) -> Option<Value> {
        let header = self.header(now_ms);
        let empty = Feed::starting_at(channel, self.seq_base);
        let feed = self.feeds.get(channel).unwrap_or(&empty);
        let items: Map<String, Value> = match ChannelKind::parse(channel)? {
            ChannelKind::MarketSummary => self.summary_items(),
            ChannelKind::MarketSummary1m => {
                return Some(match &self.last_minute {
                    Some(v) => v.clone(),
                    None => self.minute_payload(0, now_ms),
                });
            }
            ChannelKind::SourcesStatus => self.health.iter().map(|(k, v)| (k.clone(), to_value(v))).collect(),
            ChannelKind::OffersAll => self.offers_on(None).map(|o| (o.key(), to_value(o.as_ref()))).collect(),
            ChannelKind::Gpu(model) => self
                .segments
                .get(model)
                .map(|s| s.iter().map(|(k, v)| (k.clone(), to_value(v))).collect())
                .unwrap_or_default(),
            ChannelKind::Offers(model) => self
                .offers_on(Some(model))
                .map(|o| (o.key(), to_value(o.as_ref())))
                .collect(),
            ChannelKind::Alerts(_) | ChannelKind::Advisor(_) | ChannelKind::Portfolio(_) => return None,
        };
        Some(feed.snapshot(items, &header))
    }

    /// [`snapshot`](Self::snapshot) as JSON text, as a subscribe reply carries it. The offer
    /// channels (100k items for `offers:all`) are written straight from the offers, without
    /// building a JSON tree first.
    pub fn snapshot_text(&self, channel: &str, now_ms: i64) -> Option<String> {
        let model = match ChannelKind::parse(channel) {
            Some(ChannelKind::OffersAll) => None,
            Some(ChannelKind::Offers(model)) => Some(model),
            _ => return self.snapshot(channel, now_ms).map(|v| v.to_string()),
        };
        let empty = Feed::starting_at(channel, self.seq_base);
        let feed = self.feeds.get(channel).unwrap_or(&empty);
        let Value::Object(mut head) = feed.snapshot(Map::new(), &self.header(now_ms)) else {
            return None;
        };
        head.remove("items");
        Some(object_with(head, "items", |out| {
            if model.is_none() {
                // ~350 bytes an offer: one allocation instead of a doubling series.
                out.reserve(self.book.len() * 384);
            }
            out.push(b'{');
            for (i, offer) in self.offers_on(model).enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                // Writing into a `Vec` cannot fail, and an offer always serialises.
                let _ = serde_json::to_writer(&mut *out, &offer.key());
                out.push(b':');
                let _ = serde_json::to_writer(&mut *out, offer.as_ref());
            }
            out.push(b'}');
        }))
    }

    /// The offers an offer channel carries: `offers:<model>`'s, or every one (`offers:all`).
    fn offers_on<'a>(&'a self, model: Option<&'a str>) -> impl Iterator<Item = &'a Arc<Offer>> {
        self.book.iter().filter(move |o| model.is_none_or(|m| *o.model == *m))
    }

    /// Per-model rows for storage and the REST API: slug → aggregate.
    pub fn rows(&self) -> Vec<(&str, &ModelAggregate)> {
        self.aggregates.iter().map(|(k, v)| (k.as_str(), v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::aggregate::{aggregate, model_segments};
    use crate::market::checksum::{apply_delta, checksum_of};
    use crate::market::intern;
    use proptest::prelude::*;

    /// (id, model, gpus, rented, cents, verified, datacenter, country)
    type Spec = (u8, u8, u32, u32, u32, bool, bool, u8);

    fn offer(source: &'static str, s: Spec) -> Offer {
        let (id, model, gpus, rented, cents, verified, datacenter, country) = s;
        let (slug, name) = [
            ("rtx-4090", "RTX 4090"),
            ("a100-sxm4", "A100 SXM4"),
            ("rtx-3090", "RTX 3090"),
        ][model as usize % 3];
        Offer {
            source,
            marketplace: "vast",
            offer_id: smol_str::format_smolstr!("m{id}"),
            machine_id: Some(smol_str::format_smolstr!("{id}")),
            host_id: None,
            model: intern(slug),
            model_name: intern(name),
            num_gpus: gpus,
            gpus_rented: rented.min(gpus),
            price_per_gpu_hour_usd: cents as f64 / 100.0,
            reliability: None,
            verified,
            datacenter,
            country: [None, Some("US"), Some("DE")][country as usize % 3].map(intern),
            region: None,
            vram_gb: None,
            observed_at_ms: 0,
        }
    }

    fn spec() -> impl Strategy<Value = Spec> {
        (
            0u8..24,
            0u8..3,
            0u32..5,
            0u32..5,
            10u32..14,
            any::<bool>(),
            any::<bool>(),
            0u8..3,
        )
    }

    /// A poll: which source, and its offers (ids may repeat: the first copy counts).
    fn poll() -> impl Strategy<Value = (bool, Vec<Spec>)> {
        (any::<bool>(), proptest::collection::vec(spec(), 0..20))
    }

    /// The merged book recomputed from scratch, as the priority rule defines it.
    fn full_merge(state: &MarketState) -> BTreeMap<String, Offer> {
        let mut book: BTreeMap<String, Offer> = BTreeMap::new();
        for source_book in state.sources.values() {
            for o in source_book.iter() {
                match book.get(&o.key()) {
                    Some(kept) if priority(kept.source) <= priority(o.source) => {}
                    _ => {
                        book.insert(o.key(), (**o).clone());
                    }
                }
            }
        }
        book
    }

    #[test]
    fn a_mirror_that_starts_polling_keeps_only_its_own_models() {
        let mut leader = MarketState::new();
        leader.apply_offers("farm500", vec![offer("farm500", (1, 1, 2, 1, 12, true, false, 1))], 0);
        let mut state = MarketState::new();
        state.mirror(
            &leader.snapshot(MARKET_SUMMARY, 0).unwrap(),
            &leader.snapshot(SOURCES_STATUS, 0).unwrap(),
        );
        assert!(state.aggregates().contains_key("a100-sxm4"));
        state.apply_offers("farm500", vec![offer("farm500", (2, 0, 1, 0, 11, true, false, 1))], 1);
        assert_eq!(state.aggregates().keys().collect::<Vec<_>>(), ["rtx-4090"]);
        assert_eq!(state.label(), "farm500");
    }

    #[test]
    fn payloads_say_when_the_sources_took_their_data() {
        let mut state = MarketState::new();
        let empty = state.snapshot(MARKET_SUMMARY, 5).unwrap();
        assert!(empty.get("source_ts").is_none(), "no data, no source time: {empty}");
        let first = vec![offer("farm500", (1, 0, 2, 1, 12, true, false, 1))];
        let out = state.apply_poll("farm500", first.clone(), 1_000, 900);
        assert!(!out.is_empty());
        for o in &out {
            let payload: Value = serde_json::from_str(&o.payload).unwrap();
            assert_eq!(payload["source_ts"], 900, "{}", o.channel);
            assert_eq!(payload["ts"], 1_000, "{}", o.channel);
        }
        // Another source's older data: its deltas say so; snapshots keep the newest.
        let older = vec![offer("vast", (2, 1, 1, 0, 11, true, false, 1))];
        let out = state.apply_poll("vast", older, 1_100, 800);
        let delta: Value = serde_json::from_str(&out[0].payload).unwrap();
        assert_eq!(delta["source_ts"], 800);
        for channel in [MARKET_SUMMARY, MARKET_SUMMARY_1M, OFFERS_ALL, "gpu:rtx-4090"] {
            assert_eq!(state.snapshot(channel, 1_200).unwrap()["source_ts"], 900, "{channel}");
            let text = state.snapshot_text(channel, 1_200).unwrap();
            let text: Value = serde_json::from_str(&text).unwrap();
            assert_eq!(text["source_ts"], 900, "{channel}");
        }
        assert_eq!(state.snapshot(SOURCES_STATUS, 1_200).unwrap()["source_ts"], 900);
        let minute: Value = serde_json::from_str(&state.minute_snapshot(1_300).payload).unwrap();
        assert_eq!(minute["source_ts"], 900);
        // The same data polled again is data as of that poll.
        state.apply_poll("farm500", first, 1_400, 1_350);
        let summary = state.snapshot(MARKET_SUMMARY, 1_500).unwrap();
        assert_eq!(summary["source_ts"], 1_350);
        // A follower says what its leader says.
        let mut follower = MarketState::new();
        follower.mirror(&summary, &state.snapshot(SOURCES_STATUS, 1_500).unwrap());
        assert_eq!(follower.snapshot(MARKET_SUMMARY, 1_600).unwrap()["source_ts"], 1_350);
    }

    proptest! {
        /// After any sequence of polls from two sources that report overlapping offers, the
        /// incrementally kept book, aggregates and segments equal a full recomputation, and a
        /// client that applied every published delta of every channel holds each channel's
        /// snapshot, checksum included.
        #[test]
        fn incremental_updates_equal_a_full_recomputation(polls in proptest::collection::vec(poll(), 1..12)) {
            let mut state = MarketState::new();
            let mut clients: BTreeMap<String, Map<String, Value>> = BTreeMap::new();
            for (i, (vast, specs)) in polls.into_iter().enumerate() {
                let source = if vast { "vast" } else { "farm500" };
                let offers: Vec<Offer> = specs.into_iter().map(|s| offer(source, s)).collect();
                // What the source's book must hold: the first copy of each key.
                let mut expected_source: BTreeMap<String, Offer> = BTreeMap::new();
                for o in &offers {
                    expected_source.entry(o.key()).or_insert_with(|| o.clone());
                }
                for out in state.apply_offers(source, offers, i as i64) {
                    let client = clients.entry(out.channel.clone()).or_default();
                    let payload: Value = serde_json::from_str(&out.payload).unwrap();
                    prop_assert_eq!(&payload["type"], "delta");
                    prop_assert_eq!(&payload["channel"], out.channel.as_str());
                    apply_delta(client, &payload["changes"]);
                    prop_assert_eq!(checksum_of(client), payload["checksum"].as_u64().unwrap() as u32,
                        "{}", out.channel);
                }
                let source_book: BTreeMap<String, Offer> =
                    state.sources[source].iter().map(|o| (o.key(), (**o).clone())).collect();
                prop_assert_eq!(source_book, expected_source);

                let merged = full_merge(&state);
                let book: BTreeMap<String, Offer> = state.book.iter().map(|o| (o.key(), (**o).clone())).collect();
                prop_assert_eq!(&book, &merged);
                prop_assert_eq!(state.aggregates(), &aggregate(merged.values()));
                for model in ["rtx-4090", "a100-sxm4", "rtx-3090"] {
                    let segments = model_segments(merged.values().filter(|o| &*o.model == model));
                    prop_assert_eq!(state.segments.get(model).cloned().unwrap_or_default(), segments);
                    prop_assert_eq!(state.stats.contains_key(model), state.aggregates.contains_key(model));
                }
                for (channel, client) in &clients {
                    let snapshot = state.snapshot(channel, 0).unwrap();
                    let text: Value = serde_json::from_str(&state.snapshot_text(channel, 0).unwrap()).unwrap();
                    prop_assert_eq!(&text, &snapshot, "{}", channel);
                    prop_assert_eq!(client, snapshot["items"].as_object().unwrap(), "{}", channel);
                    prop_assert_eq!(checksum_of(client), snapshot["checksum"].as_u64().unwrap() as u32);
                }
            }
        }
    }
}
