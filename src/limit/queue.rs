//! The limiter's shared state: admission, the priority-ordered wait queue, and
//! permits.
//!
//! Everything that decides who runs happens under one mutex, so admission is
//! atomic: the limit, the in-flight counts (total and per priority), the
//! reserved shares and the queue are always read and changed together. The
//! figures a [`LimitHandle`](super::LimitHandle) reads are mirrored into
//! atomics on every change, so reading them never takes the lock.
//!
//! A waiter's life: it is queued with a one-shot channel; a release (or a
//! growing limit) *grants* it a permit by counting it in flight and sending
//! the grant, all under the lock; an expired waiter reaching the head is sent
//! a refusal instead and never runs. A waiter that gives up (its own timer, or
//! its caller dropping it) removes itself under the lock; if it was already
//! granted, it finds the grant in its channel and releases it.

use std::{
    collections::VecDeque,
    fmt,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed},
    },
    time::Duration,
};

use tokio::{sync::oneshot, time::Instant};

use super::{Algorithm, Sample};
use crate::{Priority, Reason};

/// What a request's permit tells the algorithm when it ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The request succeeded: its rtt is a sample.
    Success,
    /// The request failed with an overload signal: a sample with a drop.
    Dropped,
    /// The request says nothing about capacity (client cancellation, a 4xx, a
    /// panic): no sample, the permit is just released.
    Ignored,
}

/// Shares of the limit reserved for priorities, as in Netflix's partitioned
/// limiter.
///
/// A priority with a share `s` may always have `max(1, ceil(limit × s))`
/// requests in flight, even when the limit is reached. Below the limit every
/// priority borrows freely from the common pool; at the limit only a priority
/// still under its reserve is admitted. Shares add up to at most 1.
///
/// ```
/// use tower_spillway::{Priority, limit::Reserved};
///
/// let reserved = Reserved::new()
///     .share(Priority::Critical, 0.5)
///     .share(Priority::High, 0.3)
///     .build()
///     .unwrap();
/// # let _ = reserved;
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reserved {
    shares: [f64; 4],
}

impl Reserved {
    /// No reservations.
    pub const fn new() -> Self {
        Self { shares: [0.0; 4] }
    }

    /// Reserves `share` (in `(0, 1]`) of the limit for `priority`.
    #[must_use]
    pub fn share(mut self, priority: Priority, share: f64) -> Self {
        self.shares[priority.index()] = share;
        self
    }

    /// Checks that each share lies in `[0, 1]` and that they add up to at most 1.
    pub fn build(self) -> Result<Self, crate::ConfigError> {
        if self
            .shares
            .iter()
            .any(|s| !s.is_finite() || !(0.0..=1.0).contains(s))
        {
            return Err(crate::ConfigError::new("share", "must lie in [0, 1]"));
        }
        if self.shares.iter().sum::<f64>() > 1.0 + 1e-9 {
            return Err(crate::ConfigError::new(
                "share",
                "shares must add up to at most 1",
            ));
        }
        Ok(self)
    }

    /// The slots reserved for `priority` under `limit` (0 without a share).
    fn slots(&self, priority: Priority, limit: usize) -> usize {
        let share = self.shares[priority.index()];
        if share <= 0.0 {
            0
        } else {
            ((limit as f64 * share).ceil() as usize).max(1)
        }
    }
}

/// The queue's configuration, fixed when the layer is built.
#[derive(Debug, Clone)]
pub(crate) struct QueueConfig {
    pub(crate) max_len: usize,
    pub(crate) timeout: Duration,
    /// `(interval, short timeout)`: once the queue has not been empty for
    /// `interval`, a waiter may wait only `short timeout`.
    pub(crate) standing: Option<(Duration, Duration)>,
    pub(crate) reserved: Reserved,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            max_len: 128,
            timeout: Duration::from_secs(1),
            standing: Some((Duration::from_millis(100), Duration::from_millis(10))),
            reserved: Reserved::new(),
        }
    }
}

/// A permit granted to a waiter, sent through its channel.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Grant {
    start: Option<Instant>,
    in_flight: usize,
}

type GrantResult = Result<Grant, Reason>;

struct Waiter {
    id: u64,
    enqueued: Instant,
    tx: oneshot::Sender<GrantResult>,
}

