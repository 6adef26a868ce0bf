//! [`HonorRetryAfterHandle`]: the layer's figures, read from anywhere.

use std::{fmt, sync::Arc};

use super::layer::Honour;

/// A cheap handle on an [`HonorRetryAfterLayer`](super::HonorRetryAfterLayer)'s shared state.
#[derive(Clone)]
pub struct HonorRetryAfterHandle {
    pub(super) shared: Arc<Honour>,
}

impl fmt::Debug for HonorRetryAfterHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HonorRetryAfterHandle")
            .field(&self.snapshot())
            .finish()
    }
}

/// The figures of an [`HonorRetryAfterLayer`](super::HonorRetryAfterLayer) at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct HonorRetryAfterSnapshot {
    /// Calls made by callers (retries not counted).
    pub calls: u64,
    /// Retries sent.
    pub retries: u64,
    /// Retries the budget refused.
    pub budget_exhausted: u64,
    /// Hints longer than the cap, handed back to the caller.
    pub over_cap: u64,
    /// Times a cooldown opened or was extended.
    pub cooldowns: u64,
    /// The longest cooldown asked for and honoured, in milliseconds.
    pub max_cooldown_ms: u64,
    /// Milliseconds left in the open cooldown (0 when closed).
    pub cooldown_remaining_ms: u64,
}

impl HonorRetryAfterHandle {
    /// The instant the open cooldown ends, if one is open; per origin, the
    /// last one to end.
    pub fn cooldown_until(&self) -> Option<tokio::time::Instant> {
        self.shared.cooldown.latest()
    }

    /// The figures now.
    pub fn snapshot(&self) -> HonorRetryAfterSnapshot {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.shared.stats;
        HonorRetryAfterSnapshot {
            calls: s.calls.load(Relaxed),
            retries: s.retries.load(Relaxed),
            budget_exhausted: s.budget_exhausted.load(Relaxed),
            over_cap: s.over_cap.load(Relaxed),
            cooldowns: self.shared.cooldown.opened(),
            max_cooldown_ms: self.shared.cooldown.longest_ms(),
            cooldown_remaining_ms: self.cooldown_until().map_or(0, |u| {
                crate::hint::ceil_millis(u.saturating_duration_since(tokio::time::Instant::now()))
            }),
        }
    }
}
