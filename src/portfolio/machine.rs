//! A host's machine, normalised: from Vast.ai's host API (`GET /api/v0/machines/?owner=me`, one
//! record of 75 keys per machine) or entered by hand.
//!
//! The traps of the host API (see the fixtures' notes): `listed_gpu_cost` is the host's price per
//! GPU-hour (renters pay more), `null` when unlisted; `gpu_occupancy` is one code per GPU, each
//! followed by a space (`D` on-demand, `R` reserved, `I` interruptible, `x` idle); the
//! `current_rentals_*` fields count contracts, not GPUs (a reserved contract counts as on-demand
//! too), so GPUs are counted from the occupancy; `gpu_ram` is MB; a machine is online when
//! `timeout == 0`.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::market::models::canonical_model;

/// One of the user's machines as the portfolio shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Machine {
    /// The hub's id of the machine (stable across polls).
    pub id: String,
    /// `vast`, or the platform a hand-entered machine is on.
    pub platform: String,
    /// `linked` (read from a linked account) or `manual`.
    pub origin: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub account_id: Option<String>,
    /// The platform's machine id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    /// Canonical model slug (`rtx-4090`) and the name as the platform gave it.
    pub model: String,
    pub model_name: String,
    pub num_gpus: u32,
    /// The host's listed on-demand price per GPU-hour (what the listing takes), if listed.
    pub price_per_gpu_hour_usd: Option<f64>,
    /// The floor for interruptible rentals, per GPU-hour.
    pub min_bid_usd: Option<f64>,
    pub listed: bool,
    /// Per-GPU occupancy codes: `D`, `R`, `I`, `x`.
    pub occupancy: Vec<String>,
    pub gpus_on_demand: u32,
    pub gpus_reserved: u32,
    pub gpus_interruptible: u32,
    pub gpus_idle: u32,
    pub online: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub verified: bool,
    /// `None`: not known.
    pub datacenter: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reliability: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub earn_hour_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub earn_day_usd: Option<f64>,
}

impl Machine {
    /// GPUs rented in any way.
    pub fn gpus_rented(&self) -> u32 {
        self.gpus_on_demand + self.gpus_reserved + self.gpus_interruptible
    }
}

fn f64_of(v: &Value) -> Option<f64> {
    v.as_f64().filter(|f| f.is_finite())
}

/// A number as the hub publishes numbers: at most 4 decimals (`0.9200000000000002` is `0.92`).
fn r4(v: &Value) -> Option<f64> {
    f64_of(v).map(crate::market::checksum::round4)
}

/// Earnings below a hundredth of a cent are noise (`8.088995e-55` is seen).
fn money(v: &Value) -> Option<f64> {
    f64_of(v).map(|f| if f.abs() < 1e-4 { 0.0 } else { (f * 1e4).round() / 1e4 })
}

/// Count the occupancy codes; unknown codes are left out of every count.
fn occupancy_of(text: &str) -> (Vec<String>, [u32; 4]) {
    let codes: Vec<String> = text.split_whitespace().map(str::to_owned).collect();
    let mut counts = [0u32; 4];
    for c in &codes {
        match c.as_str() {
            "D" => counts[0] += 1,
            "R" => counts[1] += 1,
            "I" => counts[2] += 1,
            "x" => counts[3] += 1,
            _ => {}
        }
    }
    (codes, counts)
}

/// The country of a Vast `geolocation` ("New Jersey, US", ", RU"): the part after the last comma.
fn country_of(geo: Option<&str>) -> Option<String> {
    let code = geo?.rsplit(',').next()?.trim();
    (code.len() == 2 && code.chars().all(|c| c.is_ascii_alphabetic())).then(|| code.to_ascii_uppercase())
}

