//! A client's retry and cooldown figures, read from its
//! [`HonorRetryAfterHandle`].

use ::metrics::{Counter, Gauge, Unit};

use super::{names, reporter::Publish};
use crate::retry_after::HonorRetryAfterHandle;

/// A client's metric handles, registered once.
pub(super) struct ClientMetrics {
    handle: HonorRetryAfterHandle,
    calls: Counter,
    retries: Counter,
    refused: Counter,
    over_cap: Counter,
    cooldowns: Counter,
    remaining: Gauge,
}

impl ClientMetrics {
    pub(super) fn new(layer: &str, handle: &HonorRetryAfterHandle) -> Self {
        describe();
        let counter =
            |name: &'static str| ::metrics::counter!(name, names::LAYER => layer.to_owned());
        Self {
            handle: handle.clone(),
            calls: counter(names::CLIENT_CALLS_TOTAL),
            retries: counter(names::CLIENT_RETRIES_TOTAL),
            refused: counter(names::CLIENT_RETRIES_REFUSED_TOTAL),
            over_cap: counter(names::CLIENT_HINTS_OVER_CAP_TOTAL),
            cooldowns: counter(names::CLIENT_COOLDOWNS_TOTAL),
            remaining: ::metrics::gauge!(
                names::CLIENT_COOLDOWN_REMAINING_SECONDS,
                names::LAYER => layer.to_owned(),
            ),
        }
    }
}

impl Publish for ClientMetrics {
    fn publish(&self) {
        let s = self.handle.snapshot();
        self.calls.absolute(s.calls);
        self.retries.absolute(s.retries);
        self.refused.absolute(s.budget_exhausted);
        self.over_cap.absolute(s.over_cap);
        self.cooldowns.absolute(s.cooldowns);
        self.remaining.set(s.cooldown_remaining_ms as f64 / 1000.0);
    }
}

fn describe() {
    use ::metrics::{describe_counter, describe_gauge};
    describe_counter!(
        names::CLIENT_CALLS_TOTAL,
        "Calls made by callers (retries not counted)."
    );
    describe_counter!(names::CLIENT_RETRIES_TOTAL, "Retries sent.");
    describe_counter!(
        names::CLIENT_RETRIES_REFUSED_TOTAL,
        "Retries the retry budget refused."
    );
    describe_counter!(
        names::CLIENT_HINTS_OVER_CAP_TOTAL,
        "Retry hints longer than the cap, handed back to the caller."
    );
    describe_counter!(
        names::CLIENT_COOLDOWNS_TOTAL,
        "Times a cooldown opened or was extended."
    );
    describe_gauge!(
        names::CLIENT_COOLDOWN_REMAINING_SECONDS,
        Unit::Seconds,
        "Time left in the open cooldown (0 when closed)."
    );
}
