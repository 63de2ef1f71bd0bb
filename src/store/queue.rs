//! Writes that must not hold up the market loop. Alert firings, rules' remembered conditions and
//! the minute snapshots are queued here and written by one task, in order, each retried with
//! backoff until the database takes it: with the database away the market keeps publishing, and
//! once it is back every queued write lands (firings once each: they carry an idempotency key).
//!
//! The queue is bounded ([`CAPACITY`] writes): past it a write is refused, logged and counted
//! (`gpuscout_store_queue_dropped_total`), never buffered without limit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::StoreError;
use crate::backoff::Backoff;
use crate::telemetry::Metrics;

/// Most writes waiting at once (about 20 minutes of a busy market's writes without a database).
pub const CAPACITY: usize = 10_000;

/// Retries of one write: windows of 0.1 s doubling up to 5 s.
const RETRY: Backoff = Backoff::from_millis(100, 5_000);

/// One write: run again after each failure until it succeeds.
pub type Write = Box<dyn FnMut() -> BoxFuture<'static, Result<(), StoreError>> + Send>;

struct Queued {
    what: &'static str,
    write: Write,
}

/// The sending side, cheap to clone.
#[derive(Clone)]
pub struct WriteQueue {
    tx: mpsc::Sender<Queued>,
    metrics: Arc<Metrics>,
}

/// The writing side: [`Writer::run`] is the task.
pub struct Writer {
    rx: mpsc::Receiver<Queued>,
    metrics: Arc<Metrics>,
}

impl WriteQueue {
    pub fn new(metrics: Arc<Metrics>) -> (Self, Writer) {
        let (tx, rx) = mpsc::channel(CAPACITY);
        let writer = Writer {
            rx,
            metrics: metrics.clone(),
        };
        (Self { tx, metrics }, writer)
    }

    /// Queue `write` (`what` names it in logs); false when the queue is full and it was dropped.
    pub fn push(&self, what: &'static str, write: Write) -> bool {
        match self.tx.try_send(Queued { what, write }) {
            Ok(()) => {
                self.metrics.store_queue_depth.fetch_add(1, Ordering::Relaxed);
                true
            }
            Err(_) => {
                self.metrics.store_queue_dropped_total.fetch_add(1, Ordering::Relaxed);
                tracing::error!(what, capacity = CAPACITY, "database write queue full: write dropped");
                false
            }
        }
    }
}

impl Writer {
    /// Write everything queued, in order, until `stop`.
    pub async fn run(mut self, stop: CancellationToken) {
        loop {
            let queued = tokio::select! {
                _ = stop.cancelled() => return,
                queued = self.rx.recv() => match queued {
                    Some(q) => q,
                    None => return stop.cancelled().await,
                },
            };
            if !self.write(queued, &stop).await {
                return;
            }
            self.metrics.store_queue_depth.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// One write, retried until it lands; false when stopped first.
    async fn write(&self, mut queued: Queued, stop: &CancellationToken) -> bool {
        let mut attempt = 0;
        loop {
            match (queued.write)().await {
                Ok(()) => return true,
                Err(e) => {
                    self.metrics.store_write_retries_total.fetch_add(1, Ordering::Relaxed);
                    let wait = RETRY.wait(attempt).max(Duration::from_millis(20));
                    tracing::warn!(what = queued.what, attempt, error = %e, "database write failed; retrying");
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        _ = stop.cancelled() => return false,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[tokio::test]
    async fn writes_land_in_order_after_failures() {
        let metrics = Arc::new(Metrics::default());
        let (queue, writer) = WriteQueue::new(metrics.clone());
        let stop = CancellationToken::new();
        tokio::spawn(writer.run(stop.clone()));
        let landed = Arc::new(Mutex::new(Vec::new()));
        for n in 0..3 {
            let (landed, mut failures) = (landed.clone(), 2);
            queue.push(
                "test",
                Box::new(move || {
                    let landed = landed.clone();
                    let fail = failures > 0;
                    failures -= 1;
                    Box::pin(async move {
                        if fail {
                            return Err(StoreError::Sqlx(sqlx::Error::PoolTimedOut));
                        }
                        landed.lock().unwrap().push(n);
                        Ok(())
                    })
                }),
            );
        }
        for _ in 0..200 {
            if landed.lock().unwrap().len() == 3 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert_eq!(*landed.lock().unwrap(), [0, 1, 2]);
        assert_eq!(metrics.store_write_retries_total.load(Ordering::Relaxed), 6);
        assert_eq!(metrics.store_queue_depth.load(Ordering::Relaxed), 0);
        stop.cancel();
    }
}
