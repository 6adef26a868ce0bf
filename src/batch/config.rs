use std::{fmt, sync::Arc, time::Duration};

use crate::ConfigError;

/// When a partly filled batch is sent.
///
/// A batch is always sent as soon as it is full (by item count or by weight);
/// the policy decides what happens before that.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Flush {
    /// Send at once when no batch is in flight; otherwise gather items until
    /// the batch is full, `max_wait` has passed since its first item, or the
    /// in-flight batch completes. One request at idle waits zero, and under
    /// load batches grow by themselves (like Nagle's algorithm, or a Kafka
    /// producer with `linger.ms = 0`).
    #[default]
    Opportunistic,
    /// Always gather for `max_wait` after a batch's first item (unless the
    /// batch fills first), like a Kafka producer's `linger.ms`. Trades latency
    /// at idle for larger batches.
    Linger,
}

pub(crate) type Weigher<T> = Arc<dyn Fn(&T) -> u64 + Send + Sync>;

/// The settings of a [`Batch`](super::Batch); build one with
/// [`BatchConfig::builder`].
///
/// ```
/// use std::time::Duration;
/// use tower_spillway::batch::BatchConfig;
///
/// let config = BatchConfig::<String>::builder()
///     .max_items(500)
///     .max_wait(Duration::from_millis(5))
///     .max_weight(64 * 1024, |s: &String| s.len() as u64)
///     .queue_capacity(10_000)
///     .build()
///     .unwrap();
/// # let _ = config;
/// ```
pub struct BatchConfig<T> {
    pub(crate) max_items: usize,
    pub(crate) max_wait: Duration,
    pub(crate) flush: Flush,
    pub(crate) weight: Option<(u64, Weigher<T>)>,
    pub(crate) queue_capacity: usize,
    pub(crate) reject_when_full: bool,
    pub(crate) max_in_flight: usize,
}

impl<T> Clone for BatchConfig<T> {
    fn clone(&self) -> Self {
        Self {
            max_items: self.max_items,
            max_wait: self.max_wait,
            flush: self.flush,
            weight: self.weight.clone(),
            queue_capacity: self.queue_capacity,
            reject_when_full: self.reject_when_full,
            max_in_flight: self.max_in_flight,
        }
    }
}

impl<T> fmt::Debug for BatchConfig<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchConfig")
            .field("max_items", &self.max_items)
            .field("max_wait", &self.max_wait)
            .field("flush", &self.flush)
            .field("max_weight", &self.weight.as_ref().map(|(w, _)| *w))
            .field("queue_capacity", &self.queue_capacity)
            .field("reject_when_full", &self.reject_when_full)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

impl<T> BatchConfig<T> {
    /// Default largest batch, in items.
    pub const DEFAULT_MAX_ITEMS: usize = 100;
    /// Default longest wait of a batch's first item.
    pub const DEFAULT_MAX_WAIT: Duration = Duration::from_millis(10);
    /// Default number of items that may wait for a batch.
    pub const DEFAULT_QUEUE_CAPACITY: usize = 1024;

    /// A builder starting from the defaults: 100 items, 10 ms, opportunistic
    /// flush, no weight limit, a queue of 1,024 items with backpressure, one
    /// batch in flight.
    pub fn builder() -> BatchConfigBuilder<T> {
        BatchConfigBuilder {
            config: BatchConfig {
                max_items: Self::DEFAULT_MAX_ITEMS,
                max_wait: Self::DEFAULT_MAX_WAIT,
                flush: Flush::Opportunistic,
                weight: None,
                queue_capacity: Self::DEFAULT_QUEUE_CAPACITY,
                reject_when_full: false,
                max_in_flight: 1,
            },
        }
    }

    /// The largest batch, in items.
    pub fn max_items(&self) -> usize {
        self.max_items
    }

    /// How long a batch's first item may wait for the batch to be sent.
    pub fn max_wait(&self) -> Duration {
        self.max_wait
    }

    /// The flush policy.
    pub fn flush(&self) -> Flush {
        self.flush
    }

    /// How many items may wait in the queue in front of the worker.
    pub fn queue_capacity(&self) -> usize {
        self.queue_capacity
    }

    /// How many batches may be in the inner service at once.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }
}

impl<T> Default for BatchConfig<T> {
    fn default() -> Self {
        Self::builder()
            .build()
            .expect("the default batch configuration is valid")
    }
}

/// Builds a [`BatchConfig`], checking every setting in
/// [`build`](Self::build).
pub struct BatchConfigBuilder<T> {
    config: BatchConfig<T>,
}

impl<T> fmt::Debug for BatchConfigBuilder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BatchConfigBuilder")
            .field(&self.config)
            .finish()
    }
}

