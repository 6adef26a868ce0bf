use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, atomic::Ordering},
    task::{Context, Poll},
};

use tokio::sync::{AcquireError, OwnedSemaphorePermit, Semaphore, TryAcquireError, mpsc};
use tower_service::Service;

use super::{
    BatchConfig,
    answer::Mailbox,
    error::Closed,
    future::ResponseFuture,
    slots::Reservation,
    worker::{BatchCounters, Message, Worker},
};
use crate::{AsError, BoxError, Overloaded, Reason, Reject};

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// A cloneable handle that gathers single items into batches for an inner
/// `Service<Vec<T>>` and answers each caller with its own item's result.
///
/// The inner service answers a batch of `n` items with `Vec<Result<R, E>>`
/// of length `n`, in the items' order: `Ok(r)` answers that caller with `r`,
/// `Err(e)` fails only that caller. See the [module docs](super).
///
/// Like `tower::buffer::Buffer`, the inner service is owned by a worker task;
/// every clone of the handle shares it, its queue and its batches.
///
/// Refusals (a full queue with
/// [`reject_when_full`](super::BatchConfigBuilder::reject_when_full)) follow
/// the rejection strategy `Rj` (see [`reject`](crate::reject)): an
/// [`Overloaded`] error by default, or, after [`http`](Batch::http), a `503`
/// response when the items are HTTP requests.
pub struct Batch<T, R, Rj = AsError> {
    tx: mpsc::UnboundedSender<Message<T, R>>,
    // The queue slot reserved by `poll_ready`, if any.
    slot: Reservation,
    // Only touched through `&mut self` (`get_mut`, no locking); the mutex
    // makes the handle `Sync` without requiring the boxed future to be.
    acquire: Mutex<Option<Acquire>>,
    // The mailbox of this handle's last call, reused by the next one.
    mailbox: Option<Arc<Mailbox<R>>>,
    reject_when_full: bool,
    capacity: usize,
    shared: Arc<BatchCounters>,
    reject: Rj,
}

/// Counters of a [`Batch`], from [`Batch::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct BatchStats {
    /// Queue slots in use (see [`Batch::queued`]).
    pub queued: usize,
    /// Batches sent to the inner service.
    pub batches: u64,
    /// Items sent in those batches (`items / batches` is the mean batch size).
    pub items: u64,
    /// Batches that failed as a whole: an inner error, a length mismatch or a
    /// panic.
    pub failed_batches: u64,
    /// Items refused with `Overloaded` because the queue was full.
    pub rejected: u64,
    /// The worker has stopped.
    pub closed: bool,
}

impl<T, R> Batch<T, R>
where
    T: Send + 'static,
    R: Send + 'static,
{
    /// Starts a batcher over `inner`, spawning its worker on the current tokio
    /// runtime.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime (as `tokio::spawn` does). Use
    /// [`pair`](Self::pair) to run the worker elsewhere.
    pub fn new<S, E>(inner: S, config: BatchConfig<T>) -> Self
    where
        S: Service<Vec<T>, Response = Vec<Result<R, E>>> + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send + 'static,
        E: Into<BoxError>,
    {
        let (handle, worker) = Self::pair(inner, config);
        tokio::spawn(worker);
        handle
    }

    /// A batcher over `inner` and its worker, a future the caller runs (for
    /// example on a dedicated runtime). Dropping the worker answers every
    /// pending caller with [`Closed`].
    pub fn pair<S, E>(inner: S, config: BatchConfig<T>) -> (Self, Worker<S, T, R>)
    where
        S: Service<Vec<T>, Response = Vec<Result<R, E>>>,
        S::Error: Into<BoxError>,
        E: Into<BoxError>,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(BatchCounters::default());
        let semaphore = Arc::new(Semaphore::new(config.queue_capacity));
        let reject_when_full = config.reject_when_full;
        let capacity = config.queue_capacity;
        let worker = Worker::new(inner, config, rx, semaphore.clone(), shared.clone());
        let handle = Self {
            tx,
            slot: Reservation::new(semaphore),
            acquire: Mutex::new(None),
            mailbox: None,
            reject_when_full,
            capacity,
            shared,
            reject: AsError,
        };
        (handle, worker)
    }
}

impl<T, R, Rj> Batch<T, R, Rj> {
    /// This handle with another rejection strategy.
    pub fn with_reject<Rj2>(self, reject: Rj2) -> Batch<T, R, Rj2> {
        Batch {
            tx: self.tx,
            slot: self.slot,
            acquire: self.acquire,
            mailbox: self.mailbox,
            reject_when_full: self.reject_when_full,
            capacity: self.capacity,
            shared: self.shared,
            reject,
        }
    }

