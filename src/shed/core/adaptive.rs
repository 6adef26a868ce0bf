//! Adaptive shedding: an admission level over (priority, cohort), moved by
//! the queueing delay each window.

use std::time::Duration;

use tokio::time::Instant;

use crate::{ConfigError, Priority, priority::Cohort, windowed_min::WindowedMin};

/// The number of admission slots: one per (priority, cohort) pair.
pub(crate) const SLOTS: u32 = (Priority::ALL.len() * Cohort::COUNT) as u32;

/// The width of one priority tier on the admission ladder.
const TIER: u32 = Cohort::COUNT as u32;

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

#[cfg(test)]
mod tests;
