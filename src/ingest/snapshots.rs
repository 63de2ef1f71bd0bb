//! Subscribe snapshots of the market channels, for the hub: this node's own market while it leads
//! and has polled, otherwise the leader's, shared through the bus ([`SnapshotReplica`]).

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::value::RawValue;

use crate::bus::leader::Leadership;
use crate::bus::snapshots::SnapshotReplica;
use crate::clock::unix_now_ms;
use crate::hub::SnapshotProvider;
use crate::market::Market;
use crate::protocol::Raw;

/// Subscribe snapshots of the market channels: this node's own market while it leads and has
/// polled; otherwise the leader's, from Redis.
pub struct MarketSnapshots {
    pub market: Market,
    pub leadership: Leadership,
    pub replica: Option<Arc<SnapshotReplica>>,
}

#[async_trait]
impl SnapshotProvider for MarketSnapshots {
    async fn snapshot(&self, channel: &str) -> Option<Raw> {
        let local = || {
            let text = self.market.read().snapshot_text(channel, unix_now_ms() as i64)?;
            RawValue::from_string(text).ok()
        };
        let Some(replica) = &self.replica else {
            return local();
        };
        let own = self.leadership.is_leader() && self.market.read().has_own_data();
        if own {
            return local();
        }
        // Not a market channel: nothing to read.
        let fallback = local()?;
        match replica.load(channel).await {
            Some(json) => RawValue::from_string(json).ok().or(Some(fallback)),
            None => Some(fallback),
        }
    }
}
