//! The offline advisor: used when no language model is configured. It answers from the live
//! aggregates that come with the question (median price, utilisation, spread, and how a price the
//! user mentions compares), says that it is the offline advisor, and streams its answer in small
//! deltas like a model does.

use std::fmt::Write as _;
use std::time::Duration;

use async_trait::async_trait;

use super::{ChatRequest, EventStream, LlmProvider, MarketContext, ProviderError, StreamEvent};
use crate::market::aggregate::ModelAggregate;

pub struct OfflineProvider {
    /// Pause between deltas.
    delta_interval: Duration,
}

impl OfflineProvider {
    pub fn new(delta_interval: Duration) -> Self {
        Self { delta_interval }
    }
}

fn usd(v: f64) -> String {
    format!("${v:.2}/h")
}

/// `1310` → `1,310`.
fn thousands(n: u32) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// "RTX 4090: median $0.38/h available, 74% rented (1,310 of 1,800 GPUs); …"
fn summary(a: &ModelAggregate) -> String {
    let s = &a.all;
    let mut line = format!("{}: ", a.name);
    match s.price_available.median {
        Some(m) => {
            let _ = write!(line, "median {} available", usd(m));
        }
        None => line.push_str("no GPU available right now"),
    }
    let _ = write!(
        line,
        ", {:.0}% rented ({} of {} GPUs)",
        s.utilisation * 100.0,
        thousands(s.gpus_rented),
        thousands(s.gpus_total)
    );
    if let (Some(p10), Some(p90)) = (s.price_available.p10, s.price_available.p90) {
        let _ = write!(line, "; available from {} (p10) to {} (p90)", usd(p10), usd(p90));
    }
    if let Some(r) = s.price_rented.median {
        let _ = write!(line, "; rented GPUs go for a median {}", usd(r));
    }
    line.push('.');
    line
}

/// How a price compares with a model's median available price.
fn compare(price: f64, a: &ModelAggregate) -> Option<String> {
    let median = a.all.price_available.median.or(a.all.price_rented.median)?;
    if median <= 0.0 {
        return None;
    }
    let pct = ((price / median - 1.0) * 100.0).round();
    let verdict = if pct.abs() < 3.0 {
        format!(
            "Your price of {} is at the median {}: it should rent at the market's pace.",
            usd(price),
            usd(median)
        )
    } else if pct > 0.0 {
        let mut s = format!(
            "Your price of {} is {pct:.0}% above the median {}: cheaper offers rent first, so expect more idle time",
            usd(price),
            usd(median)
        );
        if let Some(p75) = a.all.price_available.p75 {
            let _ = write!(s, " (three quarters of available GPUs ask {} or less)", usd(p75));
        }
        s.push('.');
        s
    } else {
        format!(
            "Your price of {} is {:.0}% below the median {}: it should rent quickly, and you may be able to ask more.",
            usd(price),
            -pct,
            usd(median)
        )
    };
    Some(format!("{}: {verdict}", a.name))
}

/// The offline answer to a question with its market context.
pub fn answer(market: &MarketContext) -> String {
    let mut text = format!(
        "This is the offline advisor (no language model is configured): figures from the live market ({}).\n\n",
        market.source
    );
    if !market.machines.is_empty() {
        text.push_str("Your machines, placed in the live market:\n");
        for m in &market.machines {
            text.push_str("- ");
            text.push_str(&m.line());
            text.push('\n');
        }
        text.push_str(
            "\nA suggestion is the highest price at which comparable offers are still rented as often as your target \
             occupancy; apply one from the dashboard or POST /api/v1/portfolio/machines/{id}/price.\n",
        );
        return text.trim_end().to_owned();
    }
    if market.models.is_empty() && market.overview.is_empty() {
        text.push_str("There is no live market data yet; ask again in a minute.");
        return text;
    }
    for a in &market.models {
        text.push_str(&summary(a));
        text.push('\n');
    }
    for m in &market.missing {
        let _ = writeln!(text, "{m}: no live offers right now.");
    }
    if let Some(price) = market.prices.first() {
        for a in &market.models {
            if let Some(line) = compare(*price, a) {
                text.push('\n');
                text.push_str(&line);
                text.push('\n');
            }
        }
    }
    if market.models.is_empty() {
        text.push_str("The largest markets right now:\n");
        for a in &market.overview {
            text.push_str("- ");
            text.push_str(&summary(a));
            text.push('\n');
        }
        text.push_str("\nName a GPU model (e.g. \"RTX 4090\") and your price for a comparison.");
    }
    text.trim_end().to_owned()
}

