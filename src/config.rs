//! Settings: `config/default.toml` (embedded), optional files in the config directory, and
//! `GPUSCOUT__<SECTION>__<KEY>` environment overrides, validated once at start.
//!
//! The only module that reads environment variables.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};

use crate::tier::{Tier, TierSettings};

/// The embedded defaults; every key is documented there.
pub const DEFAULT_TOML: &str = include_str!("../config/default.toml");

/// The development HS256 secret, refused in production.
const DEV_SECRET: &str = "gpuscout-development-secret-do-not-use-in-production";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Load(#[from] config::ConfigError),
    #[error("configuration key `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    pub environment: Environment,
    pub server: ServerSettings,
    pub log: LogSettings,
    pub auth: AuthSettings,
    pub api: ApiSettings,
    pub bus: BusSettings,
    pub database: DatabaseSettings,
    pub ingest: IngestSettings,
    pub alerts: AlertSettings,
    pub advisor: AdvisorSettings,
    #[serde(default)]
    pub push: PushSettings,
    #[serde(default)]
    pub email: EmailSettings,
    #[serde(default)]
    pub secrets: SecretsSettings,
    #[serde(default)]
    pub portfolio: PortfolioSettings,
    #[serde(default)]
    pub store: StoreSettings,
    pub tiers: BTreeMap<Tier, TierSettings>,
}

/// How long the database keeps what grows without end (DESIGN §13): the market's minute rows
/// (then folded into hourly rows), the hourly rows, fired alerts and advisor messages. The leader
/// enforces it every `retention_interval_s`. 0 for alerts or messages: kept for ever.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreSettings {
    pub market_snapshot_retention_days: u32,
    pub market_hourly_retention_days: u32,
    pub alert_event_retention_days: u32,
    pub advisor_message_retention_days: u32,
    pub retention_interval_s: u64,
}

impl Default for StoreSettings {
    fn default() -> Self {
        Self {
            market_snapshot_retention_days: 30,
            market_hourly_retention_days: 730,
            alert_event_retention_days: 365,
            advisor_message_retention_days: 365,
            retention_interval_s: 3600,
        }
    }
}

impl StoreSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.market_snapshot_retention_days == 0 {
            return Err(invalid("store.market_snapshot_retention_days", "must be at least 1"));
        }
        if self.market_hourly_retention_days < self.market_snapshot_retention_days {
            return Err(invalid(
                "store.market_hourly_retention_days",
                "must be at least store.market_snapshot_retention_days (hourly rows outlive minute rows)",
            ));
        }
        if !(60..=86_400).contains(&self.retention_interval_s) {
            return Err(invalid("store.retention_interval_s", "must be from 60 to 86400"));
        }
        Ok(())
    }
}

/// Web Push (RFC 8030 / 8291 / 8292): the VAPID key pair the hub signs its pushes with, in the
/// form browsers and Web Push libraries use: unpadded base64url of the 65-byte uncompressed P-256
/// public point and of the 32-byte private scalar (`gpuscout vapid-keys` prints a new pair).
/// Empty keys: Web Push is off.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PushSettings {
    pub vapid_public_key: String,
    #[serde(serialize_with = "masked")]
    pub vapid_private_key: SecretString,
    /// A `mailto:` or `https:` contact the push services may use (RFC 8292 `sub`).
    pub subject: String,
    /// How long a push service keeps an alert for a browser that is offline (`TTL`, seconds).
    pub ttl_s: u32,
}

impl Default for PushSettings {
    fn default() -> Self {
        Self {
            vapid_public_key: String::new(),
            vapid_private_key: SecretString::default(),
            subject: String::new(),
            ttl_s: 14_400,
        }
    }
}

/// Alert e-mail. An empty `smtp_url`: e-mail is off.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailSettings {
    /// `smtp://host:port` (plain; with `?tls=required` STARTTLS) or `smtps://host:port`, with
    /// `user:password@` when the server asks for a login.
    #[serde(serialize_with = "masked_url")]
    pub smtp_url: SecretString,
    /// The sender, e.g. `GPUScout <alerts@example.com>`.
    pub from: String,
    /// Alert mails per user per clock hour; the rest of the hour's alerts go out as one digest.
    pub max_per_hour: u32,
    /// The hub's address as users reach it, for the links in mails (confirm, unsubscribe).
    pub public_url: String,
    /// How long a confirmation link stays valid.
    pub confirm_ttl_s: u64,
}

impl Default for EmailSettings {
    fn default() -> Self {
        Self {
            smtp_url: SecretString::default(),
            from: String::new(),
            max_per_hour: 10,
            public_url: "http://127.0.0.1:8080".into(),
            confirm_ttl_s: 86_400,
        }
    }
}

impl EmailSettings {
    pub fn enabled(&self) -> bool {
        !self.smtp_url.expose_secret().is_empty()
    }

    /// A sender and a parsable URL when on; a plain-text connection only to this machine.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !self.enabled() {
            return Ok(());
        }
        let url = reqwest::Url::parse(self.smtp_url.expose_secret())
            .map_err(|_| invalid("email.smtp_url", "must be an smtp:// or smtps:// URL"))?;
        let tls = url.scheme() == "smtps" || url.query_pairs().any(|(k, v)| k == "tls" && v == "required");
        if !matches!(url.scheme(), "smtp" | "smtps") {
            return Err(invalid("email.smtp_url", "must be an smtp:// or smtps:// URL"));
        }
        if !tls && !on_this_machine(&url) {
            return Err(invalid(
                "email.smtp_url",
                "a server beyond this machine needs TLS: smtps://… or smtp://…?tls=required",
            ));
        }
        if self.from.parse::<lettre::message::Mailbox>().is_err() {
            return Err(invalid(
                "email.from",
                "must be an address such as `GPUScout <alerts@example.com>`",
            ));
        }
        if self.max_per_hour == 0 {
            return Err(invalid("email.max_per_hour", "must be at least 1"));
        }
        if reqwest::Url::parse(&self.public_url).is_err() {
            return Err(invalid(
                "email.public_url",
                "must be the hub's URL, e.g. https://gpuscout.example.com",
            ));
        }
        Ok(())
    }
}

