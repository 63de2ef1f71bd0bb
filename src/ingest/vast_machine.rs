//! The Vast.ai machine record: one machine as 500.farm's `/machines` lists it, or as rebuilt from
//! the offer chunks of Vast.ai's search API (and 500.farm's `/offers`), and the normalised offer it
//! makes. The `/machines` reader ([`super::machines`]) and both adapters ([`super::farm500`],
//! [`super::vast`]) build on it; it uses neither.
//!
//! The search returns offers as *chunks* of machines (a 4-GPU machine may be listed whole and as
//! two 2-GPU chunks). Market occupancy is per machine: the whole-machine chunk (`gpu_frac == 1`)
//! gives GPUs and price, and the GPUs not in any rentable chunk are rented, as the 500.farm
//! exporter computes `/machines`. `rented` in the API is about the caller's own rentals and
//! `verified` is null: `verification == "verified"` is what counts.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::Value;

use super::{SourceError, location};
use crate::market::models::canonical_model;
use crate::market::{Offer, intern};

/// One Vast.ai machine, as 500.farm's `/machines` lists it (or as rebuilt from chunks).
#[derive(Debug, Clone, PartialEq)]
pub struct VastMachine {
    pub machine_id: u64,
    pub host_id: Option<u64>,
    pub gpu_name: String,
    pub num_gpus: u32,
    pub num_gpus_rented: u32,
    /// USD per hour for the whole machine, GPUs only (no storage or bandwidth).
    pub dph_base: f64,
    pub verified: bool,
    pub datacenter: bool,
    pub geolocation: Option<String>,
    pub reliability: Option<f64>,
    pub gpu_ram_mb: Option<f64>,
}

