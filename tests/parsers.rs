//! Property tests of every header parser: total on any input, capped where
//! they promise a cap, and what the crate or a peer emits parses back to what
//! it meant. The fuzz targets in `fuzz/` check the same properties on far
//! more inputs.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::{Duration, SystemTime},
};

use http::{HeaderMap, HeaderValue, StatusCode};
use proptest::{collection::vec, option, prelude::*, sample::select};
use tower_spillway::{
    Priority,
    deadline::{parse_grpc_timeout, parse_timeout_header},
    grpc::{GRPC_MESSAGE, GRPC_STATUS, grpc_status},
    key::KeyExtractor,
    limit::{HttpOutcomes, Outcome},
    priority::{Classify, HeaderPriority, X_PRIORITY},
    rate::PeerIp,
    retry_after::{MAX_HINT, parse_pushback_ms, parse_retry_after},
};

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

/// `grpc-status` is `1*DIGIT`: a sign is not part of a code (tonic reads
/// `+14` as `UNKNOWN`), so `+14` must not count as `UNAVAILABLE`.
#[test]
fn grpc_status_takes_digits_only() {
    let status = |v: &'static str| {
        let mut headers = HeaderMap::new();
        headers.insert(GRPC_STATUS, HeaderValue::from_static(v));
        grpc_status(&headers)
    };
    assert_eq!(status("14"), Some(14));
    assert_eq!(status(" 8 "), Some(8));
    for bad in ["+14", "-1", "+0", "- 4", "1_4", "2147483648", ""] {
        assert_eq!(status(bad), None, "{bad:?}");
    }
}

/// Bytes that are sometimes a priority: a name or digit in any case, padded,
/// near misses, and noise.
fn priority_bytes() -> impl Strategy<Value = Vec<u8>> {
    const WORDS: [&str; 12] = [
        "low", "default", "high", "critical", "0", "1", "2", "3", "4", "urgent", "hi gh", "lowest",
    ];
    prop_oneof![
        vec(any::<u8>(), 0..12),
        ("[ \t]{0,2}", select(&WORDS[..]), any::<u16>(), "[ \t]{0,2}").prop_map(
            |(before, word, case, after)| {
                let word = word.bytes().enumerate().map(|(i, b)| {
                    if case >> (i % 16) & 1 == 1 {
                        b.to_ascii_uppercase()
                    } else {
                        b
                    }
                });
                before.bytes().chain(word).chain(after.bytes()).collect()
            }
        ),
    ]
}

proptest! {
    #[test]
    fn priority_parsing_is_total_and_case_insensitive(bytes in priority_bytes()) {
        let parsed = Priority::from_bytes(&bytes);
        prop_assert_eq!(Priority::from_bytes(&bytes.to_ascii_uppercase()), parsed);
        prop_assert_eq!(Priority::from_bytes(&bytes.to_ascii_lowercase()), parsed);
        let trimmed = bytes.trim_ascii();
        let spelled = Priority::ALL.into_iter().find(|p| {
            trimmed.eq_ignore_ascii_case(p.as_str().as_bytes()) || trimmed == [b'0' + p.index() as u8]
        });
        prop_assert_eq!(parsed, spelled);
    }

    #[test]
    fn header_priority_only_lowers_unless_trusted(
        first in priority_bytes(),
        second in option::of(priority_bytes()),
        base in select(&Priority::ALL[..]),
        trusted in any::<bool>(),
    ) {
        let mut req = http::Request::new(());
        for value in [Some(&first), second.as_ref()].into_iter().flatten() {
            if let Ok(value) = HeaderValue::from_bytes(value) {
                req.headers_mut().append(X_PRIORITY, value);
            }
        }
        // Only the first value counts.
        let claimed = req
            .headers()
            .get(X_PRIORITY)
            .and_then(|v| Priority::from_bytes(v.as_bytes()));
        let got = HeaderPriority::with_base(base).trusted(trusted).classify(&req);
        let want = match claimed {
            Some(p) if trusted => p,
            Some(p) => p.min(base),
            None => base,
        };
        prop_assert_eq!(got, want);
    }
}

/// Addresses that show up as peers, proxies and hops, in both families.
const ADDRS: [IpAddr; 5] = [
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
    IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
    IpAddr::V4(Ipv4Addr::new(203, 0, 113, 7)),
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)),
    IpAddr::V6(Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 9)),
];

