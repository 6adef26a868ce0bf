//! The layer's own answers: `202 Accepted`, job status, and the refusals of
//! requests it will not store.

use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};

use crate::http::RejectBody;

use super::job::{JobId, JobStatus};

/// The `202` for a stored job: where to poll, and when.
pub(crate) fn accepted(
    prefix: &str,
    id: JobId,
    poll_after: Duration,
    repeat: bool,
) -> Response<RejectBody> {
    let location = format!("{prefix}/{id}");
    let secs = poll_after.as_secs().max(1);
    let body = format!(
        r#"{{"id":"{id}","status":"queued","location":"{location}","retry_after":{secs},"repeat":{repeat}}}"#
    );
    let mut res = json(StatusCode::ACCEPTED, body);
    let h = res.headers_mut();
    if let Ok(v) = HeaderValue::try_from(location) {
        h.insert(header::LOCATION, v);
    }
    h.insert(header::RETRY_AFTER, HeaderValue::from(secs));
    res.extensions_mut().insert(super::Spilled { id });
    res
}

/// `GET <prefix>/<id>`'s answer.
pub(crate) fn status(id: JobId, status: &JobStatus) -> Response<RejectBody> {
    let state = status.as_str();
    let body = match status {
        JobStatus::Queued { ahead, attempts } => {
            format!(r#"{{"id":"{id}","status":"{state}","ahead":{ahead},"attempts":{attempts}}}"#)
        }
        JobStatus::Running { attempts } => {
            format!(r#"{{"id":"{id}","status":"{state}","attempts":{attempts}}}"#)
        }
        JobStatus::Done { status, body } => format!(
            r#"{{"id":"{id}","status":"{state}","result":{{"status":{},"body":{}}}}}"#,
            status.as_u16(),
            json_string(&String::from_utf8_lossy(body)),
        ),
        JobStatus::Failed { attempts, reason } => format!(
            r#"{{"id":"{id}","status":"{state}","attempts":{attempts},"reason":{}}}"#,
            json_string(reason),
        ),
    };
    json(StatusCode::OK, body)
}

/// A refusal of the layer's own, with a one-line problem+json body.
pub(crate) fn problem(status: StatusCode, detail: &str) -> Response<RejectBody> {
    let body = format!(
        r#"{{"type":"about:blank","title":{},"status":{},"detail":{}}}"#,
        json_string(status.canonical_reason().unwrap_or("error")),
        status.as_u16(),
        json_string(detail),
    );
    let mut res = Response::new(RejectBody::new(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    res
}

fn json(status: StatusCode, body: String) -> Response<RejectBody> {
    let mut res = Response::new(RejectBody::new(Bytes::from(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    res
}

/// `s` as a JSON string literal.
pub(crate) fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_strings_escape_quotes_and_controls() {
        assert_eq!(json_string("a\"b\\c\n\u{1}"), r#""a\"b\\c\n\u0001""#);
    }

    #[test]
    fn the_202_says_where_and_when_to_poll() {
        let id = JobId { seq: 7, tag: 1 };
        let res = accepted("/jobs", id, Duration::from_millis(200), false);
        assert_eq!(res.status(), StatusCode::ACCEPTED);
        assert_eq!(res.headers()[header::LOCATION], "/jobs/7-0000000000000001");
        assert_eq!(res.headers()[header::RETRY_AFTER], "1");
    }
}
