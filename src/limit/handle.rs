//! A cheap, cloneable view of a limiter for stats endpoints and shedders.

use std::{
    fmt,
    sync::{Arc, atomic::Ordering::Relaxed},
    time::Duration,
};

use tokio::time::Instant;

use super::admission::Limiter;
use crate::{LoadSignal, Priority, priority::PerPriority};

/// A view of an [`AdaptiveLimitLayer`](super::AdaptiveLimitLayer)'s state:
/// the limit, what runs, what waits and for how long.
///
/// Every read is an atomic load; the handle never takes the limiter's lock.
/// It is also a [`LoadSignal`] (load = in flight + queued, queue delay = the
/// oldest waiter's age), so a priority shedder in front of the limiter can
/// shed from what the limiter sees:
///
/// ```
/// use tower_spillway::{LoadSignal, limit::{AdaptiveLimitLayer, Aimd}};
///
/// let layer = AdaptiveLimitLayer::new(Aimd::default());
/// let handle = layer.handle();
/// assert_eq!(handle.limit(), 20);
/// assert_eq!(handle.load(), 0);
/// ```
#[derive(Clone)]
pub struct LimitHandle {
    shared: Arc<Limiter>,
}

impl fmt::Debug for LimitHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.snapshot(), f)
    }
}

impl LimitHandle {
    pub(crate) fn new(shared: Arc<Limiter>) -> Self {
        Self { shared }
    }

    /// The limiter's name, set by
    /// [`AdaptiveLimitBuilder::name`](super::AdaptiveLimitBuilder::name)
    /// (default `"limit"`): the `layer` label of its metrics.
    pub fn name(&self) -> &str {
        &self.shared.name
    }

    /// The current concurrency limit.
    pub fn limit(&self) -> usize {
        self.shared.counters.steady.limit.load(Relaxed)
    }

    /// Requests holding a permit now.
    pub fn in_flight(&self) -> usize {
        self.shared.counters.hot.in_flight.load(Relaxed)
    }

    /// Requests waiting in the queue.
    pub fn queued(&self) -> usize {
        self.shared.counters.steady.queued.load(Relaxed)
    }

    /// Requests of `priority` waiting in the queue.
    pub fn queued_by(&self, priority: Priority) -> usize {
        self.shared.counters.queued_by[priority.index()].load(Relaxed)
    }

    /// How long the oldest waiter has waited; `None` when nobody waits.
    pub fn oldest_wait(&self) -> Option<Duration> {
        let nanos = self.shared.counters.oldest.load(Relaxed);
        if nanos == 0 {
            return None;
        }
        let since = self.shared.base + Duration::from_nanos(nanos - 1);
        Some(Instant::now().saturating_duration_since(since))
    }

    /// The forecast service rate, in requests per second: the limit over
    /// the mean rtt. `None` before the first sample (and always for an
    /// algorithm that takes none, such as [`Fixed`](super::Fixed)).
    pub fn service_rate(&self) -> Option<f64> {
        let rate = f64::from_bits(self.shared.counters.service_rate.load(Relaxed));
        (rate > 0.0).then_some(rate)
    }

    /// The highest priority the limiter refuses at its door now whatever
    /// its queue holds, because higher priorities alone leave it no slot
    /// within its queue timeout; `None` when it refuses none.
    pub fn refusing(&self) -> Option<Priority> {
        <Self as LoadSignal>::refusing(self)
    }

    /// Samples that reported a drop, since the limiter was built.
    pub fn drops(&self) -> u64 {
        self.shared.counters.drops.load(Relaxed)
    }

    /// Requests refused for want of capacity since the limiter was built:
    /// queue full, queue timeout, expected wait, taken out of the queue.
    /// Refusals for a caller's own deadline are not counted: a caller cannot
    /// make the service look loaded by sending short deadlines.
    pub(crate) fn refused_for_capacity(&self) -> u64 {
        let c = &self.shared.counters;
        [
            &c.queue_full,
            &c.queue_timeout,
            &c.expected_wait,
            &c.evicted,
        ]
        .into_iter()
        .fold(0u64, |sum, n| sum.wrapping_add(n.load(Relaxed)))
    }

