//! The handle on a level, and how it is configured.

use std::{fmt, sync::Arc, time::Duration};

use super::{
    LoadLevel, Source,
    sensor::Sensor,
    source::{Reader, Triggers},
};
use crate::ConfigError;

/// A cheap, cloneable view of the [`LoadLevel`], for anything that should
/// do less under load: a [`DegradeLayer`](super::DegradeLayer), a
/// background job that pauses, a logger that samples.
///
/// The level is one atomic byte. [`level`](Self::level) reads it, and at
/// most once per evaluation interval (50 ms by default) first reads the
/// sources and moves the level through its hysteresis; every other read
/// costs a clock read and two atomic loads. No background task is needed:
/// requests through a `DegradeLayer` read it, and so does anything that
/// polls the handle, so the level falls back to `Normal` once load falls
/// whether or not requests still arrive.
///
/// ```
/// use std::time::Duration;
/// use tower_spillway::{
///     degrade::{DegradeHandle, LoadLevel},
///     limit::{AdaptiveLimitLayer, Gradient},
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), tower_spillway::ConfigError> {
/// let limit = AdaptiveLimitLayer::new(Gradient::default());
/// let level = DegradeHandle::builder(limit.handle())
///     .hold(Duration::from_secs(5))
///     .build()?;
///
/// // A background job that pauses while the service is busy.
/// let job = level.clone();
/// tokio::spawn(async move {
///     loop {
///         if job.level() == LoadLevel::Normal {
///             // ... one unit of work ...
///         }
///         tokio::time::sleep(Duration::from_millis(200)).await;
///     }
/// });
/// assert_eq!(level.level(), LoadLevel::Normal);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct DegradeHandle {
    pub(super) sensor: Arc<Sensor>,
}

impl fmt::Debug for DegradeHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DegradeHandle")
            .field("level", &self.sensor.stored())
            .finish_non_exhaustive()
    }
}

impl DegradeHandle {
    /// A level read from `source` with every setting at its default.
    pub fn new(source: impl Into<Source>) -> Self {
        Self::builder(source).finish()
    }

    /// Configures a level read from `source` (add more with
    /// [`source`](LevelBuilder::source)); then
    /// [`build`](LevelBuilder::build) it.
    pub fn builder(source: impl Into<Source>) -> LevelBuilder {
        LevelBuilder {
            sources: vec![source.into()],
            triggers: Triggers::default(),
            hold: LevelBuilder::DEFAULT_HOLD,
            raise_after: Duration::ZERO,
            interval: LevelBuilder::DEFAULT_INTERVAL,
        }
    }

    /// The level now, evaluated first if the last evaluation is an
    /// interval old.
    #[inline]
    pub fn level(&self) -> LoadLevel {
        self.sensor.level()
    }

    /// The level and how it got there.
    pub fn snapshot(&self) -> DegradeSnapshot {
        self.sensor.with_detector(|d| DegradeSnapshot {
            level: d.hysteresis.level(),
            reading: d.last.level,
            cause: (!d.raised_by.is_empty()).then_some(d.raised_by),
            since_change: tokio::time::Instant::now()
                .saturating_duration_since(d.hysteresis.changed()),
            transitions: d.transitions,
            fallbacks: self
                .sensor
                .fallbacks
                .load(std::sync::atomic::Ordering::Relaxed),
        })
    }
}

/// The settings of a [`DegradeHandle`], a plain value: set them in any
/// order, then [`build`](Self::build) the handle.
///
/// A source's reading rises to `Elevated` when a limiter's in-flight count
/// reaches [`saturation`](Self::saturation) of its limit, or a queue's
/// delay reaches the elevated delay, and to `Overloaded` at the
/// overloaded delay ([`queue_delay`](Self::queue_delay)); see [`Source`]
/// for what each kind of source reads. The level is the worst reading. It
/// rises as soon as readings at a higher level have lasted
/// [`raise_after`](Self::raise_after) (at once by default) and falls only
/// once no reading at or above it has been seen for
/// [`hold`](Self::hold).
#[derive(Debug, Clone)]
pub struct LevelBuilder {
    sources: Vec<Source>,
    triggers: Triggers,
    hold: Duration,
    raise_after: Duration,
    interval: Duration,
}

