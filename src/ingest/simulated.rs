//! The simulated market as a source: each poll moves [`SimulatedMarket`] one step and reports
//! its offers, labelled `"source":"simulated"`.

use async_trait::async_trait;

use super::{Fetched, MarketSource, SourceError};
use crate::clock::unix_now_ms;
use crate::market::Offer;
use crate::market::simulated::SimulatedMarket;

pub struct SimulatedSource {
    market: SimulatedMarket,
}

impl SimulatedSource {
    /// `seed` 0 draws a fresh market each start; any other seed repeats the same one.
    pub fn new(seed: u64) -> Self {
        Self {
            market: SimulatedMarket::new(seed),
        }
    }

    /// The offers as they stand.
    pub fn offers(&self, observed_at_ms: i64) -> Vec<Offer> {
        self.market.offers(observed_at_ms)
    }

    /// Move the market on: rentals start and end, hosts reprice, machines come and go.
    pub fn step(&mut self) {
        self.market.step();
    }
}

#[async_trait]
impl MarketSource for SimulatedSource {
    fn name(&self) -> &'static str {
        "simulated"
    }

    async fn fetch(&mut self) -> Result<Fetched, SourceError> {
        self.market.step();
        let now = unix_now_ms() as i64;
        Ok(Fetched::Offers {
            offers: self.market.offers(now),
            source_ts_ms: now,
        })
    }
}
