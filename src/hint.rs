//! The retry hint a refusal carries: [`RetryAfterPolicy`] (its default,
//! jitter and cap), and how a hint is rounded into `Retry-After` seconds and
//! `grpc-retry-pushback-ms` milliseconds. Every face of every layer reads it
//! from here, so nothing below depends on `retry_after`.

use std::time::Duration;

use crate::ConfigError;

/// How a server computes the retry hint it sends with a refusal.
///
/// The hint starts from what the refusing layer observed (how long its backlog
/// takes to drain, the exact wait of a rate limit) or, without one, a default;
/// it is then **jittered upwards**, so callers refused together do not return
/// together and none is told to come back earlier than the honest value, and
/// finally capped. `Retry-After` carries it in whole seconds, rounded up and at
/// least 1; `grpc-retry-pushback-ms` carries it in milliseconds.
///
/// ```
/// use std::time::Duration;
/// use tower_spillway::RetryAfterPolicy;
///
/// let policy = RetryAfterPolicy::new()
///     .default_delay(Duration::from_secs(2))
///     .jitter(0.5)?
///     .cap(Duration::from_secs(30))?;
/// let d = policy.delay(None);
/// assert!(d >= Duration::from_secs(2) && d <= Duration::from_secs(3));
/// # Ok::<(), tower_spillway::ConfigError>(())
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct RetryAfterPolicy {
    default: Duration,
    jitter: f64,
    cap: Duration,
}

impl Default for RetryAfterPolicy {
    fn default() -> Self {
        Self {
            default: Duration::from_secs(1),
            jitter: 0.2,
            cap: Duration::from_secs(60),
        }
    }
}

impl RetryAfterPolicy {
    /// A default hint of 1 s, up to 20 % upward jitter, capped at 60 s.
    pub fn new() -> Self {
        Self::default()
    }

    /// The hint used when the refusing layer gave none.
    #[must_use]
    pub fn default_delay(mut self, delay: Duration) -> Self {
        self.default = delay;
        self
    }

    /// The largest upward jitter, as a fraction of the hint (`0.2` adds up to
    /// 20 %). Must be within `0.0..=1.0`.
    pub fn jitter(mut self, fraction: f64) -> Result<Self, ConfigError> {
        if !(0.0..=1.0).contains(&fraction) {
            return Err(ConfigError::new("jitter", "must be within 0.0..=1.0"));
        }
        self.jitter = fraction;
        Ok(self)
    }

    /// The longest hint ever sent. Must be at least one second.
    pub fn cap(mut self, cap: Duration) -> Result<Self, ConfigError> {
        if cap < Duration::from_secs(1) {
            return Err(ConfigError::new("cap", "must be at least one second"));
        }
        self.cap = cap;
        Ok(self)
    }

    /// The configured cap.
    pub fn max_delay(&self) -> Duration {
        self.cap
    }

    /// The jittered, capped delay for `grpc-retry-pushback-ms`, which speaks
    /// in milliseconds: never shorter than the hint (or the cap), and not
    /// rounded to seconds as [`delay`](Self::delay) is, so a 1.5 s hint is
    /// announced as about 1,500 ms, not 2,000.
    pub fn pushback(&self, hint: Option<Duration>) -> Duration {
        let base = hint.unwrap_or(self.default).min(self.cap);
        let factor = 1.0 + self.jitter * fastrand::f64();
        // `mul_f64` goes through floating point and can lose a nanosecond;
        // jitter only ever lengthens the hint.
        crate::time::mul(base, factor).max(base).min(self.cap)
    }

    /// The jittered, capped delay to announce for a refusal with `hint`.
    ///
    /// Never shorter than the hint (or the cap). A delay of a second or more is
    /// a whole number of seconds, since `Retry-After` speaks in them: the
    /// jittered value is rounded up or down at random, in proportion to its
    /// fraction, so the spread survives the rounding and its mean stays the
    /// jittered value, but never below the hint rounded up. (Rounding every
    /// jittered value up would turn a 1 s hint into `Retry-After: 2` almost
    /// always.) Shorter delays keep their precision for
    /// `grpc-retry-pushback-ms`.
    pub fn delay(&self, hint: Option<Duration>) -> Duration {
        let base = hint.unwrap_or(self.default).min(self.cap);
        let jittered = self.pushback(hint);
        if base < Duration::from_secs(1) {
            return jittered;
        }
        let secs = jittered.as_secs_f64();
        let mut whole = secs.floor() as u64;
        if fastrand::f64() < secs - secs.floor() {
            whole += 1;
        }
        let whole = whole.max(ceil_secs(base)).min(ceil_secs(self.cap));
        Duration::from_secs(whole)
    }
}

