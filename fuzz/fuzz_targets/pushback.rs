//! `parse_pushback_ms` on any bytes: it never panics, never reports more than
//! `MAX_HINT`, and is `Some` exactly for a non-negative decimal that fits
//! gRPC's `int32` (surrounding whitespace aside), read as that many
//! milliseconds.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tower_spillway::retry_after::{MAX_HINT, parse_pushback_ms};

fuzz_target!(|value: &[u8]| {
    let got = parse_pushback_ms(value);
    if let Some(d) = got {
        assert!(d <= MAX_HINT, "{d:?} over the cap");
    }

    let trimmed = value.trim_ascii();
    let int32 = if !trimmed.is_empty() && trimmed.iter().all(u8::is_ascii_digit) {
        // All digits, so no sign: `i32` parsing rejects exactly what is too big.
        std::str::from_utf8(trimmed).unwrap().parse::<i32>().ok()
    } else {
        None
    };
    let want = int32.map(|ms| Duration::from_millis(ms.unsigned_abs().into()).min(MAX_HINT));
    assert_eq!(got, want);
});
