//! The worker behind every clone of an [`Aggregate`](super::Aggregate): it
//! flushes merged maps to the inner service, retries a failed flush with
//! backoff (merging what arrives meanwhile into it), and, however it stops,
//! tells the handles so that no update is accepted that nobody will flush.

use std::{
    collections::HashMap,
    future::poll_fn,
    hash::Hash,
    panic::AssertUnwindSafe,
    sync::{Arc, atomic::Ordering},
    task::Poll,
    time::Duration,
};

use futures_util::FutureExt;
use tokio::{
    sync::{OwnedSemaphorePermit, mpsc},
    time::{Instant, Sleep},
};
use tower_service::Service;

use super::{
    Merge,
    service::{AggregateState, Command},
};
use crate::{BoxError, sync::lock};

/// How many times one map is offered to the inner service before its
/// updates are given up (counted in `keys_dropped`, and logged).
pub(crate) const MAX_ATTEMPTS: u32 = 5;
/// The wait before the first retry; it doubles with each failure.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// The longest wait between two attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// A map the inner service failed, waiting for its next attempt.
struct Retry<K, V> {
    map: HashMap<K, V>,
    /// Attempts made so far.
    attempts: u32,
    /// The flush slots of the key-bound maps merged into it: held until it
    /// is flushed or given up, so handles feel the backpressure and memory
    /// stays bounded while the inner service is down.
    slots: Vec<OwnedSemaphorePermit>,
    sleep: std::pin::Pin<Box<Sleep>>,
}

enum Event<K, V> {
    Tick,
    Retry,
    Command(Option<Command<K, V>>),
}

/// Owns what the worker needs; its `Drop` runs however the worker ends
/// (returned, panicked, or cancelled with its runtime, even before it first
/// ran: it is made before the task is spawned).
pub(crate) struct Worker<K: Hash + Eq, V> {
    shared: Arc<AggregateState<K, V>>,
    rx: mpsc::UnboundedReceiver<Command<K, V>>,
}

impl<K: Hash + Eq, V> Worker<K, V> {
    pub(crate) fn new(
        shared: Arc<AggregateState<K, V>>,
        rx: mpsc::UnboundedReceiver<Command<K, V>>,
    ) -> Self {
        Self { shared, rx }
    }
}

impl<K: Hash + Eq, V> Drop for Worker<K, V> {
    fn drop(&mut self) {
        // Refuse every later update, and count the maps handed over that
        // nobody will flush now (there are none after a clean stop).
        let mut state = lock(&self.shared.state);
        state.closed = true;
        let mut lost = self.shared.take_map(&mut state).len();
        drop(state);
        self.rx.close();
        while let Ok(command) = self.rx.try_recv() {
            lost += match command {
                Command::Flush(map, _) | Command::Shutdown(map, _) => map.len(),
            };
        }
        if lost > 0 {
            let stats = &self.shared.stats;
            stats.keys_dropped.fetch_add(lost as u64, Ordering::Relaxed);
            #[cfg(feature = "tracing")]
            tracing::error!(keys = lost, "aggregate worker stopped; updates lost");
        }
        self.shared.stats.shut_down.store(true, Ordering::Release);
        self.shared.done.notify_waiters();
    }
}

pub(crate) async fn run<S, K, V>(mut inner: S, mut worker: Worker<K, V>, interval: Duration)
where
    S: Service<HashMap<K, V>>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone,
    V: Merge + Clone,
{
    let start = crate::time::after(Instant::now(), interval);
    let mut ticker = tokio::time::interval_at(start, interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut retry: Option<Retry<K, V>> = None;
    loop {
        let event = poll_fn(|cx| {
            if let Poll::Ready(cmd) = worker.rx.poll_recv(cx) {
                return Poll::Ready(Event::Command(cmd));
            }
            if let Some(r) = retry.as_mut() {
                if r.sleep.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(Event::Retry);
                }
            }
            if ticker.poll_tick(cx).is_ready() {
                return Poll::Ready(Event::Tick);
            }
            Poll::Pending
        })
        .await;
        let shared = &worker.shared;
        match event {
            Event::Tick => {
                let map = take_map(shared);
                retry = offer(&mut inner, shared, retry, map, None).await;
            }
            Event::Retry => {
                retry = offer(&mut inner, shared, retry, HashMap::new(), None).await;
            }
            Event::Command(Some(Command::Flush(map, slot))) => {
                retry = offer(&mut inner, shared, retry, map, Some(slot)).await;
            }
            Event::Command(Some(Command::Shutdown(map, done))) => {
                finish(&mut inner, shared, retry, map).await;
                let _ = done.send(());
                return;
            }
            Event::Command(None) => {
                // Every handle is gone: flush what is left and stop.
                let map = take_map(shared);
                finish(&mut inner, shared, retry, map).await;
                return;
            }
        }
    }
}

