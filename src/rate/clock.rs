//! governor's clock, read from tokio's: paused test clocks drive the rate
//! limiter too.

use std::{ops::Add, time::Duration};

use governor::{
    clock::{Clock, Reference},
    nanos::Nanos,
};
use tokio::time::Instant;

use super::quota::MAX_REFILL;

/// A point on tokio's clock, as governor's [`Reference`]: paused test clocks
/// drive the rate limiter too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct TokioInstant(pub(crate) Instant);

impl Add<Nanos> for TokioInstant {
    type Output = Self;

    fn add(self, rhs: Nanos) -> Self {
        // Quotas are bounded (see `MAX_REFILL`), so this never saturates in
        // practice; it must not panic either way.
        Self(
            self.0
                .checked_add(Duration::from(rhs))
                .unwrap_or(self.0 + MAX_REFILL),
        )
    }
}

impl Reference for TokioInstant {
    fn duration_since(&self, earlier: Self) -> Nanos {
        self.0.saturating_duration_since(earlier.0).into()
    }

    fn saturating_sub(&self, duration: Nanos) -> Self {
        Self(self.0.checked_sub(duration.into()).unwrap_or(self.0))
    }
}

/// governor's [`Clock`] reading `tokio::time::Instant::now()`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct TokioClock;

impl Clock for TokioClock {
    type Instant = TokioInstant;

    fn now(&self) -> TokioInstant {
        TokioInstant(Instant::now())
    }
}
