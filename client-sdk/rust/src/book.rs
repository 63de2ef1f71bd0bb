//! A market channel's items kept exact from its snapshot and deltas, every checksum verified.
//!
//! The subscribe reply's `data` of a market channel is a snapshot `{type:"snapshot", seq, checksum,
//! items}`; each publication a delta `{type:"delta", seq, prev_seq, changes:{added, changed,
//! removed}, checksum}` (`market:summary.1m` publishes snapshots). [`Book`] applies both: a delta
//! whose `seq` the book already has is skipped, one whose `prev_seq` is not the book's `seq` (a
//! gap) or whose checksum differs from the one recomputed here is refused and asks for a resync (a
//! fresh snapshot). Nothing here does I/O: the client's `MarketBook` drives it from a
//! subscription, and anyone can drive it from their own transport.

use serde_json::{Map, Value};

use crate::checksum::{checksum_of, item_crc};

/// Why a book needs a fresh snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resync {
    /// A delta's `prev_seq` is not the book's `seq`: publications were missed.
    Gap { seq: u64, prev_seq: u64 },
    /// The items after applying a payload do not have the payload's checksum.
    Checksum { seq: u64, expected: u32, actual: u32 },
    /// A delta arrived before any snapshot.
    NoSnapshot,
}

/// What applying a payload did.
#[derive(Debug, Clone, PartialEq)]
pub enum Applied {
    /// A snapshot replaced the items.
    Snapshot { seq: u64 },
    /// A delta changed these keys.
    Delta {
        seq: u64,
        added: Vec<String>,
        changed: Vec<String>,
        removed: Vec<String>,
    },
    /// A delta the book already has (`seq` ≤ the book's).
    Skipped { seq: u64 },
    /// Refused: the book needs a fresh snapshot; its items are unchanged.
    Resync(Resync),
    /// Not a snapshot or a delta.
    Ignored,
}

/// A channel's items, `seq` and checksum.
#[derive(Debug, Default, Clone)]
pub struct Book {
    items: Map<String, Value>,
    seq: u64,
    checksum: u32,
    live: bool,
}

impl Book {
    pub fn new() -> Self {
        Self::default()
    }

    /// The items, by key (model slug, segment, offer key or source name, by channel).
    pub fn items(&self) -> &Map<String, Value> {
        &self.items
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.items.get(key)
    }

    /// The seq of the last snapshot or delta applied.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The checksum of the items, as verified against the hub's.
    pub fn checksum(&self) -> u32 {
        self.checksum
    }

    /// Whether a snapshot was applied (and no resync is pending since).
    pub fn is_live(&self) -> bool {
        self.live
    }

    /// Forget the items' position (after a resync was asked): the next snapshot is taken whole.
    pub fn invalidate(&mut self) {
        self.live = false;
    }

    /// Apply a snapshot or a delta payload.
    pub fn apply(&mut self, payload: &Value) -> Applied {
        match payload.get("type").and_then(Value::as_str) {
            Some("snapshot") => self.apply_snapshot(payload),
            Some("delta") => self.apply_delta(payload),
            _ => Applied::Ignored,
        }
    }

    /// Replace the items with a snapshot's; refused when its checksum does not match its items.
    pub fn apply_snapshot(&mut self, snapshot: &Value) -> Applied {
        let Some(items) = snapshot.get("items").and_then(Value::as_object) else {
            return Applied::Ignored;
        };
        let seq = snapshot.get("seq").and_then(Value::as_u64).unwrap_or(0);
        let actual = checksum_of(items);
        if let Some(expected) = snapshot.get("checksum").and_then(Value::as_u64)
            && expected as u32 != actual
        {
            self.live = false;
            return Applied::Resync(Resync::Checksum {
                seq,
                expected: expected as u32,
                actual,
            });
        }
        self.items = items.clone();
        self.seq = seq;
        self.checksum = actual;
        self.live = true;
        Applied::Snapshot { seq }
    }