/// Whole seconds, rounded up.
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn ceil_secs(d: Duration) -> u64 {
    d.as_secs().saturating_add(u64::from(d.subsec_nanos() > 0))
}

/// Whole milliseconds, rounded up (saturating).
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn ceil_millis(d: Duration) -> u64 {
    let ms = d.as_millis() + u128::from(d.subsec_nanos() % 1_000_000 > 0);
    u64::try_from(ms).unwrap_or(u64::MAX)
}

/// A `grpc-retry-pushback-ms` value: whole milliseconds, rounded up, and at
/// most `i32::MAX` (peers read the header as an `int32`; a larger value would
/// read as "do not retry").
#[cfg_attr(not(feature = "http"), allow(dead_code))]
pub(crate) fn pushback_ms(d: Duration) -> u64 {
    ceil_millis(d).min(i32::MAX as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_up() {
        assert_eq!(ceil_secs(Duration::ZERO), 0);
        assert_eq!(ceil_secs(Duration::from_millis(1)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1000)), 1);
        assert_eq!(ceil_secs(Duration::from_millis(1001)), 2);
        assert_eq!(ceil_millis(Duration::from_micros(1)), 1);
        assert_eq!(ceil_millis(Duration::from_micros(2000)), 2);
        assert_eq!(ceil_millis(Duration::MAX), u64::MAX);
    }

    #[test]
    fn jitter_is_upward_bounded_and_varies() {
        let p = RetryAfterPolicy::new().jitter(0.5).unwrap();
        let hint = Duration::from_secs(10);
        let delays: Vec<_> = (0..200).map(|_| p.delay(Some(hint))).collect();
        assert!(delays.iter().all(|d| *d >= hint && *d <= hint.mul_f64(1.5)));
        let distinct: std::collections::HashSet<_> = delays.iter().map(|d| ceil_secs(*d)).collect();
        assert!(distinct.len() >= 3, "jitter spread only over {distinct:?}");
    }

    #[test]
    fn whole_second_hints_spread_without_inflating() {
        let p = RetryAfterPolicy::new(); // 20 % jitter
        let one: Vec<_> = (0..2000)
            .map(|_| p.delay(Some(Duration::from_secs(1))))
            .collect();
        assert!(
            one.iter()
                .all(|d| *d == Duration::from_secs(1) || *d == Duration::from_secs(2))
        );
        let twos = one.iter().filter(|d| **d == Duration::from_secs(2)).count();
        // The mean jitter is 10 %, so about 200 of 2000 round up to 2 s.
        assert!((100..=300).contains(&twos), "{twos} of 2000 were 2 s");

        let honest = p.delay(Some(Duration::from_millis(2500)));
        assert_eq!(
            honest,
            Duration::from_secs(3),
            "never below the hint rounded up"
        );

        let short = p.delay(Some(Duration::from_millis(250)));
        assert!(short >= Duration::from_millis(250) && short <= Duration::from_millis(300));
    }

    #[test]
    fn capped_and_defaulted() {
        let p = RetryAfterPolicy::new()
            .jitter(0.0)
            .unwrap()
            .cap(Duration::from_secs(5))
            .unwrap()
            .default_delay(Duration::from_secs(3));
        assert_eq!(
            p.delay(Some(Duration::from_secs(3600))),
            Duration::from_secs(5)
        );
        assert_eq!(p.delay(None), Duration::from_secs(3));
    }

    #[test]
    fn config_is_validated() {
        assert!(RetryAfterPolicy::new().jitter(-0.1).is_err());
        assert!(RetryAfterPolicy::new().jitter(f64::NAN).is_err());
        assert!(RetryAfterPolicy::new().jitter(1.5).is_err());
        assert!(
            RetryAfterPolicy::new()
                .cap(Duration::from_millis(999))
                .is_err()
        );
    }
}
