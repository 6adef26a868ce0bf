//! What the layer and its drain share: the store, the group-commit batcher,
//! the drain's pace, and the counters a `/stats` endpoint reads.

use std::sync::{
    Arc, OnceLock,
    atomic::{AtomicU64, Ordering::Relaxed},
};

use super::{
    config::Config,
    drain_handle::DrainShared,
    group_commit::EnqueueBatch,
    source::StoreSource,
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
    pub(crate) counters: Counters,
    /// What the layer's drain shares: the store as its source, its counters,
    /// its pace.
    pub(crate) drain: Arc<DrainShared>,
}

#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub(crate) spilled: AtomicU64,
    pub(crate) repeated: AtomicU64,
    pub(crate) full: AtomicU64,
    pub(crate) store_errors: AtomicU64,
    pub(crate) too_large: AtomicU64,
    pub(crate) invalid: AtomicU64,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("config", &self.config)
            .field("counters", &self.counters)
            .field("drain", &self.drain)
            .finish_non_exhaustive()
    }
}

impl Shared {
    pub(crate) fn new(store: Arc<dyn SpillStore>, config: Config) -> Self {
        let source = Arc::new(StoreSource(Arc::clone(&store)));
        Self {
            drain: Arc::new(DrainShared::new(source, config.status_body)),
            store,
            config,
            enqueue: OnceLock::new(),
            counters: Counters::default(),
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
        self.drain.rate()
    }

    pub(crate) fn stats(&self) -> StoreStats {
        self.drain.stats()
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
        let d = &self.shared.drain.counters;
        SpillSnapshot {
            spilled: c.spilled.load(Relaxed),
            repeated: c.repeated.load(Relaxed),
            full: c.full.load(Relaxed),
            store_errors: c.store_errors.load(Relaxed),
            too_large: c.too_large.load(Relaxed),
            invalid: c.invalid.load(Relaxed),
            replayed: d.replayed.load(Relaxed),
            deferred: d.deferred.load(Relaxed),
            retried: d.retried.load(Relaxed),
            dead_lettered: d.dead_lettered.load(Relaxed),
            drain_rate: self.shared.drain_rate(),
            store: self.shared.stats(),
        }
    }

    /// The store's figures, read from the store now.
    pub async fn store_stats(&self) -> Result<StoreStats, super::StoreError> {
        self.shared.drain.read_stats().await
    }
}
