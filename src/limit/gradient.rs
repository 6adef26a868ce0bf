//! [`Gradient`]: a delay-gradient limit whose latency baseline cannot follow a
//! standing queue up.
//!
//! A limit that learns from latency needs to know what the backend's latency
//! is *without* a queue. A minimum over the last few hundred samples is not
//! that once a queue stands inside the backend: every sample is then slow, the
//! "minimum" is the queueing delay itself, and the limit grows into the
//! overload it should be measuring. `Gradient` keeps the two apart:
//!
//! - it decides once per **window**: about a limit's worth of samples (one
//!   round trip's completions) admitted after the previous decision, so
//!   always on requests that ran under the limit being judged;
//! - a window's statistic is its **mean** rtt: by Little's law the limit over
//!   the throughput, which grows with every request that queues in the
//!   backend (the fastest request of a window may have found a free slot);
//! - the **baseline** is the least window mean over a long horizon (one to
//!   two `baseline_period`s, 10–20 s by default), far longer than the round
//!   trips an overload is answered in. Because every congested window cuts
//!   the limit *below* the knee (by the ratio baseline / window), the windows
//!   that follow run without a queue and refresh the baseline with the real
//!   figure: the baseline never drifts up under a sustained overload. It is
//!   only accepted higher when the limit has sat at its floor and the backend
//!   is still slow (Envoy's gradient controller measures its minimum at the
//!   floor for the same reason): the backend itself got slower;
//! - a window counts as congested only when it is slower than the baseline by
//!   more than the host's own noise: the tolerance, and three times the
//!   jitter measured on windows with nothing queued behind the limit; and
//!   only when two windows in a row say so, unless one is far beyond it;
//! - until the first congestion, a saturated window grows the limit by half
//!   (slow start, as TCP does), so a backend of any size is found within a few
//!   round trips; afterwards by a small fraction of the limit per window. An
//!   unsaturated window lets unused headroom decay to twice the peak in
//!   flight, so a spike never opens on a limit far above anything measured.

use std::time::Duration;

use super::{Algorithm, Sample};
use crate::windowed_min::WindowedMin;

/// A delay-gradient concurrency limit with a long-horizon latency baseline;
/// the default algorithm for servers.
///
/// Once per window (about a limit's worth of requests admitted after the
/// previous decision; at least 3, at most `window_samples`):
///
/// - a **drop** in the window (an overload answer, an error, an rtt over the
///   timeout) multiplies the limit by `backoff` (0.9);
/// - a window whose mean rtt exceeds the baseline by more than the slack
///   (10 % of it, at least 1 ms, at least three times the host's jitter) is
///   **slow**; two slow windows in a row, or one slower by over four times
///   the slack, are **congested**: the limit is multiplied by baseline /
///   mean (at most 0.95, at least 0.5), which is where the queue it saw
///   would be gone;
/// - a window that was **saturated** (a request was admitted with the whole
///   limit in flight) and not slow grows the limit: by half during slow
///   start, by 2 % (at least half a request) afterwards;
/// - an unsaturated window leaves the limit where it is, but no higher than
///   twice the peak in flight (and at least 4): unused headroom is not
///   capacity anyone measured.
///
/// The limit is moved in fractions of a request and admits its value
/// rounded to the nearest whole one, so that every cut and every step is the
/// same share of a small limit as of a large one. Instances of a fleet that
/// share one backend each hold a few of its slots; with whole numbers, a
/// congested window cut 2 to 1 (half) while it cut 8 to 7 (an eighth), and
/// an instance pushed down to 1 or 2 stayed there while the others held the
/// rest.
///
/// Defaults: initial 10, min 1, max 1000, backoff 0.9, timeout 5 s, windows
/// of at most 200 samples, tolerance 10 % (at least 1 ms), baseline period
/// 10 s.
///
/// ```
/// use std::time::Duration;
/// use tower_spillway::limit::{Algorithm, Gradient, Sample};
///
/// let ms = Duration::from_millis(1);
/// let mut g = Gradient::builder().window_samples(2).build()?;
/// assert_eq!(g.limit(), 10);
/// // Two saturated, uncongested samples: slow start grows the limit by half.
/// g.update(Sample::success(20 * ms, 10));
/// assert_eq!(g.update(Sample::success(20 * ms, 10).started_at(ms)), 15);
/// # Ok::<(), tower_spillway::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Gradient {
    config: GradientBuilder,
    /// The limit as the control law moves it, in fractions of a request;
    /// the limit admitted is it rounded to the nearest ([`Algorithm::limit`]). Cutting and growing a whole
    /// number would bias against small limits: 2 × 0.9 floored is 1, a cut
    /// of half, while 8 × 0.9 floored is 7, an eighth. Instances sharing a
    /// backend, each holding a few slots of it, would then not converge on
    /// equal shares: the one cut to 1 or 2 stays there.
    estimate: f64,
    slow_start: bool,
    window: Window,
    /// The least window mean over the current and the previous period.
    baseline: WindowedMin<Duration>,
    /// Congested windows in a row with the limit at its floor.
    floor_streak: u32,
    /// The previous window's mean, when it was slow.
    slow: Option<Duration>,
    /// How far above the baseline unsaturated windows run: the host's noise.
    jitter: Duration,
}

