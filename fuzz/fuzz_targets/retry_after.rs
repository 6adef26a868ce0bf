//! `parse_retry_after` on any bytes and any clock: it never panics, never
//! reports more than `MAX_HINT`, ignores surrounding whitespace, reads
//! delay-seconds exactly (capped), and every date it accepts is a real one:
//! formatted again as an IMF-fixdate, it gives the same wait.

#![no_main]

use std::time::{Duration, SystemTime};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use tower_spillway::retry_after::{MAX_HINT, parse_retry_after};

/// 9999-12-31T23:59:59Z, the last instant an HTTP-date can spell.
const LAST_HTTP_DATE: u64 = 253_402_300_799;

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    now: Clock,
    value: &'a [u8],
}

#[derive(Debug, Arbitrary)]
enum Clock {
    /// Seconds since the Unix epoch, up to 2106: where HTTP-dates lie ahead.
    Plausible(u32),
    /// Seconds either side of the epoch: whatever a `SystemTime` can hold.
    Any(i64),
    /// Seconds before the last second a `SystemTime` can hold, where date
    /// arithmetic runs out of room.
    NearTheEnd(u32),
}

fuzz_target!(|input: Input<'_>| {
    let Some(now) = clock(input.now) else {
        return;
    };
    let value = input.value;
    let got = parse_retry_after(value, now);
    if let Some(d) = got {
        assert!(d <= MAX_HINT, "{d:?} over the cap");
    }

    let padded = [&b" \t"[..], value, b"\t "].concat();
    assert_eq!(
        parse_retry_after(&padded, now),
        got,
        "whitespace changed the answer"
    );

    let trimmed = value.trim_ascii();
    if !trimmed.is_empty() && trimmed.iter().all(u8::is_ascii_digit) {
        let secs = std::str::from_utf8(trimmed)
            .unwrap()
            .parse::<u64>()
            .unwrap_or(u64::MAX);
        assert_eq!(got, Some(Duration::from_secs(secs).min(MAX_HINT)));
    } else if let Some(d) = got {
        // A date strictly between now and the cap is now + d; written as an
        // HTTP-date (when one can spell it), it must mean the same wait.
        let until = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()
            .map(|t| t + d);
        if d > Duration::ZERO
            && d < MAX_HINT
            && until.is_some_and(|t| t.as_secs() <= LAST_HTTP_DATE)
        {
            let again = httpdate::fmt_http_date(now + d);
            assert_eq!(parse_retry_after(again.as_bytes(), now), Some(d), "{again}");
        }
    }
});

fn clock(now: Clock) -> Option<SystemTime> {
    let secs = match now {
        Clock::Plausible(secs) => i64::from(secs),
        Clock::Any(secs) => secs,
        Clock::NearTheEnd(secs) => i64::MAX - i64::from(secs),
    };
    let offset = Duration::from_secs(secs.unsigned_abs());
    if secs < 0 {
        SystemTime::UNIX_EPOCH.checked_sub(offset)
    } else {
        SystemTime::UNIX_EPOCH.checked_add(offset)
    }
}
