//! Request deadlines: how long a caller will wait for its answer.
//!
//! A gRPC caller says it in `grpc-timeout`; an HTTP caller may send a timeout
//! header if the operator names one. [`DeadlineLayer`] reads it, turns it into
//! a [`Deadline`] in the request's extensions, and every later layer sees it:
//! an [`AdaptiveLimit`](crate::limit::AdaptiveLimit) refuses at once, with
//! [`Reason::Deadline`](crate::Reason::Deadline), a request whose deadline
//! ends before its expected wait does, instead of queueing it to die, and
//! handlers can read the deadline to bound their own work.
//!
//! ```
//! use std::time::Duration;
//! use axum::{Router, routing::get};
//! use tower_spillway::deadline::DeadlineLayer;
//!
//! let app: Router = Router::new()
//!     .route("/", get(|| async { "hello" }))
//!     // `grpc-timeout` always; `x-request-timeout: 250ms` (or `0.25`, in
//!     // seconds) for HTTP callers; never more than 30 s.
//!     .layer(DeadlineLayer::new().header("x-request-timeout").max(Duration::from_secs(30)));
//! ```
//!
//! # Differences from tower's `Timeout`
//!
//! tower's `Timeout` enforces a timeout the *server* chose, on every request.
//! A deadline is the *caller's*: this layer does not cancel anything; it tells
//! the layers below how long the caller will wait, so work that cannot finish
//! in time is refused before it is queued.

use std::time::Duration;

use tokio::time::Instant;

/// The moment a caller stops waiting for its answer.
///
/// Stored in a request's extensions by [`DeadlineLayer`] (or by any code of
/// the user's) and read by the limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Deadline(Instant);

impl Deadline {
    /// A deadline at `at`.
    pub const fn at(at: Instant) -> Self {
        Self(at)
    }

    /// A deadline `timeout` from now (saturating far in the future).
    pub fn after(timeout: Duration) -> Self {
        let now = Instant::now();
        Self(now.checked_add(timeout).unwrap_or_else(|| far_future(now)))
    }

    /// When the caller stops waiting.
    pub const fn instant(self) -> Instant {
        self.0
    }

    /// The time left, zero once it has passed.
    pub fn remaining(self) -> Duration {
        self.0.saturating_duration_since(Instant::now())
    }
}

/// About thirty years from `now`: later than any deadline means anything.
fn far_future(now: Instant) -> Instant {
    now.checked_add(Duration::from_secs(86_400 * 365 * 30))
        .unwrap_or(now)
}

/// Parses a `grpc-timeout` value: up to 8 ASCII digits and a unit
/// (`H`, `M`, `S`, `m`, `u`, `n`), as the gRPC-over-HTTP/2 protocol defines
/// it. Anything else is `None`.
///
/// ```
/// use std::time::Duration;
/// use tower_spillway::deadline::parse_grpc_timeout;
///
/// assert_eq!(parse_grpc_timeout(b"250m"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_grpc_timeout(b"1H"), Some(Duration::from_secs(3600)));
/// assert_eq!(parse_grpc_timeout(b"123456789S"), None); // nine digits
/// assert_eq!(parse_grpc_timeout(b"-1S"), None);
/// ```
pub fn parse_grpc_timeout(value: &[u8]) -> Option<Duration> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some(match unit {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return None,
    })
}

/// Parses an HTTP timeout header: a number of seconds (`2`, `0.25`) or a
/// number with a unit (`250ms`, `2s`, `1m`). Negative, empty, non-finite or
/// otherwise malformed values are `None`; at most 16 bytes are read.
///
/// ```
/// use std::time::Duration;
/// use tower_spillway::deadline::parse_timeout_header;
///
/// assert_eq!(parse_timeout_header(b"0.25"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_timeout_header(b"250ms"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_timeout_header(b"2s"), Some(Duration::from_secs(2)));
/// assert_eq!(parse_timeout_header(b"soon"), None);
/// ```
pub fn parse_timeout_header(value: &[u8]) -> Option<Duration> {
    if value.is_empty() || value.len() > 16 {
        return None;
    }
    let text = std::str::from_utf8(value).ok()?.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    if number.is_empty() || number.starts_with('.') && number.len() == 1 {
        return None;
    }
    let n: f64 = number.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1e3,
        "us" => n / 1e6,
        "m" => n * 60.0,
        _ => return None,
    };
    Duration::try_from_secs_f64(secs).ok()
}

#[cfg(feature = "http")]
mod layer;
#[cfg(feature = "http")]
pub use layer::{DeadlineLayer, SetDeadline};

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units_and_garbage() {
        assert_eq!(parse_grpc_timeout(b"5S"), Some(Duration::from_secs(5)));
        assert_eq!(parse_grpc_timeout(b"2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout(b"7u"), Some(Duration::from_micros(7)));
        assert_eq!(parse_grpc_timeout(b"9n"), Some(Duration::from_nanos(9)));
        assert_eq!(
            parse_grpc_timeout(b"99999999H"),
            Some(Duration::from_secs(99_999_999 * 3600))
        );
        for bad in [
            &b""[..],
            b"S",
            b"10",
            b"10s",
            b"1.5S",
            b" 1S",
            b"1 S",
            b"\xff1S",
        ] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn timeout_header_forms_and_garbage() {
        assert_eq!(parse_timeout_header(b"3"), Some(Duration::from_secs(3)));
        assert_eq!(parse_timeout_header(b"1m"), Some(Duration::from_secs(60)));
        assert_eq!(
            parse_timeout_header(b"500us"),
            Some(Duration::from_micros(500))
        );
        assert_eq!(parse_timeout_header(b" 2s "), Some(Duration::from_secs(2)));
        for bad in [
            &b""[..],
            b".",
            b"-1",
            b"1e9",
            b"inf",
            b"NaN",
            b"1h",
            b"12345678901234567",
            b"1..2",
        ] {
            assert_eq!(parse_timeout_header(bad), None, "{bad:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_counts_down_and_saturates() {
        let d = Deadline::after(Duration::from_millis(300));
        assert_eq!(d.remaining(), Duration::from_millis(300));
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(d.remaining(), Duration::from_millis(100));
        tokio::time::advance(Duration::from_millis(200)).await;
        assert_eq!(d.remaining(), Duration::ZERO);
        // A huge timeout is far away, not a panic.
        assert!(Deadline::after(Duration::MAX).remaining() > Duration::from_secs(86_400));
    }
}