/// The samples of the window being gathered.
#[derive(Debug, Clone, Copy, Default)]
struct Window {
    /// Samples admitted before this are from an earlier limit: ignored.
    opened: Duration,
    count: u32,
    /// Sum and count of the rtts of the samples that were not drops.
    rtt_sum: Duration,
    rtt_count: u32,
    drops: u32,
    saturated: bool,
    /// The most requests in flight any of its samples was admitted with.
    peak: usize,
    /// The latest end among the window's samples: the next window opens there.
    last_end: Duration,
}

impl Window {
    /// The mean rtt of the window's successful samples. The mean, not the
    /// fastest: a backend of many slots queues only the requests beyond its
    /// slots, so the fastest request of a congested window may not have
    /// queued at all, while the mean is the limit over the throughput
    /// (Little's law) and grows with every request queued.
    fn mean(&self) -> Option<Duration> {
        (self.rtt_count > 0).then(|| self.rtt_sum / self.rtt_count)
    }
}

impl Default for Gradient {
    fn default() -> Self {
        Self::from_config(GradientBuilder::default())
    }
}

impl Gradient {
    fn from_config(config: GradientBuilder) -> Self {
        Gradient {
            estimate: config.initial as f64,
            slow_start: true,
            window: Window::default(),
            baseline: WindowedMin::new(config.baseline_period),
            floor_streak: 0,
            slow: None,
            jitter: Duration::ZERO,
            config,
        }
    }

    /// A builder starting from the defaults.
    pub fn builder() -> GradientBuilder {
        GradientBuilder::default()
    }

    /// The latency the backend has without a queue, as far as the samples
    /// have shown; `None` before the first window.
    pub fn baseline(&self) -> Option<Duration> {
        self.baseline.get()
    }

    /// `true` until the first congested or dropped window.
    pub fn in_slow_start(&self) -> bool {
        self.slow_start
    }

    /// How far over `base` a window may be before it is slow.
    fn slack(&self, base: Duration) -> Duration {
        crate::time::mul(base, self.config.tolerance)
            .max(self.config.tolerance_floor)
            .max(self.jitter * 3)
    }

