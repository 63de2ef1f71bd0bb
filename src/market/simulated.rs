//! The simulated market: a living imitation of Vast.ai, so the hub shows something true to life
//! offline. Seeded from the 88 models of a real 500.farm reading (`simulated_models.csv`: GPUs
//! listed and rented, verified share, price percentiles), it lists machines of 1–8 GPUs whose
//! rentals start and end and whose hosts reprice, and machines that come and go. Every payload it
//! feeds says `"source":"simulated"`.
//!
//! A pure generator, driven by the caller: `ingest::simulated` polls it as a source, and tests and
//! benchmarks use it as a realistic market.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::models::canonical_slug;
use super::{Offer, intern};

const SEED_CSV: &str = include_str!("simulated_models.csv");

const COUNTRIES: &[(&str, &str)] = &[
    ("US", "California, US"),
    ("US", "Texas, US"),
    ("CA", "Quebec, CA"),
    ("DE", "Hesse, DE"),
    ("NL", "North Holland, NL"),
    ("PL", "Mazovia, PL"),
    ("SE", "Stockholm, SE"),
    ("JP", "Tokyo, JP"),
    ("VN", "Hanoi, VN"),
    ("BR", "Sao Paulo, BR"),
];

/// One model of the seed table.
#[derive(Debug, Clone)]
pub struct SeedModel {
    pub name: String,
    pub gpus_total: u32,
    pub gpus_rented: u32,
    pub gpus_verified: u32,
    pub price_p10: f64,
    pub price_median: f64,
    pub price_p90: f64,
    pub vram_gb: f64,
}

/// The 88 seed models.
pub fn seed_models() -> Vec<SeedModel> {
    SEED_CSV
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let f: Vec<&str> = line.split(',').collect();
            let num = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok());
            Some(SeedModel {
                name: f.first()?.to_string(),
                gpus_total: num(1)? as u32,
                gpus_rented: num(2)? as u32,
                gpus_verified: num(3)? as u32,
                price_p10: num(4)?,
                price_median: num(5)?,
                price_p90: num(6)?,
                vram_gb: num(7).unwrap_or(0.0),
            })
        })
        .collect()
}

struct Machine {
    offer: Offer,
    /// Each machine's host prices around its own anchor.
    anchor: f64,
}

pub struct SimulatedMarket {
    rng: StdRng,
    models: Vec<(SeedModel, String)>,
    machines: Vec<Machine>,
    next_machine_id: u64,
}

/// A price drawn from the model's percentiles (piecewise linear in quantile space).
fn draw_price(rng: &mut StdRng, m: &SeedModel) -> f64 {
    let u: f64 = rng.random();
    let points = [
        (0.0, m.price_p10 * 0.75),
        (0.1, m.price_p10),
        (0.5, m.price_median),
        (0.9, m.price_p90),
        (1.0, m.price_p90 * 1.4),
    ];
    for w in points.windows(2) {
        let ((u0, p0), (u1, p1)) = (w[0], w[1]);
        if u <= u1 {
            return (p0 + (p1 - p0) * (u - u0) / (u1 - u0)).max(0.005);
        }
    }
    m.price_p90
}

impl SimulatedMarket {
    pub fn new(seed: u64) -> Self {
        let rng = if seed == 0 {
            StdRng::from_os_rng()
        } else {
            StdRng::seed_from_u64(seed)
        };
        let models = seed_models()
            .into_iter()
            .filter_map(|m| canonical_slug(&m.name).map(|s| (m, s)))
            .collect();
        let mut sim = Self {
            rng,
            models,
            machines: Vec::new(),
            next_machine_id: 10_000,
        };
        for i in 0..sim.models.len() {
            let mut gpus = 0;
            let total = sim.models[i].0.gpus_total;
            while gpus < total {
                let m = sim.new_machine(i);
                gpus += m.offer.num_gpus;
                sim.machines.push(m);
            }
        }
        sim
    }

