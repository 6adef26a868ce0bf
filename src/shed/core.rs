//! The pure decision core: static thresholds, the adaptive admission level,
//! and the retry hint. No async, no Tower types: plain values fed
//! observations and asked for decisions, so every rule is tested with vectors.

use std::time::Duration;

use tokio::time::Instant;

use crate::{ConfigError, Priority, priority::Cohort, windowed_min::WindowedMin};

/// The number of admission slots: one per (priority, cohort) pair.
pub(crate) const SLOTS: u32 = (Priority::ALL.len() * Cohort::COUNT) as u32;

/// The width of one priority tier on the admission ladder.
const TIER: u32 = Cohort::COUNT as u32;

// ---------------------------------------------------------------------------
// Static mode
// ---------------------------------------------------------------------------

/// Static shedding: one load threshold per priority.
///
/// A request of priority `p` is admitted while the load signal reads below
/// `p`'s threshold, so as load grows the lowest tiers are refused first. A
/// tier without a threshold is never shed; by default that is
/// [`Critical`](Priority::Critical).
///
/// ```
/// use tower_spillway::{Priority, shed::Thresholds};
///
/// // Low below 5 in flight, Default below 20, High below 100, Critical always.
/// let t = Thresholds::ladder(100);
/// assert!(t.admits(Priority::Low, 4));
/// assert!(!t.admits(Priority::Low, 5));
/// assert!(t.admits(Priority::High, 99));
/// assert!(t.admits(Priority::Critical, 1_000_000));
///
/// let custom = Thresholds::builder().low(10).default(30).high(60).build()?;
/// assert_eq!(custom.limit(Priority::Default), Some(30));
/// # Ok::<(), tower_spillway::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Thresholds {
    /// Indexed by `Priority::index()`; `None` never sheds.
    limits: [Option<usize>; 4],
}

impl Thresholds {
    /// The default shape, a ladder topped by `high`: High is shed from a load
    /// of `high`, Default from a fifth of it, Low from a twentieth (each at
    /// least 1), and Critical never.
    ///
    /// It follows the classic queue-depth ladder (Low at 5 000, Default at
    /// 20 000, High at 100 000, Critical never): the cheapest work goes long
    /// before the service is anywhere near full, so the valuable work finds
    /// room.
    pub fn ladder(high: usize) -> Self {
        let high = high.max(1);
        Self {
            limits: [
                Some((high / 20).max(1)),
                Some((high / 5).max(1)),
                Some(high),
                None,
            ],
        }
    }

    /// Thresholds chosen one by one; every tier starts with none (never shed).
    pub fn builder() -> ThresholdsBuilder {
        ThresholdsBuilder { limits: [None; 4] }
    }

    /// The load from which `priority` is shed, or `None` if it never is.
    pub const fn limit(&self, priority: Priority) -> Option<usize> {
        self.limits[priority.index()]
    }

    /// `true` when a request of `priority` is admitted at `load`.
    #[inline]
    pub const fn admits(&self, priority: Priority, load: usize) -> bool {
        match self.limits[priority.index()] {
            Some(limit) => load < limit,
            None => true,
        }
    }

    /// The limit as a number the hot path compares with (`usize::MAX`: never).
    #[inline]
    pub(crate) const fn raw(&self, priority: Priority) -> usize {
        match self.limits[priority.index()] {
            Some(limit) => limit,
            None => usize::MAX,
        }
    }
}

/// `{"low": 5, "default": 20, "high": 100, "critical": null}`.
#[cfg(feature = "serde")]
impl serde::Serialize for Thresholds {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut s = serializer.serialize_struct("Thresholds", 4)?;
        for p in Priority::ALL {
            s.serialize_field(p.as_str(), &self.limit(p))?;
        }
        s.end()
    }
}

/// Builds [`Thresholds`]; see [`Thresholds::builder`].
#[derive(Debug, Clone)]
pub struct ThresholdsBuilder {
    limits: [Option<usize>; 4],
}

impl ThresholdsBuilder {
    /// Sheds `Low` requests from a load of `limit`.
    #[must_use]
    pub fn low(self, limit: usize) -> Self {
        self.set(Priority::Low, Some(limit))
    }

    /// Sheds `Default` requests from a load of `limit`.
    #[must_use]
    pub fn default(self, limit: usize) -> Self {
        self.set(Priority::Default, Some(limit))
    }

