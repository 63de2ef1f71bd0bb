//! The outbox worker: every queued delivery of a fired alert (webhook, Web Push, e-mail) is
//! attempted until it is delivered, fails for good, or runs out of attempts; every attempt is
//! recorded. Deliveries run concurrently, at most `alerts.webhook_concurrency` at once and
//! `alerts.webhook_per_host` to one destination, so a receiver that never answers holds its own
//! deliveries only. A user's mails go one at a time, so the per-hour limit holds.

use std::sync::Arc;
use std::time::Duration;

use dashmap::{DashMap, DashSet};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use super::AlertService;
use crate::alerts::email::{self, MailError};
use crate::backoff::Backoff;
use crate::clock::unix_now_ms;
use crate::store::alerts::{Attempt, Delivery};
use crate::store::push::PushSubscription;
use crate::telemetry::DeliveryResult;
use crate::upstream::check_user_url;

/// How one attempt ended.
#[derive(Debug, Clone)]
pub(super) enum Outcome {
    /// Delivered (with the receiver's status, for HTTP).
    Delivered(Option<i64>),
    /// Worth another attempt later.
    Retry(Option<i64>, String),
    /// Not deliverable: no further attempt.
    Failed(Option<i64>, String),
}

impl Outcome {
    /// In plain words, for a rule's test: never the transport's error text.
    pub(super) fn words(&self) -> String {
        match self {
            Outcome::Delivered(_) => "delivered".into(),
            Outcome::Retry(Some(code), _) | Outcome::Failed(Some(code), _) => {
                format!("refused by the receiver (status {code})")
            }
            Outcome::Retry(None, _) => "could not connect".into(),
            Outcome::Failed(None, why) => why.clone(),
        }
    }

    /// What an HTTP status means for a webhook or a push: 2xx delivered; 429 and 5xx retried.
    pub(super) fn of_status(status: u16) -> Self {
        let code = Some(i64::from(status));
        match status {
            200..=299 => Outcome::Delivered(code),
            429 | 500..=599 => Outcome::Retry(code, format!("HTTP {status}")),
            _ => Outcome::Failed(code, format!("HTTP {status}")),
        }
    }
}

/// One clock hour in milliseconds: the window of `email.max_per_hour`.
const HOUR_MS: i64 = 3_600_000;

/// How long a claimed delivery is kept from other attempts: longer than any attempt takes (a
/// webhook, push or SMTP exchange has its own timeouts well under it).
const ATTEMPT_LEASE_MS: i64 = 5 * 60_000;

