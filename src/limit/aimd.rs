//! Limit algorithms: pure structs fed samples, asked for a limit.
//!
//! Nothing here knows about tokio, Tower or HTTP. [`AdaptiveLimit`](super::AdaptiveLimit)
//! measures each request and feeds a [`Sample`] to its [`Algorithm`]; the
//! algorithm answers with the new concurrency limit.

use std::{fmt, time::Duration};

use crate::ConfigError;

/// One finished request, as a limit algorithm sees it.
///
/// Built with [`Sample::success`] or [`Sample::dropped`]; it may grow fields
/// that other algorithms need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Sample {
    /// When the request was admitted, as an offset from an origin fixed for
    /// the limiter's life (the limiter's creation). Algorithms compare it
    /// with other samples' ends, never with a clock.
    pub start: Duration,
    /// How long the request held its permit: from admission to the end of the
    /// response body (time spent waiting in the queue is not included).
    pub rtt: Duration,
    /// Requests in flight when this one was admitted, counting itself.
    pub in_flight: usize,
    /// `true` when the request failed in a way that signals overload: an
    /// upstream 429/503/504, a gRPC `RESOURCE_EXHAUSTED`/`UNAVAILABLE`/
    /// `DEADLINE_EXCEEDED`, an inner error.
    pub dropped: bool,
}

impl Sample {
    /// A successful request that held its permit for `rtt` and was admitted
    /// with `in_flight` requests in flight (itself included).
    pub const fn success(rtt: Duration, in_flight: usize) -> Self {
        Self {
            start: Duration::ZERO,
            rtt,
            in_flight,
            dropped: false,
        }
    }

    /// A request that failed with an overload signal.
    pub const fn dropped(rtt: Duration, in_flight: usize) -> Self {
        Self {
            start: Duration::ZERO,
            rtt,
            in_flight,
            dropped: true,
        }
    }

    /// The same sample, admitted at `start` (see [`Sample::start`]).
    #[must_use]
    pub const fn started_at(mut self, start: Duration) -> Self {
        self.start = start;
        self
    }
}

/// A concurrency-limit algorithm: fed a [`Sample`] per finished request,
/// answers with the limit to enforce from now on.
///
/// This is Netflix's `Limit`: the algorithm knows nothing of admission, which
/// [`AdaptiveLimit`](super::AdaptiveLimit) does, nor of how outcomes are
/// classified, which a [`ClassifyOutcome`](super::ClassifyOutcome) does. A
/// sample carries what delay-based algorithms (Vegas, Gradient2) need too:
/// the round-trip time and the in-flight count at admission.
///
/// ```
/// use std::time::Duration;
/// use tower_spillway::limit::{Algorithm, Sample};
///
/// /// Halves on a drop, otherwise stays put.
/// #[derive(Debug)]
/// struct Halving(usize);
///
/// impl Algorithm for Halving {
///     fn limit(&self) -> usize { self.0 }
///     fn update(&mut self, sample: Sample) -> usize {
///         if sample.dropped { self.0 = (self.0 / 2).max(1); }
///         self.0
///     }
/// }
///
/// let mut h = Halving(8);
/// assert_eq!(h.update(Sample::dropped(Duration::from_millis(3), 8)), 4);
/// ```
pub trait Algorithm: fmt::Debug {
    /// The current limit; at least 1.
    fn limit(&self) -> usize;

    /// Learns from one finished request and returns the new limit (at least 1).
    fn update(&mut self, sample: Sample) -> usize;

    /// `false` for an algorithm that ignores samples, such as [`Fixed`]: the
    /// limiter then does not time requests (no clock reads) and does not call
    /// [`update`](Self::update).
    fn needs_samples(&self) -> bool {
        true
    }
}

impl<A: Algorithm + ?Sized> Algorithm for Box<A> {
    fn limit(&self) -> usize {
        (**self).limit()
    }

    fn update(&mut self, sample: Sample) -> usize {
        (**self).update(sample)
    }

    fn needs_samples(&self) -> bool {
        (**self).needs_samples()
    }
}

/// A limit that never changes: tower's `ConcurrencyLimit`, with this module's
/// bounded, priority-ordered queue in front of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    limit: usize,
}

impl Fixed {
    /// A fixed limit of `limit` concurrent requests; zero is a [`ConfigError`].
    pub fn new(limit: usize) -> Result<Self, ConfigError> {
        if limit == 0 {
            return Err(ConfigError::new("limit", "must be at least 1"));
        }
        Ok(Self { limit })
    }
}