    /// Sheds `High` requests from a load of `limit`.
    #[must_use]
    pub fn high(self, limit: usize) -> Self {
        self.set(Priority::High, Some(limit))
    }

    /// Sheds even `Critical` requests from a load of `limit`. Without this
    /// they are never shed.
    #[must_use]
    pub fn critical(self, limit: usize) -> Self {
        self.set(Priority::Critical, Some(limit))
    }

    /// Sets (or, with `None`, removes) the threshold of any tier.
    #[must_use]
    pub fn set(mut self, priority: Priority, limit: Option<usize>) -> Self {
        self.limits[priority.index()] = limit;
        self
    }

    /// Checks that every threshold is at least 1 and that no tier is admitted
    /// at a load where a more valuable one is shed.
    pub fn build(self) -> Result<Thresholds, ConfigError> {
        if self.limits.iter().flatten().any(|&l| l == 0) {
            return Err(ConfigError::new(
                "thresholds",
                "a threshold must be at least 1",
            ));
        }
        let as_raw = |l: Option<usize>| l.unwrap_or(usize::MAX);
        if self
            .limits
            .windows(2)
            .any(|pair| as_raw(pair[0]) > as_raw(pair[1]))
        {
            return Err(ConfigError::new(
                "thresholds",
                "a lower priority must not have a higher threshold than a higher one",
            ));
        }
        Ok(Thresholds {
            limits: self.limits,
        })
    }
}

// ---------------------------------------------------------------------------
// Adaptive mode
// ---------------------------------------------------------------------------

/// The position of `(priority, cohort)` on the admission ladder, `0..512`:
/// Low cohort 0 is the bottom, Critical cohort 127 the top.
#[inline]
pub(crate) const fn rank(priority: Priority, cohort: Cohort) -> u32 {
    priority.index() as u32 * TIER + cohort.get() as u32
}

/// `true` when `(priority, cohort)` is admitted at admission `level`: the
/// `level` highest slots of the ladder are admitted, everything below the line
/// is shed. `level == 512` admits everything.
#[inline]
pub(crate) const fn admits_at(level: u32, priority: Priority, cohort: Cohort) -> bool {
    rank(priority, cohort) + level >= SLOTS
}

/// Settings of adaptive shedding; see [`Adaptive::builder`].
///
/// Adaptive shedding needs only a target delay. It keeps an *admission level*
/// over every (priority, cohort) pair, ordered from Critical's highest cohort
/// down to Low's lowest. Requests below the level are shed. At the end of
/// each window (a number of completed requests or a time, whichever comes
/// first) the level moves:
///
/// - **down, quickly** (the admitted part above the floor multiplied by
///   [`decrease`](AdaptiveBuilder::decrease)) when the queueing delay exceeded
///   the target: the load signal's queue delay when it has one (an adaptive
///   limiter's oldest waiter), or else the inflation of the window's fastest
///   response over the recent minimum. A delay measured now reflects what was
///   admitted one delay ago, so after a cut the level holds for that long,
///   and while the delay is already falling;
/// - **up, slowly** (by [`increase`](AdaptiveBuilder::increase) slots) when
///   the delay was within the target; and **fully, at once** when nothing
///   waits below (the signal's queue is empty, or the service is idle): the
///   overload is over, and calm traffic is not refused while the level
///   climbs back.
///
/// With a signal that forecasts its own refusals (an adaptive limiter's
/// handle), none of this applies: the layer refuses exactly the priorities
/// the signal says it refuses.
///
/// Shedding inside a tier is thus partial, and because the cut falls between
/// cohorts, the same callers are refused consistently while it holds.
///
/// ```
/// use std::time::Duration;
/// use tower_spillway::shed::Adaptive;
///
/// let adaptive = Adaptive::builder().target(Duration::from_millis(50)).build()?;
/// assert_eq!(adaptive.target(), Duration::from_millis(50));
/// assert_eq!(Adaptive::default().target(), Duration::from_millis(20));
/// # Ok::<(), tower_spillway::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Adaptive {
    target: Duration,
    window_requests: u32,
    window_time: Duration,
    decrease: f64,
    increase: u32,
    shed_critical: bool,
    baseline_period: Duration,
}

