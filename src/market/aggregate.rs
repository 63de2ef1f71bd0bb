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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
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
}

/// Everything `market:summary` says about one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelAggregate {
    pub model: super::Text,
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

#[derive(Default)]
struct SegmentBuilder {
    offers: u32,
    rented: Weighted,
    available: Weighted,
}

impl SegmentBuilder {
    fn add(&mut self, offer: &Offer, cents: i64) {
        self.offers += 1;
        self.rented.push(cents, offer.gpus_rented.min(offer.num_gpus));
        self.available.push(cents, offer.gpus_available());
    }

    fn build(self) -> Segment {
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
        }
    }
}

#[derive(Default)]
struct ModelBuilder {
    name: Option<super::Text>,
    all: SegmentBuilder,
    verified: SegmentBuilder,
    unverified: SegmentBuilder,
    datacenter: SegmentBuilder,
    community: SegmentBuilder,
}

/// Aggregate offers per model (keyed by slug).
pub fn aggregate<'a>(offers: impl IntoIterator<Item = &'a Offer>) -> BTreeMap<String, ModelAggregate> {
    let mut models: BTreeMap<super::Text, ModelBuilder> = BTreeMap::new();
    // Offers without GPU counts (list prices) carry no supply: they stay out of the aggregates.
    for offer in offers.into_iter().filter(|o| o.num_gpus > 0) {
        let b = models.entry(offer.model.clone()).or_default();
        if b.name.is_none() {
            b.name = Some(offer.model_name.clone());
        }
        let cents = price_cents(offer.price_per_gpu_hour_usd);
        b.all.add(offer, cents);
        if offer.verified {
            b.verified.add(offer, cents);
        } else {
            b.unverified.add(offer, cents);
        }
        if offer.datacenter {
            b.datacenter.add(offer, cents);
        } else {
            b.community.add(offer, cents);
        }
    }
    models
        .into_iter()
        .map(|(slug, b)| {
            (
                slug.to_string(),
                ModelAggregate {
                    name: b.name.unwrap_or_else(|| slug.clone()),
                    model: slug,
                    all: b.all.build(),
                    verified: b.verified.build(),
                    unverified: b.unverified.build(),
                    datacenter: b.datacenter.build(),
                    community: b.community.build(),
                },
            )
        })
        .collect()
}

/// The segments `gpu:<model>` publishes: the model's aggregate split by verified, datacenter and
/// country.
pub fn model_segments<'a>(offers: impl IntoIterator<Item = &'a Offer>) -> BTreeMap<String, Segment> {
    let mut segments: BTreeMap<String, SegmentBuilder> = BTreeMap::new();
    for offer in offers.into_iter().filter(|o| o.num_gpus > 0) {
        let cents = price_cents(offer.price_per_gpu_hour_usd);
        segments.entry("all".into()).or_default().add(offer, cents);
        let v = if offer.verified { "verified" } else { "unverified" };
        segments.entry(v.into()).or_default().add(offer, cents);
        let d = if offer.datacenter { "datacenter" } else { "community" };
        segments.entry(d.into()).or_default().add(offer, cents);
        if let Some(country) = &offer.country {
            segments
                .entry(format!("country:{country}"))
                .or_default()
                .add(offer, cents);
        }
    }
    segments.into_iter().map(|(k, b)| (k, b.build())).collect()
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
