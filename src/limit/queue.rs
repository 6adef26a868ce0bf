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
        atomic::{
            AtomicU64, AtomicUsize,
            Ordering::{Relaxed, SeqCst},
        },
    },
    time::Duration,
};

use tokio::{sync::oneshot, time::Instant};

use super::{
    Algorithm, Sample,
    forecast::{Counts, Forecast, Rates},
};
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
    /// `max_len` was not set: with a forecast, hold [`BACKLOG`] limits'
    /// worth at most.
    pub(crate) auto_len: bool,
    pub(crate) timeout: Duration,
    /// `(interval, short timeout)`: once the queue has not been empty for
    /// `interval`, a waiter may wait only `short timeout`.
    pub(crate) standing: Option<(Duration, Duration)>,
    pub(crate) reserved: Reserved,
}

impl QueueConfig {
    /// The defaults, usable in constants.
    pub(crate) const DEFAULT: Self = Self {
        max_len: 1024,
        auto_len: true,
        timeout: Duration::from_secs(1),
        standing: None,
        reserved: Reserved::new(),
    };
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Higher priorities' arrivals count this many times at the door.
const DOOR_MARGIN: f64 = 1.15;
/// ... and this many times when taking a waiter out: between the two, a
/// tier at the margin is neither let in nor thrown out on a wobble.
const EVICT_MARGIN: f64 = 0.9;
/// With a forecast, the queue holds at most this many limits' worth.
const BACKLOG: usize = 2;
/// ... and room for at least this many, however small the limit.
const MIN_BACKLOG: usize = 8;

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
    /// When it stops waiting: its queue timeout or its caller's deadline.
    deadline: Instant,
    tx: oneshot::Sender<GrantResult>,
}

struct State {
    algorithm: Box<dyn Algorithm + Send>,
    /// In flight per priority; kept only when shares are reserved (then
    /// every admission takes the lock).
    in_flight_by: [usize; 4],
    queues: [VecDeque<Waiter>; 4],
    samples: u64,
    drops: u64,
    next_id: u64,
    forecast: Forecast,
    /// When the queue was last empty, for the standing-queue rule.
    last_empty: Instant,
    #[cfg(feature = "tracing")]
    last_log: Instant,
    /// The limit's range since the last debug line.
    #[cfg(feature = "tracing")]
    log_range: Option<(usize, usize)>,
}

/// The counts admission races on, and figures mirrored out of the lock for
/// handles and load signals.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// What every admission and release writes, on its own cache lines.
    pub(crate) hot: Hot,
    /// What every admission reads and little writes, on other lines.
    pub(crate) steady: Steady,
    pub(crate) queued_by: [AtomicUsize; 4],
    /// Nanoseconds from `Shared::base` to the oldest waiter's arrival, plus
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

/// The state every clone of a layer and its services shares.
///
/// Admission is a compare-and-swap of `in_flight` against `limit`, so the
/// limit holds without the lock. Without reserved shares, a request that
/// finds nobody waiting is admitted by that CAS alone, and a request that
/// takes no sample is released by a decrement alone; everything else (the
/// queue, samples, reservations) happens under the lock.
///
/// The lock-free release and the locked enqueue cannot miss each other: the
/// releaser decrements `in_flight` and then reads `queued`; the enqueuer
/// increments `queued` and then (draining) reads `in_flight`, all
/// sequentially consistent. Either the releaser sees the waiter and drains,
/// or the enqueuer sees the free slot.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Whether the algorithm learns from samples; if not, no clock is read
    /// for a request that does not wait.
    sampling: bool,
    /// No reserved shares: the lock-free paths are allowed.
    fast: bool,
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
    /// Refused, with a hint of when the backlog will have drained.
    Rejected(Reason, Option<Duration>),
}

impl Shared {
    pub(crate) fn new(algorithm: Box<dyn Algorithm + Send>, config: QueueConfig) -> Self {
        let now = Instant::now();
        let limit = algorithm.limit().max(1);
        let sampling = algorithm.needs_samples();
        let counters = Counters::default();
        counters.steady.limit.store(limit, Relaxed);
        Self {
            sampling,
            fast: config.reserved == Reserved::new(),
            state: Mutex::new(State {
                algorithm,
                in_flight_by: [0; 4],
                queues: Default::default(),
                samples: 0,
                drops: 0,
                next_id: 0,
                forecast: Forecast::new(),
                last_empty: now,
                #[cfg(feature = "tracing")]
                last_log: now,
                #[cfg(feature = "tracing")]
                log_range: None,
            }),
            counters,
            config,
            base: now,
        }
    }

