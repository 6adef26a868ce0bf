//! The limiter's log: a leaf that is handed numbers and decides what to
//! print. Without the `tracing` feature it holds nothing and does nothing.

use tokio::time::Instant;

/// Every change of the limit at `trace`; at `debug`, at most one line a
/// second with the limit's range since the last one, so that an oscillating
/// limit under overload does not turn logging into load.
#[derive(Debug)]
pub(super) struct LimitLog {
    #[cfg(feature = "tracing")]
    last: Instant,
    /// The limit's range since the last debug line.
    #[cfg(feature = "tracing")]
    range: Option<(usize, usize)>,
}

impl LimitLog {
    pub(super) fn new(now: Instant) -> Self {
        #[cfg(not(feature = "tracing"))]
        let _ = now;
        Self {
            #[cfg(feature = "tracing")]
            last: now,
            #[cfg(feature = "tracing")]
            range: None,
        }
    }

    /// The limit moved from `before` to `limit` at `now`.
    pub(super) fn limit_changed(
        &mut self,
        now: Instant,
        before: usize,
        limit: usize,
        in_flight: usize,
        queued: usize,
    ) {
        #[cfg(feature = "tracing")]
        {
            tracing::trace!(
                limit,
                before,
                in_flight,
                queued,
                "concurrency limit changed"
            );
            let (lo, hi) = self.range.get_or_insert((limit, limit));
            *lo = (*lo).min(limit);
            *hi = (*hi).max(limit);
            if now.saturating_duration_since(self.last) >= std::time::Duration::from_secs(1) {
                let (lo, hi) = self.range.take().unwrap_or((limit, limit));
                self.last = now;
                tracing::debug!(limit, lo, hi, in_flight, queued, "concurrency limit moved");
            }
        }
        #[cfg(not(feature = "tracing"))]
        let _ = (now, before, limit, in_flight, queued);
    }
}
