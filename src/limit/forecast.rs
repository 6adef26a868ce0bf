//! How long a request would wait in the queue: from how fast work leaves
//! (the limit over the mean rtt, Little's law) and how fast each priority
//! arrives.
//!
//! The queue is served strictly by priority, so a request waits for every
//! waiter ahead of it *and* for every request of a higher priority that
//! arrives meanwhile. With `n` ahead, a service rate `mu` and higher
//! priorities arriving at `lambda`, it waits `n / (mu - lambda)`, and forever
//! when `lambda >= mu`. A request whose forecast exceeds what it can afford is
//! refused at once instead of waiting to be refused.
//!
//! Only requests the queue takes (admitted or queued) count as arrivals, so
//! callers retrying a refusal at once do not inflate the demand of their
//! priority; and the service rate is never taken below the completion rate
//! actually measured, so a burst of slow samples cannot make a queue that is
//! moving look hopeless.

use std::time::Duration;

use tokio::time::Instant;

use crate::Priority;

/// A measurement of arrival rates ends after this many arrivals ...
const MIN_ARRIVALS: u64 = 32;
/// ... or this long, whichever comes first, but never sooner than
const MIN_INTERVAL: Duration = Duration::from_millis(10);
const MAX_INTERVAL: Duration = Duration::from_millis(100);
/// The weight of the newest rtt in its moving average.
const RTT_WEIGHT: f64 = 1.0 / 16.0;
/// The weight of the newest arrival-rate measurement.
const ARRIVAL_WEIGHT: f64 = 0.75;

/// The queue's forecast: service rate and arrival rates.
#[derive(Debug, Clone)]
pub(crate) struct Forecast {
    /// Moving average of the rtt, in seconds.
    rtt: Option<f64>,
    /// Arrivals per second, by priority.
    arrivals: [f64; 4],
    /// Completions per second.
    completions: f64,
    /// When the current measurement started, and the counts then.
    since: Option<(Instant, Counts)>,
}

/// Running totals the forecast measures rates from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Counts {
    /// Requests taken (admitted or queued), by priority.
    pub(crate) arrivals: [u64; 4],
    /// Requests that released their permit.
    pub(crate) completions: u64,
}

impl Forecast {
    pub(crate) const fn new() -> Self {
        Self {
            rtt: None,
            arrivals: [0.0; 4],
            completions: 0.0,
            since: None,
        }
    }

    /// Learns one finished request's rtt.
    pub(crate) fn on_rtt(&mut self, rtt: Duration) {
        let x = rtt.as_secs_f64();
        self.rtt = Some(match self.rtt {
            Some(avg) => avg + RTT_WEIGHT * (x - avg),
            None => x,
        });
    }

    /// Requests completed per second with `limit` in flight (and at least
    /// the completion rate measured); `None` before the first rtt.
    pub(crate) fn service_rate(&self, limit: usize) -> Option<f64> {
        let rtt = self.rtt?;
        (rtt > 0.0).then(|| (limit as f64 / rtt).max(self.completions))
    }

    /// Arrivals per second of priorities above `priority`.
    fn arrivals_above(&self, priority: Priority) -> f64 {
        self.arrivals[priority.index() + 1..].iter().sum()
    }

    /// Arrivals per second of `priority`.
    #[cfg(test)]
    pub(crate) fn arrivals(&self, priority: Priority) -> f64 {
        self.arrivals[priority.index()]
    }

    /// Takes the running counts; returns `true` when a measurement ended and
    /// the rates changed.
    pub(crate) fn observe(&mut self, now: Instant, counts: Counts) -> bool {
        let Some((at, before)) = self.since else {
            self.since = Some((now, counts));
            return false;
        };
        let elapsed = now.saturating_duration_since(at);
        let arrived: u64 = counts
            .arrivals
            .iter()
            .zip(before.arrivals)
            .map(|(c, b)| c.saturating_sub(b))
            .sum();
        if elapsed < MIN_INTERVAL || (arrived < MIN_ARRIVALS && elapsed < MAX_INTERVAL) {
            return false;
        }
        let secs = elapsed.as_secs_f64();
        let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
        for (i, r) in self.arrivals.iter_mut().enumerate() {
            *r += ARRIVAL_WEIGHT * (rate(counts.arrivals[i], before.arrivals[i]) - *r);
        }
        self.completions +=
            ARRIVAL_WEIGHT * (rate(counts.completions, before.completions) - self.completions);
        self.since = Some((now, counts));
        true
    }

