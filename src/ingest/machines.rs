//! A 500.farm `/machines` body read straight into [`VastMachine`]s, without building the JSON tree.
//!
//! The body is `{"offers": [record, ...], ...}` or a bare array of records. Only the fields a
//! machine needs are decoded; every other field, whatever its shape, is skipped without being
//! built. A record's fields become [`Scalar`]s exactly as a `serde_json::Value` holds them, and one
//! set of rules (`Fields::machine`) turns them into a machine, whether they came from the bytes or
//! from a parsed `Value` ([`machine_from_value`]): a number where a string is
//! expected makes the field absent, not the body invalid; a duplicate key keeps its last value. A
//! test holds the two readings to the same result. The body's `timestamp` (when the exporter took
//! the data) is read too, both ways.

use std::borrow::Cow;
use std::fmt;

use serde::Deserializer;
use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};

use serde_json::Value;

use super::SourceError;
use super::vast_machine::{VastMachine, machines_from_chunks, offer_records};
use crate::clock::parse_utc_ms;

/// A `/machines` body, read.
#[derive(Debug)]
pub struct MachinesBody {
    pub machines: Vec<VastMachine>,
    /// The body's `timestamp` (when the exporter took the data), in milliseconds since the epoch;
    /// `None` when it has none that reads as an RFC 3339 UTC time.
    pub taken_at_ms: Option<i64>,
}

/// The records of a `/machines` body, as machines (records without the required fields skipped).
pub fn parse_machines_bytes(body: &[u8]) -> Result<Vec<VastMachine>, SourceError> {
    parse_machines_body(body).map(|read| read.machines)
}

/// [`parse_machines_bytes`], with the body's `timestamp`.
pub fn parse_machines_body(body: &[u8]) -> Result<MachinesBody, SourceError> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let (machines, taken_at_ms) = de
        .deserialize_any(BodyVisitor)
        .map_err(|e| SourceError::Invalid(e.to_string()))?;
    let machines = machines.ok_or_else(|| SourceError::Invalid("no `offers` array".into()))?;
    de.end().map_err(|e| SourceError::Invalid(e.to_string()))?;
    Ok(MachinesBody { machines, taken_at_ms })
}

/// The `timestamp` of a parsed body, as [`MachinesBody::taken_at_ms`] reads it.
pub fn timestamp_ms(body: &Value) -> Option<i64> {
    body.get("timestamp").and_then(Value::as_str).and_then(parse_utc_ms)
}

/// A JSON scalar as `serde_json::Value` would hold it (integers ≥ 0 as `U64`, negative as `I64`,
/// others as `F64`); anything else is `Other`.
#[derive(Debug, Clone, Default, PartialEq)]
enum Scalar<'a> {
    U64(u64),
    I64(i64),
    F64(f64),
    Bool(bool),
    Str(Cow<'a, str>),
    #[default]
    Other,
}

impl<'a> Scalar<'a> {
    /// The scalar a parsed JSON value holds.
    fn of(v: &'a serde_json::Value) -> Self {
        use serde_json::Value;
        match v {
            Value::Number(n) => match (n.as_u64(), n.as_i64(), n.as_f64()) {
                (Some(u), _, _) => Scalar::U64(u),
                (None, Some(i), _) => Scalar::I64(i),
                (None, None, Some(f)) => Scalar::F64(f),
                _ => Scalar::Other,
            },
            Value::Bool(b) => Scalar::Bool(*b),
            Value::String(s) => Scalar::Str(Cow::Borrowed(s)),
            _ => Scalar::Other,
        }
    }

