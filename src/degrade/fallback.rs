//! What a route answers instead of calling the inner service, and the
//! per-route table of those answers.

use std::{
    collections::HashMap,
    fmt,
    sync::{Arc, Mutex},
};

use bytes::Bytes;
use http::{
    HeaderMap, HeaderName, HeaderValue, Method, Response, StatusCode,
    header::{AGE, CONTENT_LENGTH, CONTENT_TYPE, TRANSFER_ENCODING},
};
use tokio::time::Instant;

use super::LoadLevel;
use crate::http::RejectBody;

/// The header a fallback answer carries: the level it was given at
/// (`x-degraded: elevated` or `x-degraded: overloaded`).
pub const X_DEGRADED: HeaderName = HeaderName::from_static("x-degraded");

/// What a route answers while the level is high, instead of calling the
/// inner service; see [`DegradeLayerBuilder::fallback`](super::DegradeLayerBuilder::fallback).
///
/// - [`json`](Self::json) and [`response`](Self::response): a fixed answer
///   (an empty list, a placeholder, a `503`);
/// - [`last_good`](Self::last_good): the route's last successful response,
///   replayed with an `Age` header. Until the route has answered one, the
///   inner service is called.
///
/// Every fallback answer carries [`X_DEGRADED`] and the [`LoadLevel`] in its
/// extensions.
///
/// ```
/// use http::{Response, StatusCode};
/// use tower_spillway::degrade::Fallback;
///
/// let empty = Fallback::json("[]");
/// let busy = Fallback::response(
///     Response::builder()
///         .status(StatusCode::SERVICE_UNAVAILABLE)
///         .header("retry-after", "5")
///         .body("try again soon")
///         .unwrap(),
/// );
/// let cached = Fallback::last_good();
/// # let _ = (empty, busy, cached);
/// ```
#[derive(Clone)]
pub struct Fallback {
    pub(super) kind: Kind,
}

#[derive(Clone)]
pub(super) enum Kind {
    Fixed(Arc<Stored>),
    LastGood { max_body: usize },
}

impl fmt::Debug for Fallback {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kind {
            Kind::Fixed(stored) => f
                .debug_struct("Fixed")
                .field("status", &stored.status)
                .field("bytes", &stored.body.len())
                .finish(),
            Kind::LastGood { max_body } => f
                .debug_struct("LastGood")
                .field("max_body", max_body)
                .finish(),
        }
    }
}

impl Fallback {
    /// The largest body [`last_good`](Self::last_good) keeps: 64 KiB.
    pub const DEFAULT_MAX_BODY: usize = 64 * 1024;

    /// `200 OK` with `body` as `application/json`.
    pub fn json(body: impl Into<Bytes>) -> Self {
        Self::fixed(
            StatusCode::OK,
            HeaderMap::from_iter([(CONTENT_TYPE, HeaderValue::from_static("application/json"))]),
            body.into(),
        )
    }

    /// `res`, as it is: its status, headers and body (its extensions are
    /// not kept).
    pub fn response(res: Response<impl Into<Bytes>>) -> Self {
        let (parts, body) = res.into_parts();
        Self::fixed(parts.status, parts.headers, body.into())
    }

    fn fixed(status: StatusCode, headers: HeaderMap, body: Bytes) -> Self {
        Self {
            kind: Kind::Fixed(Arc::new(Stored::new(status, headers, body, None, None))),
        }
    }

    /// The route's last successful response whose body is at most
    /// [`DEFAULT_MAX_BODY`](Self::DEFAULT_MAX_BODY) bytes.
    ///
    /// Only what any caller may see is kept: a `2xx` response (not `206`)
    /// with no `Set-Cookie`, not `Cache-Control: private` or `no-store`,
    /// varying on no header (`Vary`), without trailers; and to a request with
    /// credentials (`Authorization`, `Proxy-Authorization`, `Cookie`,
    /// `x-api-key`) only if it is `Cache-Control: public`, as a shared cache
    /// would (RFC 9111). It is replayed only to a request with the same
    /// query string. The body is copied as it streams to its caller, so
    /// keeping it delays nothing.
    pub fn last_good() -> Self {
        Self::last_good_within(Self::DEFAULT_MAX_BODY)
    }

    /// [`last_good`](Self::last_good), keeping bodies of at most `max_body`
    /// bytes.
    pub fn last_good_within(max_body: usize) -> Self {
        Self {
            kind: Kind::LastGood { max_body },
        }
    }
}

/// A response held in memory.
#[derive(Debug)]
pub(super) struct Stored {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    /// When a last-good response was kept (for its `Age`).
    kept: Option<Instant>,
    /// The query string of the request it answered.
    query: Option<Box<str>>,
}

