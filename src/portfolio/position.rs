//! Where a host's machine stands in the live market, and the price to suggest. Pure computation
//! over the market book.
//!
//! **Comparable offers**: the same model, the same verification, and the same datacenter class
//! when the machine's is known; the machine's own offer is left out. Prices are per GPU-hour as
//! renters pay them, each GPU counted once.
//!
//! **Percentile**: the share of comparable GPUs priced below the machine (half of those at the
//! same price), in percent.
//!
//! **Suggested price** (the rule, documented in `docs/portfolio.md`): walk the comparable GPUs
//! from the cheapest up; at each price level, the occupancy is the share of the GPUs priced at or
//! below it that are rented. The suggestion is the highest price level whose occupancy is still at
//! least the host's target (`portfolio.target_occupancy`), kept within the rented offers' p10–p90
//! band (nearest rank), then turned into the host's price (÷ the renter price ratio) and raised to the host's
//! minimum bid if it is below it. Without any rented comparable GPU there is no evidence to price
//! by, and no suggestion.

use serde::Serialize;

use crate::market::Offer;
use crate::market::aggregate::{PriceStats, price_cents, price_stats};

/// What to compare a machine with.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparable<'a> {
    pub model: &'a str,
    pub verified: bool,
    /// `None`: not known, both classes count.
    pub datacenter: Option<bool>,
    /// The machine's own offer in the book (`vast` machine id), left out.
    pub own_machine_id: Option<&'a str>,
}

impl Comparable<'_> {
    pub fn matches(&self, o: &Offer) -> bool {
        &*o.model == self.model
            && o.verified == self.verified
            && self.datacenter.is_none_or(|d| d == o.datacenter)
            && !(o.marketplace == "vast"
                && self.own_machine_id.is_some()
                && o.machine_id.as_deref() == self.own_machine_id)
    }
}

/// The machine's place among comparable offers.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Position {
    /// Comparable offers and their GPUs.
    pub offers: u32,
    pub gpus: u32,
    /// The machine's price as renters see it, per GPU-hour.
    pub renter_price_usd: f64,
    /// Percent of comparable GPUs priced below it (0–100, one decimal).
    pub percentile: f64,
    pub available: PriceStats,
    pub rented: PriceStats,
    /// Rented ÷ all comparable GPUs.
    pub utilisation: f64,
}

/// A suggested price and why.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Suggestion {
    /// The host's price (what the platform's listing takes), per GPU-hour, 3 decimals.
    pub price_per_gpu_hour_usd: Option<f64>,
    /// The same as renters would see it.
    pub renter_price_usd: Option<f64>,
    /// In words: the evidence and the rule.
    pub reason: String,
}

/// Comparable GPUs as (price in cents, rented) pairs, and the number of offers.
fn comparable_gpus<'a>(offers: impl IntoIterator<Item = &'a Offer>, c: &Comparable<'_>) -> (Vec<(i64, bool)>, u32) {
    let mut gpus = Vec::new();
    let mut count = 0;
    for o in offers.into_iter().filter(|o| c.matches(o)) {
        count += 1;
        let cents = price_cents(o.price_per_gpu_hour_usd);
        gpus.extend(std::iter::repeat_n(
            (cents, true),
            o.gpus_rented.min(o.num_gpus) as usize,
        ));
        gpus.extend(std::iter::repeat_n((cents, false), o.gpus_available() as usize));
    }
    gpus.sort_unstable();
    (gpus, count)
}

/// The machine's position at `renter_price_usd`, or `None` without comparable offers.
pub fn position<'a>(
    offers: impl IntoIterator<Item = &'a Offer>,
    c: &Comparable<'_>,
    renter_price_usd: f64,
) -> Option<(Position, Vec<(i64, bool)>)> {
    let (gpus, count) = comparable_gpus(offers, c);
    if gpus.is_empty() {
        return None;
    }
    let own = price_cents(renter_price_usd);
    let below = gpus.iter().filter(|(p, _)| *p < own).count() as f64;
    let equal = gpus.iter().filter(|(p, _)| *p == own).count() as f64;
    let total = gpus.len() as f64;
    let rented: Vec<i64> = gpus.iter().filter(|g| g.1).map(|g| g.0).collect();
    let available: Vec<i64> = gpus.iter().filter(|g| !g.1).map(|g| g.0).collect();
    let position = Position {
        offers: count,
        gpus: gpus.len() as u32,
        renter_price_usd: round(renter_price_usd, 4),
        percentile: round(100.0 * (below + equal / 2.0) / total, 1),
        available: price_stats(&available),
        rented: price_stats(&rented),
        utilisation: round(rented.len() as f64 / total, 4),
    };
    Some((position, gpus))
}

