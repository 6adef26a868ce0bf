//! The trait a spill store implements, and the bounds and figures every store
//! shares.

use std::{fmt, future::Future, pin::Pin, time::Duration};

use crate::BoxError;

use super::job::{Enqueued, Finish, Job, JobId, JobStatus, NewJob};

/// The future a store's operation returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// The limits of a store: past any of them, nothing more is spilled and the
/// stack's usual `503` + `Retry-After` answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Jobs queued or running (default 100,000).
    pub max_jobs: u64,
    /// Bytes of queued or running jobs (default 256 MiB).
    pub max_bytes: u64,
    /// The age of the oldest queued job (default one hour): a backlog older
    /// than this is not draining, and taking more would only make every
    /// job's wait longer.
    pub max_age: Duration,
}

impl Default for Bounds {
    fn default() -> Self {
        Self {
            max_jobs: 100_000,
            max_bytes: 256 * 1024 * 1024,
            max_age: Duration::from_secs(3600),
        }
    }
}

/// A store's figures at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct StoreStats {
    /// Jobs waiting, by [`Priority::index`](crate::Priority::index) (lowest first).
    pub queued: [u64; 4],
    /// Jobs leased to a drain now.
    pub running: u64,
    /// Bytes of the jobs queued or running.
    pub bytes: u64,
    /// Jobs done and still remembered for their status.
    pub done: u64,
    /// Jobs dead-lettered and still remembered.
    pub failed: u64,
    /// How long the oldest queued job has waited, in milliseconds.
    pub oldest_ms: Option<u64>,
}

impl StoreStats {
    /// Jobs waiting, every priority.
    pub fn queued_total(&self) -> u64 {
        self.queued.iter().sum()
    }
}

/// Where spilled requests wait: durable, bounded, leased.
///
/// A store keeps jobs in four states (queued, running, done, failed) and
/// promises:
///
/// - [`enqueue`](SpillStore::enqueue) returns only once the jobs are
///   durable (committed), one answer per job in order; a job whose
///   `Idempotency-Key` is already stored answers [`Enqueued::Existing`]
///   with the first job's id, and a job past the [`Bounds`] answers
///   [`Enqueued::Full`] without being stored;
/// - [`lease`](SpillStore::lease) hands out queued jobs highest priority
///   first, oldest first within a priority, whose backoff has passed, and
///   marks them running until the lease ends; a running job whose lease
///   ended (its drain died) is queued again, so every job is replayed at
///   least once;
/// - [`finish`](SpillStore::finish) records the end of one attempt, and
///   only for the attempt that holds the lease: an expired lease's late
///   answer changes nothing (it returns `false`).
pub trait SpillStore: Send + Sync + 'static {
    /// Stores `jobs` within `bounds`, durably, and answers one
    /// [`Enqueued`] per job.
    fn enqueue(&self, jobs: Vec<NewJob>, bounds: Bounds) -> StoreFuture<'_, Vec<Enqueued>>;

    /// Leases up to `max` jobs for `lease`.
    fn lease(&self, max: usize, lease: Duration) -> StoreFuture<'_, Vec<Job>>;

    /// Ends attempt `attempt` of job `id` as `how` says; `false` when that
    /// attempt no longer holds the job (its lease expired and another drain
    /// took it).
    fn finish(&self, id: JobId, attempt: u32, how: Finish) -> StoreFuture<'_, bool>;

    /// Ends many attempts at once, as [`finish`](SpillStore::finish) does
    /// each, answering in order. The drain groups the ends of concurrent
    /// replays into one call; a store that can should write them in one
    /// transaction. The default finishes them one by one.
    fn finish_many(&self, endings: Vec<(JobId, u32, Finish)>) -> StoreFuture<'_, Vec<bool>> {
        Box::pin(async move {
            let mut answers = Vec::with_capacity(endings.len());
            for (id, attempt, how) in endings {
                answers.push(self.finish(id, attempt, how).await?);
            }
            Ok(answers)
        })
    }

    /// Where job `id` is; `None` for an unknown id (or one whose tag does
    /// not match, or that was pruned).
    fn status(&self, id: JobId) -> StoreFuture<'_, Option<JobStatus>>;

    /// The store's figures now.
    fn stats(&self) -> StoreFuture<'_, StoreStats>;

    /// Forgets done and failed jobs that finished more than `older_than`
    /// ago; returns how many.
    fn prune(&self, older_than: Duration) -> StoreFuture<'_, u64>;
}

/// A store's failure: its database could not be reached or refused the
/// operation. The layer answers as if it had not spilled (the stack's own
/// refusal).
#[derive(Debug)]
pub struct StoreError(BoxError);

impl StoreError {
    /// Wraps the store's own error.
    pub fn new(err: impl Into<BoxError>) -> Self {
        Self(err.into())
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "spill store: {}", self.0)
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.0)
    }
}