    /// Called when the configuration changed after `new`.
    pub(crate) fn reconfigured(&mut self) {
        self.fast = self.config.reserved == Reserved::new();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking algorithm must not wedge the limiter: the state is
        // consistent between statements, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queued(&self) -> usize {
        self.counters.steady.queued.load(SeqCst)
    }

    /// Takes a slot if the limit allows; returns the in-flight count with it.
    fn try_take(&self) -> Option<usize> {
        let c = &self.counters;
        let mut cur = c.hot.in_flight.load(Relaxed);
        loop {
            if cur >= c.steady.limit.load(Relaxed) {
                return None;
            }
            match c
                .hot
                .in_flight
                .compare_exchange_weak(cur, cur + 1, SeqCst, Relaxed)
            {
                Ok(_) => {
                    c.hot.admitted.fetch_add(1, Relaxed);
                    return Some(cur + 1);
                }
                Err(actual) => cur = actual,
            }
        }
    }

    /// Whether a request of priority `p` could be admitted now (lock held).
    fn admissible(&self, st: &State, p: Priority) -> bool {
        let c = &self.counters;
        c.hot.in_flight.load(SeqCst) < c.steady.limit.load(Relaxed)
            || (!self.fast
                && st.in_flight_by[p.index()]
                    < self.config.reserved.slots(p, c.steady.limit.load(Relaxed)))
    }

    /// Admits a request of priority `p` if the limit or its reserve allows
    /// (lock held).
    fn try_admit_locked(&self, st: &mut State, p: Priority) -> Option<usize> {
        if let Some(n) = self.try_take() {
            if !self.fast {
                st.in_flight_by[p.index()] += 1;
            }
            return Some(n);
        }
        let c = &self.counters;
        if !self.fast
            && st.in_flight_by[p.index()]
                < self.config.reserved.slots(p, c.steady.limit.load(Relaxed))
        {
            // Within the priority's reserve: beyond the global limit. Every
            // admission takes the lock in this mode, so this is atomic too.
            st.in_flight_by[p.index()] += 1;
            c.hot.admitted.fetch_add(1, Relaxed);
            return Some(c.hot.in_flight.fetch_add(1, SeqCst) + 1);
        }
        None
    }

    /// The permit of a request admitted at once.
    fn permit(self: &Arc<Self>, p: Priority, in_flight: usize) -> Permit {
        self.counters.arrivals[p.index()].fetch_add(1, Relaxed);
        Permit {
            start: self.sampling.then(Instant::now),
            shared: Arc::clone(self),
            in_flight,
            priority: p,
            outcome: Outcome::Ignored,
        }
    }