fn u64_of(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

fn verified_of(record: &Value) -> bool {
    match record.get("verified").and_then(Value::as_bool) {
        Some(v) => v,
        None => record.get("verification").and_then(Value::as_str) == Some("verified"),
    }
}

impl VastMachine {
    /// The normalised offer of this machine.
    pub fn to_offer(&self, source: &'static str, observed_at_ms: i64) -> Option<Offer> {
        if self.num_gpus == 0 || !self.dph_base.is_finite() || self.dph_base < 0.0 {
            return None;
        }
        let model = canonical_model(&self.gpu_name)?;
        let (region, country) = match self.geolocation.as_deref().map(location) {
            Some((region, country)) => (Some(region), country),
            None => (None, None),
        };
        Some(Offer {
            source,
            marketplace: "vast",
            offer_id: numbered("m", self.machine_id),
            machine_id: Some(numbered("", self.machine_id)),
            host_id: self.host_id.map(|h| numbered("", h)),
            model,
            model_name: intern(&self.gpu_name),
            num_gpus: self.num_gpus,
            gpus_rented: self.num_gpus_rented,
            price_per_gpu_hour_usd: self.dph_base / self.num_gpus as f64,
            reliability: self.reliability,
            verified: self.verified,
            datacenter: self.datacenter,
            country,
            region,
            vram_gb: self.gpu_ram_mb.map(|mb| (mb / 1024.0).ceil()),
            observed_at_ms,
        })
    }
}

/// The normalised offers of these machines (those that make one).
pub fn offers_of(machines: &[VastMachine], source: &'static str, observed_at_ms: i64) -> Vec<Offer> {
    let mut offers = Vec::with_capacity(machines.len());
    offers.extend(machines.iter().filter_map(|m| m.to_offer(source, observed_at_ms)));
    offers
}

/// `prefix` and the decimal digits of `n` (short prefixes only), without the formatting
/// machinery: 100k of them are made on each poll.
fn numbered(prefix: &'static str, n: u64) -> crate::market::Id {
    let mut buf = [0u8; 24];
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // u64 has at most 20 digits, which leaves room for a prefix of up to 4 bytes.
    debug_assert!(prefix.len() <= 4, "prefix too long: {prefix}");
    let start = i - prefix.len().min(i);
    buf[start..i].copy_from_slice(&prefix.as_bytes()[..i - start]);
    crate::market::Id::new(std::str::from_utf8(&buf[start..]).unwrap_or_default())
}

/// Rebuild machines from offer chunks (`/offers` of 500.farm, or the search API). Where the
/// whole-machine chunk is missing (a filtered search), the machine is estimated from a chunk and
/// its `gpu_frac` rather than dropped, unlike the exporter, which skips such machines.
pub fn machines_from_chunks(chunks: &[Value]) -> Vec<VastMachine> {
    let mut by_machine: BTreeMap<u64, Vec<&Value>> = BTreeMap::new();
    for c in chunks {
        if let Some(id) = u64_of(&c["machine_id"]) {
            by_machine.entry(id).or_default().push(c);
        }
    }
    let mut machines = Vec::with_capacity(by_machine.len());
    for (machine_id, list) in by_machine {
        let free: BTreeSet<u64> = list
            .iter()
            .filter(|c| c["rentable"].as_bool() == Some(true))
            .flat_map(|c| c["gpu_ids"].as_array().into_iter().flatten().filter_map(u64_of))
            .collect();
        // The whole-machine chunk, else the chunk standing for the machine: its GPU count scaled
        // by `gpu_frac` (a 1-GPU chunk with gpu_frac 0.125 is one eighth of an 8-GPU machine).
        let whole = list.iter().find(|c| c["gpu_frac"].as_f64() == Some(1.0));
        let (base, num_gpus, dph_base) = match whole {
            Some(w) => {
                let (Some(n), Some(dph)) = (u64_of(&w["num_gpus"]), w["dph_base"].as_f64()) else {
                    continue;
                };
                (*w, n as u32, dph)
            }
            None => {
                let Some(c) = list.first() else { continue };
                let (Some(n), Some(frac), Some(dph)) =
                    (u64_of(&c["num_gpus"]), c["gpu_frac"].as_f64(), c["dph_base"].as_f64())
                else {
                    continue;
                };
                if n == 0 || !(frac > 0.0 && frac <= 1.0) {
                    continue;
                }
                let total = (n as f64 / frac).round().max(n as f64) as u32;
                (*c, total, dph / n as f64 * total as f64)
            }
        };
        let Some(gpu_name) = base["gpu_name"].as_str() else {
            continue;
        };
        // Without the whole-machine chunk, GPUs of chunks we did not see count as rented.
        machines.push(VastMachine {
            machine_id,
            host_id: u64_of(&base["host_id"]),
            gpu_name: gpu_name.to_owned(),
            num_gpus,
            num_gpus_rented: num_gpus.saturating_sub(free.len() as u32),
            dph_base,
            verified: verified_of(base),
            datacenter: base["hosting_type"].as_i64().is_some_and(|h| h > 0),
            geolocation: base["geolocation"].as_str().map(str::to_owned),
            reliability: base["reliability2"].as_f64().or_else(|| base["reliability"].as_f64()),
            gpu_ram_mb: base["gpu_ram"].as_f64(),
        });
    }
    machines
}

/// The records of a search response: `{"offers":[...]}` or a bare array.
pub fn offer_records(body: &Value) -> Result<&Vec<Value>, SourceError> {
    match body {
        Value::Array(a) => Ok(a),
        Value::Object(o) => o
            .get("offers")
            .and_then(Value::as_array)
            .ok_or_else(|| SourceError::Invalid("no `offers` array".into())),
        _ => Err(SourceError::Invalid("neither an object nor an array".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn machines_are_rebuilt_from_chunks() {
        let chunks = json!([
            {"id": 1, "machine_id": 7, "gpu_frac": 1.0, "num_gpus": 4, "gpu_ids": [1,2,3,4], "rentable": false,
             "gpu_name": "RTX 4090", "dph_base": 1.6, "verification": "verified", "verified": null, "hosting_type": 1,
             "geolocation": "Ontario, CA", "reliability2": 0.99, "gpu_ram": 24564},
            {"id": 2, "machine_id": 7, "gpu_frac": 0.5, "num_gpus": 2, "gpu_ids": [3,4], "rentable": true,
             "gpu_name": "RTX 4090", "dph_base": 0.8},
            {"id": 3, "machine_id": 8, "gpu_frac": 0.5, "num_gpus": 1, "gpu_ids": [9], "rentable": true,
             "gpu_name": "RTX 3090", "dph_base": 0.2}
        ]);
        let machines = machines_from_chunks(chunks.as_array().unwrap());
        assert_eq!(machines.len(), 2);
        let m = &machines[0];
        assert_eq!((m.num_gpus, m.num_gpus_rented), (4, 2));
        let o = m.to_offer("vast", 0).unwrap();
        assert_eq!(&*o.model, "rtx-4090");
        assert_eq!(o.price_per_gpu_hour_usd, 0.4);
        assert!(o.verified && o.datacenter);
        assert_eq!(o.country.as_deref(), Some("CA"));
        assert_eq!(o.vram_gb, Some(24.0));
        assert_eq!((o.offer_id.as_str(), o.machine_id.as_deref()), ("m7", Some("7")));
        assert_eq!(o.region.as_deref(), Some("Ontario, CA"));
        // Machine 8: one free GPU of a 2-GPU machine seen through a half chunk.
        let m8 = &machines[1];
        assert_eq!((m8.num_gpus, m8.num_gpus_rented), (2, 1));
        assert!((m8.dph_base - 0.4).abs() < 1e-12);
    }

    #[test]
    fn ids_are_the_decimal_numbers() {
        for n in [0, 7, 10, 99, 100_000, 123_456_789, u64::MAX] {
            assert_eq!(numbered("m", n), format!("m{n}"));
            assert_eq!(numbered("", n), n.to_string());
        }
        assert!(!numbered("m", u64::MAX).is_heap_allocated());
    }

    #[test]
    fn both_response_wrappings_are_read() {
        let wrapped = json!({"offers": [{"id": 1}]});
        let bare = json!([{"id": 1}, {"id": 2}]);
        assert_eq!(offer_records(&wrapped).unwrap().len(), 1);
        assert_eq!(offer_records(&bare).unwrap().len(), 2);
        assert!(offer_records(&json!({"error": "x"})).is_err());
    }
}