impl PushSettings {
    pub fn enabled(&self) -> bool {
        !self.vapid_public_key.is_empty()
    }

    /// Both keys or neither; each decodes to its size; the public key is the private key's; a
    /// subject when enabled.
    pub fn validate(&self) -> Result<(), ConfigError> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let private = self.vapid_private_key.expose_secret();
        if self.vapid_public_key.is_empty() && private.is_empty() {
            return Ok(());
        }
        let scalar = b64
            .decode(private.trim_end_matches('='))
            .ok()
            .filter(|b| b.len() == 32)
            .and_then(|b| p256::SecretKey::from_slice(&b).ok())
            .ok_or_else(|| {
                invalid(
                    "push.vapid_private_key",
                    "must be the 32-byte P-256 private key in base64url",
                )
            })?;
        let public = b64
            .decode(self.vapid_public_key.trim_end_matches('='))
            .ok()
            .filter(|b| b.len() == 65 && b[0] == 4)
            .ok_or_else(|| {
                invalid(
                    "push.vapid_public_key",
                    "must be the 65-byte uncompressed P-256 point in base64url",
                )
            })?;
        let derived = p256::EncodedPoint::from(scalar.public_key());
        if derived.as_bytes() != public.as_slice() {
            return Err(invalid(
                "push.vapid_public_key",
                "is not the public key of push.vapid_private_key",
            ));
        }
        if !(self.subject.starts_with("mailto:") || self.subject.starts_with("https://")) {
            return Err(invalid(
                "push.subject",
                "must be a mailto: or https: URL the push services may contact",
            ));
        }
        Ok(())
    }
}

/// Which Vast.ai search endpoint lists the market.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VastMethod {
    /// `POST /api/v0/bundles/`.
    #[default]
    Bundles,
    /// `PUT /api/v0/search/asks/`.
    Asks,
}

impl std::str::FromStr for VastMethod {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "bundles" => Ok(Self::Bundles),
            "asks" => Ok(Self::Asks),
            _ => Err(format!("`{s}`: must be `bundles` or `asks`")),
        }
    }
}

/// Alert evaluation and webhook delivery.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AlertSettings {
    pub default_cooldown_s: u64,
    /// How often every node reloads all rules from the database (catching a missed
    /// announcement of a change made through another node).
    pub reconcile_interval_ms: u64,
    pub webhook_timeout_ms: u64,
    /// Webhook deliveries in flight at once, and to one host.
    pub webhook_concurrency: usize,
    pub webhook_per_host: usize,
    /// Allow `http://` webhook URLs (default: `https` only).
    pub webhook_allow_http: bool,
    /// Allow webhooks to loopback, private, link-local and CGNAT addresses (self-hosted setups).
    pub webhook_allow_private: bool,
    pub webhook_max_attempts: u32,
    pub webhook_backoff_initial_ms: u64,
    pub webhook_backoff_max_ms: u64,
    pub outbox_poll_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Development,
    Production,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSettings {
    pub listen: String,
    pub ping_interval_s: u32,
    pub pong_timeout_s: u32,
    pub connect_timeout_s: u32,
    pub max_message_bytes: usize,
    pub read_buffer_bytes: usize,
    pub write_buffer_bytes: usize,
    pub max_write_buffer_bytes: usize,
    pub outbox_max_bytes: usize,
    pub outbox_max_messages: usize,
    pub max_batch_bytes: usize,
    /// How long a connection's writer waits, once something is queued, to gather more into the
    /// same frame (fewer frames and syscalls per delivery, at this much added latency). 0: none.
    #[serde(default)]
    pub write_delay_ms: u64,
    pub shutdown_grace_ms: u64,
    /// Longest a write to one connection may take before the connection is closed (3008).
    pub write_timeout_ms: u64,
    /// Longest a client may take to send a request's headers.
    pub header_timeout_ms: u64,
    /// Most WebSocket connections this node holds; beyond, the upgrade is answered 503.
    pub max_connections: usize,
    /// Largest request body on any route (413 beyond).
    pub max_body_bytes: usize,
    /// Longest a REST or server API request may take before it is answered 503 (not the
    /// WebSocket, whose sessions live on).
    pub request_timeout_ms: u64,
    /// Origins (`https://app.example.com`) whose pages may call the REST API from a browser;
    /// `*` any. Empty: none but this hub's own (no CORS headers are sent).
    pub cors_origins: Vec<String>,
    /// Serve the dashboard and SDK from this checkout root instead of the copies in the binary.
    pub static_dir: String,
    /// Requests per minute per client address to the routes that need no token.
    #[serde(default = "default_rest_per_ip")]
    pub rest_per_minute_per_ip: u32,
}

