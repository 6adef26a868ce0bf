//! What a limit algorithm is: a pure struct fed [`Sample`]s and asked for a
//! limit; and the simplest one, [`Fixed`].
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
    /// upstream 429/503/504 (but not, by default, a 429 for a quota), a
    /// gRPC `RESOURCE_EXHAUSTED`/`UNAVAILABLE`/`DEADLINE_EXCEEDED`, an inner
    /// error.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_validates_and_never_moves() {
        assert!(Fixed::new(0).is_err());
        let mut f = Fixed::new(3).unwrap();
        assert_eq!(f.update(Sample::dropped(Duration::from_millis(1), 3)), 3);
    }
}
