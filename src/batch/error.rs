//! Errors a [`Batch`](super::Batch) caller can receive besides its item's own
//! error.
//!
//! Each is opaque and reaches the caller boxed in a
//! [`BoxError`]; tell them apart with `downcast_ref`. A
//! refusal because the queue is full (only with
//! [`reject_when_full`](super::BatchConfigBuilder::reject_when_full)) is an
//! [`Overloaded`](crate::Overloaded) with [`Reason::QueueFull`](crate::Reason::QueueFull).

use std::{fmt, sync::Arc};

use crate::BoxError;

/// The inner service failed the whole batch this caller's item was in (or its
/// `poll_ready` failed when the batch was due).
///
/// Every caller of the batch receives a clone; [`source`](std::error::Error::source)
/// is the inner service's error.
#[derive(Clone)]
pub struct BatchFailed {
    inner: Arc<BoxError>,
}

impl BatchFailed {
    pub(crate) fn new(inner: BoxError) -> Self {
        Self {
            inner: Arc::new(inner),
        }
    }

    /// The inner service's error.
    pub fn inner(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
        &**self.inner
    }
}

impl fmt::Debug for BatchFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("BatchFailed").field(&self.inner).finish()
    }
}

impl fmt::Display for BatchFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "batch call failed: {}", self.inner)
    }
}

impl std::error::Error for BatchFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&**self.inner)
    }
}

/// The inner service answered a batch with a different number of results than
/// items, so no result can be matched to its caller; every caller of that
/// batch receives this.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LengthMismatch {
    expected: usize,
    actual: usize,
}

impl LengthMismatch {
    pub(crate) const fn new(expected: usize, actual: usize) -> Self {
        Self { expected, actual }
    }

    /// How many items the batch held.
    pub const fn expected(&self) -> usize {
        self.expected
    }

    /// How many results the inner service returned.
    pub const fn actual(&self) -> usize {
        self.actual
    }
}

impl fmt::Display for LengthMismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "inner service returned {} results for a batch of {} items",
            self.actual, self.expected
        )
    }
}

impl std::error::Error for LengthMismatch {}

/// The inner service panicked while handling this caller's batch. The batcher
/// keeps serving later batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Panicked(());

impl Panicked {
    pub(crate) const fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for Panicked {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("inner service panicked while handling the batch")
    }
}

impl std::error::Error for Panicked {}

/// The batcher's worker stopped (it was dropped, or its runtime shut down)
/// before this caller's item was answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Closed(());

impl Closed {
    pub(crate) const fn new() -> Self {
        Self(())
    }
}

impl fmt::Display for Closed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("batch worker closed")
    }
}

impl std::error::Error for Closed {}