impl ServerSettings {
    /// The parsed listen address (validated at start).
    pub fn listen_addr(&self) -> Result<SocketAddr, ConfigError> {
        self.listen
            .parse()
            .map_err(|e| invalid("server.listen", format!("`{}` is not host:port ({e})", self.listen)))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LogSettings {
    pub format: LogFormat,
    pub level: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
pub enum JwtAlgorithm {
    HS256,
    RS256,
    EdDSA,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSettings {
    pub algorithm: JwtAlgorithm,
    #[serde(serialize_with = "masked")]
    pub hmac_secret: SecretString,
    pub public_key_pem: String,
    pub leeway_s: u64,
    pub dev_mode: bool,
    /// When not empty, tokens must carry this `iss`.
    pub issuer: String,
    /// When not empty, tokens must carry this `aud` (or list it).
    pub audience: String,
    /// Refuse tokens without a `jti` (they cannot be revoked). Unset: true in production, false
    /// in development.
    #[serde(default)]
    pub require_jti: Option<bool>,
    /// How long a token exchanged for an API key (`POST /api/v1/token`) is valid.
    #[serde(default = "default_exchange_ttl")]
    pub exchange_ttl_s: u64,
    /// An identity provider's JWKS: set, tokens are verified with its keys (by `kid`), whatever
    /// `algorithm` says.
    #[serde(default)]
    pub jwks_url: String,
    /// The JWKS is fetched again for an unknown key id at most this often.
    #[serde(default = "default_jwks_min_refresh")]
    pub jwks_min_refresh_s: u64,
    /// Where tokens carry the tier: a claim name, or a JSON pointer (`/app_metadata/tier`).
    #[serde(default = "default_tier_claim")]
    pub tier_claim: String,
}

fn default_jwks_min_refresh() -> u64 {
    10
}

fn default_tier_claim() -> String {
    "tier".into()
}

/// Whether a URL names this machine (`localhost` or a loopback address): the only place a
/// connection without TLS is safe to allow.
fn on_this_machine(url: &reqwest::Url) -> bool {
    let host = url.host_str().unwrap_or_default().trim_matches(['[', ']']);
    host == "localhost" || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

fn default_rest_per_ip() -> u32 {
    120
}

fn default_exchange_ttl() -> u64 {
    900
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiSettings {
    #[serde(serialize_with = "masked")]
    pub key: SecretString,
    /// Let the server API publish to the channels the hub feeds from the market.
    pub allow_market_channels: bool,
    /// Let the server API publish to users' personal channels (`alerts:#…`, `advisor:#…`).
    pub allow_personal_channels: bool,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BusSettings {
    #[serde(serialize_with = "masked_url")]
    pub redis_url: String,
    pub redis_prefix: String,
    pub redis_meta_ttl_s: u64,
    pub redis_sharded: bool,
    pub leader_lease_ms: u64,
    pub history_size: usize,
    pub history_ttl_s: u64,
    /// A channel with no subscriber on this node, no publication and no history for this long
    /// has its state freed.
    pub idle_channel_ttl_s: u64,
    pub recovery_max_publications: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseSettings {
    #[serde(serialize_with = "masked_url")]
    pub url: SecretString,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct IngestSettings {
    pub summary_interval_s: u64,
    pub simulated: SimulatedSourceSettings,
    pub farm500: HttpSourceSettings,
    pub vast: HttpSourceSettings,
    pub runpod: HttpSourceSettings,
    /// Vast.ai's host API, for linked portfolio accounts (always polled for them).
    #[serde(default)]
    pub vast_host: VastHostSettings,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct VastHostSettings {
    pub base_url: String,
    pub timeout_ms: u64,
}

impl Default for VastHostSettings {
    fn default() -> Self {
        Self {
            base_url: "https://console.vast.ai".into(),
            timeout_ms: 30_000,
        }
    }
}

/// Keys that seal what users entrust to the hub (platform API keys), AES-256-GCM.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecretsSettings {
    /// 32 bytes in base64 (`openssl rand -base64 32`). Empty: the public development key, which
    /// only development on loopback accepts.
    #[serde(serialize_with = "masked")]
    pub encryption_key: SecretString,
    /// Keys used before, still accepted to open what they sealed (rotation).
    #[serde(serialize_with = "masked_all")]
    pub previous_encryption_keys: Vec<SecretString>,
}

impl SecretsSettings {
    /// The current key: the configured one, or the development key.
    pub fn current_key(&self) -> &str {
        match self.encryption_key.expose_secret() {
            "" => crate::secrets::DEV_KEY,
            key => key,
        }
    }

    pub fn validate(&self, environment: Environment) -> Result<(), ConfigError> {
        if self.encryption_key.expose_secret().is_empty() && environment == Environment::Production {
            return Err(invalid(
                "secrets.encryption_key",
                "required in production (32 random bytes in base64: openssl rand -base64 32)",
            ));
        }
        crate::secrets::parse_key(self.current_key()).map_err(|e| invalid("secrets.encryption_key", e.to_string()))?;
        for key in &self.previous_encryption_keys {
            crate::secrets::parse_key(key.expose_secret())
                .map_err(|e| invalid("secrets.previous_encryption_keys", e.to_string()))?;
        }
        Ok(())
    }
}

/// A host's own machines: polling linked accounts and pricing against the market.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PortfolioSettings {
    /// How often each linked account's machines are read.
    pub poll_interval_ms: u64,
    /// Spread of each account's schedule, as a share of the interval.
    pub jitter_ratio: f64,
    /// Requests per second to the host API across all accounts (Vast allows 2.5 per IP on
    /// `/machines`).
    pub requests_per_second: f64,
    /// How often an account's earnings are read (at most hourly).
    pub earnings_interval_ms: u64,
    /// The share of GPUs a host wants rented; the suggested price aims at it.
    pub target_occupancy: f64,
    /// What a renter pays per unit of the host's listed price (Vast adds its fee on top:
    /// observed 4.0 for a host price of 3.0). Used where the market does not show the machine.
    pub renter_price_ratio: f64,
}

impl Default for PortfolioSettings {
    fn default() -> Self {
        Self {
            poll_interval_ms: 60_000,
            jitter_ratio: 0.1,
            requests_per_second: 2.0,
            earnings_interval_ms: 3_600_000,
            target_occupancy: 0.8,
            renter_price_ratio: 4.0 / 3.0,
        }
    }
}

impl PortfolioSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.poll_interval_ms < 1000 {
            return Err(invalid("portfolio.poll_interval_ms", "must be at least 1000"));
        }
        if !(0.0..=0.5).contains(&self.jitter_ratio) {
            return Err(invalid("portfolio.jitter_ratio", "must be from 0 to 0.5"));
        }
        if !(self.requests_per_second > 0.0 && self.requests_per_second <= 100.0) {
            return Err(invalid(
                "portfolio.requests_per_second",
                "must be above 0 (and at most 100)",
            ));
        }
        if self.earnings_interval_ms < 3_600_000 {
            return Err(invalid(
                "portfolio.earnings_interval_ms",
                "at most hourly: at least 3600000",
            ));
        }
        if !(self.target_occupancy > 0.0 && self.target_occupancy <= 1.0) {
            return Err(invalid("portfolio.target_occupancy", "must be above 0 and at most 1"));
        }
        if !(1.0..=3.0).contains(&self.renter_price_ratio) {
            return Err(invalid("portfolio.renter_price_ratio", "must be from 1 to 3"));
        }
        Ok(())
    }
}

impl IngestSettings {
    /// Whether any real (non-simulated) source is enabled.
    pub fn any_real_source(&self) -> bool {
        self.farm500.enabled || self.vast.enabled || self.runpod.enabled
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SimulatedSourceSettings {
    pub enabled: bool,
    pub poll_interval_ms: u64,
    pub seed: u64,
}

/// Scheduling and endpoint of one polled HTTP source.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSourceSettings {
    pub enabled: bool,
    pub base_url: String,
    #[serde(serialize_with = "masked")]
    pub api_key: SecretString,
    /// Vast.ai only: which search endpoint.
    #[serde(default)]
    pub method: VastMethod,
    pub poll_interval_ms: u64,
    pub jitter_ratio: f64,
    pub timeout_ms: u64,
    pub max_retries: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    pub breaker_failures: u32,
    pub breaker_cooldown_ms: u64,
    pub stale_after_ms: u64,
}

/// Which language model answers advisor questions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AdvisorProviderKind {
    /// Answers from the live aggregates alone, without a language model.
    Offline,
    Anthropic,
    Gemini,
    /// Any server speaking OpenAI's `/v1/chat/completions` (OpenAI, vLLM, Ollama, llama.cpp, Groq…).
    Openai,
}

/// The AI advisor: which provider answers, how long it may stay silent, how often it is retried.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdvisorSettings {
    pub provider: AdvisorProviderKind,
    /// Time allowed for the provider's response headers.
    pub first_byte_timeout_ms: u64,
    /// Longest silence allowed between two stream events once the response started.
    pub idle_timeout_ms: u64,
    /// Attempts after the first, only while no token has reached the client.
    pub max_retries: u32,
    pub backoff_initial_ms: u64,
    pub backoff_max_ms: u64,
    /// Earlier messages of the conversation sent with a question.
    pub history_messages: u32,
    /// Longest question accepted, in characters.
    pub max_question_chars: usize,
    /// Pause between the offline advisor's deltas, so it streams like a model does.
    pub offline_delta_interval_ms: u64,
    pub anthropic: LlmProviderSettings,
    pub gemini: LlmProviderSettings,
    pub openai: LlmProviderSettings,
}

/// Endpoint, key and model of one language-model provider.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LlmProviderSettings {
    pub base_url: String,
    /// Empty: no key is sent (local OpenAI-compatible servers need none).
    #[serde(serialize_with = "masked")]
    pub api_key: SecretString,
    pub model: String,
}

/// What `gpuscout check-config` shows in place of a secret.
const MASK: &str = "********";

/// A setting's text, secret or not, for the masking serializers.
trait Text {
    fn text(&self) -> &str;
}

impl Text for SecretString {
    fn text(&self) -> &str {
        self.expose_secret()
    }
}

impl Text for String {
    fn text(&self) -> &str {
        self
    }
}

/// A secret as [`MASK`] (an unset one as empty, so it shows that it is unset).
fn masked<S: serde::Serializer>(secret: &SecretString, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(if secret.text().is_empty() { "" } else { MASK })
}

fn masked_all<S: serde::Serializer>(secrets: &[SecretString], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(secrets.iter().map(|_| MASK))
}

fn masked_url<S: serde::Serializer>(url: &impl Text, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&mask_url(url.text()))
}

/// A URL with its password (`user:password@`, `?password=`) replaced by [`MASK`]; the rest (the
/// host, the database, `sslmode`) is what an operator checks.
pub fn mask_url(url: &str) -> String {
    let mut out = url.to_owned();
    if let Some(scheme_end) = out.find("://") {
        let rest = scheme_end + 3;
        let authority_end = out[rest..].find(['/', '?', '#']).map_or(out.len(), |i| rest + i);
        if let Some(at) = out[rest..authority_end].rfind('@')
            && let Some(colon) = out[rest..rest + at].find(':')
        {
            out.replace_range(rest + colon + 1..rest + at, MASK);
        }
    }
    if let Some(q) = out.find('?') {
        let (head, query) = out.split_at(q + 1);
        let query: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((k, _)) if k.eq_ignore_ascii_case("password") => format!("{k}={MASK}"),
                _ => pair.to_owned(),
            })
            .collect();
        out = format!("{head}{}", query.join("&"));
    }
    out
}

/// A loading error with the whole key named: serde names an unknown field and config the table
/// holding it (`unknown field `listn` … for key `server``); this says `server.listn`.
fn explain(e: config::ConfigError) -> ConfigError {
    if let config::ConfigError::At {
        error,
        origin,
        key: Some(table),
    } = &e
        && let config::ConfigError::Message(message) = error.as_ref()
    {
        let from = origin.as_ref().map(|o| format!(" (set in {o})")).unwrap_or_default();
        let variable = |name: &str| {
            let name = format!("GPUSCOUT__{}__{}", table.replace('.', "__"), name).to_uppercase();
            let set = std::env::var_os(&name).is_some();
            if set {
                format!(" (set by the environment variable {name})")
            } else {
                from.clone()
            }
        };
        if let Some(rest) = message.strip_prefix("unknown field `")
            && let Some((field, expected)) = rest.split_once('`')
        {
            let expected = expected.trim_start_matches(", ");
            let from = variable(field);
            return invalid(&format!("{table}.{field}"), format!("unknown key{from}; {expected}"));
        }
        if let Some(rest) = message.strip_prefix("enum Tier does not have variant constructor ") {
            let tier = rest.trim();
            return invalid(
                &format!("{table}.{tier}"),
                format!("unknown tier{from}; expected free, individual, professional or enterprise"),
            );
        }
    }
    ConfigError::Load(e)
}

/// A JSON object as TOML: its plain keys, then each table under its dotted name.
fn write_table(out: &mut String, path: &str, value: &serde_json::Value) {
    use std::fmt::Write as _;
    let serde_json::Value::Object(map) = value else { return };
    for (key, v) in map {
        match v {
            serde_json::Value::Object(_) => {}
            serde_json::Value::Null => {
                let _ = writeln!(out, "# {key}: not set");
            }
            _ => {
                let _ = writeln!(out, "{key} = {}", inline(v));
            }
        }
    }
    for (key, v) in map {
        if v.is_object() {
            let name = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            let _ = writeln!(out, "\n[{name}]");
            write_table(out, &name, v);
        }
    }
}

/// A value in TOML's inline form (JSON's strings, numbers and arrays are TOML as they are).
fn inline(value: &serde_json::Value) -> String {
    match value {
        serde_json::Value::Array(items) => {
            format!("[{}]", items.iter().map(inline).collect::<Vec<_>>().join(", "))
        }
        serde_json::Value::Object(map) => {
            let pairs: Vec<String> = map.iter().map(|(k, v)| format!("{k} = {}", inline(v))).collect();
            format!("{{ {} }}", pairs.join(", "))
        }
        other => other.to_string(),
    }
}

impl Settings {
    /// Load the layered settings from the embedded defaults, the config directory and the environment.
    pub fn load() -> Result<Self, ConfigError> {
        let dir = std::env::var("GPUSCOUT_CONFIG_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| PathBuf::from("config"));
        let environment = std::env::var("GPUSCOUT__ENVIRONMENT").unwrap_or_else(|_| "development".into());
        let builder = config::Config::builder()
            .add_source(config::File::from_str(DEFAULT_TOML, config::FileFormat::Toml))
            .add_source(config::File::from(dir.join("default.toml")).required(false))
            .add_source(config::File::from(dir.join(format!("{environment}.toml"))).required(false))
            .add_source(
                config::Environment::with_prefix("GPUSCOUT")
                    .prefix_separator("__")
                    .separator("__")
                    .list_separator(",")
                    .with_list_parse_key("tiers.free.channels")
                    .with_list_parse_key("tiers.individual.channels")
                    .with_list_parse_key("tiers.professional.channels")
                    .with_list_parse_key("tiers.enterprise.channels")
                    .with_list_parse_key("tiers.free.alert_delivery")
                    .with_list_parse_key("tiers.individual.alert_delivery")
                    .with_list_parse_key("tiers.professional.alert_delivery")
                    .with_list_parse_key("tiers.enterprise.alert_delivery")
                    .with_list_parse_key("server.cors_origins")
                    .with_list_parse_key("secrets.previous_encryption_keys")
                    .try_parsing(true),
            );
        let mut settings: Settings = builder.build()?.try_deserialize().map_err(explain)?;
        // Defaults that depend on the environment.
        settings
            .auth
            .require_jti
            .get_or_insert(settings.environment == Environment::Production);
        settings.validate()?;
        Ok(settings)
    }

    /// The effective configuration as TOML, secrets masked (`gpuscout check-config`): every key
    /// with the value this process runs with, defaults included; an unset optional key as a
    /// comment.
    pub fn effective_toml(&self) -> String {
        let value = serde_json::to_value(self).expect("settings are plain data");
        let mut out = String::new();
        write_table(&mut out, "", &value);
        out
    }

    /// The embedded defaults alone (tests start from these and change what they need).
    pub fn defaults() -> Self {
        config::Config::builder()
            .add_source(config::File::from_str(DEFAULT_TOML, config::FileFormat::Toml))
            .build()
            .and_then(|c| c.try_deserialize())
            .expect("the embedded config/default.toml is valid")
    }

    /// Check every value that serde cannot, naming the key at fault: each section checks its own
    /// keys, the tiers last.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.server.validate()?;
        self.bus.validate()?;
        self.database.validate()?;
        self.ingest.validate()?;
        self.alerts.validate()?;
        self.advisor.validate()?;
        self.auth.validate(self.environment)?;
        self.push.validate()?;
        self.email.validate()?;
        self.secrets.validate(self.environment)?;
        self.portfolio.validate()?;
        self.store.validate()?;
        self.validate_exposure()?;
        for tier in Tier::ALL {
            let Some(t) = self.tiers.get(&tier) else {
                return Err(invalid(&format!("tiers.{}", tier.as_str()), "missing tier section"));
            };
            validate_tier(tier, t)?;
        }
        Ok(())
    }

