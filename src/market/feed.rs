//! A channel's feed: its sequence number and checksum, and the payloads it publishes.
//!
//! The subscribe reply's `data` is a snapshot `{type:"snapshot", channel, seq, checksum, items, ...}`;
//! each publication a delta `{type:"delta", channel, seq, prev_seq, changes:{added, changed, removed},
//! checksum, ...}`. Applying a delta's changes to the items of the snapshot (or of the previous delta)
//! gives the items whose checksum the delta carries.

use std::collections::BTreeMap;

use rustc_hash::FxHashMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::checksum::item_crc;
pub use super::checksum::{apply_delta, checksum_of};

/// An added or changed item: its key, its JSON text and the CRC of the two, made once however
/// many channels carry the item (an offer is in `offers:<model>` and `offers:all`). The JSON
/// tree it is made from is dropped at once: a first poll of 100k offers holds 100k texts, not
/// 200k trees.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub key: String,
    json: std::sync::Arc<str>,
    crc: u32,
}

impl Item {
    pub fn new(key: String, value: &impl Serialize) -> Self {
        let value = to_value(value);
        let crc = item_crc(&key, &value);
        Self {
            key,
            json: value.to_string().into(),
            crc,
        }
    }
}

/// What changed between two states of a channel's items.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Changes {
    pub added: Vec<Item>,
    pub changed: Vec<Item>,
    pub removed: Vec<String>,
}

impl Changes {
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }

    /// The diff of two typed states, each item turned into JSON only when it changed.
    pub fn between<T: PartialEq + Serialize>(old: &BTreeMap<String, T>, new: &BTreeMap<String, T>) -> Self {
        let mut changes = Changes::default();
        for (key, value) in new {
            match old.get(key) {
                None => changes.added.push(Item::new(key.clone(), value)),
                Some(prev) if prev != value => changes.changed.push(Item::new(key.clone(), value)),
                Some(_) => {}
            }
        }
        for key in old.keys() {
            if !new.contains_key(key) {
                changes.removed.push(key.clone());
            }
        }
        changes
    }

    /// `{"added":{…},"changed":{…},"removed":[…]}`, written from the items' texts.
    fn write_json(&self, out: &mut Vec<u8>) {
        let items = |out: &mut Vec<u8>, items: &[Item]| {
            out.push(b'{');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_str(out, &item.key);
                out.push(b':');
                out.extend_from_slice(item.json.as_bytes());
            }
            out.push(b'}');
        };
        out.extend_from_slice(b"{\"added\":");
        items(out, &self.added);
        out.extend_from_slice(b",\"changed\":");
        items(out, &self.changed);
        out.extend_from_slice(b",\"removed\":[");
        for (i, key) in self.removed.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, key);
        }
        out.extend_from_slice(b"]}");
    }
}

