//! The retry hint's inputs: the measured completion rate and the time the
//! backlog takes to drain at it.

use std::time::Duration;

use tokio::time::Instant;

/// How long the current backlog takes to drain at the measured completion
/// rate, clamped to `[1 s, cap]`. Without a measured rate yet, 1 s; with a
/// backlog that nothing drains, the cap.
pub(crate) fn drain_time(backlog: usize, rate_per_sec: Option<f64>, cap: Duration) -> Duration {
    const FLOOR: Duration = Duration::from_secs(1);
    let cap = cap.max(FLOOR);
    let raw = match rate_per_sec {
        None => FLOOR,
        Some(r) if r > 0.0 && r.is_finite() => {
            Duration::try_from_secs_f64(backlog as f64 / r).unwrap_or(cap)
        }
        Some(_) if backlog == 0 => FLOOR,
        Some(_) => cap,
    };
    raw.clamp(FLOOR, cap)
}

/// Measures the completion rate from a monotonic completion count, at most
/// once per interval, smoothing successive measurements.
#[derive(Debug, Clone)]
pub(crate) struct RateMeter {
    at: Option<Instant>,
    count: u64,
    rate: Option<f64>,
}

impl RateMeter {
    /// The shortest interval a measurement covers.
    pub(crate) const INTERVAL: Duration = Duration::from_millis(200);

    pub(crate) const fn new() -> Self {
        Self {
            at: None,
            count: 0,
            rate: None,
        }
    }

    /// Completions per second, updated when `now` is an interval past the
    /// last measurement and `completions` is the running total.
    pub(crate) fn observe(&mut self, now: Instant, completions: u64) -> Option<f64> {
        match self.at {
            None => {
                self.at = Some(now);
                self.count = completions;
            }
            Some(at) => {
                let elapsed = now.saturating_duration_since(at);
                if elapsed >= Self::INTERVAL {
                    let done = completions.saturating_sub(self.count) as f64;
                    let measured = done / elapsed.as_secs_f64();
                    self.rate = Some(match self.rate {
                        Some(old) => 0.5 * old + 0.5 * measured,
                        None => measured,
                    });
                    self.at = Some(now);
                    self.count = completions;
                }
            }
        }
        self.rate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_time_vectors() {
        let cap = Duration::from_secs(30);
        // (backlog, rate, expected)
        let vectors = [
            (100, None, Duration::from_secs(1)),
            (100, Some(1000.0), Duration::from_secs(1)),
            (5_000, Some(1000.0), Duration::from_secs(5)),
            (2_500, Some(1000.0), Duration::from_millis(2500)),
            (1_000_000, Some(10.0), cap),
            (10, Some(0.0), cap),
            (0, Some(0.0), Duration::from_secs(1)),
            (10, Some(f64::NAN), cap),
        ];
        for (backlog, rate, expected) in vectors {
            assert_eq!(
                drain_time(backlog, rate, cap),
                expected,
                "{backlog} at {rate:?}"
            );
        }
        // A cap below the floor never yields less than a second.
        assert_eq!(
            drain_time(1, Some(0.0), Duration::ZERO),
            Duration::from_secs(1)
        );
    }

    #[test]
    fn rate_meter_measures_and_smooths() {
        let t0 = Instant::now();
        let mut m = RateMeter::new();
        assert_eq!(m.observe(t0, 0), None);
        // Too soon for a measurement.
        assert_eq!(m.observe(t0 + Duration::from_millis(100), 50), None);
        assert_eq!(
            m.observe(t0 + Duration::from_millis(500), 500),
            Some(1000.0)
        );
        // 200 more in 0.5 s is 400/s; smoothed with 1000/s.
        assert_eq!(m.observe(t0 + Duration::from_secs(1), 700), Some(700.0));
        assert_eq!(
            m.observe(t0 + Duration::from_millis(1100), 800),
            Some(700.0)
        );
    }
}
