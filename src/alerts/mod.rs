//! Alerts: users' rules, their evaluation on every market change, and what a firing produces.
//!
//! A rule fires on the *crossing* of its condition (false → true), not on every poll where it holds,
//! and not again within its cooldown. The first evaluation of a rule only learns where the market
//! stands. Each firing has an idempotency key (rule + crossing number) so a leader failover never
//! fires the same crossing twice. Evaluation is pure; delivery (`delivery`) does the I/O.

pub mod delivery;
pub mod email;
mod machines;
pub mod push;
pub mod vapid;
pub mod webpush;

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::market::Offer;
use crate::market::state::{MarketState, SourceState};
use crate::store::StoreError;
use crate::store::alerts::{FiringRecord, RuleRow};

/// What a rule watches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum Condition {
    /// A model's price (median or 10th percentile of available GPUs, or the cheapest available
    /// offer) crosses a threshold.
    Price {
        model: String,
        #[serde(default = "default_stat")]
        stat: PriceStat,
        direction: Direction,
        threshold_usd: f64,
    },
    /// A model's utilisation (rented ÷ all GPUs, 0–1) crosses a threshold.
    Utilisation {
        model: String,
        direction: Direction,
        threshold: f64,
    },
    /// A model's available GPUs drop below a count.
    Availability { model: String, below: u32 },
    /// Another available offer of the same model is cheaper than the machine's own by `percent`.
    Undercut {
        #[serde(default = "default_marketplace")]
        marketplace: String,
        machine_id: String,
        percent: f64,
    },
    /// A source stays degraded for `minutes`.
    SourceDegraded { source: String, minutes: u32 },
    /// One of the user's machines (`machine`: its portfolio id) has had no GPU rented for `hours`.
    MachineIdle { machine: String, hours: f64 },
    /// The machine's price is above or below a percentile of comparable offers.
    MachinePricePosition {
        machine: String,
        direction: Direction,
        percentile: f64,
    },
    /// The machine is not online, or its platform reports an error.
    MachineOffline { machine: String },
    /// The machine's earnings of the last day are `percent` below its daily average of the last
    /// week.
    MachineEarningsDrop { machine: String, percent: f64 },
}

fn default_stat() -> PriceStat {
    PriceStat::Median
}

