//! Group commit: concurrent spills, and the ends of concurrent replays, are
//! written through the crate's own [`Batch`], so one transaction (one
//! fsync) covers every job that arrived while the previous one was being
//! written.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use tower_service::Service;

use crate::batch::{Batch, BatchConfig, Worker};

use super::{
    job::{Enqueued, NewJob},
    source::{DrainSource, Ending},
    store::{Bounds, SpillStore, StoreError},
};

/// The batcher's handle the layer calls.
pub(crate) type EnqueueBatch = Batch<NewJob, Enqueued>;
/// Its worker, spawned on the first spill.
pub(crate) type EnqueueWorker = Worker<EnqueueService, NewJob, Enqueued>;

/// Jobs a transaction holds at most.
const MAX_JOBS_PER_COMMIT: usize = 512;
/// Spills waiting for their commit at most; past it a spill is refused
/// (the stack's own answer stands) rather than queued without bound.
const MAX_WAITING: usize = 16 * 1024;

/// The inner service of the batcher: one `enqueue` of the store per batch.
pub(crate) struct EnqueueService {
    store: Arc<dyn SpillStore>,
    bounds: Bounds,
}

impl Service<Vec<NewJob>> for EnqueueService {
    type Response = Vec<Result<Enqueued, Infallible>>;
    type Error = StoreError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, StoreError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), StoreError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, jobs: Vec<NewJob>) -> Self::Future {
        let (store, bounds) = (Arc::clone(&self.store), self.bounds);
        Box::pin(async move {
            let answers = store.enqueue(jobs, bounds).await?;
            Ok(answers.into_iter().map(Ok).collect())
        })
    }
}

/// The batcher's handle the drain calls.
pub(crate) type FinishBatch = Batch<Ending, bool>;

/// The inner service of the drain's batcher: one `finish_many` per batch.
pub(crate) struct FinishService {
    source: Arc<dyn DrainSource>,
}

impl Service<Vec<Ending>> for FinishService {
    type Response = Vec<Result<bool, Infallible>>;
    type Error = StoreError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, StoreError>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), StoreError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, endings: Vec<Ending>) -> Self::Future {
        let source = Arc::clone(&self.source);
        Box::pin(async move {
            let answers = source.finish_many(endings).await?;
            Ok(answers.into_iter().map(Ok).collect())
        })
    }
}

/// The drain's batcher, its worker spawned on the current runtime.
pub(crate) fn finishing(source: Arc<dyn DrainSource>) -> FinishBatch {
    Batch::new(FinishService { source }, config())
}

fn config<T>() -> BatchConfig<T> {
    BatchConfig::builder()
        .max_items(MAX_JOBS_PER_COMMIT)
        // Opportunistic flushing: a lone spill is written at once; spills
        // gather only while a commit is in progress.
        .max_wait(Duration::from_millis(2))
        .opportunistic()
        .max_in_flight(1)
        .queue_capacity(MAX_WAITING)
        .reject_when_full(true)
        .build()
        .expect("the group-commit settings are valid constants")
}

pub(crate) fn pair(store: Arc<dyn SpillStore>, bounds: Bounds) -> (EnqueueBatch, EnqueueWorker) {
    Batch::pair(EnqueueService { store, bounds }, config())
}
