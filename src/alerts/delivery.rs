//! Delivery of fired alerts: written to the database first, then published to the user's
//! `alerts:#<uid>` (recoverable, so an offline user gets it on reconnect), and queued for the
//! rule's webhook in an outbox that a worker drains with retries, never blocking evaluation.
//!
//! Webhook requests are signed: `X-GPUScout-Signature: sha256=<hex HMAC-SHA256(secret,
//! "<timestamp>.<body>")>` with `X-GPUScout-Timestamp` (ms), so receivers can check origin and
//! freshness. Discord-compatible bodies (`content` + `embeds`) or the alert JSON itself.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dashmap::{DashMap, DashSet};
use hmac::{KeyInit, Mac};
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{AlertEngine, Firing, Rule, WebhookFormat};
use crate::backoff::Backoff;
use crate::bus::Bus;
use crate::channels;
use crate::clock::unix_now_ms;
use crate::config::AlertSettings;
use crate::market::Market;
use crate::store::Store;
use crate::store::alerts::Attempt;
use crate::store::queue::WriteQueue;
use crate::tier::Tier;
use crate::upstream::{check_user_url, user_url_client};

pub struct AlertService {
    store: Store,
    /// Firings and condition changes are written from here, off the market loop.
    writes: WriteQueue,
    /// Where fired alerts are published (`alerts:#<uid>`).
    bus: Arc<dyn Bus>,
    /// Std mutex: evaluation is pure computation, never held across `.await`.
    engine: Mutex<AlertEngine>,
    settings: AlertSettings,
    /// The tiers whose rules may post to webhooks.
    webhook_tiers: HashSet<Tier>,
    /// Each user's tier as their latest token said (noted on REST requests, stored).
    tiers: DashMap<String, Tier>,
    outbox: Notify,
    client: reqwest::Client,
}

/// A new webhook secret in the Standard Webhooks form: `whsec_` and 24 random bytes in base64.
pub fn new_webhook_secret() -> String {
    use base64::Engine;
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode(rand::random::<[u8; 24]>())
    )
}

/// The Standard Webhooks signature (`webhook-signature`): `v1,` and the base64 HMAC-SHA256 of
/// `{id}.{timestamp}.{body}`, keyed with the secret's base64 part (or, for a secret made before
/// that form, its bytes as they are).
pub fn standard_signature(secret: &str, id: &str, timestamp_s: i64, body: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = secret
        .strip_prefix("whsec_")
        .and_then(|k| b64.decode(k).ok())
        .unwrap_or_else(|| secret.as_bytes().to_vec());
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("HMAC takes any key length");
    mac.update(format!("{id}.{timestamp_s}.").as_bytes());
    mac.update(body);
    format!("v1,{}", b64.encode(mac.finalize().into_bytes()))
}

