//! [`Retries`]: when and how a refused call is sent again.

use std::{sync::Arc, time::Duration};

use super::RetryBudget;
use crate::ConfigError;

/// The header telling the server how many attempts came before this one, on
/// HTTP retries (gRPC calls carry `grpc-previous-rpc-attempts`, gRFC A6).
pub const RETRY_ATTEMPT: http::HeaderName = http::HeaderName::from_static("x-retry-attempt");

/// When and how [`HonorRetryAfter`](super::HonorRetryAfter) retries refused calls.
///
/// ```
/// use std::time::Duration;
/// use tower_spillway::retry_after::Retries;
///
/// let retries = Retries::new()
///     .attempts(4)?
///     .backoff(Duration::from_millis(50), Duration::from_secs(2))?
///     .max_body_bytes(64 * 1024)
///     .allow_non_idempotent(true); // e.g. gRPC, whose calls are all POSTs
/// # let _ = retries;
/// # Ok::<(), tower_spillway::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Retries {
    pub(super) attempts: u32,
    pub(super) base: Duration,
    pub(super) max_backoff: Duration,
    pub(super) budget: Arc<RetryBudget>,
    pub(super) max_body_bytes: usize,
    pub(super) non_idempotent: bool,
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            attempts: 3,
            base: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            budget: Arc::new(RetryBudget::default()),
            max_body_bytes: 64 * 1024,
            non_idempotent: false,
        }
    }
}

/// The most attempts (first call included) [`Retries::attempts`] accepts.
pub(crate) const MAX_ATTEMPTS: u32 = 5;

impl Retries {
    /// 3 attempts, full-jitter exponential backoff from 100 ms up to 5 s when
    /// the server gives no hint, the default [`RetryBudget`], bodies of up to
    /// 64 KiB replayed, idempotent methods only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attempts per call, the first included: `1..=5`.
    pub fn attempts(mut self, attempts: u32) -> Result<Self, ConfigError> {
        if !(1..=MAX_ATTEMPTS).contains(&attempts) {
            return Err(ConfigError::new("attempts", "must be within 1..=5"));
        }
        self.attempts = attempts;
        Ok(self)
    }

    /// The backoff without a server hint: before retry `n`, a uniformly random
    /// wait in `0..=min(max, base × 2^(n-1))` ("full jitter").
    pub fn backoff(mut self, base: Duration, max: Duration) -> Result<Self, ConfigError> {
        if base.is_zero() || max < base {
            return Err(ConfigError::new("backoff", "needs 0 < base <= max"));
        }
        self.base = base;
        self.max_backoff = max;
        Ok(self)
    }

    /// The retry budget shared by every clone of the client.
    #[must_use]
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Arc::new(budget);
        self
    }

    /// The most body bytes kept for replay; a larger body is sent once.
    #[must_use]
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Retries non-idempotent methods (POST, PATCH) too. Off by default: a
    /// `503` may come after the server acted.
    #[must_use]
    pub fn allow_non_idempotent(mut self, allow: bool) -> Self {
        self.non_idempotent = allow;
        self
    }

    pub(super) fn backoff_for(&self, retry: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.max_backoff);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(..=nanos))
    }
}
