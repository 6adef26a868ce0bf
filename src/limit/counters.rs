//! The counts admission races on, and the figures mirrored out of the lock
//! for handles and load signals.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};

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
    /// Requests queued, by priority.
    pub(crate) enqueued: [AtomicU64; 4],
    /// Requests granted a permit out of the queue, by priority.
    pub(crate) granted: [AtomicU64; 4],
    /// The highest priority refused whatever the queue holds (index + 1;
    /// zero: none): a shedder in front refuses it without the lock.
    pub(crate) refusing: AtomicUsize,
    /// The forecast service rate, as `f64` bits (zero: none yet).
    pub(crate) service_rate: AtomicU64,
}

/// The counts every admission writes. An admission at once writes two (the
/// count in flight and its priority's count), a release one: the other
/// figures are derived from these.
#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Hot {
    /// Requests holding a permit; the authoritative count.
    pub(crate) in_flight: AtomicUsize,
    /// Requests admitted without waiting, by priority.
    pub(crate) at_once: [AtomicU64; 4],
}

#[derive(Debug, Default)]
#[repr(align(128))]
pub(crate) struct Steady {
    /// The limit; written under the lock, read anywhere.
    pub(crate) limit: AtomicUsize,
    /// Waiters; the authoritative count, changed under the lock only.
    pub(crate) queued: AtomicUsize,
}

impl Counters {
    /// Requests taken so far (admitted at once or queued) of priority `i`.
    pub(crate) fn arrivals(&self, i: usize) -> u64 {
        self.hot.at_once[i]
            .load(Relaxed)
            .wrapping_add(self.enqueued[i].load(Relaxed))
    }

    /// Requests admitted so far, at once or out of the queue.
    pub(crate) fn admitted(&self) -> u64 {
        (0..4).fold(0u64, |sum, i| sum.wrapping_add(self.admitted_by(i)))
    }

    /// Requests of priority `i` admitted so far, at once or out of the queue.
    pub(crate) fn admitted_by(&self, i: usize) -> u64 {
        self.hot.at_once[i]
            .load(Relaxed)
            .wrapping_add(self.granted[i].load(Relaxed))
    }

    /// Requests that have released their permit so far: those admitted less
    /// those in flight. (Admitted is read first, so an admission racing the
    /// reads can only make this lag behind the truth, never run ahead.)
    pub(crate) fn released(&self) -> u64 {
        let admitted = self.admitted();
        admitted.saturating_sub(self.hot.in_flight.load(Relaxed) as u64)
    }
}