    fn new_machine(&mut self, model: usize) -> Machine {
        let (seed, slug) = &self.models[model];
        let sizes = [1, 1, 1, 1, 2, 2, 4, 4, 8, 8];
        let num_gpus = sizes[self.rng.random_range(0..sizes.len())];
        let rented_share = seed.gpus_rented as f64 / seed.gpus_total.max(1) as f64;
        let gpus_rented = (0..num_gpus)
            .filter(|_| self.rng.random_bool(rented_share.clamp(0.0, 1.0)))
            .count() as u32;
        let verified_share = seed.gpus_verified as f64 / seed.gpus_total.max(1) as f64;
        let (country, region) = COUNTRIES[self.rng.random_range(0..COUNTRIES.len())];
        let anchor = draw_price(&mut self.rng, seed);
        self.next_machine_id += 1;
        let id = self.next_machine_id;
        Machine {
            anchor,
            offer: Offer {
                source: "simulated",
                marketplace: "simulated",
                offer_id: smol_str::format_smolstr!("m{id}"),
                machine_id: Some(smol_str::format_smolstr!("{id}")),
                host_id: Some(smol_str::format_smolstr!("{}", id % 997 + 1000)),
                model: intern(slug),
                model_name: intern(&seed.name),
                num_gpus,
                gpus_rented,
                price_per_gpu_hour_usd: (anchor * 1000.0).round() / 1000.0,
                reliability: Some(((0.9 + self.rng.random::<f64>() * 0.1) * 10_000.0).round() / 10_000.0),
                verified: self.rng.random_bool(verified_share.clamp(0.0, 1.0)),
                datacenter: self.rng.random_bool(0.2),
                country: Some(intern(country)),
                region: Some(intern(region)),
                vram_gb: (seed.vram_gb > 0.0).then_some(seed.vram_gb),
                observed_at_ms: 0,
            },
        }
    }

    /// One poll's worth of market life.
    pub fn step(&mut self) {
        let n = self.machines.len();
        if n == 0 {
            return;
        }
        // Rentals start and end on about 0.5% of machines.
        for _ in 0..(n / 200).max(1) {
            let m = &mut self.machines[self.rng.random_range(0..n)].offer;
            let delta: i32 = if self.rng.random_bool(0.5) { 1 } else { -1 };
            m.gpus_rented = (m.gpus_rented as i32 + delta).clamp(0, m.num_gpus as i32) as u32;
        }
        // A few hosts reprice around their anchor.
        for _ in 0..(n / 1000).max(1) {
            let machine = &mut self.machines[self.rng.random_range(0..n)];
            let drift = 1.0 + self.rng.random_range(-0.06..0.06);
            machine.offer.price_per_gpu_hour_usd = ((machine.anchor * drift) * 1000.0).round().max(5.0) / 1000.0;
        }
        // Now and then a machine leaves and another joins.
        if self.rng.random_bool(0.2) {
            let gone = self.rng.random_range(0..n);
            let model = self
                .models
                .iter()
                .position(|(_, slug)| **slug == *self.machines[gone].offer.model)
                .unwrap_or(0);
            self.machines.swap_remove(gone);
            let fresh = self.new_machine(model);
            self.machines.push(fresh);
        }
    }

    pub fn offers(&self, observed_at_ms: i64) -> Vec<Offer> {
        self.machines
            .iter()
            .map(|m| {
                let mut o = m.offer.clone();
                o.observed_at_ms = observed_at_ms;
                o
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::super::aggregate::aggregate;
    use super::*;

    #[test]
    fn seeded_from_the_88_real_models() {
        let seeds = seed_models();
        assert_eq!(seeds.len(), 88);
        let sim = SimulatedMarket::new(7);
        let aggregates = aggregate(sim.machines.iter().map(|m| &m.offer));
        assert_eq!(aggregates.len(), 88);
        let rtx = &aggregates["rtx-4090"];
        assert!(rtx.all.gpus_total >= 4986 && rtx.all.gpus_total < 4986 + 8);
        // Utilisation close to the real share (2402 of 4986 rented).
        assert!((rtx.all.utilisation - 0.48).abs() < 0.05, "{}", rtx.all.utilisation);
        let median = rtx.all.price_available.median.unwrap();
        assert!((0.28..0.42).contains(&median), "median {median}");
    }

    #[test]
    fn the_market_moves_but_stays_consistent() {
        let mut sim = SimulatedMarket::new(3);
        let before = sim.offers(0);
        for _ in 0..20 {
            sim.step();
        }
        let after = sim.offers(0);
        let changed = after.iter().zip(&before).filter(|(a, b)| a != b).count();
        assert!(changed > 0);
        assert!(
            after
                .iter()
                .all(|o| o.gpus_rented <= o.num_gpus && o.price_per_gpu_hour_usd > 0.0)
        );
        assert!(after.iter().all(|o| o.source == "simulated"));
    }
}
