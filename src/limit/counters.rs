//! The counts admission races on, and the figures mirrored out of the lock
//! for handles and load signals.

use std::sync::atomic::{AtomicU64, AtomicUsize};

/// The counts admission races on, and figures mirrored out of the lock for
/// handles and load signals.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// What every admission and release writes, on its own cache lines.
    pub(crate) hot: Hot,
    /// What every admission reads and little writes, on other lines.
    pub(crate) steady: Steady,
    pub(crate) queued_by: [AtomicUsize; 4],
    /// Nanoseconds from `Limiter::base` to the oldest waiter's arrival, plus
    /// one; zero when nobody waits.
    pub(crate) oldest: AtomicU64,
    pub(crate) samples: AtomicU64,
    pub(crate) drops: AtomicU64,
    pub(crate) queue_full: AtomicU64,
    pub(crate) queue_timeout: AtomicU64,
    /// Refused at once because the forecast wait exceeded the budget.
    pub(crate) expected_wait: AtomicU64,
    /// Taken out of the queue because the forecast wait came to exceed
    /// what was left of their budget.
    pub(crate) evicted: AtomicU64,
    /// Refused at once because the caller's deadline ends sooner.
    pub(crate) deadline: AtomicU64,
    /// Requests taken (admitted or queued), by priority.
    pub(crate) arrivals: [AtomicU64; 4],
    /// The highest priority refused whatever the queue holds (index + 1;
    /// zero: none): a shedder in front refuses it without the lock.
    pub(crate) refusing: AtomicUsize,
    /// The forecast service rate, as `f64` bits (zero: none yet).
    pub(crate) service_rate: AtomicU64,
}

#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Hot {
    /// Requests holding a permit; the authoritative count.
    pub(crate) in_flight: AtomicUsize,
    pub(crate) admitted: AtomicU64,
    pub(crate) released: AtomicU64,
}

#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Steady {
    /// The limit; written under the lock, read anywhere.
    pub(crate) limit: AtomicUsize,
    /// Waiters; the authoritative count, changed under the lock only.
    pub(crate) queued: AtomicUsize,
}
