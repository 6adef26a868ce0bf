//! What a response's headers say about who else may be given it: the rules
//! a layer follows before it hands one caller's response to another
//! (single-flight sharing, a last-good fallback).

use http::{
    HeaderMap, HeaderName,
    header::{CACHE_CONTROL, SET_COOKIE},
};

/// The comma-separated tokens of every `name` field, trimmed. A field that
/// is not text reads as `*`: neither understood nor shared.
pub(crate) fn tokens(headers: &HeaderMap, name: HeaderName) -> impl Iterator<Item = &str> {
    headers
        .get_all(name)
        .into_iter()
        .flat_map(|v| v.to_str().unwrap_or("*").split(','))
        .map(str::trim)
}

/// The directive of a `Cache-Control` token (`private="x"` is `private`).
fn directive(token: &str) -> &str {
    token.split('=').next().unwrap_or(token).trim()
}

/// `true` when a response is for its own caller only: it sets a cookie (a
/// session made for one caller), or is `Cache-Control: private` or
/// `no-store`.
pub(crate) fn private_to_caller(headers: &HeaderMap) -> bool {
    headers.contains_key(SET_COOKIE)
        || tokens(headers, CACHE_CONTROL).any(|t| {
            let d = directive(t);
            d.eq_ignore_ascii_case("private") || d.eq_ignore_ascii_case("no-store")
        })
}

/// `true` when a response says any cache may keep it
/// (`Cache-Control: public`), even one made for a request with
/// credentials (RFC 9111, section 3.5).
pub(crate) fn public(headers: &HeaderMap) -> bool {
    tokens(headers, CACHE_CONTROL).any(|t| directive(t).eq_ignore_ascii_case("public"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|&(k, v)| (HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn private_responses_are_recognised() {
        assert!(!private_to_caller(&headers(&[])));
        assert!(!private_to_caller(&headers(&[(
            "cache-control",
            "max-age=60, public"
        )])));
        assert!(private_to_caller(&headers(&[("set-cookie", "a=b")])));
        assert!(private_to_caller(&headers(&[(
            "cache-control",
            "max-age=0, Private=\"x\""
        )])));
        assert!(private_to_caller(&headers(&[(
            "cache-control",
            "no-store"
        )])));
        assert!(public(&headers(&[("cache-control", "max-age=60, PUBLIC")])));
        assert!(!public(&headers(&[("cache-control", "max-age=60")])));
    }
}