impl Algorithm for Fixed {
    fn limit(&self) -> usize {
        self.limit
    }

    fn update(&mut self, _sample: Sample) -> usize {
        self.limit
    }

    fn needs_samples(&self) -> bool {
        false
    }
}

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
    min_rtt: WindowedMin,
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
            min_rtt: WindowedMin::default(),
        })
    }
}

/// The minimum over the current and the previous window of samples.
#[derive(Debug, Clone, Default)]
struct WindowedMin {
    current: Option<Duration>,
    previous: Option<Duration>,
    count: u32,
}

impl WindowedMin {
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
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn aimd(min: usize, initial: usize, max: usize) -> Aimd {
        Aimd::builder()
            .min_limit(min)
            .initial_limit(initial)
            .max_limit(max)
            .build()
            .unwrap()
    }

    // The vectors of Netflix's AIMDLimitTest, plus the clamps.
    #[test]
    fn golden_defaults() {
        let a = Aimd::default();
        assert_eq!(a.limit(), 20);
        assert_eq!(
            (a.min, a.max, a.backoff, a.timeout),
            (20, 200, 0.9, Duration::from_secs(5))
        );
        assert_eq!(aimd(1, 10, 200).limit(), 10);
    }

    #[test]
    fn golden_increase_on_success() {
        let mut a = aimd(1, 20, 200);
        assert_eq!(a.update(Sample::success(MS, 10)), 21);
    }

    #[test]
    fn golden_decrease_on_drop() {
        let mut a = aimd(1, 30, 200);
        assert_eq!(a.update(Sample::dropped(Duration::ZERO, 0)), 27);
        let mut a = aimd(1, 20, 200);
        assert_eq!(a.update(Sample::dropped(Duration::ZERO, 20)), 18);
        assert_eq!(a.update(Sample::dropped(Duration::ZERO, 18)), 16);
        assert_eq!(a.update(Sample::dropped(Duration::ZERO, 16)), 14);
    }

    #[test]
    fn golden_success_overflow_stays_at_max() {
        let mut a = aimd(1, 21, 21);
        assert_eq!(a.update(Sample::success(MS, 10)), 21);
    }

    #[test]
    fn growth_only_when_half_the_limit_is_in_flight() {
        let mut a = aimd(1, 20, 200);
        assert_eq!(a.update(Sample::success(MS, 9)), 20);
        assert_eq!(a.update(Sample::success(MS, 10)), 21);
        // 10 × 2 = 20 < 21: no longer enough.
        assert_eq!(a.update(Sample::success(MS, 10)), 21);
        assert_eq!(a.update(Sample::success(MS, 11)), 22);
    }

    #[test]
    fn clamps_at_min_and_max() {
        let mut a = Aimd::default();
        assert_eq!(a.update(Sample::dropped(MS, 20)), 20, "never below min 20");
        let mut a = aimd(5, 5, 6);
        assert_eq!(a.update(Sample::success(MS, 5)), 6);
        assert_eq!(a.update(Sample::success(MS, 6)), 6);
        for _ in 0..10 {
            a.update(Sample::dropped(MS, 6));
        }
        assert_eq!(a.limit(), 5);
    }

    #[test]
    fn rtt_over_timeout_is_a_drop() {
        let mut a = Aimd::builder()
            .min_limit(1)
            .timeout(Duration::from_secs(1))
            .build()
            .unwrap();
        assert_eq!(a.update(Sample::success(Duration::from_secs(1), 20)), 21);
        assert_eq!(
            a.update(Sample::success(Duration::from_millis(1001), 20)),
            18
        );
    }

    #[test]
    fn fixed_latency_target() {
        let mut a = Aimd::builder()
            .min_limit(1)
            .latency_target(LatencyTarget::fixed(50 * MS))
            .build()
            .unwrap();
        assert_eq!(a.update(Sample::success(50 * MS, 20)), 21);
        assert_eq!(a.update(Sample::success(51 * MS, 20)), 18);
    }