    /// Admits a request of priority `p` now, queues it, or refuses it. A
    /// `deadline` (the caller's) shortens how long it may wait.
    pub(crate) fn acquire(self: &Arc<Self>, p: Priority, deadline: Option<Instant>) -> Admission {
        if self.fast && self.queued() == 0 {
            if let Some(n) = self.try_take() {
                return Admission::Admitted(self.permit(p, n));
            }
        }

        let mut st = self.lock();
        let waiting_ahead =
            self.queued() > 0 && st.queues[p.index()..].iter().any(|q| !q.is_empty());
        if !waiting_ahead {
            if let Some(n) = self.try_admit_locked(&mut st, p) {
                drop(st);
                return Admission::Admitted(self.permit(p, n));
            }
        }

        let now = Instant::now();
        if self.refresh_forecast(&mut st, now) {
            self.evict_hopeless(&mut st, now);
        }
        if self.config.max_len == 0 {
            return self.refuse(st, Reason::QueueFull);
        }
        let budget = self.budget(&st, now, p, deadline);
        if budget.is_zero() {
            return self.refuse(st, Reason::Deadline);
        }
        // Refuse at the door what the queue could not serve in time. Only a
        // request forecast to wait at most half its budget, on the higher of
        // the recent and settled rates, is let in: the other half absorbs the
        // forecast's error, so what waits is served.
        let ahead = self.ahead_of(&st, p) + 1;
        let limit = self.counters.steady.limit.load(Relaxed);
        if let Some(wait) = st
            .forecast
            .wait_on(Rates::Higher, p, ahead, limit, DOOR_MARGIN)
        {
            if wait > budget / 2 {
                let reason = if budget < self.wait_timeout(&st, now, p) {
                    Reason::Deadline
                } else {
                    Reason::ExpectedWait
                };
                return self.refuse(st, reason);
            }
        }
        if self.queued() >= self.room(&st, limit, p) {
            // Full: make room by refusing the newest waiter of the lowest
            // priority below this one, or refuse this request.
            let Some(lowest) = (0..p.index()).find(|&i| !st.queues[i].is_empty()) else {
                return self.refuse(st, Reason::QueueFull);
            };
            if let Some(evicted) = st.queues[lowest].pop_back() {
                self.counters.steady.queued.fetch_sub(1, SeqCst);
                let _ = evicted.tx.send(Err(Reason::QueueFull));
                self.counters.queue_full.fetch_add(1, Relaxed);
            }
        }
        if self.queued() == 0 {
            st.last_empty = now;
        }
        let until = crate::time::after(now, budget);
        let (tx, rx) = oneshot::channel();
        let id = st.next_id;
        st.next_id += 1;
        st.queues[p.index()].push_back(Waiter {
            id,
            enqueued: now,
            deadline: until,
            tx,
        });
        self.counters.steady.queued.fetch_add(1, SeqCst);
        self.counters.arrivals[p.index()].fetch_add(1, Relaxed);
        // Those now behind it wait longer: refuse the ones that no longer can.
        self.evict_hopeless(&mut st, now);
        // A slot freed by a lock-free release since we looked is found here
        // (see the type's docs); the grant waits in the channel.
        self.drain(&mut st, now);
        self.publish_queue(&st);
        drop(st);
        Admission::Queued(Ticket {
            shared: Arc::clone(self),
            id,
            priority: p,
            deadline: until,
            rx: Some(rx),
        })
    }

    /// How many may wait: `max_queue` when set; otherwise, with a forecast, at most
    /// [`BACKLOG`] limits' worth (about that many round trips of work). That
    /// keeps the backend busy through any wobble of the arrivals, while the
    /// backlog a spike leaves behind drains within a few round trips, so the
    /// calm traffic after it is queued, not refused (lock held).
    fn capacity(&self, st: &State, limit: usize) -> usize {
        if !self.config.auto_len || st.forecast.service_rate(limit).is_none() {
            return self.config.max_len;
        }
        let backlog = limit.saturating_mul(BACKLOG).max(MIN_BACKLOG);
        self.config.max_len.min(backlog)
    }

    /// How many waiters a request of `p` may join: the whole queue for
    /// Critical; with the length left to the forecast, a share for each tier
    /// below (three quarters for High, half for Default, a quarter for Low),
    /// so the backlog of a tier at the margin leaves room for the tiers above
    /// it instead of being thrown out, after waiting, to make that room
    /// (lock held).
    fn room(&self, st: &State, limit: usize, p: Priority) -> usize {
        let capacity = self.capacity(st, limit);
        if !self.config.auto_len || p == Priority::Critical {
            return capacity;
        }
        (capacity * (p.index() + 1) / 4).max(1)
    }

    /// Counts a refusal and gives its retry hint: how long the backlog takes
    /// to drain (lock held, then released).
    fn refuse(&self, st: MutexGuard<'_, State>, reason: Reason) -> Admission {
        let c = &self.counters;
        match reason {
            Reason::ExpectedWait => &c.expected_wait,
            Reason::Deadline => &c.deadline,
            _ => &c.queue_full,
        }
        .fetch_add(1, Relaxed);
        let backlog = self.queued() + 1;
        let hint = st
            .forecast
            .drain_time(backlog, c.steady.limit.load(Relaxed));
        self.publish_refusing(&st);
        drop(st);
        Admission::Rejected(reason, hint)
    }

