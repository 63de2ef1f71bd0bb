//! The market both benchmarks measure: `n` machines over the 88 seed models, in a few regions;
//! `version` > 0 changes 1% of them (rentals and prices), a different 1% for each version.

use gpuscout_hub::ingest::vast_machine::VastMachine;
use gpuscout_hub::market::simulated::seed_models;
use serde_json::{Value, json};

pub fn machines(n: usize, version: u64) -> Vec<VastMachine> {
    let models = seed_models();
    (0..n)
        .map(|i| {
            let m = &models[i % models.len()];
            let gpus = [1u32, 2, 4, 8][i % 4];
            let changed = (i as u64 + version).is_multiple_of(100) && version > 0;
            let rented = if changed {
                (i as u32 + 1) % (gpus + 1)
            } else {
                i as u32 % (gpus + 1)
            };
            let price = m.price_median * (0.8 + (i % 40) as f64 / 100.0) * if changed { 1.05 } else { 1.0 };
            VastMachine {
                machine_id: 100_000 + i as u64,
                host_id: Some(i as u64 % 5000),
                gpu_name: m.name.to_string(),
                num_gpus: gpus,
                num_gpus_rented: rented,
                dph_base: price * gpus as f64,
                verified: i % 3 != 0,
                datacenter: i % 5 == 4,
                geolocation: Some(["Texas, US", "Ontario, CA", "Bavaria, DE", "Tokyo, JP"][i % 4].into()),
                reliability: Some(0.99),
                gpu_ram_mb: Some(24576.0),
            }
        })
        .collect()
}

/// The 500.farm `/machines` body of [`machines`].
#[allow(dead_code)]
pub fn machines_body(n: usize, version: u64) -> Vec<u8> {
    let records: Vec<Value> = machines(n, version)
        .iter()
        .map(|m| {
            json!({
                "machine_id": m.machine_id, "host_id": m.host_id, "gpu_name": m.gpu_name, "num_gpus": m.num_gpus,
                "num_gpus_rented": m.num_gpus_rented, "dph_base": m.dph_base, "verification": "verified",
                "verified": m.verified, "hosting_type": m.datacenter as u8, "geolocation": m.geolocation,
                "reliability2": m.reliability, "gpu_ram": m.gpu_ram_mb, "chunks": [], "min_chunk": 1,
            })
        })
        .collect();
    serde_json::to_vec(&json!({"url": "/machines", "timestamp": "2026-11-28T00:00:00Z", "count": n, "offers": records}))
        .unwrap()
}