impl<T> BatchConfigBuilder<T> {
    /// The largest batch, in items (at least 1).
    #[must_use]
    pub fn max_items(mut self, max_items: usize) -> Self {
        self.config.max_items = max_items;
        self
    }

    /// How long a batch's first item may wait before the batch is sent
    /// (subject to [`max_in_flight`](Self::max_in_flight)).
    #[must_use]
    pub fn max_wait(mut self, max_wait: Duration) -> Self {
        self.config.max_wait = max_wait;
        self
    }

    /// Sends partly filled batches at once when no batch is in flight (the
    /// default); see [`Flush::Opportunistic`].
    #[must_use]
    pub fn opportunistic(mut self) -> Self {
        self.config.flush = Flush::Opportunistic;
        self
    }

    /// Always gathers items for `window` after a batch's first item; sets
    /// `max_wait` to `window`. See [`Flush::Linger`].
    #[must_use]
    pub fn linger(mut self, window: Duration) -> Self {
        self.config.flush = Flush::Linger;
        self.config.max_wait = window;
        self
    }

    /// Limits a batch's total weight to `max` (at least 1), weighing each item
    /// with `weigh` (for example its size in bytes). An item that would push
    /// the batch over the limit starts the next batch; an item heavier than
    /// the limit on its own is sent alone.
    #[must_use]
    pub fn max_weight<F>(mut self, max: u64, weigh: F) -> Self
    where
        F: Fn(&T) -> u64 + Send + Sync + 'static,
    {
        self.config.weight = Some((max, Arc::new(weigh)));
        self
    }

    /// How many items may wait for a batch (at least 1). When the queue is
    /// full, `poll_ready` waits for room, unless
    /// [`reject_when_full`](Self::reject_when_full) is set.
    #[must_use]
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.config.queue_capacity = capacity;
        self
    }

    /// When the queue is full, refuse at once with an
    /// [`Overloaded`](crate::Overloaded) ([`Reason::QueueFull`](crate::Reason::QueueFull))
    /// instead of waiting in `poll_ready`. The handle is then always ready and
    /// decides in `call`, which suits servers that call `clone().oneshot()`.
    #[must_use]
    pub fn reject_when_full(mut self, reject: bool) -> Self {
        self.config.reject_when_full = reject;
        self
    }

    /// How many batches may be in the inner service at once (at least 1).
    #[must_use]
    pub fn max_in_flight(mut self, max: usize) -> Self {
        self.config.max_in_flight = max;
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<BatchConfig<T>, ConfigError> {
        let c = &self.config;
        if c.max_items == 0 {
            return Err(ConfigError::new("max_items", "must be at least 1"));
        }
        if c.queue_capacity == 0 {
            return Err(ConfigError::new("queue_capacity", "must be at least 1"));
        }
        // tokio's semaphore holds at most `usize::MAX >> 3` permits.
        if c.queue_capacity > usize::MAX >> 4 {
            return Err(ConfigError::new("queue_capacity", "is too large"));
        }
        if c.max_in_flight == 0 {
            return Err(ConfigError::new("max_in_flight", "must be at least 1"));
        }
        if matches!(c.weight, Some((0, _))) {
            return Err(ConfigError::new("max_weight", "must be at least 1"));
        }
        if c.max_wait > Duration::from_secs(3600) {
            return Err(ConfigError::new("max_wait", "must be at most one hour"));
        }
        if c.flush == Flush::Linger && c.max_wait.is_zero() {
            return Err(ConfigError::new(
                "linger",
                "window must be longer than zero",
            ));
        }
        Ok(self.config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_out_of_range_settings() {
        let field = |b: BatchConfigBuilder<u32>| b.build().unwrap_err().field();
        assert_eq!(field(BatchConfig::builder().max_items(0)), "max_items");
        assert_eq!(
            field(BatchConfig::builder().queue_capacity(0)),
            "queue_capacity"
        );
        assert_eq!(
            field(BatchConfig::builder().max_in_flight(0)),
            "max_in_flight"
        );
        assert_eq!(
            field(BatchConfig::builder().max_weight(0, |_| 1)),
            "max_weight"
        );
        assert_eq!(
            field(BatchConfig::builder().linger(Duration::ZERO)),
            "linger"
        );
        assert_eq!(
            field(BatchConfig::builder().max_wait(Duration::from_secs(7200))),
            "max_wait"
        );
        let ok = BatchConfig::<u32>::builder()
            .max_items(1)
            .max_wait(Duration::ZERO)
            .build()
            .unwrap();
        assert_eq!(ok.max_items(), 1);
        assert_eq!(ok.flush(), Flush::Opportunistic);
    }
}
