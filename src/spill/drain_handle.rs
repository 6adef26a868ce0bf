//! What a drain shares with whoever reads its figures: its source, its
//! counters and its pace.

use std::{
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

use crate::Priority;

use super::{
    source::DrainSource,
    store::{StoreError, StoreStats},
};

pub(crate) struct DrainShared {
    pub(crate) source: Arc<dyn DrainSource>,
    /// Wakes an idle drain when a job is stored.
    pub(crate) stored: Notify,
    pub(crate) counters: DrainCounters,
    pub(crate) pace: Mutex<Pace>,
    pub(crate) last_stats: Mutex<StoreStats>,
    /// How many bytes of a replay's answer a finished job keeps.
    pub(crate) status_body: usize,
}

impl std::fmt::Debug for DrainShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrainShared")
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl DrainShared {
    pub(crate) fn new(source: Arc<dyn DrainSource>, status_body: usize) -> Self {
        Self {
            source,
            stored: Notify::new(),
            counters: DrainCounters::default(),
            pace: Mutex::new(Pace::new()),
            last_stats: Mutex::new(StoreStats::default()),
            status_body,
        }
    }

    /// The drain's rate now, if it has one.
    pub(crate) fn rate(&self) -> Option<f64> {
        crate::sync::lock(&self.pace).rate(Instant::now())
    }

    pub(crate) fn stats(&self) -> StoreStats {
        *crate::sync::lock(&self.last_stats)
    }

    pub(crate) async fn read_stats(&self) -> Result<StoreStats, StoreError> {
        let stats = self.source.stats().await?;
        *crate::sync::lock(&self.last_stats) = stats;
        Ok(stats)
    }
}

#[derive(Debug, Default)]
pub(crate) struct DrainCounters {
    pub(crate) replayed: AtomicU64,
    pub(crate) deferred: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    /// Replays running now (a gauge).
    pub(crate) in_flight: AtomicU64,
    /// By [`Priority::index`].
    pub(crate) discarded: [AtomicU64; 4],
}

/// The drain's completions per second, smoothed over about a second.
#[derive(Debug)]
pub(crate) struct Pace {
    window_start: Instant,
    in_window: u64,
    rate: Option<f64>,
}

impl Pace {
    const WINDOW: Duration = Duration::from_millis(500);

    fn new() -> Self {
        Self {
            window_start: Instant::now(),
            in_window: 0,
            rate: None,
        }
    }

    pub(crate) fn record(&mut self, now: Instant) {
        self.roll(now);
        self.in_window += 1;
    }

    fn roll(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.window_start);
        if elapsed < Self::WINDOW {
            return;
        }
        let measured = self.in_window as f64 / elapsed.as_secs_f64();
        // Half the weight on the newest window: a second's memory.
        self.rate = Some(match self.rate {
            Some(old) => 0.5 * old + 0.5 * measured,
            None => measured,
        });
        self.window_start = now;
        self.in_window = 0;
    }

    pub(crate) fn rate(&mut self, now: Instant) -> Option<f64> {
        self.roll(now);
        self.rate.filter(|r| *r > 0.0)
    }
}

/// A cheap, cloneable handle on a [`Drain`](super::Drain) and its source:
/// what it replayed, deferred, retried, dead-lettered and discarded, and the
/// source's figures. A `SpillLayer`'s drain is also seen through its
/// [`SpillHandle`](super::SpillHandle).
#[derive(Clone)]
pub struct DrainHandle {
    pub(crate) shared: Arc<DrainShared>,
}

impl std::fmt::Debug for DrainHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DrainHandle")
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

/// A [`DrainHandle`]'s figures at one moment (serialisable with `serde`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct DrainSnapshot {
    /// Replays running now: jobs leased from the source and not yet
    /// finished (at most the drain's window).
    pub in_flight: u64,
    /// Replays that ended with the application's answer.
    pub replayed: u64,
    /// Replays the stack refused for overload, to be tried again (not
    /// counted as attempts).
    pub deferred: u64,
    /// Replays that failed and wait for another attempt.
    pub retried: u64,
    /// Jobs given up on after their last attempt.
    pub dead_lettered: u64,
    /// Jobs the source threw away in an emergency, by
    /// [`Priority::index`] (lowest first); see
    /// [`DrainSource::discard`](super::DrainSource::discard).
    pub discarded: [u64; 4],
    /// The drain's completions per second, as last measured.
    pub drain_rate: Option<f64>,
    /// The source's figures as the drain last read them (a few times a
    /// second).
    pub source: StoreStats,
}

impl DrainSnapshot {
    /// Jobs discarded, every priority.
    pub fn discarded_total(&self) -> u64 {
        self.discarded.iter().sum()
    }

    /// Jobs of `priority` discarded.
    pub fn discarded_in(&self, priority: Priority) -> u64 {
        self.discarded[priority.index()]
    }
}

impl DrainHandle {
    /// The figures now.
    pub fn snapshot(&self) -> DrainSnapshot {
        let c = &self.shared.counters;
        DrainSnapshot {
            in_flight: c.in_flight.load(Relaxed),
            replayed: c.replayed.load(Relaxed),
            deferred: c.deferred.load(Relaxed),
            retried: c.retried.load(Relaxed),
            dead_lettered: c.dead_lettered.load(Relaxed),
            discarded: std::array::from_fn(|i| c.discarded[i].load(Relaxed)),
            drain_rate: self.shared.rate(),
            source: self.shared.stats(),
        }
    }

    /// The source's figures, read from the source now.
    pub async fn source_stats(&self) -> Result<StoreStats, StoreError> {
        self.shared.read_stats().await
    }
}
