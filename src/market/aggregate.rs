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

use serde::Serialize;

use super::Offer;

/// Price percentiles in USD per GPU-hour.
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
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
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
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
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelAggregate {
    pub model: String,
    pub name: String,
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

/// The median of sorted values.
fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        _ if n.is_multiple_of(2) => Some((sorted[n / 2 - 1] + sorted[n / 2]) / 2.0),
        _ => Some(sorted[n / 2]),
    }
}

/// The percentile of sorted values by rank `p/100 × n` (see the module docs).
fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    let n = sorted.len();
    match n {
        0 => None,
        1 => Some(sorted[0]),
        _ => {
            let index = (p / 100.0) * n as f64;
            if index == (index as i64) as f64 {
                let i = index as usize;
                (i >= 1).then(|| sorted[i - 1])
            } else if index > 1.0 {
                let i = index as usize;
                Some((sorted[i - 1] + sorted[i.min(n - 1)]) / 2.0)
            } else {
                None
            }
        }
    }
}

/// Percentiles of per-GPU prices given in cents; returned in dollars.
pub fn price_stats(cents: &mut [i64]) -> PriceStats {
    cents.sort_unstable();
    let sorted: Vec<f64> = cents.iter().map(|c| *c as f64).collect();
    let usd = |v: Option<f64>| v.map(|c| super::checksum::round4(c / 100.0));
    let (p10, p90) = match (percentile(&sorted, 10.0), percentile(&sorted, 90.0)) {
        // 500.farm shows the 10th and 90th only together.
        (Some(a), Some(b)) => (Some(a), Some(b)),
        _ => (None, None),
    };
    PriceStats {
        gpus: sorted.len() as u32,
        p10: usd(p10),
        p25: usd(percentile(&sorted, 25.0)),
        median: usd(median(&sorted)),
        p75: usd(percentile(&sorted, 75.0)),
        p90: usd(p90),
    }
}

#[derive(Default)]
struct SegmentBuilder {
    offers: u32,
    rented: Vec<i64>,
    available: Vec<i64>,
}

impl SegmentBuilder {
    fn add(&mut self, offer: &Offer, cents: i64) {
        self.offers += 1;
        for _ in 0..offer.gpus_rented.min(offer.num_gpus) {
            self.rented.push(cents);
        }
        for _ in 0..offer.gpus_available() {
            self.available.push(cents);
        }
    }

    fn build(mut self) -> Segment {
        let rented = self.rented.len() as u32;
        let available = self.available.len() as u32;
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
            price_rented: price_stats(&mut self.rented),
            price_available: price_stats(&mut self.available),
        }
    }
}

#[derive(Default)]
struct ModelBuilder {
    name: String,
    all: SegmentBuilder,
    verified: SegmentBuilder,
    unverified: SegmentBuilder,
    datacenter: SegmentBuilder,
    community: SegmentBuilder,
}

/// Aggregate offers per model (keyed by slug).
pub fn aggregate<'a>(offers: impl IntoIterator<Item = &'a Offer>) -> BTreeMap<String, ModelAggregate> {
    let mut models: BTreeMap<&str, ModelBuilder> = BTreeMap::new();
    // Offers without GPU counts (list prices) carry no supply: they stay out of the aggregates.
    for offer in offers.into_iter().filter(|o| o.num_gpus > 0) {
        let b = models.entry(offer.model.as_str()).or_default();
        if b.name.is_empty() {
            b.name = offer.model_name.clone();
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
                slug.to_owned(),
                ModelAggregate {
                    model: slug.to_owned(),
                    name: b.name,
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
