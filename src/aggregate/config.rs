use std::time::Duration;

use crate::ConfigError;

/// The settings of an [`Aggregate`](super::Aggregate); build one with
/// [`AggregateConfig::builder`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AggregateConfig {
    pub(crate) interval: Duration,
    pub(crate) max_keys: usize,
    pub(crate) max_pending_flushes: usize,
}

impl AggregateConfig {
    /// A builder starting from the defaults: flush every second, at 10,000
    /// keys, with at most 2 full maps waiting for the inner service.
    pub fn builder() -> AggregateConfigBuilder {
        AggregateConfigBuilder {
            config: AggregateConfig {
                interval: Duration::from_secs(1),
                max_keys: 10_000,
                max_pending_flushes: 2,
            },
        }
    }

    /// How often the merged map is flushed.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// How many distinct keys trigger a flush before the interval.
    pub fn max_keys(&self) -> usize {
        self.max_keys
    }
}

impl Default for AggregateConfig {
    fn default() -> Self {
        Self::builder()
            .build()
            .expect("the default aggregate configuration is valid")
    }
}

/// Builds an [`AggregateConfig`], checking every setting in
/// [`build`](Self::build).
#[derive(Debug, Clone)]
pub struct AggregateConfigBuilder {
    config: AggregateConfig,
}

impl AggregateConfigBuilder {
    /// How often the merged map is flushed (longer than zero).
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.config.interval = interval;
        self
    }

    /// Flush as soon as this many distinct keys are merged (at least 1). This
    /// bounds memory: beyond it, and with every flush slot busy, `poll_ready`
    /// waits for the inner service.
    #[must_use]
    pub fn max_keys(mut self, max_keys: usize) -> Self {
        self.config.max_keys = max_keys;
        self
    }

    /// How many full maps may wait for (or be in) the inner service before
    /// `poll_ready` applies backpressure (at least 1).
    #[must_use]
    pub fn max_pending_flushes(mut self, max: usize) -> Self {
        self.config.max_pending_flushes = max;
        self
    }

    /// Checks the settings.
    pub fn build(self) -> Result<AggregateConfig, ConfigError> {
        let c = self.config;
        if c.interval.is_zero() {
            return Err(ConfigError::new("interval", "must be longer than zero"));
        }
        if c.max_keys == 0 {
            return Err(ConfigError::new("max_keys", "must be at least 1"));
        }
        if c.max_pending_flushes == 0 || c.max_pending_flushes > 1 << 20 {
            return Err(ConfigError::new(
                "max_pending_flushes",
                "must be between 1 and 2^20",
            ));
        }
        Ok(c)
    }
}
