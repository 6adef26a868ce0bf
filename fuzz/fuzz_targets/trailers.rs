//! `grpc_status` and `HttpOutcomes` on any status and header block.
//! `grpc_status` is `Some(n)` only when the first `grpc-status` value is,
//! surrounding whitespace aside, the decimal digits of `n` (gRPC's
//! `1*DIGIT`). `classify_head` and `classify_grpc` follow the table in
//! `HttpOutcomes`' docs for every status, every code and every
//! `server_errors` setting.

#![no_main]

use arbitrary::Arbitrary;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use libfuzzer_sys::fuzz_target;
use tower_spillway::{
    grpc::{GRPC_MESSAGE, GRPC_STATUS, grpc_status},
    limit::{HttpOutcomes, Outcome},
};

#[derive(Debug, Arbitrary)]
struct Input<'a> {
    status: u16,
    server_errors: u8,
    code: i32,
    /// Header fields: `grpc-status` when `true`, else another gRPC field.
    fields: Vec<(bool, &'a [u8])>,
}

fuzz_target!(|input: Input<'_>| {
    let mut headers = HeaderMap::new();
    for &(is_status, value) in &input.fields {
        let name: HeaderName = if is_status { GRPC_STATUS } else { GRPC_MESSAGE };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            headers.append(name, value);
        }
    }
    let code = grpc_status(&headers);
    // gRPC's `1*DIGIT`, read only when it fits the `int32` it is.
    let first = headers.get(GRPC_STATUS).map(|v| v.as_bytes().trim_ascii());
    let want = first
        .filter(|v| !v.is_empty() && v.iter().all(u8::is_ascii_digit))
        .and_then(|v| std::str::from_utf8(v).unwrap().parse::<i32>().ok());
    assert_eq!(code, want, "grpc-status {first:?}");

    let server_errors = [Outcome::Success, Outcome::Dropped, Outcome::Ignored]
        [usize::from(input.server_errors % 3)];
    let outcomes = HttpOutcomes::new().server_errors(server_errors);
    let by_code = |code: i32| match code {
        0 => Outcome::Success,
        4 | 8 | 14 => Outcome::Dropped,
        2 | 13 | 15 => server_errors,
        _ => Outcome::Ignored,
    };
    assert_eq!(outcomes.classify_grpc(input.code), by_code(input.code));

    let Ok(status) = StatusCode::from_u16(input.status) else {
        return;
    };
    let want = match status.as_u16() {
        429 | 503 | 504 => Outcome::Dropped,
        500..=599 => server_errors,
        400..=499 => Outcome::Ignored,
        _ => code.map_or(Outcome::Success, by_code),
    };
    assert_eq!(
        outcomes.classify_head(status, &headers),
        want,
        "{status} {headers:?}"
    );
});