    /// How long a request of `priority` with `ahead` waiters ahead of it
    /// would wait under `limit`: `None` when there is no forecast yet (no
    /// rtt measured), [`Duration::MAX`] when higher priorities alone take
    /// every slot.
    pub(crate) fn wait(&self, priority: Priority, ahead: usize, limit: usize) -> Option<Duration> {
        let mu = self.service_rate(limit)?;
        let spare = mu - self.arrivals_above(priority);
        if spare <= 0.0 {
            return Some(Duration::MAX);
        }
        Some(Duration::try_from_secs_f64(ahead as f64 / spare).unwrap_or(Duration::MAX))
    }

    /// How long `backlog` requests take to drain at the service rate, for a
    /// refusal's retry hint.
    pub(crate) fn drain_time(&self, backlog: usize, limit: usize) -> Option<Duration> {
        let mu = self.service_rate(limit)?;
        Duration::try_from_secs_f64(backlog as f64 / mu).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn arrivals(arrivals: [u64; 4]) -> Counts {
        Counts {
            arrivals,
            completions: 0,
        }
    }

    #[test]
    fn no_forecast_before_an_rtt() {
        let f = Forecast::new();
        assert_eq!(f.wait(Priority::Low, 10, 10), None);
        assert_eq!(f.service_rate(10), None);
    }

    #[test]
    fn service_rate_is_the_limit_over_the_mean_rtt() {
        let mut f = Forecast::new();
        f.on_rtt(50 * MS);
        assert_eq!(f.service_rate(20), Some(400.0));
        // Without arrivals above, 40 ahead drain in 100 ms.
        assert_eq!(f.wait(Priority::Low, 40, 20), Some(100 * MS));
        // The average follows slowly: one sample of 210 ms moves it by 10 ms.
        f.on_rtt(210 * MS);
        let rate = f.service_rate(20).unwrap();
        assert!((rate - 20.0 / 0.06).abs() < 1e-6, "{rate}");
    }

    #[test]
    fn higher_arrivals_stretch_the_wait_and_can_take_everything() {
        let mut f = Forecast::new();
        f.on_rtt(50 * MS); // 400/s with 20 in flight
        let t0 = Instant::now();
        f.observe(t0, Counts::default());
        // 100 ms: 20 critical (200/s), 40 high (400/s), 10 low.
        assert!(f.observe(t0 + 100 * MS, arrivals([10, 0, 40, 20])));
        let (c, h) = (0.75 * 200.0, 0.75 * 400.0);
        assert!((f.arrivals(Priority::Critical) - c).abs() < 1e-9);
        assert!((f.arrivals(Priority::High) - h).abs() < 1e-9);
        // Critical waits only for its own queue.
        assert_eq!(f.wait(Priority::Critical, 40, 20), Some(100 * MS));
        // High has Critical arriving at 150/s: 250/s to spare.
        let high = f.wait(Priority::High, 25, 20).unwrap();
        assert!((high.as_secs_f64() - 0.1).abs() < 1e-9, "{high:?}");
        // Below High, Critical and High together take every slot.
        assert_eq!(f.wait(Priority::Default, 1, 20), Some(Duration::MAX));
        assert_eq!(f.wait(Priority::Low, 0, 20), Some(Duration::MAX));
    }

    #[test]
    fn arrival_measurements_need_enough_arrivals_or_time() {
        let mut f = Forecast::new();
        let t0 = Instant::now();
        f.observe(t0, Counts::default());
        // Too soon, however many arrived.
        assert!(!f.observe(t0 + 5 * MS, arrivals([100, 0, 0, 0])));
        // Enough arrivals after the shortest interval.
        assert!(f.observe(t0 + 10 * MS, arrivals([100, 0, 0, 0])));
        // Few arrivals: only once the longest interval has passed.
        assert!(!f.observe(t0 + 50 * MS, arrivals([101, 0, 0, 0])));
        assert!(f.observe(t0 + 111 * MS, arrivals([101, 0, 0, 0])));
        // The rate falls quickly once arrivals stop: 7,500/s after the first
        // measurement, a quarter of that after the second.
        assert_eq!(f.arrivals(Priority::Critical), 0.0);
        let low = f.arrivals(Priority::Low);
        assert!((1_800.0..2_000.0).contains(&low), "{low}");
    }

    #[test]
    fn the_service_rate_is_at_least_the_measured_completion_rate() {
        let mut f = Forecast::new();
        f.on_rtt(100 * MS); // 10/s with one in flight ...
        let t0 = Instant::now();
        f.observe(t0, Counts::default());
        let counts = Counts {
            arrivals: [0, 0, 0, 50],
            completions: 50,
        };
        // ... but 50 completed in 100 ms.
        assert!(f.observe(t0 + 100 * MS, counts));
        assert_eq!(f.service_rate(1), Some(0.75 * 500.0));
    }
}
