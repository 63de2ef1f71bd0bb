//! Authentication and authorisation: connection JWTs, tiers and their channel policy, the server
//! API key. Never talks to sockets: callers turn its errors into protocol codes.

use std::fmt;
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::config::{AuthSettings, JwtAlgorithm, TierSettings};
use crate::protocol::ProtoError;

/// Subscription tier, from the token's `tier` claim.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
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

/// Claims of a connection token.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    /// User id; appears in personal channels (`alerts:#<sub>`).
    pub sub: String,
    pub tier: Tier,
    /// Expiry, seconds since the epoch.
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("tokens can only be minted with an HS256 secret")]
    CannotMint,
}

/// Verifies (and, with an HS256 secret, mints) connection tokens.
pub struct TokenVerifier {
    decoding: DecodingKey,
    encoding: Option<EncodingKey>,
    validation: Validation,
}

impl TokenVerifier {
    pub fn new(settings: &AuthSettings) -> Result<Self, AuthError> {
        let (decoding, encoding, algorithm) = match settings.algorithm {
            JwtAlgorithm::HS256 => {
                let secret = settings.hmac_secret.expose_secret().as_bytes();
                (
                    DecodingKey::from_secret(secret),
                    Some(EncodingKey::from_secret(secret)),
                    Algorithm::HS256,
                )
            }
            JwtAlgorithm::RS256 => (
                DecodingKey::from_rsa_pem(settings.public_key_pem.as_bytes())
                    .map_err(|e| AuthError::Invalid(format!("auth.public_key_pem: {e}")))?,
                None,
                Algorithm::RS256,
            ),
            JwtAlgorithm::EdDSA => (
                DecodingKey::from_ed_pem(settings.public_key_pem.as_bytes())
                    .map_err(|e| AuthError::Invalid(format!("auth.public_key_pem: {e}")))?,
                None,
                Algorithm::EdDSA,
            ),
        };
        // Exactly one algorithm is accepted: a token signed any other way (or `alg: none`) fails.
        let mut validation = Validation::new(algorithm);
        validation.leeway = settings.leeway_s;
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_aud = false;
        Ok(Self {
            decoding,
            encoding,
            validation,
        })
    }

    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        use jsonwebtoken::errors::ErrorKind;
        let data =
            jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation).map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                _ => AuthError::Invalid(e.to_string()),
            })?;
        let claims = data.claims;
        if !valid_user_id(&claims.sub) {
            return Err(AuthError::Invalid(
                "sub must be 1-64 characters of [A-Za-z0-9_-]".into(),
            ));
        }
        Ok(claims)
    }

    /// Mint a token for `user` at `tier`, valid for `ttl_s` seconds.
    pub fn mint(&self, user: &str, tier: Tier, ttl_s: u64) -> Result<String, AuthError> {
        let key = self.encoding.as_ref().ok_or(AuthError::CannotMint)?;
        if !valid_user_id(user) {
            return Err(AuthError::Invalid(
                "user must be 1-64 characters of [A-Za-z0-9_-]".into(),
            ));
        }
        let now = unix_now_s();
        let claims = Claims {
            sub: user.to_owned(),
            tier,
            exp: now + ttl_s,
            iat: Some(now),
            jti: Some(uuid::Uuid::new_v4().to_string()),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, key)
            .map_err(|e| AuthError::Invalid(e.to_string()))
    }
}

pub fn unix_now_s() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

pub fn unix_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn valid_user_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// A channel the hub knows, parsed from its name (DESIGN §5).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelKind<'a> {
    MarketSummary,
    MarketSummary1m,
    Gpu(&'a str),
    Offers(&'a str),
    OffersAll,
    Alerts(&'a str),
    Advisor(&'a str),
    SourcesStatus,
}

impl<'a> ChannelKind<'a> {
    /// Parse a channel name; `None` for a name the hub does not serve (error 102).
    pub fn parse(name: &'a str) -> Option<Self> {
        if name.len() > 255 {
            return None;
        }
        let (namespace, rest) = name.split_once(':')?;
        match (namespace, rest) {
            ("market", "summary") => Some(Self::MarketSummary),
            ("market", "summary.1m") => Some(Self::MarketSummary1m),
            ("sources", "status") => Some(Self::SourcesStatus),
            ("offers", "all") => Some(Self::OffersAll),
            ("gpu", model) if valid_model_slug(model) => Some(Self::Gpu(model)),
            ("offers", model) if valid_model_slug(model) => Some(Self::Offers(model)),
            ("alerts", user) => user.strip_prefix('#').filter(|u| valid_user_id(u)).map(Self::Alerts),
            ("advisor", user) => user.strip_prefix('#').filter(|u| valid_user_id(u)).map(Self::Advisor),
            _ => None,
        }
    }

    /// The user a personal channel (`#<uid>`) belongs to.
    pub fn owner(&self) -> Option<&'a str> {
        match self {
            Self::Alerts(u) | Self::Advisor(u) => Some(u),
            _ => None,
        }
    }
}

fn valid_model_slug(slug: &str) -> bool {
    !slug.is_empty()
        && slug.len() <= 64
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

/// The channels of a user's personal, server-side subscriptions.
pub fn personal_channels(user: &str) -> [String; 2] {
    [format!("alerts:#{user}"), format!("advisor:#{user}")]
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

/// Compare secrets in time independent of where they differ.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Settings;

    fn settings() -> Settings {
        Settings::defaults()
    }

    #[test]
    fn channel_names_parse() {
        assert_eq!(ChannelKind::parse("gpu:rtx-4090"), Some(ChannelKind::Gpu("rtx-4090")));
        assert_eq!(ChannelKind::parse("alerts:#42"), Some(ChannelKind::Alerts("42")));
        assert_eq!(ChannelKind::parse("alerts:42"), None);
        assert_eq!(ChannelKind::parse("market:other"), None);
        assert_eq!(ChannelKind::parse("gpu:RTX 4090"), None);
        assert_eq!(ChannelKind::parse("nochannel"), None);
    }

    #[test]
    fn tier_table_of_design() {
        let s = settings();
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
    fn tokens_round_trip_and_reject_tampering() {
        let s = settings();
        let v = TokenVerifier::new(&s.auth).unwrap();
        let token = v.mint("42", Tier::Professional, 60).unwrap();
        let claims = v.verify(&token).unwrap();
        assert_eq!(claims.sub, "42");
        assert_eq!(claims.tier, Tier::Professional);
        let mut forged = token.clone();
        forged.pop();
        forged.push(if token.ends_with('A') { 'B' } else { 'A' });
        assert!(matches!(v.verify(&forged), Err(AuthError::Invalid(_))));
    }
}
