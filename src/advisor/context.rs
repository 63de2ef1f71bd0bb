//! What goes with a question: the models it is about (named in `models`, or found in its text with
//! the canonical slug function), their live aggregates, prices the user mentions, and the
//! conversation's earlier turns. Pure: the caller reads the market and the database.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::{ChatMessage, Role};
use crate::market::aggregate::ModelAggregate;
use crate::market::models::canonical_slug;
use crate::portfolio::position::ordinal;

/// Most models a question carries figures for.
pub const MAX_MODELS: usize = 8;
/// Models summarised when the question names none.
const OVERVIEW_MODELS: usize = 8;

/// The market figures that go with one question.
#[derive(Debug, Clone, Default)]
pub struct MarketContext {
    /// The sources the figures come from (`simulated`, `farm500+vast`, `none`).
    pub source: String,
    /// When the figures were read (ms since the epoch).
    pub ts_ms: i64,
    /// The models asked about that the market has, in the order asked.
    pub models: Vec<ModelAggregate>,
    /// Models asked about that have no live offers.
    pub missing: Vec<String>,
    /// The largest markets, when the question names no model.
    pub overview: Vec<ModelAggregate>,
    /// Prices per GPU-hour (USD) the question mentions.
    pub prices: Vec<f64>,
    /// The user's own machines, when the question is about them.
    pub machines: Vec<OwnMachine>,
}

/// One of the user's machines as the advisor is told of it (from `portfolio:#<uid>`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OwnMachine {
    /// "RTX 5090 ×1 (vast 52271)".
    pub name: String,
    /// The host's listed price per GPU-hour; `None` while unlisted.
    pub price: Option<f64>,
    pub renter_price: Option<f64>,
    pub percentile: Option<f64>,
    /// Comparable GPUs the percentile is among.
    pub comparable_gpus: Option<u64>,
    pub gpus: u64,
    pub gpus_rented: u64,
    /// Hours since a GPU was last rented; `None` while one is.
    pub idle_hours: Option<f64>,
    pub suggested: Option<f64>,
    pub reason: Option<String>,
}

impl OwnMachine {
    /// From one item of the `portfolio:#<uid>` snapshot.
    pub fn from_item(item: &serde_json::Value, now_ms: i64) -> Self {
        let name = match item["machine_id"].as_str() {
            Some(id) => format!(
                "{} ×{} ({} {id})",
                item["model_name"].as_str().unwrap_or_default(),
                item["num_gpus"],
                item["platform"].as_str().unwrap_or_default()
            ),
            None => format!(
                "{} ×{} ({}, entered by hand)",
                item["model_name"].as_str().unwrap_or_default(),
                item["num_gpus"],
                item["platform"].as_str().unwrap_or_default()
            ),
        };
        let rented = ["gpus_on_demand", "gpus_reserved", "gpus_interruptible"]
            .iter()
            .filter_map(|k| item[*k].as_u64())
            .sum();
        Self {
            name,
            price: item["price_per_gpu_hour_usd"].as_f64(),
            renter_price: item["position"]["renter_price_usd"].as_f64(),
            percentile: item["position"]["percentile"].as_f64(),
            comparable_gpus: item["position"]["gpus"].as_u64(),
            gpus: item["num_gpus"].as_u64().unwrap_or(0),
            gpus_rented: rented,
            idle_hours: item["idle_since_ms"]
                .as_i64()
                .map(|since| (now_ms - since).max(0) as f64 / 3_600_000.0),
            suggested: item["suggestion"]["price_per_gpu_hour_usd"].as_f64(),
            reason: item["suggestion"]["reason"].as_str().map(str::to_owned),
        }
    }