struct State {
    algorithm: Box<dyn Algorithm + Send>,
    limit: usize,
    in_flight: usize,
    in_flight_by: [usize; 4],
    queues: [VecDeque<Waiter>; 4],
    queued: usize,
    admitted: u64,
    released: u64,
    samples: u64,
    drops: u64,
    next_id: u64,
    /// When the queue was last empty, for the standing-queue rule.
    last_empty: Instant,
}

/// Figures mirrored out of the lock for handles and load signals.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) limit: AtomicUsize,
    pub(crate) in_flight: AtomicUsize,
    pub(crate) queued_by: [AtomicUsize; 4],
    pub(crate) queued: AtomicUsize,
    /// Nanoseconds from `Shared::base` to the oldest waiter's arrival, plus
    /// one; zero when nobody waits.
    pub(crate) oldest: AtomicU64,
    pub(crate) admitted: AtomicU64,
    pub(crate) released: AtomicU64,
    pub(crate) samples: AtomicU64,
    pub(crate) drops: AtomicU64,
    pub(crate) queue_full: AtomicU64,
    pub(crate) queue_timeout: AtomicU64,
}

/// The state every clone of a layer and its services shares.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Whether the algorithm learns from samples; if not, no clock is read
    /// for a request that does not wait.
    sampling: bool,
    pub(crate) counters: Counters,
    pub(crate) config: QueueConfig,
    pub(crate) base: Instant,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Shared")
            .field("counters", &self.counters)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

/// The result of trying to get a permit at once.
pub(crate) enum Admission {
    Admitted(Permit),
    Queued(Ticket),
    Rejected(Reason),
}

