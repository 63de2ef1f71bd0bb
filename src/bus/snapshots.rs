//! Market snapshots shared through Redis, for hub nodes that do not poll. Stores and loads JSON
//! text by channel name; what the text means is the market's business.
//!
//! Only the leader polls and computes the market. Before it publishes a channel's delta it stores
//! the channel's new snapshot under `<prefix>.snapshot.{<channel>}`, so a subscribe on any node
//! answers with a snapshot at least as new as every delta the subscriber may have missed (deltas
//! at or below the snapshot's `seq` are skipped by clients). Followers also mirror the leader's
//! aggregates and sources' health from these snapshots for their REST answers and advisor.

use fred::prelude::*;

pub struct SnapshotReplica {
    client: Client,
    prefix: String,
}

impl SnapshotReplica {
    /// `client` is the Redis bus's command client.
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