impl LevelBuilder {
    /// The default hold: 2 s.
    pub const DEFAULT_HOLD: Duration = Duration::from_secs(2);
    /// The default evaluation interval: 50 ms.
    pub const DEFAULT_INTERVAL: Duration = Duration::from_millis(50);

    /// Also reads the level from `source`; the level is the worst of all.
    #[must_use]
    pub fn source(mut self, source: impl Into<Source>) -> Self {
        self.sources.push(source.into());
        self
    }

    /// The share of a limiter's limit in flight from which it reads as
    /// `Elevated` (default 0.9; within `(0, 1]`).
    #[must_use]
    pub fn saturation(mut self, share: f64) -> Self {
        self.triggers.saturation = share;
        self
    }

    /// The queueing delays from which a source reads as `Elevated` and as
    /// `Overloaded` (default 20 ms and 100 ms; the first must be non-zero
    /// and not above the second).
    #[must_use]
    pub fn queue_delay(mut self, elevated: Duration, overloaded: Duration) -> Self {
        self.triggers.elevated_delay = elevated;
        self.triggers.overloaded_delay = overloaded;
        self
    }

    /// How long no reading at or above a level must have been seen before
    /// the level falls (default 2 s; zero follows the readings down at
    /// once).
    #[must_use]
    pub fn hold(mut self, hold: Duration) -> Self {
        self.hold = hold;
        self
    }

    /// How long readings at a higher level must last before the level
    /// rises (default zero: at the first reading).
    #[must_use]
    pub fn raise_after(mut self, dwell: Duration) -> Self {
        self.raise_after = dwell;
        self
    }

    /// How often, at most, the sources are read (default 50 ms; at least
    /// 1 ms). The level is at most this late.
    #[must_use]
    pub fn interval(mut self, interval: Duration) -> Self {
        self.interval = interval;
        self
    }

    /// Checks the settings and creates the handle's shared state.
    pub fn build(self) -> Result<DegradeHandle, ConfigError> {
        let t = &self.triggers;
        if !(t.saturation > 0.0 && t.saturation <= 1.0) {
            return Err(ConfigError::new("saturation", "must be within (0, 1]"));
        }
        if t.elevated_delay.is_zero() {
            return Err(ConfigError::new(
                "queue_delay",
                "the elevated delay must be non-zero",
            ));
        }
        if t.overloaded_delay < t.elevated_delay {
            return Err(ConfigError::new(
                "queue_delay",
                "the overloaded delay must not be below the elevated one",
            ));
        }
        if self.interval < Duration::from_millis(1) {
            return Err(ConfigError::new("interval", "must be at least 1 ms"));
        }
        Ok(self.finish())
    }

    /// The handle, without checks (the defaults need none).
    fn finish(self) -> DegradeHandle {
        let readers = self.sources.into_iter().map(Reader::new).collect();
        DegradeHandle {
            sensor: Arc::new(Sensor::new(
                readers,
                self.triggers,
                self.interval,
                self.hold,
                self.raise_after,
            )),
        }
    }
}

/// A [`DegradeHandle`]'s figures at one moment (serialisable with the
/// `serde` feature, durations in milliseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DegradeSnapshot {
    /// The level.
    pub level: LoadLevel,
    /// What the sources showed at the last evaluation (the level can be
    /// above it during the hold).
    pub reading: LoadLevel,
    /// What raised the level to where it is, such as `"limit saturated"`,
    /// `"queue delay"` or `"shedding low"`; `None` while `Normal`.
    pub cause: Option<&'static str>,
    /// How long the level has been what it is.
    #[cfg_attr(
        feature = "serde",
        serde(rename = "since_change_ms", serialize_with = "ser_ms")
    )]
    pub since_change: Duration,
    /// Changes of level since the handle was built.
    pub transitions: u64,
    /// Requests answered from a fallback, by every layer on this handle.
    pub fallbacks: u64,
}

#[cfg(feature = "serde")]
fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