impl Stored {
    pub(super) fn new(
        status: StatusCode,
        mut headers: HeaderMap,
        body: Bytes,
        kept: Option<Instant>,
        query: Option<Box<str>>,
    ) -> Self {
        // The length is the body's own; hyper frames it again.
        headers.remove(CONTENT_LENGTH);
        headers.remove(TRANSFER_ENCODING);
        Self {
            status,
            headers,
            body,
            kept,
            query,
        }
    }

    /// The answer to a request at `level`.
    pub(super) fn answer(&self, level: LoadLevel) -> Response<RejectBody> {
        let mut res = Response::new(RejectBody::new(self.body.clone()));
        *res.status_mut() = self.status;
        *res.headers_mut() = self.headers.clone();
        let headers = res.headers_mut();
        headers.insert(X_DEGRADED, HeaderValue::from_static(level.as_str()));
        if let Some(kept) = self.kept {
            let age = Instant::now().saturating_duration_since(kept).as_secs();
            headers.insert(AGE, HeaderValue::from(age));
        }
        res.extensions_mut().insert(level);
        res
    }
}

/// A route's last good response.
#[derive(Debug)]
pub(super) struct Slot {
    pub(super) max_body: usize,
    held: Mutex<Option<Arc<Stored>>>,
}

impl Slot {
    fn new(max_body: usize) -> Self {
        Self {
            max_body,
            held: Mutex::new(None),
        }
    }

    /// The response kept for a request with this query string.
    fn recall(&self, query: Option<&str>) -> Option<Arc<Stored>> {
        let held = crate::sync::lock(&self.held);
        held.as_ref()
            .filter(|s| s.query.as_deref() == query)
            .map(Arc::clone)
    }

    pub(super) fn keep(&self, stored: Stored) {
        *crate::sync::lock(&self.held) = Some(Arc::new(stored));
    }
}

/// What a route answers at one level.
#[derive(Debug, Clone)]
enum Answer {
    Fixed(Arc<Stored>),
    LastGood,
}

/// One method and path with fallbacks.
#[derive(Debug)]
pub(super) struct Route {
    method: Method,
    /// By level index; `Normal` is always `None`.
    answers: [Option<Answer>; 3],
    /// Where the last good response is kept, if any level replays it.
    pub(super) slot: Option<Arc<Slot>>,
}

/// What a fallback lookup found for a request.
pub(super) enum Found {
    /// Answer with this, without calling the inner service.
    Answer(Response<RejectBody>),
    /// Call the inner service (and keep its response in this slot, if any).
    Call(Option<Arc<Slot>>),
}

impl Route {
    /// What the route answers at `level` to a request with this query.
    pub(super) fn find(&self, level: LoadLevel, query: Option<&str>) -> Found {
        let stored = match &self.answers[level.index()] {
            Some(Answer::Fixed(stored)) => Some(Arc::clone(stored)),
            Some(Answer::LastGood) => self.slot.as_ref().and_then(|s| s.recall(query)),
            None => None,
        };
        match stored {
            Some(stored) => Found::Answer(stored.answer(level)),
            None => Found::Call(self.slot.clone()),
        }
    }
}

/// Every route with fallbacks, by exact path, then method.
#[derive(Debug, Default)]
pub(super) struct Routes {
    by_path: HashMap<Box<str>, Vec<Route>>,
}

impl Routes {
    /// Builds the table from `(method, path, from level, fallback)` entries,
    /// already checked. At each level a route answers with the fallback
    /// of the highest `from` at or below it.
    pub(super) fn new(entries: Vec<(Method, String, LoadLevel, Fallback)>) -> Self {
        let mut by_path: HashMap<Box<str>, Vec<Route>> = HashMap::new();
        for (method, path, from, fallback) in entries {
            let routes = by_path.entry(path.into_boxed_str()).or_default();
            let i = match routes.iter().position(|r| r.method == method) {
                Some(i) => i,
                None => {
                    routes.push(Route {
                        method,
                        answers: [None, None, None],
                        slot: None,
                    });
                    routes.len() - 1
                }
            };
            let route = &mut routes[i];
            let answer = match fallback.kind {
                Kind::Fixed(stored) => Answer::Fixed(stored),
                Kind::LastGood { max_body } => {
                    let wider = route.slot.as_ref().is_none_or(|s| s.max_body < max_body);
                    if wider {
                        route.slot = Some(Arc::new(Slot::new(max_body)));
                    }
                    Answer::LastGood
                }
            };
            // Entries come ordered by level: a higher `from` overrides from
            // there up.
            for level in LoadLevel::ALL.into_iter().filter(|&l| l >= from) {
                route.answers[level.index()] = Some(answer.clone());
            }
        }
        Self { by_path }
    }

    pub(super) fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }

    pub(super) fn get(&self, method: &Method, path: &str) -> Option<&Route> {
        self.by_path.get(path)?.iter().find(|r| r.method == *method)
    }
}
