//! Load signals: how a shedder learns how busy the service below it is.

use std::{sync::Arc, time::Duration};

use crate::Priority;

/// A live measure of how loaded a service is.
///
/// A load shedder reads it on every request, so implementations must be
/// cheap and lock-free (an atomic load or two). Any source fits: the shedder's
/// own count of requests in flight, an adaptive limiter's wait queue (through
/// its handle), a database pool's waiters, a channel's length.
///
/// Closures `Fn() -> usize` are load signals reporting only a load:
///
/// ```
/// use std::sync::{Arc, atomic::{AtomicUsize, Ordering}};
/// use tower_spillway::LoadSignal;
///
/// let waiters = Arc::new(AtomicUsize::new(3));
/// let signal = { let w = waiters.clone(); move || w.load(Ordering::Relaxed) };
/// assert_eq!(signal.load(), 3);
/// assert_eq!(signal.queue_delay(), None);
/// ```
pub trait LoadSignal {
    /// The current load, in the unit the shedder's thresholds use (requests in
    /// flight, or waiting, or both).
    fn load(&self) -> usize;

    /// How long work currently waits before it starts, when the source
    /// measures it (the age of the oldest waiter, or the recent sojourn
    /// time). `None` when the source has no queue.
    fn queue_delay(&self) -> Option<Duration> {
        None
    }

    /// `true` when the source forecasts its own refusals through
    /// [`refusing`](Self::refusing): an adaptive shedder in front of it then
    /// refuses exactly what the source would, at once and without a lock,
    /// instead of steering on the queue delay.
    fn forecasts_refusals(&self) -> bool {
        false
    }

    /// The highest priority the source refuses now whatever its queue holds
    /// (it refuses every lower one too); `None` when it refuses none.
    fn refusing(&self) -> Option<Priority> {
        None
    }
}

impl<F> LoadSignal for F
where
    F: Fn() -> usize,
{
    fn load(&self) -> usize {
        self()
    }
}

impl<T: LoadSignal + ?Sized> LoadSignal for Arc<T> {
    fn load(&self) -> usize {
        (**self).load()
    }

    fn queue_delay(&self) -> Option<Duration> {
        (**self).queue_delay()
    }

    fn forecasts_refusals(&self) -> bool {
        (**self).forecasts_refusals()
    }

    fn refusing(&self) -> Option<Priority> {
        (**self).refusing()
    }
}
