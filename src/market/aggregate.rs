//! Per-model aggregates: GPU counts, utilisation and price percentiles, computed the way the
//! 500.farm exporter computes `/gpu-stats`, so our figures agree with that public reference:
//!
//! - counts are GPUs, not offers; utilisation = rented GPUs ÷ all GPUs;
//! - a GPU's price is its offer's price per GPU-hour in whole cents, truncated
//!   (`int(dph_base / num_gpus * 100)`), and every GPU counts once (prices weighted by GPU count);
//! - the median is the usual one; percentiles use the rank `p/100 × n`: a whole rank takes that
//!   element, otherwise (rank > 1) the mean of its two neighbours, otherwise none (so with 2–9 GPUs
//!   there is no 10th percentile). A percentile that does not exist is omitted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Offer;

/// Price percentiles in USD per GPU-hour.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(default)]
pub struct PriceStats {
    /// GPUs the prices cover.
    pub gpus: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p10: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p25: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub median: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p75: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub p90: Option<f64>,
}

/// Counts and prices of one slice of a model's market.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default, utoipa::ToSchema)]
#[serde(default)]
pub struct Segment {
    pub offers: u32,
    pub gpus_total: u32,
    pub gpus_rented: u32,
    pub gpus_available: u32,
    /// Rented GPUs ÷ all GPUs, 4 decimals.
    pub utilisation: f64,
    pub price_rented: PriceStats,
    pub price_available: PriceStats,
    /// Every GPU, rented and available together (500.farm's `stats.all`).
    pub price_all: PriceStats,
}

/// Everything `market:summary` says about one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ModelAggregate {
    #[schema(value_type = String)]
    pub model: super::Text,
    #[schema(value_type = String)]
    pub name: super::Text,
    #[serde(flatten)]
    pub all: Segment,
    pub verified: Segment,
    pub unverified: Segment,
    pub datacenter: Segment,
    pub community: Segment,
}

/// A price in whole cents per GPU-hour, truncated as 500.farm does.
pub fn price_cents(price_per_gpu_hour_usd: f64) -> i64 {
    (price_per_gpu_hour_usd * 100.0) as i64
}

/// Per-GPU prices in cents, each with the number of GPUs at that price: a compact form of the
/// list in which every GPU appears once (100k machines are 100k entries, not 400k).
#[derive(Default)]
struct Weighted {
    entries: Vec<(i64, u32)>,
    gpus: u32,
}

impl Weighted {
    fn push(&mut self, cents: i64, gpus: u32) {
        if gpus > 0 {
            self.entries.push((cents, gpus));
            self.gpus += gpus;
        }
    }

    fn sort(&mut self) {
        self.entries.sort_unstable_by_key(|e| e.0);
    }

    /// The value at 1-based position `k` of the expanded, sorted list.
    fn nth(&self, k: usize) -> f64 {
        let mut seen = 0usize;
        for (cents, n) in &self.entries {
            seen += *n as usize;
            if seen >= k {
                return *cents as f64;
            }
        }
        self.entries.last().map_or(0.0, |e| e.0 as f64)
    }

    fn median(&self) -> Option<f64> {
        let n = self.gpus as usize;
        match n {
            0 => None,
            _ if n.is_multiple_of(2) => Some((self.nth(n / 2) + self.nth(n / 2 + 1)) / 2.0),
            _ => Some(self.nth(n / 2 + 1)),
        }
    }

    /// The rank rule of the module docs, on the expanded list.
    fn percentile(&self, p: f64) -> Option<f64> {
        let n = self.gpus as usize;
        match n {
            0 => None,
            1 => Some(self.nth(1)),
            _ => {
                let index = (p / 100.0) * n as f64;
                if index == (index as i64) as f64 {
                    let i = index as usize;
                    (i >= 1).then(|| self.nth(i))
                } else if index > 1.0 {
                    let i = index as usize;
                    Some((self.nth(i) + self.nth((i + 1).min(n))) / 2.0)
                } else {
                    None
                }
            }
        }
    }

    fn stats(mut self) -> PriceStats {
        self.sort();
        let usd = |v: Option<f64>| v.map(|c| super::checksum::round4(c / 100.0));
        let (p10, p90) = match (self.percentile(10.0), self.percentile(90.0)) {
            // 500.farm shows the 10th and 90th only together.
            (Some(a), Some(b)) => (Some(a), Some(b)),
            _ => (None, None),
        };
        PriceStats {
            gpus: self.gpus,
            p10: usd(p10),
            p25: usd(self.percentile(25.0)),
            median: usd(self.median()),
            p75: usd(self.percentile(75.0)),
            p90: usd(p90),
        }
    }
}

/// Percentiles of per-GPU prices given in cents (one entry per GPU); returned in dollars.
pub fn price_stats(cents: &[i64]) -> PriceStats {
    let mut w = Weighted::default();
    for c in cents {
        w.push(*c, 1);
    }
    w.stats()
}

