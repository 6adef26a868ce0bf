//! `parse_grpc_timeout` and `parse_timeout_header` on any bytes. A gRPC
//! timeout is `Some` exactly for 1 to 8 digits and a unit, and re-encoded as
//! a gRPC client does (rounded up, in the finest unit that fits 8 digits) it
//! parses back to at least itself and less than one unit more. An HTTP
//! timeout is `Some` only for at most 16 bytes without a sign, is bounded by
//! what 16 bytes can spell, and re-encoded in whole milliseconds parses back
//! within rounding.

#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use tower_spillway::deadline::{parse_grpc_timeout, parse_timeout_header};

/// The largest wait 16 bytes spell, in seconds: fifteen nines and `m`
/// (minutes), as `f64` computes it.
const LONGEST_HEADER: f64 = 999_999_999_999_999.0 * 60.0;

/// Whole milliseconds, plus what `f64` seconds lose on the way back.
const ROUNDING: Duration = Duration::from_micros(1_100);

fuzz_target!(|value: &[u8]| {
    grpc(value);
    header(value);
});

fn grpc(value: &[u8]) {
    let got = parse_grpc_timeout(value);
    let well_formed = value.split_last().is_some_and(|(unit, digits)| {
        b"HMSmun".contains(unit)
            && (1..=8).contains(&digits.len())
            && digits.iter().all(u8::is_ascii_digit)
    });
    assert_eq!(got.is_some(), well_formed, "{value:?}");
    let Some(d) = got else { return };
    let (again, unit) = encode_grpc(d);
    let back = parse_grpc_timeout(again.as_bytes()).expect("re-encoded timeout parses");
    assert!(back >= d && back - d < unit, "{d:?} -> {again} -> {back:?}");
}

/// `d` as `grpc-timeout`, rounded up, and the unit it is counted in.
fn encode_grpc(d: Duration) -> (String, Duration) {
    const UNITS: [(char, Duration); 6] = [
        ('n', Duration::from_nanos(1)),
        ('u', Duration::from_micros(1)),
        ('m', Duration::from_millis(1)),
        ('S', Duration::from_secs(1)),
        ('M', Duration::from_secs(60)),
        ('H', Duration::from_secs(3600)),
    ];
    for (name, unit) in UNITS {
        let n = d.as_nanos().div_ceil(unit.as_nanos());
        if n <= 99_999_999 {
            return (format!("{n}{name}"), unit);
        }
    }
    panic!("{d:?} is longer than any grpc-timeout");
}

fn header(value: &[u8]) {
    let Some(d) = parse_timeout_header(value) else {
        return;
    };
    assert!(value.len() <= 16, "read past 16 bytes");
    assert!(!value.contains(&b'-'), "a negative timeout: {value:?}");
    assert!(d.as_secs_f64() <= LONGEST_HEADER, "{d:?} from 16 bytes");
    let again = format!("{}ms", d.as_millis());
    if again.len() <= 16 {
        let back = parse_timeout_header(again.as_bytes()).expect("re-encoded timeout parses");
        assert!(d.abs_diff(back) < ROUNDING, "{d:?} -> {again} -> {back:?}");
    }
}