    /// What is safe only on a laptop stays on one: development mode (tokens for anyone from
    /// `/api/v1/dev/token`) and the development secret (anyone can mint tokens) are refused on a
    /// listen address other machines can reach, in every environment.
    fn validate_exposure(&self) -> Result<(), ConfigError> {
        let addr = self.server.listen_addr()?;
        if addr.ip().is_loopback() {
            return Ok(());
        }
        let listen = format!("server.listen = {addr} is not a loopback address");
        if self.auth.dev_mode {
            return Err(invalid(
                "auth.dev_mode",
                format!(
                    "{listen}: development mode hands out tokens to anyone; set auth.dev_mode = false (GPUSCOUT__AUTH__DEV_MODE=false) or listen on 127.0.0.1"
                ),
            ));
        }
        if self.auth.algorithm == JwtAlgorithm::HS256 && self.auth.hmac_secret.expose_secret() == DEV_SECRET {
            return Err(invalid(
                "auth.hmac_secret",
                format!(
                    "{listen}: the development secret is public; set GPUSCOUT__AUTH__HMAC_SECRET or listen on 127.0.0.1"
                ),
            ));
        }
        if self.secrets.current_key() == crate::secrets::DEV_KEY {
            return Err(invalid(
                "secrets.encryption_key",
                format!(
                    "{listen}: the development key is public; set GPUSCOUT__SECRETS__ENCRYPTION_KEY (openssl rand -base64 32) or listen on 127.0.0.1"
                ),
            ));
        }
        Ok(())
    }

