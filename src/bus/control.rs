//! Messages between hub nodes on the control channel (`<prefix>.control` in Redis): one typed
//! [`Control`] with one encoding, and a broadcast of the messages this node heard to every part
//! that follows them (the hub closes revoked tokens' connections, the advisor aborts cancelled
//! answers). A follower that falls behind is told how many it missed, and it is logged and
//! counted, never silently dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::sync::broadcast;
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Messages buffered for each follower; a follower this far behind has lagged.
const CAPACITY: usize = 1024;

/// One control message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control {
    /// The token with this id was revoked: close the connections that use it.
    Revoke { jti: String },
    /// Abort the advisor answer with this message id (only the node generating it has it).
    CancelAnswer { message_id: String },
    /// An alert rule was created, changed or deleted: reload it from the database.
    RuleChanged { rule_id: String },
    /// A user's portfolio (accounts or machines) changed: recompute it.
    PortfolioChanged { user_id: String },
}

impl Control {
    /// The wire form: `revoke <jti>` or `cancel <message id>`.
    pub fn encode(&self) -> String {
        match self {
            Control::Revoke { jti } => format!("revoke {jti}"),
            Control::CancelAnswer { message_id } => format!("cancel {message_id}"),
            Control::RuleChanged { rule_id } => format!("rule {rule_id}"),
            Control::PortfolioChanged { user_id } => format!("portfolio {user_id}"),
        }
    }

    /// `None` for a message this node does not know (a newer node's), which is skipped.
    pub fn decode(text: &str) -> Option<Self> {
        let (kind, arg) = text.split_once(' ')?;
        if arg.is_empty() {
            return None;
        }
        match kind {
            "revoke" => Some(Control::Revoke { jti: arg.to_owned() }),
            "cancel" => Some(Control::CancelAnswer {
                message_id: arg.to_owned(),
            }),
            "rule" => Some(Control::RuleChanged {
                rule_id: arg.to_owned(),
            }),
            "portfolio" => Some(Control::PortfolioChanged {
                user_id: arg.to_owned(),
            }),
            _ => None,
        }
    }
}

/// The control messages this node heard, for every follower; and how many followers missed.
#[derive(Clone)]
pub struct ControlFeed {
    sender: broadcast::Sender<Control>,
    lagged: Arc<AtomicU64>,
}

impl Default for ControlFeed {
    fn default() -> Self {
        Self {
            sender: broadcast::channel(CAPACITY).0,
            lagged: Arc::default(),
        }
    }
}

impl ControlFeed {
    /// Hand a heard message to every follower (none yet is fine).
    pub fn deliver(&self, message: Control) {
        let _ = self.sender.send(message);
    }

    /// Messages missed by followers that fell behind, since start.
    pub fn lagged_total(&self) -> u64 {
        self.lagged.load(Ordering::Relaxed)
    }

    /// Call `handle` with every message heard from now until `stop`. Subscribes at once, so a
    /// message delivered after this call returns is not missed.
    pub fn follow(
        &self,
        name: &'static str,
        stop: CancellationToken,
        mut handle: impl FnMut(Control) + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static {
        let mut messages = self.sender.subscribe();
        let lagged = self.lagged.clone();
        async move {
            loop {
                let message = tokio::select! {
                    _ = stop.cancelled() => return,
                    m = messages.recv() => m,
                };
                match message {
                    Ok(m) => handle(m),
                    Err(RecvError::Lagged(n)) => {
                        lagged.fetch_add(n, Ordering::Relaxed);
                        tracing::error!(follower = name, missed = n, "control messages missed: fell behind");
                    }
                    Err(RecvError::Closed) => return,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip_and_unknown_ones_are_skipped() {
        for m in [
            Control::Revoke { jti: "abc-1".into() },
            Control::CancelAnswer {
                message_id: "9f2c".into(),
            },
            Control::RuleChanged { rule_id: "r-7".into() },
        ] {
            assert_eq!(Control::decode(&m.encode()), Some(m));
        }
        assert_eq!(Control::decode("revoke "), None);
        assert_eq!(Control::decode("reboot node-1"), None);
        assert_eq!(Control::decode("revoke"), None);
    }

    #[tokio::test]
    async fn a_follower_that_falls_behind_is_counted() {
        let feed = ControlFeed::default();
        let stop = CancellationToken::new();
        let (seen_tx, mut seen) = tokio::sync::mpsc::unbounded_channel();
        let follower = feed.follow("test", stop.clone(), move |m| {
            let _ = seen_tx.send(m);
        });
        for i in 0..CAPACITY + 10 {
            feed.deliver(Control::Revoke { jti: format!("t{i}") });
        }
        let task = tokio::spawn(follower);
        let mut heard = 0;
        while heard < CAPACITY {
            seen.recv().await.unwrap();
            heard += 1;
        }
        assert_eq!(feed.lagged_total(), 10);
        stop.cancel();
        task.await.unwrap();
    }
}