impl Default for Adaptive {
    /// Target 20 ms, windows of 100 requests or 100 ms, down ×0.75, up 4
    /// slots (1/32 of a tier), Critical never shed, a minimum latency
    /// remembered for 10–20 s.
    fn default() -> Self {
        Self {
            target: Duration::from_millis(20),
            window_requests: 100,
            window_time: Duration::from_millis(100),
            decrease: 0.75,
            increase: 4,
            shed_critical: false,
            baseline_period: Duration::from_secs(10),
        }
    }
}

impl Adaptive {
    /// A builder starting from the defaults.
    pub fn builder() -> AdaptiveBuilder {
        AdaptiveBuilder {
            config: Self::default(),
        }
    }

    /// The queueing delay the controller steers towards.
    pub const fn target(&self) -> Duration {
        self.target
    }

    /// The lowest level the controller may reach: all of Critical stays
    /// admitted unless `shed_critical`, and one slot always does.
    pub(crate) const fn min_level(&self) -> u32 {
        if self.shed_critical { 1 } else { TIER }
    }

    pub(crate) const fn window_requests(&self) -> u32 {
        self.window_requests
    }

    pub(crate) const fn window_time(&self) -> Duration {
        self.window_time
    }
}

/// Builds an [`Adaptive`] configuration.
#[derive(Debug, Clone)]
pub struct AdaptiveBuilder {
    config: Adaptive,
}

impl AdaptiveBuilder {
    /// The queueing delay to steer towards (default 20 ms). Must be non-zero.
    #[must_use]
    pub fn target(mut self, target: Duration) -> Self {
        self.config.target = target;
        self
    }

    /// A window ends after `requests` completions or `time`, whichever comes
    /// first (default 100 and 100 ms). Both must be non-zero.
    #[must_use]
    pub fn window(mut self, requests: u32, time: Duration) -> Self {
        self.config.window_requests = requests;
        self.config.window_time = time;
        self
    }

    /// The factor the level is multiplied by after a window over target
    /// (default 0.75). Must be within `0.1..1.0`.
    #[must_use]
    pub fn decrease(mut self, factor: f64) -> Self {
        self.config.decrease = factor;
        self
    }

    /// The number of slots (out of 128 per tier) the level rises after a
    /// window within target (default 4). Must be 1–128.
    #[must_use]
    pub fn increase(mut self, slots: u32) -> Self {
        self.config.increase = slots;
        self
    }

    /// Lets the level fall into the Critical tier (default: Critical is never
    /// shed).
    #[must_use]
    pub fn shed_critical(mut self, yes: bool) -> Self {
        self.config.shed_critical = yes;
        self
    }

    /// How long the minimum latency is remembered before it is measured
    /// afresh (default 10 s; it covers between one and two periods). Must be
    /// at least the window time.
    #[must_use]
    pub fn baseline_period(mut self, period: Duration) -> Self {
        self.config.baseline_period = period;
        self
    }

    /// Validates the settings.
    pub fn build(self) -> Result<Adaptive, ConfigError> {
        let c = self.config;
        if c.target.is_zero() {
            return Err(ConfigError::new("target", "must be non-zero"));
        }
        if c.window_requests == 0 || c.window_time.is_zero() {
            return Err(ConfigError::new(
                "window",
                "requests and time must be non-zero",
            ));
        }
        if !(0.1..1.0).contains(&c.decrease) {
            return Err(ConfigError::new("decrease", "must be within 0.1..1.0"));
        }
        if !(1..=TIER).contains(&c.increase) {
            return Err(ConfigError::new("increase", "must be within 1..=128"));
        }
        if c.baseline_period < c.window_time {
            return Err(ConfigError::new(
                "baseline_period",
                "must be at least the window time",
            ));
        }
        Ok(c)
    }
}

/// What the service observed during one window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Window {
    /// The fastest response of the window, if any completed.
    pub(crate) min_latency: Option<Duration>,
    /// The load signal's own queueing delay at the window's end, if it has one.
    pub(crate) queue_delay: Option<Duration>,
    /// Requests admitted and still running at the window's end.
    pub(crate) in_flight: usize,
}

/// How a window moved the level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Movement {
    /// Not enough information: the level stays.
    Held,
    /// Over target: the level fell (or stayed at its floor).
    Down { from: u32, to: u32 },
    /// Within target: the level rose (or stayed at the top).
    Up { from: u32, to: u32 },
}

/// The adaptive controller: fed one [`Window`] at a time, it moves the
/// admission level.
#[derive(Debug, Clone)]
pub(crate) struct Controller {
    config: Adaptive,
    level: u32,
    baseline: WindowedMin<Instant>,
    last_delay: Option<Duration>,
    hold_until: Option<Instant>,
}

