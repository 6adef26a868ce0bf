//! What a drain reads from: the spill store, or a durable stream another
//! system writes (Redis Streams, `spill-redis`).

use std::{sync::Arc, time::Duration};

use crate::Priority;

use super::{
    job::{Finish, Job, JobId},
    store::{SpillStore, StoreFuture, StoreStats},
};

/// Where a [`Drain`](super::Drain) takes its jobs and reports their ends.
///
/// A [`SpillStore`] is one (the drain of a [`SpillHandle`](super::SpillHandle)
/// reads the layer's store); a durable stream is another: the
/// `RedisStreamSource` (feature `spill-redis`) consumes a Redis stream per
/// priority, so a backlog another system produces waits on Redis, not in this
/// process, while the application throttles.
///
/// The promises are the store's: [`lease`](DrainSource::lease) hands out jobs
/// highest priority first, oldest first within one, and never hands out a
/// job another lease holds; a job whose lease ended without an answer (its
/// drain died) is handed out again; [`finish_many`](DrainSource::finish_many)
/// ends attempts, answering `false` for an attempt that no longer held its
/// job.
pub trait DrainSource: Send + Sync + 'static {
    /// Leases up to `max` jobs for `lease`.
    fn lease(&self, max: usize, lease: Duration) -> StoreFuture<'_, Vec<Job>>;

    /// Ends many attempts at once, answering in order.
    fn finish_many(&self, endings: Vec<Ending>) -> StoreFuture<'_, Vec<bool>>;

    /// The source's figures now.
    fn stats(&self) -> StoreFuture<'_, StoreStats>;

    /// How many jobs the drain asks for when `free` of its `window` replay
    /// slots are free (never 0 when `free` is not). A source whose lease is
    /// a costly write (a transaction, an fsync) takes a whole window at
    /// once, the default; a source that should not take what it cannot
    /// start at once, so that the backlog stays on the source, answers
    /// `free`.
    fn lease_size(&self, free: usize, window: usize) -> usize {
        let _ = free;
        window
    }

    /// Forgets finished jobs older than `older_than`, for sources that keep
    /// them; returns how many. The default keeps nothing.
    fn prune(&self, older_than: Duration) -> StoreFuture<'_, u64> {
        let _ = older_than;
        Box::pin(async { Ok(0) })
    }

    /// Throws away jobs the source's emergency rule says are too old to be
    /// worth replaying, and says which. The drain calls it a few times a
    /// second, counts what it answers in its handle's snapshot and logs it:
    /// a discard is never silent. The default discards nothing.
    fn discard(&self) -> StoreFuture<'_, Vec<Discarded>> {
        Box::pin(async { Ok(Vec::new()) })
    }
}

/// The end of one attempt, as the drain reports it to its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ending {
    /// The job.
    pub id: JobId,
    /// Its priority: a source that keeps one queue per priority (a stream
    /// per tier) finds the job by it.
    pub priority: Priority,
    /// The attempt that ended (the job's [`Job::attempt`]).
    pub attempt: u32,
    /// How it ended.
    pub how: Finish,
}

/// Jobs a source threw away in an emergency, as [`DrainSource::discard`]
/// reports them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Discarded {
    /// The tier they were in.
    pub priority: Priority,
    /// How many.
    pub jobs: u64,
    /// How long the oldest of them had waited.
    pub oldest: Duration,
    /// Why: past the tier's age bound, or removed by the source's own
    /// retention before they were replayed.
    pub why: DiscardReason,
}

/// Why a [`Discarded`] batch was thrown away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DiscardReason {
    /// The oldest unread job of the tier was older than the tier's bound:
    /// the jobs past it were skipped.
    TooOld,
    /// The source's own retention (a stream's `MAXLEN`) removed jobs that
    /// were leased and not yet finished.
    Trimmed,
}

impl DiscardReason {
    /// `"too_old"` or `"trimmed"`, for logs and labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::TooOld => "too_old",
            Self::Trimmed => "trimmed",
        }
    }
}

/// The spill store as the drain's source.
pub(crate) struct StoreSource(pub(crate) Arc<dyn SpillStore>);

impl DrainSource for StoreSource {
    fn lease(&self, max: usize, lease: Duration) -> StoreFuture<'_, Vec<Job>> {
        self.0.lease(max, lease)
    }

    fn finish_many(&self, endings: Vec<Ending>) -> StoreFuture<'_, Vec<bool>> {
        self.0.finish_many(
            endings
                .into_iter()
                .map(|e| (e.id, e.attempt, e.how))
                .collect(),
        )
    }

    fn stats(&self) -> StoreFuture<'_, StoreStats> {
        self.0.stats()
    }

    fn prune(&self, older_than: Duration) -> StoreFuture<'_, u64> {
        self.0.prune(older_than)
    }
}
