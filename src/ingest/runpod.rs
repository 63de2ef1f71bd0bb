//! RunPod's GraphQL API: `gpuTypes` with `lowestPrice`, the on-demand list price per GPU type.
//!
//! RunPod publishes prices, not how many GPUs exist or are rented, so its offers carry no GPU
//! count (`num_gpus: 0`): they show on `offers:*` as reference prices and stay out of the GPU
//! counts and percentiles. An API key is required (`Authorization: Bearer`).

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::{Fetched, MarketSource, SourceError, status_error, transport_error};
use crate::clock::unix_now_ms;
use crate::config::HttpSourceSettings;
use crate::market::models::canonical_slug;
use crate::market::{Offer, intern};

const QUERY: &str = "query GpuTypes { gpuTypes { id displayName memoryInGb secureCloud communityCloud \
    lowestPrice(input: {gpuCount: 1}) { minimumBidPrice uninterruptablePrice } } }";

pub struct RunpodSource {
    client: reqwest::Client,
    base_url: String,
    api_key: SecretString,
}

impl RunpodSource {
    pub fn new(client: reqwest::Client, settings: &HttpSourceSettings) -> Self {
        Self {
            client,
            base_url: settings.base_url.trim_end_matches('/').to_owned(),
            api_key: settings.api_key.clone(),
        }
    }
}

/// The offers of a `gpuTypes` response.
pub fn parse_gpu_types(body: &Value, observed_at_ms: i64) -> Result<Vec<Offer>, SourceError> {
    if let Some(errors) = body.get("errors").and_then(Value::as_array)
        && !errors.is_empty()
    {
        let message = errors[0]["message"].as_str().unwrap_or("GraphQL error");
        return Err(SourceError::Invalid(format!("GraphQL: {message}")));
    }
    let types = body["data"]["gpuTypes"]
        .as_array()
        .ok_or_else(|| SourceError::Invalid("no data.gpuTypes".into()))?;
    let mut offers = Vec::new();
    for t in types {
        let (Some(id), Some(price)) = (t["id"].as_str(), t["lowestPrice"]["uninterruptablePrice"].as_f64()) else {
            continue;
        };
        let name = t["displayName"].as_str().unwrap_or(id);
        let Some(model) = canonical_slug(name) else { continue };
        offers.push(Offer {
            source: "runpod",
            marketplace: "runpod",
            offer_id: id.into(),
            machine_id: None,
            host_id: None,
            model: intern(&model),
            model_name: intern(name),
            num_gpus: 0,
            gpus_rented: 0,
            price_per_gpu_hour_usd: price,
            reliability: None,
            verified: true,
            datacenter: t["secureCloud"].as_bool().unwrap_or(false),
            country: None,
            region: None,
            vram_gb: t["memoryInGb"].as_f64(),
            observed_at_ms,
        });
    }
    Ok(offers)
}

#[async_trait]
impl MarketSource for RunpodSource {
    fn name(&self) -> &'static str {
        "runpod"
    }

    async fn fetch(&mut self) -> Result<Fetched, SourceError> {
        let response = self
            .client
            .post(format!("{}/graphql", self.base_url))
            .bearer_auth(self.api_key.expose_secret())
            .json(&json!({"query": QUERY}))
            .send()
            .await
            .map_err(transport_error)?;
        if !response.status().is_success() {
            return Err(status_error(response).await);
        }
        let body: Value = response.json().await.map_err(transport_error)?;
        // RunPod's answer does not say when its prices were taken: as of its arrival.
        let now = unix_now_ms() as i64;
        Ok(Fetched::Offers {
            offers: parse_gpu_types(&body, now)?,
            source_ts_ms: now,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_types_become_reference_offers() {
        let body = json!({"data": {"gpuTypes": [
            {"id": "NVIDIA GeForce RTX 4090", "displayName": "RTX 4090", "memoryInGb": 24, "secureCloud": true,
             "lowestPrice": {"minimumBidPrice": 0.2, "uninterruptablePrice": 0.69}},
            {"id": "NVIDIA A40", "displayName": "A40", "lowestPrice": {"minimumBidPrice": null, "uninterruptablePrice": null}}
        ]}});
        let offers = parse_gpu_types(&body, 0).unwrap();
        assert_eq!(offers.len(), 1, "no price, no offer");
        assert_eq!(&*offers[0].model, "rtx-4090");
        assert_eq!(offers[0].num_gpus, 0);
        let err = parse_gpu_types(&json!({"errors": [{"message": "Cannot query field"}]}), 0).unwrap_err();
        assert!(err.to_string().contains("Cannot query field"));
    }
}