impl Controller {
    pub(crate) fn new(config: Adaptive) -> Self {
        Self {
            config,
            level: SLOTS,
            baseline: WindowedMin::new(config.baseline_period),
            last_delay: None,
            hold_until: None,
        }
    }

    pub(crate) const fn level(&self) -> u32 {
        self.level
    }

    /// The queueing delay measured in the last informative window.
    pub(crate) const fn last_delay(&self) -> Option<Duration> {
        self.last_delay
    }

    /// The recent minimum latency, in latency-inflation mode.
    pub(crate) fn baseline(&self) -> Option<Duration> {
        self.baseline.get()
    }

    /// Moves the level after a window ending at `now`.
    pub(crate) fn on_window(&mut self, window: &Window, now: Instant) -> Movement {
        let delay = if let Some(queue) = window.queue_delay {
            queue
        } else if let Some(min) = window.min_latency {
            self.baseline.observe(min, now);
            let base = self.baseline.get().unwrap_or(min);
            min.saturating_sub(base)
        } else if window.in_flight == 0 {
            // Nothing ran and nothing waits: the service is idle.
            Duration::ZERO
        } else {
            // Work is running but none finished: no evidence either way.
            return Movement::Held;
        };
        let previous = self.last_delay.replace(delay);
        let from = self.level;
        if delay > self.config.target {
            // Over target but clearly falling: the queue is already draining
            // after an earlier cut. Cutting again would overshoot.
            if previous.is_some_and(|p| delay < p.mul_f64(0.9)) {
                return Movement::Held;
            }
            // The delay measured now reflects admissions made up to one
            // delay ago: after a cut, wait that long to see its effect.
            if self.hold_until.is_some_and(|until| now < until) {
                return Movement::Held;
            }
            let wait = delay.min(self.config.window_time.saturating_mul(10));
            self.hold_until = Some(crate::time::after(now, wait));
            // The admitted range above the floor shrinks by the factor.
            let min = self.config.min_level();
            let above = f64::from(from.saturating_sub(min)) * self.config.decrease;
            let to = (min + above as u32).min(from.saturating_sub(1)).max(min);
            self.level = to;
            Movement::Down { from, to }
        } else {
            // Nothing waits below (an empty queue, or an idle service): the
            // overload is over, and everything is admitted again at once.
            // Should it come back, the next window over target cuts again;
            // holding the level would refuse calm traffic for many windows.
            let empty = match window.queue_delay {
                Some(queue) => queue.is_zero(),
                None => window.min_latency.is_none() && window.in_flight == 0,
            };
            let step = if empty { SLOTS } else { self.config.increase };
            let to = (from + step).min(SLOTS);
            self.level = to;
            Movement::Up { from, to }
        }
    }
}

// ---------------------------------------------------------------------------
// Retry hint
// ---------------------------------------------------------------------------

/// How long the current backlog takes to drain at the measured completion
/// rate, clamped to `[1 s, cap]`. Without a measured rate yet, 1 s; with a
/// backlog that nothing drains, the cap.
pub(crate) fn drain_time(backlog: usize, rate_per_sec: Option<f64>, cap: Duration) -> Duration {
    const FLOOR: Duration = Duration::from_secs(1);
    let cap = cap.max(FLOOR);
    let raw = match rate_per_sec {
        None => FLOOR,
        Some(r) if r > 0.0 && r.is_finite() => {
            Duration::try_from_secs_f64(backlog as f64 / r).unwrap_or(cap)
        }
        Some(_) if backlog == 0 => FLOOR,
        Some(_) => cap,
    };
    raw.clamp(FLOOR, cap)
}

/// Measures the completion rate from a monotonic completion count, at most
/// once per interval, smoothing successive measurements.
#[derive(Debug, Clone)]
pub(crate) struct RateMeter {
    at: Option<Instant>,
    count: u64,
    rate: Option<f64>,
}

impl RateMeter {
    /// The shortest interval a measurement covers.
    pub(crate) const INTERVAL: Duration = Duration::from_millis(200);

    pub(crate) const fn new() -> Self {
        Self {
            at: None,
            count: 0,
            rate: None,
        }
    }

