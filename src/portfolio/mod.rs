//! A host's own machines (DESIGN §15): linked Vast.ai accounts polled by the leader, machines
//! entered by hand, each placed in the live market with a suggested price, published on
//! `portfolio:#<uid>` as a snapshot and checksummed deltas in the market's format.
//!
//! The leader runs [`Portfolio::run`]: it reads each linked account when due (a shared rate
//! limit across accounts, backoff on 429/5xx, `unauthorized` on 401/403 without retrying),
//! and recomputes the users' items whenever the market moved or a user's machines changed
//! (announced on the control channel by whichever node took the change).

pub mod machine;
pub mod position;
pub mod vast_host;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value, json};
use tokio_util::sync::CancellationToken;

use crate::bus::Bus;
use crate::bus::control::{Control, ControlFeed};
use crate::bus::leader::Leadership;
use crate::bus::snapshots::SnapshotReplica;
use crate::clock::unix_now_ms;
use crate::config::PortfolioSettings;
use crate::market::feed::{Changes, Feed};
use crate::market::state::MarketState;
use crate::market::{Market, Offer};
use crate::secrets::Sealer;
use crate::store::Store;
use crate::store::portfolio::MachineRow;
use machine::Machine;
use position::{Comparable, Position, Suggestion, Terms};

/// One machine as `portfolio:#<uid>` carries it.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Item {
    #[serde(flatten)]
    pub machine: Machine,
    /// Since when no GPU has been rented (`None`: rented now).
    pub idle_since_ms: Option<i64>,
    /// The machine's daily earnings averaged over the last week (linked accounts' earnings).
    pub earn_7d_avg_usd: Option<f64>,
    /// Its place among comparable offers (`None`: no comparable offer, or no price).
    pub position: Option<Position>,
    pub suggestion: Option<Suggestion>,
}

/// The totals of a user's machines.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Totals {
    pub machines: usize,
    pub gpus: u32,
    pub gpus_rented: u32,
    /// Rented GPUs ÷ GPUs.
    pub rented_share: f64,
    pub earn_day_usd: f64,
}

fn totals(items: &BTreeMap<String, Item>) -> Totals {
    let gpus: u32 = items.values().map(|i| i.machine.num_gpus).sum();
    let rented: u32 = items.values().map(|i| i.machine.gpus_rented()).sum();
    let earn: f64 = items.values().filter_map(|i| i.machine.earn_day_usd).sum();
    Totals {
        machines: items.len(),
        gpus,
        gpus_rented: rented,
        rented_share: if gpus == 0 {
            0.0
        } else {
            round4(f64::from(rented) / f64::from(gpus))
        },
        // `+ 0.0`: an empty sum is -0.0, which JSON would show as `-0.0`.
        earn_day_usd: round4(earn) + 0.0,
    }
}

fn round4(v: f64) -> f64 {
    crate::market::checksum::round4(v)
}

/// One user's feed on `portfolio:#<uid>`.
struct UserFeed {
    feed: Feed,
    items: BTreeMap<String, Item>,
}

/// What a [`Portfolio`] is built from.
pub struct PortfolioParts {
    pub store: Store,
    pub bus: Arc<dyn Bus>,
    pub market: Market,
    pub settings: PortfolioSettings,
    pub sealer: Sealer,
    pub host: vast_host::VastHost,
    pub replica: Option<Arc<SnapshotReplica>>,
    pub leadership: Leadership,
}

pub struct Portfolio {
    store: Store,
    bus: Arc<dyn Bus>,
    market: Market,
    settings: PortfolioSettings,
    sealer: Sealer,
    host: vast_host::VastHost,
    /// With several nodes: where the leader leaves each user's snapshot for the others.
    replica: Option<Arc<SnapshotReplica>>,
    leadership: Leadership,
    /// Std mutex: never held across `.await`.
    feeds: Mutex<HashMap<String, UserFeed>>,
    /// Users whose machines changed since the last refresh.
    dirty: Mutex<HashSet<String>>,
    changed: tokio::sync::Notify,
}

impl Portfolio {
    pub fn new(parts: PortfolioParts) -> Arc<Self> {
        let PortfolioParts {
            store,
            bus,
            market,
            settings,
            sealer,
            host,
            replica,
            leadership,
        } = parts;
        Arc::new(Self {
            store,
            bus,
            market,
            settings,
            sealer,
            host,
            replica,
            leadership,
            feeds: Mutex::default(),
            dirty: Mutex::default(),
            changed: tokio::sync::Notify::new(),
        })
    }

    pub fn sealer(&self) -> &Sealer {
        &self.sealer
    }

    pub fn settings(&self) -> &PortfolioSettings {
        &self.settings
    }

