//! The limiter's histograms through the `metrics` facade.

use std::time::Duration;

use ::metrics::Histogram;

use crate::{Priority, metrics::names};

/// Handles registered once, when the limiter is built, with the recorder
/// installed then: recording is a call on a stored handle, with no lookup
/// of the registry per request. (A limiter built before a recorder is
/// installed records nothing.)
#[derive(Debug)]
pub(crate) struct Recorded {
    rtt: Histogram,
    /// By [`Priority::index`].
    queue_wait: [Histogram; 4],
}

impl Recorded {
    /// Registers the histograms of the limiter named `layer`.
    pub(crate) fn new(layer: &str) -> Self {
        Self {
            rtt: ::metrics::histogram!(names::LIMIT_RTT_SECONDS, names::LAYER => layer.to_owned()),
            queue_wait: Priority::ALL.map(|p| {
                ::metrics::histogram!(
                    names::LIMIT_QUEUE_WAIT_SECONDS,
                    names::LAYER => layer.to_owned(),
                    names::PRIORITY => p.as_str(),
                )
            }),
        }
    }

    /// A waiter of `priority` was granted a permit after waiting `wait`.
    #[inline]
    pub(crate) fn queue_wait(&self, priority: Priority, wait: Duration) {
        self.queue_wait[priority.index()].record(wait.as_secs_f64());
    }

    /// A request's rtt was fed to the algorithm.
    #[inline]
    pub(crate) fn rtt(&self, rtt: Duration) {
        self.rtt.record(rtt.as_secs_f64());
    }
}
