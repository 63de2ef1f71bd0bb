//! Channel names (DESIGN §5): parsed into [`ChannelKind`] and built by the functions here, the one
//! place that knows how a name is spelled. Knows nothing of tiers or subscribers.

/// Most bytes in a channel name.
const MAX_NAME_BYTES: usize = 255;

/// Per-model aggregates, in real time (deltas).
pub const MARKET_SUMMARY: &str = "market:summary";
/// Per-model aggregates, a snapshot once a minute.
pub const MARKET_SUMMARY_1M: &str = "market:summary.1m";
/// Every offer's deltas (the firehose).
pub const OFFERS_ALL: &str = "offers:all";
/// Health and freshness of every source.
pub const SOURCES_STATUS: &str = "sources:status";

/// `gpu:<model>`: one model's segments.
pub fn gpu(model: &str) -> String {
    format!("gpu:{model}")
}

/// `offers:<model>`: one model's offer deltas.
pub fn offers(model: &str) -> String {
    format!("offers:{model}")
}

/// `alerts:#<uid>`: the user's fired alerts.
pub fn alerts(user: &str) -> String {
    format!("alerts:#{user}")
}

/// `advisor:#<uid>`: the user's advisor answers as they stream.
pub fn advisor(user: &str) -> String {
    format!("advisor:#{user}")
}

/// `portfolio:#<uid>`: the user's own machines, placed in the market.
pub fn portfolio(user: &str) -> String {
    format!("portfolio:#{user}")
}

/// A user id that may appear in a personal channel name (`alerts:#<uid>`): what tokens must carry.
pub fn valid_user_id(id: &str) -> bool {
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
    Portfolio(&'a str),
    SourcesStatus,
}

impl<'a> ChannelKind<'a> {
    /// Parse a channel name; `None` for a name the hub does not serve (error 102).
    pub fn parse(name: &'a str) -> Option<Self> {
        if name.len() > MAX_NAME_BYTES {
            return None;
        }
        let (namespace, rest) = name.split_once(':')?;
        match (namespace, rest) {
            _ if name == MARKET_SUMMARY => Some(Self::MarketSummary),
            _ if name == MARKET_SUMMARY_1M => Some(Self::MarketSummary1m),
            _ if name == SOURCES_STATUS => Some(Self::SourcesStatus),
            _ if name == OFFERS_ALL => Some(Self::OffersAll),
            ("gpu", model) if valid_model_slug(model) => Some(Self::Gpu(model)),
            ("offers", model) if valid_model_slug(model) => Some(Self::Offers(model)),
            ("alerts", user) => user.strip_prefix('#').filter(|u| valid_user_id(u)).map(Self::Alerts),
            ("advisor", user) => user.strip_prefix('#').filter(|u| valid_user_id(u)).map(Self::Advisor),
            ("portfolio", user) => user.strip_prefix('#').filter(|u| valid_user_id(u)).map(Self::Portfolio),
            _ => None,
        }
    }

    /// The user a personal channel (`#<uid>`) belongs to.
    pub fn owner(&self) -> Option<&'a str> {
        match self {
            Self::Alerts(u) | Self::Advisor(u) | Self::Portfolio(u) => Some(u),
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
pub fn personal_channels(user: &str) -> [String; 3] {
    [alerts(user), advisor(user), portfolio(user)]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channel_names_parse() {
        assert_eq!(ChannelKind::parse("gpu:rtx-4090"), Some(ChannelKind::Gpu("rtx-4090")));
        assert_eq!(ChannelKind::parse("alerts:#42"), Some(ChannelKind::Alerts("42")));
        assert_eq!(ChannelKind::parse("alerts:42"), None);
        assert_eq!(ChannelKind::parse("market:other"), None);
        assert_eq!(ChannelKind::parse("gpu:RTX 4090"), None);
        assert_eq!(ChannelKind::parse("nochannel"), None);
        for name in [MARKET_SUMMARY, MARKET_SUMMARY_1M, OFFERS_ALL, SOURCES_STATUS] {
            assert!(ChannelKind::parse(name).is_some(), "{name}");
        }
        assert_eq!(ChannelKind::parse(&gpu("h100")), Some(ChannelKind::Gpu("h100")));
        assert_eq!(ChannelKind::parse(&offers("h100")), Some(ChannelKind::Offers("h100")));
        assert_eq!(ChannelKind::parse(&advisor("7")), Some(ChannelKind::Advisor("7")));
        assert_eq!(ChannelKind::parse(&alerts("7")).and_then(|k| k.owner()), Some("7"));
    }
}
