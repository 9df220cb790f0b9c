//! Counting allocations: the binary's global allocator is mimalloc behind
//! [`CountingMimalloc`], so `dmon bench` can report allocations per event.
//!
//! Counting must cost nothing the event path would notice: each thread
//! counts in a plain thread-local cell (const-initialised, no destructor,
//! so reaching it never allocates) and adds to the shared total only every
//! [`FLUSH_EVERY`] allocations. [`allocations`] is therefore short by less
//! than that per thread: noise next to the millions a benchmark makes.
//!
//! Allocations that need no more than word alignment go to `mi_malloc`,
//! not to the `mimalloc` crate's `mi_malloc_aligned`: mimalloc v3's aligned
//! entry reserves `size + align - 1`, which moves every block whose size is
//! exactly a size class up one class. An `Arc<Event>` (192 bytes) took 224,
//! a sixth of the index's memory. mimalloc's blocks are whole words at
//! word-aligned addresses, so `mi_malloc` already aligns them to 8.

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

/// The alignment every block `mi_malloc` returns has: a word.
const WORD: usize = std::mem::size_of::<usize>();

#[inline(always)]
fn word_aligned(layout: &Layout) -> bool {
    layout.align() <= WORD
}

// SAFETY: every call is passed on to mimalloc: to its plain entry points
// only when the layout asks for no more than the word alignment all of
// mimalloc's blocks have, else to the aligned ones. Counting touches only
// a thread-local cell and an atomic, and never allocates.
unsafe impl GlobalAlloc for CountingMimalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count();
        if word_aligned(&layout) {
            unsafe { libmimalloc_sys::mi_malloc(layout.size()).cast() }
        } else {
            unsafe { mimalloc::MiMalloc.alloc(layout) }
        }
    }
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count();
        if word_aligned(&layout) {
            unsafe { libmimalloc_sys::mi_zalloc(layout.size()).cast() }
        } else {
            unsafe { mimalloc::MiMalloc.alloc_zeroed(layout) }
        }
    }
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { mimalloc::MiMalloc.dealloc(ptr, layout) }
    }
    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count();
        if word_aligned(&layout) {
            unsafe { libmimalloc_sys::mi_realloc(ptr.cast(), new_size).cast() }
        } else {
            unsafe { mimalloc::MiMalloc.realloc(ptr, layout, new_size) }
        }
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

    #[test]
    fn a_word_aligned_block_of_a_class_size_stays_in_its_class() {
        // 192 bytes, 8-aligned: an Arc<Event>. Through the aligned entry
        // it took a 224-byte block.
        for (size, align) in [
            (192, 8),
            (160, 8),
            (24, 8),
            (4, 4),
            (1, 1),
            (64, 16),
            (100, 64),
        ] {
            let layout = Layout::from_size_align(size, align).expect("a valid layout");
            // SAFETY: a non-zero layout, freed with the same layout.
            unsafe {
                let p = CountingMimalloc.alloc(layout);
                assert!(!p.is_null());
                assert_eq!(p as usize % align, 0, "{size} bytes aligned to {align}");
                let usable = libmimalloc_sys::mi_usable_size(p.cast());
                assert!(usable >= size);
                if size >= 128 && align <= WORD && size % 32 == 0 {
                    // From 128 up, classes go in quarters: 128, 160, 192, 224.
                    assert_eq!(usable, size, "{size} bytes is a size class of its own");
                }
                let p = CountingMimalloc.realloc(p, layout, size * 3);
                assert_eq!(p as usize % align, 0, "realloc keeps {align}-alignment");
                CountingMimalloc.dealloc(p, Layout::from_size_align(size * 3, align).unwrap());
            }
        }
    }
}