/// One machine record of Vast's host API, normalised; `None` when it lacks an id, a known GPU
/// model or GPUs. `id` is the hub's id for it.
pub fn from_vast(record: &Value, id: String, account_id: &str) -> Option<Machine> {
    let machine_id = record
        .get("machine_id")
        .or_else(|| record.get("id"))
        .and_then(|v| v.as_u64().or_else(|| v.as_f64().map(|f| f as u64)))?;
    let model_name = record.get("gpu_name")?.as_str()?.to_owned();
    let model = canonical_model(&model_name)?.to_string();
    let num_gpus = u32::try_from(record.get("num_gpus")?.as_u64()?)
        .ok()
        .filter(|n| *n > 0)?;
    let (occupancy, [on_demand, reserved, interruptible, idle]) =
        occupancy_of(record.get("gpu_occupancy").and_then(Value::as_str).unwrap_or_default());
    let listed = record.get("listed").and_then(Value::as_bool).unwrap_or(false);
    Some(Machine {
        id,
        platform: "vast".into(),
        origin: "linked".into(),
        account_id: Some(account_id.to_owned()),
        machine_id: Some(machine_id.to_string()),
        model,
        model_name,
        num_gpus,
        price_per_gpu_hour_usd: record.get("listed_gpu_cost").and_then(r4).filter(|_| listed),
        min_bid_usd: record.get("min_bid_price").and_then(r4),
        listed,
        occupancy,
        gpus_on_demand: on_demand,
        gpus_reserved: reserved,
        gpus_interruptible: interruptible,
        gpus_idle: idle,
        online: record.get("timeout").and_then(f64_of) == Some(0.0),
        error: record
            .get("error_description")
            .and_then(Value::as_str)
            .filter(|e| !e.trim().is_empty())
            .map(str::to_owned),
        verified: record.get("verification").and_then(Value::as_str) == Some("verified"),
        datacenter: record.get("hosting_type").and_then(Value::as_i64).map(|t| t == 1),
        country: country_of(record.get("geolocation").and_then(Value::as_str)),
        reliability: record.get("reliability2").and_then(r4),
        earn_hour_usd: record.get("earn_hour").and_then(money),
        earn_day_usd: record.get("earn_day").and_then(money),
    })
}

/// A machine entered by hand (`POST /api/v1/portfolio/machines`).
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ManualMachine {
    /// `vast`, `runpod`, `tensordock`, …
    #[schema(min_length = 1, max_length = 40, pattern = r"\S")]
    pub platform: String,
    /// A GPU model the market knows, by name or slug (`RTX 4090`, `rtx-4090`).
    #[schema(min_length = 1)]
    pub gpu_model: String,
    #[schema(minimum = 1, maximum = 64)]
    pub num_gpus: u32,
    /// The listed price per GPU-hour.
    #[schema(exclusive_minimum = 0, maximum = 1000)]
    pub price_per_gpu_hour_usd: f64,
    pub verified: Option<bool>,
    pub datacenter: Option<bool>,
    pub country: Option<String>,
    pub rented_gpus: Option<u32>,
}