fn default_marketplace() -> String {
    "vast".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PriceStat {
    Median,
    P10,
    Cheapest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    Above,
    Below,
}

impl Condition {
    pub fn kind(&self) -> &'static str {
        match self {
            Condition::Price { .. } => "price",
            Condition::Utilisation { .. } => "utilisation",
            Condition::Availability { .. } => "availability",
            Condition::Undercut { .. } => "undercut",
            Condition::SourceDegraded { .. } => "source_degraded",
            Condition::MachineIdle { .. } => "machine_idle",
            Condition::MachinePricePosition { .. } => "machine_price_position",
            Condition::MachineOffline { .. } => "machine_offline",
            Condition::MachineEarningsDrop { .. } => "machine_earnings_drop",
        }
    }

    /// The portfolio machine a machine rule watches.
    pub fn machine(&self) -> Option<&str> {
        match self {
            Condition::MachineIdle { machine, .. }
            | Condition::MachinePricePosition { machine, .. }
            | Condition::MachineOffline { machine }
            | Condition::MachineEarningsDrop { machine, .. } => Some(machine),
            _ => None,
        }
    }

    pub fn model(&self) -> Option<&str> {
        match self {
            Condition::Price { model, .. }
            | Condition::Utilisation { model, .. }
            | Condition::Availability { model, .. } => Some(model),
            _ => None,
        }
    }

    /// Check values a rule cannot sensibly hold. `known_model` says whether a model slug exists.
    pub fn validate(&self, known_model: impl Fn(&str) -> bool) -> Result<(), String> {
        if let Some(m) = self.model()
            && !known_model(m)
        {
            return Err(format!("unknown model `{m}`"));
        }
        match self {
            Condition::Price { threshold_usd, .. } => {
                if !(threshold_usd.is_finite() && *threshold_usd > 0.0 && *threshold_usd <= 1000.0) {
                    return Err("threshold_usd must be above 0 and at most 1000 (USD per GPU-hour)".into());
                }
            }
            Condition::Utilisation {
                threshold, direction, ..
            } => {
                if !(threshold.is_finite() && (0.0..=1.0).contains(threshold)) {
                    return Err("threshold is a share of GPUs rented, from 0 to 1".into());
                }
                if (*direction == Direction::Above && *threshold >= 1.0)
                    || (*direction == Direction::Below && *threshold <= 0.0)
                {
                    return Err("this utilisation condition can never hold".into());
                }
            }
            Condition::Availability { below, .. } => {
                if *below == 0 {
                    return Err("`below` must be at least 1: availability cannot drop below 0".into());
                }
            }
            Condition::Undercut {
                machine_id, percent, ..
            } => {
                if machine_id.is_empty() || machine_id.len() > 64 {
                    return Err("machine_id is required".into());
                }
                if !(percent.is_finite() && *percent > 0.0 && *percent < 100.0) {
                    return Err("percent must be between 0 and 100".into());
                }
            }
            Condition::SourceDegraded { source, minutes } => {
                if !["farm500", "vast", "runpod", "simulated"].contains(&source.as_str()) {
                    return Err(format!("unknown source `{source}`"));
                }
                if *minutes == 0 || *minutes > 7 * 24 * 60 {
                    return Err("minutes must be from 1 to 10080".into());
                }
            }
            _ => machines::validate(self)?,
        }
        Ok(())
    }
}

/// The body a rule's webhook receives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum WebhookFormat {
    /// The alert JSON itself.
    #[default]
    Json,
    /// Discord-compatible: `content` and `embeds`.
    Discord,
}

impl WebhookFormat {
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookFormat::Json => "json",
            WebhookFormat::Discord => "discord",
        }
    }
}

impl std::str::FromStr for WebhookFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "json" => Ok(WebhookFormat::Json),
            "discord" => Ok(WebhookFormat::Discord),
            _ => Err(format!("unknown webhook format `{s}`")),
        }
    }
}

/// Where a rule's alerts go (`"deliver"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryChannel {
    /// The user's `alerts:#<uid>` channel (every open dashboard and SDK client).
    Socket,
    /// Web Push to each of the user's browser subscriptions (the tab may be closed).
    Push,
    /// E-mail to the user's confirmed address.
    Email,
    /// The rule's webhook.
    Webhook,
}

impl DeliveryChannel {
    pub const ALL: [DeliveryChannel; 4] = [Self::Socket, Self::Push, Self::Email, Self::Webhook];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Socket => "socket",
            Self::Push => "push",
            Self::Email => "email",
            Self::Webhook => "webhook",
        }
    }
}

impl std::str::FromStr for DeliveryChannel {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown delivery channel `{s}` (socket, push, email, webhook)"))
    }
}

/// A stored rule.
#[derive(Debug, Clone, PartialEq, Serialize, utoipa::ToSchema)]
pub struct Rule {
    pub id: String,
    pub user_id: String,
    pub name: String,
    #[serde(flatten)]
    pub condition: Condition,
    pub cooldown_s: i64,
    pub enabled: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_format: Option<WebhookFormat>,
    #[serde(skip)]
    pub webhook_secret: Option<String>,
    /// Where its alerts go; `None`: the socket, and the webhook when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliver: Option<Vec<DeliveryChannel>>,
    /// Whether the condition held at the last evaluation (`None`: not evaluated yet).
    #[serde(skip)]
    pub last_condition: Option<bool>,
    pub last_fired_at_ms: Option<i64>,
    /// How many times the condition has crossed; part of each firing's idempotency key.
    #[serde(skip)]
    pub crossings: i64,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

impl Rule {
    /// A new enabled rule with no webhook, not yet evaluated.
    pub fn new(id: String, user_id: String, name: String, condition: Condition, cooldown_s: i64, now_ms: i64) -> Self {
        Self {
            id,
            user_id,
            name,
            condition,
            cooldown_s,
            enabled: true,
            webhook_url: None,
            webhook_format: None,
            webhook_secret: None,
            deliver: None,
            last_condition: None,
            last_fired_at_ms: None,
            crossings: 0,
            created_at_ms: now_ms,
            updated_at_ms: now_ms,
        }
    }
}

impl TryFrom<RuleRow> for Rule {
    type Error = StoreError;

