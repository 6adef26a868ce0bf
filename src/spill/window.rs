//! How many replays the drain keeps in flight: a congestion window, as TCP
//! keeps one, with the stack's overload refusals as the loss signal.

use tokio::time::Instant;

/// What a refusal leaves of the window. Halving, as TCP Reno does, leaves
/// the backend idle for part of every cycle when the stack keeps a short
/// queue before it refuses (the limiter queues about one limit's worth):
/// 0.7, as CUBIC uses, keeps it busy.
const BACKOFF: f64 = 0.7;

/// The drain's window of replays in flight.
///
/// It starts small and doubles each round trip (one more replay per
/// answer) until the stack first refuses one; from then on it grows by one
/// replay per window of answers and, on a refusal, falls to [`BACKOFF`] of
/// itself. Only the
/// first refusal of a round counts: replays already in flight when the
/// window was cut were sent under the old window, and their refusals say
/// nothing new. Cutting once per refusal instead would take a burst of them
/// down to one replay, and a window that keeps growing by one per answer
/// doubles straight back into the next burst: the drain would spend its
/// time below the stack's limit, not at it.
#[derive(Debug, Clone)]
pub(crate) struct Window {
    size: f64,
    /// Below this the window doubles each round; above it, it grows by one.
    threshold: f64,
    max: f64,
    /// When the window was last cut.
    cut_at: Option<Instant>,
}

impl Window {
    pub(crate) fn new(max: usize) -> Self {
        let max = max.max(1) as f64;
        Self {
            size: 4.0_f64.min(max),
            threshold: max,
            max,
            cut_at: None,
        }
    }

    /// Replays the drain may have in flight now.
    pub(crate) fn size(&self) -> usize {
        self.size as usize
    }

    /// A replay the application answered.
    pub(crate) fn answered(&mut self) {
        let step = if self.size < self.threshold {
            1.0
        } else {
            1.0 / self.size
        };
        self.size = (self.size + step).min(self.max);
    }

    /// A replay started at `started` that the stack refused for overload;
    /// `true` when it cut the window (it was the round's first).
    pub(crate) fn refused(&mut self, started: Instant, now: Instant) -> bool {
        if self.cut_at.is_some_and(|cut| started < cut) {
            return false;
        }
        self.threshold = (self.size * BACKOFF).max(1.0);
        self.size = self.threshold;
        self.cut_at = Some(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn doubles_each_round_until_the_first_refusal() {
        let mut w = Window::new(64);
        assert_eq!(w.size(), 4);
        for _ in 0..4 {
            w.answered();
        }
        assert_eq!(w.size(), 8);
        for _ in 0..100 {
            w.answered();
        }
        assert_eq!(w.size(), 64, "capped at the maximum");
    }

    #[test]
    fn after_a_refusal_grows_by_one_per_window_of_answers() {
        let mut w = Window::new(64);
        for _ in 0..36 {
            w.answered();
        }
        assert_eq!(w.size(), 40);
        let t = Instant::now();
        assert!(w.refused(t, t));
        assert_eq!(w.size(), 28);
        for _ in 0..27 {
            w.answered();
        }
        assert_eq!(w.size(), 28, "not yet a whole window of answers");
        w.answered();
        w.answered();
        assert_eq!(w.size(), 29);
    }

    #[test]
    fn refusals_of_replays_sent_before_the_cut_do_not_cut_again() {
        let mut w = Window::new(64);
        for _ in 0..36 {
            w.answered();
        }
        let before = Instant::now();
        let cut = before + Duration::from_millis(10);
        w.refused(before, cut);
        assert_eq!(w.size(), 28);
        // The rest of the burst: replays that were in flight at the cut.
        for _ in 0..10 {
            w.refused(before, cut + Duration::from_millis(1));
        }
        assert_eq!(w.size(), 28);
        // A replay sent after the cut and refused: a new signal.
        w.refused(
            cut + Duration::from_millis(2),
            cut + Duration::from_millis(3),
        );
        assert_eq!(w.size(), 19);
    }

    #[test]
    fn never_falls_below_one_replay() {
        let mut w = Window::new(2);
        let mut t = Instant::now();
        for _ in 0..10 {
            t += Duration::from_millis(1);
            w.refused(t, t);
        }
        assert_eq!(w.size(), 1);
        assert_eq!(Window::new(0).size(), 1);
    }
}