    /// Ends the window: moves the limit and opens the next one.
    fn decide(&mut self) {
        let w = std::mem::take(&mut self.window);
        self.window.opened = w.last_end;
        let c = &self.config;
        let limit = self.estimate;
        let slow = self.slow.take();
        let next = if w.drops > 0 {
            self.slow_start = false;
            self.floor_streak = 0;
            limit * c.backoff
        } else if let Some(mean) = w.mean() {
            self.baseline.observe(mean, w.last_end);
            let base = self.baseline.get().unwrap_or(mean);
            let excess = mean.saturating_sub(base);
            if !w.saturated {
                // Nothing queued behind this limit: what the window's mean
                // lost to the baseline is the host's own noise (timers,
                // scheduling), which a queue must stand clear of.
                // A window far slower (a backend slower at any concurrency)
                // is not noise: it weighs in at most as twice the slack.
                let noise = excess.min(self.slack(base) * 2);
                self.jitter =
                    self.jitter.mul_f64(1.0 - JITTER_WEIGHT) + noise.mul_f64(JITTER_WEIGHT);
            }
            let slack = self.slack(base);
            if excess <= slack {
                self.floor_streak = 0;
                if w.saturated {
                    if self.slow_start {
                        (limit * 1.5).max(limit + 1.0)
                    } else {
                        limit + (limit * c.growth).max(GROWTH_FLOOR)
                    }
                } else {
                    // Unused headroom is not capacity anyone measured: keep
                    // at most twice what is used (and at least 4), so a
                    // spike does not open on a limit far above the backend.
                    let used = (2 * w.peak).max(HEADROOM_FLOOR) as f64;
                    if limit > used {
                        (limit * 0.9).max(used)
                    } else {
                        limit
                    }
                }
            } else if slow.is_some() || excess > slack * 4 {
                // Two slow windows in a row, or one far beyond any noise: a
                // queue, not a hiccup. Cut to where the lesser of the two
                // queues would be gone.
                let evidence = slow.map_or(mean, |before| mean.min(before));
                self.slow_start = false;
                if self.limit() <= c.min {
                    self.floor_streak += 1;
                    if self.floor_streak >= FLOOR_WINDOWS {
                        // Nothing left to cut and still slow: the backend
                        // itself got slower. Its new speed is the baseline.
                        self.baseline.reset(evidence, w.last_end);
                        self.floor_streak = 0;
                    }
                }
                let ratio = base.as_secs_f64() / evidence.as_secs_f64().max(f64::MIN_POSITIVE);
                limit * ratio.clamp(0.5, 0.95)
            } else {
                // One slow window: hold, and see whether the next one is too.
                self.slow = Some(mean);
                limit
            }
        } else {
            limit
        };
        self.estimate = next.clamp(c.min as f64, c.max as f64);
    }
}

/// The least a saturated window grows the limit by after slow start, in
/// requests. Half a request, not one: a whole request is a quarter of a
/// limit of 4, and instances of a fleet, each holding a few of a backend's
/// slots, all adding one per round trip overran it together (sixteen
/// instances over 40 slots held 1.21–1.23 × the slots; with half a request,
/// 1.09–1.15).
const GROWTH_FLOOR: f64 = 0.5;

/// The least limit an unsaturated window decays towards.
const HEADROOM_FLOOR: usize = 4;

/// The weight of the newest window in the jitter's moving average.
const JITTER_WEIGHT: f64 = 0.125;

/// Congested windows at the floor after which a slower baseline is accepted.
const FLOOR_WINDOWS: u32 = 3;

impl Algorithm for Gradient {
    fn limit(&self) -> usize {
        let c = &self.config;
        // The epsilon rounds 2.5 up whatever the arithmetic that made it.
        ((self.estimate + 1e-9).round() as usize).clamp(c.min, c.max)
    }

    fn update(&mut self, sample: Sample) -> usize {
        // A request admitted before the last decision ran under another
        // limit: it says nothing about this one.
        let limit = self.limit();
        if sample.start < self.window.opened {
            return limit;
        }
        let end = sample.start.saturating_add(sample.rtt);
        let w = &mut self.window;
        w.count += 1;
        w.last_end = w.last_end.max(end);
        if sample.dropped || sample.rtt > self.config.timeout {
            w.drops += 1;
        } else {
            w.rtt_sum = w.rtt_sum.saturating_add(sample.rtt);
            w.rtt_count += 1;
        }
        w.saturated |= sample.in_flight >= limit;
        w.peak = w.peak.max(sample.in_flight);
        // About a round trip's worth of samples (a limit's worth complete
        // per round trip): fewer would be only the fastest requests of the
        // window, the ones that found the backend free. At least 3, at most
        // `window_samples`.
        let wanted = u32::try_from(limit).unwrap_or(u32::MAX).max(3);
        if w.count >= wanted.min(self.config.window_samples) {
            self.decide();
        }
        self.limit()
    }
}

mod builder;
#[cfg(test)]
mod tests;

pub use builder::GradientBuilder;
