//! The bus: where every publication goes before it reaches a client, on one node or many.
//!
//! `trait Bus` publishes (assigning each publication a per-channel offset within an epoch),
//! keeps history for recovery, and delivers publications of the channels this node subscribed to,
//! in offset order, to one [`PublicationHandler`] (the hub). It knows channel names only, never
//! their meaning. `MemoryBus` serves one node; the Redis bus several.

pub mod control;
pub mod leader;
pub mod memory;
pub mod redis;
pub mod snapshots;
pub mod tail;
pub mod users;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::value::RawValue;

pub use memory::MemoryBus;
pub use redis::RedisBus;

/// A position in a channel's stream: the offset of its latest publication within an epoch.
/// A new epoch means the stream restarted and earlier offsets mean nothing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamPosition {
    pub offset: u64,
    pub epoch: String,
}

/// One publication: raw compact JSON (no raw newline) with its offset.
#[derive(Debug, Clone)]
pub struct Publication {
    pub offset: u64,
    pub data: Bytes,
}

/// What to read from a channel's history.
#[derive(Debug, Clone, Default)]
pub struct HistoryQuery {
    /// Publications after this position; `None`: from the oldest kept.
    pub since: Option<StreamPosition>,
    /// At most this many (0: no publications, only the current position).
    pub limit: usize,
    /// Newest first.
    pub reverse: bool,
}

#[derive(Debug, Clone, Default)]
pub struct HistoryResult {
    pub publications: Vec<Publication>,
    /// The channel's current position.
    pub position: StreamPosition,
}

#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("bus unavailable: {0}")]
    Unavailable(String),
    #[error("publication data must be compact JSON")]
    InvalidData,
}

/// Receives the publications of subscribed channels, in offset order per channel.
pub trait PublicationHandler: Send + Sync + 'static {
    fn handle_publication(&self, channel: &str, publication: &Publication);
    /// The channel's stream position was lost (a new epoch, or a gap that history cannot fill):
    /// the node's subscribers of the channel must recover or resync.
    fn handle_reset(&self, _channel: &str) {}
}

#[async_trait]
pub trait Bus: Send + Sync + 'static {
    /// Set the one handler publications are delivered to. Called once, at start.
    fn attach(&self, handler: Arc<dyn PublicationHandler>);
    /// Append to the channel's history and deliver to every node subscribed to it.
    async fn publish(&self, channel: &str, data: Bytes) -> Result<StreamPosition, BusError>;
    /// Publish JSON compacted to one line (a raw newline would split a frame): the one way the
    /// server's parts publish to clients.
    async fn publish_json(&self, channel: &str, data: &RawValue) -> Result<StreamPosition, BusError> {
        let data = crate::protocol::compact_json(data).map_err(|_| BusError::InvalidData)?;
        self.publish(channel, Bytes::from(data.get().to_owned())).await
    }
    /// Start delivering the channel's publications to this node's handler.
    async fn subscribe(&self, channel: &str) -> Result<(), BusError>;
    /// Stop delivering the channel's publications to this node.
    async fn unsubscribe(&self, channel: &str) -> Result<(), BusError>;
    /// Read history and the channel's current position.
    async fn history(&self, channel: &str, query: HistoryQuery) -> Result<HistoryResult, BusError>;
    /// Free the state of channels idle for `bus.idle_channel_ttl_s`: no subscriber here, no
    /// publication and no history left. (On Redis, keys expire on their own.)
    fn prune_idle(&self) -> usize {
        0
    }
    /// Whether the bus can serve requests now (for `/readyz`).
    async fn ready(&self) -> bool;
}

/// The outcome of a recovery attempt: all missed publications, or none.
#[derive(Debug, Clone)]
pub struct Recovery {
    pub publications: Vec<Publication>,
    pub position: StreamPosition,
    pub recovered: bool,
}

/// Recover the publications after `since`, all or nothing: at most `max` publications, the epoch
/// unchanged, and no gap between `since` and the oldest one kept.
pub async fn recover(bus: &dyn Bus, channel: &str, since: StreamPosition, max: usize) -> Result<Recovery, BusError> {
    let result = bus
        .history(
            channel,
            HistoryQuery {
                since: Some(since.clone()),
                limit: max + 1,
                reverse: false,
            },
        )
        .await?;
    let top = &result.position;
    let missed = top.offset.saturating_sub(since.offset);
    let complete = top.epoch == since.epoch
        && since.offset <= top.offset
        && missed as usize == result.publications.len()
        && result.publications.len() <= max
        && result.publications.first().is_none_or(|p| p.offset == since.offset + 1);
    Ok(if complete {
        Recovery {
            publications: result.publications,
            position: result.position,
            recovered: true,
        }
    } else {
        Recovery {
            publications: Vec::new(),
            position: result.position,
            recovered: false,
        }
    })
}

