//! AIMD: additive increase, multiplicative decrease, with Netflix's
//! semantics and defaults.

use std::time::Duration;

use super::{Algorithm, Sample};
use crate::ConfigError;

/// When a successful but slow request counts as a drop.
///
/// A backend usually slows down long before it fails, and AIMD's timeout
/// (5 s by default) never fires then. With a latency target the limit shrinks
/// as soon as requests get slow, not only when they fail.
#[derive(Debug, Clone, Copy, PartialEq)]
#[non_exhaustive]
pub enum LatencyTarget {
    /// A sample slower than this is a drop.
    Fixed(Duration),
    /// A sample slower than `multiple` × the recent minimum rtt (and at least
    /// `floor` slower than it, so a sub-millisecond minimum does not turn
    /// ordinary jitter into drops) is a drop.
    ///
    /// The recent minimum is the minimum over the last one or two windows of
    /// `window` samples, so it follows the backend when its fastest path
    /// itself gets slower.
    MinRttMultiple {
        /// How many times the minimum a sample may take (greater than 1).
        multiple: f64,
        /// The least excess over the minimum that counts as slow.
        floor: Duration,
        /// Samples per window of the recent minimum (at least 1).
        window: u32,
    },
}

impl LatencyTarget {
    /// A fixed latency target.
    pub const fn fixed(target: Duration) -> Self {
        LatencyTarget::Fixed(target)
    }

    /// `multiple` × the recent minimum rtt, with a floor of 1 ms and windows
    /// of 100 samples.
    pub const fn min_rtt_multiple(multiple: f64) -> Self {
        LatencyTarget::MinRttMultiple {
            multiple,
            floor: Duration::from_millis(1),
            window: 100,
        }
    }
}

/// How fast [`Aimd`] grows the limit while requests succeed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Growth {
    /// +1 on every eligible success, as Netflix's `AIMDLimit` does. A busy
    /// service gets about `limit` successes per round trip, so the limit can
    /// double every round trip: quick to find headroom, prone to overshoot
    /// and to oscillate when a backend answers overload promptly.
    #[default]
    PerSample,
    /// +1 once a whole limit's worth of eligible successes has been seen:
    /// about +1 per round trip at saturation, like TCP's congestion
    /// avoidance. Slower to grow, much steadier around the capacity.
    PerLimit,
}

/// Additive-increase, multiplicative-decrease, with the semantics and
/// defaults of Netflix's `AIMDLimit`.
///
/// - On a drop, or an rtt above [`timeout`](AimdBuilder::timeout) (or above
///   the optional [`LatencyTarget`]), the limit becomes
///   `floor(limit × backoff_ratio)`, never below `min_limit`.
/// - On a success it grows by one, but only when the request was admitted with
///   at least half the limit in flight (`in_flight × 2 ≥ limit`, counting
///   itself): an idle service learns nothing about its capacity. Never above
///   `max_limit`.
///
/// Defaults: min 20, initial 20, max 200, backoff 0.9, timeout 5 s, no
/// latency target, [`Growth::PerSample`].
///
/// ```
/// use std::time::Duration;
/// use tower_spillway::limit::{Aimd, Algorithm, Sample};
///
/// let mut aimd = Aimd::builder().min_limit(1).build().unwrap();
/// assert_eq!(aimd.limit(), 20);
/// assert_eq!(aimd.update(Sample::dropped(Duration::ZERO, 20)), 18);
/// assert_eq!(aimd.update(Sample::success(Duration::from_millis(2), 9)), 19);
/// assert_eq!(aimd.update(Sample::success(Duration::from_millis(2), 1)), 19); // mostly idle
/// ```
#[derive(Debug, Clone)]
pub struct Aimd {
    limit: usize,
    min: usize,
    max: usize,
    backoff: f64,
    timeout: Duration,
    latency: Option<LatencyTarget>,
    growth: Growth,
    successes: usize,
    once_per_rtt: bool,
    last_decrease: Option<Duration>,
    min_rtt: MinOverSamples,
}

impl Default for Aimd {
    fn default() -> Self {
        Self::builder()
            .build()
            .unwrap_or_else(|_| unreachable!("the defaults are valid"))
    }
}

impl Aimd {
    /// A builder starting from the defaults.
    pub fn builder() -> AimdBuilder {
        AimdBuilder::default()
    }

    /// The recent minimum rtt, when a [`LatencyTarget::MinRttMultiple`] tracks it.
    pub fn recent_min_rtt(&self) -> Option<Duration> {
        self.min_rtt.get()
    }

    fn is_slow(&mut self, rtt: Duration) -> bool {
        if rtt > self.timeout {
            return true;
        }
        match self.latency {
            None => false,
            Some(LatencyTarget::Fixed(target)) => rtt > target,
            Some(LatencyTarget::MinRttMultiple {
                multiple,
                floor,
                window,
            }) => {
                self.min_rtt.push(rtt, window);
                let Some(min) = self.min_rtt.get() else {
                    return false;
                };
                let threshold = crate::time::mul(min, multiple).max(min.saturating_add(floor));
                rtt > threshold
            }
        }
    }
}

impl Algorithm for Aimd {
    fn limit(&self) -> usize {
        self.limit
    }

