//! `Priority::from_bytes` on any bytes: total, case-insensitive, and `Some`
//! exactly for a priority's name or digit (surrounding whitespace aside).
//! `HeaderPriority` on a request carrying those bytes: the first `x-priority`
//! value decides; trusted, it is that priority; untrusted, it can only lower
//! the base priority; missing or malformed, it is the base priority.

#![no_main]

use arbitrary::Arbitrary;
use http::HeaderValue;
use libfuzzer_sys::fuzz_target;
use tower_spillway::{
    Priority,
    priority::{Classify, HeaderPriority, X_PRIORITY},
};

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    base: u8,
    trusted: bool,
    first: &'a [u8],
    second: Option<&'a [u8]>,
}

fuzz_target!(|input: Input<'_>| {
    let parsed = Priority::from_bytes(input.first);
    assert_eq!(
        Priority::from_bytes(&input.first.to_ascii_uppercase()),
        parsed
    );
    assert_eq!(
        Priority::from_bytes(&input.first.to_ascii_lowercase()),
        parsed
    );
    let trimmed = input.first.trim_ascii();
    let spelled = Priority::ALL.into_iter().find(|p| {
        trimmed.eq_ignore_ascii_case(p.as_str().as_bytes()) || trimmed == [b'0' + p.index() as u8]
    });
    assert_eq!(parsed, spelled);

    let mut req = http::Request::new(());
    let values = [Some(input.first), input.second].into_iter().flatten();
    for value in values.filter_map(|v| HeaderValue::from_bytes(v).ok()) {
        req.headers_mut().append(X_PRIORITY, value);
    }
    let claimed = req
        .headers()
        .get(X_PRIORITY)
        .and_then(|v| Priority::from_bytes(v.as_bytes()));
    let base = Priority::ALL[usize::from(input.base % 4)];
    let got = HeaderPriority::with_base(base)
        .trusted(input.trusted)
        .classify(&req);
    let want = match claimed {
        Some(p) if input.trusted => p,
        Some(p) => p.min(base),
        None => base,
    };
    assert_eq!(got, want, "claimed {claimed:?} over {base:?}");
});
