//! The market: normalised offers from every source, the book, its diffs, per-model aggregates,
//! checksums and the channel payloads built from them. Pure computation: no I/O.

pub mod aggregate;
pub mod book;
pub mod checksum;
pub mod feed;
pub mod models;
pub mod simulated;
pub mod state;

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use serde::Serialize;

/// The market state, shared by the ingest runner (its one writer) and by subscribe snapshots,
/// REST and the advisor (readers). A std lock: held for computation only, never across `.await`.
#[derive(Clone, Default)]
pub struct Market {
    state: Arc<RwLock<state::MarketState>>,
    /// Counts the writes: a snapshot built at version `v` stays right until the next write.
    version: Arc<AtomicU64>,
}

impl Market {
    pub fn read(&self) -> std::sync::RwLockReadGuard<'_, state::MarketState> {
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    pub fn write(&self) -> MarketWrite<'_> {
        MarketWrite {
            guard: self.state.write().unwrap_or_else(|e| e.into_inner()),
            version: &self.version,
        }
    }

    /// The number of writes so far. Read under [`Market::read`], it is the version of what the
    /// guard shows (a write bumps it before it releases the lock).
    pub fn version(&self) -> u64 {
        self.version.load(Ordering::Acquire)
    }
}

/// Write access to the market; the version moves on when it ends.
pub struct MarketWrite<'a> {
    guard: std::sync::RwLockWriteGuard<'a, state::MarketState>,
    version: &'a AtomicU64,
}

impl std::ops::Deref for MarketWrite<'_> {
    type Target = state::MarketState;
    fn deref(&self) -> &state::MarketState {
        &self.guard
    }
}

impl std::ops::DerefMut for MarketWrite<'_> {
    fn deref_mut(&mut self) -> &mut state::MarketState {
        &mut self.guard
    }
}

impl Drop for MarketWrite<'_> {
    fn drop(&mut self) {
        // Still under the write lock: a reader that locks after this write sees the new version.
        self.version.fetch_add(1, Ordering::Release);
    }
}

/// Shared text: model names, regions and countries repeat across thousands of offers and polls.
pub type Text = Arc<str>;

/// An identifier (offer, machine, host): held inline when short (up to 23 bytes, which every
/// Vast.ai id is), so a poll of 100k offers allocates and frees no id strings.
pub type Id = smol_str::SmolStr;

/// Values computed from a string, remembered by one thread (no lock on the way), bounded: a
/// source sending ever-new strings cannot grow it without limit.
pub struct Memo<V>(rustc_hash::FxHashMap<Box<str>, V>);

impl<V> Default for Memo<V> {
    fn default() -> Self {
        Self(Default::default())
    }
}

impl<V: Clone> Memo<V> {
    const MAX: usize = 4096;

    pub fn get_or(&mut self, key: &str, make: impl FnOnce() -> V) -> V {
        if let Some(v) = self.0.get(key) {
            return v.clone();
        }
        let v = make();
        if self.0.len() < Self::MAX {
            self.0.insert(key.into(), v.clone());
        }
        v
    }
}

/// The one shared copy of `s`. Interned text compares by pointer first, which keeps the diff of
/// 100k offers from touching every string. Each thread remembers the copies it has used, so the
/// 100k lookups of a poll take no lock.
pub fn intern(s: &str) -> Text {
    thread_local! {
        static NEAR: std::cell::RefCell<Memo<Text>> = Default::default();
    }
    NEAR.with_borrow_mut(|near| near.get_or(s, || intern_shared(s)))
}

fn intern_shared(s: &str) -> Text {
    static POOL: OnceLock<Mutex<HashSet<Text>>> = OnceLock::new();
    let pool = POOL.get_or_init(Default::default);
    let mut pool = pool.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(t) = pool.get(s) {
        return t.clone();
    }
    let t: Text = Arc::from(s);
    // Bounded: a source sending ever-new strings cannot grow it without limit.
    if pool.len() < 100_000 {
        pool.insert(t.clone());
    }
    t
}

fn same(a: &Text, b: &Text) -> bool {
    Arc::ptr_eq(a, b) || a == b
}

fn same_opt(a: &Option<Text>, b: &Option<Text>) -> bool {
    match (a, b) {
        (Some(a), Some(b)) => same(a, b),
        (None, None) => true,
        _ => false,
    }
}

/// One offer, normalised. Prices are per GPU-hour in USD.
#[derive(Debug, Clone, Serialize)]
pub struct Offer {
    /// The adapter it came from (`farm500`, `vast`, `runpod`, `simulated`).
    pub source: &'static str,
    /// Where it can be rented; the same Vast.ai offer seen through two sources is one offer.
    pub marketplace: &'static str,
    pub offer_id: Id,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<Id>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host_id: Option<Id>,
    /// Canonical model slug (`rtx-4090`).
    pub model: Text,
    /// The model's display name as the source gave it.
    pub model_name: Text,
    pub num_gpus: u32,
    /// GPUs of this offer currently rented (a machine may be partly rented).
    pub gpus_rented: u32,
    #[serde(serialize_with = "round4_ser")]
    pub price_per_gpu_hour_usd: f64,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "round4_opt_ser")]
    pub reliability: Option<f64>,
    pub verified: bool,
    pub datacenter: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<Text>,
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "round4_opt_ser")]
    pub vram_gb: Option<f64>,
    /// When the source reported it. Not part of the offer's identity or of its diffs.
    #[serde(skip)]
    pub observed_at_ms: i64,
}

impl Offer {
    /// The book key: marketplace and offer id.
    pub fn key(&self) -> String {
        format!("{}:{}", self.marketplace, self.offer_id)
    }

    pub fn gpus_available(&self) -> u32 {
        self.num_gpus.saturating_sub(self.gpus_rented)
    }
}

impl PartialEq for Offer {
    /// Everything but `observed_at_ms`; the fields that change often are compared first.
    fn eq(&self, o: &Self) -> bool {
        self.gpus_rented == o.gpus_rented
            && self.price_per_gpu_hour_usd == o.price_per_gpu_hour_usd
            && self.num_gpus == o.num_gpus
            && self.reliability == o.reliability
            && self.verified == o.verified
            && self.datacenter == o.datacenter
            && self.vram_gb == o.vram_gb
            && std::ptr::eq(self.source, o.source)
            && same(&self.model, &o.model)
            && same(&self.model_name, &o.model_name)
            && same_opt(&self.country, &o.country)
            && same_opt(&self.region, &o.region)
            && self.marketplace == o.marketplace
            && self.offer_id == o.offer_id
            && self.machine_id == o.machine_id
            && self.host_id == o.host_id
    }
}

/// Every fractional number published is rounded to 4 decimals (see `checksum`).
fn round4_ser<S: serde::Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(checksum::round4(*v))
}

fn round4_opt_ser<S: serde::Serializer>(v: &Option<f64>, s: S) -> Result<S::Ok, S::Error> {
    match v {
        Some(v) => s.serialize_f64(checksum::round4(*v)),
        None => s.serialize_none(),
    }
}
