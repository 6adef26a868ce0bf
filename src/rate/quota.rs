//! [`Quota`]: how many calls per period, in bursts of how many.

use std::{num::NonZeroU32, time::Duration};

use governor::Quota as GovernorQuota;

use crate::ConfigError;

/// The longest time a quota may take to refill a whole burst: ten years.
pub(crate) const MAX_REFILL: Duration = Duration::from_secs(10 * 365 * 24 * 60 * 60);

fn check_refill(interval: Duration, burst: u32) -> Result<(), ConfigError> {
    if interval.as_nanos() * u128::from(burst) > MAX_REFILL.as_nanos() {
        return Err(ConfigError::new(
            "quota",
            "a whole burst must refill within ten years",
        ));
    }
    Ok(())
}

/// A rate: how many calls per period, and how many may arrive back to back.
///
/// ```
/// use std::time::Duration;
/// use tower_spillway::rate::Quota;
///
/// // 200 calls per second, in bursts of at most 20.
/// let q = Quota::per_second(200)?.burst(20)?;
/// assert_eq!(q.replenish_interval(), Duration::from_millis(5));
/// # Ok::<(), tower_spillway::ConfigError>(())
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    pub(super) inner: GovernorQuota,
}

impl Quota {
    /// `n` calls per second, in bursts of up to `n`. `n` must be positive.
    pub fn per_second(n: u32) -> Result<Self, ConfigError> {
        Self::new(n, Duration::from_secs(1))
    }

    /// `n` calls per minute, in bursts of up to `n`. `n` must be positive.
    pub fn per_minute(n: u32) -> Result<Self, ConfigError> {
        Self::new(n, Duration::from_secs(60))
    }

    /// `n` calls every `period`, in bursts of up to `n`; one call's worth of
    /// quota comes back every `period / n`. Both must be positive, and the
    /// period at most ten years.
    pub fn new(n: u32, period: Duration) -> Result<Self, ConfigError> {
        let n =
            NonZeroU32::new(n).ok_or(ConfigError::new("quota", "must allow at least one call"))?;
        check_refill(period / n.get(), n.get())?;
        GovernorQuota::with_period(period / n.get())
            .map(|q| Self {
                inner: q.allow_burst(n),
            })
            .ok_or(ConfigError::new(
                "period",
                "must be positive and at least one nanosecond per call",
            ))
    }

    /// The most calls allowed back to back (at least 1; a whole burst must
    /// refill within ten years). The long-run rate is unchanged.
    pub fn burst(self, max_burst: u32) -> Result<Self, ConfigError> {
        let n =
            NonZeroU32::new(max_burst).ok_or(ConfigError::new("burst", "must be at least 1"))?;
        check_refill(self.replenish_interval(), max_burst)?;
        Ok(Self {
            inner: self.inner.allow_burst(n),
        })
    }

    /// The time for one call's worth of quota to come back.
    pub fn replenish_interval(&self) -> Duration {
        self.inner.replenish_interval()
    }

    /// The burst size.
    pub fn burst_size(&self) -> u32 {
        self.inner.burst_size().get()
    }

    /// The announced policy, the `RateLimit-Policy` field's parameters: the
    /// long-run rate as `q` calls per window of `w` whole seconds, the window
    /// being long enough to refill a whole burst.
    pub fn policy(&self) -> (u64, u64) {
        let interval = self.replenish_interval().as_nanos().max(1);
        let window = crate::hint::ceil_secs(self.inner.burst_size_replenished_in()).max(1);
        let q = u128::from(window) * 1_000_000_000 / interval;
        (u64::try_from(q).unwrap_or(u64::MAX).max(1), window)
    }

    /// One of `instances` equal shares of this quota: the rate divided by
    /// `instances`, and the burst too (at least 1). What an instance of a
    /// fleet may admit on its own while the shared store is out of reach.
    #[cfg(feature = "rate-redis")]
    pub(crate) fn share(&self, instances: u32) -> Quota {
        let instances = instances.max(1);
        let burst = NonZeroU32::new(self.burst_size() / instances).unwrap_or(NonZeroU32::MIN);
        let interval = self
            .replenish_interval()
            .checked_mul(instances)
            .unwrap_or(MAX_REFILL)
            .min(MAX_REFILL / burst.get());
        GovernorQuota::with_period(interval)
            .map(|q| Self {
                inner: q.allow_burst(burst),
            })
            .unwrap_or(*self)
    }
}