/// One `x-forwarded-for` hop as written, and the address it spells, if any.
fn hop() -> impl Strategy<Value = (String, Option<IpAddr>)> {
    let addr = prop_oneof![select(&ADDRS[..]), any::<IpAddr>()];
    prop_oneof![
        1 => "[ -~]{0,12}".prop_map(|raw| (raw, None)),
        3 => (addr, option::of(any::<u16>()), any::<bool>(), any::<bool>()).prop_map(
            |(ip, port, brackets, mapped)| {
                let ip = match ip {
                    IpAddr::V4(v4) if mapped => IpAddr::V6(v4.to_ipv6_mapped()),
                    ip => ip,
                };
                let text = match (ip, port) {
                    (ip, Some(port)) => SocketAddr::new(ip, port).to_string(),
                    (IpAddr::V6(v6), None) if brackets => format!("[{v6}]"),
                    (ip, None) => ip.to_string(),
                };
                (text, Some(ip))
            }
        ),
    ]
}

/// The address a hop is written as, in each spelling proxies use.
fn written_as(hop: &str) -> Option<IpAddr> {
    let ip = hop
        .parse::<IpAddr>()
        .ok()
        .or_else(|| hop.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| hop.strip_prefix('[')?.strip_suffix(']')?.parse().ok())?;
    Some(ip.to_canonical())
}

proptest! {
    #[test]
    fn forwarded_for_gives_the_peer_or_a_hop_it_names(
        peer in option::of(prop_oneof![select(&ADDRS[..]), any::<IpAddr>()]),
        trusted in vec(select(&ADDRS[..]), 0..4),
        headers in vec(vec(hop(), 0..5), 0..3),
    ) {
        let mut req = http::Request::new(());
        if let Some(peer) = peer {
            req.extensions_mut().insert(SocketAddr::new(peer, 443));
        }
        // The hops as written, when every header is a list of addresses.
        let mut exact = Some(Vec::new());
        for hops in &headers {
            let value = hops.iter().map(|(text, _)| text.as_str()).collect::<Vec<_>>().join(", ");
            req.headers_mut().append("x-forwarded-for", HeaderValue::from_str(&value).unwrap());
            let ips: Option<Vec<IpAddr>> = hops.iter().map(|(_, ip)| *ip).collect();
            match (&mut exact, ips) {
                (Some(all), Some(ips)) if !ips.is_empty() => all.extend(ips),
                _ => exact = None,
            }
        }
        let got = PeerIp::new().trust_forwarded_for(trusted.iter().copied()).key(&req);

        let Some(peer) = peer.map(|p| p.to_canonical()) else {
            prop_assert_eq!(got, None);
            return Ok(());
        };
        let got = got.unwrap();
        if !trusted.contains(&peer) {
            prop_assert_eq!(got, peer);
            return Ok(());
        }
        if got != peer {
            prop_assert!(!trusted.contains(&got), "{} is a trusted proxy", got);
            let present = headers.iter().flatten().any(|(text, _)| {
                text.split(',').any(|hop| written_as(hop.trim()) == Some(got))
            });
            prop_assert!(present, "{} is in no hop", got);
        }
        if let Some(all) = exact {
            let want = all
                .iter()
                .rev()
                .map(|ip| ip.to_canonical())
                .find(|ip| !trusted.contains(ip));
            prop_assert_eq!(got, want.unwrap_or(peer));
        }
    }
}

/// `d` as `grpc-timeout` the way gRPC clients write it (rounded up, in the
/// finest unit that fits eight digits), and that unit.
fn encode_grpc_timeout(d: Duration) -> (String, Duration) {
    const UNITS: [(char, Duration); 6] = [
        ('n', Duration::from_nanos(1)),
        ('u', Duration::from_micros(1)),
        ('m', Duration::from_millis(1)),
        ('S', Duration::from_secs(1)),
        ('M', Duration::from_secs(60)),
        ('H', Duration::from_secs(3600)),
    ];
    UNITS
        .into_iter()
        .find_map(|(name, unit)| {
            let n = d.as_nanos().div_ceil(unit.as_nanos());
            (n <= 99_999_999).then(|| (format!("{n}{name}"), unit))
        })
        .expect("longer than any grpc-timeout")
}

/// Whole milliseconds, plus what `f64` seconds lose on the way back.
const TIMEOUT_ROUNDING: Duration = Duration::from_micros(1_100);

