//! The public 500.farm Vast.ai exporter (`https://500.farm/vastai-exporter`).
//!
//! Polls `/machines` (one record per machine, with `num_gpus_rented`) with `If-None-Match` and
//! `If-Modified-Since`, so an unchanged exporter costs a 304 and nothing downstream; falls back
//! to `/offers` (chunks, rebuilt into machines) when `/machines` is missing. The live wrappers
//! differ from the exporter's Go source (`note` string vs `notes` array): both are accepted and
//! ignored, as are keys we do not know. The body's `timestamp` says when the exporter took the
//! data; a body without a readable one is taken as of its arrival.

use async_trait::async_trait;
use reqwest::StatusCode;
use reqwest::header::{ETAG, IF_MODIFIED_SINCE, IF_NONE_MATCH, LAST_MODIFIED};
use serde_json::Value;

use super::machines::{MachinesBody, parse_machines, parse_machines_body, timestamp_ms};
use super::vast_machine::offers_of;
use super::{Fetched, MarketSource, SourceError, status_error, transport_error};
use crate::clock::unix_now_ms;
use crate::config::HttpSourceSettings;

pub struct Farm500Source {
    client: reqwest::Client,
    base_url: String,
    etag: Option<String>,
    last_modified: Option<String>,
    /// `/machines` answered 404 once: use `/offers` from then on.
    use_offers: bool,
}

impl Farm500Source {
    pub fn new(client: reqwest::Client, settings: &HttpSourceSettings) -> Self {
        Self {
            client,
            base_url: settings.base_url.trim_end_matches('/').to_owned(),
            etag: None,
            last_modified: None,
            use_offers: false,
        }
    }
}

#[async_trait]
impl MarketSource for Farm500Source {
    fn name(&self) -> &'static str {
        "farm500"
    }

    fn forget_validators(&mut self) {
        self.etag = None;
        self.last_modified = None;
    }

    async fn fetch(&mut self) -> Result<Fetched, SourceError> {
        let path = if self.use_offers { "offers" } else { "machines" };
        let mut request = self.client.get(format!("{}/{path}", self.base_url));
        // The exporter compares If-None-Match byte for byte: send the ETag back exactly.
        if let Some(etag) = &self.etag {
            request = request.header(IF_NONE_MATCH, etag);
        } else if let Some(lm) = &self.last_modified {
            request = request.header(IF_MODIFIED_SINCE, lm);
        }
        let response = request.send().await.map_err(transport_error)?;
        match response.status() {
            StatusCode::NOT_MODIFIED => return Ok(Fetched::Unchanged),
            StatusCode::NOT_FOUND if !self.use_offers => {
                tracing::info!("500.farm /machines not found; using /offers");
                self.use_offers = true;
                self.etag = None;
                self.last_modified = None;
                return Box::pin(self.fetch()).await;
            }
            s if !s.is_success() => return Err(status_error(response).await),
            _ => {}
        }
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &reqwest::header::HeaderValue| v.to_str().ok())
                .map(str::to_owned)
        };
        let (etag, last_modified) = (header(ETAG), header(LAST_MODIFIED));
        let body = response.bytes().await.map_err(transport_error)?;
        let now = unix_now_ms() as i64;
        let MachinesBody { machines, taken_at_ms } = if self.use_offers {
            let body: Value = serde_json::from_slice(&body).map_err(|e| SourceError::Invalid(e.to_string()))?;
            MachinesBody {
                machines: parse_machines(&body, true)?,
                taken_at_ms: timestamp_ms(&body),
            }
        } else {
            // The large one (every machine of the market): read without building the JSON tree.
            parse_machines_body(&body)?
        };
        // Validators only once the body parsed: a truncated body must not be "unchanged" next time.
        self.etag = etag;
        self.last_modified = last_modified;
        Ok(Fetched::Offers {
            offers: offers_of(&machines, "farm500", now),
            source_ts_ms: taken_at_ms.unwrap_or(now),
        })
    }
}
