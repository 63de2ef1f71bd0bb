//! Alert evaluation per market change: 100k rules over the 88 simulated models (price, utilisation
//! and availability rules with thresholds spread around the market), against a market of the
//! simulated source's ~5k machines. `cargo bench --bench alerts`.

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use gpuscout_hub::alerts::{AlertEngine, Condition, Direction, PriceStat, Rule};
use gpuscout_hub::ingest::simulated::SimulatedSource;
use gpuscout_hub::market::state::MarketState;

fn rules(n: usize, models: &[String]) -> Vec<Rule> {
    (0..n)
        .map(|i| {
            let model = models[i % models.len()].clone();
            let condition = match i % 4 {
                0 => Condition::Price {
                    model,
                    stat: PriceStat::Median,
                    direction: Direction::Below,
                    threshold_usd: 0.05 + (i % 200) as f64 / 100.0,
                },
                1 => Condition::Price {
                    model,
                    stat: PriceStat::Cheapest,
                    direction: Direction::Below,
                    threshold_usd: 0.05 + (i % 100) as f64 / 100.0,
                },
                2 => Condition::Utilisation {
                    model,
                    direction: Direction::Above,
                    threshold: (i % 100) as f64 / 100.0,
                },
                _ => Condition::Availability {
                    model,
                    below: (i % 500) as u32 + 1,
                },
            };
            Rule::new(
                format!("r{i}"),
                format!("u{}", i % 20_000),
                "bench".into(),
                condition,
                3600,
                0,
            )
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut sim = SimulatedSource::new(1);
    let mut state = MarketState::new();
    state.apply_offers("simulated", sim.offers(0), 0);
    let models: Vec<String> = state.aggregates().keys().cloned().collect();
    let mut engine = AlertEngine::new(rules(100_000, &models));
    engine.evaluate(&state, 0);
    let mut group = c.benchmark_group("alerts");
    group.sample_size(20);
    group.bench_function("evaluate_100k_rules", |b| {
        b.iter(|| {
            sim.step();
            state.apply_offers("simulated", sim.offers(0), 1);
            black_box(engine.evaluate(&state, 1))
        })
    });
    group.bench_function("market_change_only", |b| {
        b.iter(|| {
            sim.step();
            black_box(state.apply_offers("simulated", sim.offers(0), 1))
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
