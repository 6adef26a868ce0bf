//! The level's log (feature `tracing`): a leaf handed each change of level
//! and what caused it. Without the feature, [`Log`] is [`Silent`], which
//! keeps nothing and prints nothing.
//!
//! The hysteresis makes every change a real one, so each is one line: a
//! `warn` on entering `Overloaded`, an `info` on entering `Elevated` and on
//! every fall. Nothing is logged per request.

use std::time::Duration;

use super::LoadLevel;

#[cfg(feature = "tracing")]
mod transitions;

/// The level's log: [`Transitions`](transitions::Transitions) with the
/// `tracing` feature.
#[cfg(feature = "tracing")]
pub(super) type Log = transitions::Transitions;
/// The level's log: [`Silent`] without the `tracing` feature.
#[cfg(not(feature = "tracing"))]
pub(super) type Log = Silent;

/// A log that keeps nothing and prints nothing.
#[derive(Debug)]
#[cfg_attr(feature = "tracing", allow(dead_code))]
pub(super) struct Silent;

#[cfg_attr(feature = "tracing", allow(dead_code))]
impl Silent {
    pub(super) fn new() -> Self {
        Self
    }

    #[inline]
    pub(super) fn on_change(&self, _: LoadLevel, _: LoadLevel, _: &'static str, _: Duration) {}
}