impl Shared {
    pub(crate) fn new(algorithm: Box<dyn Algorithm + Send>, config: QueueConfig) -> Self {
        let now = Instant::now();
        let limit = algorithm.limit().max(1);
        let sampling = algorithm.needs_samples();
        let counters = Counters::default();
        counters.limit.store(limit, Relaxed);
        Self {
            sampling,
            state: Mutex::new(State {
                algorithm,
                limit,
                in_flight: 0,
                in_flight_by: [0; 4],
                queues: Default::default(),
                queued: 0,
                admitted: 0,
                released: 0,
                samples: 0,
                drops: 0,
                next_id: 0,
                last_empty: now,
            }),
            counters,
            config,
            base: now,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking algorithm must not wedge the limiter: the state is
        // consistent between statements, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn admissible(&self, st: &State, p: Priority) -> bool {
        st.in_flight < st.limit
            || st.in_flight_by[p.index()] < self.config.reserved.slots(p, st.limit)
    }

    /// Admits a request of priority `p` now, queues it, or refuses it.
    pub(crate) fn acquire(self: &Arc<Self>, p: Priority) -> Admission {
        let mut st = self.lock();
        let waiting_ahead =
            st.queued > 0 && st.queues[p.index()..].iter().any(|q| !q.is_empty());
        if !waiting_ahead && self.admissible(&st, p) {
            let in_flight = self.admit(&mut st, p);
            drop(st);
            return Admission::Admitted(Permit {
                start: self.sampling.then(Instant::now),
                shared: Arc::clone(self),
                in_flight,
                priority: p,
                outcome: Outcome::Ignored,
            });
        }

        if self.config.max_len == 0 {
            drop(st);
            self.counters.queue_full.fetch_add(1, Relaxed);
            return Admission::Rejected(Reason::QueueFull);
        }
        let now = Instant::now();
        if st.queued >= self.config.max_len {
            // Full: make room by refusing the newest waiter of the lowest
            // priority below this one, or refuse this request.
            let Some(lowest) = (0..p.index()).find(|&i| !st.queues[i].is_empty()) else {
                drop(st);
                self.counters.queue_full.fetch_add(1, Relaxed);
                return Admission::Rejected(Reason::QueueFull);
            };
            if let Some(evicted) = st.queues[lowest].pop_back() {
                st.queued -= 1;
                let _ = evicted.tx.send(Err(Reason::QueueFull));
                self.counters.queue_full.fetch_add(1, Relaxed);
            }
        }
        if st.queued == 0 {
            st.last_empty = now;
        }
        let timeout = self.wait_timeout(&st, now);
        let (tx, rx) = oneshot::channel();
        let id = st.next_id;
        st.next_id += 1;
        st.queues[p.index()].push_back(Waiter {
            id,
            enqueued: now,
            tx,
        });
        st.queued += 1;
        self.publish_queue(&st);
        drop(st);
        Admission::Queued(Ticket {
            shared: Arc::clone(self),
            id,
            priority: p,
            deadline: now + timeout,
            rx: Some(rx),
        })
    }

    /// How long a waiter arriving (or dequeued) at `now` may have waited.
    fn wait_timeout(&self, st: &State, now: Instant) -> Duration {
        match self.config.standing {
            Some((interval, short))
                if st.queued > 0 && now.saturating_duration_since(st.last_empty) > interval =>
            {
                short.min(self.config.timeout)
            }
            _ => self.config.timeout,
        }
    }

    fn admit(&self, st: &mut State, p: Priority) -> usize {
        st.in_flight += 1;
        st.in_flight_by[p.index()] += 1;
        st.admitted += 1;
        self.counters.in_flight.store(st.in_flight, Relaxed);
        self.counters.admitted.store(st.admitted, Relaxed);
        st.in_flight
    }

    /// Grants permits to queued waiters while the limit allows, highest
    /// priority first; refuses the expired ones it meets.
    fn drain(&self, st: &mut State, now: Instant) {
        if st.queued == 0 {
            return;
        }
        while let Some(i) = (0..4)
            .rev()
            .find(|&i| !st.queues[i].is_empty() && self.admissible(st, Priority::ALL[i]))
        {
            let timeout = self.wait_timeout(st, now);
            let Some(waiter) = st.queues[i].pop_front() else {
                break;
            };
            st.queued -= 1;
            if st.queued == 0 {
                st.last_empty = now;
            }
            if now.saturating_duration_since(waiter.enqueued) > timeout {
                let _ = waiter.tx.send(Err(Reason::QueueTimeout));
                self.counters.queue_timeout.fetch_add(1, Relaxed);
                continue;
            }
            let p = Priority::ALL[i];
            let in_flight = self.admit(st, p);
            let grant = Grant {
                start: self.sampling.then_some(now),
                in_flight,
            };
            if waiter.tx.send(Ok(grant)).is_err() {
                // The waiter is gone (it removes itself under this lock, so
                // this does not happen; stay correct if it does).
                self.unadmit(st, p);
            }
        }
        self.publish_queue(st);
    }

    fn unadmit(&self, st: &mut State, p: Priority) {
        st.in_flight -= 1;
        st.in_flight_by[p.index()] -= 1;
        st.released += 1;
        self.counters.in_flight.store(st.in_flight, Relaxed);
        self.counters.released.store(st.released, Relaxed);
    }

    fn publish_queue(&self, st: &State) {
        let c = &self.counters;
        for (i, q) in st.queues.iter().enumerate() {
            c.queued_by[i].store(q.len(), Relaxed);
        }
        c.queued.store(st.queued, Relaxed);
        let oldest = st
            .queues
            .iter()
            .filter_map(|q| q.front())
            .map(|w| w.enqueued)
            .min();
        let nanos = oldest.map_or(0, |t| {
            u64::try_from(t.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX - 1)
                + 1
        });
        c.oldest.store(nanos, Relaxed);
    }

    fn release(&self, p: Priority, start: Option<Instant>, in_flight: usize, outcome: Outcome) {
        // The one clock read of the release path, taken only for a sample
        // (or, rarely, to date a dequeue).
        let sample_start = match outcome {
            Outcome::Success | Outcome::Dropped => start,
            Outcome::Ignored => None,
        };
        let mut now = sample_start.map(|_| Instant::now());
        let mut st = self.lock();
        self.unadmit(&mut st, p);
        if let (Some(start), Some(now)) = (sample_start, now) {
            let dropped = outcome == Outcome::Dropped;
            let sample = Sample {
                start: start.saturating_duration_since(self.base),
                rtt: now.saturating_duration_since(start),
                in_flight,
                dropped,
            };
            let before = st.limit;
            st.limit = st.algorithm.update(sample).max(1);
            st.samples += 1;
            st.drops += u64::from(dropped);
            let c = &self.counters;
            c.samples.store(st.samples, Relaxed);
            if dropped {
                c.drops.store(st.drops, Relaxed);
            }
            if st.limit != before {
                c.limit.store(st.limit, Relaxed);
                log_change(before, st.limit, st.in_flight, st.queued);
            }
        }
        if st.queued > 0 {
            let now = *now.get_or_insert_with(Instant::now);
            self.drain(&mut st, now);
        }
    }

    /// Removes waiter `id` from the queue; `false` if it is no longer there.
    fn remove(&self, p: Priority, id: u64) -> bool {
        let mut st = self.lock();
        let q = &mut st.queues[p.index()];
        let Some(pos) = q.iter().position(|w| w.id == id) else {
            return false;
        };
        q.remove(pos);
        st.queued -= 1;
        if st.queued == 0 {
            st.last_empty = Instant::now();
        }
        self.publish_queue(&st);
        true
    }
}

#[cfg(feature = "tracing")]
fn log_change(before: usize, limit: usize, inflight: usize, queued: usize) {
    if limit < before {
        tracing::debug!(
            limit,
            before,
            inflight,
            queued,
            "concurrency limit decreased"
        );
    } else {
        tracing::trace!(
            limit,
            before,
            inflight,
            queued,
            "concurrency limit increased"
        );
    }
}

#[cfg(not(feature = "tracing"))]
fn log_change(_before: usize, _limit: usize, _inflight: usize, _queued: usize) {}

/// A request's right to run, held from admission until its outcome is known
/// (for HTTP: until the response body ends or is dropped).
///
/// Ending it releases the slot and, unless the outcome is
/// [`Outcome::Ignored`], feeds the request's rtt to the algorithm. A permit
/// dropped without [`finish`](Self::finish) (the caller went away, the inner
/// service panicked) is released as [`Outcome::Ignored`]. Either way it is
/// released exactly once.
#[must_use = "dropping a permit releases it at once"]
pub struct Permit {
    shared: Arc<Shared>,
    start: Option<Instant>,
    in_flight: usize,
    priority: Priority,
    outcome: Outcome,
}

impl Permit {
    /// Releases the permit with `outcome`.
    pub fn finish(mut self, outcome: Outcome) {
        self.outcome = outcome;
    }