    /// How long a request of `priority` arriving at `now` may wait: its
    /// queue timeout, or less if its caller's `deadline` is sooner (lock held).
    fn budget(
        &self,
        st: &State,
        now: Instant,
        priority: Priority,
        deadline: Option<Instant>,
    ) -> Duration {
        let timeout = self.wait_timeout(st, now, priority);
        match deadline {
            Some(d) => timeout.min(d.saturating_duration_since(now)),
            None => timeout,
        }
    }

    /// Waiters that a request of `p` would have ahead of it: every waiter of
    /// its priority and above (lock held).
    fn ahead_of(&self, st: &State, p: Priority) -> usize {
        st.queues[p.index()..].iter().map(VecDeque::len).sum()
    }

    /// Measures arrival rates when a measurement is due; `true` when they
    /// changed (lock held).
    fn refresh_forecast(&self, st: &mut State, now: Instant) -> bool {
        let c = &self.counters;
        let counts = Counts {
            arrivals: std::array::from_fn(|i| c.arrivals[i].load(Relaxed)),
            completions: c.hot.released.load(Relaxed),
        };
        let changed = st.forecast.observe(now, counts);
        if changed {
            self.publish_refusing(st);
        }
        changed
    }

    /// Refuses, from the lowest priority up, the newest waiters that can no
    /// longer be served in time: higher priorities that arrived since they
    /// queued take every slot (on the lower of the recent and settled rates,
    /// even counted at [`EVICT_MARGIN`]), or push their forecast wait past
    /// four times what is left of their budget. They would only time out
    /// later. (A forecast merely over the budget is left to wait: rates are
    /// noisy, and a refusal after a wait is slower than one at the door.)
    /// Lock held.
    fn evict_hopeless(&self, st: &mut State, now: Instant) {
        let limit = self.counters.steady.limit.load(Relaxed);
        for i in 0..4 {
            while let Some(back) = st.queues[i].back() {
                let ahead: usize = st.queues[i..].iter().map(VecDeque::len).sum();
                let left = back.deadline.saturating_duration_since(now);
                let hopeless = st
                    .forecast
                    .wait_on(Rates::Lower, Priority::ALL[i], ahead, limit, EVICT_MARGIN)
                    .is_some_and(|wait| wait == Duration::MAX || wait > left * 4);
                if !hopeless {
                    break;
                }
                if let Some(evicted) = st.queues[i].pop_back() {
                    self.counters.steady.queued.fetch_sub(1, SeqCst);
                    let _ = evicted.tx.send(Err(Reason::ExpectedWait));
                    self.counters.evicted.fetch_add(1, Relaxed);
                }
            }
            if !st.queues[i].is_empty() {
                // The waiters above this one have fewer ahead of them.
                break;
            }
        }
    }

    /// Publishes the highest priority that would be refused even at the head
    /// of its own tier: higher priorities alone leave it no slot in time
    /// (lock held).
    fn publish_refusing(&self, st: &State) {
        let limit = self.counters.steady.limit.load(Relaxed);
        let mut refusing = 0;
        for i in (0..4).rev() {
            let ahead: usize = st.queues[i + 1..].iter().map(VecDeque::len).sum();
            let hopeless = st
                .forecast
                .wait(Priority::ALL[i], ahead + 1, limit)
                .is_some_and(|w| w > self.config.timeout);
            if hopeless {
                refusing = i + 1;
                break;
            }
        }
        self.counters.refusing.store(refusing, Relaxed);
        let rate = st.forecast.service_rate(limit).unwrap_or(0.0);
        self.counters.service_rate.store(rate.to_bits(), Relaxed);
    }

    /// How long a waiter of `priority` arriving (or dequeued) at `now` may
    /// have waited. The standing-queue rule drains a queue that has stopped
    /// emptying by shortening the wait of everything below Critical; Critical
    /// waiters, served first anyway, keep the full timeout, so a standing
    /// queue of lesser work never times out the work that must get through.
    fn wait_timeout(&self, st: &State, now: Instant, priority: Priority) -> Duration {
        match self.config.standing {
            Some((interval, short))
                if priority < Priority::Critical
                    && self.queued() > 0
                    && now.saturating_duration_since(st.last_empty) > interval =>
            {
                short.min(self.config.timeout)
            }
            _ => self.config.timeout,
        }
    }

