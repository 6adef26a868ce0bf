//! What the layer and its drain share: the store, the group-commit batcher,
//! the drain's pace, and the counters a `/stats` endpoint reads.

use std::{
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use tokio::{sync::Notify, time::Instant};

use super::{
    config::Config,
    group_commit::EnqueueBatch,
    store::{SpillStore, StoreStats},
};

/// A cheap, cloneable handle on a [`SpillLayer`](super::SpillLayer): its
/// store, its figures, and the drain that replays what it stored
/// ([`drain`](Self::drain)).
#[derive(Clone)]
pub struct SpillHandle {
    pub(crate) shared: Arc<Shared>,
}

impl std::fmt::Debug for SpillHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillHandle")
            .field("snapshot", &self.snapshot())
            .finish()
    }
}

pub(crate) struct Shared {
    pub(crate) store: Arc<dyn SpillStore>,
    pub(crate) config: Config,
    /// The group-commit batcher, made on the first spill: a layer may be
    /// built outside a runtime, and the batcher's worker needs one.
    enqueue: OnceLock<EnqueueBatch>,
    /// Wakes an idle drain when a job is stored.
    pub(crate) stored: Notify,
    pub(crate) counters: Counters,
    pub(crate) pace: Mutex<Pace>,
    pub(crate) last_stats: Mutex<StoreStats>,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) spilled: AtomicU64,
    pub(crate) repeated: AtomicU64,
    pub(crate) full: AtomicU64,
    pub(crate) store_errors: AtomicU64,
    pub(crate) too_large: AtomicU64,
    pub(crate) invalid: AtomicU64,
    pub(crate) replayed: AtomicU64,
    pub(crate) deferred: AtomicU64,
    pub(crate) retried: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
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

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("counters", &self.counters)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(store: Arc<dyn SpillStore>, config: Config) -> Self {
        Self {
            store,
            config,
            enqueue: OnceLock::new(),
            stored: Notify::new(),
            counters: Counters::default(),
            pace: Mutex::new(Pace::new()),
            last_stats: Mutex::new(StoreStats::default()),
        }
    }

    /// A handle on the group-commit batcher, whose worker is spawned on the
    /// current runtime the first time.
    pub(crate) fn enqueue(&self) -> EnqueueBatch {
        self.enqueue
            .get_or_init(|| {
                let (batch, worker) =
                    super::group_commit::pair(Arc::clone(&self.store), self.config.bounds);
                tokio::spawn(worker);
                batch
            })
            .clone()
    }

    /// The drain's rate now, if it has one.
    pub(crate) fn drain_rate(&self) -> Option<f64> {
        crate::sync::lock(&self.pace).rate(Instant::now())
    }

    pub(crate) fn stats(&self) -> StoreStats {
        *crate::sync::lock(&self.last_stats)
    }
}

/// A [`SpillHandle`]'s figures at one moment (serialisable with `serde`).
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct SpillSnapshot {
    /// Requests stored and answered `202`.
    pub spilled: u64,
    /// Requests whose `Idempotency-Key` named a stored job: answered with
    /// that job.
    pub repeated: u64,
    /// Requests not spilled because the store was at a bound.
    pub full: u64,
    /// Requests not spilled because the store failed.
    pub store_errors: u64,
    /// Deferrable requests refused with `413` for their size.
    pub too_large: u64,
    /// Deferrable requests the validation hook refused.
    pub invalid: u64,
    /// Replays that ended with the inner service's answer.
    pub replayed: u64,
    /// Replays the stack refused for overload, to be tried again (not
    /// counted as attempts).
    pub deferred: u64,
    /// Replays that failed and wait for another attempt.
    pub retried: u64,
    /// Jobs given up on after their last attempt.
    pub dead_lettered: u64,
    /// The drain's completions per second, as last measured.
    pub drain_rate: Option<f64>,
    /// The store's figures as the drain last read them.
    pub store: StoreStats,
}

impl SpillHandle {
    /// The figures now.
    pub fn snapshot(&self) -> SpillSnapshot {
        let c = &self.shared.counters;
        SpillSnapshot {
            spilled: c.spilled.load(Relaxed),
            repeated: c.repeated.load(Relaxed),
            full: c.full.load(Relaxed),
            store_errors: c.store_errors.load(Relaxed),
            too_large: c.too_large.load(Relaxed),
            invalid: c.invalid.load(Relaxed),
            replayed: c.replayed.load(Relaxed),
            deferred: c.deferred.load(Relaxed),
            retried: c.retried.load(Relaxed),
            dead_lettered: c.dead_lettered.load(Relaxed),
            drain_rate: self.shared.drain_rate(),
            store: self.shared.stats(),
        }
    }

    /// The store's figures, read from the store now.
    pub async fn store_stats(&self) -> Result<StoreStats, super::StoreError> {
        let stats = self.shared.store.stats().await?;
        *crate::sync::lock(&self.shared.last_stats) = stats;
        Ok(stats)
    }
}