    #[test]
    fn min_rtt_multiple_target() {
        let mut a = Aimd::builder()
            .min_limit(1)
            .latency_target(LatencyTarget::MinRttMultiple {
                multiple: 2.0,
                floor: MS,
                window: 4,
            })
            .build()
            .unwrap();
        assert_eq!(a.update(Sample::success(10 * MS, 20)), 21);
        assert_eq!(
            a.update(Sample::success(20 * MS, 20)),
            22,
            "exactly 2x is fine"
        );
        assert_eq!(
            a.update(Sample::success(21 * MS, 20)),
            19,
            "slower than 2x min"
        );
        assert_eq!(a.recent_min_rtt(), Some(10 * MS));
        // The minimum follows the backend after two windows without it.
        for _ in 0..8 {
            a.update(Sample::success(30 * MS, 20));
        }
        assert_eq!(a.recent_min_rtt(), Some(30 * MS));
        let before = a.limit();
        assert_eq!(
            a.update(Sample::success(40 * MS, 20)),
            before + 1,
            "under 2x the new min"
        );
    }

    #[test]
    fn min_rtt_floor_ignores_jitter_on_tiny_minimums() {
        let mut a = Aimd::builder()
            .min_limit(1)
            .latency_target(LatencyTarget::min_rtt_multiple(2.0))
            .build()
            .unwrap();
        let us = Duration::from_micros(1);
        assert_eq!(a.update(Sample::success(100 * us, 20)), 21);
        assert_eq!(
            a.update(Sample::success(900 * us, 20)),
            22,
            "within the 1 ms floor"
        );
        assert_eq!(a.update(Sample::success(1200 * us, 20)), 19);
    }

    #[test]
    fn per_limit_growth_adds_one_per_limit_of_successes() {
        let mut a = Aimd::builder()
            .min_limit(1)
            .initial_limit(4)
            .growth(Growth::PerLimit)
            .build()
            .unwrap();
        for _ in 0..3 {
            assert_eq!(a.update(Sample::success(MS, 4)), 4);
        }
        assert_eq!(a.update(Sample::success(MS, 4)), 5);
        // Idle samples do not count towards growth.
        for _ in 0..10 {
            assert_eq!(a.update(Sample::success(MS, 1)), 5);
        }
        for _ in 0..4 {
            a.update(Sample::success(MS, 5));
        }
        // A drop resets the count.
        assert_eq!(a.update(Sample::dropped(MS, 5)), 4);
        for _ in 0..3 {
            assert_eq!(a.update(Sample::success(MS, 4)), 4);
        }
        assert_eq!(a.update(Sample::success(MS, 4)), 5);
    }

    #[test]
    fn decrease_once_per_rtt_ignores_drops_admitted_before_the_last_decrease() {
        let mut a = Aimd::builder()
            .min_limit(1)
            .initial_limit(40)
            .decrease_once_per_rtt(true)
            .build()
            .unwrap();
        let at = |ms: u64| Duration::from_millis(ms);
        // Admitted at 0 ms, ended at 10 ms: a decrease.
        assert_eq!(a.update(Sample::dropped(at(10), 40).started_at(at(0))), 36);
        // Admitted before 10 ms: the same overload, not counted again.
        assert_eq!(a.update(Sample::dropped(at(10), 40).started_at(at(1))), 36);
        assert_eq!(a.update(Sample::dropped(at(2), 40).started_at(at(9))), 36);
        // Admitted after the decrease: a new overload.
        assert_eq!(a.update(Sample::dropped(at(10), 36).started_at(at(10))), 32);
        // Netflix's default counts every drop.
        let mut n = aimd(1, 40, 200);
        assert_eq!(n.update(Sample::dropped(at(10), 40)), 36);
        assert_eq!(n.update(Sample::dropped(at(10), 40).started_at(at(1))), 32);
    }

    #[test]
    fn builder_rejects_out_of_range() {
        let b = Aimd::builder;
        for (bad, field) in [
            (b().backoff_ratio(0.49), "backoff_ratio"),
            (b().backoff_ratio(1.0), "backoff_ratio"),
            (b().backoff_ratio(f64::NAN), "backoff_ratio"),
            (b().min_limit(0).initial_limit(0), "min_limit"),
            (b().max_limit(10), "max_limit"),
            (b().initial_limit(201), "initial_limit"),
            (b().initial_limit(19), "initial_limit"),
            (b().timeout(Duration::ZERO), "timeout"),
            (
                b().latency_target(LatencyTarget::fixed(Duration::ZERO)),
                "latency_target",
            ),
            (
                b().latency_target(LatencyTarget::min_rtt_multiple(1.0)),
                "latency_target",
            ),
        ] {
            assert_eq!(bad.build().unwrap_err().field(), field);
        }
        assert!(b().backoff_ratio(0.5).build().is_ok());
        assert!(Fixed::new(0).is_err());
        let mut f = Fixed::new(3).unwrap();
        assert_eq!(f.update(Sample::dropped(MS, 3)), 3);
    }
}
