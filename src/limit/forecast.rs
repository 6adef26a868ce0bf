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

/// The shortest interval a rate measurement covers.
const MIN_INTERVAL: Duration = Duration::from_millis(5);
/// Rates are moving averages over about this long: long enough to smooth a
/// Poisson stream, short enough that a spike's end is seen within a few
/// tens of milliseconds.
const RATE_HORIZON: Duration = Duration::from_millis(40);
/// The horizon of the settled rates a waiter is taken out of the queue on:
/// a Poisson stream's rate over 40 ms wobbles by a fifth, and a waiter let
/// in must not be thrown out on a wobble.
const SETTLED_HORIZON: Duration = Duration::from_millis(250);
/// The weight of the newest rtt in its moving average.
const RTT_WEIGHT: f64 = 1.0 / 16.0;

/// Which arrival rate of each priority a forecast counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Rates {
    /// Over the last [`RATE_HORIZON`].
    Recent,
    /// The higher of the recent and the settled rate: what the door lets a
    /// request in on. A lull of 40 ms in the arrivals above a tier is no room
    /// for it; a waiter let in on one would be taken out again, after
    /// waiting.
    Higher,
    /// The lower of the two: what a waiter is taken out of the queue on. It
    /// is not thrown out on a 40 ms wobble, and the end of a spike is seen as
    /// soon as by the door.
    Lower,
}

/// The queue's forecast: service rate and arrival rates.
#[derive(Debug, Clone)]
pub(crate) struct Forecast {
    /// Moving average of the rtt, in seconds.
    rtt: Option<f64>,
    /// Arrivals per second, by priority.
    arrivals: [f64; 4],
    /// The same over the longer [`SETTLED_HORIZON`].
    settled: [f64; 4],
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
            settled: [0.0; 4],
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

    /// Arrivals per second of `priority`.
    #[cfg(test)]
    pub(crate) fn arrivals(&self, priority: Priority) -> f64 {
        self.arrivals[priority.index()]
    }

    /// Takes the running counts; returns `true` when a measurement ended and
    /// the rates changed. Each measurement weighs in by how long it covers
    /// (an exponential moving average in time), so frequent short ones and
    /// rare long ones average alike.
    pub(crate) fn observe(&mut self, now: Instant, counts: Counts) -> bool {
        let Some((at, before)) = self.since else {
            self.since = Some((now, counts));
            return false;
        };
        let elapsed = now.saturating_duration_since(at);
        if elapsed < MIN_INTERVAL {
            return false;
        }
        let secs = elapsed.as_secs_f64();
        let weight = 1.0 - (-secs / RATE_HORIZON.as_secs_f64()).exp();
        let settled_weight = 1.0 - (-secs / SETTLED_HORIZON.as_secs_f64()).exp();
        let rate = |now: u64, then: u64| now.saturating_sub(then) as f64 / secs;
        for i in 0..4 {
            let measured = rate(counts.arrivals[i], before.arrivals[i]);
            self.arrivals[i] += weight * (measured - self.arrivals[i]);
            self.settled[i] += settled_weight * (measured - self.settled[i]);
        }
        self.completions +=
            weight * (rate(counts.completions, before.completions) - self.completions);
        self.since = Some((now, counts));
        true
    }

    /// How long a request of `priority` with `ahead` waiters ahead of it
    /// would wait under `limit`, on the recent rates: `None` when there is
    /// no forecast yet (no rtt measured), [`Duration::MAX`] when higher
    /// priorities alone take every slot.
    pub(crate) fn wait(&self, priority: Priority, ahead: usize, limit: usize) -> Option<Duration> {
        self.wait_on(Rates::Recent, priority, ahead, limit, 1.0)
    }

