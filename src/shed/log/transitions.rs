//! The shedder's log through `tracing`: transitions and periodic summaries.

use std::{
    sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering},
    time::Duration,
};

use tokio::time::Instant;

use super::super::core::Movement;
use crate::Priority;

/// How often a summary is logged while shedding.
const SUMMARY_PERIOD: Duration = Duration::from_secs(10);

/// Events without a clock reading of their own look at the time only this
/// often: a summary or "shedding stopped" comes at most this many requests
/// late, and a request pays no clock read for the log.
const CLOCK_EVERY: u32 = 16;

/// Transitions and summaries through `tracing`.
#[derive(Debug)]
pub(crate) struct Transitions {
    shedding: [AtomicBool; 4],
    period_shed: [AtomicU64; 4],
    any: AtomicBool,
    epoch: Instant,
    /// When the next summary is due, in nanoseconds since `epoch` (0: not
    /// scheduled).
    next_summary: AtomicU64,
    /// Events since the clock was last read for the log (approximate: a
    /// cadence, not a count).
    ticks: AtomicU32,
}

impl Transitions {
    pub(crate) fn new() -> Self {
        Self {
            shedding: Default::default(),
            period_shed: Default::default(),
            any: AtomicBool::new(false),
            epoch: Instant::now(),
            next_summary: AtomicU64::new(0),
            ticks: AtomicU32::new(0),
        }
    }

    pub(crate) fn on_shed(
        &self,
        priority: Priority,
        load: usize,
        in_flight: &AtomicUsize,
        retry_after: Duration,
        now: Option<Instant>,
    ) {
        self.period_shed[priority.index()].fetch_add(1, Ordering::Relaxed);
        if !self.shedding[priority.index()].swap(true, Ordering::Relaxed) {
            self.any.store(true, Ordering::Relaxed);
            tracing::warn!(
                priority = priority.as_str(),
                load,
                inflight = in_flight.load(Ordering::Relaxed),
                retry_after_ms = retry_after.as_millis() as u64,
                "shedding started"
            );
        }
        self.maybe_summary_at(now);
    }

    pub(crate) fn on_admit(&self) {
        if self.any.load(Ordering::Relaxed) {
            self.maybe_summary_at(None);
        }
    }

    /// A summary check at `now`, or, for an event that has not read the
    /// clock, at every [`CLOCK_EVERY`]th such event.
    fn maybe_summary_at(&self, now: Option<Instant>) {
        let now = match now {
            Some(now) => now,
            None => {
                // A relaxed load and store, not a read-modify-write: under
                // contention a tick may be lost, which only shifts the
                // cadence.
                let ticks = self.ticks.load(Ordering::Relaxed).wrapping_add(1);
                self.ticks.store(ticks, Ordering::Relaxed);
                if ticks % CLOCK_EVERY != 0 {
                    return;
                }
                Instant::now()
            }
        };
        self.maybe_summary(now);
    }

    pub(crate) fn on_window(&self, movement: Movement, delay: Option<Duration>, now: Instant) {
        let delay_ms = delay.map_or(0, |d| d.as_millis() as u64);
        match movement {
            Movement::Down { from, to } if from != to => {
                tracing::debug!(from, to, delay_ms, "admission level lowered");
            }
            Movement::Up { from, to } if from != to => {
                tracing::debug!(from, to, delay_ms, "admission level raised");
            }
            _ => {}
        }
        if self.any.load(Ordering::Relaxed) {
            self.maybe_summary(now);
        }
    }

    fn maybe_summary(&self, now: Instant) {
        let at = u64::try_from(now.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        let period = SUMMARY_PERIOD.as_nanos() as u64;
        let next = self.next_summary.load(Ordering::Relaxed);
        if next == 0 {
            // The first period starts now.
            let _ = self.next_summary.compare_exchange(
                0,
                at.saturating_add(period),
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return;
        }
        if at < next
            || self
                .next_summary
                .compare_exchange(
                    next,
                    at.saturating_add(period),
                    Ordering::Relaxed,
                    Ordering::Relaxed,
                )
                .is_err()
        {
            return;
        }
        let counts = [0, 1, 2, 3].map(|i| self.period_shed[i].swap(0, Ordering::Relaxed));
        let total: u64 = counts.iter().sum();
        if total > 0 {
            tracing::info!(
                low = counts[0],
                default = counts[1],
                high = counts[2],
                critical = counts[3],
                "shed {total} requests in the last {} s",
                SUMMARY_PERIOD.as_secs()
            );
        }
        let mut any = false;
        for p in Priority::ALL {
            let i = p.index();
            if counts[i] == 0 {
                if self.shedding[i].swap(false, Ordering::Relaxed) {
                    tracing::info!(priority = p.as_str(), "shedding stopped");
                }
            } else {
                any = true;
            }
        }
        self.any.store(any, Ordering::Relaxed);
    }
}
