//! Property tests of the retry-hint parsers: total on any input, capped, and
//! what the crate emits parses back to what it meant.

use std::time::{Duration, SystemTime};

use proptest::prelude::*;
use tower_spillway::retry_after::{MAX_HINT, parse_pushback_ms, parse_retry_after};

fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

proptest! {
    #[test]
    fn retry_after_never_panics_and_is_capped(bytes in proptest::collection::vec(any::<u8>(), 0..64), now in 0u64..4_000_000_000) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now);
        if let Some(d) = parse_retry_after(&bytes, now) {
            prop_assert!(d <= MAX_HINT);
        }
    }

    #[test]
    fn pushback_never_panics_and_is_capped(bytes in proptest::collection::vec(any::<u8>(), 0..32)) {
        if let Some(d) = parse_pushback_ms(&bytes) {
            prop_assert!(d <= MAX_HINT);
        }
    }

    #[test]
    fn emitted_retry_after_seconds_parse_back(ms in 0u64..(24 * 3600 * 1000)) {
        let delay = Duration::from_millis(ms);
        // What the refusal responses emit: whole seconds, rounded up, at least 1.
        let emitted = ceil_secs(delay).max(1).to_string();
        let parsed = parse_retry_after(emitted.as_bytes(), SystemTime::UNIX_EPOCH).unwrap();
        prop_assert_eq!(parsed, Duration::from_secs(ceil_secs(delay).max(1)).min(MAX_HINT));
        prop_assert!(parsed >= delay.min(MAX_HINT));
    }

    #[test]
    fn emitted_http_dates_parse_back(now in 0u64..4_000_000_000, ahead in 0u64..(24 * 3600)) {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(now);
        let at = now + Duration::from_secs(ahead);
        let text = httpdate::fmt_http_date(at);
        prop_assert_eq!(parse_retry_after(text.as_bytes(), now), Some(Duration::from_secs(ahead)));
    }

    #[test]
    fn emitted_pushback_parses_back(ms in 0u64..(24 * 3600 * 1000)) {
        prop_assert_eq!(parse_pushback_ms(ms.to_string().as_bytes()), Some(Duration::from_millis(ms)));
    }

    #[test]
    fn negative_pushback_means_do_not_retry(ms in 1i64..i64::MAX) {
        let text = format!("-{ms}");
        prop_assert_eq!(parse_pushback_ms(text.as_bytes()), None);
    }
}
