//! The least value seen over the current and the previous period: a recent
//! minimum that forgets an old low after one to two periods. Both adaptive
//! controllers (shedding's latency baseline, `Gradient`'s) keep one.

use std::time::Duration;

use tokio::time::Instant;

/// A moment a [`WindowedMin`] can measure periods from.
pub(crate) trait Moment: Copy {
    /// The time from `earlier` to `self`, zero if `earlier` is later.
    fn since(self, earlier: Self) -> Duration;
}

impl Moment for Instant {
    fn since(self, earlier: Self) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

/// An offset from a fixed origin, as the pure algorithms keep time.
impl Moment for Duration {
    fn since(self, earlier: Self) -> Duration {
        self.saturating_sub(earlier)
    }
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct WindowedMin<T> {
    period: Duration,
    started: Option<T>,
    current: Option<Duration>,
    previous: Option<Duration>,
}

impl<T: Moment> WindowedMin<T> {
    pub(crate) const fn new(period: Duration) -> Self {
        Self {
            period,
            started: None,
            current: None,
            previous: None,
        }
    }

    pub(crate) fn observe(&mut self, value: Duration, now: T) {
        match self.started {
            Some(start) if now.since(start) < self.period => {}
            Some(_) => {
                self.previous = self.current.take();
                self.started = Some(now);
            }
            None => self.started = Some(now),
        }
        self.current = Some(self.current.map_or(value, |c| c.min(value)));
    }

    pub(crate) fn get(&self) -> Option<Duration> {
        match (self.current, self.previous) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Forgets everything but `value`, from `now` on.
    pub(crate) fn reset(&mut self, value: Duration, now: T) {
        self.started = Some(now);
        self.current = Some(value);
        self.previous = None;
    }
}
