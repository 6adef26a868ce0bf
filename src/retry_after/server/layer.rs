use std::sync::Arc;

use tower_layer::Layer;

use super::RetryAfter;
use crate::{RetryAfterPolicy, http::ProblemDetails};

/// Answers [`Overloaded`](crate::Overloaded) errors from the inner service with
/// refusal responses: `503`/`429` with `Retry-After` and a problem+json body,
/// or a trailers-only gRPC status with `grpc-retry-pushback-ms`.
///
/// Every other error passes through untouched, with its own type. The layers
/// of this crate answer their own refusals on their HTTP face and do not need
/// this; it is for errors that come from elsewhere: a generic face, a tower
/// layer wrapped in one of ours, a handler that returns `Overloaded`.
///
/// Optionally ([`fill_missing`](Self::fill_missing)) it also adds a
/// `Retry-After` to 503 and 429 responses that lack one (and
/// `grpc-retry-pushback-ms` to trailers-only `UNAVAILABLE` /
/// `RESOURCE_EXHAUSTED` answers), so every overload answer tells the client
/// when to return.
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_spillway::retry_after::RetryAfterLayer;
///
/// let stack = ServiceBuilder::new().layer(RetryAfterLayer::new());
/// # let _ = stack;
/// ```
#[derive(Debug, Clone)]
pub struct RetryAfterLayer<M = ProblemDetails> {
    config: Config<M>,
}

#[derive(Debug, Clone)]
pub(super) struct Config<M> {
    pub(super) make: M,
    pub(super) fill_missing: Option<RetryAfterPolicy>,
}

impl RetryAfterLayer<ProblemDetails> {
    /// Answers refusals with [`ProblemDetails`].
    pub fn new() -> Self {
        Self::with_rejection(ProblemDetails::default())
    }
}

impl Default for RetryAfterLayer<ProblemDetails> {
    fn default() -> Self {
        Self::new()
    }
}

impl<M> RetryAfterLayer<M> {
    /// Answers refusals with responses from `make`.
    pub fn with_rejection(make: M) -> Self {
        Self {
            config: Config {
                make,
                fill_missing: None,
            },
        }
    }

    /// Adds a retry hint computed by `policy` (with no observed hint, so its
    /// default delay, jittered) to inner 503/429 responses, and trailers-only
    /// gRPC 14/8 answers, that carry none.
    #[must_use]
    pub fn fill_missing(mut self, policy: RetryAfterPolicy) -> Self {
        self.config.fill_missing = Some(policy);
        self
    }
}

impl<S, M: Clone> Layer<S> for RetryAfterLayer<M> {
    type Service = RetryAfter<S, M>;

    fn layer(&self, inner: S) -> Self::Service {
        RetryAfter {
            inner,
            config: Arc::new(self.config.clone()),
        }
    }
}
