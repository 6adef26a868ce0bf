use std::{
    collections::HashMap,
    fmt,
    future::{Future, Ready, ready},
    hash::Hash,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
};

use tokio::sync::{AcquireError, Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tower_service::Service;

use super::{AggregateConfig, Merge, merge::merge_into, worker::Worker};
use crate::{BoxError, sync::lock};

type Acquire = Pin<Box<dyn Future<Output = Result<OwnedSemaphorePermit, AcquireError>> + Send>>;

/// Merges updates per key in memory and flushes the merged map to an inner
/// `Service<HashMap<K, V>>`; see the [module docs](super).
///
/// A cloneable handle: every clone shares one map and one flushing worker.
/// It serves `(K, V)` (one update) and `HashMap<K, V>` (many, for example a
/// lower tier's flush), so aggregates stack.
pub struct Aggregate<K, V> {
    shared: Arc<AggregateState<K, V>>,
    tx: mpsc::UnboundedSender<Command<K, V>>,
    slots: Arc<Semaphore>,
    // Only touched through `&mut self`; see `Batch`.
    acquire: Mutex<Option<Acquire>>,
}

pub(crate) struct AggregateState<K, V> {
    pub(crate) state: Mutex<State<K, V>>,
    pub(crate) keys: AtomicUsize,
    max_keys: usize,
    pub(crate) stats: Counters,
    pub(crate) done: Notify,
}

impl<K, V> AggregateState<K, V> {
    /// Empties the map the handles merge into (its lock held as `state`).
    pub(crate) fn take_map(&self, state: &mut State<K, V>) -> HashMap<K, V> {
        self.keys.store(0, Ordering::Relaxed);
        std::mem::take(&mut state.map)
    }
}

pub(crate) struct State<K, V> {
    pub(crate) map: HashMap<K, V>,
    pub(crate) closed: bool,
}

#[derive(Default)]
pub(crate) struct Counters {
    updates: AtomicU64,
    pub(crate) flushes: AtomicU64,
    pub(crate) keys_flushed: AtomicU64,
    pub(crate) failed_flushes: AtomicU64,
    pub(crate) retries: AtomicU64,
    pub(crate) keys_dropped: AtomicU64,
    /// Set when the worker has stopped, however it stopped.
    pub(crate) shut_down: AtomicBool,
}

pub(crate) enum Command<K, V> {
    /// A map that reached the key bound; the permit is a flush slot.
    Flush(HashMap<K, V>, OwnedSemaphorePermit),
    /// The final map; answer when everything before it has been flushed.
    Shutdown(HashMap<K, V>, oneshot::Sender<()>),
}

/// Counters of an [`Aggregate`], from [`Aggregate::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct AggregateStats {
    /// Updates accepted (a map counts one per entry).
    pub updates: u64,
    /// Calls of the inner service, successful or not.
    pub flushes: u64,
    /// Keys the inner service took, summed over successful flushes.
    pub keys_flushed: u64,
    /// Calls of the inner service that failed (an error from `poll_ready`
    /// or the call, or a panic in either). A failed map is kept and offered
    /// again, up to five times with a backoff from 100 ms to 5 s, with what
    /// arrives meanwhile merged into it.
    pub failed_flushes: u64,
    /// Flushes that were retries of a failed one.
    pub retries: u64,
    /// Keys given up: their map failed every attempt, or the worker stopped
    /// (its task panicked or was cancelled) with them still to flush.
    pub keys_dropped: u64,
    /// Keys merged in memory, waiting for the next flush.
    pub pending_keys: usize,
}

/// The aggregate was shut down; the update was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ShutDown(());

impl fmt::Display for ShutDown {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("aggregate shut down")
    }
}

impl std::error::Error for ShutDown {}

impl<K, V> Aggregate<K, V>
where
    K: Hash + Eq + Clone + Send + 'static,
    V: Merge + Clone + Send + 'static,
{
    /// Starts an aggregate flushing into `inner`, spawning its worker on the
    /// current tokio runtime. Keys and values are `Clone` so that a map the
    /// inner service fails can be offered again.
    ///
    /// # Panics
    ///
    /// When called outside a tokio runtime.
    pub fn new<S>(inner: S, config: AggregateConfig) -> Self
    where
        S: Service<HashMap<K, V>> + Send + 'static,
        S::Error: Into<BoxError>,
        S::Future: Send,
    {
        let (tx, rx) = mpsc::unbounded_channel();
        let shared = Arc::new(AggregateState {
            state: Mutex::new(State {
                map: HashMap::new(),
                closed: false,
            }),
            keys: AtomicUsize::new(0),
            max_keys: config.max_keys,
            stats: Counters::default(),
            done: Notify::new(),
        });
        let worker = Worker::new(shared.clone(), rx);
        tokio::spawn(super::worker::run(inner, worker, config.interval));
        Self {
            shared,
            tx,
            slots: Arc::new(Semaphore::new(config.max_pending_flushes)),
            acquire: Mutex::new(None),
        }
    }

    /// Flushes everything merged so far (after any flush already queued),
    /// refuses later updates with [`ShutDown`], and resolves once the inner
    /// service has answered the last flush. Every clone sees the shutdown.
    ///
    /// After it resolves, every accepted update has been taken by the inner
    /// service, or counted in [`AggregateStats::keys_dropped`] (its map
    /// failed every attempt, or the worker had stopped). It always resolves:
    /// a failing inner service delays it by at most the retries' backoff
    /// (1.5 s in all).
    pub fn shutdown(&self) -> impl Future<Output = ()> + Send + 'static {
        let (done_tx, done_rx) = oneshot::channel();
        let sent = {
            let mut state = lock(&self.shared.state);
            if state.closed {
                false
            } else {
                state.closed = true;
                let map = self.shared.take_map(&mut state);
                self.tx.send(Command::Shutdown(map, done_tx)).is_ok()
            }
        };
        let shared = self.shared.clone();
        async move {
            if sent {
                let _ = done_rx.await;
            } else {
                // Shut down before: wait for the final flush.
                loop {
                    let notified = shared.done.notified();
                    if shared.stats.shut_down.load(Ordering::Acquire) {
                        break;
                    }
                    notified.await;
                }
            }
        }
    }
}

