//! A limiter's figures, read from its [`LimitHandle`].

use ::metrics::{Counter, Gauge, Unit};

use super::{names, reporter::Publish};
use crate::{Priority, Reason, limit::LimitHandle};

/// The refusals a limiter counts, in the order of [`LimitMetrics::rejected`].
const REASONS: [Reason; 4] = [
    Reason::QueueFull,
    Reason::QueueTimeout,
    Reason::ExpectedWait,
    Reason::Deadline,
];

/// A limiter's metric handles, registered once.
pub(super) struct LimitMetrics {
    handle: LimitHandle,
    limit: Gauge,
    in_flight: Gauge,
    /// By [`Priority::index`], as are the other arrays.
    queued: [Gauge; 4],
    oldest_wait: Gauge,
    service_rate: Gauge,
    admitted: [Counter; 4],
    enqueued: [Counter; 4],
    /// In the order of [`REASONS`].
    rejected: [Counter; 4],
    evicted: Counter,
    samples: Counter,
    drops: Counter,
}

impl LimitMetrics {
    pub(super) fn new(handle: &LimitHandle) -> Self {
        describe();
        let layer = handle.name().to_owned();
        let gauge = |name: &'static str| ::metrics::gauge!(name, names::LAYER => layer.clone());
        let counter = |name: &'static str| ::metrics::counter!(name, names::LAYER => layer.clone());
        let by_priority = |name: &'static str| {
            Priority::ALL.map(|p| {
                ::metrics::counter!(name, names::LAYER => layer.clone(), names::PRIORITY => p.as_str())
            })
        };
        Self {
            handle: handle.clone(),
            limit: gauge(names::LIMIT_CONCURRENCY_LIMIT),
            in_flight: gauge(names::LIMIT_IN_FLIGHT),
            queued: Priority::ALL.map(|p| {
                ::metrics::gauge!(
                    names::LIMIT_QUEUED,
                    names::LAYER => layer.clone(),
                    names::PRIORITY => p.as_str(),
                )
            }),
            oldest_wait: gauge(names::LIMIT_OLDEST_WAIT_SECONDS),
            service_rate: gauge(names::LIMIT_SERVICE_RATE),
            admitted: by_priority(names::LIMIT_ADMITTED_TOTAL),
            enqueued: by_priority(names::LIMIT_QUEUED_TOTAL),
            rejected: REASONS.map(|r| {
                ::metrics::counter!(
                    names::LIMIT_REJECTED_TOTAL,
                    names::LAYER => layer.clone(),
                    names::REASON => r.as_str(),
                )
            }),
            evicted: counter(names::LIMIT_EVICTED_TOTAL),
            samples: counter(names::LIMIT_SAMPLES_TOTAL),
            drops: counter(names::LIMIT_DROPS_TOTAL),
        }
    }
}

impl Publish for LimitMetrics {
    fn publish(&self) {
        let s = self.handle.snapshot();
        self.limit.set(s.limit as f64);
        self.in_flight.set(s.in_flight as f64);
        for p in Priority::ALL {
            let i = p.index();
            self.queued[i].set(s.queued_by_priority.get(p) as f64);
            self.admitted[i].absolute(s.admitted_by_priority.get(p));
            self.enqueued[i].absolute(s.enqueued_by_priority.get(p));
        }
        self.oldest_wait
            .set(s.oldest_wait.map_or(0.0, |d| d.as_secs_f64()));
        self.service_rate.set(s.service_rate.unwrap_or(0.0));
        // A request taken out of the queue was refused with
        // `Reason::ExpectedWait`, as at the door: counted under that reason,
        // and on its own as evicted.
        let rejected = [
            s.rejected_queue_full,
            s.rejected_queue_timeout,
            s.rejected_expected_wait
                .wrapping_add(s.rejected_while_waiting),
            s.rejected_deadline,
        ];
        for (counter, n) in self.rejected.iter().zip(rejected) {
            counter.absolute(n);
        }
        self.evicted.absolute(s.rejected_while_waiting);
        self.samples.absolute(s.samples);
        self.drops.absolute(s.drops);
    }
}

fn describe() {
    use ::metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_gauge!(names::LIMIT_CONCURRENCY_LIMIT, "The concurrency limit.");
    describe_gauge!(names::LIMIT_IN_FLIGHT, "Requests holding a permit.");
    describe_gauge!(names::LIMIT_QUEUED, "Requests waiting for a permit.");
    describe_gauge!(
        names::LIMIT_OLDEST_WAIT_SECONDS,
        Unit::Seconds,
        "How long the oldest waiter has waited (0: nobody waits)."
    );
    describe_gauge!(
        names::LIMIT_SERVICE_RATE,
        "The forecast service rate, requests per second (0 before the first sample)."
    );
    describe_counter!(
        names::LIMIT_ADMITTED_TOTAL,
        "Requests admitted, at once or out of the queue."
    );
    describe_counter!(names::LIMIT_QUEUED_TOTAL, "Requests that joined the queue.");
    describe_counter!(names::LIMIT_REJECTED_TOTAL, "Requests refused, by reason.");
    describe_counter!(
        names::LIMIT_EVICTED_TOTAL,
        "Waiters taken out of the queue, refused, because higher priorities left them no slot in time."
    );
    describe_counter!(
        names::LIMIT_SAMPLES_TOTAL,
        "Samples fed to the limit algorithm."
    );
    describe_counter!(names::LIMIT_DROPS_TOTAL, "Samples that were drops.");
    describe_histogram!(
        names::LIMIT_QUEUE_WAIT_SECONDS,
        Unit::Seconds,
        "How long requests admitted out of the queue waited."
    );
    describe_histogram!(
        names::LIMIT_RTT_SECONDS,
        Unit::Seconds,
        "The round-trip times fed to the limit algorithm."
    );
}