    fn update(&mut self, sample: Sample) -> usize {
        let slow = self.is_slow(sample.rtt);
        let overload = sample.dropped || slow;
        if overload && self.once_per_rtt {
            // A request admitted before the last decrease ended reports the
            // overload that decrease already answered.
            if self.last_decrease.is_some_and(|end| sample.start < end) {
                return self.limit;
            }
            self.last_decrease = Some(sample.start.saturating_add(sample.rtt));
        }
        let next = if overload {
            self.successes = 0;
            // The epsilon keeps 20 × 0.9 at 18 whatever the rounding of 0.9.
            ((self.limit as f64) * self.backoff + 1e-9).floor() as usize
        } else if sample.in_flight.saturating_mul(2) >= self.limit {
            match self.growth {
                Growth::PerSample => self.limit.saturating_add(1),
                Growth::PerLimit => {
                    self.successes += 1;
                    if self.successes >= self.limit {
                        self.successes = 0;
                        self.limit.saturating_add(1)
                    } else {
                        self.limit
                    }
                }
            }
        } else {
            self.limit
        };
        self.limit = next.clamp(self.min, self.max);
        self.limit
    }
}

/// Builds an [`Aimd`]; [`build`](Self::build) rejects out-of-range settings.
#[derive(Debug, Clone)]
pub struct AimdBuilder {
    min: usize,
    initial: usize,
    max: usize,
    backoff: f64,
    timeout: Duration,
    latency: Option<LatencyTarget>,
    growth: Growth,
    once_per_rtt: bool,
}

impl Default for AimdBuilder {
    fn default() -> Self {
        Self {
            min: 20,
            initial: 20,
            max: 200,
            backoff: 0.9,
            timeout: Duration::from_secs(5),
            latency: None,
            growth: Growth::PerSample,
            once_per_rtt: false,
        }
    }
}

impl AimdBuilder {
    /// The least limit (default 20, at least 1).
    #[must_use]
    pub fn min_limit(mut self, min: usize) -> Self {
        self.min = min;
        self
    }

    /// The limit to start from (default 20, between min and max).
    #[must_use]
    pub fn initial_limit(mut self, initial: usize) -> Self {
        self.initial = initial;
        self
    }

    /// The greatest limit (default 200).
    #[must_use]
    pub fn max_limit(mut self, max: usize) -> Self {
        self.max = max;
        self
    }

    /// The factor a drop multiplies the limit by (default 0.9, in `[0.5, 1)`).
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

    /// Also count successful requests slower than `target` as drops.
    #[must_use]
    pub fn latency_target(mut self, target: LatencyTarget) -> Self {
        self.latency = Some(target);
        self
    }

    /// How fast the limit grows (default [`Growth::PerSample`], Netflix's).
    #[must_use]
    pub fn growth(mut self, growth: Growth) -> Self {
        self.growth = growth;
        self
    }

    /// Decrease at most once per round trip (default off, as Netflix's): a
    /// drop from a request admitted before the last decrease took effect is
    /// not counted again. Without it, a burst of requests that were all
    /// admitted over the capacity cuts the limit once each, by `0.9ⁿ`; with
    /// it, once, as TCP's fast recovery does.
    #[must_use]
    pub fn decrease_once_per_rtt(mut self, enabled: bool) -> Self {
        self.once_per_rtt = enabled;
        self
    }

    /// Checks the settings and builds the algorithm.
    pub fn build(self) -> Result<Aimd, ConfigError> {
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
            return Err(ConfigError::new("timeout", "must be greater than zero"));
        }
        match self.latency {
            Some(LatencyTarget::Fixed(t)) if t.is_zero() => {
                return Err(ConfigError::new(
                    "latency_target",
                    "must be greater than zero",
                ));
            }
            Some(LatencyTarget::MinRttMultiple {
                multiple, window, ..
            }) => {
                if !(multiple > 1.0 && multiple.is_finite()) {
                    return Err(ConfigError::new(
                        "latency_target",
                        "the multiple must be a finite number above 1",
                    ));
                }
                if window == 0 {
                    return Err(ConfigError::new(
                        "latency_target",
                        "the window must be at least 1",
                    ));
                }
            }
            _ => {}
        }
        Ok(Aimd {
            limit: self.initial,
            min: self.min,
            max: self.max,
            backoff: self.backoff,
            timeout: self.timeout,
            latency: self.latency,
            growth: self.growth,
            successes: 0,
            once_per_rtt: self.once_per_rtt,
            last_decrease: None,
            min_rtt: MinOverSamples::default(),
        })
    }
}

/// The minimum rtt over the current and the previous window of samples (a
/// count of samples, where the crate's `WindowedMin` counts time).
#[derive(Debug, Clone, Default)]
struct MinOverSamples {
    current: Option<Duration>,
    previous: Option<Duration>,
    count: u32,
}

impl MinOverSamples {
    fn push(&mut self, rtt: Duration, window: u32) {
        if self.count >= window {
            self.previous = self.current.take();
            self.count = 0;
        }
        self.count += 1;
        self.current = Some(self.current.map_or(rtt, |m| m.min(rtt)));
    }

    fn get(&self) -> Option<Duration> {
        match (self.current, self.previous) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

#[cfg(test)]
mod tests;