    fn try_from(r: RuleRow) -> Result<Self, StoreError> {
        let condition: Condition =
            serde_json::from_str(&r.params).map_err(|e| StoreError::Corrupt(format!("alert rule params: {e}")))?;
        Ok(Rule {
            id: r.id,
            user_id: r.user_id,
            name: r.name,
            condition,
            cooldown_s: r.cooldown_s,
            enabled: r.enabled != 0,
            webhook_url: r.webhook_url,
            webhook_format: match r.webhook_format {
                Some(f) => Some(f.parse().map_err(StoreError::Corrupt)?),
                None => None,
            },
            webhook_secret: r.webhook_secret,
            deliver: match r.deliver {
                Some(list) => Some(
                    list.split(',')
                        .map(str::parse)
                        .collect::<Result<_, _>>()
                        .map_err(StoreError::Corrupt)?,
                ),
                None => None,
            },
            last_condition: r.last_condition.map(|v| v != 0),
            last_fired_at_ms: r.last_fired_at_ms,
            crossings: r.crossings,
            created_at_ms: r.created_at_ms,
            updated_at_ms: r.updated_at_ms,
        })
    }
}

impl Rule {
    /// Whether its alerts go to `channel`.
    pub fn delivers(&self, channel: DeliveryChannel) -> bool {
        match &self.deliver {
            Some(list) => list.contains(&channel),
            None => {
                channel == DeliveryChannel::Socket
                    || (channel == DeliveryChannel::Webhook && self.webhook_url.is_some())
            }
        }
    }

    /// The row to store.
    pub fn to_row(&self) -> RuleRow {
        RuleRow {
            id: self.id.clone(),
            user_id: self.user_id.clone(),
            name: self.name.clone(),
            kind: self.condition.kind().to_owned(),
            params: serde_json::to_string(&self.condition).unwrap_or_default(),
            cooldown_s: self.cooldown_s,
            enabled: i64::from(self.enabled),
            webhook_url: self.webhook_url.clone(),
            webhook_format: self.webhook_format.map(|f| f.as_str().to_owned()),
            webhook_secret: self.webhook_secret.clone(),
            deliver: self
                .deliver
                .as_ref()
                .map(|d| d.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(",")),
            last_condition: self.last_condition.map(i64::from),
            last_fired_at_ms: self.last_fired_at_ms,
            crossings: self.crossings,
            created_at_ms: self.created_at_ms,
            updated_at_ms: self.updated_at_ms,
        }
    }
}

/// Rules from their rows.
pub fn rules_of(rows: Vec<RuleRow>) -> Result<Vec<Rule>, StoreError> {
    rows.into_iter().map(Rule::try_from).collect()
}

/// A rule's condition started to hold.
#[derive(Debug, Clone, PartialEq)]
pub struct Firing {
    pub rule_id: String,
    pub user_id: String,
    pub idempotency_key: String,
    pub payload: Value,
    pub fired_at_ms: i64,
    pub crossings: i64,
}

impl Firing {
    /// What the store records of it.
    pub fn record(&self) -> FiringRecord<'_> {
        FiringRecord {
            rule_id: &self.rule_id,
            user_id: &self.user_id,
            idempotency_key: &self.idempotency_key,
            payload: &self.payload,
            fired_at_ms: self.fired_at_ms,
            crossings: self.crossings,
        }
    }
}

