//! Normalise + diff + aggregate: a 500.farm `/machines` body of N machines parsed into offers and
//! applied to the market state (book, diff, aggregates, feeds, payloads), with 1% of machines
//! changed since the previous poll. `cargo bench --bench market`.

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gpuscout_hub::ingest::farm500::parse_machines;
use gpuscout_hub::ingest::machines::parse_machines_bytes;
use gpuscout_hub::ingest::simulated::seed_models;
use gpuscout_hub::market::state::MarketState;
use serde_json::{Value, json};

/// A `/machines` body of `n` machines across the 88 seed models; `version` changes 1% of them.
fn machines_body(n: usize, version: u64) -> Vec<u8> {
    let models = seed_models();
    let records: Vec<Value> = (0..n)
        .map(|i| {
            let m = &models[i % models.len()];
            let gpus = [1u32, 2, 4, 8][i % 4];
            let changed = (i as u64 + version).is_multiple_of(100) && version > 0;
            let rented = if changed {
                (i as u32 + 1) % (gpus + 1)
            } else {
                i as u32 % (gpus + 1)
            };
            let price = m.price_median * (0.8 + (i % 40) as f64 / 100.0) * if changed { 1.05 } else { 1.0 };
            json!({
                "machine_id": 100_000 + i, "host_id": i % 5000, "gpu_name": m.name, "num_gpus": gpus,
                "num_gpus_rented": rented, "dph_base": price * gpus as f64, "verification": "verified",
                "verified": i % 3 != 0, "hosting_type": i % 5 / 4, "geolocation": "Texas, US",
                "reliability2": 0.99, "gpu_ram": 24576, "chunks": [], "min_chunk": 1,
            })
        })
        .collect();
    serde_json::to_vec(&json!({"url": "/machines", "timestamp": "2026-11-28T00:00:00Z", "count": n, "offers": records}))
        .unwrap()
}

/// What the 500.farm source does with a `/machines` body.
fn offers_of(body: &[u8]) -> Vec<gpuscout_hub::market::Offer> {
    parse_machines_bytes(body)
        .unwrap()
        .iter()
        .filter_map(|m| m.to_offer("farm500", 0))
        .collect()
}

/// The same through a `serde_json::Value` tree (the generic path, kept for comparison).
fn offers_via_tree(body: &[u8]) -> Vec<gpuscout_hub::market::Offer> {
    let value: Value = serde_json::from_slice(body).unwrap();
    parse_machines(&value, false)
        .unwrap()
        .iter()
        .filter_map(|m| m.to_offer("farm500", 0))
        .collect()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("market");
    group.sample_size(10);
    for n in [20_000usize, 100_000] {
        let first = machines_body(n, 0);
        let second = machines_body(n, 1);
        group.bench_with_input(BenchmarkId::new("normalise", n), &second, |b, body| {
            b.iter(|| black_box(offers_of(body)))
        });
        group.bench_with_input(BenchmarkId::new("normalise_via_tree", n), &second, |b, body| {
            b.iter(|| black_box(offers_via_tree(body)))
        });
        group.bench_with_input(BenchmarkId::new("diff_aggregate_publish", n), &n, |b, _| {
            b.iter_batched(
                || {
                    let mut state = MarketState::new();
                    state.apply_offers("farm500", offers_of(&first), 0);
                    (state, offers_of(&second))
                },
                // The state is returned, so criterion drops it after timing: a hub keeps its
                // state from one poll to the next and never pays for dropping it.
                |(mut state, offers)| {
                    let out = state.apply_offers("farm500", offers, 1);
                    (state, black_box(out))
                },
                criterion::BatchSize::LargeInput,
            )
        });
        group.bench_with_input(BenchmarkId::new("poll_total", n), &n, |b, _| {
            b.iter_batched(
                || {
                    let mut state = MarketState::new();
                    state.apply_offers("farm500", offers_of(&first), 0);
                    state
                },
                |mut state| {
                    let out = state.apply_offers("farm500", offers_of(&second), 1);
                    (state, black_box(out))
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// The stages of one poll, timed separately (100k machines).
fn stages(c: &mut Criterion) {
    use gpuscout_hub::market::aggregate::aggregate;
    use gpuscout_hub::market::book::{BookDiff, MarketBook};
    use std::sync::Arc;
    let mut group = c.benchmark_group("stages");
    group.sample_size(10);
    let first: Vec<Arc<_>> = offers_of(&machines_body(100_000, 0))
        .into_iter()
        .map(Arc::new)
        .collect();
    let second: Vec<Arc<_>> = offers_of(&machines_body(100_000, 1))
        .into_iter()
        .map(Arc::new)
        .collect();
    let old = MarketBook::merge([&first]);
    let new = MarketBook::merge([&second]);
    group.bench_function("merge", |b| b.iter(|| black_box(MarketBook::merge([&second]))));
    group.bench_function("diff", |b| {
        b.iter(|| black_box(BookDiff::between(&old, &new).added.len()))
    });
    group.bench_function("aggregate", |b| {
        b.iter(|| black_box(aggregate(new.offers.values().map(|o| o.as_ref()))))
    });
    group.bench_function("by_model", |b| b.iter(|| black_box(new.by_model().len())));
    group.finish();
}

criterion_group!(benches, bench, stages);
criterion_main!(benches);