/// A price histogram: GPUs per whole-cent price. Offers can be added and taken out again, so a
/// poll that changes 1% of offers updates the aggregates by those offers alone.
#[derive(Debug, Default, Clone)]
struct Histogram {
    cents: BTreeMap<i64, u32>,
    gpus: u32,
}

impl Histogram {
    fn add(&mut self, cents: i64, gpus: u32) {
        if gpus > 0 {
            *self.cents.entry(cents).or_default() += gpus;
            self.gpus += gpus;
        }
    }

    fn remove(&mut self, cents: i64, gpus: u32) {
        if gpus == 0 {
            return;
        }
        if let std::collections::btree_map::Entry::Occupied(mut e) = self.cents.entry(cents) {
            debug_assert!(*e.get() >= gpus, "removing GPUs never added");
            *e.get_mut() = e.get().saturating_sub(gpus);
            if *e.get() == 0 {
                e.remove();
            }
        }
        self.gpus = self.gpus.saturating_sub(gpus);
    }

    fn stats(&self) -> PriceStats {
        Weighted {
            entries: self.cents.iter().map(|(c, n)| (*c, *n)).collect(),
            gpus: self.gpus,
        }
        .stats()
    }

    /// The stats of this histogram and `other` taken as one.
    fn stats_with(&self, other: &Histogram) -> PriceStats {
        let mut both = Weighted::default();
        for (c, n) in self.cents.iter().chain(&other.cents) {
            both.push(*c, *n);
        }
        both.stats()
    }
}

/// Counts and price histograms of one slice of a model's market.
#[derive(Debug, Default, Clone)]
struct SegmentStats {
    offers: u32,
    rented: Histogram,
    available: Histogram,
}

impl SegmentStats {
    fn update(&mut self, offer: &Offer, cents: i64, add: bool) {
        let rented = offer.gpus_rented.min(offer.num_gpus);
        let available = offer.gpus_available();
        if add {
            self.offers += 1;
            self.rented.add(cents, rented);
            self.available.add(cents, available);
        } else {
            self.offers = self.offers.saturating_sub(1);
            self.rented.remove(cents, rented);
            self.available.remove(cents, available);
        }
    }

    fn build(&self) -> Segment {
        let rented = self.rented.gpus;
        let available = self.available.gpus;
        let total = rented + available;
        Segment {
            offers: self.offers,
            gpus_total: total,
            gpus_rented: rented,
            gpus_available: available,
            utilisation: if total == 0 {
                0.0
            } else {
                super::checksum::round4(rented as f64 / total as f64)
            },
            price_rented: self.rented.stats(),
            price_available: self.available.stats(),
            price_all: self.rented.stats_with(&self.available),
        }
    }
}

/// The slices of a model's market (`gpu:<model>` publishes them all, `market:summary` the first
/// five).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum SegmentKey {
    All,
    Verified,
    Unverified,
    Datacenter,
    Community,
    Country(super::Text),
}

impl SegmentKey {
    fn name(&self) -> String {
        match self {
            SegmentKey::All => "all".into(),
            SegmentKey::Verified => "verified".into(),
            SegmentKey::Unverified => "unverified".into(),
            SegmentKey::Datacenter => "datacenter".into(),
            SegmentKey::Community => "community".into(),
            SegmentKey::Country(c) => format!("country:{c}"),
        }
    }
}

/// One model's market, kept up to date offer by offer: what its `market:summary` item and its
/// `gpu:<model>` segments are built from.
#[derive(Debug, Default, Clone)]
pub struct ModelStats {
    /// Offers per display name (the most common names the model).
    names: BTreeMap<super::Text, u32>,
    segments: BTreeMap<SegmentKey, SegmentStats>,
}

impl ModelStats {
    /// Count an offer in. Offers without GPU counts (list prices) carry no supply and are left out.
    pub fn add(&mut self, offer: &Offer) {
        self.update(offer, true);
    }

    /// Take out an offer counted in before (the same copy).
    pub fn remove(&mut self, offer: &Offer) {
        self.update(offer, false);
    }

    fn update(&mut self, offer: &Offer, add: bool) {
        if offer.num_gpus == 0 {
            return;
        }
        if add {
            *self.names.entry(offer.model_name.clone()).or_default() += 1;
        } else if let Some(n) = self.names.get_mut(&offer.model_name) {
            *n -= 1;
            if *n == 0 {
                self.names.remove(&offer.model_name);
            }
        }
        let cents = price_cents(offer.price_per_gpu_hour_usd);
        let verified = if offer.verified {
            SegmentKey::Verified
        } else {
            SegmentKey::Unverified
        };
        let hosting = if offer.datacenter {
            SegmentKey::Datacenter
        } else {
            SegmentKey::Community
        };
        let country = offer.country.clone().map(SegmentKey::Country);
        for key in [Some(SegmentKey::All), Some(verified), Some(hosting), country]
            .into_iter()
            .flatten()
        {
            if add {
                self.segments.entry(key).or_default().update(offer, cents, true);
            } else if let Some(s) = self.segments.get_mut(&key) {
                s.update(offer, cents, false);
                if s.offers == 0 {
                    self.segments.remove(&key);
                }
            }
        }
    }

