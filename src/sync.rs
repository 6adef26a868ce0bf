//! Locks that outlive a panic. The state behind every mutex here is
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