    /// Completions per second, updated when `now` is an interval past the
    /// last measurement and `completions` is the running total.
    pub(crate) fn observe(&mut self, now: Instant, completions: u64) -> Option<f64> {
        match self.at {
            None => {
                self.at = Some(now);
                self.count = completions;
            }
            Some(at) => {
                let elapsed = now.saturating_duration_since(at);
                if elapsed >= Self::INTERVAL {
                    let done = completions.saturating_sub(self.count) as f64;
                    let measured = done / elapsed.as_secs_f64();
                    self.rate = Some(match self.rate {
                        Some(old) => 0.5 * old + 0.5 * measured,
                        None => measured,
                    });
                    self.at = Some(now);
                    self.count = completions;
                }
            }
        }
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(n: u8) -> Cohort {
        Cohort::new(n).unwrap()
    }

    #[test]
    fn ladder_vectors() {
        // (high, [low, default, high])
        for (high, expect) in [
            (100, [5, 20, 100]),
            (100_000, [5_000, 20_000, 100_000]),
            (10, [1, 2, 10]),
            (0, [1, 1, 1]),
        ] {
            let t = Thresholds::ladder(high);
            let got =
                [Priority::Low, Priority::Default, Priority::High].map(|p| t.limit(p).unwrap());
            assert_eq!(got, expect, "ladder({high})");
            assert_eq!(t.limit(Priority::Critical), None);
        }
    }

    #[test]
    fn threshold_decisions() {
        let t = Thresholds::ladder(100);
        // (priority, load, admitted)
        let vectors = [
            (Priority::Low, 0, true),
            (Priority::Low, 4, true),
            (Priority::Low, 5, false),
            (Priority::Default, 5, true),
            (Priority::Default, 19, true),
            (Priority::Default, 20, false),
            (Priority::High, 99, true),
            (Priority::High, 100, false),
            (Priority::Critical, 1 << 40, true),
        ];
        for (p, load, admitted) in vectors {
            assert_eq!(t.admits(p, load), admitted, "{p} at {load}");
            assert_eq!(load < t.raw(p), admitted);
        }
    }

    #[test]
    fn lower_tiers_always_go_first() {
        let t = Thresholds::ladder(1_000);
        for load in 0..1_200 {
            let admitted: Vec<bool> = Priority::ALL.iter().map(|&p| t.admits(p, load)).collect();
            // Admission is monotone in priority: once a tier is admitted, so is
            // every higher one.
            assert!(
                admitted.windows(2).all(|w| !w[0] || w[1]),
                "{load}: {admitted:?}"
            );
        }
    }

    #[test]
    fn builder_validates() {
        assert!(Thresholds::builder().low(0).build().is_err());
        assert!(Thresholds::builder().low(50).default(20).build().is_err());
        // A lower tier without a limit while a higher one has one is inverted.
        assert!(Thresholds::builder().high(10).build().is_err());
        let t = Thresholds::builder()
            .low(1)
            .default(2)
            .high(3)
            .critical(4)
            .build()
            .unwrap();
        assert!(!t.admits(Priority::Critical, 4));
        let never = Thresholds::builder().build().unwrap();
        assert!(never.admits(Priority::Low, usize::MAX - 1));
    }

    #[test]
    fn ranks_and_levels() {
        assert_eq!(rank(Priority::Low, c(0)), 0);
        assert_eq!(rank(Priority::Low, c(127)), 127);
        assert_eq!(rank(Priority::Default, c(0)), 128);
        assert_eq!(rank(Priority::Critical, c(127)), 511);
        // (level, priority, cohort, admitted)
        let vectors = [
            (SLOTS, Priority::Low, 0, true),
            (SLOTS - 1, Priority::Low, 0, false),
            (SLOTS - 1, Priority::Low, 1, true),
            (384, Priority::Low, 127, false),
            (384, Priority::Default, 0, true),
            (300, Priority::Default, 83, false),
            (300, Priority::Default, 84, true),
            (128, Priority::High, 127, false),
            (128, Priority::Critical, 0, true),
            (1, Priority::Critical, 126, false),
            (1, Priority::Critical, 127, true),
        ];
        for (level, p, n, admitted) in vectors {
            assert_eq!(admits_at(level, p, c(n)), admitted, "level {level} {p}/{n}");
        }
    }

    #[test]
    fn cohort_selection_is_consistent_within_a_tier() {
        // At any level the admitted cohorts of a partly shed tier are exactly
        // the top ones: the same callers are refused while the level holds.
        for level in 0..=SLOTS {
            for p in Priority::ALL {
                let admitted: Vec<u8> = (0..128u8).filter(|&n| admits_at(level, p, c(n))).collect();
                if let Some(&first) = admitted.first() {
                    assert_eq!(admitted.len(), 128 - usize::from(first));
                }
            }
        }
    }

    fn window(min_ms: Option<u64>, queue_ms: Option<u64>, in_flight: usize) -> Window {
        Window {
            min_latency: min_ms.map(Duration::from_millis),
            queue_delay: queue_ms.map(Duration::from_millis),
            in_flight,
        }
    }

    #[test]
    fn level_moves_down_fast_and_up_slowly() {
        let t0 = Instant::now();
        let mut n = 0u32;
        let mut now = move || {
            n += 1;
            t0 + Duration::from_secs(u64::from(n))
        };
        let mut ctl = Controller::new(Adaptive::default());
        assert_eq!(ctl.level(), 512);
        // Queue delay over the 20 ms target: ×0.75 per window.
        let over = window(None, Some(50), 10);
        let downs: Vec<u32> = (0..4)
            .map(|_| match ctl.on_window(&over, now()) {
                Movement::Down { to, .. } => to,
                m => panic!("{m:?}"),
            })
            .collect();
        assert_eq!(downs, [416, 344, 290, 249]);
        // Within target: +4 per window.
        let under = window(None, Some(5), 10);
        assert_eq!(
            ctl.on_window(&under, now()),
            Movement::Up { from: 249, to: 253 }
        );
        assert_eq!(
            ctl.on_window(&under, now()),
            Movement::Up { from: 253, to: 257 }
        );
        // Exactly at target is within target.
        assert_eq!(
            ctl.on_window(&window(None, Some(20), 1), now()),
            Movement::Up { from: 257, to: 261 }
        );
    }

    #[test]
    fn admission_opens_fully_once_the_queue_empties() {
        let t0 = Instant::now();
        let mut ctl = Controller::new(Adaptive::default());
        let over = window(None, Some(50), 10);
        for i in 0..8 {
            ctl.on_window(&over, t0 + Duration::from_secs(i));
        }
        let low = ctl.level();
        assert!(low < 200, "{low}");
        // One window with the queue empty: everything is admitted again.
        let calm = window(None, Some(0), 10);
        assert_eq!(
            ctl.on_window(&calm, t0 + Duration::from_secs(10)),
            Movement::Up {
                from: low,
                to: SLOTS
            }
        );
        // A window merely within target steps slowly again.
        let mut ctl = Controller::new(Adaptive::default());
        for i in 0..8 {
            ctl.on_window(&over, t0 + Duration::from_secs(i));
        }
        let from = ctl.level();
        let within = window(None, Some(10), 10);
        assert_eq!(
            ctl.on_window(&within, t0 + Duration::from_secs(20)),
            Movement::Up { from, to: from + 4 }
        );
    }

    #[test]
    fn over_target_but_draining_holds() {
        let t0 = Instant::now();
        let mut n = 0u32;
        let mut now = move || {
            n += 1;
            t0 + Duration::from_secs(u64::from(n))
        };
        let mut ctl = Controller::new(Adaptive::default());
        assert!(matches!(
            ctl.on_window(&window(None, Some(200), 1), now()),
            Movement::Down { .. }
        ));
        // Still over target, but 25 % lower than the last window: hold.
        assert_eq!(
            ctl.on_window(&window(None, Some(150), 1), now()),
            Movement::Held
        );
        // Falling only a little is not draining: cut again.
        assert!(matches!(
            ctl.on_window(&window(None, Some(140), 1), now()),
            Movement::Down { .. }
        ));
        assert!(matches!(
            ctl.on_window(&window(None, Some(10), 1), now()),
            Movement::Up { .. }
        ));
    }

    #[test]
    fn after_a_cut_the_level_waits_one_delay() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut ctl = Controller::new(Adaptive::default());
        // 300 ms over the target: cut, then hold until 300 ms have passed.
        let over = window(None, Some(300), 1);
        assert!(matches!(ctl.on_window(&over, t0), Movement::Down { .. }));
        assert_eq!(ctl.on_window(&over, t0 + ms(100)), Movement::Held);
        assert_eq!(ctl.on_window(&over, t0 + ms(200)), Movement::Held);
        assert!(matches!(
            ctl.on_window(&over, t0 + ms(300)),
            Movement::Down { .. }
        ));
        // Rising is never held.
        assert!(matches!(
            ctl.on_window(&window(None, Some(1), 1), t0 + ms(301)),
            Movement::Up { .. }
        ));
    }

