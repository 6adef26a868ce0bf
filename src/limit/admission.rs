//! The limiter's shared state and its admission: a permit at once, a place
//! in the wait queue, or a refusal; and the release that feeds the algorithm.
//!
//! Everything that decides who runs happens under one mutex, so admission is
//! atomic: the limit, the in-flight counts (total and per priority), the
//! reserved shares and the queue are always read and changed together. The
//! figures a [`LimitHandle`](super::LimitHandle) reads are mirrored into
//! [`Counters`] on every change, so reading them never takes the lock. The
//! queue's own rules (its length, the door, evictions, the grants) are in
//! [`queue`](super::queue).

use std::{
    collections::VecDeque,
    fmt,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::Ordering::{Relaxed, SeqCst},
    },
    time::Duration,
};

use tokio::{sync::oneshot, time::Instant};

use super::{
    Algorithm, Sample,
    counters::Counters,
    forecast::{Forecast, Rates},
    histograms::Histograms,
    log::LimitLog,
    permit::{Outcome, Permit, Ticket},
    queue::{CRITICAL_ROOM, DOOR_MARGIN, QueueConfig, Waiter},
    reserved::Reserved,
};
use crate::{Priority, Reason};

/// What the lock guards: the algorithm, the queues, and the counts that
/// change with them.
pub(super) struct State {
    pub(super) algorithm: Box<dyn Algorithm + Send>,
    /// In flight per priority; kept only when shares are reserved (then
    /// every admission takes the lock).
    pub(super) in_flight_by: [usize; 4],
    pub(super) queues: [VecDeque<Waiter>; 4],
    pub(super) samples: u64,
    pub(super) drops: u64,
    pub(super) next_id: u64,
    pub(super) forecast: Forecast,
    /// When the queue was last empty, for the standing-queue rule.
    pub(super) last_empty: Instant,
    pub(super) log: LimitLog,
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
pub(crate) struct Limiter {
    pub(super) state: Mutex<State>,
    /// Whether the algorithm learns from samples; if not, no clock is read
    /// for a request that does not wait.
    pub(super) sampling: bool,
    /// No reserved shares: the lock-free paths are allowed.
    pub(super) fast: bool,
    pub(crate) counters: Counters,
    pub(crate) config: QueueConfig,
    pub(crate) base: Instant,
    /// The `layer` label of the limiter's metrics.
    pub(crate) name: Box<str>,
    /// Queue waits and rtts, recorded with the `metrics` feature.
    pub(super) histograms: Histograms,
}

impl fmt::Debug for Limiter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Limiter")
            .field("counters", &self.counters)
            .field("config", &self.config)
            .field("name", &self.name)
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

impl Limiter {
    pub(crate) fn new(
        algorithm: Box<dyn Algorithm + Send>,
        config: QueueConfig,
        name: Box<str>,
    ) -> Self {
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
                log: LimitLog::new(now),
            }),
            counters,
            config,
            base: now,
            histograms: Histograms::new(&name),
            name,
        }
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking algorithm must not wedge the limiter: the state is
        // consistent between statements, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn queued(&self) -> usize {
        self.counters.steady.queued.load(SeqCst)
    }

    /// Takes a slot if the limit allows; returns the in-flight count with it.
    pub(super) fn try_take(&self) -> Option<usize> {
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
                Ok(_) => return Some(cur + 1),
                Err(actual) => cur = actual,
            }
        }
    }

    /// Whether a request of priority `p` could be admitted now (lock held).
    pub(super) fn admissible(&self, st: &State, p: Priority) -> bool {
        let c = &self.counters;
        c.hot.in_flight.load(SeqCst) < c.steady.limit.load(Relaxed)
            || (!self.fast
                && st.in_flight_by[p.index()]
                    < self.config.reserved.slots(p, c.steady.limit.load(Relaxed)))
    }

    /// Admits a request of priority `p` if the limit or its reserve allows
    /// (lock held).
    pub(super) fn try_admit_locked(&self, st: &mut State, p: Priority) -> Option<usize> {
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
            return Some(c.hot.in_flight.fetch_add(1, SeqCst) + 1);
        }
        None
    }

    /// The permit of a request admitted at once.
    pub(super) fn permit(self: &Arc<Self>, p: Priority, in_flight: usize) -> Permit {
        self.counters.hot.at_once[p.index()].fetch_add(1, Relaxed);
        Permit::new(
            Arc::clone(self),
            self.sampling.then(Instant::now),
            in_flight,
            p,
        )
    }

    /// Admits a request of priority `p` now, queues it, or refuses it. A
    /// `deadline` (the caller's) shortens how long it may wait; it is asked
    /// for only if the request cannot be admitted at once (looking it up is a
    /// probe of the request's extensions that most requests do not need).
    pub(crate) fn acquire(
        self: &Arc<Self>,
        p: Priority,
        deadline: impl FnOnce() -> Option<Instant>,
    ) -> Admission {
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
        let budget = self.budget(&st, now, p, deadline());
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
            match (0..p.index()).find(|&i| !st.queues[i].is_empty()) {
                Some(lowest) => {
                    if let Some(evicted) = st.queues[lowest].pop_back() {
                        self.counters.steady.queued.fetch_sub(1, SeqCst);
                        let _ = evicted.tx.send(Err(Reason::QueueFull));
                        self.counters.queue_full.fetch_add(1, Relaxed);
                    }
                }
                // A queue of Critical alone takes more Critical, up to
                // `CRITICAL_ROOM`: the door has judged that it will be served
                // in time. A small limit's queue (twice the limit, at least
                // 8) would otherwise refuse Critical at once, and behind a
                // least-loaded balancer an instance refusing at once has
                // the fewest requests in flight and is sent the most.
                None if p == Priority::Critical
                    && self.queued() < CRITICAL_ROOM.min(self.config.max_len) => {}
                None => return self.refuse(st, Reason::QueueFull),
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
        self.counters.enqueued[p.index()].fetch_add(1, Relaxed);
        // Those now behind it wait longer: refuse the ones that no longer can.
        self.evict_hopeless(&mut st, now);
        // A slot freed by a lock-free release since we looked is found here
        // (see the type's docs); the grant waits in the channel.
        self.drain(&mut st, now);
        self.publish_queue(&st);
        drop(st);
        Admission::Queued(Ticket::new(Arc::clone(self), id, p, until, rx))
    }

    /// Counts a refusal and gives its retry hint: how long the backlog takes
    /// to drain (lock held, then released).
    pub(super) fn refuse(&self, st: MutexGuard<'_, State>, reason: Reason) -> Admission {
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

    pub(super) fn unadmit(&self, st: &mut State, p: Priority) {
        if !self.fast {
            st.in_flight_by[p.index()] -= 1;
        }
        self.counters.hot.in_flight.fetch_sub(1, SeqCst);
    }

    pub(super) fn release(
        &self,
        p: Priority,
        start: Option<Instant>,
        in_flight: usize,
        outcome: Outcome,
    ) {
        let c = &self.counters;
        let sample_start = match outcome {
            Outcome::Success | Outcome::Dropped => start,
            Outcome::Ignored => None,
        };
        if sample_start.is_none() && self.fast {
            // Nothing to learn: a decrement, and the lock only for waiters.
            c.hot.in_flight.fetch_sub(1, SeqCst);
            if self.queued() > 0 {
                let mut st = self.lock();
                self.drain(&mut st, Instant::now());
            }
            return;
        }

        // The one clock read of the release path, taken before the lock.
        let mut now = sample_start.map(|_| Instant::now());
        if let (Some(start), Some(now)) = (sample_start, now) {
            self.histograms.rtt(now.saturating_duration_since(start));
        }
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
                let in_flight = c.hot.in_flight.load(Relaxed);
                st.log
                    .limit_changed(now, before, limit, in_flight, self.queued());
            }
        }
        if self.queued() > 0 {
            let now = *now.get_or_insert_with(Instant::now);
            self.drain(&mut st, now);
        }
    }
}