    pub fn tier(&self, tier: Tier) -> &TierSettings {
        // validate() guarantees every tier has a section.
        &self.tiers[&tier]
    }
}

impl ServerSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen_addr()?;
        let s = self;
        for (key, value) in [
            ("server.ping_interval_s", s.ping_interval_s as usize),
            ("server.pong_timeout_s", s.pong_timeout_s as usize),
            ("server.connect_timeout_s", s.connect_timeout_s as usize),
            ("server.max_message_bytes", s.max_message_bytes),
            ("server.read_buffer_bytes", s.read_buffer_bytes),
            ("server.write_buffer_bytes", s.write_buffer_bytes),
            ("server.outbox_max_bytes", s.outbox_max_bytes),
            ("server.outbox_max_messages", s.outbox_max_messages),
            ("server.max_batch_bytes", s.max_batch_bytes),
            ("server.write_timeout_ms", s.write_timeout_ms as usize),
            ("server.header_timeout_ms", s.header_timeout_ms as usize),
            ("server.max_connections", s.max_connections),
            ("server.max_body_bytes", s.max_body_bytes),
            ("server.request_timeout_ms", s.request_timeout_ms as usize),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        if s.write_delay_ms > 1000 {
            return Err(invalid("server.write_delay_ms", "must be at most 1000"));
        }
        if s.max_write_buffer_bytes <= s.write_buffer_bytes {
            return Err(invalid(
                "server.max_write_buffer_bytes",
                "must be greater than server.write_buffer_bytes",
            ));
        }
        for origin in &s.cors_origins {
            if !is_origin(origin) {
                return Err(invalid(
                    "server.cors_origins",
                    format!("`{origin}` is not an origin: scheme://host[:port] with no path, or *"),
                ));
            }
        }
        Ok(())
    }
}

