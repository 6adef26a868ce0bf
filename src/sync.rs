//! Synchronisation helpers: cache-line padding for contended counters, and
//! locks that outlive a panic. The state behind every mutex here is
//! counters, maps and levels that are whole after any panic (a user's
//! `LoadSignal`, `Merge` or inner service), and refusing a poisoned lock
//! would stop the layer for good.

use std::sync::{
    Mutex, MutexGuard, TryLockError,
    atomic::{AtomicU64, AtomicUsize, Ordering},
};

/// The lock, poisoned or not.
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The lock if nobody holds it, poisoned or not.
pub(crate) fn try_lock<T>(mutex: &Mutex<T>) -> Option<MutexGuard<'_, T>> {
    match mutex.try_lock() {
        Ok(guard) => Some(guard),
        Err(TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(TryLockError::WouldBlock) => None,
    }
}

/// Keeps a counter that every request writes on its own cache line (128
/// bytes: adjacent-line prefetchers pair lines), away from the read-mostly
/// configuration and from other counters.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Padded<T>(pub(crate) T);

impl<T> std::ops::Deref for Padded<T> {
    type Target = T;

    #[inline]
    fn deref(&self) -> &T {
        &self.0
    }
}

/// A counter many threads add to, split over cache lines: each thread adds
/// to its own stripe, so counting is not a line every check bounces between
/// cores. Reading sums the stripes (a figure for snapshots, not a decision).
// Used by the rate limiter, which needs the `http` feature.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
#[derive(Debug, Default)]
pub(crate) struct StripedCounter([Padded<AtomicU64>; STRIPES]);

/// Stripes of a [`StripedCounter`]: threads beyond this many share.
const STRIPES: usize = 8;

#[cfg_attr(not(feature = "http"), allow(dead_code))]
impl StripedCounter {
    #[inline]
    pub(crate) fn add(&self, n: u64) {
        self.0[stripe()].fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn sum(&self) -> u64 {
        self.0
            .iter()
            .fold(0u64, |sum, s| sum.wrapping_add(s.load(Ordering::Relaxed)))
    }
}

/// This thread's stripe, handed out in turn as threads first count.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
#[inline]
fn stripe() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static STRIPE: usize = NEXT.fetch_add(1, Ordering::Relaxed) % STRIPES;
    }
    STRIPE.try_with(|s| *s).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_striped_counter_sums_every_threads_adds() {
        let counter = StripedCounter::default();
        std::thread::scope(|s| {
            for _ in 0..STRIPES + 3 {
                s.spawn(|| {
                    for _ in 0..1_000 {
                        counter.add(1);
                    }
                });
            }
        });
        assert_eq!(counter.sum(), (STRIPES as u64 + 3) * 1_000);
    }
}