    /// Grants permits to queued waiters while the limit allows, highest
    /// priority first; refuses the expired ones it meets (lock held).
    fn drain(&self, st: &mut State, now: Instant) {
        if self.queued() == 0 {
            return;
        }
        while let Some(i) = (0..4)
            .rev()
            .find(|&i| !st.queues[i].is_empty() && self.admissible(st, Priority::ALL[i]))
        {
            let timeout = self.wait_timeout(st, now, Priority::ALL[i]);
            let Some(waiter) = st.queues[i].pop_front() else {
                break;
            };
            if now.saturating_duration_since(waiter.enqueued) > timeout || now > waiter.deadline {
                self.counters.steady.queued.fetch_sub(1, SeqCst);
                let _ = waiter.tx.send(Err(Reason::QueueTimeout));
                self.counters.queue_timeout.fetch_add(1, Relaxed);
                continue;
            }
            let p = Priority::ALL[i];
            let Some(in_flight) = self.try_admit_locked(st, p) else {
                // A lock-free admission took the slot first.
                st.queues[i].push_front(waiter);
                break;
            };
            self.counters.steady.queued.fetch_sub(1, SeqCst);
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
        if self.queued() == 0 {
            st.last_empty = now;
        }
        self.publish_queue(st);
    }

    fn unadmit(&self, st: &mut State, p: Priority) {
        if !self.fast {
            st.in_flight_by[p.index()] -= 1;
        }
        self.counters.hot.in_flight.fetch_sub(1, SeqCst);
        self.counters.hot.released.fetch_add(1, Relaxed);
    }

    fn publish_queue(&self, st: &State) {
        let c = &self.counters;
        for (i, q) in st.queues.iter().enumerate() {
            c.queued_by[i].store(q.len(), Relaxed);
        }
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
        let c = &self.counters;
        let sample_start = match outcome {
            Outcome::Success | Outcome::Dropped => start,
            Outcome::Ignored => None,
        };
        if sample_start.is_none() && self.fast {
            // Nothing to learn: a decrement, and the lock only for waiters.
            c.hot.in_flight.fetch_sub(1, SeqCst);
            c.hot.released.fetch_add(1, Relaxed);
            if self.queued() > 0 {
                let mut st = self.lock();
                self.drain(&mut st, Instant::now());
            }
            return;
        }

        // The one clock read of the release path, taken before the lock.
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
            if !dropped {
                st.forecast.on_rtt(sample.rtt);
            }
            let before = c.steady.limit.load(Relaxed);
            let limit = st.algorithm.update(sample).max(1);
            st.samples += 1;
            st.drops += u64::from(dropped);
            c.samples.store(st.samples, Relaxed);
            if dropped {
                c.drops.store(st.drops, Relaxed);
            }
            if limit != before {
                c.steady.limit.store(limit, SeqCst);
                log_change(&mut st, now, before, limit, c, self.queued());
            }
        }
        if self.queued() > 0 {
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
        if self.counters.steady.queued.fetch_sub(1, SeqCst) == 1 {
            st.last_empty = Instant::now();
        }
        self.publish_queue(&st);
        true
    }
}

/// Every change at `trace`; at `debug`, at most one line a second with the
/// limit's range since the last one, so that an oscillating limit under
/// overload does not turn logging into load.
#[cfg(feature = "tracing")]
fn log_change(
    st: &mut State,
    now: Instant,
    before: usize,
    limit: usize,
    c: &Counters,
    queued: usize,
) {
    let inflight = c.hot.in_flight.load(Relaxed);
    tracing::trace!(limit, before, inflight, queued, "concurrency limit changed");
    let (lo, hi) = st.log_range.get_or_insert((limit, limit));
    *lo = (*lo).min(limit);
    *hi = (*hi).max(limit);
    if now.saturating_duration_since(st.last_log) >= Duration::from_secs(1) {
        let (lo, hi) = st.log_range.take().unwrap_or((limit, limit));
        st.last_log = now;
        tracing::debug!(limit, lo, hi, inflight, queued, "concurrency limit moved");
    }
}

#[cfg(not(feature = "tracing"))]
fn log_change(
    _st: &mut State,
    _now: Instant,
    _before: usize,
    _limit: usize,
    _c: &Counters,
    _queued: usize,
) {
}

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