    /// One line for people and models alike.
    pub fn line(&self) -> String {
        let mut l = format!("{}: ", self.name);
        match (self.price, self.renter_price) {
            (Some(p), Some(r)) => {
                let _ = write!(l, "listed at ${p:.2}/h (${r:.2}/h for renters)");
            }
            (Some(p), None) => {
                let _ = write!(l, "listed at ${p:.2}/h");
            }
            _ => l.push_str("not listed"),
        }
        if let (Some(pct), Some(n)) = (self.percentile, self.comparable_gpus) {
            let _ = write!(l, ", the {} percentile of {n} comparable GPUs", ordinal(pct));
        }
        let _ = write!(l, "; {} of {} GPUs rented", self.gpus_rented, self.gpus);
        if let Some(h) = self.idle_hours {
            let _ = write!(l, ", idle for {h:.0} h");
        }
        match (self.suggested, &self.reason) {
            (Some(s), Some(r)) => {
                let _ = write!(l, ". Suggested ${s:.2}/h: {r}");
            }
            (None, Some(r)) => {
                let _ = write!(l, ". No suggestion: {r}");
            }
            _ => l.push('.'),
        }
        l
    }
}

/// Whether a question is about the asker's own machines ("how should I price my machines?").
pub fn about_own_machines(question: &str) -> bool {
    let q = question.to_lowercase();
    [
        "my machine",
        "my rig",
        "my gpu",
        "my server",
        "my box",
        "my host",
        "my listing",
        "my portfolio",
        "my card",
        "my offer",
        "our machine",
        "our gpu",
        "price my",
        "my 40",
        "my 30",
        "my 50",
        "my h100",
        "my a100",
    ]
    .iter()
    .any(|k| q.contains(k))
}

impl MarketContext {
    /// The context of a question, from the market's current aggregates.
    pub fn build(
        aggregates: &BTreeMap<String, ModelAggregate>,
        source: String,
        ts_ms: i64,
        requested: &[String],
        question: &str,
    ) -> Self {
        let mut slugs: Vec<String> = requested.iter().filter_map(|m| canonical_slug(m)).collect();
        if slugs.is_empty() {
            slugs = detect_models(question, |slug| aggregates.contains_key(slug));
        }
        let mut seen = std::collections::HashSet::new();
        slugs.retain(|s| seen.insert(s.clone()));
        slugs.truncate(MAX_MODELS);
        let mut models = Vec::new();
        let mut missing = Vec::new();
        for slug in slugs {
            match aggregates.get(&slug) {
                Some(a) => models.push(a.clone()),
                None => missing.push(slug),
            }
        }
        let overview = if models.is_empty() {
            let mut all: Vec<&ModelAggregate> = aggregates.values().collect();
            all.sort_by(|a, b| b.all.gpus_total.cmp(&a.all.gpus_total).then(a.model.cmp(&b.model)));
            all.into_iter().take(OVERVIEW_MODELS).cloned().collect()
        } else {
            Vec::new()
        };
        Self {
            source,
            ts_ms,
            models,
            missing,
            overview,
            prices: detect_prices(question),
            machines: Vec::new(),
        }
    }
}

