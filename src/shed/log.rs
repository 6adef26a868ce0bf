//! Transition logs and periodic summaries (feature `tracing`): a leaf that
//! is handed numbers (a counter it reads only when it prints) and decides
//! what to print. Without the feature, [`Log`]
//! is [`Silent`], which keeps nothing and prints nothing.
//!
//! Under overload, logging must not become load: a tier's first refusal logs
//! "shedding started", the level's moves log at `debug`, and every
//! ten seconds a single line counts the refusals by priority. A tier
//! without refusals for a whole period logs "shedding stopped". Nothing is
//! logged per request.

use std::{sync::atomic::AtomicUsize, time::Duration};

use tokio::time::Instant;

use super::core::Movement;
use crate::Priority;

#[cfg(feature = "tracing")]
mod transitions;

/// The shedder's log: [`Transitions`](transitions::Transitions) with the
/// `tracing` feature.
#[cfg(feature = "tracing")]
pub(crate) type Log = transitions::Transitions;
/// The shedder's log: [`Silent`] without the `tracing` feature.
#[cfg(not(feature = "tracing"))]
pub(crate) type Log = Silent;

/// A log that keeps nothing and prints nothing.
#[derive(Debug)]
#[cfg_attr(feature = "tracing", allow(dead_code))]
pub(crate) struct Silent;

#[cfg_attr(feature = "tracing", allow(dead_code))]
impl Silent {
    pub(crate) fn new() -> Self {
        Self
    }

    #[inline]
    pub(crate) fn on_shed(
        &self,
        _: Priority,
        _: usize,
        _: &AtomicUsize,
        _: Duration,
        _: Option<Instant>,
    ) {
    }

    #[inline]
    pub(crate) fn on_admit(&self) {}

    #[inline]
    pub(crate) fn on_window(&self, _: Movement, _: Option<Duration>, _: Instant) {}
}