    /// Every figure at once.
    pub fn snapshot(&self) -> LimitSnapshot {
        let c = &self.shared.counters;
        let q = |p: Priority| c.queued_by[p.index()].load(Relaxed);
        LimitSnapshot {
            limit: self.limit(),
            in_flight: self.in_flight(),
            queued: self.queued(),
            queued_by_priority: PerPriority::from_fn(|p| q(p) as u64),
            oldest_wait: self.oldest_wait(),
            admitted: c.admitted(),
            admitted_by_priority: PerPriority::from_fn(|p| c.admitted_by(p.index())),
            enqueued_by_priority: PerPriority::from_fn(|p| c.enqueued[p.index()].load(Relaxed)),
            released: c.released(),
            samples: c.samples.load(Relaxed),
            drops: c.drops.load(Relaxed),
            rejected_queue_full: c.queue_full.load(Relaxed),
            rejected_expected_wait: c.expected_wait.load(Relaxed),
            rejected_while_waiting: c.evicted.load(Relaxed),
            rejected_deadline: c.deadline.load(Relaxed),
            service_rate: self.service_rate(),
            refusing: self.refusing(),
            rejected_queue_timeout: c.queue_timeout.load(Relaxed),
        }
    }
}

impl LoadSignal for LimitHandle {
    fn load(&self) -> usize {
        self.in_flight() + self.queued()
    }

    fn queue_delay(&self) -> Option<Duration> {
        Some(self.oldest_wait().unwrap_or(Duration::ZERO))
    }

    /// `true` when the limiter's algorithm takes samples: it forecasts its
    /// queue from their rtts. (Until its first forecast, which the first
    /// request it queues publishes, it refuses nothing at the door, and
    /// neither does a shedder following it; deciding this once, not by
    /// whether a forecast exists yet, spares such a shedder the clock reads
    /// of steering by itself while nothing queues.)
    fn forecasts_refusals(&self) -> bool {
        self.shared.sampling
    }

    fn refusing(&self) -> Option<Priority> {
        // An empty queue refuses nothing it would not also refuse at the
        // head of the queue, and a stale forecast must not outlive the
        // overload: with nobody waiting, let the limiter decide.
        if self.queued() == 0 {
            return None;
        }
        match self.shared.counters.refusing.load(Relaxed) {
            0 => None,
            n => Priority::ALL.get(n - 1).copied(),
        }
    }
}

/// The figures of a [`LimitHandle`] at one moment (serialisable with the
/// `serde` feature, durations in milliseconds).
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct LimitSnapshot {
    /// The concurrency limit.
    pub limit: usize,
    /// Requests holding a permit.
    pub in_flight: usize,
    /// Requests waiting.
    pub queued: usize,
    /// Requests waiting, by priority.
    pub queued_by_priority: PerPriority,
    /// The oldest waiter's age.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "oldest_wait_ms", serialize_with = "ser_ms")
    )]
    pub oldest_wait: Option<Duration>,
    /// Requests admitted (at once or from the queue).
    pub admitted: u64,
    /// Requests admitted (at once or from the queue), by priority.
    pub admitted_by_priority: PerPriority,
    /// Requests that joined the queue, by priority (whatever became of
    /// them: granted a permit, refused, or gone).
    pub enqueued_by_priority: PerPriority,
    /// Permits released; equal to `admitted` once every admitted request
    /// has ended.
    pub released: u64,
    /// Samples fed to the algorithm.
    pub samples: u64,
    /// Samples that were drops.
    pub drops: u64,
    /// Requests refused because the queue was full (or to make room for a
    /// higher priority).
    pub rejected_queue_full: u64,
    /// Requests refused because they waited too long.
    pub rejected_queue_timeout: u64,
    /// Requests refused at once because the queue ahead of them would not
    /// have been served within their timeout.
    pub rejected_expected_wait: u64,
    /// Requests taken out of the queue, refused, because higher priorities
    /// arriving after them pushed their forecast wait past their budget.
    pub rejected_while_waiting: u64,
    /// Requests refused at once because their caller's deadline ended
    /// before their expected wait.
    pub rejected_deadline: u64,
    /// The forecast service rate, requests per second.
    pub service_rate: Option<f64>,
    /// The highest priority refused at the door whatever the queue holds.
    pub refusing: Option<Priority>,
}

#[cfg(feature = "serde")]
fn ser_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_millis() as u64)),
        None => s.serialize_none(),
    }
}