/// `*`, or `http(s)://host[:port]` as a browser sends it in `Origin` (no path, no trailing slash).
fn is_origin(origin: &str) -> bool {
    if origin == "*" {
        return true;
    }
    let Some(rest) = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
    else {
        return false;
    };
    !rest.is_empty() && !rest.contains(['/', '?', '#', ' ', '@'])
}

impl BusSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.history_size == 0 {
            return Err(invalid("bus.history_size", "must be greater than 0"));
        }
        let redis = &self.redis_url;
        let schemes = ["redis://", "rediss://", "redis-cluster://", "rediss-cluster://"];
        if !(redis.is_empty() || schemes.iter().any(|s| redis.starts_with(s))) {
            return Err(invalid(
                "bus.redis_url",
                "must be empty (the in-process bus) or start with redis://, rediss://, redis-cluster:// or rediss-cluster://",
            ));
        }
        let prefix = &self.redis_prefix;
        if prefix.is_empty() || !prefix.chars().all(|c| c.is_ascii_alphanumeric() || "-_:".contains(c)) {
            return Err(invalid(
                "bus.redis_prefix",
                "must be non-empty: letters, digits, '-', '_' or ':'",
            ));
        }
        if self.leader_lease_ms < 1000 {
            return Err(invalid("bus.leader_lease_ms", "must be at least 1000"));
        }
        Ok(())
    }
}

impl DatabaseSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be greater than 0"));
        }
        let url = self.url.expose_secret();
        if !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://")) {
            return Err(invalid(
                "database.url",
                "must start with sqlite:, postgres:// or postgresql://",
            ));
        }
        Ok(())
    }
}

impl IngestSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.simulated.poll_interval_ms < 10 {
            return Err(invalid("ingest.simulated.poll_interval_ms", "must be at least 10"));
        }
        if self.summary_interval_s == 0 {
            return Err(invalid("ingest.summary_interval_s", "must be greater than 0"));
        }
        self.farm500.validate("farm500")?;
        self.vast.validate("vast")?;
        self.runpod.validate("runpod")?;
        if self.runpod.enabled && self.runpod.api_key.expose_secret().is_empty() {
            return Err(invalid(
                "ingest.runpod.api_key",
                "RunPod requires an API key; set it or disable the source",
            ));
        }
        Ok(())
    }
}

impl HttpSourceSettings {
    /// The keys of `ingest.<name>`; nothing to check while the source is disabled.
    pub fn validate(&self, name: &str) -> Result<(), ConfigError> {
        let key = |k: &str| format!("ingest.{name}.{k}");
        if !self.enabled {
            return Ok(());
        }
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return Err(invalid(&key("base_url"), "must be an http:// or https:// URL"));
        }
        if self.poll_interval_ms < 100 {
            return Err(invalid(&key("poll_interval_ms"), "must be at least 100"));
        }
        if self.timeout_ms == 0 {
            return Err(invalid(&key("timeout_ms"), "must be greater than 0"));
        }
        if !(0.0..=0.5).contains(&self.jitter_ratio) {
            return Err(invalid(&key("jitter_ratio"), "must be between 0 and 0.5"));
        }
        if self.breaker_failures == 0 {
            return Err(invalid(&key("breaker_failures"), "must be greater than 0"));
        }
        Ok(())
    }
}

impl AlertSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.webhook_max_attempts == 0 {
            return Err(invalid("alerts.webhook_max_attempts", "must be at least 1"));
        }
        if self.reconcile_interval_ms == 0 {
            return Err(invalid("alerts.reconcile_interval_ms", "must be greater than 0"));
        }
        if self.outbox_poll_ms == 0 || self.webhook_timeout_ms == 0 {
            return Err(invalid(
                "alerts.outbox_poll_ms",
                "alerts.outbox_poll_ms and alerts.webhook_timeout_ms must be greater than 0",
            ));
        }
        if self.webhook_timeout_ms > 120_000 {
            // A delivery is claimed for 5 minutes per attempt; an attempt must end well within it.
            return Err(invalid(
                "alerts.webhook_timeout_ms",
                "must be at most 120000 (2 minutes)",
            ));
        }
        Ok(())
    }
}

