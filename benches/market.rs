//! Normalise + diff + aggregate: a 500.farm `/machines` body of N machines decoded, normalised
//! into offers and applied to the market state (books, diff, aggregates, feeds, payloads), with
//! 1% of machines changed since the previous poll. `cargo bench --bench market`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use gpuscout_hub::ingest::machines::parse_machines;
use gpuscout_hub::ingest::machines::parse_machines_bytes;
use gpuscout_hub::ingest::vast_machine::VastMachine;
use gpuscout_hub::market::state::MarketState;
use serde_json::Value;
use support::machines_body;

mod support;

/// The machines of a `/machines` body, read as the 500.farm source reads them.
fn machines_of(body: &[u8]) -> Vec<VastMachine> {
    parse_machines_bytes(body).unwrap()
}

/// Machines to normalised offers, as the 500.farm source does.
fn offers_of(machines: &[VastMachine]) -> Vec<gpuscout_hub::market::Offer> {
    gpuscout_hub::ingest::vast_machine::offers_of(machines, "farm500", 0)
}

/// The same through a `serde_json::Value` tree (the generic path, kept for comparison).
fn offers_via_tree(body: &[u8]) -> Vec<gpuscout_hub::market::Offer> {
    let value: Value = serde_json::from_slice(body).unwrap();
    offers_of(&parse_machines(&value, false).unwrap())
}

/// Time `poll(state, input(version), at)` on successive polls of one market state, alternating
/// between the two versions of the body (so each poll changes 1% of machines), as a hub runs poll
/// after poll. Only `poll` is timed, including the drop of what it returns (a hub publishes it,
/// then drops it). The state lives across criterion's samples (it calls the routine once per
/// sample).
fn successive_polls<I, T>(
    group: &mut criterion::BenchmarkGroup<criterion::measurement::WallTime>,
    id: BenchmarkId,
    first: &[VastMachine],
    mut input: impl FnMut(usize) -> I,
    mut poll: impl FnMut(&mut MarketState, I, i64) -> T,
) {
    let mut state = MarketState::new();
    state.apply_offers("farm500", offers_of(first), 0);
    let mut k = 0i64;
    group.bench_function(id, |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                k += 1;
                let input = input((k % 2) as usize);
                let started = Instant::now();
                black_box(poll(&mut state, input, k));
                total += started.elapsed();
            }
            total
        })
    });
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("market");
    group.sample_size(10);
    for n in [20_000usize, 100_000] {
        let first_body = machines_body(n, 0);
        let second_body = machines_body(n, 1);
        let first = machines_of(&first_body);
        let second = machines_of(&second_body);
        group.bench_with_input(BenchmarkId::new("decode", n), &second_body, |b, body| {
            b.iter(|| black_box(machines_of(body)))
        });
        group.bench_with_input(BenchmarkId::new("decode_via_tree", n), &second_body, |b, body| {
            b.iter(|| black_box(offers_via_tree(body)))
        });
        group.bench_with_input(BenchmarkId::new("normalise", n), &second, |b, machines| {
            b.iter(|| black_box(offers_of(machines)))
        });
        let bodies = [first_body.as_slice(), second_body.as_slice()];
        let versions = [first.as_slice(), second.as_slice()];
        // Books, diff, aggregates, per-channel deltas and checksums, from normalised offers.
        // (The offers are cloned untimed: only `poll` is timed.)
        let offers = [offers_of(&first), offers_of(&second)];
        successive_polls(
            &mut group,
            BenchmarkId::new("diff_aggregate_publish", n),
            &first,
            |v| offers[v].clone(),
            |state, offers, at| state.apply_offers("farm500", offers, at),
        );
        // The target: normalise + diff + aggregate (and the payloads of every channel).
        successive_polls(
            &mut group,
            BenchmarkId::new("process", n),
            &first,
            |v| versions[v],
            |state, machines, at| state.apply_offers("farm500", offers_of(machines), at),
        );
        successive_polls(
            &mut group,
            BenchmarkId::new("poll_total", n),
            &first,
            |v| bodies[v],
            |state, body, at| state.apply_offers("farm500", offers_of(&machines_of(body)), at),
        );
        // A hub's first poll: every offer is new and every channel's first delta carries it.
        group.bench_with_input(BenchmarkId::new("first_poll", n), &n, |b, _| {
            b.iter_batched(
                || offers_of(&first),
                |offers| {
                    let mut state = MarketState::new();
                    let out = state.apply_offers("farm500", offers, 0);
                    (state, black_box(out))
                },
                criterion::BatchSize::LargeInput,
            )
        });
    }
    group.finish();
}

/// Full recomputations, for comparison with the incremental path (100k machines).
fn stages(c: &mut Criterion) {
    use gpuscout_hub::market::aggregate::aggregate;
    use gpuscout_hub::market::book::{BookDiff, MarketBook};
    use std::sync::Arc;
    let mut group = c.benchmark_group("stages");
    group.sample_size(10);
    let first = offers_of(&machines_of(&machines_body(100_000, 0)));
    let second = offers_of(&machines_of(&machines_body(100_000, 1)));
    let old = MarketBook::from_offers(first.iter().cloned().map(Arc::new));
    let new = MarketBook::from_offers(second.iter().cloned().map(Arc::new));
    group.bench_function("book_replace", |b| {
        b.iter_batched(
            || (old.clone(), second.clone()),
            |(mut book, offers)| {
                let replaced = book.replace(offers);
                (book, black_box(replaced))
            },
            criterion::BatchSize::LargeInput,
        )
    });
    group.bench_function("full_diff", |b| {
        b.iter(|| black_box(BookDiff::between(&old, &new).changed.len()))
    });
    group.bench_function("full_aggregate", |b| {
        b.iter(|| black_box(aggregate(new.iter().map(|o| o.as_ref()))))
    });
    // A subscribe to `offers:all` (enterprise): the snapshot of 100k offers as the reply's text.
    let mut state = MarketState::new();
    state.apply_offers("farm500", first, 0);
    state.apply_offers("farm500", second, 1);
    group.bench_function("snapshot_offers_all_text", |b| {
        b.iter(|| black_box(state.snapshot_text("offers:all", 2).map(|t| t.len())))
    });
    group.bench_function("snapshot_offers_all_via_tree", |b| {
        b.iter(|| black_box(state.snapshot("offers:all", 2).map(|v| v.to_string().len())))
    });
    group.finish();
}

criterion_group!(benches, bench, stages);
criterion_main!(benches);