    pub fn host(&self) -> &vast_host::VastHost {
        &self.host
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// A user's machines changed on this node: refresh them here if this node runs the
    /// portfolio, and (through the control channel) wherever it runs.
    pub fn mark_changed(&self, user: &str) {
        self.dirty
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(user.to_owned());
        self.changed.notify_one();
    }

    /// The snapshot `portfolio:#<uid>` starts from (and `GET /api/v1/portfolio` answers): the
    /// leader's (from the shared store when this node follows), else what this node computed.
    pub async fn current(&self, user: &str) -> Value {
        if let Some(replica) = &self.replica
            && !self.leadership.is_leader()
            && let Some(text) = replica.load(&crate::channels::portfolio(user)).await
            && let Ok(v) = serde_json::from_str(&text)
        {
            return v;
        }
        self.snapshot(user)
    }

    /// This node's snapshot of the user's portfolio, or an empty one at `seq` 0 before anything
    /// was computed.
    pub fn snapshot(&self, user: &str) -> Value {
        let feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        let channel = crate::channels::portfolio(user);
        match feeds.get(user) {
            Some(f) => f.feed.snapshot(items_json(&f.items), &header(&f.items)),
            None => Feed::new(channel).snapshot(Map::new(), &header(&BTreeMap::new())),
        }
    }

    /// Every user's machines as last computed here (for the machine alert kinds).
    pub fn machines_view(&self) -> HashMap<String, HashMap<String, Item>> {
        let feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        feeds
            .iter()
            .map(|(user, f)| {
                (
                    user.clone(),
                    f.items.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
                )
            })
            .collect()
    }

    /// Run on the leader until `stop`: poll linked accounts when due, recompute on every market
    /// change and on announced changes of users' machines.
    pub async fn run(self: Arc<Self>, control: ControlFeed, stop: CancellationToken) {
        let follow = control.follow("portfolio", stop.clone(), {
            let me = self.clone();
            move |m| {
                if let Control::PortfolioChanged { user_id } = m {
                    me.mark_changed(&user_id);
                }
            }
        });
        let work = self.clone().work(stop.clone());
        tokio::join!(follow, work);
    }

    async fn work(self: Arc<Self>, stop: CancellationToken) {
        let poller = poll::Poller::new(self.clone());
        let mut seen_version = u64::MAX;
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
                _ = self.changed.notified() => {}
            }
            let dirty = std::mem::take(&mut *self.dirty.lock().unwrap_or_else(|e| e.into_inner()));
            // A change of a user's accounts is read at once; otherwise the list is read now and then.
            let polled = poller.poll_due(&stop, !dirty.is_empty()).await;
            let version = self.market.version();
            if version != seen_version || polled || !dirty.is_empty() {
                seen_version = version;
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %e, "refreshing portfolios failed; the next tick retries");
                    self.dirty.lock().unwrap_or_else(|e| e.into_inner()).extend(dirty);
                }
            }
        }
    }

    /// Recompute every user's items against the market and publish what changed.
    pub async fn refresh(&self) -> Result<(), crate::store::StoreError> {
        let rows = self.store.machines(None).await?;
        // Nobody has machines, and nobody had: nothing to place (the book is not indexed).
        if rows.is_empty() && self.feeds.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            return Ok(());
        }
        let averages = earnings_averages(&self.store.accounts(None).await?);
        let mut by_user: BTreeMap<String, BTreeMap<String, Item>> = BTreeMap::new();
        {
            let state = self.market.read();
            let index = ModelIndex::of(&state);
            for row in &rows {
                match item_of(row, &index, &self.settings, &averages) {
                    Some(item) => {
                        by_user
                            .entry(row.user_id.clone())
                            .or_default()
                            .insert(row.id.clone(), item);
                    }
                    None => tracing::warn!(machine = %row.id, "a stored machine does not read back; skipped"),
                }
            }
        }
        // Users who had machines and have none now get their removals.
        let known: Vec<String> = self
            .feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .cloned()
            .collect();
        for user in known {
            by_user.entry(user).or_default();
        }
        for (user, items) in by_user {
            self.publish(&user, items).await;
        }
        Ok(())
    }

    async fn publish(&self, user: &str, items: BTreeMap<String, Item>) {
        let channel = crate::channels::portfolio(user);
        let (delta, snapshot) = {
            let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
            let f = feeds.entry(user.to_owned()).or_insert_with(|| UserFeed {
                feed: Feed::new(channel.clone()),
                items: BTreeMap::new(),
            });
            let changes = Changes::between(&f.items, &items);
            let head = header(&items);
            let delta = f.feed.apply(changes, &head);
            f.items = items;
            let snapshot = delta
                .as_ref()
                .and(self.replica.as_ref())
                .map(|_| f.feed.snapshot(items_json(&f.items), &head).to_string());
            (delta, snapshot)
        };
        let Some(delta) = delta else { return };
        // The others' subscribers start from the snapshot this delta leads to.
        if let (Some(replica), Some(snapshot)) = (&self.replica, snapshot)
            && let Err(e) = replica.store(vec![(channel.clone(), snapshot)]).await
        {
            tracing::warn!(user, error = %e, "storing a portfolio snapshot for the other nodes failed");
        }
        let Ok(raw) = serde_json::value::RawValue::from_string(delta) else {
            return;
        };
        if let Err(e) = self.bus.publish_json(&channel, &raw).await {
            tracing::warn!(user, error = %e, "publishing a portfolio delta failed");
        }
    }
}

