//! Shares of the limit reserved per priority.

use crate::Priority;

/// Shares of the limit reserved for priorities, as in Netflix's partitioned
/// limiter.
///
/// A priority with a share `s` may always have `max(1, ceil(limit × s))`
/// requests in flight, even when the limit is reached. Below the limit every
/// priority borrows freely from the common pool; at the limit only a priority
/// still under its reserve is admitted. Shares add up to at most 1, which
/// [`share`](Self::share) checks as each is set, so a `Reserved` is always
/// valid.
///
/// ```
/// use tower_spillway::{Priority, limit::Reserved};
///
/// let reserved = Reserved::new()
///     .share(Priority::Critical, 0.5)?
///     .share(Priority::High, 0.3)?;
/// assert!(reserved.share(Priority::Low, 0.5).is_err()); // 1.3 in all
/// # Ok::<(), tower_spillway::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Reserved {
    shares: [f64; 4],
}

impl Reserved {
    /// No reservations.
    pub const fn new() -> Self {
        Self { shares: [0.0; 4] }
    }

    /// Reserves `share` (in `[0, 1]`) of the limit for `priority`, replacing
    /// any share it had. Fails if the share is out of range or the shares
    /// would add up to more than 1.
    pub fn share(mut self, priority: Priority, share: f64) -> Result<Self, crate::ConfigError> {
        if !share.is_finite() || !(0.0..=1.0).contains(&share) {
            return Err(crate::ConfigError::new("share", "must lie in [0, 1]"));
        }
        self.shares[priority.index()] = share;
        if self.shares.iter().sum::<f64>() > 1.0 + 1e-9 {
            return Err(crate::ConfigError::new(
                "share",
                "shares must add up to at most 1",
            ));
        }
        Ok(self)
    }

    /// The slots reserved for `priority` under `limit` (0 without a share).
    pub(super) fn slots(&self, priority: Priority, limit: usize) -> usize {
        let share = self.shares[priority.index()];
        if share <= 0.0 {
            0
        } else {
            ((limit as f64 * share).ceil() as usize).max(1)
        }
    }
}
