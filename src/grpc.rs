//! gRPC plumbing: status codes, the headers overload speaks in, and a
//! trailers-only response.
//!
//! A gRPC call travels as an HTTP/2 request with `content-type:
//! application/grpc`. A server that refuses it before reading the body answers
//! with a *trailers-only* response: `:status 200` and the `grpc-status`,
//! `grpc-message` and `grpc-retry-pushback-ms` fields in the one header block,
//! with an empty body that ends the stream. gRPC clients (tonic among them)
//! read that as the call's status, so a refusal reaches the caller as
//! `UNAVAILABLE` or `RESOURCE_EXHAUSTED`, never `UNKNOWN`.

use http::{HeaderMap, HeaderName, HeaderValue};

/// `grpc-status`.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");
/// `grpc-message`.
pub const GRPC_MESSAGE: HeaderName = HeaderName::from_static("grpc-message");
/// `grpc-retry-pushback-ms` (gRFC A6): how long the client should wait before retrying.
pub const GRPC_RETRY_PUSHBACK_MS: HeaderName = HeaderName::from_static("grpc-retry-pushback-ms");

/// The gRPC status codes overload handling needs to name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Code {
    /// 4: the deadline expired before the call finished.
    DeadlineExceeded,
    /// 8: a quota was exhausted (HTTP 429's counterpart).
    ResourceExhausted,
    /// 14: the service is unavailable, usually transiently (HTTP 503's counterpart).
    Unavailable,
}

impl Code {
    /// The numeric code on the wire.
    pub const fn as_i32(self) -> i32 {
        match self {
            Code::DeadlineExceeded => 4,
            Code::ResourceExhausted => 8,
            Code::Unavailable => 14,
        }
    }

    const fn header_value(self) -> HeaderValue {
        match self {
            Code::DeadlineExceeded => HeaderValue::from_static("4"),
            Code::ResourceExhausted => HeaderValue::from_static("8"),
            Code::Unavailable => HeaderValue::from_static("14"),
        }
    }
}

/// `true` when the request is a gRPC call (`content-type: application/grpc`,
/// with or without a `+codec` suffix, or gRPC-Web).
pub fn is_grpc_request(headers: &HeaderMap) -> bool {
    headers
        .get(http::header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"))
}

/// The `grpc-status` in a header or trailer block, if present and a decimal
/// number (the protocol's `1*DIGIT`, surrounding whitespace aside).
pub fn grpc_status(headers: &HeaderMap) -> Option<i32> {
    let v = headers.get(&GRPC_STATUS)?.as_bytes().trim_ascii();
    // `i32`'s parser also takes a sign: `+14` is not `UNAVAILABLE` (tonic
    // reads it as `UNKNOWN`).
    if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(v).ok()?.parse().ok()
}

/// Writes the fields of a trailers-only refusal into `headers`.
pub(crate) fn set_trailers_only(
    headers: &mut HeaderMap,
    code: Code,
    message: &str,
    pushback_ms: Option<u64>,
) {
    headers.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/grpc"),
    );
    headers.insert(GRPC_STATUS, code.header_value());
    if let Ok(v) = HeaderValue::from_str(&percent_encode(message)) {
        headers.insert(GRPC_MESSAGE, v);
    }
    if let Some(ms) = pushback_ms {
        headers.insert(GRPC_RETRY_PUSHBACK_MS, HeaderValue::from(ms));
    }
}

/// Percent-encodes a `grpc-message` as the gRPC HTTP/2 spec requires: every
/// byte outside printable ASCII, and `%` itself.
pub(crate) fn percent_encode(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    for b in message.bytes() {
        if (0x20..=0x7e).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push('%');
            out.push(char::from(HEX[usize::from(b >> 4)]));
            out.push(char::from(HEX[usize::from(b & 0xf)]));
        }
    }
    out
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

#[cfg(feature = "tonic")]
mod tonic_status {
    use crate::Overloaded;

    /// A refusal as a `tonic::Status`, for services and clients that speak
    /// tonic types directly: `RESOURCE_EXHAUSTED` for quotas, `UNAVAILABLE`
    /// otherwise, with `grpc-retry-pushback-ms` in the metadata when the
    /// refusal carries a retry hint.
    impl From<Overloaded> for tonic::Status {
        fn from(o: Overloaded) -> Self {
            let code = if o.is_quota() {
                tonic::Code::ResourceExhausted
            } else {
                tonic::Code::Unavailable
            };
            let mut status = tonic::Status::new(code, o.to_string());
            if let Some(d) = o.retry_after() {
                let ms = crate::hint::pushback_ms(d);
                status
                    .metadata_mut()
                    .insert("grpc-retry-pushback-ms", ms.into());
            }
            status
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_grpc_content_types() {
        let mut h = HeaderMap::new();
        assert!(!is_grpc_request(&h));
        for (ct, grpc) in [
            ("application/grpc", true),
            ("application/grpc+proto", true),
            ("application/grpc-web", true),
            ("application/json", false),
        ] {
            h.insert(http::header::CONTENT_TYPE, HeaderValue::from_static(ct));
            assert_eq!(is_grpc_request(&h), grpc, "{ct}");
        }
    }

    #[test]
    fn percent_encodes_message() {
        assert_eq!(percent_encode("ok 100%"), "ok 100%25");
        assert_eq!(percent_encode("é\n"), "%C3%A9%0A");
    }

    #[test]
    fn reads_grpc_status() {
        let mut h = HeaderMap::new();
        assert_eq!(grpc_status(&h), None);
        h.insert(GRPC_STATUS, HeaderValue::from_static("14"));
        assert_eq!(grpc_status(&h), Some(14));
        h.insert(GRPC_STATUS, HeaderValue::from_static("x"));
        assert_eq!(grpc_status(&h), None);
    }

    #[cfg(feature = "tonic")]
    #[test]
    fn overloaded_into_tonic_status() {
        use crate::{Overloaded, Reason};
        use std::time::Duration;
        let s: tonic::Status = Overloaded::new(Reason::RateLimited)
            .with_retry_after(Duration::from_micros(1500))
            .into();
        assert_eq!(s.code(), tonic::Code::ResourceExhausted);
        assert_eq!(s.metadata().get("grpc-retry-pushback-ms").unwrap(), "2");
        let s: tonic::Status = Overloaded::new(Reason::Shed).into();
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(s.metadata().get("grpc-retry-pushback-ms").is_none());
    }
}
