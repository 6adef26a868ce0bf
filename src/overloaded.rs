//! The overload contract: one error type for every way a layer can refuse work.

use std::{convert::Infallible, fmt, time::Duration};

use crate::{BoxError, Priority};

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Reason {
    /// A load shedder refused the request to protect higher-priority work.
    Shed,
    /// The wait queue in front of a concurrency limit was full.
    QueueFull,
    /// The request waited in the queue for longer than allowed.
    QueueTimeout,
    /// The queue ahead of the request would take longer to serve than the
    /// request may wait: refused at once instead of waiting to be refused.
    ExpectedWait,
    /// The caller's own deadline (`grpc-timeout`, a timeout header) ends
    /// before the request could be served.
    Deadline,
    /// The caller exceeded a rate limit (a quota, not a capacity problem).
    RateLimited,
    /// A client-side cooldown is open: the remote asked callers to back off.
    Cooldown,
}

impl Reason {
    /// `true` when the refusal is about a quota (HTTP 429, gRPC
    /// `RESOURCE_EXHAUSTED`) rather than capacity (HTTP 503, gRPC `UNAVAILABLE`).
    pub const fn is_quota(self) -> bool {
        matches!(self, Reason::RateLimited)
    }

    /// A short, stable, lower-case name for logs and metrics labels.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::Shed => "shed",
            Reason::QueueFull => "queue_full",
            Reason::QueueTimeout => "queue_timeout",
            Reason::ExpectedWait => "expected_wait",
            Reason::Deadline => "deadline",
            Reason::RateLimited => "rate_limited",
            Reason::Cooldown => "cooldown",
        }
    }

    /// Every reason, in declaration order (useful for per-reason counters).
    pub const ALL: [Reason; 7] = [
        Reason::Shed,
        Reason::QueueFull,
        Reason::QueueTimeout,
        Reason::ExpectedWait,
        Reason::Deadline,
        Reason::RateLimited,
        Reason::Cooldown,
    ];

    /// A dense index in `0..Reason::ALL.len()`.
    pub const fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A request was refused because the service (or its quota) is overloaded.
///
/// Every rejecting layer in this crate reports refusals with this one type, so
/// outer layers, logs and the HTTP and gRPC answers treat them alike. It is
/// cheap to copy and carries the [`Reason`], the request's [`Priority`] when it
/// was known, and a hint of when retrying makes sense.
///
/// Find it in a boxed error chain with [`is_overloaded`] or [`find_overloaded`].
#[derive(Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Overloaded {
    reason: Reason,
    priority: Option<Priority>,
    #[cfg_attr(
        feature = "serde",
        serde(rename = "retry_after_ms", serialize_with = "ser_ms")
    )]
    retry_after: Option<Duration>,
}

#[cfg(feature = "serde")]
fn ser_ms<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => s.serialize_some(&(d.as_millis() as u64)),
        None => s.serialize_none(),
    }
}

impl Overloaded {
    /// A refusal for `reason`, with no priority and no retry hint.
    pub const fn new(reason: Reason) -> Self {
        Self {
            reason,
            priority: None,
            retry_after: None,
        }
    }

    /// Records the priority of the refused request.
    #[must_use]
    pub const fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Records when the caller may usefully try again.
    #[must_use]
    pub const fn with_retry_after(mut self, retry_after: Duration) -> Self {
        self.retry_after = Some(retry_after);
        self
    }

    /// Why the request was refused.
    pub const fn reason(&self) -> Reason {
        self.reason
    }

    /// The refused request's priority, when the refusing layer knew it.
    pub const fn priority(&self) -> Option<Priority> {
        self.priority
    }

    /// How long the caller should wait before trying again, if the layer knew.
    pub const fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// `true` for quota refusals (429 / `RESOURCE_EXHAUSTED`), `false` for
    /// capacity refusals (503 / `UNAVAILABLE`).
    pub const fn is_quota(&self) -> bool {
        self.reason.is_quota()
    }
}

