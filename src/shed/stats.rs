//! The statistics handle.

use std::{
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use super::{
    Thresholds,
    core::SLOTS,
    mode::Mode,
    state::{DynSignal, State},
};
use crate::{Priority, priority::PerPriority};

/// A cheap handle on a [`PriorityShedLayer`](super::PriorityShedLayer)'s
/// figures, for a `/stats` endpoint or a metrics exporter. Clones share the
/// layer's state; reading it never slows requests down.
///
/// ```
/// use tower_spillway::{Priority, shed::{PriorityShedLayer, Thresholds}};
///
/// let layer = PriorityShedLayer::new(Thresholds::ladder(100));
/// let stats = layer.handle().snapshot();
/// assert_eq!(stats.in_flight, 0);
/// assert_eq!(stats.shed.get(Priority::Low), 0);
/// ```
#[derive(Clone)]
pub struct ShedHandle {
    state: Arc<State>,
}

impl std::fmt::Debug for ShedHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShedHandle").finish_non_exhaustive()
    }
}

/// The shedding rule in force.
#[derive(Debug, Clone, Copy, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case", tag = "kind"))]
#[non_exhaustive]
pub enum ModeStats {
    /// Static thresholds.
    Static {
        /// The thresholds per priority.
        thresholds: Thresholds,
    },
    /// An adaptive admission level.
    Adaptive {
        /// How many of the 512 (priority, cohort) slots are admitted, from
        /// the top: 512 admits everything, 384 all but `Low`, 128 only
        /// `Critical`.
        level: u32,
        /// The target queueing delay, in milliseconds.
        target_ms: u64,
        /// The queueing delay measured in the last window, in milliseconds.
        delay_ms: Option<u64>,
        /// The recent minimum latency, in milliseconds, when steering on
        /// latency inflation.
        baseline_ms: Option<u64>,
    },
}

/// A snapshot of a shedder's figures; serialisable with the `serde` feature.
///
/// Every refusal of this layer has the reason [`Reason::Shed`](crate::Reason::Shed).
#[derive(Debug, Clone, PartialEq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct ShedStats {
    /// The rule in force: thresholds, or the adaptive level.
    pub mode: ModeStats,
    /// The load signal's value now (the layer's own in-flight count unless
    /// another signal was given).
    pub load: usize,
    /// The signal's queueing delay now, in milliseconds, if it has one.
    pub queue_delay_ms: Option<u64>,
    /// Requests admitted and not yet finished.
    pub in_flight: usize,
    /// Requests admitted, by priority.
    pub admitted: PerPriority,
    /// Requests shed, by priority.
    pub shed: PerPriority,
    /// Requests that bypassed the shedder (never counted as load).
    pub bypassed: u64,
    /// Completed requests per second, as last measured (measured while
    /// shedding).
    pub completion_rate: Option<f64>,
    /// The last retry hint sent, in milliseconds (0 before any refusal).
    pub retry_after_ms: u64,
}

impl ShedHandle {
    pub(crate) fn new(state: Arc<State>) -> Self {
        Self { state }
    }

    /// The current figures.
    pub fn snapshot(&self) -> ShedStats {
        let s = &*self.state;
        let signal: Option<&DynSignal> = s.signal.get();
        let ms = |d: Duration| d.as_millis() as u64;
        let mode = match &s.mode {
            Mode::Static(thresholds) => ModeStats::Static {
                thresholds: *thresholds,
            },
            Mode::Adaptive(a) => {
                let c = crate::sync::lock(&a.controller);
                let (delay, baseline) = (c.last_delay(), c.baseline());
                drop(c);
                ModeStats::Adaptive {
                    level: a.level.load(Ordering::Relaxed).min(SLOTS),
                    target_ms: ms(a.config.target()),
                    delay_ms: delay.map(ms),
                    baseline_ms: baseline.map(ms),
                }
            }
        };
        ShedStats {
            mode,
            load: s.load(signal),
            queue_delay_ms: signal.and_then(|sig| sig.queue_delay()).map(ms),
            in_flight: s.in_flight.load(Ordering::Relaxed),
            admitted: PerPriority::from_fn(|p| s.admitted[p.index()].load(Ordering::Relaxed)),
            shed: PerPriority::from_fn(|p| s.shed[p.index()].load(Ordering::Relaxed)),
            bypassed: s.bypassed.load(Ordering::Relaxed),
            completion_rate: s.rate(),
            retry_after_ms: s.last_hint_ms.load(Ordering::Relaxed),
        }
    }

    /// Requests shed since the layer was built, by [`Priority::index`](crate::Priority::index).
    pub(crate) fn shed_counts(&self) -> [u64; 4] {
        std::array::from_fn(|i| self.state.shed[i].load(Ordering::Relaxed))
    }

    /// The highest priority the adaptive level sheds any of now; `None` when
    /// it admits every priority (and always in static mode).
    pub(crate) fn level_sheds(&self) -> Option<Priority> {
        let level = self.level()?;
        let tier = SLOTS / 4;
        Priority::ALL
            .into_iter()
            .rev()
            .find(|p| level < (4 - p.index() as u32) * tier)
    }

    /// The adaptive admission level now (`None` in static mode).
    pub fn level(&self) -> Option<u32> {
        match &self.state.mode {
            Mode::Static(_) => None,
            Mode::Adaptive(a) => Some(a.level.load(Ordering::Relaxed)),
        }
    }
}
