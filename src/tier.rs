//! Subscription tiers and their policy: which channels a tier may join, and the limits that
//! [`TierSettings`] (from configuration) set for it. Used by configuration, authentication and
//! the hub alike, so it depends on neither.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::channels::ChannelKind;
use crate::protocol::ProtoError;

/// Subscription tier, from the token's `tier` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Tier {
    Free,
    Individual,
    Professional,
    Enterprise,
}

impl Tier {
    pub const ALL: [Tier; 4] = [Tier::Free, Tier::Individual, Tier::Professional, Tier::Enterprise];

    pub fn as_str(self) -> &'static str {
        match self {
            Tier::Free => "free",
            Tier::Individual => "individual",
            Tier::Professional => "professional",
            Tier::Enterprise => "enterprise",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Tier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Tier {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Tier::ALL
            .into_iter()
            .find(|t| t.as_str() == s)
            .ok_or_else(|| format!("unknown tier `{s}` (free, individual, professional, enterprise)"))
    }
}

/// What one subscription tier may do. Every number here is policy, so it lives in configuration.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TierSettings {
    pub connections_per_user: u32,
    pub channels_per_connection: u32,
    pub commands_per_second: u32,
    pub command_burst: u32,
    pub user_commands_per_second: u32,
    pub channels: Vec<String>,
    pub max_gpu_channels: u32,
    /// Alert rules a user may keep.
    pub alert_rules: u32,
    /// Whether alert rules may post to webhooks.
    pub webhooks: bool,
    /// REST requests per user per minute.
    #[serde(default = "default_rest_per_minute")]
    pub rest_per_minute: u32,
    /// Live API keys a user may hold.
    #[serde(default)]
    pub api_keys: u32,
    /// Linked platform accounts a user may keep (`"unlimited"` or a number).
    #[serde(default, deserialize_with = "limit", serialize_with = "limit_out")]
    pub portfolio_accounts: u32,
    /// Machines a user's portfolio may hold, linked and hand-entered together.
    #[serde(default, deserialize_with = "limit", serialize_with = "limit_out")]
    pub portfolio_machines: u32,
    /// Where alerts may be delivered (`socket`, `push`, `email`, `webhook`; a webhook also needs
    /// `webhooks`).
    #[serde(default = "all_alert_delivery")]
    pub alert_delivery: Vec<String>,
    /// Advisor questions per user per UTC day.
    pub advisor_messages_per_day: u32,
    /// Advisor tokens (prompt and answer) per user per UTC day.
    pub advisor_tokens_per_day: u64,
    /// Most tokens one advisor answer may have (sent to the provider as its output limit).
    pub advisor_max_tokens: u32,
}

fn default_rest_per_minute() -> u32 {
    600
}

/// A count, or `"unlimited"` (`u32::MAX`).
fn limit<'de, D: serde::Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Limit {
        Count(u32),
        Word(String),
    }
    match Limit::deserialize(d)? {
        Limit::Count(n) => Ok(n),
        Limit::Word(w) if w == "unlimited" => Ok(u32::MAX),
        Limit::Word(w) => Err(serde::de::Error::custom(format!("`{w}`: a count or \"unlimited\""))),
    }
}

/// A count as [`limit`] reads it: `u32::MAX` as `"unlimited"`.
fn limit_out<S: serde::Serializer>(n: &u32, s: S) -> Result<S::Ok, S::Error> {
    if *n == u32::MAX {
        s.serialize_str("unlimited")
    } else {
        s.serialize_u32(*n)
    }
}

fn all_alert_delivery() -> Vec<String> {
    ["socket", "push", "email", "webhook"].map(String::from).to_vec()
}

impl TierSettings {
    /// Whether this tier's alerts may go to `channel` (`socket`, `push`, `email`, `webhook`).
    pub fn delivers(&self, channel: &str) -> bool {
        self.alert_delivery.iter().any(|c| c == channel) && (channel != "webhook" || self.webhooks)
    }
}

/// Decide whether `user` at `policy` may subscribe to `channel`.
///
/// Returns 102 for a name the hub does not serve, 103 when the tier (or the owner rule of a
/// personal channel) forbids it.
pub fn authorize_subscribe<'a>(
    policy: &TierSettings,
    user: &str,
    channel: &'a str,
) -> Result<ChannelKind<'a>, ProtoError> {
    let kind = ChannelKind::parse(channel).ok_or_else(ProtoError::unknown_channel)?;
    if let Some(owner) = kind.owner()
        && owner != user
    {
        return Err(ProtoError::permission_denied());
    }
    let mut allowed = false;
    for pattern in &policy.channels {
        let (deny, body) = match pattern.strip_prefix('!') {
            Some(body) => (true, body),
            None => (false, pattern.as_str()),
        };
        if pattern_matches(body, user, channel) {
            if deny {
                return Err(ProtoError::permission_denied());
            }
            allowed = true;
        }
    }
    if !allowed {
        return Err(ProtoError::permission_denied());
    }
    Ok(kind)
}

fn pattern_matches(pattern: &str, user: &str, channel: &str) -> bool {
    let expanded;
    let pattern = if pattern.contains("{user}") {
        expanded = pattern.replace("{user}", user);
        expanded.as_str()
    } else {
        pattern
    };
    match pattern.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => channel == pattern,
    }
}