impl AuthSettings {
    /// The key material the algorithm needs; in production, no development secret or dev mode.
    pub fn validate(&self, environment: Environment) -> Result<(), ConfigError> {
        match self.algorithm {
            JwtAlgorithm::HS256 => {
                if self.hmac_secret.expose_secret().len() < 32 {
                    return Err(invalid("auth.hmac_secret", "must be at least 32 bytes for HS256"));
                }
            }
            JwtAlgorithm::RS256 | JwtAlgorithm::EdDSA => {
                // With a JWKS the provider's keys verify; the configured key is not needed.
                if self.public_key_pem.trim().is_empty() && self.jwks_url.is_empty() {
                    return Err(invalid(
                        "auth.public_key_pem",
                        "required when auth.algorithm is RS256 or EdDSA",
                    ));
                }
            }
        }
        if !self.jwks_url.is_empty() {
            let url = reqwest::Url::parse(&self.jwks_url)
                .ok()
                .filter(|u| matches!(u.scheme(), "https" | "http"))
                .ok_or_else(|| invalid("auth.jwks_url", "must be the provider's JWKS URL (https://…)"))?;
            // Keys fetched in the clear could be swapped on the way: http only on this machine,
            // and never in production.
            if url.scheme() == "http" && (environment == Environment::Production || !on_this_machine(&url)) {
                return Err(invalid(
                    "auth.jwks_url",
                    "must be https (http only to this machine, outside production)",
                ));
            }
        }
        if !self.tier_claim.starts_with('/') && self.tier_claim.trim().is_empty() {
            return Err(invalid(
                "auth.tier_claim",
                "a claim name, or a JSON pointer such as /app_metadata/tier",
            ));
        }
        if environment == Environment::Production {
            if self.algorithm == JwtAlgorithm::HS256 && self.hmac_secret.expose_secret() == DEV_SECRET {
                return Err(invalid(
                    "auth.hmac_secret",
                    "the development secret is refused in production; set GPUSCOUT__AUTH__HMAC_SECRET",
                ));
            }
            if self.dev_mode {
                return Err(invalid("auth.dev_mode", "must be false in production"));
            }
        }
        Ok(())
    }
}

impl AdvisorSettings {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let a = self;
        for (key, value) in [
            ("advisor.first_byte_timeout_ms", a.first_byte_timeout_ms),
            ("advisor.idle_timeout_ms", a.idle_timeout_ms),
            ("advisor.backoff_initial_ms", a.backoff_initial_ms),
            ("advisor.backoff_max_ms", a.backoff_max_ms),
            ("advisor.max_question_chars", a.max_question_chars as u64),
        ] {
            if value == 0 {
                return Err(invalid(key, "must be greater than 0"));
            }
        }
        let (name, provider) = match a.provider {
            AdvisorProviderKind::Offline => return Ok(()),
            AdvisorProviderKind::Anthropic => ("anthropic", &a.anthropic),
            AdvisorProviderKind::Gemini => ("gemini", &a.gemini),
            AdvisorProviderKind::Openai => ("openai", &a.openai),
        };
        if !(provider.base_url.starts_with("http://") || provider.base_url.starts_with("https://")) {
            return Err(invalid(
                &format!("advisor.{name}.base_url"),
                "must be an http:// or https:// URL",
            ));
        }
        if provider.model.trim().is_empty() {
            return Err(invalid(&format!("advisor.{name}.model"), "must name a model"));
        }
        if name != "openai" && provider.api_key.expose_secret().is_empty() {
            return Err(invalid(
                &format!("advisor.{name}.api_key"),
                "this provider requires an API key; set it or use advisor.provider = \"offline\"",
            ));
        }
        Ok(())
    }
}

