//! The book: every offer of every source, keyed by marketplace and offer id, and the diff between
//! two states of it.
//!
//! A book is a hash table of shared offers keyed by the offer itself (its marketplace and id), so
//! a poll costs no key allocations. The market keeps one book per source and the merged book,
//! and updates both in place: a poll costs one lookup and one comparison per offer, and work
//! beyond that only for the offers that changed (see [`MarketBook::replace`]).

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use hashbrown::HashTable;
use hashbrown::hash_table::Entry;
use rustc_hash::FxHasher;

use super::Offer;

/// Offers keyed by marketplace and offer id. When two sources report the same offer (500.farm
/// and Vast.ai both see Vast.ai), the merged book keeps the copy of the source listed first in
/// [`SOURCE_PRIORITY`].
#[derive(Debug, Default, Clone)]
pub struct MarketBook {
    table: HashTable<Slot>,
    /// The number of the latest `replace`, which marks the slots it saw.
    generation: u32,
}

#[derive(Debug, Clone)]
struct Slot {
    offer: Arc<Offer>,
    /// The `replace` that last saw this offer.
    seen: u32,
}

/// Which source's copy of an offer is kept when several report it.
pub const SOURCE_PRIORITY: &[&str] = &["vast", "farm500", "runpod", "simulated"];

pub fn priority(source: &str) -> usize {
    SOURCE_PRIORITY.iter().position(|s| *s == source).unwrap_or(usize::MAX)
}

fn hash_key(marketplace: &str, offer_id: &str) -> u64 {
    let mut h = FxHasher::default();
    marketplace.hash(&mut h);
    offer_id.hash(&mut h);
    h.finish()
}

fn hash_of(offer: &Offer) -> u64 {
    hash_key(offer.marketplace, &offer.offer_id)
}

fn rehash(slot: &Slot) -> u64 {
    hash_of(&slot.offer)
}

fn is_key(marketplace: &str, offer_id: &str) -> impl Fn(&Slot) -> bool {
    move |s: &Slot| s.offer.offer_id == offer_id && s.offer.marketplace == marketplace
}

/// What replacing one source's offers changed in its book.
#[derive(Debug, Default)]
pub struct Replaced {
    /// Offers that are new or differ from the source's previous copy (the new copy).
    pub upserted: Vec<Arc<Offer>>,
    /// Offers the source no longer reports (the last copy).
    pub removed: Vec<Arc<Offer>>,
}

impl MarketBook {
    /// A book of these offers (the first of several with one key is kept).
    pub fn from_offers(offers: impl IntoIterator<Item = Arc<Offer>>) -> Self {
        let mut book = Self::default();
        for offer in offers {
            if book.get(offer.marketplace, &offer.offer_id).is_none() {
                book.insert(offer);
            }
        }
        book
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Offer>> {
        self.table.iter().map(|s| &s.offer)
    }

    pub fn get(&self, marketplace: &str, offer_id: &str) -> Option<&Arc<Offer>> {
        self.table
            .find(hash_key(marketplace, offer_id), is_key(marketplace, offer_id))
            .map(|s| &s.offer)
    }

    /// The offer of a key as channels name it (`vast:m1234`, see [`Offer::key`]).
    pub fn get_key(&self, key: &str) -> Option<&Arc<Offer>> {
        let (marketplace, offer_id) = key.split_once(':')?;
        self.get(marketplace, offer_id)
    }

    /// Insert or replace; returns the copy it replaced.
    pub fn insert(&mut self, offer: Arc<Offer>) -> Option<Arc<Offer>> {
        let hash = hash_of(&offer);
        let seen = self.generation;
        match self
            .table
            .entry(hash, is_key(offer.marketplace, &offer.offer_id), rehash)
        {
            Entry::Occupied(mut e) => Some(std::mem::replace(&mut e.get_mut().offer, offer)),
            Entry::Vacant(e) => {
                e.insert(Slot { offer, seen });
                None
            }
        }
    }

    pub fn remove(&mut self, marketplace: &str, offer_id: &str) -> Option<Arc<Offer>> {
        match self
            .table
            .find_entry(hash_key(marketplace, offer_id), is_key(marketplace, offer_id))
        {
            Ok(e) => Some(e.remove().0.offer),
            Err(_) => None,
        }
    }

    /// Replace the whole content with `offers` (one source's latest poll), in place: the shared
    /// copy of every unchanged offer is kept, so an unchanged offer costs a lookup and a
    /// comparison and nothing downstream. Of several offers with one key, the first is kept.
    pub fn replace(&mut self, offers: Vec<Offer>) -> Replaced {
        self.generation = self.generation.wrapping_add(1);
        let generation = self.generation;
        self.table
            .reserve(offers.len().saturating_sub(self.table.len()), rehash);
        let mut upserted = Vec::new();
        for offer in offers {
            let hash = hash_of(&offer);
            match self
                .table
                .entry(hash, is_key(offer.marketplace, &offer.offer_id), rehash)
            {
                Entry::Occupied(e) => {
                    let slot = e.into_mut();
                    if slot.seen == generation {
                        continue;
                    }
                    slot.seen = generation;
                    if *slot.offer != offer {
                        slot.offer = Arc::new(offer);
                        upserted.push(slot.offer.clone());
                    }
                }
                Entry::Vacant(e) => {
                    let offer = Arc::new(offer);
                    upserted.push(offer.clone());
                    e.insert(Slot {
                        offer,
                        seen: generation,
                    });
                }
            }
        }
        let removed = self
            .table
            .extract_if(|s| s.seen != generation)
            .map(|s| s.offer)
            .collect();
        Replaced { upserted, removed }
    }
}

/// Offer-level changes between two states of the merged book.
#[derive(Debug, Default)]
pub struct BookDiff {
    pub added: Vec<Arc<Offer>>,
    /// Changed offers: (previous copy, new copy).
    pub changed: Vec<(Arc<Offer>, Arc<Offer>)>,
    /// Removed offers (their last known state, so the model is known).
    pub removed: Vec<Arc<Offer>>,
}

impl BookDiff {
    /// The diff of two books (a full comparison; the market computes its diffs from what each
    /// poll changed instead, and tests hold the two to the same result).
    pub fn between(old: &MarketBook, new: &MarketBook) -> Self {
        let mut diff = BookDiff::default();
        for offer in new.iter() {
            match old.get(offer.marketplace, &offer.offer_id) {
                None => diff.added.push(offer.clone()),
                Some(prev) if **prev != **offer => diff.changed.push((prev.clone(), offer.clone())),
                Some(_) => {}
            }
        }
        for offer in old.iter() {
            if new.get(offer.marketplace, &offer.offer_id).is_none() {
                diff.removed.push(offer.clone());
            }
        }
        diff
    }

    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.changed.is_empty() && self.removed.is_empty()
    }

    /// Every offer the diff takes out of the book, then every offer it puts in.
    pub fn outgoing(&self) -> impl Iterator<Item = &Arc<Offer>> {
        self.removed.iter().chain(self.changed.iter().map(|(old, _)| old))
    }

    pub fn incoming(&self) -> impl Iterator<Item = &Arc<Offer>> {
        self.added.iter().chain(self.changed.iter().map(|(_, new)| new))
    }
}
