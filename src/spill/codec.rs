//! How a stored request is laid out in a database row, the same way in every
//! store: headers as length-prefixed pairs, priorities and states as small
//! integers, times as wall-clock milliseconds.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};

use super::store::StoreError;
use crate::Priority;

/// A job's state column.
pub(crate) const QUEUED: i64 = 0;
pub(crate) const RUNNING: i64 = 1;
pub(crate) const DONE: i64 = 2;
pub(crate) const FAILED: i64 = 3;

/// How many queued jobs `status` counts ahead of a job at most, so that
/// answering a poll stays cheap however long the backlog.
pub(crate) const AHEAD_CAP: i64 = 10_000;

/// Milliseconds since the UNIX epoch. Stored times are wall-clock times (not
/// `Instant`s) because they must mean the same after a restart, and on every
/// instance sharing a database.
pub(crate) fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A duration as milliseconds for a time column, saturating.
pub(crate) fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The time from `from` to `to`, both in milliseconds, or zero if the clock
/// went back.
pub(crate) fn elapsed(from: i64, to: i64) -> Duration {
    Duration::from_millis(u64::try_from(to.saturating_sub(from)).unwrap_or(0))
}

/// The headers as `(u32 length, name, u32 length, value)*`, big-endian: a
/// value may hold any byte a `HeaderValue` allows, so no separator would be
/// unambiguous.
pub(crate) fn encode_headers(headers: &HeaderMap) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        for part in [name.as_str().as_bytes(), value.as_bytes()] {
            // A header longer than 4 GiB cannot reach a store: the layer
            // bounds what it spills far below that.
            let len = u32::try_from(part.len()).unwrap_or(u32::MAX);
            out.extend_from_slice(&len.to_be_bytes());
            out.extend_from_slice(&part[..len as usize]);
        }
    }
    out
}

/// The inverse of [`encode_headers`]; a malformed column is an error, not a
/// panic.
pub(crate) fn decode_headers(mut bytes: &[u8]) -> Result<HeaderMap, StoreError> {
    fn part<'a>(bytes: &mut &'a [u8]) -> Result<&'a [u8], StoreError> {
        let malformed = || StoreError::new("malformed headers column");
        let (len, rest) = bytes.split_first_chunk::<4>().ok_or_else(malformed)?;
        let len = u32::from_be_bytes(*len) as usize;
        if rest.len() < len {
            return Err(malformed());
        }
        let (part, rest) = rest.split_at(len);
        *bytes = rest;
        Ok(part)
    }
    let mut headers = HeaderMap::new();
    while !bytes.is_empty() {
        let name = HeaderName::from_bytes(part(&mut bytes)?).map_err(StoreError::new)?;
        let value = HeaderValue::from_bytes(part(&mut bytes)?).map_err(StoreError::new)?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// The priority stored as its [`Priority::index`].
pub(crate) fn priority(index: i64) -> Result<Priority, StoreError> {
    usize::try_from(index)
        .ok()
        .and_then(|i| Priority::ALL.get(i).copied())
        .ok_or_else(|| StoreError::new(format!("no priority has index {index}")))
}

/// The priority's column value.
pub(crate) fn priority_index(priority: Priority) -> i64 {
    priority.index() as i64
}

/// The method column.
pub(crate) fn method(text: &str) -> Result<Method, StoreError> {
    Method::from_bytes(text.as_bytes()).map_err(StoreError::new)
}

/// The URI column.
pub(crate) fn uri(text: String) -> Result<Uri, StoreError> {
    Uri::try_from(text).map_err(StoreError::new)
}

/// A count or sum column, which is never negative.
pub(crate) fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}

/// An attempts column.
pub(crate) fn attempts(n: i64) -> u32 {
    u32::try_from(n).unwrap_or(0)
}

/// A weight for a `bytes` column.
pub(crate) fn weight(w: u64) -> i64 {
    i64::try_from(w).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_with_any_value_bytes() {
        let mut headers = HeaderMap::new();
        headers.append("x-a", HeaderValue::from_bytes(b"\x80\xff \t!").unwrap());
        headers.append("x-a", HeaderValue::from_static(""));
        headers.append("content-type", HeaderValue::from_static("text/plain"));
        let decoded = decode_headers(&encode_headers(&headers)).unwrap();
        assert_eq!(decoded, headers);
        let values: Vec<_> = decoded.get_all("x-a").iter().collect();
        assert_eq!(values, [&b"\x80\xff \t!"[..], &b""[..]]);
    }

    #[test]
    fn malformed_headers_are_errors() {
        let good = {
            let mut h = HeaderMap::new();
            h.insert("x-a", HeaderValue::from_static("b"));
            encode_headers(&h)
        };
        for bad in [
            &good[..good.len() - 1],
            &good[..3],
            &[0, 0, 0, 1, b' ', 0, 0, 0, 0],
        ] {
            assert!(decode_headers(bad).is_err(), "{bad:?} decoded");
        }
        assert!(decode_headers(&[]).unwrap().is_empty());
    }

    #[test]
    fn priorities_map_to_their_index() {
        for p in Priority::ALL {
            assert_eq!(priority(priority_index(p)).unwrap(), p);
        }
        assert!(priority(4).is_err());
        assert!(priority(-1).is_err());
    }
}