    /// [`wait`](Self::wait), with each higher priority arriving at the
    /// `rates` chosen, counted `margin` times.
    pub(crate) fn wait_on(
        &self,
        rates: Rates,
        priority: Priority,
        ahead: usize,
        limit: usize,
        margin: f64,
    ) -> Option<Duration> {
        let mu = self.service_rate(limit)?;
        let rate = |i: usize| match rates {
            Rates::Recent => self.arrivals[i],
            Rates::Higher => self.arrivals[i].max(self.settled[i]),
            Rates::Lower => self.arrivals[i].min(self.settled[i]),
        };
        let above: f64 = (priority.index() + 1..4).map(rate).sum();
        Some(drain(ahead, mu - margin * above))
    }

    /// How long `backlog` requests take to drain at the service rate, for a
    /// refusal's retry hint.
    pub(crate) fn drain_time(&self, backlog: usize, limit: usize) -> Option<Duration> {
        Some(drain(backlog, self.service_rate(limit)?))
    }
}

/// How long `ahead` requests take to drain at `spare` per second; forever
/// when nothing is spare.
fn drain(ahead: usize, spare: f64) -> Duration {
    if spare <= 0.0 {
        return Duration::MAX;
    }
    Duration::try_from_secs_f64(ahead as f64 / spare).unwrap_or(Duration::MAX)
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

    /// The weight a measurement of `ms` milliseconds gets.
    fn weight(ms: f64) -> f64 {
        1.0 - (-ms / 40.0).exp()
    }

    #[test]
    fn higher_arrivals_stretch_the_wait_and_can_take_everything() {
        let mut f = Forecast::new();
        f.on_rtt(50 * MS); // 400/s with 20 in flight
        let t0 = Instant::now();
        f.observe(t0, Counts::default());
        // 1 s: 200/s critical, 400/s high, 10 low.
        assert!(f.observe(t0 + Duration::from_secs(1), arrivals([10, 0, 400, 200])));
        let w = weight(1000.0);
        assert!((f.arrivals(Priority::Critical) - 200.0 * w).abs() < 1e-6);
        assert!((f.arrivals(Priority::High) - 400.0 * w).abs() < 1e-6);
        // Critical waits only for its own queue.
        assert_eq!(f.wait(Priority::Critical, 40, 20), Some(100 * MS));
        // High has Critical arriving at 200/s: 200/s to spare.
        let high = f.wait(Priority::High, 20, 20).unwrap();
        assert!((high.as_secs_f64() - 0.1).abs() < 1e-6, "{high:?}");
        // Below High, Critical and High together take every slot.
        assert_eq!(f.wait(Priority::Default, 1, 20), Some(Duration::MAX));
        assert_eq!(f.wait(Priority::Low, 0, 20), Some(Duration::MAX));
    }

    #[test]
    fn rates_average_over_time_and_fall_quickly_when_arrivals_stop() {
        let mut f = Forecast::new();
        let t0 = Instant::now();
        f.observe(t0, Counts::default());
        // Too soon to measure.
        assert!(!f.observe(t0 + 2 * MS, arrivals([100, 0, 0, 0])));
        // 10,000/s for 10 ms weighs in by 10 ms of a 40 ms horizon.
        assert!(f.observe(t0 + 10 * MS, arrivals([100, 0, 0, 0])));
        let first = 10_000.0 * weight(10.0);
        assert!((f.arrivals(Priority::Low) - first).abs() < 1e-6);
        // The spike's rate held for 200 ms: close to it.
        assert!(f.observe(t0 + 210 * MS, arrivals([2_100, 0, 0, 0])));
        assert!(f.arrivals(Priority::Low) > 9_900.0);
        // Arrivals stop: after 100 ms, less than a tenth is left.
        assert!(f.observe(t0 + 310 * MS, arrivals([2_100, 0, 0, 0])));
        let low = f.arrivals(Priority::Low);
        assert!(low < 1_000.0, "{low}");
        assert_eq!(f.arrivals(Priority::Critical), 0.0);
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
        let rate = f.service_rate(1).unwrap();
        assert!((rate - 500.0 * weight(100.0)).abs() < 1e-6, "{rate}");
    }
}
