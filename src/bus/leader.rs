//! Leadership: which node polls the sources, evaluates alerts and writes the minute snapshots.
//!
//! With one node it is always the leader. With Redis, the leader holds a lease: `SET key node NX PX
//! lease`, renewed every third of the lease by a script that extends it only while it still holds
//! the node's id. Taking the lease increments a fencing counter; its value (the term) is logged and
//! exported so two terms can be told apart. A node steps down as soon as a renewal says the lease is
//! another's or gone, and, when Redis cannot be reached, before the lease can expire there, so two
//! nodes never act as leader at once while their clocks run at the same rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use fred::prelude::*;
use fred::types::scripts::Script;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

const RENEW_LUA: &str = r#"
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('pexpire', KEYS[1], ARGV[2])
end
return 0
"#;

const RELEASE_LUA: &str = r#"
if redis.call('get', KEYS[1]) == ARGV[1] then
  return redis.call('del', KEYS[1])
end
return 0
"#;

/// Shared view of this node's leadership.
#[derive(Clone)]
pub struct Leadership {
    inner: Arc<State>,
}

struct State {
    leader: AtomicBool,
    term: AtomicU64,
    changes: watch::Sender<bool>,
}

impl Leadership {
    fn new(leader: bool) -> Self {
        let (changes, _) = watch::channel(leader);
        Self {
            inner: Arc::new(State {
                leader: AtomicBool::new(leader),
                term: AtomicU64::new(0),
                changes,
            }),
        }
    }

    /// A single node: always the leader.
    pub fn single_node() -> Self {
        Self::new(true)
    }

    pub fn is_leader(&self) -> bool {
        self.inner.leader.load(Ordering::Acquire)
    }

    /// The fencing term of the current (or last) lease this node held; 0 when it never led.
    pub fn term(&self) -> u64 {
        self.inner.term.load(Ordering::Acquire)
    }

    /// Wait until this node is the leader (returns at once when it is).
    pub async fn until_leader(&self) {
        let mut rx = self.inner.changes.subscribe();
        let _ = rx.wait_for(|leader| *leader).await;
    }

    /// Wait until this node is no longer the leader.
    pub async fn until_follower(&self) {
        let mut rx = self.inner.changes.subscribe();
        let _ = rx.wait_for(|leader| !*leader).await;
    }

    fn set(&self, leader: bool) {
        self.inner.leader.store(leader, Ordering::Release);
        self.inner.changes.send_replace(leader);
    }

    /// A follower that campaigns for the lease under `key` while the returned future runs (the
    /// caller runs it as a task) until `stop`, releasing the lease on the way out.
    pub fn campaign(
        client: Client,
        key: String,
        node_id: String,
        lease: Duration,
        stop: CancellationToken,
    ) -> (Self, impl Future<Output = ()> + Send + 'static) {
        let leadership = Self::new(false);
        let this = leadership.clone();
        let campaign = async move { this.run(client, key, node_id, lease, stop).await };
        (leadership, campaign)
    }

    async fn run(&self, client: Client, key: String, node_id: String, lease: Duration, stop: CancellationToken) {
        let lease = Lease {
            renew: Script::from_lua(RENEW_LUA),
            client,
            fence_key: format!("{key}.term"),
            key,
            node_id,
            lease,
            every: lease / 3,
        };
        // When the lease was last known to be ours (sent before the renewal, so a conservative bound).
        let mut held_since: Option<Instant> = None;
        loop {
            let attempt = Instant::now();
            if self.is_leader() {
                self.renew(&lease, attempt, &mut held_since).await;
            } else if let Some(term) = lease.take().await {
                self.inner.term.store(term, Ordering::Release);
                held_since = Some(attempt);
                tracing::info!(term, node = %lease.node_id, "this node is now the leader");
                self.set(true);
            }
            // A follower tries twice as often as the leader renews: it takes over soon after expiry.
            let pause = if self.is_leader() { lease.every } else { lease.every / 2 };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tokio::time::sleep(pause) => {}
            }
        }
        if self.is_leader() {
            self.set(false);
            let release = Script::from_lua(RELEASE_LUA);
            let _: Result<i64, Error> = release
                .evalsha_with_reload(&lease.client, vec![lease.key.clone()], vec![lease.node_id.clone()])
                .await;
            tracing::info!("leader lease released");
        }
    }

    /// Renew the lease this node holds; step down when it is another's, or when Redis cannot be
    /// reached and the lease may have expired there.
    async fn renew(&self, lease: &Lease, attempt: Instant, held_since: &mut Option<Instant>) {
        let lease_ms = lease.lease.as_millis() as i64;
        let renewed: Result<i64, Error> = lease
            .renew
            .evalsha_with_reload(
                &lease.client,
                vec![lease.key.clone()],
                vec![lease.node_id.clone(), lease_ms.to_string()],
            )
            .await;
        match renewed {
            Ok(1) => *held_since = Some(attempt),
            Ok(_) => {
                tracing::warn!(term = self.term(), "leader lease lost to another node; stepping down");
                self.set(false);
                *held_since = None;
            }
            Err(e) => {
                // Redis unreachable: keep leading only while the lease surely still holds there.
                let expires = held_since.map(|t| t + lease.lease - lease.every);
                if expires.is_none_or(|t| Instant::now() >= t) {
                    tracing::warn!(error = %e, "cannot renew the leader lease; stepping down");
                    self.set(false);
                    *held_since = None;
                }
            }
        }
    }
}

/// The lease a node campaigns for.
struct Lease {
    client: Client,
    renew: Script,
    key: String,
    /// The fencing counter, incremented by each new holder.
    fence_key: String,
    node_id: String,
    lease: Duration,
    /// How often the holder renews.
    every: Duration,
}

impl Lease {
    /// Take the lease if it is free; the new fencing term when taken.
    async fn take(&self) -> Option<u64> {
        let taken: Result<Option<String>, Error> = self
            .client
            .set(
                self.key.clone(),
                self.node_id.clone(),
                Some(Expiration::PX(self.lease.as_millis() as i64)),
                Some(SetOptions::NX),
                false,
            )
            .await;
        match taken {
            Ok(Some(_)) => Some(self.client.incr(self.fence_key.clone()).await.unwrap_or(0)),
            _ => None,
        }
    }
}