#[cfg(test)]
pub(crate) mod suite {
    //! The bus contract, run against every backend.
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    pub struct Collect(pub Mutex<Vec<(String, u64, Bytes)>>);
    impl PublicationHandler for Collect {
        fn handle_publication(&self, channel: &str, p: &Publication) {
            self.0
                .lock()
                .unwrap()
                .push((channel.to_owned(), p.offset, p.data.clone()));
        }
    }

    /// Delivery may be asynchronous (through Redis): what arrived is read after waiting for it.
    pub async fn offsets_are_sequential_and_delivered_in_order(bus: &dyn Bus) {
        let collect = Arc::new(Collect::default());
        bus.attach(collect.clone());
        bus.subscribe("t:a").await.unwrap();
        for i in 1..=5u64 {
            let pos = bus.publish("t:a", Bytes::from(format!("{{\"n\":{i}}}"))).await.unwrap();
            assert_eq!(pos.offset, i);
        }
        bus.publish("t:unsubscribed", Bytes::from_static(b"1")).await.unwrap();
        let arrived = || collect.0.lock().unwrap().len();
        for _ in 0..300 {
            if arrived() >= 5 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        // Anything else (a duplicate, the other channel) would show up by now.
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let got = collect.0.lock().unwrap().clone();
        assert_eq!(got.iter().map(|g| g.1).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        assert!(got.iter().all(|g| g.0 == "t:a"));
        assert_eq!(&got[0].2[..], b"{\"n\":1}");
        bus.unsubscribe("t:a").await.unwrap();
        bus.publish("t:a", Bytes::from_static(b"6")).await.unwrap();
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        assert_eq!(collect.0.lock().unwrap().len(), 5);
    }

    pub async fn recovery_is_all_or_nothing(bus: &dyn Bus, history_size: usize) {
        let mut last = StreamPosition::default();
        for i in 0..3 {
            last = bus.publish("t:r", Bytes::from(format!("{i}"))).await.unwrap();
        }
        let since = StreamPosition {
            offset: 1,
            epoch: last.epoch.clone(),
        };
        let r = recover(bus, "t:r", since.clone(), 100).await.unwrap();
        assert!(r.recovered);
        assert_eq!(r.publications.iter().map(|p| p.offset).collect::<Vec<_>>(), vec![2, 3]);
        // Too many missed for the caller's limit: nothing.
        let r = recover(bus, "t:r", since.clone(), 1).await.unwrap();
        assert!(!r.recovered && r.publications.is_empty());
        // Another epoch: nothing.
        let other = StreamPosition {
            offset: 1,
            epoch: "other".into(),
        };
        assert!(!recover(bus, "t:r", other, 100).await.unwrap().recovered);
        // Up to date: recovered with nothing to send.
        let r = recover(bus, "t:r", last.clone(), 100).await.unwrap();
        assert!(r.recovered && r.publications.is_empty());
        // Past the history window: nothing.
        for i in 0..history_size + 2 {
            bus.publish("t:r", Bytes::from(format!("{i}"))).await.unwrap();
        }
        assert!(!recover(bus, "t:r", since, 10_000).await.unwrap().recovered);
    }

    pub async fn history_reads_forward_and_reverse(bus: &dyn Bus) {
        for i in 1..=4 {
            bus.publish("t:h", Bytes::from(format!("{i}"))).await.unwrap();
        }
        let all = bus
            .history(
                "t:h",
                HistoryQuery {
                    since: None,
                    limit: 10,
                    reverse: false,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            all.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
            vec![1, 2, 3, 4]
        );
        let rev = bus
            .history(
                "t:h",
                HistoryQuery {
                    since: None,
                    limit: 2,
                    reverse: true,
                },
            )
            .await
            .unwrap();
        assert_eq!(
            rev.publications.iter().map(|p| p.offset).collect::<Vec<_>>(),
            vec![4, 3]
        );
        let none = bus
            .history(
                "t:h",
                HistoryQuery {
                    since: None,
                    limit: 0,
                    reverse: false,
                },
            )
            .await
            .unwrap();
        assert!(none.publications.is_empty());
        assert_eq!(none.position.offset, 4);
        let empty = bus.history("t:never", HistoryQuery::default()).await.unwrap();
        assert_eq!(empty.position.offset, 0);
        assert!(!empty.position.epoch.is_empty());
    }
}