mod poll;

fn items_json(items: &BTreeMap<String, Item>) -> Map<String, Value> {
    items
        .iter()
        .map(|(k, v)| (k.clone(), serde_json::to_value(v).unwrap_or(Value::Null)))
        .collect()
}

fn header(items: &BTreeMap<String, Item>) -> Map<String, Value> {
    let mut head = Map::new();
    head.insert("ts".into(), json!(unix_now_ms()));
    head.insert("totals".into(), json!(totals(items)));
    head
}

/// The market's offers by model, built once per refresh.
struct ModelIndex<'a> {
    by_model: HashMap<&'a str, Vec<&'a Offer>>,
}

impl<'a> ModelIndex<'a> {
    fn of(state: &'a MarketState) -> Self {
        let mut by_model: HashMap<&str, Vec<&Offer>> = HashMap::new();
        for o in state.book().iter() {
            by_model.entry(&*o.model).or_default().push(o.as_ref());
        }
        Self { by_model }
    }

    fn offers(&self, model: &str) -> &[&'a Offer] {
        self.by_model.get(model).map_or(&[], Vec::as_slice)
    }
}

/// A stored machine as `portfolio:#<uid>` shows it: placed in the market, with a suggestion.
fn item_of(
    row: &MachineRow,
    index: &ModelIndex<'_>,
    settings: &PortfolioSettings,
    averages: &HashMap<(String, String), f64>,
) -> Option<Item> {
    let machine: Machine = serde_json::from_str(&row.data).ok()?;
    let rented = machine.gpus_rented() > 0;
    let idle_since_ms = (!rented).then(|| row.last_rented_at_ms.unwrap_or(row.first_seen_ms));
    let offers = index.offers(&machine.model);
    let comparable = Comparable {
        model: &machine.model,
        verified: machine.verified,
        datacenter: machine.datacenter,
        own_machine_id: machine.machine_id.as_deref().filter(|_| machine.platform == "vast"),
    };
    // As renters see it: the machine's own offer in the market when it is there, else the
    // host's price with the platform's fee.
    let own_offer = comparable.own_machine_id.and_then(|id| {
        offers
            .iter()
            .find(|o| o.marketplace == "vast" && o.machine_id.as_deref() == Some(id))
    });
    let renter_price = match (own_offer, machine.price_per_gpu_hour_usd) {
        (Some(o), _) => Some(o.price_per_gpu_hour_usd),
        (None, Some(p)) => Some(p * settings.renter_price_ratio),
        (None, None) => None,
    };
    let placed = renter_price.and_then(|p| position::position(offers.iter().copied(), &comparable, p));
    let ratio = match (own_offer, machine.price_per_gpu_hour_usd) {
        (Some(o), Some(p)) if p > 0.0 => o.price_per_gpu_hour_usd / p,
        _ => settings.renter_price_ratio,
    };
    let what = describe(&machine);
    let suggestion = placed.as_ref().map(|(_, gpus)| {
        let terms = Terms {
            target_occupancy: settings.target_occupancy,
            renter_price_ratio: ratio,
            min_bid_usd: machine.min_bid_usd,
        };
        position::suggest(gpus, terms, &what)
    });
    let earn_7d_avg_usd = match (&row.account_id, &row.platform_id) {
        (Some(a), Some(p)) => averages.get(&(a.clone(), p.clone())).copied(),
        _ => None,
    };
    Some(Item {
        machine,
        idle_since_ms,
        earn_7d_avg_usd,
        position: placed.map(|(p, _)| p),
        suggestion,
    })
}

/// Each linked machine's average daily earnings over its account's last earnings window:
/// (account id, platform machine id) → USD per day (GPU, storage and bandwidth together).
fn earnings_averages(accounts: &[crate::store::portfolio::AccountRow]) -> HashMap<(String, String), f64> {
    let mut out = HashMap::new();
    for a in accounts {
        let Some(e) = a
            .earnings
            .as_deref()
            .and_then(|t| serde_json::from_str::<Value>(t).ok())
        else {
            continue;
        };
        let days = match (e["sday"].as_f64(), e["eday"].as_f64()) {
            (Some(s), Some(e)) if e >= s => (e - s).floor() + 1.0,
            _ => continue,
        };
        for m in e["per_machine"].as_array().into_iter().flatten() {
            let Some(id) = m["machine_id"].as_u64() else { continue };
            let total: f64 = ["gpu_earn", "sto_earn", "bwu_earn", "bwd_earn"]
                .iter()
                .filter_map(|k| m[*k].as_f64())
                .sum();
            out.insert((a.id.clone(), id.to_string()), round4(total / days));
        }
    }
    out
}

/// "verified RTX 4090", "unverified datacenter H100 SXM".
fn describe(m: &Machine) -> String {
    let mut words = vec![if m.verified { "verified" } else { "unverified" }];
    match m.datacenter {
        Some(true) => words.push("datacenter"),
        Some(false) => words.push("community"),
        None => {}
    }
    format!("{} {}", words.join(" "), m.model_name)
}