    #[test]
    fn critical_is_kept_unless_configured() {
        let t0 = Instant::now();
        let mut n = 0u32;
        let mut now = move || {
            n += 1;
            t0 + Duration::from_secs(u64::from(n))
        };
        let mut ctl = Controller::new(Adaptive::default());
        for _ in 0..100 {
            ctl.on_window(&window(None, Some(500), 1), now());
        }
        assert_eq!(ctl.level(), 128);
        assert!(admits_at(ctl.level(), Priority::Critical, c(0)));
        assert!(!admits_at(ctl.level(), Priority::High, c(127)));

        let cfg = Adaptive::builder().shed_critical(true).build().unwrap();
        let mut ctl = Controller::new(cfg);
        for _ in 0..100 {
            ctl.on_window(&window(None, Some(500), 1), now());
        }
        assert_eq!(ctl.level(), 1);
        assert!(!admits_at(ctl.level(), Priority::Critical, c(0)));
    }

    #[test]
    fn latency_inflation_over_recent_minimum() {
        let t0 = Instant::now();
        let mut ctl = Controller::new(Adaptive::default());
        // 10 ms baseline: within target.
        assert!(matches!(
            ctl.on_window(&window(Some(10), None, 5), t0),
            Movement::Up { .. }
        ));
        assert_eq!(ctl.baseline(), Some(Duration::from_millis(10)));
        // 25 ms fastest response: 15 ms inflation, within the 20 ms target.
        assert!(matches!(
            ctl.on_window(&window(Some(25), None, 5), t0),
            Movement::Up { .. }
        ));
        assert_eq!(ctl.last_delay(), Some(Duration::from_millis(15)));
        // 40 ms: 30 ms inflation, over target.
        assert!(matches!(
            ctl.on_window(&window(Some(40), None, 5), t0),
            Movement::Down { .. }
        ));
        // A queue delay, when the signal has one, wins over latency.
        assert!(matches!(
            ctl.on_window(&window(Some(40), Some(1), 5), t0),
            Movement::Up { .. }
        ));
    }

