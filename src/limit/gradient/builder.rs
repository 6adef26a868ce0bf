//! [`GradientBuilder`]: the settings of a [`Gradient`] and their ranges.

use std::time::Duration;

use super::Gradient;
use crate::ConfigError;

/// Builds a [`Gradient`]; [`build`](Self::build) rejects out-of-range
/// settings.
#[derive(Debug, Clone)]
pub struct GradientBuilder {
    pub(super) initial: usize,
    pub(super) min: usize,
    pub(super) max: usize,
    pub(super) backoff: f64,
    pub(super) timeout: Duration,
    pub(super) window_samples: u32,
    pub(super) tolerance: f64,
    pub(super) tolerance_floor: Duration,
    pub(super) growth: f64,
    pub(super) baseline_period: Duration,
}

impl Default for GradientBuilder {
    fn default() -> Self {
        Self {
            initial: 10,
            min: 1,
            max: 1000,
            backoff: 0.9,
            timeout: Duration::from_secs(5),
            window_samples: 200,
            tolerance: 0.1,
            tolerance_floor: Duration::from_millis(1),
            growth: 0.02,
            baseline_period: Duration::from_secs(10),
        }
    }
}

impl GradientBuilder {
    /// The limit to start from (default 10, between min and max). Slow start
    /// finds the capacity from any start within a few round trips; a backend
    /// whose slot count is known can start there.
    #[must_use]
    pub fn initial_limit(mut self, initial: usize) -> Self {
        self.initial = initial;
        self
    }

    /// The least limit (default 1, at least 1).
    #[must_use]
    pub fn min_limit(mut self, min: usize) -> Self {
        self.min = min;
        self
    }

    /// The greatest limit (default 1000).
    #[must_use]
    pub fn max_limit(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// The factor a window with a drop multiplies the limit by (default 0.9,
    /// in `[0.5, 1)`).
    #[must_use]
    pub fn backoff_ratio(mut self, ratio: f64) -> Self {
        self.backoff = ratio;
        self
    }

    /// A request slower than this counts as a drop (default 5 s, non-zero).
    #[must_use]
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The most samples per decision (default 200, at least 1). A decision
    /// takes a limit's worth of samples (about one round trip), at least 3,
    /// at most this many.
    #[must_use]
    pub fn window_samples(mut self, samples: u32) -> Self {
        self.window_samples = samples;
        self
    }

    /// How much slower than the baseline a window's mean rtt may be before
    /// it counts as queueing: `fraction` of the baseline (default 0.1, in
    /// `(0, 1]`), and at least `floor` (default 1 ms), so timer jitter on a
    /// fast backend is not a queue. (The measured jitter raises it further.)
    /// Raise it for a backend whose latency varies widely on its own.
    #[must_use]
    pub fn tolerance(mut self, fraction: f64, floor: Duration) -> Self {
        self.tolerance = fraction;
        self.tolerance_floor = floor;
        self
    }

    /// The limit's growth per saturated window after slow start, as a
    /// fraction of the limit (default 0.02, in `(0, 0.5]`; at least half a
    /// request).
    #[must_use]
    pub fn growth(mut self, fraction: f64) -> Self {
        self.growth = fraction;
        self
    }

    /// How long a baseline is remembered: the baseline is the least window
    /// over the current and the previous period (default 10 s, non-zero).
    #[must_use]
    pub fn baseline_period(mut self, period: Duration) -> Self {
        self.baseline_period = period;
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<Gradient, ConfigError> {
        if self.min == 0 {
            return Err(ConfigError::new("min_limit", "must be at least 1"));
        }
        if self.max < self.min {
            return Err(ConfigError::new("max_limit", "must be at least min_limit"));
        }
        if !(self.min..=self.max).contains(&self.initial) {
            return Err(ConfigError::new(
                "initial_limit",
                "must lie between min_limit and max_limit",
            ));
        }
        if !(0.5..1.0).contains(&self.backoff) {
            return Err(ConfigError::new("backoff_ratio", "must lie in [0.5, 1)"));
        }
        if self.timeout.is_zero() {
            return Err(ConfigError::new("timeout", "must be non-zero"));
        }
        if self.window_samples == 0 {
            return Err(ConfigError::new("window_samples", "must be at least 1"));
        }
        if !(self.tolerance > 0.0 && self.tolerance <= 1.0) {
            return Err(ConfigError::new("tolerance", "must lie in (0, 1]"));
        }
        if !(self.growth > 0.0 && self.growth <= 0.5) {
            return Err(ConfigError::new("growth", "must lie in (0, 0.5]"));
        }
        if self.baseline_period.is_zero() {
            return Err(ConfigError::new("baseline_period", "must be non-zero"));
        }
        Ok(Gradient::from_config(self))
    }
}
