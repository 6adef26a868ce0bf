//! Time arithmetic that cannot panic. Durations come from configuration
//! (`queue_timeout(Duration::MAX)` is a user's way of saying "no timeout")
//! and from the wire, while `Instant + Duration` and `Duration::mul_f64`
//! panic on overflow: on the request path every sum and product saturates.

use std::time::Duration;

use tokio::time::Instant;

/// About thirty years: as far as any timer here is concerned, never.
pub(crate) const FOREVER: Duration = Duration::from_secs(30 * 365 * 24 * 60 * 60);

/// `now + d`, at most [`FOREVER`] from now.
pub(crate) fn after(now: Instant, d: Duration) -> Instant {
    // Thirty years past a clock reading fits every platform's `Instant`; if
    // one day it does not, the deadline is now rather than a panic.
    now.checked_add(d.min(FOREVER)).unwrap_or(now)
}

/// `d × factor`, saturating at `Duration::MAX` (and zero for a factor that
/// is negative or not a number).
pub(crate) fn mul(d: Duration, factor: f64) -> Duration {
    let secs = d.as_secs_f64() * factor;
    if secs.is_nan() || secs <= 0.0 {
        return Duration::ZERO;
    }
    Duration::try_from_secs_f64(secs).unwrap_or(Duration::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_and_products_saturate() {
        let now = Instant::now();
        assert_eq!(after(now, Duration::MAX), now + FOREVER);
        assert_eq!(
            after(now, Duration::from_secs(1)),
            now + Duration::from_secs(1)
        );
        assert_eq!(mul(Duration::MAX, 1.5), Duration::MAX);
        assert_eq!(mul(Duration::from_secs(2), 1.5), Duration::from_secs(3));
        assert_eq!(mul(Duration::from_secs(1), f64::NAN), Duration::ZERO);
        assert_eq!(mul(Duration::from_secs(1), -1.0), Duration::ZERO);
        assert_eq!(mul(Duration::from_secs(1), f64::INFINITY), Duration::MAX);
    }
}