    #[test]
    fn baseline_is_forgotten_after_two_periods() {
        let t0 = Instant::now();
        let mut ctl = Controller::new(Adaptive::default());
        ctl.on_window(&window(Some(5), None, 1), t0);
        let later = t0 + Duration::from_secs(11);
        ctl.on_window(&window(Some(50), None, 1), later);
        assert_eq!(ctl.baseline(), Some(Duration::from_millis(5)));
        let much_later = t0 + Duration::from_secs(22);
        ctl.on_window(&window(Some(50), None, 1), much_later);
        assert_eq!(ctl.baseline(), Some(Duration::from_millis(50)));
    }

    #[test]
    fn empty_windows() {
        let now = Instant::now();
        let mut ctl = Controller::new(Adaptive::default());
        ctl.on_window(&window(None, Some(100), 1), now);
        let level = ctl.level();
        // Work in flight but nothing finished: hold.
        assert_eq!(ctl.on_window(&window(None, None, 3), now), Movement::Held);
        assert_eq!(ctl.level(), level);
        // Idle: recover.
        assert!(matches!(
            ctl.on_window(&window(None, None, 0), now),
            Movement::Up { .. }
        ));
    }

    #[test]
    fn adaptive_config_is_validated() {
        assert!(Adaptive::builder().target(Duration::ZERO).build().is_err());
        assert!(
            Adaptive::builder()
                .window(0, Duration::from_millis(1))
                .build()
                .is_err()
        );
        assert!(
            Adaptive::builder()
                .window(1, Duration::ZERO)
                .build()
                .is_err()
        );
        assert!(Adaptive::builder().decrease(1.0).build().is_err());
        assert!(Adaptive::builder().decrease(f64::NAN).build().is_err());
        assert!(Adaptive::builder().increase(0).build().is_err());
        assert!(Adaptive::builder().increase(129).build().is_err());
        assert!(
            Adaptive::builder()
                .baseline_period(Duration::from_millis(10))
                .build()
                .is_err()
        );
        assert!(
            Adaptive::builder()
                .decrease(0.5)
                .increase(128)
                .build()
                .is_ok()
        );
    }

