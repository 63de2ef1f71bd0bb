//! Memory of the market state per offer: live heap bytes (counted by the allocator) held by a
//! `MarketState` after two polls of N machines, for several N. Memory linear in offers shows as
//! a flat bytes-per-offer column. `cargo bench --bench market_memory`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use gpuscout_hub::ingest::vast_machine::offers_of;
use gpuscout_hub::market::state::MarketState;
use support::machines;

mod support;

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    // `cargo bench` passes `--bench`; nothing to filter here.
    println!("{:>8} {:>12} {:>14}", "offers", "state bytes", "bytes/offer");
    for n in [10_000usize, 20_000, 50_000, 100_000, 200_000] {
        let (first, second) = (machines(n, 0), machines(n, 1));
        let before = LIVE.load(Ordering::Relaxed);
        let mut state = MarketState::new();
        drop(state.apply_offers("farm500", offers_of(&first, "farm500", 0), 0));
        drop(state.apply_offers("farm500", offers_of(&second, "farm500", 0), 1));
        let held = LIVE.load(Ordering::Relaxed) - before;
        println!("{n:>8} {held:>12} {:>14.0}", held as f64 / n as f64);
        drop(state);
    }
}
