//! The process's live heap: `std::alloc::System`, counting the bytes it has
//! handed out and not yet been given back.
//!
//! RSS says what the operating system sees, which includes the pages the
//! allocator keeps for later: after a burst it may hold on to a mebibyte or
//! two for good, a step that is not growth. The live heap is what the
//! program itself holds, so a leak shows there as a trend, whatever the
//! allocator does with its pages.
//!
//! A `#[global_allocator]` is per binary, so this module only defines it;
//! the binary that measures (the soak example; the memory tests, through
//! `tests/support`) declares it at its root:
//!
//! ```ignore
//! #[global_allocator]
//! static ALLOCATOR: heap::Counting = heap::Counting;
//! ```

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::atomic::{AtomicIsize, Ordering},
};

static LIVE: AtomicIsize = AtomicIsize::new(0);

/// `System`, counting live bytes.
pub struct Counting;

// SAFETY: every call is passed to `System` as it came, so `System`'s
// guarantees are this allocator's; the counter is only a side effect.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::alloc_zeroed`'s contract.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() {
            LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        }
        ptr
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract, and
        // `ptr` came from `System` through this allocator.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            LIVE.fetch_add(
                new_size as isize - layout.size() as isize,
                Ordering::Relaxed,
            );
        }
        new
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` through this allocator, with
        // `layout`.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
    }
}

/// The bytes the whole process holds on the heap now.
pub fn live_bytes() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// The same, in MiB.
pub fn live_mib() -> f64 {
    live_bytes() as f64 / (1024.0 * 1024.0)
}