/// A percentile in words: `62.4` → `62nd`, `11` → `11th`, `0` → `0th`.
pub fn ordinal(percentile: f64) -> String {
    let n = percentile.round().clamp(0.0, 100.0) as u32;
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

fn round(v: f64, places: i32) -> f64 {
    let f = 10f64.powi(places);
    (v * f).round() / f
}

/// The host's pricing terms for [`suggest`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Terms {
    pub target_occupancy: f64,
    /// Renter price ÷ host price.
    pub renter_price_ratio: f64,
    /// The host's minimum bid (host price), a floor.
    pub min_bid_usd: Option<f64>,
}

/// The nearest-rank percentile `p` of sorted cents, in dollars.
fn nearest_rank(sorted: &[i64], p: f64) -> Option<f64> {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted.get(rank - 1).map(|c| *c as f64 / 100.0)
}

/// The suggested price from the comparable GPUs (sorted by price, from [`position`]).
pub fn suggest(gpus: &[(i64, bool)], terms: Terms, what: &str) -> Suggestion {
    // The rented band by nearest rank: defined for any number of rented GPUs.
    let rented: Vec<i64> = gpus.iter().filter(|g| g.1).map(|g| g.0).collect();
    let (Some(low), Some(high)) = (nearest_rank(&rented, 10.0), nearest_rank(&rented, 90.0)) else {
        return Suggestion {
            price_per_gpu_hour_usd: None,
            renter_price_usd: None,
            reason: format!("No comparable {what} offer is rented now: there is no evidence to price by."),
        };
    };
    // The highest price level at which the GPUs priced at or below it are rented at the target.
    let (mut seen, mut rented_seen, mut at_target) = (0usize, 0usize, None);
    let mut i = 0;
    while i < gpus.len() {
        let level = gpus[i].0;
        while i < gpus.len() && gpus[i].0 == level {
            seen += 1;
            rented_seen += usize::from(gpus[i].1);
            i += 1;
        }
        if rented_seen as f64 >= terms.target_occupancy * seen as f64 {
            at_target = Some(level);
        }
    }
    let target_pct = (terms.target_occupancy * 100.0).round();
    let (renter, mut reason) = match at_target {
        Some(cents) => {
            let usd = cents as f64 / 100.0;
            (
                usd,
                format!(
                    "Comparable {what} offers priced at or below ${usd:.2}/h are at least {target_pct}% rented (your target)"
                ),
            )
        }
        None => (
            low,
            format!(
                "No price level of comparable {what} offers is {target_pct}% rented; the cheapest rented ones start at ${low:.2}/h"
            ),
        ),
    };
    let bounded = renter.clamp(low, high);
    reason.push_str(&format!("; rented ones sit at ${low:.2}–${high:.2}/h"));
    if bounded != renter {
        reason.push_str(&format!(", so the suggestion is kept at ${bounded:.2}/h"));
    }
    let mut host = bounded / terms.renter_price_ratio;
    if let Some(floor) = terms.min_bid_usd.filter(|f| *f > host) {
        host = floor;
        reason.push_str(&format!(", raised to your minimum bid of ${floor:.3}/h"));
    }
    reason.push('.');
    Suggestion {
        price_per_gpu_hour_usd: Some(round(host, 3)),
        renter_price_usd: Some(round(host * terms.renter_price_ratio, 4)),
        reason,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::intern;

    fn offer(id: &str, price: f64, gpus: u32, rented: u32, verified: bool) -> Offer {
        Offer {
            source: "farm500",
            marketplace: "vast",
            offer_id: id.into(),
            machine_id: Some(id.into()),
            host_id: None,
            model: intern("rtx-4090"),
            model_name: intern("RTX 4090"),
            num_gpus: gpus,
            gpus_rented: rented,
            price_per_gpu_hour_usd: price,
            reliability: None,
            verified,
            datacenter: false,
            country: None,
            region: None,
            vram_gb: None,
            observed_at_ms: 0,
        }
    }

    const C: Comparable<'static> = Comparable {
        model: "rtx-4090",
        verified: true,
        datacenter: None,
        own_machine_id: Some("own"),
    };

    /// Ten one-GPU offers at $0.30…$0.39: the four cheapest rented, then one more at $0.36.
    fn market() -> Vec<Offer> {
        let mut offers: Vec<Offer> = (0..10)
            .map(|i| {
                offer(
                    &format!("o{i}"),
                    0.30 + i as f64 / 100.0,
                    1,
                    u32::from(i < 4 || i == 6),
                    true,
                )
            })
            .collect();
        // Not comparable: unverified, another model, the machine's own offer.
        offers.push(offer("u1", 0.10, 8, 8, false));
        let mut other = offer("m1", 0.05, 8, 8, true);
        other.model = intern("rtx-3090");
        offers.push(other);
        offers.push(offer("own", 0.45, 4, 0, true));
        offers
    }

    #[test]
    fn the_percentile_counts_comparable_gpus_below_the_price() {
        let offers = market();
        let (p, _) = position(&offers, &C, 0.345).unwrap();
        assert_eq!(
            (p.offers, p.gpus),
            (10, 10),
            "own, unverified and other models left out"
        );
        // $0.345 is 34 cents (truncated, as the market's prices are): 4 below, 1 equal.
        assert_eq!(p.percentile, 45.0);
        let (p, _) = position(&offers, &C, 0.45).unwrap();
        assert_eq!(p.percentile, 100.0);
        assert_eq!(p.utilisation, 0.5);
        assert_eq!(p.rented.gpus, 5);
        assert_eq!(p.available.gpus, 5);
        assert!(position(&offers, &Comparable { model: "h100", ..C }, 1.0).is_none());
    }

    #[test]
    fn the_suggestion_is_the_highest_price_rented_at_the_target() {
        let offers = market();
        let (_, gpus) = position(&offers, &C, 0.45).unwrap();
        let terms = Terms {
            target_occupancy: 0.8,
            renter_price_ratio: 1.0,
            min_bid_usd: None,
        };
        // At or below $0.33: 4 of 4 rented; $0.34: 4/5; $0.35: 4/6 < 0.8; $0.36: 5/7 < 0.8.
        let s = suggest(&gpus, terms, "verified RTX 4090");
        assert_eq!(s.price_per_gpu_hour_usd, Some(0.34), "{}", s.reason);
        assert!(
            s.reason.contains("at or below $0.34/h are at least 80% rented"),
            "{}",
            s.reason
        );
        // A lower target reaches higher; the host's price is the renter's ÷ the ratio.
        let lower = Terms {
            target_occupancy: 0.5,
            renter_price_ratio: 4.0 / 3.0,
            ..terms
        };
        let s = suggest(&gpus, lower, "verified RTX 4090");
        assert_eq!(s.renter_price_usd, Some(0.36), "{}", s.reason);
        assert_eq!(s.price_per_gpu_hour_usd, Some(0.27));
        // The minimum bid is a floor.
        let floor = Terms {
            min_bid_usd: Some(0.40),
            ..terms
        };
        let s = suggest(&gpus, floor, "verified RTX 4090");
        assert_eq!(s.price_per_gpu_hour_usd, Some(0.40));
        assert!(s.reason.contains("minimum bid"), "{}", s.reason);
    }

    #[test]
    fn ordinals() {
        let words: Vec<String> = [0.0, 1.0, 2.0, 3.0, 11.0, 12.4, 22.0, 62.5, 100.0]
            .map(ordinal)
            .to_vec();
        assert_eq!(
            words,
            ["0th", "1st", "2nd", "3rd", "11th", "12th", "22nd", "63rd", "100th"]
        );
    }

    #[test]
    fn without_rented_comparable_offers_there_is_no_suggestion() {
        let offers = [offer("a", 0.3, 2, 0, true), offer("b", 0.4, 2, 0, true)];
        let (_, gpus) = position(&offers, &C, 0.35).unwrap();
        let terms = Terms {
            target_occupancy: 0.8,
            renter_price_ratio: 1.0,
            min_bid_usd: None,
        };
        let s = suggest(&gpus, terms, "verified RTX 4090");
        assert_eq!(s.price_per_gpu_hour_usd, None);
        assert!(s.reason.contains("no evidence"), "{}", s.reason);
    }

    #[test]
    fn when_no_level_reaches_the_target_the_cheapest_rented_price_is_suggested() {
        // Cheap offers idle, expensive ones rented (a thin market): never 80% at any level.
        let offers = [
            offer("a", 0.30, 4, 0, true),
            offer("b", 0.50, 1, 1, true),
            offer("c", 0.60, 1, 1, true),
        ];
        let (_, gpus) = position(&offers, &C, 0.55).unwrap();
        let terms = Terms {
            target_occupancy: 0.8,
            renter_price_ratio: 1.0,
            min_bid_usd: None,
        };
        let s = suggest(&gpus, terms, "verified RTX 4090");
        assert_eq!(s.price_per_gpu_hour_usd, Some(0.5), "{}", s.reason);
    }
}