/// The handles' current map, emptied.
fn take_map<K, V>(shared: &AggregateState<K, V>) -> HashMap<K, V> {
    shared.take_map(&mut lock(&shared.state))
}

/// Offers `map` to the inner service, with the map of a pending retry merged
/// in. While a retry waits for its time, a new map only joins it. Returns the
/// retry still pending, if any.
async fn offer<S, K, V>(
    inner: &mut S,
    shared: &AggregateState<K, V>,
    pending: Option<Retry<K, V>>,
    map: HashMap<K, V>,
    slot: Option<OwnedSemaphorePermit>,
) -> Option<Retry<K, V>>
where
    S: Service<HashMap<K, V>>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone,
    V: Merge + Clone,
{
    let (map, attempts, mut slots) = match pending {
        Some(mut r) if r.sleep.is_elapsed() => {
            r.map.merge(map);
            (r.map, r.attempts, r.slots)
        }
        Some(mut r) => {
            // Not due yet: wait with it.
            r.map.merge(map);
            r.slots.extend(slot);
            return Some(r);
        }
        None => (map, 0, Vec::new()),
    };
    slots.extend(slot);
    if map.is_empty() {
        return None;
    }
    if attempts > 0 {
        shared.stats.retries.fetch_add(1, Ordering::Relaxed);
    }
    if attempt(inner, shared, map.clone()).await {
        return None;
    }
    if attempts + 1 >= MAX_ATTEMPTS {
        give_up(shared, &map);
        return None;
    }
    let backoff = FIRST_BACKOFF
        .saturating_mul(1 << attempts.min(16))
        .min(MAX_BACKOFF);
    Some(Retry {
        map,
        attempts: attempts + 1,
        slots,
        sleep: Box::pin(tokio::time::sleep(backoff)),
    })
}

/// The last flush: `map` and any pending retry, retried with backoff up to
/// the bound, so that shutting down ends in bounded time.
async fn finish<S, K, V>(
    inner: &mut S,
    shared: &AggregateState<K, V>,
    mut pending: Option<Retry<K, V>>,
    map: HashMap<K, V>,
) where
    S: Service<HashMap<K, V>>,
    S::Error: Into<BoxError>,
    K: Hash + Eq + Clone,
    V: Merge + Clone,
{
    if let Some(r) = pending.as_mut() {
        r.sleep.as_mut().reset(Instant::now());
    }
    pending = offer(inner, shared, pending, map, None).await;
    while let Some(mut r) = pending {
        r.sleep.as_mut().await;
        pending = offer(inner, shared, Some(r), HashMap::new(), None).await;
    }
}

/// One call of the inner service with `map` (a copy: the caller keeps the
/// original for a retry); `true` when it succeeded. An error from
/// `poll_ready` or the call, or a panic in either, is a failure.
async fn attempt<S, K, V>(inner: &mut S, shared: &AggregateState<K, V>, map: HashMap<K, V>) -> bool
where
    S: Service<HashMap<K, V>>,
    S::Error: Into<BoxError>,
{
    let keys = map.len();
    let stats = &shared.stats;
    stats.flushes.fetch_add(1, Ordering::Relaxed);
    let call = async {
        poll_fn(|cx| inner.poll_ready(cx))
            .await
            .map_err(Into::into)?;
        inner.call(map).await.map(drop).map_err(Into::into)
    };
    let result: Result<Result<(), BoxError>, _> = AssertUnwindSafe(call).catch_unwind().await;
    if let Ok(Ok(())) = result {
        stats.keys_flushed.fetch_add(keys as u64, Ordering::Relaxed);
        return true;
    }
    stats.failed_flushes.fetch_add(1, Ordering::Relaxed);
    #[cfg(feature = "tracing")]
    match &result {
        Ok(Err(err)) => tracing::warn!(error = %err, keys, "aggregate flush failed"),
        _ => tracing::warn!(keys, "aggregate flush panicked"),
    }
    false
}

fn give_up<K, V>(shared: &AggregateState<K, V>, map: &HashMap<K, V>) {
    let keys = map.len() as u64;
    shared.stats.keys_dropped.fetch_add(keys, Ordering::Relaxed);
    #[cfg(feature = "tracing")]
    tracing::error!(
        keys,
        attempts = MAX_ATTEMPTS,
        "aggregate flush failed every attempt; its updates are dropped"
    );
}