/// The users' portfolio machines as the machine kinds read them: user → machine id → item.
pub type Machines = HashMap<String, HashMap<String, crate::portfolio::Item>>;

/// A rule whose remembered condition changed (to persist, so another node continues from it).
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionChange {
    pub rule_id: String,
    pub condition: bool,
}

/// Values computed once per evaluation and shared by all rules.
struct MarketView<'a> {
    state: &'a MarketState,
    /// The users' portfolio machines, by user and machine id.
    machines: &'a Machines,
    /// Per model, the two cheapest available offers (price, offer), cheapest first.
    cheapest: HashMap<&'a str, [(f64, Option<&'a Offer>); 2]>,
}

impl<'a> MarketView<'a> {
    fn new(state: &'a MarketState, machines: &'a Machines) -> Self {
        let mut cheapest: HashMap<&str, [(f64, Option<&Offer>); 2]> = HashMap::new();
        for offer in state.book().iter() {
            if offer.gpus_available() == 0 {
                continue;
            }
            let p = (offer.price_per_gpu_hour_usd, Some(offer.as_ref()));
            let slot = cheapest.entry(&offer.model).or_insert([(f64::INFINITY, None); 2]);
            if p.0 < slot[0].0 {
                slot[1] = slot[0];
                slot[0] = p;
            } else if p.0 < slot[1].0 {
                slot[1] = p;
            }
        }
        Self {
            state,
            machines,
            cheapest,
        }
    }

    /// Whether the condition holds now, the observed value, and a sentence for people; `None` when
    /// the market says nothing about it (no such model yet).
    /// With `describe` false the sentence is left empty (it is only built for a firing), except for
    /// utilisation and source conditions, which have always built it.
    fn check(&self, c: &Condition, user: &str, now_ms: i64, describe: bool) -> Option<Check> {
        if let Some(id) = c.machine() {
            let item = self.machines.get(user)?.get(id)?;
            return machines::check(c, item, now_ms, describe);
        }
        match c {
            Condition::Price {
                model,
                stat,
                direction,
                threshold_usd,
            } => self.check_price(model, *stat, *direction, *threshold_usd, describe),
            Condition::Utilisation {
                model,
                direction,
                threshold,
            } => self.check_utilisation(model, *direction, *threshold),
            Condition::Availability { model, below } => self.check_availability(model, *below, describe),
            Condition::Undercut {
                marketplace,
                machine_id,
                percent,
            } => self.check_undercut(marketplace, machine_id, *percent, describe),
            Condition::SourceDegraded { source, minutes } => self.check_source_degraded(source, *minutes, now_ms),
            _ => None,
        }
    }

    /// A `Price` condition: the model's median, 10th-percentile or cheapest available price
    /// against the threshold.
    fn check_price(
        &self,
        model: &str,
        stat: PriceStat,
        direction: Direction,
        threshold_usd: f64,
        describe: bool,
    ) -> Option<Check> {
        let agg = self.state.aggregates().get(model);
        let value = match stat {
            PriceStat::Median => agg?.all.price_available.median?,
            PriceStat::P10 => agg?.all.price_available.p10?,
            // The cheapest price comes from the book, so it needs no aggregate; an infinite price
            // is the "no offer" sentinel of `cheapest`.
            PriceStat::Cheapest => Some(self.cheapest.get(model)?[0].0).filter(|p| p.is_finite())?,
        };
        let name = agg.map_or(model, |a| &a.name);
        let what = match stat {
            PriceStat::Median => "median price",
            PriceStat::P10 => "10th-percentile price",
            PriceStat::Cheapest => "cheapest available price",
        };
        let dir = direction_word(direction);
        Some((
            crosses(direction, value, threshold_usd),
            value,
            sentence(describe, || {
                format!("{name}: {what} ${value:.3}/h is {dir} ${threshold_usd:.3}/h")
            }),
        ))
    }

