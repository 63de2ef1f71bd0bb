//! Market snapshots shared through Redis, for hub nodes that do not poll.
//!
//! Only the leader polls and computes the market. Before it publishes a channel's delta it stores
//! the channel's new snapshot under `<prefix>.snapshot.{<channel>}`, so a subscribe on any node
//! answers with a snapshot at least as new as every delta the subscriber may have missed (deltas
//! at or below the snapshot's `seq` are skipped by clients). Followers also mirror the leader's
//! aggregates and sources' health from these snapshots for their REST answers and advisor.

use std::sync::Arc;

use async_trait::async_trait;
use fred::prelude::*;
use serde_json::value::RawValue;

use super::runner::Market;
use crate::bus::leader::Leadership;
use crate::clock::unix_now_ms;
use crate::hub::SnapshotProvider;
use crate::protocol::Raw;

pub struct SnapshotReplica {
    client: Client,
    prefix: String,
}

impl SnapshotReplica {
    pub fn new(client: Client, prefix: &str) -> Self {
        Self {
            client,
            prefix: prefix.to_owned(),
        }
    }

    fn key(&self, channel: &str) -> String {
        format!("{}.snapshot.{{{channel}}}", self.prefix)
    }

    /// Store several channels' snapshots in one round trip (a pipeline: in a Redis Cluster the
    /// keys live in different slots).
    pub async fn store(&self, snapshots: Vec<(String, String)>) -> Result<(), Error> {
        if snapshots.is_empty() {
            return Ok(());
        }
        let pipeline = self.client.pipeline();
        for (channel, json) in snapshots {
            pipeline
                .set::<(), _, _>(self.key(&channel), json, None, None, false)
                .await?;
        }
        pipeline.all::<Vec<Value>>().await.map(|_| ())
    }

    pub async fn load(&self, channel: &str) -> Option<String> {
        match self.client.get::<Option<String>, _>(self.key(channel)).await {
            Ok(v) => v,
            Err(e) => {
                tracing::warn!(channel, error = %e, "reading a market snapshot from Redis failed");
                None
            }
        }
    }
}

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