/// The hub's earlier signature (`x-gpuscout-signature`), still sent for receivers built on it.
fn sign(secret: &str, timestamp_ms: i64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    mac.update(timestamp_ms.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The webhook body for an alert.
pub fn webhook_body(format: WebhookFormat, alert: &Value) -> Value {
    if format != WebhookFormat::Discord {
        return alert.clone();
    }
    let message = alert["message"].as_str().unwrap_or("GPUScout alert");
    json!({
        "username": "GPUScout",
        "content": message,
        "embeds": [{
            "title": alert["rule_name"].as_str().unwrap_or("Alert"),
            "description": message,
            "color": 0x00c2a8,
            "fields": [
                {"name": "kind", "value": alert["kind"].to_string(), "inline": true},
                {"name": "value", "value": alert["value"].to_string(), "inline": true},
                {"name": "threshold", "value": alert["threshold"].to_string(), "inline": true},
            ],
        }],
    })
}

impl AlertService {
    pub async fn start(
        store: Store,
        writes: WriteQueue,
        bus: Arc<dyn Bus>,
        settings: AlertSettings,
        webhook_tiers: HashSet<Tier>,
    ) -> Result<Arc<Self>, crate::store::StoreError> {
        // Webhook URLs are users': no redirects, and no private or local address unless allowed.
        let client = user_url_client(settings.webhook_allow_private);
        let rules = super::rules_of(store.all_rules().await?)?;
        Ok(Arc::new(Self {
            store,
            writes,
            bus,
            engine: Mutex::new(AlertEngine::new(rules)),
            settings,
            webhook_tiers,
            tiers: DashMap::new(),
            outbox: Notify::new(),
            client,
        }))
    }

    fn engine(&self) -> std::sync::MutexGuard<'_, AlertEngine> {
        self.engine.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn settings(&self) -> &AlertSettings {
        &self.settings
    }

    /// A rule was created or changed.
    pub fn upsert(&self, rule: Rule) {
        self.engine().upsert(rule);
    }

    /// Take rule `id` as the database has it now (created, changed or deleted through any node).
    pub async fn reload_rule(&self, id: &str) -> Result<(), crate::store::StoreError> {
        match self.store.rule_by_id(id).await? {
            Some(row) => self.upsert(Rule::try_from(row)?),
            None => self.remove(id),
        }
        Ok(())
    }

    /// Take every rule as the database has it. `keep_state`: a rule unchanged since it was loaded
    /// keeps the crossing state evaluated here (newer than what the write queue has stored yet);
    /// without it (a node that just became the leader), the stored state wins, as the previous
    /// leader left it.
    pub async fn reload_all(&self, keep_state: bool) -> Result<(), crate::store::StoreError> {
        let fresh = super::rules_of(self.store.all_rules().await?)?;
        self.engine().replace(fresh, keep_state);
        Ok(())
    }

    /// Follow rule changes announced on the control channel (`Control::RuleChanged`), and every
    /// `every` reload all rules, so a missed announcement is caught.
    pub fn follow_rule_changes(
        self: &Arc<Self>,
        control: &crate::bus::control::ControlFeed,
        every: Duration,
        stop: CancellationToken,
    ) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (tx, mut changed) = tokio::sync::mpsc::unbounded_channel();
        let follow = control.follow("alerts", stop.clone(), move |message| {
            if let crate::bus::control::Control::RuleChanged { rule_id } = message {
                let _ = tx.send(rule_id);
            }
        });
        let service = self.clone();
        let apply = async move {
            let mut reconcile = tokio::time::interval(every);
            reconcile.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                let result = tokio::select! {
                    _ = stop.cancelled() => return,
                    id = changed.recv() => match id {
                        Some(id) => service.reload_rule(&id).await,
                        None => return stop.cancelled().await,
                    },
                    _ = reconcile.tick() => service.reload_all(true).await,
                };
                if let Err(e) = result {
                    tracing::warn!(error = %e, "reloading alert rules failed; the next reconcile retries");
                }
            }
        };
        async move {
            tokio::join!(follow, apply);
        }
    }

    pub fn remove(&self, id: &str) {
        self.engine().remove(id);
    }

    /// Evaluate every rule against the market and deliver what fired.
    /// Evaluation is immediate; what it found is written through the write queue (in order, retried
    /// while the database is away) so the market loop never waits for the database. A firing is
    /// published once it is stored, with its event id.
    pub fn on_market_change(self: &Arc<Self>, market: &Market) {
        let now = unix_now_ms() as i64;
        let (firings, changes) = {
            let state = market.read();
            self.engine().evaluate(&state, now)
        };
        for c in changes {
            let store = self.store.clone();
            self.writes.push(
                "rule condition",
                Box::new(move || {
                    let (store, rule_id) = (store.clone(), c.rule_id.clone());
                    Box::pin(async move { store.set_rule_condition(&rule_id, c.condition).await })
                }),
            );
        }
        for firing in firings {
            let service = self.clone();
            let firing = Arc::new(firing);
            self.writes.push(
                "alert firing",
                Box::new(move || {
                    let (service, firing) = (service.clone(), firing.clone());
                    Box::pin(async move { service.record_and_publish(&firing).await })
                }),
            );
        }
    }

    /// Note the tier a user's token carries; stored (through the write queue) when it changed, so
    /// the evaluating node knows it: a user whose tier no longer allows webhooks gets none.
    pub fn note_tier(&self, user: &str, tier: Tier) {
        if self.tiers.get(user).is_some_and(|t| *t == tier) {
            return;
        }
        self.tiers.insert(user.to_owned(), tier);
        let (store, user) = (self.store.clone(), user.to_owned());
        self.writes.push(
            "user tier",
            Box::new(move || {
                let (store, user) = (store.clone(), user.clone());
                Box::pin(async move { store.upsert_user(&user, tier.as_str(), unix_now_ms() as i64).await })
            }),
        );
    }

    /// Whether `user`'s rules may post to webhooks now: their last stored tier (noted by any
    /// node) allows it; a user whose tier was never noted keeps what their rules were made with.
    async fn webhooks_allowed(&self, user: &str) -> Result<bool, crate::store::StoreError> {
        let tier: Option<Tier> = self.store.user_tier(user).await?.and_then(|t| t.parse().ok());
        Ok(tier.is_none_or(|t| self.webhook_tiers.contains(&t)))
    }

    /// Store a firing (once: its idempotency key) with its webhook delivery, then publish it.
    async fn record_and_publish(&self, firing: &Firing) -> Result<(), crate::store::StoreError> {
        let allowed = self.webhooks_allowed(&firing.user_id).await?;
        let webhook = if !allowed {
            None
        } else {
            let engine = self.engine();
            engine.rules.get(&firing.rule_id).and_then(|r| {
                Some((
                    r.webhook_url.clone()?,
                    r.webhook_format.unwrap_or_default().as_str(),
                    r.webhook_secret.clone()?,
                ))
            })
        };
        let hook = webhook.as_ref().map(|(u, f, s)| (u.as_str(), *f, s.as_str()));
        match self.store.record_firing(&firing.record(), hook).await? {
            Some(event_id) => {
                let mut payload = firing.payload.clone();
                payload["id"] = json!(event_id);
                self.publish(&firing.user_id, &payload).await;
                if webhook.is_some() {
                    self.outbox.notify_one();
                }
            }
            None => tracing::debug!(key = %firing.idempotency_key, "crossing already recorded"),
        }
        Ok(())
    }

    async fn publish(&self, user: &str, payload: &Value) {
        let Ok(raw) = RawValue::from_string(payload.to_string()) else {
            return;
        };
        if let Err(e) = self.bus.publish_json(&channels::alerts(user), &raw).await {
            tracing::warn!(user, error = %e, "publishing an alert failed");
        }
    }

    /// Deliver a test alert for a rule: published and, with a webhook, posted once (not recorded).
    pub async fn test_delivery(&self, rule: &Rule) -> Value {
        let now = unix_now_ms() as i64;
        let payload = json!({
            "type": "alert", "test": true, "rule_id": rule.id, "rule_name": rule.name, "kind": rule.condition.kind(),
            "model": rule.condition.model(), "message": format!("Test of \"{}\"", rule.name), "fired_at_ms": now,
        });
        self.publish(&rule.user_id, &payload).await;
        let webhook = match (&rule.webhook_url, &rule.webhook_secret) {
            (Some(url), Some(secret)) => {
                let format = rule.webhook_format.unwrap_or_default();
                // Plain words, never the transport's error text (it can tell what sits where).
                let id = format!("msg_test_{}", uuid::Uuid::new_v4().simple());
                match self.post(&id, url, format, secret, &payload).await {
                    Ok(status) if (200..300).contains(&status) => json!({"result": "delivered", "status": status}),
                    Ok(status) => {
                        json!({"result": format!("refused by the receiver (status {status})"), "status": status})
                    }
                    Err(_) => json!({"result": "could not connect"}),
                }
            }
            _ => Value::Null,
        };
        json!({"published": true, "webhook": webhook})
    }

    /// POST an alert to a webhook, signed as Standard Webhooks do (`webhook-id`, stable across
    /// retries of one delivery; `webhook-timestamp`; `webhook-signature`) and as the hub did
    /// before (`x-gpuscout-timestamp`, `x-gpuscout-signature`).
    async fn post(
        &self,
        id: &str,
        url: &str,
        format: WebhookFormat,
        secret: &str,
        alert: &Value,
    ) -> Result<u16, String> {
        let s = &self.settings;
        check_user_url(url, s.webhook_allow_http, s.webhook_allow_private).map_err(|e| format!("the URL {e}"))?;
        let body = serde_json::to_vec(&webhook_body(format, alert)).unwrap_or_default();
        let ts = unix_now_ms() as i64;
        let ts_s = ts / 1000;
        let response = self
            .client
            .post(url)
            .timeout(Duration::from_millis(self.settings.webhook_timeout_ms))
            .header("content-type", "application/json")
            .header("webhook-id", id)
            .header("webhook-timestamp", ts_s.to_string())
            .header("webhook-signature", standard_signature(secret, id, ts_s, &body))
            .header("x-gpuscout-timestamp", ts.to_string())
            .header("x-gpuscout-signature", sign(secret, ts, &body))
            .body(body)
            .send()
            .await
            .map_err(|e| {
                if e.is_timeout() {
                    "timed out".to_owned()
                } else {
                    e.to_string()
                }
            })?;
        Ok(response.status().as_u16())
    }

    /// Drain the webhook outbox until `stop`: each due delivery is posted; 2xx is delivered, 5xx,
    /// 429 and timeouts are retried with exponential backoff up to `webhook_max_attempts`, other
    /// statuses fail at once. Every attempt is recorded. Deliveries run concurrently, at most
    /// `webhook_concurrency` at once and `webhook_per_host` to one host: a receiver that never
    /// answers holds its own deliveries only.
    pub async fn run_outbox(self: Arc<Self>, stop: CancellationToken) {
        let all = Arc::new(tokio::sync::Semaphore::new(self.settings.webhook_concurrency.max(1)));
        let hosts: Arc<DashMap<String, Arc<tokio::sync::Semaphore>>> = Arc::default();
        let in_flight: Arc<DashSet<String>> = Arc::default();
        let mut running = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = self.outbox.notified() => {}
                _ = tokio::time::sleep(Duration::from_millis(self.settings.outbox_poll_ms)) => {}
            }
            while running.try_join_next().is_some() {}
            let now = unix_now_ms() as i64;
            let limit = (self.settings.webhook_concurrency * 2).max(32) as i64;
            let due = match self.store.due_deliveries(now, limit).await {
                Ok(d) => d,
                Err(e) => {
                    tracing::warn!(error = %e, "reading the webhook outbox failed");
                    continue;
                }
            };
            for d in due {
                // Still being attempted (the row stays pending until its attempt is recorded).
                if !in_flight.insert(d.id.clone()) {
                    continue;
                }
                // The destination: host and port.
                let host = reqwest::Url::parse(&d.url)
                    .ok()
                    .map(|u| {
                        format!(
                            "{}:{}",
                            u.host_str().unwrap_or_default(),
                            u.port_or_known_default().unwrap_or(0)
                        )
                    })
                    .unwrap_or_default();
                let per_host = self.settings.webhook_per_host.max(1);
                let host_cap = hosts
                    .entry(host)
                    .or_insert_with(|| Arc::new(tokio::sync::Semaphore::new(per_host)))
                    .clone();
                let (service, all, in_flight) = (self.clone(), all.clone(), in_flight.clone());
                running.spawn(async move {
                    let (Ok(_one), Ok(_host)) = (all.acquire().await, host_cap.acquire().await) else {
                        return;
                    };
                    service.attempt(&d).await;
                    in_flight.remove(&d.id);
                    service.outbox.notify_one();
                });
            }
            hosts.retain(|_, cap| Arc::strong_count(cap) > 1);
        }
    }

    /// One attempt of a delivery, recorded with the delivery's next state.
    async fn attempt(&self, d: &crate::store::alerts::Delivery) {
        let attempt = d.attempts + 1;
        let outcome = self
            .post(
                &d.id,
                &d.url,
                d.format.parse().unwrap_or_default(),
                &d.secret,
                &d.payload,
            )
            .await;
        let at = unix_now_ms() as i64;
        let (code, error, retry) = match &outcome {
            Ok(s) if (200..300).contains(s) => (Some(i64::from(*s)), None, false),
            Ok(s) => (Some(i64::from(*s)), Some(format!("HTTP {s}")), *s >= 500 || *s == 429),
            Err(e) => (None, Some(e.clone()), true),
        };
        let delivered = error.is_none();
        let (status, next) = if delivered {
            ("delivered", at)
        } else if retry && attempt < i64::from(self.settings.webhook_max_attempts) {
            let backoff = Backoff::from_millis(
                self.settings.webhook_backoff_initial_ms,
                self.settings.webhook_backoff_max_ms,
            );
            let wait = backoff.wait(u32::try_from(attempt - 1).unwrap_or(u32::MAX));
            ("pending", at + wait.as_millis() as i64)
        } else {
            ("failed", at)
        };
        let record = Attempt {
            delivery_id: &d.id,
            attempt,
            status_code: code,
            error: error.as_deref(),
            at_ms: at,
            status,
            next_attempt_at_ms: next,
        };
        if let Err(e) = self.store.record_attempt(&record).await {
            tracing::warn!(delivery = %d.id, error = %e, "recording a webhook attempt failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_cover_timestamp_and_body() {
        let a = sign("s3cret", 1000, b"{}");
        assert!(a.starts_with("sha256=") && a.len() == 7 + 64);
        assert_ne!(a, sign("s3cret", 1001, b"{}"));
        assert_ne!(a, sign("other", 1000, b"{}"));
    }

    #[test]
    fn standard_signatures_match_the_specifications_example() {
        // The example of the Standard Webhooks specification (and its libraries' tests).
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let signature = standard_signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, body);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(new_webhook_secret().starts_with("whsec_"));
    }

    #[test]
    fn discord_bodies_have_content_and_embeds() {
        let alert = json!({"message": "RTX 4090 below $0.30", "rule_name": "cheap 4090", "kind": "price"});
        let d = webhook_body(WebhookFormat::Discord, &alert);
        assert_eq!(d["content"], "RTX 4090 below $0.30");
        assert_eq!(d["embeds"][0]["title"], "cheap 4090");
        assert_eq!(webhook_body(WebhookFormat::Json, &alert), alert);
    }
}