    /// A `Utilisation` condition: the model's share of GPUs rented against the threshold.
    fn check_utilisation(&self, model: &str, direction: Direction, threshold: f64) -> Option<Check> {
        let agg = self.state.aggregates().get(model)?;
        let v = agg.all.utilisation;
        let dir = direction_word(direction);
        // Built even without `describe`, unlike the other kinds: kept so, as callers may rely on it.
        Some((
            crosses(direction, v, threshold),
            v,
            format!(
                "{}: utilisation {:.1}% is {dir} {:.1}%",
                agg.name,
                v * 100.0,
                threshold * 100.0
            ),
        ))
    }

    /// An `Availability` condition: the model's available GPUs against `below`.
    fn check_availability(&self, model: &str, below: u32, describe: bool) -> Option<Check> {
        let agg = self.state.aggregates().get(model)?;
        let v = agg.all.gpus_available;
        Some((
            v < below,
            v as f64,
            sentence(describe, || {
                format!("{}: {v} GPUs available, fewer than {below}", agg.name)
            }),
        ))
    }

    /// An `Undercut` condition: how far the cheapest *other* available offer of the machine's
    /// model is below the machine's own price, against `percent`.
    fn check_undercut(&self, marketplace: &str, machine_id: &str, percent: f64, describe: bool) -> Option<Check> {
        let own = self.state.book().get(marketplace, &format!("m{machine_id}"))?;
        let mine = own.price_per_gpu_hour_usd;
        let best_other = match self.cheapest.get(&*own.model) {
            // The machine may itself be the cheapest offer: then the runner-up is its competitor.
            Some([first, second]) => {
                if first.1.is_some_and(|o| std::ptr::eq(o, own.as_ref())) {
                    second.0
                } else {
                    first.0
                }
            }
            None => f64::INFINITY,
        };
        // No competitor, or a price that makes a percentage meaningless: it cannot hold.
        if !best_other.is_finite() || mine <= 0.0 {
            return Some((false, 0.0, String::new()));
        }
        let under = (mine - best_other) / mine * 100.0;
        Some((
            under >= percent,
            best_other,
            sentence(describe, || {
                format!(
                    "{}: an offer at ${best_other:.3}/h undercuts your machine {machine_id} (${mine:.3}/h) by {under:.0}%",
                    own.model_name
                )
            }),
        ))
    }

    /// A `SourceDegraded` condition: whether the source is degraded and has been without a
    /// successful poll for at least `minutes`.
    fn check_source_degraded(&self, source: &str, minutes: u32, now_ms: i64) -> Option<Check> {
        let h = self.state.health().get(source)?;
        // A source that never succeeded counts as down since the epoch.
        let since = h.last_success_ms.unwrap_or(0);
        let down_min = (now_ms - since) as f64 / 60_000.0;
        let holds = h.state == SourceState::Degraded && down_min >= minutes as f64;
        // Built even without `describe`, unlike the other kinds: kept so, as callers may rely on it.
        Some((
            holds,
            down_min,
            format!(
                "source {source} degraded for {down_min:.0} minutes: {}",
                h.last_error.clone().unwrap_or_default()
            ),
        ))
    }
}

/// What [`MarketView::check`] says of a condition: whether it holds, the observed value, and a
/// sentence for people.
type Check = (bool, f64, String);

/// Whether `value` is past `threshold` in `direction` (strictly: equal is not past).
fn crosses(direction: Direction, value: f64, threshold: f64) -> bool {
    match direction {
        Direction::Above => value > threshold,
        Direction::Below => value < threshold,
    }
}

/// The word for a direction in alert sentences.
fn direction_word(direction: Direction) -> &'static str {
    if direction == Direction::Above {
        "above"
    } else {
        "below"
    }
}

