//! Vast.ai's host API, for a linked account: the host's machines, earnings, and setting a
//! machine's listed price. `Authorization: Bearer <key>` (never in the URL); paths end in `/`
//! (without it the server answers 301).

use std::time::Duration;

use serde_json::{Value, json};

use crate::upstream::retry_after;

/// How a request to the host API ended, in the terms the portfolio acts on.
#[derive(Debug, Clone, PartialEq)]
pub enum HostError {
    /// 401/403: the key is wrong or lacks the permission; not retried.
    Unauthorized(u16),
    /// 429 or 5xx or no answer: retried later (after `Retry-After` when given).
    Unavailable {
        status: Option<u16>,
        retry_after: Option<Duration>,
        what: String,
    },
    /// Another answer: the request as made will not work.
    Refused {
        status: u16,
        error: Option<String>,
        message: String,
    },
}

impl HostError {
    /// In plain words, for the account's `last_error`.
    pub fn words(&self) -> String {
        match self {
            HostError::Unauthorized(status) => {
                format!("Vast.ai refused the API key (HTTP {status}): check it and its permissions")
            }
            HostError::Unavailable { what, .. } => what.clone(),
            HostError::Refused { message, .. } => message.clone(),
        }
    }
}

pub struct VastHost {
    client: reqwest::Client,
    base_url: String,
    timeout: Duration,
}

impl VastHost {
    pub fn new(client: reqwest::Client, base_url: &str, timeout: Duration) -> Self {
        Self {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            timeout,
        }
    }

    async fn send(&self, request: reqwest::RequestBuilder, key: &str) -> Result<Value, HostError> {
        let response = request
            .bearer_auth(key)
            .header("accept", "application/json")
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| HostError::Unavailable {
                status: None,
                retry_after: None,
                what: if e.is_timeout() {
                    "Vast.ai did not answer in time".into()
                } else {
                    "could not reach Vast.ai".into()
                },
            })?;
        let status = response.status().as_u16();
        let wait = retry_after(response.headers());
        let body: Value = response.json().await.unwrap_or(Value::Null);
        match status {
            200..=299 => Ok(body),
            401 | 403 => Err(HostError::Unauthorized(status)),
            429 | 500..=599 => Err(HostError::Unavailable {
                status: Some(status),
                retry_after: wait,
                what: format!("Vast.ai is unavailable (HTTP {status})"),
            }),
            _ => {
                let error = body.get("error").and_then(Value::as_str).map(str::to_owned);
                let detail = body
                    .get("msg")
                    .or_else(|| body.get("detail"))
                    .and_then(Value::as_str)
                    .unwrap_or_default();
                let message = match (&error, detail) {
                    (Some(e), d) if !d.is_empty() => format!("Vast.ai refused it ({e}): {d}"),
                    (Some(e), _) => format!("Vast.ai refused it ({e})"),
                    (None, d) if !d.is_empty() => format!("Vast.ai refused it (HTTP {status}): {d}"),
                    (None, _) => format!("Vast.ai refused it (HTTP {status})"),
                };
                Err(HostError::Refused { status, error, message })
            }
        }
    }

    /// The host's machines (`GET /api/v0/machines/?owner=me`): the records of `machines`.
    pub async fn machines(&self, key: &str) -> Result<Vec<Value>, HostError> {
        let url = format!("{}/api/v0/machines/?owner=me", self.base_url);
        let body = self.send(self.client.get(url), key).await?;
        match body.get("machines").and_then(Value::as_array) {
            Some(machines) => Ok(machines.clone()),
            None => Err(HostError::Unavailable {
                status: None,
                retry_after: None,
                what: "Vast.ai answered without a machine list".into(),
            }),
        }
    }

    /// The host's earnings of the last `days` days, with the personal fields dropped.
    pub async fn earnings(&self, key: &str, today: i64, days: i64) -> Result<Value, HostError> {
        let url = format!(
            "{}/api/v0/users/me/machine-earnings/?owner=me&sday={}&eday={today}",
            self.base_url,
            today - days
        );
        let body = self.send(self.client.get(url), key).await?;
        Ok(without_personal_fields(body))
    }

    /// List a machine at `price` per GPU-hour (`PUT /api/v0/machines/create_asks/`, `price_gpu`
    /// as the host's price, like `listed_gpu_cost`).
    pub async fn set_price(&self, key: &str, machine_id: u64, price: f64) -> Result<Value, HostError> {
        let url = format!("{}/api/v0/machines/create_asks/", self.base_url);
        let body = json!({"machine": machine_id, "price_gpu": price});
        self.send(self.client.put(url).json(&body), key).await
    }
}

/// What the earnings answer says about the person: never stored.
const PERSONAL: [&str; 12] = [
    "username",
    "email",
    "fullname",
    "address1",
    "address2",
    "city",
    "zip",
    "country",
    "taxinfo",
    "phone",
    "billaddress_line1",
    "billaddress_city",
];

/// The earnings answer with every personal field removed (at any depth), keeping the numbers.
pub fn without_personal_fields(mut body: Value) -> Value {
    fn strip(v: &mut Value) {
        match v {
            Value::Object(map) => {
                map.retain(|k, _| !PERSONAL.contains(&k.as_str()) && !k.starts_with("billaddress"));
                map.values_mut().for_each(strip);
            }
            Value::Array(items) => items.iter_mut().for_each(strip),
            _ => {}
        }
    }
    strip(&mut body);
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn personal_fields_are_dropped_and_numbers_kept() {
        let path = format!(
            "{}/tests/fixtures/vastai-host/earnings.trimmed.dcmon.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let body: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert!(body.get("email").is_some(), "the fixture has them");
        let clean = without_personal_fields(body);
        let text = clean.to_string();
        assert!(
            !text.contains("test@example.com") && !text.contains("\"email\""),
            "{text}"
        );
        assert_eq!(clean["summary"]["total_gpu"], 2.15);
        assert_eq!(clean["per_machine"][1]["machine_id"], 35798);
    }
}
