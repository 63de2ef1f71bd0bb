//! `MemoryBus`: the in-process bus of a single node, with a bounded history ring per channel.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::Bytes;
use dashmap::{DashMap, DashSet};

use super::{Bus, BusError, HistoryQuery, HistoryResult, Publication, PublicationHandler, StreamPosition};
use crate::config::BusSettings;

/// One channel's stream. Guarded by a std mutex, held only for in-memory work (never across
/// `.await`), which also keeps delivery in offset order when several tasks publish at once.
struct Stream {
    epoch: String,
    top: u64,
    ring: VecDeque<(Publication, Instant)>,
    /// Last publication or read.
    touched: Instant,
}

pub struct MemoryBus {
    streams: DashMap<String, Arc<Mutex<Stream>>>,
    subscribed: DashSet<String>,
    handler: OnceLock<Arc<dyn PublicationHandler>>,
    history_size: usize,
    history_ttl: Duration,
    idle_ttl: Duration,
}

impl MemoryBus {
    pub fn new(settings: &BusSettings) -> Self {
        Self {
            streams: DashMap::new(),
            subscribed: DashSet::new(),
            handler: OnceLock::new(),
            history_size: settings.history_size,
            history_ttl: Duration::from_secs(settings.history_ttl_s),
            idle_ttl: Duration::from_secs(settings.idle_channel_ttl_s),
        }
    }

    fn stream(&self, channel: &str) -> Arc<Mutex<Stream>> {
        if let Some(s) = self.streams.get(channel) {
            return s.clone();
        }
        self.streams
            .entry(channel.to_owned())
            .or_insert_with(|| {
                Arc::new(Mutex::new(Stream {
                    epoch: new_epoch(),
                    top: 0,
                    ring: VecDeque::new(),
                    touched: Instant::now(),
                }))
            })
            .clone()
    }

    fn trim(&self, stream: &mut Stream, now: Instant) {
        while stream.ring.len() > self.history_size {
            stream.ring.pop_front();
        }
        while stream
            .ring
            .front()
            .is_some_and(|(_, at)| now.duration_since(*at) > self.history_ttl)
        {
            stream.ring.pop_front();
        }
    }
}

/// A short random epoch; a new one whenever a stream starts afresh.
pub fn new_epoch() -> String {
    let n: u64 = rand::random();
    format!("{:x}", n & 0xffff_ffff_ffff)
}

fn lock(stream: &Mutex<Stream>) -> std::sync::MutexGuard<'_, Stream> {
    // A panic while holding this lock cannot leave the ring inconsistent; keep serving.
    stream.lock().unwrap_or_else(|e| e.into_inner())
}

#[async_trait]
impl Bus for MemoryBus {
    fn attach(&self, handler: Arc<dyn PublicationHandler>) {
        let _ = self.handler.set(handler);
    }

    async fn publish(&self, channel: &str, data: Bytes) -> Result<StreamPosition, BusError> {
        let stream = self.stream(channel);
        let now = Instant::now();
        let mut s = lock(&stream);
        s.touched = now;
        s.top += 1;
        let publication = Publication { offset: s.top, data };
        s.ring.push_back((publication.clone(), now));
        self.trim(&mut s, now);
        if self.subscribed.contains(channel)
            && let Some(handler) = self.handler.get()
        {
            // Under the stream lock: deliveries of one channel stay in offset order. The handler
            // only enqueues (never awaits), so the lock is held briefly.
            handler.handle_publication(channel, &publication);
        }
        Ok(StreamPosition {
            offset: s.top,
            epoch: s.epoch.clone(),
        })
    }

    async fn subscribe(&self, channel: &str) -> Result<(), BusError> {
        self.subscribed.insert(channel.to_owned());
        Ok(())
    }

    async fn unsubscribe(&self, channel: &str) -> Result<(), BusError> {
        self.subscribed.remove(channel);
        Ok(())
    }

    async fn history(&self, channel: &str, query: HistoryQuery) -> Result<HistoryResult, BusError> {
        let stream = self.stream(channel);
        let mut s = lock(&stream);
        let now = Instant::now();
        s.touched = now;
        self.trim(&mut s, now);
        let position = StreamPosition {
            offset: s.top,
            epoch: s.epoch.clone(),
        };
        let after = query.since.as_ref().map_or(0, |p| p.offset);
        let take = query.limit;
        let publications: Vec<Publication> = if query.reverse {
            s.ring
                .iter()
                .rev()
                .map(|(p, _)| p)
                .filter(|p| p.offset > after)
                .take(take)
                .cloned()
                .collect()
        } else {
            s.ring
                .iter()
                .map(|(p, _)| p)
                .filter(|p| p.offset > after)
                .take(take)
                .cloned()
                .collect()
        };
        Ok(HistoryResult { publications, position })
    }

    async fn ready(&self) -> bool {
        true
    }

    fn prune_idle(&self) -> usize {
        let now = Instant::now();
        let before = self.streams.len();
        self.streams.retain(|name, stream| {
            if self.subscribed.contains(name) {
                return true;
            }
            let mut s = lock(stream);
            self.trim(&mut s, now);
            !s.ring.is_empty() || now.duration_since(s.touched) < self.idle_ttl
        });
        let pruned = before.saturating_sub(self.streams.len());
        if pruned > 0 {
            self.streams.shrink_to_fit();
        }
        pruned
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bus::suite;
    use crate::config::Settings;

    fn bus() -> MemoryBus {
        MemoryBus::new(&Settings::defaults().bus)
    }

    #[tokio::test]
    async fn offsets_are_sequential_and_delivered_in_order() {
        suite::offsets_are_sequential_and_delivered_in_order(&bus()).await;
    }

    #[tokio::test]
    async fn recovery_is_all_or_nothing() {
        let b = bus();
        suite::recovery_is_all_or_nothing(&b, b.history_size).await;
    }

    #[tokio::test]
    async fn idle_channels_are_freed_and_live_ones_kept() {
        let mut settings = Settings::defaults().bus;
        settings.history_ttl_s = 0;
        settings.idle_channel_ttl_s = 0;
        let b = MemoryBus::new(&settings);
        for n in 0..1000 {
            b.history(&format!("gpu:made-up-{n}"), HistoryQuery::default())
                .await
                .unwrap();
        }
        b.subscribe("gpu:kept").await.unwrap();
        b.publish("gpu:kept", Bytes::from_static(b"{}")).await.unwrap();
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(b.prune_idle(), 1000);
        assert_eq!(b.streams.len(), 1);
        assert!(b.streams.contains_key("gpu:kept"));
    }

    #[tokio::test]
    async fn history_reads_forward_and_reverse() {
        suite::history_reads_forward_and_reverse(&bus()).await;
    }
}
