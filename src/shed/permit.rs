//! The permit an admitted request holds until it finishes.

use std::sync::{Arc, atomic::Ordering};

use super::state::State;

/// The place an admitted request holds until it finishes: released exactly
/// once, when its response (on the HTTP face, its response body) ends, fails
/// or is dropped, or when the caller gives up.
// Two words, so that admitting returns it in registers.
pub struct ShedPermit(Option<Held>);

/// What an admitted (not bypassed) request holds.
struct Held {
    state: Arc<State>,
    /// Admission time for a latency sample, in nanoseconds since the
    /// adaptive window epoch plus one (0 when no sample is wanted), with
    /// [`CLAIMED`] set while a claim on an external signal is held.
    start: u64,
}

/// The bit of [`Held::start`] that marks a claim: admitted against an
/// external signal that may not count the request yet. (Nanoseconds since
/// the epoch reach bit 63 after 292 years.)
const CLAIMED: u64 = 1 << 63;

impl std::fmt::Debug for ShedPermit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShedPermit").finish_non_exhaustive()
    }
}

impl ShedPermit {
    /// The permit of a bypassed request: it holds nothing.
    pub(crate) const fn none() -> Self {
        Self(None)
    }

    /// The permit of a request admitted by `state`; `start` as in
    /// [`Held::start`], without the claim bit.
    #[inline]
    pub(super) fn new(state: Arc<State>, claimed: bool, start: u64) -> Self {
        let claim = if claimed { CLAIMED } else { 0 };
        Self(Some(Held {
            state,
            start: start | claim,
        }))
    }

    /// The inner service has the request and has been polled once: an
    /// external signal counts it now.
    #[inline]
    pub(crate) fn settle(&mut self) {
        if let Some(held) = &mut self.0 {
            if held.start & CLAIMED != 0 {
                held.start &= !CLAIMED;
                held.state.claims.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }

    /// The request finished normally: in adaptive mode its latency is a
    /// sample. (A permit merely dropped gives none: a cancelled or failed
    /// request says nothing about queueing.)
    #[inline]
    pub(crate) fn complete(mut self) {
        if let Some(held) = &mut self.0 {
            let start = held.start & !CLAIMED;
            held.start &= CLAIMED;
            if start != 0 {
                held.state.sample(start);
            }
        }
    }
}

impl Drop for ShedPermit {
    #[inline]
    fn drop(&mut self) {
        self.settle();
        if let Some(held) = &self.0 {
            held.state.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// A finished request is a latency sample; one that failed or was dropped
/// half-way is not.
impl crate::guard::OnBodyEnd for ShedPermit {
    #[inline]
    fn on_body_end(self, end: crate::guard::BodyEnd<'_>) {
        if let crate::guard::BodyEnd::Complete { .. } = end {
            self.complete();
        }
    }
}