/// A JSON string.
fn write_str(out: &mut Vec<u8>, s: &str) {
    // Writing a `str` into a `Vec` cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// The JSON text of the object `head` with one more field, `key`, whose value `write_value`
/// writes as text (a payload's large part, written without building a JSON tree).
pub fn object_with(head: Map<String, Value>, key: &str, write_value: impl FnOnce(&mut Vec<u8>)) -> String {
    let mut text = Value::Object(head).to_string().into_bytes();
    // `{<head>}` → `{<head>,"<key>":<value>}`
    text.pop();
    if text.len() > 1 {
        text.push(b',');
    }
    write_str(&mut text, key);
    text.push(b':');
    write_value(&mut text);
    text.push(b'}');
    // Both parts are UTF-8: the head from serde_json, the value from its writer.
    String::from_utf8(text).unwrap_or_default()
}

pub fn to_value<T: Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

/// Sequence and checksum bookkeeping of one channel.
#[derive(Debug, Default)]
pub struct Feed {
    pub channel: String,
    seq: u64,
    checksum: u32,
    crcs: FxHashMap<String, u32>,
}

impl Feed {
    pub fn new(channel: impl Into<String>) -> Self {
        Self {
            channel: channel.into(),
            ..Default::default()
        }
    }

    /// A feed whose first delta has `seq` = `seq + 1`.
    pub fn starting_at(channel: impl Into<String>, seq: u64) -> Self {
        Self {
            channel: channel.into(),
            seq,
            ..Default::default()
        }
    }

    pub fn seq(&self) -> u64 {
        self.seq
    }

    pub fn checksum(&self) -> u32 {
        self.checksum
    }

    /// Apply `changes`; returns the delta payload as JSON text, or `None` when nothing changed
    /// (nothing is published then). `header` fields (e.g. `source`, `ts`) are added to the payload.
    pub fn apply(&mut self, changes: Changes, header: &Map<String, Value>) -> Option<String> {
        if changes.is_empty() {
            return None;
        }
        for Item { key, crc, .. } in changes.added.iter().chain(&changes.changed) {
            let crc = *crc;
            match self.crcs.get_mut(key.as_str()) {
                Some(old) => {
                    self.checksum = self.checksum.wrapping_sub(*old);
                    *old = crc;
                }
                None => {
                    self.crcs.insert(key.clone(), crc);
                }
            }
            self.checksum = self.checksum.wrapping_add(crc);
        }
        for key in &changes.removed {
            if let Some(old) = self.crcs.remove(key) {
                self.checksum = self.checksum.wrapping_sub(old);
            }
        }
        let prev = self.seq;
        self.seq += 1;
        let mut head = Map::new();
        head.insert("type".into(), "delta".into());
        head.insert("channel".into(), self.channel.clone().into());
        head.extend(header.clone());
        head.insert("seq".into(), self.seq.into());
        head.insert("prev_seq".into(), prev.into());
        head.insert("checksum".into(), self.checksum.into());
        Some(object_with(head, "changes", |out| changes.write_json(out)))
    }

    /// The snapshot payload of `items` (which must be the state the feed has seen).
    pub fn snapshot(&self, items: Map<String, Value>, header: &Map<String, Value>) -> Value {
        let mut payload = Map::new();
        payload.insert("type".into(), "snapshot".into());
        payload.insert("channel".into(), self.channel.clone().into());
        payload.extend(header.clone());
        payload.insert("seq".into(), self.seq.into());
        payload.insert("checksum".into(), self.checksum.into());
        payload.insert("items".into(), Value::Object(items));
        Value::Object(payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn state() -> impl Strategy<Value = BTreeMap<String, (u8, i32)>> {
        proptest::collection::btree_map("[a-e]{1,2}", (any::<u8>(), -5i32..5), 0..12)
    }

    proptest! {
        /// Applying any sequence of deltas to a snapshot gives the next state and its checksum.
        #[test]
        fn deltas_replay_to_the_same_state_and_checksum(states in proptest::collection::vec(state(), 1..8)) {
            let mut feed = Feed::new("t:x");
            let header = Map::new();
            let mut prev: BTreeMap<String, (u8, i32)> = BTreeMap::new();
            // The client starts from the snapshot of the first state.
            let first = Changes::between(&prev, &states[0]);
            feed.apply(first, &header);
            prev = states[0].clone();
            let items: Map<String, Value> = prev.iter().map(|(k, v)| (k.clone(), to_value(v))).collect();
            let snapshot = feed.snapshot(items, &header);
            let mut client: Map<String, Value> = snapshot["items"].as_object().unwrap().clone();
            prop_assert_eq!(checksum_of(&client), snapshot["checksum"].as_u64().unwrap() as u32);
            let mut client_seq = snapshot["seq"].as_u64().unwrap();
            for next in &states[1..] {
                let changes = Changes::between(&prev, next);
                match feed.apply(changes, &header) {
                    None => prop_assert_eq!(&prev, next),
                    Some(delta) => {
                        // JSON text, as a client receives it.
                        let delta: Value = serde_json::from_str(&delta).unwrap();
                        prop_assert_eq!(delta["prev_seq"].as_u64().unwrap(), client_seq);
                        client_seq = delta["seq"].as_u64().unwrap();
                        apply_delta(&mut client, &delta["changes"]);
                        prop_assert_eq!(checksum_of(&client), delta["checksum"].as_u64().unwrap() as u32);
                    }
                }
                prev = next.clone();
                let expected: Map<String, Value> = prev.iter().map(|(k, v)| (k.clone(), to_value(v))).collect();
                prop_assert_eq!(&client, &expected);
            }
        }
    }
}