    /// `Value::as_u64`, or a non-negative float truncated (`u64_of` of the Value path).
    fn u64_lenient(&self) -> Option<u64> {
        match self {
            Scalar::U64(n) => Some(*n),
            Scalar::F64(f) if *f >= 0.0 => Some(*f as u64),
            _ => None,
        }
    }
    fn as_f64(&self) -> Option<f64> {
        match self {
            Scalar::U64(n) => Some(*n as f64),
            Scalar::I64(n) => Some(*n as f64),
            Scalar::F64(f) => Some(*f),
            _ => None,
        }
    }
    fn as_i64(&self) -> Option<i64> {
        match self {
            Scalar::U64(n) => i64::try_from(*n).ok(),
            Scalar::I64(n) => Some(*n),
            _ => None,
        }
    }
    fn as_str(&self) -> Option<&str> {
        match self {
            Scalar::Str(s) => Some(s),
            _ => None,
        }
    }
    fn as_bool(&self) -> Option<bool> {
        match self {
            Scalar::Bool(b) => Some(*b),
            _ => None,
        }
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(Scalar::U64(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        // serde_json calls this for negative integers only.
        Ok(if v >= 0 { Scalar::U64(v as u64) } else { Scalar::I64(v) })
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(Scalar::F64(v))
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(Scalar::Bool(v))
    }
    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Borrowed(v)))
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Scalar::Str(Cow::Owned(v)))
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(Scalar::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Scalar::Other)
    }
}

struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

/// The fields of a record the machine is built from.
#[derive(Default)]
struct Fields<'a> {
    machine_id: Scalar<'a>,
    host_id: Scalar<'a>,
    gpu_name: Scalar<'a>,
    num_gpus: Scalar<'a>,
    num_gpus_rented: Scalar<'a>,
    dph_base: Scalar<'a>,
    verified: Scalar<'a>,
    verification: Scalar<'a>,
    hosting_type: Scalar<'a>,
    geolocation: Scalar<'a>,
    reliability2: Scalar<'a>,
    reliability: Scalar<'a>,
    gpu_ram: Scalar<'a>,
}

/// Parse a `/machines` or `/offers` body into machines.
pub fn parse_machines(body: &Value, chunks: bool) -> Result<Vec<VastMachine>, SourceError> {
    let records = offer_records(body)?;
    if chunks {
        return Ok(machines_from_chunks(records));
    }
    Ok(records.iter().filter_map(machine_from_value).collect())
}

/// The machine of a record of a parsed body (`None` when it lacks a required field).
pub fn machine_from_value(record: &Value) -> Option<VastMachine> {
    let field = |name: &str| record.get(name).map(Scalar::of).unwrap_or_default();
    Fields {
        machine_id: field("machine_id"),
        host_id: field("host_id"),
        gpu_name: field("gpu_name"),
        num_gpus: field("num_gpus"),
        num_gpus_rented: field("num_gpus_rented"),
        dph_base: field("dph_base"),
        verified: field("verified"),
        verification: field("verification"),
        hosting_type: field("hosting_type"),
        geolocation: field("geolocation"),
        reliability2: field("reliability2"),
        reliability: field("reliability"),
        gpu_ram: field("gpu_ram"),
    }
    .machine()
}

impl Fields<'_> {
    fn machine(&self) -> Option<VastMachine> {
        let num_gpus = self.num_gpus.u64_lenient()? as u32;
        Some(VastMachine {
            machine_id: self.machine_id.u64_lenient()?,
            host_id: self.host_id.u64_lenient(),
            gpu_name: self.gpu_name.as_str()?.to_owned(),
            num_gpus,
            num_gpus_rented: (self.num_gpus_rented.u64_lenient()? as u32).min(num_gpus),
            dph_base: self.dph_base.as_f64()?,
            verified: match self.verified.as_bool() {
                Some(v) => v,
                None => self.verification.as_str() == Some("verified"),
            },
            datacenter: self.hosting_type.as_i64().is_some_and(|h| h > 0),
            geolocation: self.geolocation.as_str().map(str::to_owned),
            reliability: self.reliability2.as_f64().or_else(|| self.reliability.as_f64()),
            gpu_ram_mb: self.gpu_ram.as_f64(),
        })
    }
}

/// A scalar where a record or an array of records is expected: `None` (nothing to take from it).
macro_rules! scalars_are_none {
    () => {
        fn visit_u64<E>(self, _: u64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_bool<E>(self, _: bool) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_str<E>(self, _: &str) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
    };
}

/// One record: `Some(machine)`, or `None` for a record that is not an object or lacks a field.
struct RecordSeed;

impl<'de> DeserializeSeed<'de> for RecordSeed {
    type Value = Option<VastMachine>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(RecordVisitor)
    }
}

struct RecordVisitor;

