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
    let date = match rfc850(text, now) {
        Some(date) => date,
        None => httpdate::parse_http_date(text).ok()?,
    };
    let delay = date.duration_since(now).unwrap_or(Duration::ZERO);
    Some(delay.min(MAX_HINT))
}

/// An RFC 850 date (`Sunday, 06-Nov-94 08:49:37 GMT`), whose two-digit year
/// RFC 9110 §5.6.7 has recipients read as the year with those digits that is
/// at most 50 years after `now`'s (in 2026, `75` is 2075 and `80` is 1980).
/// The weekday must be a weekday's name; whether it matches the date is not
/// checked. `None` when `text` is not in this form.
fn rfc850(text: &str, now: SystemTime) -> Option<SystemTime> {
    const WEEKDAYS: [&str; 7] = [
        "Monday",
        "Tuesday",
        "Wednesday",
        "Thursday",
        "Friday",
        "Saturday",
        "Sunday",
    ];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (weekday, rest) = text.split_once(", ")?;
    if !WEEKDAYS.contains(&weekday) {
        return None;
    }
    let b = rest.as_bytes();
    // DD-Mon-YY HH:MM:SS GMT
    // (Bytes, not `str` slices: a multi-byte character must not panic.)
    if b.len() != 22 || &b[18..] != b" GMT" || b[2] != b'-' || b[6] != b'-' {
        return None;
    }
    if b[9] != b' ' || b[12] != b':' || b[15] != b':' {
        return None;
    }
    let num = |at: usize| -> Option<i64> {
        let pair = &b[at..at + 2];
        pair.iter()
            .all(u8::is_ascii_digit)
            .then(|| i64::from(pair[0] - b'0') * 10 + i64::from(pair[1] - b'0'))
    };
    let day = num(0)?;
    let month = MONTHS.iter().position(|m| m.as_bytes() == &b[3..6])? as i64 + 1;
    let yy = num(7)?;
    let (hour, minute, second) = (num(10)?, num(13)?, num(16)?);
    if !(1..=31).contains(&day) || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let now_secs = now.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs();
    let (now_year, _, _) = civil_from_days(i64::try_from(now_secs / 86_400).ok()?);
    let mut year = now_year - now_year.rem_euclid(100) + yy;
    if year > now_year + 50 {
        year -= 100;
    }
    let days = days_from_civil(year, month, day);
    // Checked: against a clock near the end of `SystemTime`, the century
    // ahead does not fit an `i64` of seconds.
    let secs = days
        .checked_mul(86_400)?
        .checked_add(hour * 3_600 + minute * 60 + second)?;
    let secs = u64::try_from(secs).unwrap_or(0);
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The date of a day since 1970-01-01 (the inverse of [`days_from_civil`]).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// Parses `grpc-retry-pushback-ms` (gRFC A6).
///
/// A non-negative integer that fits gRPC's `int32` is a delay in
/// milliseconds (at most [`MAX_HINT`]). A negative, unparseable or larger
/// value is `None`, which gRPC defines as "do not retry" (gRFC A6 peers read
/// the header as an `int32`, and treat what does not parse as one so).
///
/// ```
/// use std::time::Duration;
/// use tower_spillway::retry_after::parse_pushback_ms;
///
/// assert_eq!(parse_pushback_ms(b"250"), Some(Duration::from_millis(250)));
/// assert_eq!(parse_pushback_ms(b"-1"), None);
/// assert_eq!(parse_pushback_ms(b"2147483648"), None);
/// ```
pub fn parse_pushback_ms(value: &[u8]) -> Option<Duration> {
    let value = value.trim_ascii();
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let ms = saturating_decimal(value);
    if ms > i32::MAX as u64 {
        return None;
    }
    Some(Duration::from_millis(ms).min(MAX_HINT))
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
    fn rfc850_two_digit_years_follow_the_fifty_year_rule() {
        // 2026-12-02T00:00:00Z.
        let now = at(1_796_169_600);
        // The same day, a minute later: 26 is 2026.
        assert_eq!(
            parse_retry_after(b"Wednesday, 02-Dec-26 00:01:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        // 75 is 2075, 49 years ahead (capped), not 1975, in the past.
        assert_eq!(
            parse_retry_after(b"Tuesday, 01-Jan-75 00:00:00 GMT", now),
            Some(MAX_HINT)
        );
        // 80 would be 54 years ahead: it is 1980.
        assert_eq!(
            parse_retry_after(b"Tuesday, 01-Jan-80 00:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        // RFC 9110's own example, long past.
        assert_eq!(
            parse_retry_after(b"Sunday, 06-Nov-94 08:49:37 GMT", now),
            Some(Duration::ZERO)
        );
        for bad in [
            &b"Someday, 06-Nov-94 08:49:37 GMT"[..],
            b"Sunday, 06-Xyz-94 08:49:37 GMT",
            b"Sunday, 32-Nov-94 08:49:37 GMT",
            b"Sunday, 06-Nov-94 25:49:37 GMT",
            b"Sunday, 06-Nov-94 08:49:37 UTC",
            "Sunday, 06-Nov-94 08:49:3é GMT".as_bytes(),
            "Sunday, 06-N\u{e9}-94 08:49:37 GMT".as_bytes(),
        ] {
            assert_eq!(parse_retry_after(bad, now), None, "{bad:?}");
        }
    }

    #[test]
    fn civil_dates_round_trip() {
        for days in [-719_468, -1, 0, 1, 10_957, 20_424, 40_000, 2_932_896] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn pushback() {
        assert_eq!(parse_pushback_ms(b"0"), Some(Duration::ZERO));
        assert_eq!(
            parse_pushback_ms(b"1500"),
            Some(Duration::from_millis(1500))
        );
        // The largest int32 is a wait (capped); beyond it, in i64 or not,
        // gRFC A6 peers do not retry.
        assert_eq!(parse_pushback_ms(b"2147483647"), Some(MAX_HINT));
        for bad in [
            &b"-5"[..],
            b"",
            b"abc",
            b"1.0",
            b"\x00",
            b"2147483648",
            b"9223372036854775808",
            b"184467440737095516150",
        ] {
            assert_eq!(parse_pushback_ms(bad), None, "{bad:?}");
        }
    }
}