impl AlertService {
    /// Drain the outbox until `stop`.
    pub async fn run_outbox(self: Arc<Self>, stop: CancellationToken) {
        let all = Arc::new(Semaphore::new(self.settings.webhook_concurrency.max(1)));
        let destinations: Arc<DashMap<String, Arc<Semaphore>>> = Arc::default();
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
                    tracing::warn!(error = %e, "reading the alert outbox failed");
                    continue;
                }
            };
            for d in due {
                // Still being attempted (the row stays pending until its attempt is recorded);
                // a user's mails one at a time.
                let key = match d.channel.as_str() {
                    "email" => format!("email:{}", d.user_id),
                    _ => d.id.clone(),
                };
                if !in_flight.insert(key.clone()) {
                    continue;
                }
                let per_destination = self.settings.webhook_per_host.max(1);
                let destination_cap = destinations
                    .entry(destination(&d))
                    .or_insert_with(|| Arc::new(Semaphore::new(per_destination)))
                    .clone();
                let (service, all, in_flight) = (self.clone(), all.clone(), in_flight.clone());
                running.spawn(async move {
                    let (Ok(_one), Ok(_destination)) = (all.acquire().await, destination_cap.acquire().await) else {
                        return;
                    };
                    if service.claim(&d).await {
                        service.attempt(&d).await;
                    }
                    in_flight.remove(&key);
                    service.outbox.notify_one();
                });
            }
            destinations.retain(|_, cap| Arc::strong_count(cap) > 1);
        }
    }

    /// Claim `d` for one attempt: false when it changed since it was read (an attempt that ended
    /// while the outbox was being read, or another node's), so it is not attempted twice.
    async fn claim(&self, d: &Delivery) -> bool {
        let now = unix_now_ms() as i64;
        match self.store.claim_delivery(d, now, now + ATTEMPT_LEASE_MS).await {
            Ok(claimed) => claimed,
            Err(e) => {
                tracing::warn!(delivery = %d.id, error = %e, "claiming an alert delivery failed");
                false
            }
        }
    }

    /// One attempt of a delivery, recorded with the delivery's next state.
    async fn attempt(&self, d: &Delivery) {
        let outcome = match d.channel.as_str() {
            "push" => self.send_push(d).await,
            "email" => return self.attempt_email(d).await,
            _ => {
                let format = d.format.parse().unwrap_or_default();
                match self.post(&d.id, &d.url, format, &d.secret, &alert_of(d)).await {
                    Ok(status) => Outcome::of_status(status),
                    Err(e) => Outcome::Retry(None, e),
                }
            }
        };
        self.record(d, &outcome).await;
    }

    /// Record an attempt: delivered, pending again after a backoff (while attempts remain), or
    /// failed.
    async fn record(&self, d: &Delivery, outcome: &Outcome) {
        self.record_group(std::slice::from_ref(d), outcome).await;
    }

    /// Record one attempt that covered `group` (a digest covers several deliveries): each gets
    /// the first's next state, so they stay together for the next try.
    async fn record_group(&self, group: &[Delivery], outcome: &Outcome) {
        let Some(lead) = group.first() else { return };
        let attempt = lead.attempts + 1;
        let at = unix_now_ms() as i64;
        let (status, next, code, error, result) = match outcome {
            Outcome::Delivered(code) => ("delivered", at, *code, None, DeliveryResult::Delivered),
            Outcome::Retry(code, e) if attempt < i64::from(self.settings.webhook_max_attempts) => {
                let backoff = Backoff::from_millis(
                    self.settings.webhook_backoff_initial_ms,
                    self.settings.webhook_backoff_max_ms,
                );
                let wait = backoff.wait(u32::try_from(attempt - 1).unwrap_or(u32::MAX));
                let next = at + wait.as_millis() as i64;
                ("pending", next, *code, Some(e.as_str()), DeliveryResult::Retried)
            }
            Outcome::Retry(code, e) | Outcome::Failed(code, e) => {
                ("failed", at, *code, Some(e.as_str()), DeliveryResult::Failed)
            }
        };
        self.metrics.count_alert_delivery(&lead.channel, result);
        for d in group {
            let record = Attempt {
                delivery_id: &d.id,
                attempt: d.attempts + 1,
                status_code: code,
                error,
                at_ms: at,
                status,
                next_attempt_at_ms: next,
            };
            if let Err(e) = self.store.record_attempt(&record).await {
                tracing::warn!(delivery = %d.id, error = %e, "recording a delivery attempt failed");
            }
        }
    }

    /// Push a queued alert to its browser subscription.
    async fn send_push(&self, d: &Delivery) -> Outcome {
        let subscription = match self
            .store
            .push_subscription(d.target.as_deref().unwrap_or_default())
            .await
        {
            Ok(Some(s)) => s,
            Ok(None) => return Outcome::Failed(None, "the subscription was removed".into()),
            Err(e) => return Outcome::Retry(None, format!("the database: {e}")),
        };
        self.push_to(&subscription, &alert_of(d)).await
    }

    /// Push `alert` to one browser subscription. A subscription the push service no longer
    /// knows (404, 410) is deleted.
    pub(super) async fn push_to(&self, subscription: &PushSubscription, alert: &serde_json::Value) -> Outcome {
        let Some(push) = &self.push else {
            return Outcome::Failed(None, "Web Push is off".into());
        };
        let s = &self.settings;
        if let Err(e) = check_user_url(&subscription.endpoint, s.webhook_allow_http, s.webhook_allow_private) {
            return Outcome::Failed(None, format!("the push endpoint {e}"));
        }
        let now_s = unix_now_ms() as i64 / 1000;
        let request = match push.request(&self.client, subscription, alert.to_string().as_bytes(), now_s) {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(None, e.to_string()),
        };
        let status = match request
            .timeout(Duration::from_millis(s.webhook_timeout_ms))
            .send()
            .await
        {
            Ok(r) => r.status().as_u16(),
            Err(e) if e.is_timeout() => return Outcome::Retry(None, "timed out".into()),
            Err(_) => return Outcome::Retry(None, "could not connect".into()),
        };
        if status == 404 || status == 410 {
            let (user, id) = (&subscription.user_id, &subscription.id);
            if let Err(e) = self.store.delete_push_subscription(user, id).await {
                tracing::warn!(subscription = %id, error = %e, "deleting an expired push subscription failed");
            }
            let why = format!("the push service no longer knows the subscription (HTTP {status}); it was removed");
            return Outcome::Failed(Some(i64::from(status)), why);
        }
        Outcome::of_status(status)
    }

    /// Mail an alert to the user's confirmed address; beyond `email.max_per_hour` in this clock
    /// hour it is folded into the digest sent at the start of the next; a digest row sends every
    /// folded alert of the user in one mail.
    async fn attempt_email(&self, d: &Delivery) {
        let now = unix_now_ms() as i64;
        let outcome = match self.mail(d, now).await {
            Ok(Some((group, outcome))) => return self.record_group(&group, &outcome).await,
            Ok(None) => return,
            Err(outcome) => outcome,
        };
        self.record(d, &outcome).await;
    }

    /// Send the mail for `d`: `Ok(Some(deliveries, outcome))` when it was sent or tried (a digest
    /// covers several deliveries), `Ok(None)` when it was folded into the next digest, `Err` when
    /// it cannot be sent.
    async fn mail(&self, d: &Delivery, now: i64) -> Result<Option<(Vec<Delivery>, Outcome)>, Outcome> {
        let store_error = |e: crate::store::StoreError| Outcome::Retry(None, format!("the database: {e}"));
        let mailer = self
            .mailer
            .as_ref()
            .ok_or(Outcome::Failed(None, "e-mail is off".into()))?;
        let address = self.store.user_email(&d.user_id).await.map_err(store_error)?;
        let Some(address) = address.filter(|a| a.confirmed_at_ms.is_some()) else {
            return Err(Outcome::Failed(None, "no confirmed address".into()));
        };
        let unsubscribe = mailer.unsubscribe_link(&address.unsubscribe_token);
        let dashboard = mailer.link("/");
        let (group, mail, kind) = if d.format == "digest" {
            let group = self
                .store
                .due_digest(&d.user_id, now, &d.id)
                .await
                .map_err(store_error)?;
            if group.is_empty() {
                return Ok(None);
            }
            let alerts: Vec<_> = group.iter().map(alert_of).collect();
            (group, email::digest_mail(&alerts, unsubscribe, &dashboard), "digest")
        } else {
            let hour = now - now.rem_euclid(HOUR_MS);
            let sent = self
                .store
                .email_sends_since(&d.user_id, &["alert", "digest"], hour)
                .await
                .map_err(store_error)?;
            if sent >= i64::from(self.max_emails_per_hour) {
                self.store
                    .fold_into_digest(&d.id, hour + HOUR_MS)
                    .await
                    .map_err(store_error)?;
                return Ok(None);
            }
            (
                vec![d.clone()],
                email::alert_mail(&alert_of(d), unsubscribe, &dashboard),
                "alert",
            )
        };
        let outcome = match mailer.send(&address.email, mail).await {
            Ok(()) => {
                if let Err(e) = self.store.record_email_send(&d.user_id, kind, now).await {
                    tracing::warn!(user = %d.user_id, error = %e, "recording a sent mail failed");
                }
                Outcome::Delivered(None)
            }
            Err(MailError::Transient(e)) => Outcome::Retry(None, e),
            Err(MailError::Permanent(e)) => Outcome::Failed(None, e),
        };
        Ok(Some((group, outcome)))
    }
}

/// The alert JSON as `alerts:#<uid>` carries it: the stored firing with its event id.
fn alert_of(d: &Delivery) -> serde_json::Value {
    let mut alert = (*d.payload).clone();
    alert["id"] = serde_json::json!(d.event_id);
    alert
}

/// Where a delivery goes, for the per-destination cap: the host and port of a webhook or push
/// endpoint; the mail server for e-mail.
fn destination(d: &Delivery) -> String {
    if d.channel == "email" {
        return "smtp".into();
    }
    reqwest::Url::parse(&d.url)
        .ok()
        .map(|u| {
            format!(
                "{}:{}",
                u.host_str().unwrap_or_default(),
                u.port_or_known_default().unwrap_or(0)
            )
        })
        .unwrap_or_default()
}