    fn apply_delta(&mut self, delta: &Value) -> Applied {
        if !self.live {
            return Applied::Resync(Resync::NoSnapshot);
        }
        let seq = delta.get("seq").and_then(Value::as_u64).unwrap_or(0);
        if seq <= self.seq {
            return Applied::Skipped { seq };
        }
        let prev_seq = delta.get("prev_seq").and_then(Value::as_u64).unwrap_or(0);
        if prev_seq != self.seq {
            self.live = false;
            return Applied::Resync(Resync::Gap {
                seq: self.seq,
                prev_seq,
            });
        }
        let changes = delta.get("changes").unwrap_or(&Value::Null);
        let upserts = |section: &str| -> Vec<(&String, &Value)> {
            changes
                .get(section)
                .and_then(Value::as_object)
                .map(|o| o.iter().collect())
                .unwrap_or_default()
        };
        let (added, changed) = (upserts("added"), upserts("changed"));
        let removed: Vec<&str> = changes
            .get("removed")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        // The checksum after the delta, computed in O(changes) before anything is committed.
        let mut sum = self.checksum;
        for (key, value) in added.iter().chain(&changed) {
            if let Some(old) = self.items.get(key.as_str()) {
                sum = sum.wrapping_sub(item_crc(key, old));
            }
            sum = sum.wrapping_add(item_crc(key, value));
        }
        for key in &removed {
            if let Some(old) = self.items.get(*key) {
                sum = sum.wrapping_sub(item_crc(key, old));
            }
        }
        let expected = delta.get("checksum").and_then(Value::as_u64).map(|c| c as u32);
        if let Some(expected) = expected
            && expected != sum
        {
            self.live = false;
            return Applied::Resync(Resync::Checksum {
                seq,
                expected,
                actual: sum,
            });
        }
        for (key, value) in added.iter().chain(&changed) {
            self.items.insert((*key).clone(), (*value).clone());
        }
        for key in &removed {
            self.items.remove(*key);
        }
        self.checksum = sum;
        self.seq = seq;
        Applied::Delta {
            seq,
            added: added.into_iter().map(|(k, _)| k.clone()).collect(),
            changed: changed.into_iter().map(|(k, _)| k.clone()).collect(),
            removed: removed.into_iter().map(str::to_owned).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn snapshot(seq: u64, items: Value) -> Value {
        let sum = checksum_of(items.as_object().unwrap());
        json!({"type": "snapshot", "seq": seq, "checksum": sum, "items": items})
    }

    fn delta(book_after: &Value, seq: u64, prev_seq: u64, changes: Value) -> Value {
        let sum = checksum_of(book_after.as_object().unwrap());
        json!({"type": "delta", "seq": seq, "prev_seq": prev_seq, "checksum": sum, "changes": changes})
    }

    #[test]
    fn applies_snapshot_then_deltas_and_skips_old_ones() {
        let mut book = Book::new();
        let snap = snapshot(5, json!({"rtx-4090": {"median": 0.38}, "a100": {"median": 0.9}}));
        assert_eq!(book.apply(&snap), Applied::Snapshot { seq: 5 });
        let after = json!({"rtx-4090": {"median": 0.4}, "h100": {"median": 2}});
        let d = delta(
            &after,
            6,
            5,
            json!({"added": {"h100": {"median": 2}}, "changed": {"rtx-4090": {"median": 0.4}}, "removed": ["a100"]}),
        );
        let Applied::Delta {
            seq,
            added,
            changed,
            removed,
        } = book.apply(&d)
        else {
            panic!("not applied")
        };
        assert_eq!(
            (seq, added, changed, removed),
            (6, vec!["h100".into()], vec!["rtx-4090".into()], vec!["a100".into()])
        );
        assert_eq!(Value::Object(book.items().clone()), after);
        assert_eq!(book.apply(&d), Applied::Skipped { seq: 6 });
        assert_eq!(book.checksum(), checksum_of(after.as_object().unwrap()));
    }

    #[test]
    fn gap_and_bad_checksum_ask_for_a_resync_and_change_nothing() {
        let mut book = Book::new();
        assert_eq!(
            book.apply(&json!({"type": "delta", "seq": 1, "prev_seq": 0})),
            Applied::Resync(Resync::NoSnapshot)
        );
        book.apply(&snapshot(5, json!({"a": 1})));
        let gap = json!({"type": "delta", "seq": 8, "prev_seq": 7, "changes": {}, "checksum": 0});
        assert_eq!(book.apply(&gap), Applied::Resync(Resync::Gap { seq: 5, prev_seq: 7 }));
        assert!(!book.is_live());
        book.apply(&snapshot(5, json!({"a": 1})));
        let wrong = json!({"type": "delta", "seq": 6, "prev_seq": 5, "changes": {"changed": {"a": 2}}, "checksum": 1});
        assert!(matches!(
            book.apply(&wrong),
            Applied::Resync(Resync::Checksum {
                seq: 6,
                expected: 1,
                ..
            })
        ));
        assert_eq!(book.get("a"), Some(&json!(1)));
        assert_eq!(book.seq(), 5);
        let bad_snapshot = json!({"type": "snapshot", "seq": 9, "checksum": 7, "items": {"a": 1}});
        assert!(matches!(
            book.apply(&bad_snapshot),
            Applied::Resync(Resync::Checksum { .. })
        ));
    }
}
