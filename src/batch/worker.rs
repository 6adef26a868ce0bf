//! The worker: gathers queued items into batches, calls the inner service and
//! hands each result to its caller.
//!
//! State machine, re-run on every wake-up:
//!
//! 1. collect finished batches (their callers are already answered);
//! 2. pull queued items while the batch being gathered is not full;
//! 3. if the batch is due (full, `max_wait` elapsed, the queue closed, or, for
//!    the opportunistic policy, nothing in flight) and fewer than
//!    `max_in_flight` batches are in the inner service, wait for the inner
//!    service to be ready and send it;
//! 4. otherwise arm the `max_wait` timer and sleep.
//!
//! Items stay in the queue (and hold their queue slot) while the batch is full
//! and cannot be sent, so the queue bound is real backpressure.

use std::{
    fmt,
    future::Future,
    mem,
    panic::{AssertUnwindSafe, catch_unwind},
    pin::Pin,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use futures_util::FutureExt;
use tokio::{
    sync::{Semaphore, mpsc},
    time::{Instant, Sleep},
};
use tower_service::Service;

use super::{
    BatchConfig, Flush,
    answer::Answer,
    call::{BatchCall, Finished, answer_all},
    config::Weigher,
    error::{BatchFailed, Panicked},
    flight::InFlight,
    slots::Release,
};
use crate::BoxError;

#[cfg(feature = "tracing")]
pub(super) type CallerSpan = tracing::Span;
#[cfg(not(feature = "tracing"))]
pub(super) type CallerSpan = ();

#[cfg(feature = "tracing")]
fn current_span() -> CallerSpan {
    tracing::Span::current()
}
#[cfg(not(feature = "tracing"))]
fn current_span() -> CallerSpan {}

/// State shared by the handles and the worker.
#[derive(Debug, Default)]
pub(crate) struct BatchCounters {
    // Written by the worker alone (see `bump`).
    pub(crate) batches: AtomicU64,
    pub(crate) items: AtomicU64,
    pub(crate) failed_batches: AtomicU64,
    // Written by the handles.
    pub(crate) rejected: AtomicU64,
}

/// Adds `n` to a counter only the worker writes: a load and a store, not a
/// read-modify-write, since no other writer can interleave.
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

/// One queued item and the way back to its caller.
pub(crate) struct Message<T, R> {
    item: T,
    tx: Answer<R>,
    span: CallerSpan,
}

impl<T, R> Message<T, R> {
    /// A message holds a queue slot, given back by the worker when the item
    /// leaves the queue for a batch (see `slots`).
    pub(super) fn new(item: T, tx: Answer<R>) -> Self {
        Self {
            item,
            tx,
            span: current_span(),
        }
    }
}

/// The batcher's worker: a future that runs until every handle is dropped
/// and every queued item has been answered. [`Batch::new`](super::Batch::new)
/// spawns it; [`Batch::pair`](super::Batch::pair) hands it to the caller.
///
/// Dropping it early answers every pending caller with
/// [`Closed`](super::error::Closed).
pub struct Worker<S, T, R>
where
    S: Service<Vec<T>>,
{
    inner: Option<S>,
    rx: mpsc::UnboundedReceiver<Message<T, R>>,
    rx_done: bool,
    // The queue slots of items taken out of `rx`, given back after each pass.
    release: Release,
    max_items: usize,
    max_wait: Duration,
    flush: Flush,
    weight: Option<(u64, Weigher<T>)>,
    max_in_flight: usize,
    // The batch being gathered.
    items: Vec<T>,
    answers: Vec<Answer<R>>,
    spans: Vec<CallerSpan>,
    weight_sum: u64,
    // An item that did not fit the current batch's weight; it opens the next.
    carry: Option<Message<T, R>>,
    sleep: Pin<Box<Sleep>>,
    armed: bool,
    expired: bool,
    in_flight: InFlight<BatchCall<S::Future, R>>,
    // Emptied answer lists of finished batches, for the next batches.
    spare_answers: Vec<Vec<Answer<R>>>,
    shared: Arc<BatchCounters>,
}

impl<S, T, R> fmt::Debug for Worker<S, T, R>
where
    S: Service<Vec<T>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Worker")
            .field("gathering", &self.items.len())
            .field("in_flight", &self.in_flight.len())
            .field("closed", &self.rx_done)
            .finish()
    }
}