    /// The priority the request was admitted with.
    pub fn priority(&self) -> Priority {
        self.priority
    }

    /// Requests in flight when this one was admitted, itself included.
    pub fn in_flight_at_admission(&self) -> usize {
        self.in_flight
    }

    pub(crate) fn from_grant(shared: Arc<Shared>, grant: Grant, priority: Priority) -> Self {
        Self {
            shared,
            start: grant.start,
            in_flight: grant.in_flight,
            priority,
            outcome: Outcome::Ignored,
        }
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.shared
            .release(self.priority, self.start, self.in_flight, self.outcome);
    }
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("priority", &self.priority)
            .field("in_flight", &self.in_flight)
            .finish_non_exhaustive()
    }
}

/// A place in the wait queue.
pub(crate) struct Ticket {
    shared: Arc<Shared>,
    id: u64,
    priority: Priority,
    pub(crate) deadline: Instant,
    rx: Option<oneshot::Receiver<GrantResult>>,
}

impl fmt::Debug for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket")
            .field("id", &self.id)
            .field("priority", &self.priority)
            .finish_non_exhaustive()
    }
}

impl Ticket {
    pub(crate) fn priority(&self) -> Priority {
        self.priority
    }

    /// Polls for a grant or a refusal.
    pub(crate) fn poll(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<Permit, Reason>> {
        use std::{future::Future, pin::Pin, task::Poll};
        let Some(rx) = self.rx.as_mut() else {
            return Poll::Ready(Err(Reason::QueueTimeout));
        };
        match Pin::new(rx).poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(res) => {
                self.rx = None;
                Poll::Ready(self.resolve(res.ok()))
            }
        }
    }

    fn resolve(&self, res: Option<GrantResult>) -> Result<Permit, Reason> {
        match res {
            Some(Ok(grant)) => Ok(Permit::from_grant(
                Arc::clone(&self.shared),
                grant,
                self.priority,
            )),
            Some(Err(reason)) => Err(reason),
            None => Err(Reason::QueueTimeout),
        }
    }

    /// The waiter's time is up: leave the queue, unless a grant or refusal
    /// raced the timer, in which case that answer stands.
    pub(crate) fn expire(&mut self) -> Result<Permit, Reason> {
        let Some(mut rx) = self.rx.take() else {
            return Err(Reason::QueueTimeout);
        };
        if self.shared.remove(self.priority, self.id) {
            self.shared.counters.queue_timeout.fetch_add(1, Relaxed);
            return Err(Reason::QueueTimeout);
        }
        self.resolve(rx.try_recv().ok())
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Some(mut rx) = self.rx.take() {
            if !self.shared.remove(self.priority, self.id) {
                // Granted before we could leave: release the permit.
                if let Ok(Ok(grant)) = rx.try_recv() {
                    drop(Permit::from_grant(
                        Arc::clone(&self.shared),
                        grant,
                        self.priority,
                    ));
                }
            }
        }
    }
}