/// Split text into small deltas (two words each, whitespace kept).
pub fn deltas(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut words = 0;
    for piece in text.split_inclusive([' ', '\n']) {
        current.push_str(piece);
        words += 1;
        if words == 2 {
            out.push(std::mem::take(&mut current));
            words = 0;
        }
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// A rough token count (about four characters a token), for usage and quotas.
fn approx_tokens(chars: usize) -> u64 {
    chars.div_ceil(4) as u64
}

#[async_trait]
impl LlmProvider for OfflineProvider {
    fn name(&self) -> &'static str {
        "offline"
    }

    fn model(&self) -> &str {
        "offline"
    }

    async fn stream(&self, request: &ChatRequest) -> Result<EventStream, ProviderError> {
        let text = answer(&request.market);
        let input =
            approx_tokens(request.system.len() + request.messages.iter().map(|m| m.content.len()).sum::<usize>());
        let output = approx_tokens(text.len());
        let mut events: Vec<StreamEvent> = deltas(&text).into_iter().map(StreamEvent::Delta).collect();
        events.push(StreamEvent::Usage {
            input_tokens: input,
            output_tokens: output,
        });
        events.push(StreamEvent::Done {
            stop_reason: "end_turn".into(),
        });
        let interval = self.delta_interval;
        let stream = futures_util::stream::unfold((events.into_iter(), true), move |(mut it, first)| async move {
            let event = it.next()?;
            if !first && matches!(event, StreamEvent::Delta(_)) && !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            Some((Ok(event), (it, false)))
        });
        Ok(Box::pin(stream))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::market::aggregate::{PriceStats, Segment};

    fn rtx_4090() -> ModelAggregate {
        let all = Segment {
            offers: 500,
            gpus_total: 1800,
            gpus_rented: 1332,
            gpus_available: 468,
            utilisation: 0.74,
            price_rented: PriceStats {
                gpus: 1332,
                median: Some(0.4),
                ..Default::default()
            },
            price_available: PriceStats {
                gpus: 468,
                p10: Some(0.27),
                p25: Some(0.33),
                median: Some(0.39),
                p75: Some(0.44),
                p90: Some(0.57),
            },
            price_all: PriceStats {
                gpus: 1800,
                median: Some(0.4),
                ..Default::default()
            },
        };
        ModelAggregate {
            model: "rtx-4090".into(),
            name: "RTX 4090".into(),
            all,
            verified: Segment::default(),
            unverified: Segment::default(),
            datacenter: Segment::default(),
            community: Segment::default(),
        }
    }

    #[test]
    fn answers_from_the_aggregates_and_compares_the_price() {
        let market = MarketContext {
            source: "simulated".into(),
            models: vec![rtx_4090()],
            prices: vec![0.45],
            ..Default::default()
        };
        let text = answer(&market);
        assert!(text.contains("offline advisor"), "{text}");
        assert!(
            text.contains("RTX 4090: median $0.39/h available, 74% rented (1,332 of 1,800 GPUs)"),
            "{text}"
        );
        assert!(text.contains("15% above the median $0.39/h"), "{text}");
        assert_eq!(deltas(&text).concat(), text);
    }

    #[test]
    fn without_a_model_it_gives_an_overview() {
        let market = MarketContext {
            source: "simulated".into(),
            overview: vec![rtx_4090()],
            ..Default::default()
        };
        let text = answer(&market);
        assert!(text.contains("largest markets"), "{text}");
        let empty = answer(&MarketContext::default());
        assert!(empty.contains("no live market data"), "{empty}");
    }
}