    #[test]
    fn drain_time_vectors() {
        let cap = Duration::from_secs(30);
        // (backlog, rate, expected)
        let vectors = [
            (100, None, Duration::from_secs(1)),
            (100, Some(1000.0), Duration::from_secs(1)),
            (5_000, Some(1000.0), Duration::from_secs(5)),
            (2_500, Some(1000.0), Duration::from_millis(2500)),
            (1_000_000, Some(10.0), cap),
            (10, Some(0.0), cap),
            (0, Some(0.0), Duration::from_secs(1)),
            (10, Some(f64::NAN), cap),
        ];
        for (backlog, rate, expected) in vectors {
            assert_eq!(
                drain_time(backlog, rate, cap),
                expected,
                "{backlog} at {rate:?}"
            );
        }
        // A cap below the floor never yields less than a second.
        assert_eq!(
            drain_time(1, Some(0.0), Duration::ZERO),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn rate_meter_measures_and_smooths() {
        let t0 = Instant::now();
        let mut m = RateMeter::new();
        assert_eq!(m.observe(t0, 0), None);
        // Too soon for a measurement.
        assert_eq!(m.observe(t0 + Duration::from_millis(100), 50), None);
        assert_eq!(
            m.observe(t0 + Duration::from_millis(500), 500),
            Some(1000.0)
        );
        // 200 more in 0.5 s is 400/s; smoothed with 1000/s.
        assert_eq!(m.observe(t0 + Duration::from_secs(1), 700), Some(700.0));
        assert_eq!(
            m.observe(t0 + Duration::from_millis(1100), 800),
            Some(700.0)
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        fn priority() -> impl Strategy<Value = Priority> {
            (0usize..4).prop_map(|i| Priority::ALL[i])
        }

        proptest! {
            #[test]
            fn valid_thresholds_never_admit_a_lower_tier_alone(
                limits in proptest::collection::vec(proptest::option::of(1usize..1_000), 4),
                load in 0usize..1_200,
            ) {
                let mut b = Thresholds::builder();
                for (p, l) in Priority::ALL.iter().zip(&limits) {
                    b = b.set(*p, *l);
                }
                if let Ok(t) = b.build() {
                    let admitted: Vec<bool> = Priority::ALL.iter().map(|&p| t.admits(p, load)).collect();
                    prop_assert!(admitted.windows(2).all(|w| !w[0] || w[1]), "{:?}", admitted);
                }
            }

            #[test]
            fn a_higher_slot_is_admitted_whenever_a_lower_one_is(
                level in 0u32..=SLOTS,
                (p1, c1) in (priority(), 0u8..128),
                (p2, c2) in (priority(), 0u8..128),
            ) {
                let (a, b) = (Cohort::new(c1).unwrap(), Cohort::new(c2).unwrap());
                if rank(p1, a) <= rank(p2, b) && admits_at(level, p1, a) {
                    prop_assert!(admits_at(level, p2, b));
                }
            }

            #[test]
            fn the_level_stays_in_bounds_and_keeps_critical(
                windows in proptest::collection::vec(
                    (proptest::option::of(0u64..500), proptest::option::of(0u64..500), 0usize..3, 0u64..300),
                    1..200,
                ),
                shed_critical in any::<bool>(),
            ) {
                let config = Adaptive::builder().shed_critical(shed_critical).build().unwrap();
                let mut ctl = Controller::new(config);
                let mut now = Instant::now();
                for (min, queue, in_flight, step) in windows {
                    now += Duration::from_millis(step);
                    let w = Window {
                        min_latency: min.map(Duration::from_millis),
                        queue_delay: queue.map(Duration::from_millis),
                        in_flight,
                    };
                    let before = ctl.level();
                    match ctl.on_window(&w, now) {
                        Movement::Down { from, to } => prop_assert!(to < from || to == config.min_level(), "{from} -> {to}"),
                        Movement::Up { from, to } => prop_assert!(to >= from && from == before),
                        Movement::Held => prop_assert_eq!(ctl.level(), before),
                    }
                    prop_assert!(ctl.level() >= config.min_level() && ctl.level() <= SLOTS);
                    if !shed_critical {
                        prop_assert!(admits_at(ctl.level(), Priority::Critical, Cohort::new(0).unwrap()));
                    }
                }
            }
        }
    }
}