proptest! {
    #[test]
    fn grpc_timeout_is_its_grammar_and_round_trips(
        value in prop_oneof![
            vec(any::<u8>(), 0..12),
            "[0-9]{0,9}[HMSmunsx ]?".prop_map(String::into_bytes),
        ],
    ) {
        let got = parse_grpc_timeout(&value);
        let well_formed = value.split_last().is_some_and(|(unit, digits)| {
            b"HMSmun".contains(unit)
                && (1..=8).contains(&digits.len())
                && digits.iter().all(u8::is_ascii_digit)
        });
        prop_assert_eq!(got.is_some(), well_formed);
        if let Some(d) = got {
            let (again, unit) = encode_grpc_timeout(d);
            let back = parse_grpc_timeout(again.as_bytes()).unwrap();
            prop_assert!(back >= d && back - d < unit, "{:?} -> {} -> {:?}", d, again, back);
        }
    }

    #[test]
    fn emitted_grpc_timeouts_parse_back(
        secs in 0u64..(99_999_999 * 3_600),
        nanos in 0u32..1_000_000_000,
    ) {
        let d = Duration::new(secs, nanos);
        let (text, unit) = encode_grpc_timeout(d);
        let back = parse_grpc_timeout(text.as_bytes()).unwrap();
        prop_assert!(back >= d && back - d < unit, "{:?} -> {} -> {:?}", d, text, back);
    }

    #[test]
    fn timeout_header_is_bounded_and_round_trips(
        value in prop_oneof![
            vec(any::<u8>(), 0..20),
            " ?-?[0-9]{0,12}(\\.[0-9]{0,4})? ?(ms|us|s|m|h)? ?".prop_map(String::into_bytes),
        ],
    ) {
        if let Some(d) = parse_timeout_header(&value) {
            prop_assert!(value.len() <= 16);
            prop_assert!(!value.contains(&b'-'), "negative: {:?}", value);
            // Fifteen nines of minutes is the most 16 bytes can say.
            prop_assert!(d.as_secs_f64() <= 999_999_999_999_999.0 * 60.0);
            let again = format!("{}ms", d.as_millis());
            if again.len() <= 16 {
                let back = parse_timeout_header(again.as_bytes()).unwrap();
                prop_assert!(
                    d.abs_diff(back) < TIMEOUT_ROUNDING,
                    "{:?} -> {} -> {:?}", d, again, back
                );
            }
        }
    }

    #[test]
    fn emitted_timeout_headers_parse_back(ms in 0u64..100_000_000_000_000) {
        let back = parse_timeout_header(format!("{ms}ms").as_bytes()).unwrap();
        prop_assert!(Duration::from_millis(ms).abs_diff(back) < TIMEOUT_ROUNDING);
    }
}

proptest! {
    #[test]
    fn grpc_status_is_digits_and_outcomes_follow_the_table(
        status in 100u16..1000,
        server_errors in select(&[Outcome::Success, Outcome::Dropped, Outcome::Ignored][..]),
        code in any::<i32>(),
        fields in vec((any::<bool>(), prop_oneof![
            vec(any::<u8>(), 0..8),
            "[ \t]?[+-]?[0-9]{1,11}[ \t]?".prop_map(String::into_bytes),
        ]), 0..4),
    ) {
        let mut headers = HeaderMap::new();
        for (is_status, value) in &fields {
            let name = if *is_status { GRPC_STATUS } else { GRPC_MESSAGE };
            if let Ok(value) = HeaderValue::from_bytes(value) {
                headers.append(name, value);
            }
        }
        // gRPC's `1*DIGIT`, read only when it fits the `int32` it is.
        let first = headers.get(GRPC_STATUS).map(|v| v.as_bytes().trim_ascii());
        let want = first
            .filter(|v| !v.is_empty() && v.iter().all(u8::is_ascii_digit))
            .and_then(|v| std::str::from_utf8(v).unwrap().parse::<i32>().ok());
        let got = grpc_status(&headers);
        prop_assert_eq!(got, want);

        let outcomes = HttpOutcomes::new().server_errors(server_errors);
        let by_code = |code: i32| match code {
            0 => Outcome::Success,
            4 | 8 | 14 => Outcome::Dropped,
            2 | 13 | 15 => server_errors,
            _ => Outcome::Ignored,
        };
        prop_assert_eq!(outcomes.classify_grpc(code), by_code(code));
        let status = StatusCode::from_u16(status).unwrap();
        let want = match status.as_u16() {
            429 | 503 | 504 => Outcome::Dropped,
            500..=599 => server_errors,
            400..=499 => Outcome::Ignored,
            _ => got.map_or(Outcome::Success, by_code),
        };
        prop_assert_eq!(outcomes.classify_head(status, &headers), want);
    }
}

/// An RFC 850 date read against a clock near the last second a `SystemTime`
/// holds (the year 292,277,026,596): its seconds do not fit an `i64`, and
/// the date is ignored instead of overflowing.
#[test]
fn rfc850_dates_at_the_end_of_time_do_not_overflow() {
    let Some(end) = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(i64::MAX as u64 - 1000))
    else {
        return; // a platform whose clock ends sooner
    };
    // Earlier that year: in the past.
    assert_eq!(
        parse_retry_after(b"Monday, 01-Jan-96 00:00:00 GMT", end),
        Some(Duration::ZERO)
    );
    // Later that century: past the end of `i64` seconds.
    assert_eq!(
        parse_retry_after(b"Sunday, 31-Dec-99 23:59:59 GMT", end),
        None
    );
}
