//! The task tree: every background task of the hub runs here, under one tracker and one
//! cancellation token. A *critical* task (the market runner, each source's poller, the webhook
//! outbox worker, leadership, the cross-node heartbeat, the control-message followers, the
//! limiter pruning) must run as long as the process does: if one ends or panics before shutdown,
//! [`Tasks::first_death`] resolves with its name, `/readyz` turns unready at once, and
//! `run_until_stopped` shuts the node down and returns an error, so the process exits non-zero
//! and its supervisor (systemd, Kubernetes) starts a fresh one. Restarting a task in place was
//! not chosen: a task that panicked may have left the state it shares (the market, a rule set)
//! half-updated, and a fresh process rebuilds all of it from the database and the sources.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;
use tokio::task::AbortHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The hub's background tasks.
#[derive(Clone)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
    inner: Arc<Inner>,
}

struct Inner {
    /// Critical tasks by name, to abort one on request (the fault-injection hook).
    running: Mutex<Vec<(String, AbortHandle)>>,
    /// Names of critical tasks that ended before shutdown.
    dead: watch::Sender<Vec<String>>,
}

impl Tasks {
    /// Tasks that stop when `stop` is cancelled.
    pub fn new(stop: CancellationToken) -> Self {
        Self {
            tracker: TaskTracker::new(),
            stop,
            inner: Arc::new(Inner {
                running: Mutex::new(Vec::new()),
                dead: watch::channel(Vec::new()).0,
            }),
        }
    }

    /// The token every task watches for shutdown.
    pub fn stop_token(&self) -> &CancellationToken {
        &self.stop
    }

    /// Run a task that may end on its own (an advisor answer, a request's follow-up work).
    /// Shutdown waits for it up to the grace period.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(task);
    }

    /// Run a task that must last as long as the process: its end or panic before shutdown is a
    /// death (logged, `/readyz` unready, the process exits non-zero).
    pub fn spawn_critical(&self, name: impl Into<String>, task: impl Future<Output = ()> + Send + 'static) {
        let name = name.into();
        let handle = self.tracker.spawn(task);
        self.lock_running().push((name.clone(), handle.abort_handle()));
        let stop = self.stop.clone();
        let inner = self.inner.clone();
        self.tracker.spawn(async move {
            let outcome = handle.await;
            inner
                .running
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .retain(|(n, _)| *n != name);
            if stop.is_cancelled() {
                return;
            }
            match outcome {
                Ok(()) => tracing::error!(task = %name, "critical task ended before shutdown"),
                Err(e) if e.is_panic() => {
                    let panic = e.into_panic();
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    tracing::error!(task = %name, panic = %message, "critical task panicked");
                }
                Err(_) => tracing::error!(task = %name, "critical task was aborted"),
            }
            inner.dead.send_modify(|dead| dead.push(name));
        });
    }

    fn lock_running(&self) -> std::sync::MutexGuard<'_, Vec<(String, AbortHandle)>> {
        self.inner.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Names of the critical tasks running now.
    pub fn critical(&self) -> Vec<String> {
        self.lock_running().iter().map(|(n, _)| n.clone()).collect()
    }

    /// Critical tasks that died (empty while the node is healthy).
    pub fn dead(&self) -> Vec<String> {
        self.inner.dead.borrow().clone()
    }

    /// Resolves with the name of the first critical task to die.
    pub async fn first_death(&self) -> String {
        let mut dead = self.inner.dead.subscribe();
        let first = dead.wait_for(|d| !d.is_empty()).await.map(|d| d[0].clone());
        match first {
            Ok(name) => name,
            // The sender lives in `self`: never closed while we wait.
            Err(_) => std::future::pending().await,
        }
    }

    /// Fault injection for tests and drills: abort the critical task `name` as if it had died.
    /// False when no such task runs.
    pub fn kill(&self, name: &str) -> bool {
        let running = self.lock_running();
        let found = running.iter().find(|(n, _)| n == name);
        if let Some((_, handle)) = found {
            handle.abort();
        }
        found.is_some()
    }

    /// Stop taking tasks and wait for every one to finish.
    pub async fn close_and_wait(&self) {
        self.tracker.close();
        self.tracker.wait().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    async fn within<T>(f: impl Future<Output = T>) -> T {
        tokio::time::timeout(Duration::from_secs(5), f).await.expect("in time")
    }

    #[tokio::test]
    async fn a_critical_task_that_ends_panics_or_is_killed_is_a_death() {
        let tasks = Tasks::new(CancellationToken::new());
        tasks.spawn_critical("ends", async {});
        assert_eq!(within(tasks.first_death()).await, "ends");

        let tasks = Tasks::new(CancellationToken::new());
        tasks.spawn_critical("panics", async { panic!("boom") });
        assert_eq!(within(tasks.first_death()).await, "panics");

        let tasks = Tasks::new(CancellationToken::new());
        tasks.spawn_critical("forever", std::future::pending());
        tasks.spawn_critical("other", std::future::pending());
        tokio::task::yield_now().await;
        assert!(tasks.kill("forever"));
        assert!(!tasks.kill("nothing"));
        assert_eq!(within(tasks.first_death()).await, "forever");
        assert_eq!(tasks.dead(), vec!["forever".to_owned()]);
        assert_eq!(tasks.critical(), vec!["other".to_owned()]);
    }

    #[tokio::test]
    async fn tasks_that_stop_on_shutdown_are_not_deaths() {
        let stop = CancellationToken::new();
        let tasks = Tasks::new(stop.clone());
        let token = stop.clone();
        tasks.spawn_critical("worker", async move { token.cancelled().await });
        stop.cancel();
        within(tasks.close_and_wait()).await;
        assert!(tasks.dead().is_empty());
    }
}
