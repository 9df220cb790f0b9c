//! Counting allocations: the binary's global allocator is mimalloc behind
//! [`CountingMimalloc`], so `dmon bench` can report allocations per event.
//!
//! Counting must cost nothing the event path would notice: each thread
//! counts in a plain thread-local cell (const-initialised, no destructor,
//! so reaching it never allocates) and adds to the shared total only every
//! [`FLUSH_EVERY`] allocations. [`allocations`] is therefore short by less
//! than that per thread: noise next to the millions a benchmark makes.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Allocations a thread counts before adding them to the total: one
/// shared atomic add per this many, instead of one per allocation.
const FLUSH_EVERY: u64 = 1024;

static TOTAL: AtomicU64 = AtomicU64::new(0);

thread_local! {
    static PENDING: Cell<u64> = const { Cell::new(0) };
}

/// mimalloc, counting allocations (`alloc`, `alloc_zeroed`, `realloc`).
pub struct CountingMimalloc;

#[inline(always)]
fn count() {
    // try_with: a thread's slot is never destroyed (no destructor), but
    // an allocator must not panic whatever the thread is doing.
    let _ = PENDING.try_with(|p| {
        let n = p.get() + 1;
        if n == FLUSH_EVERY {
            TOTAL.fetch_add(n, Ordering::Relaxed);
            p.set(0);
        } else {
            p.set(n);
        }
    });
}

// SAFETY: every call is passed on to mimalloc unchanged; counting touches
// only a thread-local cell and an atomic, and never allocates.
unsafe impl GlobalAlloc for CountingMimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { mimalloc::MiMalloc.alloc(layout) }
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
    }
}

/// Allocations made so far by every thread, through [`CountingMimalloc`]
/// (0 where it is not the global allocator, as in the library's tests);
/// up to [`FLUSH_EVERY`] - 1 per other thread may not be counted yet.
pub fn allocations() -> u64 {
    TOTAL.load(Ordering::Relaxed) + PENDING.try_with(Cell::get).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_through_the_wrapper() {
        let before = allocations();
        let layout = Layout::from_size_align(64, 8).expect("a valid layout");
        for _ in 0..3 * FLUSH_EVERY {
            // SAFETY: a non-zero layout, freed with the same layout.
            unsafe {
                let p = CountingMimalloc.alloc(layout);
                assert!(!p.is_null());
                CountingMimalloc.dealloc(p, layout);
            }
        }
        assert!(allocations() - before >= 3 * FLUSH_EVERY);
    }
}
