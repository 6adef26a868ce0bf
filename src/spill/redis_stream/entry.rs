//! What a stream entry holds: the request a producer `XADD`s, and how the
//! source reads it back.

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri};

use crate::Priority;

use super::super::job::NewJob;

/// The method field (optional: `POST` when absent).
pub(super) const METHOD: &str = "method";
/// The URI field: path and query (required).
pub(super) const URI: &str = "uri";
/// The body field (optional: empty when absent).
pub(super) const BODY: &str = "body";
/// The prefix of a header field: `header:content-type`. Repeat the field
/// for a header with many values.
pub(super) const HEADER: &str = "header:";

/// The stream of `priority` for a source or producer named `name`.
pub(super) fn stream_key(name: &str, priority: Priority) -> String {
    format!("{name}:{}", priority.as_str())
}

/// An entry's fields as a replayable request of `priority`; an entry that
/// is not one says why (and is dead-lettered, never dropped).
///
/// Fields this format does not name are ignored, so producers may add
/// their own (a dead letter's `dead:*` fields among them).
pub(super) fn parse<'a>(
    fields: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    priority: Priority,
) -> Result<NewJob, String> {
    let (mut method, mut uri, mut body) = (None, None, Bytes::new());
    let mut headers = HeaderMap::new();
    for (name, value) in fields {
        if name == METHOD.as_bytes() {
            method = Some(Method::from_bytes(value).map_err(|_| "a malformed method")?);
        } else if name == URI.as_bytes() {
            uri = Some(Uri::try_from(value).map_err(|_| "a malformed uri")?);
        } else if name == BODY.as_bytes() {
            body = Bytes::copy_from_slice(value);
        } else if let Some(header) = name.strip_prefix(HEADER.as_bytes()) {
            let header = HeaderName::from_bytes(header)
                .map_err(|_| format!("a malformed header name in {:?}", lossy(name)))?;
            let value = HeaderValue::from_bytes(value)
                .map_err(|_| format!("a malformed value for header {header}"))?;
            headers.append(header, value);
        }
    }
    let uri = uri.ok_or("no uri field")?;
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok(NewJob {
        priority,
        method: method.unwrap_or(Method::POST),
        uri,
        headers,
        body,
        idempotency_key,
    })
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Builds the `XADD` that puts a request on the stream a
/// [`RedisStreamSource`](super::RedisStreamSource) of the same name reads:
/// one stream per priority, `<name>:<priority>` (`orders:high`).
///
/// ```
/// use bytes::Bytes;
/// use tower_spillway::{Priority, spill::StreamProducer};
///
/// let producer = StreamProducer::new("orders").max_len(1_000_000);
/// let request = http::Request::post("/orders")
///     .header("content-type", "application/json")
///     .body(Bytes::from_static(b"{\"sku\":42}"))
///     .unwrap();
/// let xadd = producer.xadd(Priority::High, &request);
/// // xadd.query_async::<String>(&mut connection).await? answers the entry id.
/// # let _ = xadd;
/// assert_eq!(producer.stream(Priority::High), "orders:high");
/// ```
///
/// Any producer can write the same entry without this crate:
///
/// ```text
/// XADD orders:high MAXLEN ~ 1000000 * method POST uri /orders header:content-type application/json body {"sku":42}
/// ```
#[derive(Debug, Clone)]
pub struct StreamProducer {
    name: String,
    max_len: Option<usize>,
}

impl StreamProducer {
    /// A producer for the streams of a source named `name`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            max_len: None,
        }
    }

    /// Trims each stream to about `entries` as entries are added (`MAXLEN
    /// ~`): the stream's retention. Size it for the longest overload the
    /// consumer must ride out; an unread entry trimmed away is lost, and a
    /// pending one is counted as discarded (trimmed) when the drain next
    /// reclaims it.
    #[must_use]
    pub fn max_len(mut self, entries: usize) -> Self {
        self.max_len = Some(entries);
        self
    }

    /// The stream of `priority`.
    pub fn stream(&self, priority: Priority) -> String {
        stream_key(&self.name, priority)
    }

    /// The `XADD` of `request` (its method, path and query, headers and
    /// body) to the stream of `priority`; it answers the new entry's id.
    pub fn xadd(&self, priority: Priority, request: &Request<Bytes>) -> redis::Cmd {
        let mut cmd = redis::cmd("XADD");
        cmd.arg(self.stream(priority));
        if let Some(max) = self.max_len {
            cmd.arg("MAXLEN").arg("~").arg(max);
        }
        let uri = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        cmd.arg("*")
            .arg(METHOD)
            .arg(request.method().as_str())
            .arg(URI)
            .arg(uri);
        for (name, value) in request.headers() {
            cmd.arg(format!("{HEADER}{name}")).arg(value.as_bytes());
        }
        if !request.body().is_empty() {
            cmd.arg(BODY).arg(request.body().as_ref());
        }
        cmd
    }
}