    /// No offer counted.
    pub fn is_empty(&self) -> bool {
        self.segments.is_empty()
    }

    /// The model's `market:summary` item (`None` without offers).
    pub fn aggregate(&self, slug: &super::Text) -> Option<ModelAggregate> {
        if self.is_empty() {
            return None;
        }
        // The most common display name; of equally common ones, the first in order.
        let mut name: Option<(&super::Text, u32)> = None;
        for (n, count) in &self.names {
            if name.is_none_or(|(_, best)| *count > best) {
                name = Some((n, *count));
            }
        }
        let segment = |key: &SegmentKey| self.segments.get(key).map(SegmentStats::build).unwrap_or_default();
        Some(ModelAggregate {
            model: slug.clone(),
            name: name.map_or_else(|| slug.clone(), |(n, _)| n.clone()),
            all: segment(&SegmentKey::All),
            verified: segment(&SegmentKey::Verified),
            unverified: segment(&SegmentKey::Unverified),
            datacenter: segment(&SegmentKey::Datacenter),
            community: segment(&SegmentKey::Community),
        })
    }

    /// The segments `gpu:<model>` publishes: the model's market split by verified, datacenter and
    /// country.
    pub fn segments(&self) -> BTreeMap<String, Segment> {
        self.segments.iter().map(|(k, s)| (k.name(), s.build())).collect()
    }
}

fn stats_by_model<'a>(offers: impl IntoIterator<Item = &'a Offer>) -> BTreeMap<super::Text, ModelStats> {
    let mut models: BTreeMap<super::Text, ModelStats> = BTreeMap::new();
    for offer in offers {
        models.entry(offer.model.clone()).or_default().add(offer);
    }
    models
}

/// Aggregate offers per model (keyed by slug), all at once.
pub fn aggregate<'a>(offers: impl IntoIterator<Item = &'a Offer>) -> BTreeMap<String, ModelAggregate> {
    stats_by_model(offers)
        .iter()
        .filter_map(|(slug, stats)| Some((slug.to_string(), stats.aggregate(slug)?)))
        .collect()
}

/// The segments `gpu:<model>` publishes for one model's offers, all at once.
pub fn model_segments<'a>(offers: impl IntoIterator<Item = &'a Offer>) -> BTreeMap<String, Segment> {
    let mut stats = ModelStats::default();
    for offer in offers {
        stats.add(offer);
    }
    stats.segments()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn median(v: &[f64]) -> Option<f64> {
        weighted(v).median()
    }

    fn percentile(v: &[f64], p: f64) -> Option<f64> {
        weighted(v).percentile(p)
    }

    fn weighted(v: &[f64]) -> Weighted {
        let mut w = Weighted::default();
        for x in v {
            w.push(*x as i64, 1);
        }
        w.sort();
        w
    }

    #[test]
    fn weights_expand_to_one_entry_per_gpu() {
        let mut w = Weighted::default();
        w.push(30, 3);
        w.push(10, 1);
        w.push(20, 2);
        w.sort();
        // 10, 20, 20, 30, 30, 30
        assert_eq!(w.median(), Some(25.0));
        assert_eq!(w.percentile(90.0), Some(30.0));
        assert_eq!(price_stats(&[10, 20, 20, 30, 30, 30]).median, Some(0.25));
    }

    #[test]
    fn percentiles_follow_the_rank_rule() {
        let v: Vec<f64> = (1..=30).map(|i| i as f64).collect();
        // 0.1 × 30 is exactly 3.0 in f64: a whole rank takes the 3rd value.
        assert_eq!(percentile(&v, 10.0), Some(3.0));
        assert_eq!(percentile(&v, 90.0), Some(27.0));
        // 0.1 × 25 = 2.5: not whole, so the mean of the 2nd and 3rd.
        let v: Vec<f64> = (1..=25).map(|i| i as f64).collect();
        assert_eq!(percentile(&v, 10.0), Some(2.5));
        let five: Vec<f64> = vec![1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&five, 10.0), None, "no 10th percentile with 2-9 values");
        assert_eq!(percentile(&five, 90.0), Some(4.5));
        assert_eq!(median(&five), Some(3.0));
        assert_eq!(median(&[1.0, 2.0]), Some(1.5));
        assert_eq!(percentile(&[7.0], 10.0), Some(7.0));
    }

    #[test]
    fn cents_are_truncated_like_500farm() {
        assert_eq!(price_cents(0.29), 28, "0.29 × 100 = 28.999999999999996");
        assert_eq!(price_cents(0.3), 30);
        assert_eq!(price_cents(1.0 / 3.0), 33);
    }
}
