//! The book: every offer of every source, keyed by marketplace and offer id, and the diff between
//! two books.

use std::collections::BTreeMap;
use std::sync::Arc;

use rustc_hash::FxHashMap;

use super::{Offer, Text};

/// The market at one moment: the union of every source's latest offers. When two sources report
/// the same offer (500.farm and Vast.ai both see Vast.ai), the source listed first in
/// `SOURCE_PRIORITY` wins.
#[derive(Debug, Default, Clone)]
pub struct MarketBook {
    /// Keyed by `Offer::key()`, computed once per offer per poll.
    pub offers: FxHashMap<Text, Arc<Offer>>,
}

/// Which source's copy of an offer is kept when several report it.
pub const SOURCE_PRIORITY: &[&str] = &["vast", "farm500", "runpod", "simulated"];

fn priority(source: &str) -> usize {
    SOURCE_PRIORITY.iter().position(|s| *s == source).unwrap_or(usize::MAX)
}

impl MarketBook {
    /// Merge the latest offers of every source.
    pub fn merge<'a>(sources: impl IntoIterator<Item = &'a Vec<Arc<Offer>>>) -> Self {
        let sources: Vec<&Vec<Arc<Offer>>> = sources.into_iter().collect();
        let total = sources.iter().map(|l| l.len()).sum();
        let mut offers: FxHashMap<Text, Arc<Offer>> = FxHashMap::with_capacity_and_hasher(total, Default::default());
        for list in sources {
            for offer in list {
                let key: Text = Arc::from(offer.key());
                match offers.get(&key) {
                    Some(existing) if priority(existing.source) <= priority(offer.source) => {}
                    _ => {
                        offers.insert(key, offer.clone());
                    }
                }
            }
        }
        Self { offers }
    }

    pub fn len(&self) -> usize {
        self.offers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.offers.is_empty()
    }

    /// Offers grouped by model slug.
    pub fn by_model(&self) -> BTreeMap<&str, Vec<&Offer>> {
        let mut groups: BTreeMap<&str, Vec<&Offer>> = BTreeMap::new();
        for offer in self.offers.values() {
            groups.entry(&offer.model).or_default().push(offer);
        }
        groups
    }
}

/// Offer-level changes between two books.
#[derive(Debug, Default)]
pub struct BookDiff {
    pub added: Vec<Arc<Offer>>,
    pub changed: Vec<Arc<Offer>>,
    /// Removed offers (their last known state, so the model is known).
    pub removed: Vec<Arc<Offer>>,
}

impl BookDiff {
    pub fn between(old: &MarketBook, new: &MarketBook) -> Self {
        let mut diff = BookDiff::default();
        for (key, offer) in &new.offers {
            match old.offers.get(key) {
                None => diff.added.push(offer.clone()),
                Some(prev) if **prev != **offer => diff.changed.push(offer.clone()),
                Some(_) => {}
            }
        }
        for (key, offer) in &old.offers {
            if !new.offers.contains_key(key) {
                diff.removed.push(offer.clone());
            }
        }
        diff
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }

    /// Models with any offer-level change.
    pub fn models(&self) -> std::collections::BTreeSet<&str> {
        self.added
            .iter()
            .chain(&self.changed)
            .chain(&self.removed)
            .map(|o| &*o.model)
            .collect()
    }
}
