//! A global allocator that counts allocations: `std::alloc::System` plus one
//! relaxed atomic add per call that hands out memory (`alloc`,
//! `alloc_zeroed` and `realloc`; `dealloc` is not counted).
//!
//! A `#[global_allocator]` is per binary, so this module only defines it; a
//! bench binary that counts installs it:
//!
//! ```ignore
//! mod alloc_count;
//!
//! #[global_allocator]
//! static COUNTING: alloc_count::Counting = alloc_count::Counting;
//! ```

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicUsize, Ordering},
};

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

/// `System`, counting.
pub struct Counting;

// SAFETY: every call is passed to `System` as it came, so `System`'s
// guarantees are this allocator's; the counter is only a side effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract, and
        // `ptr` came from `System` through this allocator.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator, with
        // `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// The allocations counted so far, by every thread.
pub fn allocations() -> usize {
    ALLOCATIONS.load(Ordering::Relaxed)
}
