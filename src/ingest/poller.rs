//! The poll scheduler: one task per source, polling at its interval with jitter, each request with
//! a timeout, retrying failed polls with exponential backoff (honouring `Retry-After`), and a
//! circuit breaker that pauses a source failing poll after poll. Outcomes go to the market runner;
//! a failing source never stops anything else.

use std::time::Duration;

use rand::Rng;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::backoff::Backoff;
use crate::bus::leader::Leadership;

use super::{Fetched, MarketSource, SourceError};
use crate::clock::unix_now_ms;
use crate::config::HttpSourceSettings;

/// How a source is scheduled.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub interval: Duration,
    pub jitter_ratio: f64,
    pub timeout: Duration,
    pub max_retries: u32,
    pub backoff: Backoff,
    pub breaker_failures: u32,
    pub breaker_cooldown: Duration,
}

impl From<&HttpSourceSettings> for Schedule {
    fn from(s: &HttpSourceSettings) -> Self {
        Self {
            interval: Duration::from_millis(s.poll_interval_ms),
            jitter_ratio: s.jitter_ratio,
            timeout: Duration::from_millis(s.timeout_ms),
            max_retries: s.max_retries,
            backoff: Backoff::from_millis(s.backoff_initial_ms, s.backoff_max_ms),
            breaker_failures: s.breaker_failures,
            breaker_cooldown: Duration::from_millis(s.breaker_cooldown_ms),
        }
    }
}

/// What the scheduler tells the market runner.
#[derive(Debug)]
pub enum SourceEvent {
    Polled {
        source: &'static str,
        fetched: Fetched,
        at_ms: i64,
    },
    Failed {
        source: &'static str,
        error: String,
        consecutive_failures: u32,
        circuit_open: bool,
        at_ms: i64,
    },
}

/// Poll `source` until `stop`; outcomes go to `events`.
pub async fn run(
    mut source: Box<dyn MarketSource>,
    schedule: Schedule,
    events: mpsc::Sender<SourceEvent>,
    leadership: Leadership,
    stop: CancellationToken,
) {
    let name = source.name();
    let mut failures = 0u32;
    loop {
        if !leadership.is_leader() {
            // Only the leader polls. A node that (re)gains the lead starts from whole data.
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = leadership.until_leader() => {}
            }
            source.forget_validators();
            failures = 0;
        }
        let outcome = tokio::select! {
            _ = stop.cancelled() => return,
            o = poll_with_retries(source.as_mut(), &schedule) => o,
        };
        let event = match outcome {
            Ok(fetched) => {
                failures = 0;
                SourceEvent::Polled {
                    source: name,
                    fetched,
                    at_ms: unix_now_ms() as i64,
                }
            }
            Err(e) => {
                failures += 1;
                tracing::warn!(source = name, error = %e, failures, "source poll failed");
                SourceEvent::Failed {
                    source: name,
                    error: e.to_string(),
                    consecutive_failures: failures,
                    circuit_open: failures >= schedule.breaker_failures,
                    at_ms: unix_now_ms() as i64,
                }
            }
        };
        if events.send(event).await.is_err() {
            return;
        }
        // Open circuit: wait the cooldown, then one trial poll (half-open); its outcome closes or
        // reopens the circuit.
        let wait = if failures >= schedule.breaker_failures {
            schedule.breaker_cooldown
        } else {
            jittered(schedule.interval, schedule.jitter_ratio)
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(wait) => {}
        }
    }
}

async fn poll_with_retries(source: &mut dyn MarketSource, schedule: &Schedule) -> Result<Fetched, SourceError> {
    let mut attempt = 0u32;
    loop {
        let result = match tokio::time::timeout(schedule.timeout, source.fetch()).await {
            Ok(r) => r,
            Err(_) => Err(SourceError::Timeout),
        };
        match result {
            Ok(f) => return Ok(f),
            Err(e) if attempt < schedule.max_retries && e.retryable() => {
                let backoff = schedule.backoff.wait(attempt);
                let wait = e
                    .retry_after()
                    .map_or(backoff, |ra| ra.max(backoff))
                    .min(schedule.interval);
                tracing::debug!(source = source.name(), error = %e, ?wait, "retrying");
                tokio::time::sleep(wait).await;
                attempt += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The interval ± `ratio` of itself, at random, so sources and nodes do not poll in lockstep.
pub fn jittered(interval: Duration, ratio: f64) -> Duration {
    if ratio <= 0.0 {
        return interval;
    }
    let factor = 1.0 + rand::rng().random_range(-ratio..=ratio);
    interval.mul_f64(factor.max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU32, Ordering};

    struct Flaky {
        calls: Arc<AtomicU32>,
        fail_first: u32,
    }

    #[async_trait::async_trait]
    impl MarketSource for Flaky {
        fn name(&self) -> &'static str {
            "flaky"
        }
        async fn fetch(&mut self) -> Result<Fetched, SourceError> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst);
            if n < self.fail_first {
                Err(SourceError::Status {
                    status: 500,
                    retry_after: None,
                    body: "boom".into(),
                })
            } else {
                Ok(Fetched::Unchanged)
            }
        }
    }

    fn schedule() -> Schedule {
        Schedule {
            interval: Duration::from_millis(50),
            jitter_ratio: 0.0,
            timeout: Duration::from_millis(100),
            max_retries: 2,
            backoff: Backoff::from_millis(1, 5),
            breaker_failures: 2,
            breaker_cooldown: Duration::from_secs(3600),
        }
    }

    #[tokio::test]
    async fn retries_within_a_poll_then_succeeds() {
        let calls = Arc::new(AtomicU32::new(0));
        let mut src = Flaky {
            calls: calls.clone(),
            fail_first: 2,
        };
        assert!(matches!(
            poll_with_retries(&mut src, &schedule()).await,
            Ok(Fetched::Unchanged)
        ));
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn the_breaker_opens_after_failed_polls_and_pauses_the_source() {
        let calls = Arc::new(AtomicU32::new(0));
        let src = Box::new(Flaky {
            calls: calls.clone(),
            fail_first: u32::MAX,
        });
        let (tx, mut rx) = mpsc::channel(16);
        let stop = CancellationToken::new();
        tokio::spawn(run(src, schedule(), tx, Leadership::single_node(), stop.clone()));
        let mut opened = false;
        for _ in 0..2 {
            match rx.recv().await.unwrap() {
                SourceEvent::Failed {
                    circuit_open,
                    consecutive_failures,
                    ..
                } => {
                    opened = circuit_open;
                    assert!(consecutive_failures <= 2);
                }
                other => panic!("{other:?}"),
            }
        }
        assert!(opened, "two failed polls open the circuit");
        let before = calls.load(Ordering::SeqCst);
        assert_eq!(before, 6, "each poll tried 1 + 2 retries");
        // While open (an hour), nothing is polled.
        tokio::time::sleep(Duration::from_secs(600)).await;
        assert_eq!(calls.load(Ordering::SeqCst), before);
        stop.cancel();
    }
}
