//! Vast.ai's search API: the whole market as offer chunks, rebuilt into machines by
//! [`super::vast_machine`].

use async_trait::async_trait;
use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};

use super::vast_machine::{machines_from_chunks, offer_records, offers_of};
use super::{Fetched, MarketSource, SourceError, status_error, transport_error};
use crate::clock::unix_now_ms;
use crate::config::{HttpSourceSettings, VastMethod};

/// The whole market: no `rentable`/`verified`/`rented` filters, which would hide rented and
/// unverified machines.
fn market_query() -> Value {
    json!({"external": {"eq": false}, "type": "on-demand", "disable_bundling": true})
}

pub struct VastSource {
    client: reqwest::Client,
    base_url: String,
    api_key: SecretString,
    method: VastMethod,
}

impl VastSource {
    pub fn new(client: reqwest::Client, settings: &HttpSourceSettings) -> Self {
        Self {
            client,
            base_url: settings.base_url.trim_end_matches('/').to_owned(),
            api_key: settings.api_key.clone(),
            method: settings.method,
        }
    }
}

#[async_trait]
impl MarketSource for VastSource {
    fn name(&self) -> &'static str {
        "vast"
    }

    async fn fetch(&mut self) -> Result<Fetched, SourceError> {
        let request = if self.method == VastMethod::Asks {
            self.client
                .put(format!("{}/api/v0/search/asks/", self.base_url))
                .json(&json!({"select_cols": ["*"], "q": market_query()}))
        } else {
            self.client
                .post(format!("{}/api/v0/bundles/", self.base_url))
                .json(&market_query())
        };
        let key = self.api_key.expose_secret();
        let request = if key.is_empty() {
            request
        } else {
            request.bearer_auth(key)
        };
        let response = request.send().await.map_err(transport_error)?;
        if !response.status().is_success() {
            return Err(status_error(response).await);
        }
        let body: Value = response.json().await.map_err(transport_error)?;
        let records = offer_records(&body)?;
        let now = unix_now_ms() as i64;
        let offers = offers_of(&machines_from_chunks(records), "vast", now);
        // Vast.ai's answer does not say when its data was taken: as of its arrival.
        Ok(Fetched::Offers {
            offers,
            source_ts_ms: now,
        })
    }
}
