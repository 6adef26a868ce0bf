//! The limiter's histograms (feature `metrics`): a leaf that is handed the
//! durations the limiter measures anyway and records them. Without the
//! feature, [`Histograms`] is [`Unrecorded`], which keeps nothing and
//! records nothing.
//!
//! Counts and levels need no per-request work: a
//! `MetricsReporter` (feature `metrics`) reads them from the
//! handle. Distributions do, so the limiter records two, at the points where
//! it already holds the figure: a waiter's time in the queue when it is
//! granted its permit, and a request's rtt when it is fed to the algorithm.

use std::time::Duration;

use crate::Priority;

#[cfg(feature = "metrics")]
mod recorded;

/// The limiter's histograms: [`Recorded`](recorded::Recorded) with the
/// `metrics` feature.
#[cfg(feature = "metrics")]
pub(crate) type Histograms = recorded::Recorded;
/// The limiter's histograms: [`Unrecorded`] without the `metrics` feature.
#[cfg(not(feature = "metrics"))]
pub(crate) type Histograms = Unrecorded;

/// Histograms that keep nothing and record nothing.
#[derive(Debug)]
#[cfg_attr(feature = "metrics", allow(dead_code))]
pub(crate) struct Unrecorded;

#[cfg_attr(feature = "metrics", allow(dead_code))]
impl Unrecorded {
    pub(crate) fn new(_layer: &str) -> Self {
        Self
    }

    #[inline]
    pub(crate) fn queue_wait(&self, _: Priority, _: Duration) {}

    #[inline]
    pub(crate) fn rtt(&self, _: Duration) {}
}