impl fmt::Debug for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Overloaded")
            .field("reason", &self.reason)
            .field("priority", &self.priority)
            .field("retry_after", &self.retry_after)
            .finish()
    }
}

impl fmt::Display for Overloaded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.reason {
            Reason::Shed => "request shed: service overloaded",
            Reason::QueueFull => "service overloaded: wait queue full",
            Reason::QueueTimeout => "service overloaded: timed out in the wait queue",
            Reason::ExpectedWait => "service overloaded: the wait would be too long",
            Reason::Deadline => {
                "service overloaded: the request's deadline ends before it could be served"
            }
            Reason::RateLimited => "rate limit exceeded",
            Reason::Cooldown => "remote asked callers to back off",
        };
        f.write_str(what)?;
        if let Some(p) = self.priority {
            write!(f, " (priority {p})")?;
        }
        if let Some(d) = self.retry_after {
            write!(f, "; retry after {} ms", d.as_millis())?;
        }
        Ok(())
    }
}

impl std::error::Error for Overloaded {}

/// `true` if `err`, or any error in its `source()` chain, is an [`Overloaded`].
pub fn is_overloaded(err: &(dyn std::error::Error + 'static)) -> bool {
    find_overloaded(err).is_some()
}

/// The first [`Overloaded`] in `err`'s `source()` chain, if any.
pub fn find_overloaded<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Overloaded> {
    let mut current = Some(err);
    while let Some(e) = current {
        if let Some(o) = e.downcast_ref::<Overloaded>() {
            return Some(o);
        }
        current = e.source();
    }
    None
}

/// An error type that may carry an [`Overloaded`].
///
/// [`RetryAfter`](crate::retry_after::RetryAfter) uses it to find refusals in
/// its inner service's errors while passing every other error through
/// untouched, whatever the error type.
pub trait OverloadSource {
    /// The [`Overloaded`] this error is, or wraps, if any.
    fn overloaded(&self) -> Option<&Overloaded>;
}

impl OverloadSource for BoxError {
    fn overloaded(&self) -> Option<&Overloaded> {
        find_overloaded(self.as_ref())
    }
}

impl OverloadSource for Overloaded {
    fn overloaded(&self) -> Option<&Overloaded> {
        Some(self)
    }
}

impl OverloadSource for Infallible {
    fn overloaded(&self) -> Option<&Overloaded> {
        match *self {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(BoxError);
    impl fmt::Display for Wrapper {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("wrapper")
        }
    }
    impl std::error::Error for Wrapper {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(self.0.as_ref())
        }
    }

    #[test]
    fn finds_overloaded_through_source_chain() {
        let inner = Overloaded::new(Reason::QueueFull).with_priority(Priority::Low);
        let err: BoxError = Box::new(Wrapper(Box::new(Wrapper(Box::new(inner)))));
        assert!(is_overloaded(err.as_ref()));
        assert_eq!(err.overloaded(), Some(&inner));

        let other: BoxError = Box::new(Wrapper("plain".into()));
        assert!(!is_overloaded(other.as_ref()));
        assert_eq!(other.overloaded(), None);
    }

    #[test]
    fn quota_versus_capacity() {
        assert!(Overloaded::new(Reason::RateLimited).is_quota());
        for r in [
            Reason::Shed,
            Reason::QueueFull,
            Reason::QueueTimeout,
            Reason::Cooldown,
        ] {
            assert!(!Overloaded::new(r).is_quota(), "{r}");
        }
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(r.index(), i);
        }
    }

    #[test]
    fn display_names_reason_priority_and_hint() {
        let o = Overloaded::new(Reason::Shed)
            .with_priority(Priority::High)
            .with_retry_after(Duration::from_millis(1500));
        assert_eq!(
            o.to_string(),
            "request shed: service overloaded (priority high); retry after 1500 ms"
        );
    }
}