/// The sentence `make` builds when `describe` asks for one, else an empty string: sentences are
/// only needed for a firing, so most evaluations skip the formatting.
fn sentence(describe: bool, make: impl FnOnce() -> String) -> String {
    if describe { make() } else { String::new() }
}

/// Every enabled rule, with what each last saw. Owned by the node that evaluates (the leader).
#[derive(Default)]
pub struct AlertEngine {
    rules: HashMap<String, Rule>,
}

impl AlertEngine {
    pub fn new(rules: Vec<Rule>) -> Self {
        Self {
            rules: rules.into_iter().map(|r| (r.id.clone(), r)).collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.rules.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Add or replace a rule (after create or update). Its remembered condition starts afresh.
    pub fn upsert(&mut self, rule: Rule) {
        self.rules.insert(rule.id.clone(), rule);
    }

    pub fn remove(&mut self, id: &str) {
        self.rules.remove(id);
    }

    /// Replace every rule with `fresh` (as stored). With `keep_state`, a rule whose stored
    /// version (`updated_at_ms`) is the one held here keeps the crossing state held here.
    pub fn replace(&mut self, fresh: Vec<Rule>, keep_state: bool) {
        let mut old = std::mem::take(&mut self.rules);
        for mut rule in fresh {
            if keep_state
                && let Some(held) = old.remove(&rule.id)
                && held.updated_at_ms == rule.updated_at_ms
            {
                rule.last_condition = held.last_condition;
                rule.last_fired_at_ms = held.last_fired_at_ms;
                rule.crossings = held.crossings;
            }
            self.rules.insert(rule.id.clone(), rule);
        }
    }

    /// Evaluate every enabled rule against the market.
    pub fn evaluate(&mut self, state: &MarketState, now_ms: i64) -> (Vec<Firing>, Vec<ConditionChange>) {
        self.evaluate_with(state, &Machines::default(), now_ms)
    }

    /// Whether any rule watches a portfolio machine (then [`Self::evaluate_with`] needs them).
    pub fn has_machine_rules(&self) -> bool {
        self.rules
            .values()
            .any(|r| r.enabled && r.condition.machine().is_some())
    }

    /// [`Self::evaluate`] with the users' portfolio machines, for the machine kinds.
    pub fn evaluate_with(
        &mut self,
        state: &MarketState,
        machines: &Machines,
        now_ms: i64,
    ) -> (Vec<Firing>, Vec<ConditionChange>) {
        let view = MarketView::new(state, machines);
        let mut firings = Vec::new();
        let mut changes = Vec::new();
        for rule in self.rules.values_mut().filter(|r| r.enabled) {
            let Some((holds, value, _)) = view.check(&rule.condition, &rule.user_id, now_ms, false) else {
                continue;
            };
            let before = rule.last_condition;
            if before != Some(holds) {
                rule.last_condition = Some(holds);
                changes.push(ConditionChange {
                    rule_id: rule.id.clone(),
                    condition: holds,
                });
            }
            // A crossing: it did not hold at the last evaluation and holds now.
            if before == Some(false) && holds {
                rule.crossings += 1;
                let cooling = rule
                    .last_fired_at_ms
                    .is_some_and(|t| now_ms - t < rule.cooldown_s * 1000);
                if cooling {
                    continue;
                }
                rule.last_fired_at_ms = Some(now_ms);
                let message = view
                    .check(&rule.condition, &rule.user_id, now_ms, true)
                    .map(|c| c.2)
                    .unwrap_or_default();
                let payload = firing_payload(rule, message, value, now_ms);
                firings.push(Firing {
                    rule_id: rule.id.clone(),
                    user_id: rule.user_id.clone(),
                    idempotency_key: format!("{}:{}", rule.id, rule.crossings),
                    fired_at_ms: now_ms,
                    crossings: rule.crossings,
                    payload,
                });
            }
        }
        (firings, changes)
    }
}

/// The alert JSON of a firing (what `alerts:#<uid>`, pushes, mails and webhooks carry).
fn firing_payload(rule: &Rule, message: String, value: f64, now_ms: i64) -> Value {
    let mut payload = json!({
        "type": "alert",
        "rule_id": rule.id,
        "rule_name": rule.name,
        "kind": rule.condition.kind(),
        "model": rule.condition.model(),
        "message": message,
        "value": crate::market::checksum::round4(value),
        "threshold": threshold_of(&rule.condition),
        "fired_at_ms": now_ms,
    });
    if let Some(machine) = rule.condition.machine() {
        payload["machine"] = json!(machine);
    }
    payload
}

fn threshold_of(c: &Condition) -> Value {
    match c {
        Condition::Price { threshold_usd, .. } => json!(threshold_usd),
        Condition::Utilisation { threshold, .. } => json!(threshold),
        Condition::Availability { below, .. } => json!(below),
        Condition::Undercut { percent, .. } => json!(percent),
        Condition::SourceDegraded { minutes, .. } => json!(minutes),
        Condition::MachineIdle { hours, .. } => json!(hours),
        Condition::MachinePricePosition { percentile, .. } => json!(percentile),
        Condition::MachineOffline { .. } => Value::Null,
        Condition::MachineEarningsDrop { percent, .. } => json!(percent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::simulated::SimulatedMarket;

    fn rule(condition: Condition) -> Rule {
        Rule::new("r1".into(), "42".into(), "test".into(), condition, 3600, 0)
    }

    #[test]
    fn fires_on_the_crossing_once_and_respects_the_cooldown() {
        let sim = SimulatedMarket::new(4);
        let mut state = MarketState::new();
        let mut offers = sim.offers(0);
        state.apply_offers("simulated", offers.clone(), 0);
        let median = state.aggregates()["rtx-4090"].all.utilisation;
        let mut engine = AlertEngine::new(vec![rule(Condition::Utilisation {
            model: "rtx-4090".into(),
            direction: Direction::Above,
            threshold: median + 0.01,
        })]);
        // First evaluation: learns, fires nothing.
        assert!(engine.evaluate(&state, 0).0.is_empty());
        // Rent every RTX 4090: crosses above.
        for o in offers.iter_mut().filter(|o| &*o.model == "rtx-4090") {
            o.gpus_rented = o.num_gpus;
        }
        state.apply_offers("simulated", offers.clone(), 1);
        let (fired, changes) = engine.evaluate(&state, 1000);
        assert_eq!(fired.len(), 1);
        assert_eq!(changes.len(), 1);
        assert_eq!(fired[0].idempotency_key, "r1:1");
        assert_eq!(fired[0].payload["kind"], "utilisation");
        // Still above: nothing more.
        assert!(engine.evaluate(&state, 2000).0.is_empty());
        // Back below and above again within the cooldown: a crossing, but no firing.
        let before: Vec<_> = sim.offers(0);
        state.apply_offers("simulated", before, 3);
        assert!(engine.evaluate(&state, 3000).0.is_empty());
        state.apply_offers("simulated", offers, 4);
        assert!(engine.evaluate(&state, 4000).0.is_empty(), "cooldown");
    }

    #[test]
    fn validation_explains_what_is_wrong() {
        let known = |m: &str| m == "rtx-4090";
        let bad = Condition::Price {
            model: "rtx-9999".into(),
            stat: PriceStat::Median,
            direction: Direction::Below,
            threshold_usd: 0.3,
        };
        assert!(bad.validate(known).unwrap_err().contains("unknown model"));
        let never = Condition::Utilisation {
            model: "rtx-4090".into(),
            direction: Direction::Above,
            threshold: 1.0,
        };
        assert!(never.validate(known).unwrap_err().contains("never"));
        let zero = Condition::Availability {
            model: "rtx-4090".into(),
            below: 0,
        };
        assert!(zero.validate(known).is_err());
    }
}
