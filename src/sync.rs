//! Synchronisation helpers: cache-line padding for contended counters, and
//! locks that outlive a panic. The state behind every mutex here is
//! counters, maps and levels that are whole after any panic (a user's
//! `LoadSignal`, `Merge` or inner service), and refusing a poisoned lock
//! would stop the layer for good.

use std::sync::{Mutex, MutexGuard, TryLockError};

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
