//! The priority-ordered wait queue: how long it may grow, who is refused at
//! the door or taken out while waiting, and the grants that hand waiters
//! their permits.
//!
//! A waiter's life: it is queued with a one-shot channel; a release (or a
//! growing limit) *grants* it a permit by counting it in flight and sending
//! the grant, all under the lock; an expired waiter reaching the head is sent
//! a refusal instead and never runs. A waiter that gives up (its own timer, or
//! its caller dropping it) removes itself under the lock; if it was already
//! granted, it finds the grant in its channel and releases it.

use std::{
    collections::VecDeque,
    sync::atomic::Ordering::{Relaxed, SeqCst},
    time::Duration,
};

use tokio::{sync::oneshot, time::Instant};

use super::{
    admission::{Limiter, State},
    forecast::{Counts, Rates},
    permit::{Grant, GrantResult},
    reserved::Reserved,
};
use crate::{Priority, Reason};

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
pub(super) const DOOR_MARGIN: f64 = 1.15;
/// ... and this many times when taking a waiter out: between the two, a
/// tier at the margin is neither let in nor thrown out on a wobble.
const EVICT_MARGIN: f64 = 0.9;
/// With a forecast, the queue holds at most this many limits' worth.
const BACKLOG: usize = 2;
/// ... and room for at least this many, however small the limit.
const MIN_BACKLOG: usize = 8;
/// How many waiters a queue of Critical alone may hold, when the length is
/// left to the forecast and that is more than it allows: Critical still
/// passes the door's forecast, so it waits only where it will be served.
pub(super) const CRITICAL_ROOM: usize = 32;

pub(super) struct Waiter {
    pub(super) id: u64,
    pub(super) enqueued: Instant,
    /// When it stops waiting: its queue timeout or its caller's deadline.
    pub(super) deadline: Instant,
    pub(super) tx: oneshot::Sender<GrantResult>,
}

impl Limiter {
    /// How many may wait: `max_queue` when set; otherwise, with a forecast, at most
    /// [`BACKLOG`] limits' worth (about that many round trips of work). That
    /// keeps the backend busy through any wobble of the arrivals, while the
    /// backlog a spike leaves behind drains within a few round trips, so the
    /// calm traffic after it is queued, not refused (lock held).
    pub(super) fn capacity(&self, st: &State, limit: usize) -> usize {
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
    pub(super) fn room(&self, st: &State, limit: usize, p: Priority) -> usize {
        let capacity = self.capacity(st, limit);
        if !self.config.auto_len || p == Priority::Critical {
            return capacity;
        }
        (capacity * (p.index() + 1) / 4).max(1)
    }

    /// How long a request of `priority` arriving at `now` may wait: its
    /// queue timeout, or less if its caller's `deadline` is sooner (lock held).
    pub(super) fn budget(
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
    pub(super) fn ahead_of(&self, st: &State, p: Priority) -> usize {
        st.queues[p.index()..].iter().map(VecDeque::len).sum()
    }

    /// Measures arrival rates when a measurement is due; `true` when they
    /// changed (lock held).
    pub(super) fn refresh_forecast(&self, st: &mut State, now: Instant) -> bool {
        let c = &self.counters;
        let counts = Counts {
            arrivals: std::array::from_fn(|i| c.arrivals(i)),
            completions: c.released(),
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
    pub(super) fn evict_hopeless(&self, st: &mut State, now: Instant) {
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
    pub(super) fn publish_refusing(&self, st: &State) {
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
    pub(super) fn wait_timeout(&self, st: &State, now: Instant, priority: Priority) -> Duration {
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
    pub(super) fn drain(&self, st: &mut State, now: Instant) {
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
            self.counters.granted[i].fetch_add(1, Relaxed);
            let waited = now.saturating_duration_since(waiter.enqueued);
            let grant = Grant {
                start: self.sampling.then_some(now),
                in_flight,
            };
            if waiter.tx.send(Ok(grant)).is_err() {
                // The waiter is gone (it removes itself under this lock, so
                // this does not happen; stay correct if it does).
                self.unadmit(st, p);
            } else {
                self.histograms.queue_wait(p, waited);
            }
        }
        if self.queued() == 0 {
            st.last_empty = now;
        }
        self.publish_queue(st);
    }

    pub(super) fn publish_queue(&self, st: &State) {
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

    /// Removes waiter `id` from the queue; `false` if it is no longer there.
    pub(super) fn remove(&self, p: Priority, id: u64) -> bool {
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