impl ManualMachine {
    /// Check every field (`known`: whether the market knows a model slug); the machine it
    /// describes, or what is wrong in words.
    pub fn into_machine(self, id: String, known: impl Fn(&str) -> bool) -> Result<Machine, String> {
        let platform = self.platform.trim().to_ascii_lowercase();
        if platform.is_empty() || platform.len() > 40 {
            return Err("`platform` is required (e.g. vast, runpod, tensordock)".into());
        }
        let model = canonical_model(&self.gpu_model)
            .filter(|m| known(m))
            .ok_or_else(|| format!("`gpu_model`: `{}` is not a GPU model the market knows", self.gpu_model))?;
        if !(1..=64).contains(&self.num_gpus) {
            return Err("`num_gpus` must be from 1 to 64".into());
        }
        let price = self.price_per_gpu_hour_usd;
        if !(price.is_finite() && price > 0.0 && price <= 1000.0) {
            return Err("`price_per_gpu_hour_usd` must be above 0 and at most 1000".into());
        }
        let rented = self.rented_gpus.unwrap_or(0);
        if rented > self.num_gpus {
            return Err("`rented_gpus` cannot exceed `num_gpus`".into());
        }
        let country = match self.country.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(c) if c.len() == 2 && c.chars().all(|c| c.is_ascii_alphabetic()) => Some(c.to_ascii_uppercase()),
            Some(_) => return Err("`country` is a two-letter code (US, DE, …)".into()),
        };
        let mut occupancy = vec!["D".to_owned(); rented as usize];
        occupancy.resize(self.num_gpus as usize, "x".to_owned());
        Ok(Machine {
            id,
            platform,
            origin: "manual".into(),
            account_id: None,
            machine_id: None,
            model: model.to_string(),
            model_name: self.gpu_model.trim().to_owned(),
            num_gpus: self.num_gpus,
            price_per_gpu_hour_usd: Some(crate::market::checksum::round4(price)),
            min_bid_usd: None,
            listed: true,
            occupancy,
            gpus_on_demand: rented,
            gpus_reserved: 0,
            gpus_interruptible: 0,
            gpus_idle: self.num_gpus - rented,
            online: true,
            error: None,
            verified: self.verified.unwrap_or(false),
            datacenter: self.datacenter,
            country,
            reliability: None,
            earn_hour_usd: None,
            earn_day_usd: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Value {
        let path = format!("{}/tests/fixtures/vastai-host/{name}", env!("CARGO_MANIFEST_DIR"));
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))).unwrap()
    }

    #[test]
    fn a_reserved_and_an_on_demand_machine() {
        let body = fixture("machines.cli-raw.sartor.2026-05-22T2017Z.reserved-R_and_ondemand-DD.json");
        let machines: Vec<Machine> = body["machines"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| from_vast(r, "x".into(), "acc"))
            .collect();
        assert_eq!(machines.len(), 2);
        let reserved = machines
            .iter()
            .find(|m| m.machine_id.as_deref() == Some("52271"))
            .unwrap();
        assert_eq!(reserved.model, "rtx-5090");
        assert_eq!(
            (reserved.num_gpus, reserved.gpus_reserved, reserved.gpus_on_demand),
            (1, 1, 0)
        );
        assert!(reserved.online && reserved.verified && reserved.listed);
        assert_eq!(reserved.country.as_deref(), Some("US"));
        assert_eq!(reserved.datacenter, None, "hosting_type is null");
        let pro = machines.iter().find(|m| m.num_gpus == 2).unwrap();
        assert_eq!(
            (pro.gpus_on_demand, pro.gpus_idle),
            (2, 0),
            "D D: both GPUs, one contract"
        );
    }

    #[test]
    fn a_stopped_rental_leaves_the_gpus_idle() {
        let body = fixture("machines.cli-raw.sartor.2026-05-27T0017Z.stopped-ondemand-resident-xx.json");
        let pro = body["machines"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|r| from_vast(r, "x".into(), "acc"))
            .find(|m| m.num_gpus == 2)
            .unwrap();
        // current_rentals_on_demand is 1, yet `x x `: the contract is stopped, the GPUs idle.
        assert_eq!((pro.gpus_on_demand, pro.gpus_idle), (0, 2));
        assert_eq!(pro.occupancy, ["x", "x"]);
    }

    #[test]
    fn an_unlisted_machine_has_no_price() {
        let unlisted = fixture("machine.selected.vastdocs.150296.unlisted.json");
        // Selected fields of the verbatim answer, as Vast's host docs published them.
        let record = &unlisted["selected_fields"];
        let m = from_vast(record, "x".into(), "acc").unwrap();
        assert!(!m.listed);
        assert_eq!(m.price_per_gpu_hour_usd, None);
    }

    #[test]
    fn manual_machines_are_checked() {
        let m = ManualMachine {
            platform: "RunPod".into(),
            gpu_model: "RTX 4090".into(),
            num_gpus: 4,
            price_per_gpu_hour_usd: 0.4,
            verified: Some(true),
            datacenter: None,
            country: Some("de".into()),
            rented_gpus: Some(1),
        };
        let known = |m: &str| m == "rtx-4090";
        let machine = m.clone().into_machine("m1".into(), known).unwrap();
        assert_eq!(
            (machine.platform.as_str(), machine.model.as_str()),
            ("runpod", "rtx-4090")
        );
        assert_eq!(machine.occupancy, ["D", "x", "x", "x"]);
        assert_eq!(machine.country.as_deref(), Some("DE"));
        let bad = ManualMachine {
            gpu_model: "Voodoo 2".into(),
            ..m.clone()
        };
        assert!(bad.into_machine("m".into(), known).unwrap_err().contains("gpu_model"));
        let bad = ManualMachine {
            rented_gpus: Some(5),
            ..m
        };
        assert!(bad.into_machine("m".into(), known).unwrap_err().contains("rented_gpus"));
    }
}
