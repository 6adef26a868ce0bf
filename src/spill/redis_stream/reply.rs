//! Reading the scripts' answers: nested arrays of integers and strings.
//! Anything else is an error, never a panic.

use redis::Value;

use super::super::store::StoreError;

fn unexpected(what: &str) -> StoreError {
    StoreError::new(format!("unexpected Redis reply: expected {what}"))
}

pub(super) fn array(v: Value) -> Result<Vec<Value>, StoreError> {
    match v {
        Value::Array(items) | Value::Set(items) => Ok(items),
        Value::Nil => Ok(Vec::new()),
        _ => Err(unexpected("an array")),
    }
}

pub(super) fn int(v: &Value) -> Result<i64, StoreError> {
    match v {
        Value::Int(n) => Ok(*n),
        Value::BulkString(b) => std::str::from_utf8(b)
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| unexpected("an integer")),
        Value::SimpleString(s) => s.parse().map_err(|_| unexpected("an integer")),
        _ => Err(unexpected("an integer")),
    }
}

pub(super) fn bytes(v: &Value) -> Result<&[u8], StoreError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.as_bytes()),
        _ => Err(unexpected("a string")),
    }
}

pub(super) fn text(v: &Value) -> Result<String, StoreError> {
    String::from_utf8(bytes(v)?.to_vec()).map_err(|_| unexpected("text"))
}

/// A count, which is never negative.
pub(super) fn count(v: &Value) -> Result<u64, StoreError> {
    Ok(u64::try_from(int(v)?).unwrap_or(0))
}

/// An array of exactly `N` items.
pub(super) fn tuple<const N: usize>(v: Value) -> Result<[Value; N], StoreError> {
    array(v)?
        .try_into()
        .map_err(|_| unexpected("an array of known length"))
}
