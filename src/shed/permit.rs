//! The permit an admitted request holds until it finishes.

use std::sync::{Arc, atomic::Ordering};

use super::state::State;

/// The place an admitted request holds until it finishes: released exactly
/// once, when its response (on the HTTP face, its response body) ends, fails
/// or is dropped, or when the caller gives up.
pub struct ShedPermit {
    /// `None` for a bypassed request, which holds nothing.
    pub(super) state: Option<Arc<State>>,
    pub(super) claimed: bool,
    /// Admission time for a latency sample, in nanoseconds since the
    /// adaptive window epoch plus one; 0 when no sample is wanted.
    pub(super) start: u64,
}

impl std::fmt::Debug for ShedPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShedPermit").finish_non_exhaustive()
    }
}

impl ShedPermit {
    /// The permit of a bypassed request: it holds nothing.
    pub(crate) const fn none() -> Self {
        Self {
            state: None,
            claimed: false,
            start: 0,
        }
    }

    /// The inner service has the request and has been polled once: an
    /// external signal counts it now.
    #[inline]
    pub(crate) fn settle(&mut self) {
        if std::mem::take(&mut self.claimed) {
            if let Some(state) = &self.state {
                state.claims.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// The request finished normally: in adaptive mode its latency is a
    /// sample. (A permit merely dropped gives none: a cancelled or failed
    /// request says nothing about queueing.)
    #[inline]
    pub(crate) fn complete(mut self) {
        let start = std::mem::take(&mut self.start);
        if let (true, Some(state)) = (start != 0, &self.state) {
            state.sample(start);
        }
    }
}

impl Drop for ShedPermit {
    #[inline]
    fn drop(&mut self) {
        self.settle();
        if let Some(state) = &self.state {
            state.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A finished request is a latency sample; one that failed or was dropped
/// half-way is not.
impl crate::guard::OnBodyEnd for ShedPermit {
    fn on_body_end(self, end: crate::guard::BodyEnd<'_>) {
        if let crate::guard::BodyEnd::Complete { .. } = end {
            self.complete();
        }
    }
}