    /// The HTTP face: refusals are `503` responses with `Retry-After`
    /// ([`ProblemDetails`](crate::http::ProblemDetails)), for batchers whose
    /// items are `http::Request`s.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn http(self) -> Batch<T, R, crate::http::AsResponse> {
        self.with_reject(crate::http::AsResponse::default())
    }

    /// The HTTP face with refusals built by `make`.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn rejection<M: crate::http::MakeRejection>(
        self,
        make: M,
    ) -> Batch<T, R, crate::http::AsResponse<M>> {
        self.with_reject(crate::http::AsResponse::new(make))
    }

    fn closed_error(&self) -> BoxError {
        Box::new(Closed::new())
    }

    /// The number of queue slots in use: items waiting for a batch, plus slots
    /// reserved by handles that are ready but have not called yet.
    pub fn queued(&self) -> usize {
        self.capacity
            .saturating_sub(self.slot.semaphore().available_permits())
    }

    /// A snapshot of the batcher's counters, shared by every clone.
    pub fn stats(&self) -> BatchStats {
        let s = &self.shared;
        BatchStats {
            queued: self.queued(),
            batches: s.batches.load(Ordering::Relaxed),
            items: s.items.load(Ordering::Relaxed),
            failed_batches: s.failed_batches.load(Ordering::Relaxed),
            rejected: s.rejected.load(Ordering::Relaxed),
            closed: self.tx.is_closed(),
        }
    }
}

impl<T, R, Rj> Service<T> for Batch<T, R, Rj>
where
    T: Send + 'static,
    R: Send + 'static,
    Rj: Reject<T, R, BoxError>,
{
    type Response = Rj::Response;
    type Error = Rj::Error;
    type Future = ResponseFuture<T, R, Rj>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Rj::Error>> {
        self.poll_permit(cx).map_err(Rj::map_error)
    }

    fn call(&mut self, item: T) -> Self::Future {
        match self.slot.take() {
            Ok(()) => {}
            // Reject mode decides here; in backpressure mode this is a call
            // without a ready `poll_ready`, refused the same way.
            Err(TryAcquireError::NoPermits) => {
                self.shared.rejected.fetch_add(1, Ordering::Relaxed);
                let info = self.reject.info(&item);
                self.reject.discard(item);
                let overloaded = Overloaded::new(Reason::QueueFull);
                return ResponseFuture::done(self.reject.reject(info, overloaded));
            }
            // The worker closed the queue when it was dropped.
            Err(TryAcquireError::Closed) => {
                return ResponseFuture::done(Err(Rj::map_error(self.closed_error())));
            }
        }
        let (tx, rx) = Mailbox::pair(&mut self.mailbox);
        match self.tx.send(Message::new(item, tx)) {
            Ok(()) => ResponseFuture::waiting(rx),
            Err(_) => {
                self.slot.give_back();
                ResponseFuture::done(Err(Rj::map_error(self.closed_error())))
            }
        }
    }
}

impl<T, R, Rj> Batch<T, R, Rj> {
    fn poll_permit(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        if self.tx.is_closed() {
            return Poll::Ready(Err(self.closed_error()));
        }
        if self.reject_when_full || self.slot.is_held() {
            return Poll::Ready(Ok(()));
        }
        let acquire = self
            .acquire
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if acquire.is_none() {
            match self.slot.try_reserve() {
                Ok(()) => return Poll::Ready(Ok(())),
                Err(TryAcquireError::Closed) => {
                    return Poll::Ready(Err(Box::new(Closed::new())));
                }
                Err(TryAcquireError::NoPermits) => {
                    *acquire = Some(Box::pin(self.slot.semaphore().clone().acquire_owned()));
                }
            }
        }
        let fut = acquire.as_mut().expect("set above");
        match fut.as_mut().poll(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(result) => {
                *acquire = None;
                match result {
                    Ok(permit) => {
                        self.slot.hold(permit);
                        Poll::Ready(Ok(()))
                    }
                    Err(_) => Poll::Ready(Err(Box::new(Closed::new()))),
                }
            }
        }
    }
}

impl<T, R, Rj: Clone> Clone for Batch<T, R, Rj> {
    /// A new handle to the same worker; it has not yet reserved a queue slot.
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
            slot: self.slot.fresh(),
            acquire: Mutex::new(None),
            mailbox: None,
            reject_when_full: self.reject_when_full,
            capacity: self.capacity,
            shared: self.shared.clone(),
            reject: self.reject.clone(),
        }
    }
}

impl<T, R, Rj> fmt::Debug for Batch<T, R, Rj> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Batch")
            .field("reserved", &self.slot.is_held())
            .field("available", &self.slot.semaphore().available_permits())
            .field("reject_when_full", &self.reject_when_full)
            .finish()
    }
}
