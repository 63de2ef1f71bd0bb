//! The recent tail of channels this node delivers, kept from one Redis history read so that many
//! subscribes at once (a reconnect storm: every client of a dead node recovering the same
//! channels) cost one Redis read per channel and position, not one per subscriber.
//!
//! An entry holds what one read returned: the channel's epoch and top offset, and every
//! publication after `from` up to the top. It answers a forward read (or a position-only read)
//! only while it is the truth as far as this node can tell: the node has delivered exactly up to
//! the entry's top in its epoch, and the read is less than [`MAX_AGE`] old. Why that is enough:
//! the hub adds a subscriber before it reads the channel's position, and the bus moves a
//! channel's delivered offset before it hands the publication to subscribers. So a publication
//! after the entry's top either reaches the new subscriber live (it was added first), or it was
//! delivered before the check, and then the delivered offset no longer matches and Redis is read.

use std::time::{Duration, Instant};

use dashmap::DashMap;

use super::{HistoryQuery, HistoryResult, Publication, StreamPosition};

/// An entry answers reads for this long after the Redis read that filled it.
pub const MAX_AGE: Duration = Duration::from_secs(1);

/// One channel's tail as read from Redis.
struct Tail {
    epoch: String,
    /// Publications after this offset are all held (up to `top`).
    from: u64,
    top: u64,
    publications: Vec<Publication>,
    read_at: Instant,
}

#[derive(Default)]
pub struct TailCache {
    tails: DashMap<String, Tail>,
}

impl TailCache {
    /// The answer to `query` from the tail of `channel`, when this node last delivered `offset`
    /// in `epoch` and the tail is current; `None` means read Redis.
    pub fn answer(&self, channel: &str, query: &HistoryQuery, epoch: &str, offset: u64) -> Option<HistoryResult> {
        if query.reverse {
            return None;
        }
        let tail = self.tails.get(channel)?;
        if tail.epoch != epoch || tail.top != offset || tail.read_at.elapsed() >= MAX_AGE {
            return None;
        }
        let publications = match &query.since {
            // Position only (a subscribe without recovery).
            None if query.limit == 0 => Vec::new(),
            None => return None,
            Some(since) if since.offset < tail.from => return None,
            Some(since) => tail
                .publications
                .iter()
                .filter(|p| p.offset > since.offset)
                .take(query.limit)
                .cloned()
                .collect(),
        };
        Some(HistoryResult {
            publications,
            position: StreamPosition {
                offset: tail.top,
                epoch: tail.epoch.clone(),
            },
        })
    }

    /// Keep what a Redis read of `channel` returned when it holds everything after the query's
    /// offset (position-only reads hold nothing after the top). A wider or newer read replaces
    /// the kept one.
    pub fn store(&self, channel: &str, query: &HistoryQuery, result: &HistoryResult) {
        let top = result.position.offset;
        let from = match &query.since {
            _ if query.reverse => return,
            None if query.limit == 0 => top,
            None => return,
            Some(since) => since.offset,
        };
        let publications = &result.publications;
        let complete = from <= top
            && publications.len() as u64 == top - from
            && publications.first().is_none_or(|p| p.offset == from + 1);
        if !complete {
            return;
        }
        let fresh = Tail {
            epoch: result.position.epoch.clone(),
            from,
            top,
            publications: publications.clone(),
            read_at: Instant::now(),
        };
        match self.tails.entry(channel.to_owned()) {
            dashmap::Entry::Occupied(mut kept) => {
                let k = kept.get();
                let wider = k.epoch == fresh.epoch && k.top == top && from < k.from;
                if wider || k.epoch != fresh.epoch || k.top != top || k.read_at.elapsed() >= MAX_AGE {
                    kept.insert(fresh);
                }
            }
            dashmap::Entry::Vacant(slot) => {
                slot.insert(fresh);
            }
        }
    }

    /// The node no longer delivers `channel`.
    pub fn forget(&self, channel: &str) {
        self.tails.remove(channel);
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;

    use super::*;

    fn read(since: Option<u64>, limit: usize) -> HistoryQuery {
        HistoryQuery {
            since: since.map(|offset| StreamPosition {
                offset,
                epoch: "e".into(),
            }),
            limit,
            reverse: false,
        }
    }

    fn result(top: u64, offsets: std::ops::RangeInclusive<u64>) -> HistoryResult {
        HistoryResult {
            publications: offsets
                .map(|offset| Publication {
                    offset,
                    data: Bytes::from(offset.to_string()),
                })
                .collect(),
            position: StreamPosition {
                offset: top,
                epoch: "e".into(),
            },
        }
    }

    fn offsets(r: &HistoryResult) -> Vec<u64> {
        r.publications.iter().map(|p| p.offset).collect()
    }

    #[test]
    fn answers_only_what_it_holds_while_the_node_is_at_its_top() {
        let cache = TailCache::default();
        cache.store("c", &read(Some(5), 11), &result(8, 6..=8));
        let r = cache.answer("c", &read(Some(6), 11), "e", 8).expect("held");
        assert_eq!((offsets(&r), r.position.offset), (vec![7, 8], 8));
        // The limit is applied as Redis would.
        assert_eq!(
            offsets(&cache.answer("c", &read(Some(5), 2), "e", 8).unwrap()),
            vec![6, 7]
        );
        // Up to date, and position only.
        assert!(
            cache
                .answer("c", &read(Some(8), 11), "e", 8)
                .unwrap()
                .publications
                .is_empty()
        );
        assert_eq!(cache.answer("c", &read(None, 0), "e", 8).unwrap().position.offset, 8);
        // Older than what it holds, delivered past its top, another epoch, reverse: Redis.
        assert!(cache.answer("c", &read(Some(4), 11), "e", 8).is_none());
        assert!(cache.answer("c", &read(Some(6), 11), "e", 9).is_none());
        assert!(cache.answer("c", &read(Some(6), 11), "f", 8).is_none());
        let reverse = HistoryQuery {
            reverse: true,
            ..read(Some(6), 11)
        };
        assert!(cache.answer("c", &reverse, "e", 8).is_none());
        assert!(cache.answer("other", &read(Some(6), 11), "e", 8).is_none());
    }

    #[test]
    fn keeps_only_complete_reads_and_prefers_wider_and_newer_ones() {
        let cache = TailCache::default();
        // Cut short by the limit (6..=7 of 6..=8): not kept.
        cache.store("c", &read(Some(5), 2), &result(8, 6..=7));
        assert!(cache.answer("c", &read(Some(7), 11), "e", 8).is_none());
        cache.store("c", &read(Some(6), 11), &result(8, 7..=8));
        cache.store("c", &read(Some(7), 11), &result(8, 8..=8));
        // The narrower read did not replace the wider one.
        assert_eq!(
            offsets(&cache.answer("c", &read(Some(6), 11), "e", 8).unwrap()),
            vec![7, 8]
        );
        cache.store("c", &read(Some(7), 11), &result(9, 8..=9));
        assert!(cache.answer("c", &read(Some(6), 11), "e", 8).is_none());
        assert_eq!(
            offsets(&cache.answer("c", &read(Some(7), 11), "e", 9).unwrap()),
            vec![8, 9]
        );
        cache.forget("c");
        assert!(cache.answer("c", &read(Some(7), 11), "e", 9).is_none());
    }
}
