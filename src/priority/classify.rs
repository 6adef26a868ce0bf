use super::{Cohort, Priority};
use crate::deadline::Deadline;

/// Decides a request's [`Priority`].
///
/// Implemented for every `Fn(&Req) -> Priority`, so a closure is a classifier:
///
/// ```
/// use tower_spillway::priority::{Classify, Priority};
///
/// let by_len = |req: &String| if req.len() > 10 { Priority::Low } else { Priority::High };
/// assert_eq!(by_len.classify(&"short".to_string()), Priority::High);
/// ```
///
/// A classifier sees the request before it is admitted, so it must be cheap: no
/// allocation, no I/O.
pub trait Classify<Req> {
    /// The priority of `req`.
    fn classify(&self, req: &Req) -> Priority;

    /// The [`Cohort`] of `req`'s caller, when the classifier knows it.
    ///
    /// Adaptive shedding refuses part of a tier by cohort; without one, it
    /// picks a cohort per request at random. The default knows none.
    fn cohort(&self, _req: &Req) -> Option<Cohort> {
        None
    }

    /// When `req`'s caller stops waiting, when the classifier knows it.
    ///
    /// The limiter refuses at once a request whose deadline ends before its
    /// expected wait would. The default knows none.
    fn deadline(&self, _req: &Req) -> Option<Deadline> {
        None
    }
}

impl<F, Req> Classify<Req> for F
where
    F: Fn(&Req) -> Priority,
{
    fn classify(&self, req: &Req) -> Priority {
        self(req)
    }
}

impl<Req> Classify<Req> for Priority {
    /// A fixed priority for every request.
    fn classify(&self, _req: &Req) -> Priority {
        *self
    }
}

/// The classifier that reads the [`Priority`] a [`PriorityLayer`](super::PriorityLayer)
/// stamped into the request's extensions, or [`Priority::Default`] when there is none,
/// and the [`Cohort`] it stamped, if any.
///
/// This is what the shedding and limiting layers use unless told otherwise.
#[derive(Debug, Clone, Copy, Default)]
pub struct FromExtensions;

#[cfg(feature = "http")]
impl<B> Classify<http::Request<B>> for FromExtensions {
    fn classify(&self, req: &http::Request<B>) -> Priority {
        req.extensions()
            .get::<Priority>()
            .copied()
            .unwrap_or_default()
    }

    /// The [`Cohort`] a [`PriorityLayer`](super::PriorityLayer) stamped, if any.
    fn cohort(&self, req: &http::Request<B>) -> Option<Cohort> {
        req.extensions().get::<Cohort>().copied()
    }

    /// The [`Deadline`] a [`DeadlineLayer`](crate::deadline::DeadlineLayer) stamped, if any.
    fn deadline(&self, req: &http::Request<B>) -> Option<Deadline> {
        req.extensions().get::<Deadline>().copied()
    }
}
