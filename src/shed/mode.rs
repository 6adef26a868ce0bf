//! The shedding rule a layer runs: static thresholds, or the adaptive level
//! with its window of latency samples.

use std::{
    sync::{
        Mutex,
        atomic::{AtomicU32, AtomicU64},
    },
    time::Duration,
};

use tokio::time::Instant;

use super::core::{Adaptive, Controller, SLOTS, Thresholds};
use crate::sync::Padded;

/// The latency samples of the current adaptive window.
#[derive(Debug)]
pub(super) struct Samples {
    pub(super) count: AtomicU32,
    /// The fastest, in nanoseconds (`u64::MAX`: none).
    pub(super) min_ns: AtomicU64,
}

// One per layer: its size does not matter, an indirection on the hot path
// would.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Mode {
    Static(Thresholds),
    Adaptive(AdaptiveState),
}

#[derive(Debug)]
pub(crate) struct AdaptiveState {
    pub(crate) config: Adaptive,
    pub(crate) level: AtomicU32,
    pub(super) epoch: Instant,
    /// End of the current window, in nanoseconds since `epoch`.
    pub(super) deadline_ns: AtomicU64,
    pub(super) samples: Padded<Samples>,
    pub(crate) controller: Mutex<Controller>,
}

impl AdaptiveState {
    pub(super) fn new(config: Adaptive) -> Self {
        let epoch = Instant::now();
        Self {
            config,
            level: AtomicU32::new(SLOTS),
            epoch,
            deadline_ns: AtomicU64::new(nanos(config.window_time())),
            samples: Padded(Samples {
                count: AtomicU32::new(0),
                min_ns: AtomicU64::new(u64::MAX),
            }),
            controller: Mutex::new(Controller::new(config)),
        }
    }

    pub(super) fn since_epoch(&self, now: Instant) -> u64 {
        nanos(now.saturating_duration_since(self.epoch))
    }
}

pub(super) fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}
