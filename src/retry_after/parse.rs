//! Pure, capped parsers for the headers servers use to ask for backoff.
//!
//! Both are total: any bytes give an answer, never a panic, and no value can
//! make a caller wait longer than [`MAX_HINT`].

use std::time::{Duration, SystemTime};

/// The longest wait any parsed hint reports: one day. Larger values (a hostile
/// `Retry-After: 99999999999`) are reported as this, and callers compare it
/// against their own, smaller cap.
pub const MAX_HINT: Duration = Duration::from_secs(24 * 60 * 60);

/// Parses a `Retry-After` value (RFC 9110 §10.2.3) into a delay from `now`.
///
/// - delay-seconds (`120`): that many seconds;
/// - an HTTP-date in any of its three forms (IMF-fixdate, RFC 850, asctime):
///   the time until then, or zero for a date in the past;
/// - anything else — negative numbers, fractions, garbage, non-ASCII — is
///   `None`: the header is ignored.
///
/// The result is at most [`MAX_HINT`].
///
/// ```
/// use std::time::{Duration, SystemTime};
/// use tower_spillway::retry_after::parse_retry_after;
///
/// // Wed, 21 Oct 2015 07:28:00 GMT
/// let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_445_412_480);
/// assert_eq!(parse_retry_after(b"120", now), Some(Duration::from_secs(120)));
/// assert_eq!(
///     parse_retry_after(b"Wed, 21 Oct 2015 07:30:00 GMT", now),
///     Some(Duration::from_secs(120))
/// );
/// assert_eq!(parse_retry_after(b"-1", now), None);
/// ```
pub fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<Duration> {
    let value = value.trim_ascii();
    if value.is_empty() {
        return None;
    }
    if value.iter().all(u8::is_ascii_digit) {
        return Some(Duration::from_secs(saturating_decimal(value)).min(MAX_HINT));
    }
    let text = std::str::from_utf8(value).ok()?;
    let date = httpdate::parse_http_date(text).ok()?;
    let delay = date.duration_since(now).unwrap_or(Duration::ZERO);
    Some(delay.min(MAX_HINT))
}

/// Parses `grpc-retry-pushback-ms` (gRFC A6).
///
/// A non-negative integer is a delay in milliseconds (at most [`MAX_HINT`]).
/// A negative or unparseable value is `None`, which gRPC defines as "do not
/// retry".
///
/// ```
/// use std::time::Duration;
/// use tower_spillway::retry_after::parse_pushback_ms;
///
/// assert_eq!(parse_pushback_ms(b"250"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_pushback_ms(b"-1"), None);
/// ```
pub fn parse_pushback_ms(value: &[u8]) -> Option<Duration> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    Some(Duration::from_millis(saturating_decimal(value)).min(MAX_HINT))
}

/// An all-digit string as a number, saturating instead of overflowing.
fn saturating_decimal(digits: &[u8]) -> u64 {
    digits.iter().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn delay_seconds() {
        let now = at(0);
        assert_eq!(parse_retry_after(b"0", now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after(b" 7 ", now), Some(Duration::from_secs(7)));
        assert_eq!(
            parse_retry_after(b"99999999999999999999999999", now),
            Some(MAX_HINT)
        );
    }

    #[test]
    fn all_three_date_forms() {
        // Sun, 06 Nov 1994 08:49:37 GMT, in RFC 9110's three spellings.
        let date = 784_111_777;
        let now = at(date - 30);
        for form in [
            "Sun, 06 Nov 1994 08:49:37 GMT",
            "Sunday, 06-Nov-94 08:49:37 GMT",
            "Sun Nov  6 08:49:37 1994",
        ] {
            assert_eq!(
                parse_retry_after(form.as_bytes(), now),
                Some(Duration::from_secs(30)),
                "{form}"
            );
        }
    }

    #[test]
    fn past_date_means_now() {
        assert_eq!(
            parse_retry_after(b"Sun, 06 Nov 1994 08:49:37 GMT", at(1_000_000_000)),
            Some(Duration::ZERO)
        );
    }

    #[test]
    fn far_future_date_is_capped() {
        assert_eq!(
            parse_retry_after(b"Fri, 31 Dec 9999 23:59:59 GMT", at(0)),
            Some(MAX_HINT)
        );
    }

    #[test]
    fn hostile_values_are_ignored() {
        for bad in [
            &b""[..],
            b"-1",
            b"1.5",
            b"+3",
            b"soon",
            b"1e9",
            b"\xff\xfe",
            b"Sun, 32 Nov 1994 08:49:37 GMT",
            b"12 34",
        ] {
            assert_eq!(parse_retry_after(bad, at(0)), None, "{bad:?}");
        }
    }

    #[test]
    fn pushback() {
        assert_eq!(parse_pushback_ms(b"0"), Some(Duration::ZERO));
        assert_eq!(
            parse_pushback_ms(b"1500"),
            Some(Duration::from_millis(1500))
        );
        assert_eq!(parse_pushback_ms(b"184467440737095516150"), Some(MAX_HINT));
        for bad in [&b"-5"[..], b"", b"abc", b"1.0", b"\x00"] {
            assert_eq!(parse_pushback_ms(bad), None, "{bad:?}");
        }
    }
}