impl<'de> Visitor<'de> for RecordVisitor {
    type Value = Option<VastMachine>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a machine record")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut f = Fields::default();
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            let slot = match key.as_ref() {
                "machine_id" => &mut f.machine_id,
                "host_id" => &mut f.host_id,
                "gpu_name" => &mut f.gpu_name,
                "num_gpus" => &mut f.num_gpus,
                "num_gpus_rented" => &mut f.num_gpus_rented,
                "dph_base" => &mut f.dph_base,
                "verified" => &mut f.verified,
                "verification" => &mut f.verification,
                "hosting_type" => &mut f.hosting_type,
                "geolocation" => &mut f.geolocation,
                "reliability2" => &mut f.reliability2,
                "reliability" => &mut f.reliability,
                "gpu_ram" => &mut f.gpu_ram,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                    continue;
                }
            };
            *slot = map.next_value_seed(ScalarSeed)?;
        }
        Ok(f.machine())
    }
    // Not an object: not a machine (the Value path indexes it and finds nothing).
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        ScalarVisitor.visit_seq(seq).map(|_| None)
    }
    scalars_are_none!();
}

/// An array of records.
struct RecordsSeed;

impl<'de> DeserializeSeed<'de> for RecordsSeed {
    type Value = Option<Vec<VastMachine>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_any(RecordsVisitor)
    }
}

struct RecordsVisitor;

impl<'de> Visitor<'de> for RecordsVisitor {
    /// `None` when it is not an array.
    type Value = Option<Vec<VastMachine>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of machine records")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(1024));
        while let Some(record) = seq.next_element_seed(RecordSeed)? {
            out.extend(record);
        }
        Ok(Some(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        ScalarVisitor.visit_map(map).map(|_| None)
    }
    scalars_are_none!();
}

/// The body: a bare array of records, or an object whose `offers` (the last one) is that array;
/// with the object's `timestamp` (the last one), read as [`timestamp_ms`] reads it.
struct BodyVisitor;

impl<'de> Visitor<'de> for BodyVisitor {
    type Value = (Option<Vec<VastMachine>>, Option<i64>);
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an object with an `offers` array, or an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
        RecordsVisitor.visit_seq(seq).map(|machines| (machines, None))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let (mut offers, mut taken_at_ms) = (None, None);
        while let Some(key) = map.next_key::<Cow<'de, str>>()? {
            match key.as_ref() {
                "offers" => offers = map.next_value_seed(RecordsSeed)?,
                "timestamp" => taken_at_ms = map.next_value_seed(ScalarSeed)?.as_str().and_then(parse_utc_ms),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok((offers, taken_at_ms))
    }
    // A scalar body: the deserializer reports "invalid type: …, expected <expecting>".
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn both(body: &Value) -> (Result<Vec<VastMachine>, String>, Result<Vec<VastMachine>, String>) {
        let fast = parse_machines_bytes(body.to_string().as_bytes()).map_err(|e| e.to_string());
        let tree = parse_machines(body, false).map_err(|e| e.to_string());
        (fast, tree)
    }