/// Models named in free text, as canonical slugs the market knows (`known`), in order of mention.
/// Tries the longest run of words first ("A100 SXM4" before "A100"); a bare number also matches
/// its RTX card ("my 4090" → `rtx-4090`).
pub fn detect_models(text: &str, known: impl Fn(&str) -> bool) -> Vec<String> {
    let words: Vec<&str> = text
        .split_whitespace()
        .map(|w| w.trim_matches(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_' || c == '.')))
        .map(|w| w.trim_end_matches('.'))
        .collect();
    let mut found = Vec::new();
    let mut i = 0;
    while i < words.len() {
        let mut matched = 0;
        for len in (1..=4.min(words.len() - i)).rev() {
            let candidate = words[i..i + len].join(" ");
            if candidate.trim().is_empty() {
                continue;
            }
            if let Some(slug) = canonical_slug(&candidate) {
                let slug = if !known(&slug) && len == 1 && slug.chars().all(|c| c.is_ascii_digit()) {
                    format!("rtx-{slug}")
                } else {
                    slug
                };
                if known(&slug) {
                    if !found.contains(&slug) {
                        found.push(slug);
                    }
                    matched = len;
                    break;
                }
            }
        }
        i += matched.max(1);
    }
    found
}

/// Prices per GPU-hour mentioned in free text: `$0.45`, `0.45$`, `0.45/h`, `0.45 USD`.
pub fn detect_prices(text: &str) -> Vec<f64> {
    let chars: Vec<char> = text.chars().collect();
    let mut prices = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() {
            i += 1;
            continue;
        }
        let start = i;
        while i < chars.len() && (chars[i].is_ascii_digit() || chars[i] == '.' || chars[i] == ',') {
            i += 1;
        }
        let number: String = chars[start..i].iter().collect::<String>().replace(',', ".");
        let number = number.trim_end_matches('.');
        let before = chars[..start].iter().rev().find(|c| !c.is_whitespace()).copied();
        let after: String = chars[i..].iter().take(8).collect::<String>().to_ascii_lowercase();
        let after = after.trim_start();
        let is_price = before == Some('$')
            || after.starts_with('$')
            || after.starts_with("/h")
            || after.starts_with("usd")
            || after.starts_with("per hour")
            || after.starts_with("an hour");
        if is_price
            && let Ok(value) = number.parse::<f64>()
            && value > 0.0
            && value < 1000.0
        {
            prices.push(value);
        }
    }
    prices
}

fn usd(v: Option<f64>) -> String {
    v.map(|v| format!("${v:.2}")).unwrap_or_else(|| "n/a".into())
}

/// One model's figures as one line of the prompt.
fn describe(a: &ModelAggregate) -> String {
    let s = &a.all;
    let mut line = format!(
        "- {} ({}): {} GPUs, {} rented, {} available, utilisation {:.1}%; available price median {} (p10 {}, p25 {}, p75 {}, p90 {}); rented price median {}",
        a.name,
        a.model,
        s.gpus_total,
        s.gpus_rented,
        s.gpus_available,
        s.utilisation * 100.0,
        usd(s.price_available.median),
        usd(s.price_available.p10),
        usd(s.price_available.p25),
        usd(s.price_available.p75),
        usd(s.price_available.p90),
        usd(s.price_rented.median),
    );
    for (label, seg) in [
        ("verified", &a.verified),
        ("unverified", &a.unverified),
        ("datacenter", &a.datacenter),
        ("community", &a.community),
    ] {
        if seg.gpus_total > 0 {
            let _ = write!(
                line,
                "; {label}: {} GPUs, {:.0}% rented, available median {}",
                seg.gpus_total,
                seg.utilisation * 100.0,
                usd(seg.price_available.median)
            );
        }
    }
    line
}

/// The system prompt: the advisor's instructions and the live figures.
pub fn system_prompt(market: &MarketContext) -> String {
    let mut p = String::from(
        "You are the GPUScout pricing advisor. You help people who rent out GPUs on Vast.ai and similar \
         marketplaces price and place them. Ground every figure in the live market data below, say when \
         the data does not cover a question, and never invent numbers. Prices are USD per GPU-hour. \
         Utilisation is rented GPUs divided by all GPUs. Be concise and concrete.\n\n",
    );
    let _ = writeln!(
        p,
        "Live market data (sources: {}, read at {} ms since the epoch):",
        market.source, market.ts_ms
    );
    for a in market.models.iter().chain(market.overview.iter()) {
        p.push_str(&describe(a));
        p.push('\n');
    }
    if market.models.is_empty() && market.overview.is_empty() {
        p.push_str("- no live offers yet\n");
    }
    if !market.overview.is_empty() {
        p.push_str("(The question names no model: these are the largest markets.)\n");
    }
    for m in &market.missing {
        let _ = writeln!(p, "- {m}: no live offers");
    }
    if !market.machines.is_empty() {
        p.push_str(
            "\nThe user's own machines (host prices are what the listing takes; renters pay the platform's fee on \
             top; each machine is compared with offers of the same model and verification):\n",
        );
        for m in &market.machines {
            let _ = writeln!(p, "- {}", m.line());
        }
    }
    p
}

/// The messages sent with a question: earlier turns (oldest first), then the question. Starts with
/// a user turn and alternates roles, merging neighbours of the same role, as every API accepts.
pub fn conversation(history: Vec<ChatMessage>, question: &str) -> Vec<ChatMessage> {
    let mut out: Vec<ChatMessage> = Vec::new();
    for m in history
        .into_iter()
        .chain(std::iter::once(ChatMessage {
            role: Role::User,
            content: question.to_owned(),
        }))
        .filter(|m| !m.content.trim().is_empty())
    {
        if out.is_empty() && m.role != Role::User {
            continue;
        }
        match out.last_mut() {
            Some(last) if last.role == m.role => {
                last.content.push_str("\n\n");
                last.content.push_str(&m.content);
            }
            _ => out.push(m),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn questions_about_own_machines_carry_them() {
        assert!(about_own_machines("How should I price my machines?"));
        assert!(about_own_machines("is my 4090 too expensive"));
        assert!(!about_own_machines("What do H100s rent for?"));
        let item = serde_json::json!({
            "machine_id": "52271", "model_name": "RTX 5090", "num_gpus": 1, "platform": "vast",
            "price_per_gpu_hour_usd": 0.8, "gpus_on_demand": 0, "gpus_reserved": 1, "gpus_interruptible": 0,
            "idle_since_ms": null,
            "position": {"renter_price_usd": 1.0666, "percentile": 62.5, "gpus": 8},
            "suggestion": {"price_per_gpu_hour_usd": 0.75, "reason": "Because."}
        });
        assert_eq!(
            OwnMachine::from_item(&item, 0).line(),
            "RTX 5090 ×1 (vast 52271): listed at $0.80/h ($1.07/h for renters), the 63rd percentile of 8 \
             comparable GPUs; 1 of 1 GPUs rented. Suggested $0.75/h: Because."
        );
    }

    #[test]
    fn models_are_found_in_free_text() {
        let known = |s: &str| ["rtx-4090", "a100-sxm4", "a100-pcie", "h100-sxm", "rtx-3090"].contains(&s);
        assert_eq!(
            detect_models("What should I charge for my RTX 4090?", known),
            vec!["rtx-4090"]
        );
        assert_eq!(
            detect_models("Compare the A100 SXM4 with an H100 SXM, and my 3090.", known),
            vec!["a100-sxm4", "h100-sxm", "rtx-3090"]
        );
        assert_eq!(detect_models("rtx4090 vs RTX-4090", known), vec!["rtx-4090"]);
        assert!(detect_models("What is a fair price?", known).is_empty());
    }

    #[test]
    fn prices_are_found_in_free_text() {
        assert_eq!(detect_prices("I charge $0.45 for it"), vec![0.45]);
        assert_eq!(detect_prices("at 0.45/h or 0,50 USD, 24 GB"), vec![0.45, 0.5]);
        assert_eq!(detect_prices("0.3$ per hour"), vec![0.3]);
        assert!(detect_prices("my 4090 has 24 GB").is_empty());
    }

    #[test]
    fn conversations_start_with_the_user_and_alternate() {
        let m = |role, c: &str| ChatMessage {
            role,
            content: c.into(),
        };
        let out = conversation(
            vec![
                m(Role::Assistant, "orphan"),
                m(Role::User, "q1"),
                m(Role::User, "q2 (its answer failed)"),
                m(Role::Assistant, "a2"),
            ],
            "q3",
        );
        assert_eq!(
            out,
            vec![
                m(Role::User, "q1\n\nq2 (its answer failed)"),
                m(Role::Assistant, "a2"),
                m(Role::User, "q3")
            ]
        );
    }
}