impl<K, V> Aggregate<K, V>
where
    K: Hash + Eq,
    V: Merge,
{
    /// A snapshot of the counters.
    pub fn stats(&self) -> AggregateStats {
        let c = &self.shared.stats;
        AggregateStats {
            updates: c.updates.load(Ordering::Relaxed),
            flushes: c.flushes.load(Ordering::Relaxed),
            keys_flushed: c.keys_flushed.load(Ordering::Relaxed),
            failed_flushes: c.failed_flushes.load(Ordering::Relaxed),
            retries: c.retries.load(Ordering::Relaxed),
            keys_dropped: c.keys_dropped.load(Ordering::Relaxed),
            pending_keys: self.shared.keys.load(Ordering::Relaxed),
        }
    }

    fn poll_room(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        // Below the key bound there is always room: updates to existing keys
        // merge, and new keys are what the bound counts.
        if self.shared.keys.load(Ordering::Relaxed) < self.shared.max_keys {
            return Poll::Ready(Ok(()));
        }
        // At the bound with every flush slot busy: wait for a slot, then hand
        // the full map to the worker.
        let acquire = self
            .acquire
            .get_mut()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let fut = acquire.get_or_insert_with(|| Box::pin(self.slots.clone().acquire_owned()));
        let permit = match fut.as_mut().poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(permit) => {
                *acquire = None;
                match permit {
                    Ok(permit) => permit,
                    Err(_) => return Poll::Ready(Err(Box::new(ShutDown(())))),
                }
            }
        };
        self.hand_off(permit);
        Poll::Ready(Ok(()))
    }

    /// Sends the current map to the worker if it is (still) at the bound.
    fn hand_off(&self, permit: OwnedSemaphorePermit) {
        let mut state = lock(&self.shared.state);
        if state.map.len() >= self.shared.max_keys && !state.closed {
            let map = self.shared.take_map(&mut state);
            // The worker only stops after `shutdown` or when every handle is
            // gone, so this send cannot fail while `closed` is false.
            let _ = self.tx.send(Command::Flush(map, permit));
        }
    }

    fn merge_all(&self, updates: impl IntoIterator<Item = (K, V)>) -> Result<(), BoxError> {
        let mut state = lock(&self.shared.state);
        if state.closed {
            return Err(Box::new(ShutDown(())));
        }
        let mut n = 0;
        for (k, v) in updates {
            merge_into(&mut state.map, k, v);
            n += 1;
        }
        let keys = state.map.len();
        self.shared.keys.store(keys, Ordering::Relaxed);
        self.shared.stats.updates.fetch_add(n, Ordering::Relaxed);
        if keys >= self.shared.max_keys {
            // Flush now if a slot is free; otherwise the next `poll_ready`
            // waits for one.
            if let Ok(permit) = self.slots.clone().try_acquire_owned() {
                let map = self.shared.take_map(&mut state);
                let _ = self.tx.send(Command::Flush(map, permit));
            }
        }
        Ok(())
    }
}

impl<K, V> Service<(K, V)> for Aggregate<K, V>
where
    K: Hash + Eq,
    V: Merge,
{
    type Response = ();
    type Error = BoxError;
    type Future = Ready<Result<(), BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.poll_room(cx)
    }

    fn call(&mut self, (k, v): (K, V)) -> Self::Future {
        ready(self.merge_all([(k, v)]))
    }
}

impl<K, V> Service<HashMap<K, V>> for Aggregate<K, V>
where
    K: Hash + Eq,
    V: Merge,
{
    type Response = ();
    type Error = BoxError;
    type Future = Ready<Result<(), BoxError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.poll_room(cx)
    }

    fn call(&mut self, updates: HashMap<K, V>) -> Self::Future {
        ready(self.merge_all(updates))
    }
}

impl<K, V> Clone for Aggregate<K, V> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            tx: self.tx.clone(),
            slots: self.slots.clone(),
            acquire: Mutex::new(None),
        }
    }
}

impl<K, V> fmt::Debug for Aggregate<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Aggregate")
            .field("pending_keys", &self.shared.keys.load(Ordering::Relaxed))
            .field("max_keys", &self.shared.max_keys)
            .finish()
    }
}