    #[test]
    fn the_same_machines_as_the_json_tree_path_on_odd_records() {
        let body = json!({"url": "/machines", "count": 7, "offers": [
            {"machine_id": 1, "host_id": 9, "gpu_name": "RTX 4090", "num_gpus": 4, "num_gpus_rented": 9,
             "dph_base": 1.2, "verification": "verified", "hosting_type": 1, "geolocation": "Texas, US",
             "reliability2": 0.99, "gpu_ram": 24576, "chunks": [{"a": [1, {"b": null}]}], "note": "x"},
            {"machine_id": 2.7, "host_id": -3, "gpu_name": "A100", "num_gpus": 8.0, "num_gpus_rented": 0,
             "dph_base": 8, "verified": false, "verification": "verified", "hosting_type": 1.0,
             "reliability": 0.5, "reliability2": null},
            {"machine_id": "3", "gpu_name": "RTX 3090", "num_gpus": 1, "num_gpus_rented": 0, "dph_base": 0.2},
            {"machine_id": 4, "gpu_name": 4090, "num_gpus": 1, "num_gpus_rented": 0, "dph_base": 0.2},
            {"machine_id": 5, "gpu_name": "H100 SXM", "num_gpus": 2, "num_gpus_rented": 1, "dph_base": [4]},
            {"machine_id": 6, "gpu_name": "L40S", "num_gpus": 2, "num_gpus_rented": 1, "dph_base": 1,
             "geolocation": {"city": "x"}, "gpu_ram": "48GB", "verified": "yes"},
            {"machine_id": 7, "machine_id": 8, "gpu_name": "RTX 4090", "num_gpus": 1, "num_gpus_rented": 1,
             "dph_base": 0.4, "hosting_type": -1},
            [1, 2], 3, "s", null
        ]});
        let (fast, tree) = both(&body);
        assert_eq!(fast, tree);
        let machines = fast.unwrap();
        assert_eq!(
            machines.iter().map(|m| m.machine_id).collect::<Vec<_>>(),
            vec![1, 2, 6, 8]
        );
        // Bare arrays, and bodies without machines.
        let (fast, tree) = both(&body["offers"]);
        assert_eq!(fast, tree);
        for bad in [
            json!({"url": "/machines"}),
            json!({"offers": {"a": 1}}),
            json!("x"),
            json!(3),
        ] {
            let (fast, tree) = both(&bad);
            assert!(fast.is_err() && tree.is_err(), "{bad}: {fast:?} / {tree:?}");
        }
        assert!(parse_machines_bytes(b"{\"offers\": [").is_err(), "truncated");
        // A duplicate key keeps its last value, as in the JSON tree.
        let dup =
            br#"[{"machine_id":7,"gpu_name":"A100","machine_id":8,"num_gpus":1,"num_gpus_rented":0,"dph_base":1}]"#;
        let tree: Value = serde_json::from_slice(dup).unwrap();
        assert_eq!(
            parse_machines_bytes(dup).unwrap(),
            parse_machines(&tree, false).unwrap()
        );
        assert_eq!(parse_machines_bytes(dup).unwrap()[0].machine_id, 8);
        assert!(parse_machines_bytes(b"[] x").is_err(), "trailing garbage");
    }

    #[test]
    fn the_body_timestamp_reads_the_same_both_ways() {
        let body = json!({"url": "/machines", "timestamp": "2025-12-07T20:30:16.932863812Z", "offers": []});
        let read = parse_machines_body(body.to_string().as_bytes()).unwrap();
        assert_eq!(read.taken_at_ms, Some(1_765_139_416_932));
        assert_eq!(timestamp_ms(&body), read.taken_at_ms);
        for odd in [
            json!({"timestamp": 1_765_139_416, "offers": []}),
            json!({"timestamp": "2025-12-07T20:30:16+01:00", "offers": []}),
            json!({"offers": []}),
            json!([]),
        ] {
            let read = parse_machines_body(odd.to_string().as_bytes()).unwrap();
            assert_eq!(read.taken_at_ms, None, "{odd}");
            assert_eq!(timestamp_ms(&odd), None, "{odd}");
        }
    }

    fn scalar() -> impl Strategy<Value = Value> {
        prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<u32>().prop_map(Value::from),
            (-1000i64..0).prop_map(Value::from),
            (-10.0f64..1e6).prop_map(Value::from),
            "[a-z ]{0,6}".prop_map(Value::from),
            Just(json!([1])),
            Just(json!({"k": "v"})),
            Just(Value::from("verified")),
            Just(Value::from("RTX 4090")),
        ]
    }

    proptest! {
        /// Any record made of the fields read, with values of any shape, gives the same machine.
        #[test]
        fn any_record_gives_the_same_machine_both_ways(
            fields in proptest::collection::vec(
                (prop::sample::select(vec!["machine_id", "host_id", "gpu_name", "num_gpus", "num_gpus_rented",
                    "dph_base", "verified", "verification", "hosting_type", "geolocation", "reliability2",
                    "reliability", "gpu_ram", "other"]), scalar()), 0..16)
        ) {
            let record: serde_json::Map<String, Value> =
                fields.into_iter().map(|(k, v)| (k.to_owned(), v)).collect();
            let body = json!({"offers": [Value::Object(record)]});
            let (fast, tree) = both(&body);
            prop_assert_eq!(fast, tree);
        }
    }
}