impl<S, T, R, E> Worker<S, T, R>
where
    S: Service<Vec<T>, Response = Vec<Result<R, E>>>,
    S::Error: Into<BoxError>,
    E: Into<BoxError>,
{
    pub(crate) fn new(
        inner: S,
        config: BatchConfig<T>,
        rx: mpsc::UnboundedReceiver<Message<T, R>>,
        semaphore: Arc<Semaphore>,
        shared: Arc<BatchCounters>,
    ) -> Self {
        let reserve = config.max_items.min(1024);
        Self {
            inner: Some(inner),
            rx,
            rx_done: false,
            release: Release::new(semaphore),
            max_items: config.max_items,
            max_wait: config.max_wait,
            flush: config.flush,
            weight: config.weight,
            max_in_flight: config.max_in_flight,
            items: Vec::with_capacity(reserve),
            answers: Vec::with_capacity(reserve),
            spans: Vec::new(),
            weight_sum: 0,
            carry: None,
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            armed: false,
            expired: false,
            in_flight: InFlight::new(),
            spare_answers: Vec::new(),
            shared,
        }
    }
}

impl<S, T, R, E> Worker<S, T, R>
where
    S: Service<Vec<T>, Response = Vec<Result<R, E>>>,
    S::Error: Into<BoxError>,
    E: Into<BoxError>,
{
    fn is_full(&self) -> bool {
        self.items.len() >= self.max_items
            || self.carry.is_some()
            || matches!(&self.weight, Some((max, _)) if self.weight_sum >= *max)
    }

    fn accept(&mut self, msg: Message<T, R>) {
        // A caller that gave up before its item was sent is skipped.
        if msg.tx.is_closed() {
            self.release.one();
            return;
        }
        let mut w = 0;
        if let Some((max, weigh)) = &self.weight {
            w = weigh(&msg.item);
            if !self.items.is_empty() && self.weight_sum.saturating_add(w) > *max {
                // Keeps its queue slot until it opens the next batch.
                self.carry = Some(msg);
                return;
            }
        }
        self.release.one();
        if self.items.is_empty() {
            self.armed = false;
            self.expired = false;
        }
        self.weight_sum = self.weight_sum.saturating_add(w);
        let Message { item, tx, span, .. } = msg;
        self.items.push(item);
        self.answers.push(tx);
        #[cfg(feature = "tracing")]
        self.spans.push(span);
        #[cfg(not(feature = "tracing"))]
        let () = span;
    }

    fn is_due(&self) -> bool {
        self.is_full()
            || self.rx_done
            || self.expired
            || self.max_wait.is_zero()
            || (self.flush == Flush::Opportunistic && self.in_flight.is_empty())
    }

    fn dispatch(&mut self) {
        let reserve = self.max_items.min(1024);
        let mut items = mem::replace(&mut self.items, Vec::with_capacity(reserve));
        let next = self
            .spare_answers
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(reserve));
        let mut answers = mem::replace(&mut self.answers, next);
        // A caller that gave up while its item waited for the batch to fill
        // (or for room in flight) is skipped too, as at the gate.
        if answers.iter().any(Answer::is_closed) {
            let keep: Vec<bool> = answers.iter().map(|tx| !tx.is_closed()).collect();
            let mut mask = keep.iter();
            items.retain(|_| mask.next().copied().unwrap_or(false));
            let mut mask = keep.iter();
            answers.retain(|_| mask.next().copied().unwrap_or(false));
        }
        #[cfg(feature = "tracing")]
        let span = {
            let span = tracing::debug_span!("batch", items = items.len());
            for caller in self.spans.drain(..) {
                span.follows_from(&caller);
            }
            span
        };
        #[cfg(not(feature = "tracing"))]
        let span = ();
        if items.is_empty() {
            // Every caller of this batch gave up: no call at all.
            self.spare_answers.push(answers);
            self.reset_batch();
            return;
        }
        bump(&self.shared.batches, 1);
        bump(&self.shared.items, items.len() as u64);
        let inner = self
            .inner
            .as_mut()
            .expect("dispatch only with a live inner service");
        let call = catch_unwind(AssertUnwindSafe(|| {
            #[cfg(feature = "tracing")]
            let _entered = span.enter();
            inner.call(items)
        }));
        match call {
            Ok(fut) => self.in_flight.push(BatchCall {
                fut: AssertUnwindSafe(fut).catch_unwind(),
                answers,
                span,
            }),
            Err(_) => {
                bump(&self.shared.failed_batches, 1);
                answer_all(&mut answers, || Box::new(Panicked::new()));
                self.spare_answers.push(answers);
            }
        }
        self.reset_batch();
    }

    /// Starts gathering the next batch, with the item carried over from the
    /// last one (if its weight did not fit).
    fn reset_batch(&mut self) {
        self.weight_sum = 0;
        self.armed = false;
        self.expired = false;
        if let Some(msg) = self.carry.take() {
            self.accept(msg);
        }
    }

    /// The inner service failed in `poll_ready`: it cannot take more batches.
    /// Answer everything queued or gathered, refuse new items, and finish
    /// once the batches already in flight have been answered.
    /// Fails the batch gathered so far (the inner service could not take
    /// it) and carries on: the next batch asks the service again, so a
    /// service that recovers (a pool that reconnects) serves it.
    fn fail_batch<F>(&mut self, err: F)
    where
        F: std::error::Error + Clone + Send + Sync + 'static,
    {
        #[cfg(feature = "tracing")]
        tracing::warn!(error = %err, items = self.items.len(), "batch inner service not ready; batch failed");
        bump(&self.shared.failed_batches, 1);
        self.items.clear();
        self.spans.clear();
        answer_all(&mut self.answers, || Box::new(err.clone()));
        self.reset_batch();
    }

    fn run(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        // The queue answered `Pending` in this run, so it holds this task's
        // waker and will wake it for the next item: asking again before
        // returning would only register the waker again.
        let mut rx_idle = false;
        loop {
            // 1. Finished batches.
            let (spare, shared) = (&mut self.spare_answers, &self.shared);
            self.in_flight
                .poll_done(cx, |Finished { answers, failed }| {
                    if failed {
                        bump(&shared.failed_batches, 1);
                    }
                    spare.push(answers);
                });

            // 2. Gather.
            while !self.rx_done && !rx_idle && !self.is_full() {
                match self.rx.poll_recv(cx) {
                    Poll::Ready(Some(msg)) => self.accept(msg),
                    Poll::Ready(None) => self.rx_done = true,
                    Poll::Pending => rx_idle = true,
                }
            }
            self.release.flush();

            if self.items.is_empty() {
                if self.rx_done && self.in_flight.is_empty() {
                    return Poll::Ready(());
                }
                return Poll::Pending;
            }

            // 3. Send when due and there is room in flight.
            if self.is_due() {
                if self.in_flight.len() < self.max_in_flight {
                    let inner = self
                        .inner
                        .as_mut()
                        .expect("items imply a live inner service");
                    match catch_unwind(AssertUnwindSafe(|| inner.poll_ready(cx))) {
                        Ok(Poll::Ready(Ok(()))) => {
                            self.dispatch();
                            continue;
                        }
                        Ok(Poll::Ready(Err(err))) => {
                            self.fail_batch(BatchFailed::new(err.into()));
                            continue;
                        }
                        Err(_) => {
                            self.fail_batch(Panicked::new());
                            continue;
                        }
                        Ok(Poll::Pending) => {}
                    }
                }
                // Woken by the inner service or by a finished batch.
                return Poll::Pending;
            }

            // 4. Not due yet: wait for more items, a finished batch, or max_wait.
            if !self.armed {
                self.sleep
                    .as_mut()
                    .reset(crate::time::after(Instant::now(), self.max_wait));
                self.armed = true;
            }
            match self.sleep.as_mut().poll(cx) {
                Poll::Ready(()) => self.expired = true,
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

impl<S, T, R, E> Future for Worker<S, T, R>
where
    S: Service<Vec<T>, Response = Vec<Result<R, E>>>,
    S::Error: Into<BoxError>,
    E: Into<BoxError>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.get_mut().run(cx)
    }
}

// No field is structurally pinned: the inner service is only used through
// `&mut`, its futures live in boxed lanes (`InFlight`), the timer is boxed.
impl<S, T, R> Unpin for Worker<S, T, R> where S: Service<Vec<T>> {}