/// The numbers of `tiers.<tier>` that must be positive, and its channel patterns.
fn validate_tier(tier: Tier, t: &TierSettings) -> Result<(), ConfigError> {
    let key = |k: &str| format!("tiers.{}.{k}", tier.as_str());
    for (k, v) in [
        ("connections_per_user", t.connections_per_user),
        ("channels_per_connection", t.channels_per_connection),
        ("commands_per_second", t.commands_per_second),
        ("command_burst", t.command_burst),
        ("user_commands_per_second", t.user_commands_per_second),
        ("advisor_max_tokens", t.advisor_max_tokens),
    ] {
        if v == 0 {
            return Err(invalid(&key(k), "must be greater than 0"));
        }
    }
    for channel in &t.alert_delivery {
        if !["socket", "push", "email", "webhook"].contains(&channel.as_str()) {
            return Err(invalid(
                &key("alert_delivery"),
                format!("`{channel}`: the channels are socket, push, email and webhook"),
            ));
        }
    }
    for pattern in &t.channels {
        let body = pattern.strip_prefix('!').unwrap_or(pattern);
        if body.is_empty() || body[..body.len().saturating_sub(1)].contains('*') {
            return Err(invalid(
                &key("channels"),
                format!("`{pattern}`: a pattern is a name, or a prefix ending in `*`"),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tier::authorize_subscribe;

    #[test]
    fn embedded_defaults_are_valid() {
        let s = Settings::defaults();
        s.validate().unwrap();
        assert_eq!(s.server.listen, "127.0.0.1:8080");
        assert_eq!(s.database.url.expose_secret(), "sqlite://data/gpuscout.db");
        assert!(s.bus.redis_url.is_empty());
        assert!(s.ingest.simulated.enabled);
    }

    #[test]
    fn bad_values_name_their_key() {
        let mut s = Settings::defaults();
        s.server.listen = "nowhere".into();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("server.listen"), "{err}");

        let mut s = Settings::defaults();
        s.environment = Environment::Production;
        s.auth.dev_mode = false;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("auth.hmac_secret"), "{err}");
        // Production needs its own key for what users entrust to the hub.
        s.auth.hmac_secret = SecretString::from("a-real-secret-of-at-least-thirty-two-bytes");
        let err = s.validate().unwrap_err().to_string();
        assert!(
            err.contains("secrets.encryption_key") && err.contains("production"),
            "{err}"
        );
        s.secrets.encryption_key = SecretString::from("not base64!");
        let err = s.validate().unwrap_err().to_string();
        assert!(
            err.contains("secrets.encryption_key") && err.contains("32 bytes"),
            "{err}"
        );

        let mut s = Settings::defaults();
        assert_eq!(s.server.write_delay_ms, 0, "writes are not delayed by default");
        s.server.write_delay_ms = 1001;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("server.write_delay_ms"), "{err}");

        let mut s = Settings::defaults();
        s.tiers.get_mut(&Tier::Free).unwrap().channels_per_connection = 0;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("tiers.free.channels_per_connection"), "{err}");

        let mut s = Settings::defaults();
        s.advisor.provider = AdvisorProviderKind::Anthropic;
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("advisor.anthropic.api_key"), "{err}");
        s.advisor.provider = AdvisorProviderKind::Openai;
        s.advisor.openai.base_url = "localhost:11434".into();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("advisor.openai.base_url"), "{err}");
    }

    #[test]
    fn laptop_settings_refuse_a_reachable_listen_address() {
        let mut s = Settings::defaults();
        s.server.listen = "0.0.0.0:8080".into();
        let err = s.validate().unwrap_err().to_string();
        assert!(err.contains("auth.dev_mode") && err.contains("server.listen"), "{err}");

        s.auth.dev_mode = false;
        let err = s.validate().unwrap_err().to_string();
        assert!(
            err.contains("auth.hmac_secret") && err.contains("server.listen"),
            "{err}"
        );

        s.auth.hmac_secret = SecretString::from("a-real-secret-of-at-least-thirty-two-bytes");
        let err = s.validate().unwrap_err().to_string();
        assert!(
            err.contains("secrets.encryption_key") && err.contains("server.listen"),
            "{err}"
        );
        s.secrets.encryption_key = SecretString::from("MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=");
        s.validate().unwrap();
        // Loopback, v4 or v6, keeps the laptop defaults.
        for listen in ["127.0.0.1:8080", "[::1]:8080"] {
            let mut s = Settings::defaults();
            s.server.listen = listen.into();
            s.validate().unwrap();
        }
    }

    #[test]
    fn the_offline_advisor_is_the_default() {
        assert_eq!(Settings::defaults().advisor.provider, AdvisorProviderKind::Offline);
    }

    #[test]
    fn tier_table_of_design() {
        let s = Settings::defaults();
        let check = |tier: Tier, channel: &str| authorize_subscribe(s.tier(tier), "42", channel).map(|_| ());
        assert!(check(Tier::Free, "market:summary.1m").is_ok());
        assert_eq!(check(Tier::Free, "market:summary").unwrap_err().code, 103);
        assert_eq!(check(Tier::Free, "gpu:rtx-4090").unwrap_err().code, 103);
        assert!(check(Tier::Individual, "market:summary").is_ok());
        assert!(check(Tier::Individual, "gpu:rtx-4090").is_ok());
        assert_eq!(check(Tier::Individual, "offers:rtx-4090").unwrap_err().code, 103);
        assert!(check(Tier::Professional, "offers:rtx-4090").is_ok());
        assert_eq!(check(Tier::Professional, "offers:all").unwrap_err().code, 103);
        assert!(check(Tier::Enterprise, "offers:all").is_ok());
        assert!(check(Tier::Free, "alerts:#42").is_ok());
        assert_eq!(check(Tier::Enterprise, "alerts:#7").unwrap_err().code, 103);
        assert_eq!(check(Tier::Enterprise, "weird:thing").unwrap_err().code, 102);
    }

    #[test]
    fn email_needs_tls_beyond_this_machine_and_a_sender() {
        let email = |url: &str, from: &str| EmailSettings {
            smtp_url: url.into(),
            from: from.into(),
            ..EmailSettings::default()
        };
        let from = "GPUScout <alerts@example.com>";
        EmailSettings::default().validate().unwrap();
        email("smtp://127.0.0.1:2525", from).validate().unwrap();
        email("smtp://localhost:25", from).validate().unwrap();
        email("smtps://user:pw@mail.example.com:465", from).validate().unwrap();
        email("smtp://mail.example.com:587?tls=required", from)
            .validate()
            .unwrap();
        let err = email("smtp://mail.example.com:25", from)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("email.smtp_url") && err.contains("TLS"), "{err}");
        let err = email("http://mail.example.com", from)
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("email.smtp_url"), "{err}");
        let err = email("smtp://127.0.0.1:2525", "not an address")
            .validate()
            .unwrap_err()
            .to_string();
        assert!(err.contains("email.from"), "{err}");
    }

    #[test]
    fn webhooks_need_the_tiers_webhooks_as_well_as_its_alert_delivery() {
        let s = Settings::defaults();
        assert!(!s.tier(Tier::Free).delivers("webhook"));
        assert!(s.tier(Tier::Free).delivers("email"));
        assert!(s.tier(Tier::Individual).delivers("webhook"));
        let mut t = s.tier(Tier::Individual).clone();
        t.webhooks = false;
        assert!(!t.delivers("webhook"));
        t.alert_delivery = vec!["socket".into(), "fax".into()];
        let err = validate_tier(Tier::Individual, &t).unwrap_err().to_string();
        assert!(err.contains("tiers.individual.alert_delivery"), "{err}");
    }

    #[test]
    fn a_jwks_url_replaces_the_public_key_and_is_https_in_production() {
        let mut auth = Settings::defaults().auth;
        auth.algorithm = JwtAlgorithm::RS256;
        let err = auth.validate(Environment::Development).unwrap_err().to_string();
        assert!(err.contains("auth.public_key_pem"), "{err}");
        auth.jwks_url = "http://127.0.0.1:9999/jwks.json".into();
        auth.validate(Environment::Development).unwrap();
        auth.dev_mode = false;
        let err = auth.validate(Environment::Production).unwrap_err().to_string();
        assert!(err.contains("auth.jwks_url") && err.contains("https"), "{err}");
        auth.jwks_url = "https://id.example.com/.well-known/jwks.json".into();
        auth.validate(Environment::Production).unwrap();
        auth.jwks_url = "not a url".into();
        assert!(auth.validate(Environment::Development).is_err());
        // In the clear to another machine: refused even in development.
        auth.jwks_url = "http://id.example.com/jwks.json".into();
        let err = auth.validate(Environment::Development).unwrap_err().to_string();
        assert!(err.contains("auth.jwks_url") && err.contains("https"), "{err}");
    }
}
