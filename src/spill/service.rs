//! The `Spill` service: passes most requests through, and stores the
//! deferrable ones the stack refuses (or, in `Always` mode, every deferrable
//! one).

use std::{
    future::{Future, poll_fn},
    pin::Pin,
    sync::{Arc, atomic::Ordering::Relaxed},
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Method, Request, Response, StatusCode, request::Parts};
use http_body::Body;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use pin_project_lite::pin_project;
use tower_service::Service;

use crate::{BoxError, Overloaded, Priority, http::ResponseBody};

use super::{
    Replay, answer,
    config::Mode,
    deferrable::Deferrable,
    handle::Shared,
    job::{Enqueued, JobId, NewJob},
};

/// The service of a [`SpillLayer`](super::SpillLayer).
#[derive(Debug, Clone)]
pub struct Spill<S, D> {
    inner: S,
    shared: Arc<Shared>,
    deferrable: D,
}

impl<S, D> Spill<S, D> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>, deferrable: D) -> Self {
        Self {
            inner,
            shared,
            deferrable,
        }
    }
}

type BoxedAnswer<RB, E> =
    Pin<Box<dyn Future<Output = Result<Response<ResponseBody<RB>>, E>> + Send>>;

pin_project! {
    /// The future of [`Spill`]: the inner service's, or the layer's own work
    /// (reading the body, storing, looking a job up).
    pub struct SpillFuture<F, RB, E> {
        #[pin]
        kind: Kind<F, RB, E>,
    }
}

pin_project! {
    #[project = KindProj]
    enum Kind<F, RB, E> {
        Inner { #[pin] future: F },
        Own { future: BoxedAnswer<RB, E> },
    }
}

impl<F, RB, E> std::fmt::Debug for SpillFuture<F, RB, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillFuture").finish_non_exhaustive()
    }
}

impl<F, RB, E> Future for SpillFuture<F, RB, E>
where
    F: Future<Output = Result<Response<RB>, E>>,
{
    type Output = Result<Response<ResponseBody<RB>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project().kind.project() {
            KindProj::Inner { future } => future
                .poll(cx)
                .map(|r| r.map(|res| res.map(ResponseBody::inner))),
            KindProj::Own { future } => future.as_mut().poll(cx),
        }
    }
}

impl<S, D, B, RB> Service<Request<B>> for Spill<S, D>
where
    S: Service<Request<B>, Response = Response<RB>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    B: Body<Data = Bytes> + From<Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
    RB: Send + 'static,
    D: Deferrable<B>,
{
    type Response = Response<ResponseBody<RB>>;
    type Error = S::Error;
    type Future = SpillFuture<S::Future, RB, S::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if req.extensions().get::<Replay>().is_some() {
            return self.pass(req);
        }
        if let Some(id) = self.status_request(&req) {
            let shared = Arc::clone(&self.shared);
            return own(async move { Ok(look_up(&shared, id).await.map(ResponseBody::rejected)) });
        }
        if !self.deferrable.is_deferrable(&req) {
            return self.pass(req);
        }
        // The readied service goes into the future; this one takes its place.
        let inner = self.inner.clone();
        let inner = std::mem::replace(&mut self.inner, inner);
        let shared = Arc::clone(&self.shared);
        own(spill(shared, inner, req))
    }
}

fn own<F, RB, E, Fut>(future: Fut) -> SpillFuture<F, RB, E>
where
    Fut: Future<Output = Result<Response<ResponseBody<RB>>, E>> + Send + 'static,
{
    SpillFuture {
        kind: Kind::Own {
            future: Box::pin(future),
        },
    }
}

impl<S, D> Spill<S, D> {
    fn pass<B, RB>(&mut self, req: Request<B>) -> SpillFuture<S::Future, RB, S::Error>
    where
        S: Service<Request<B>, Response = Response<RB>>,
    {
        SpillFuture {
            kind: Kind::Inner {
                future: self.inner.call(req),
            },
        }
    }

    /// `Some(id)` for `GET <prefix>/<id>` (`id` may not parse: then an
    /// unknown one, answered `404`).
    fn status_request<B>(&self, req: &Request<B>) -> Option<Option<JobId>> {
        if req.method() != Method::GET {
            return None;
        }
        let rest = req
            .uri()
            .path()
            .strip_prefix(self.shared.config.prefix.as_str())?
            .strip_prefix('/')?;
        Some(rest.parse().ok())
    }
}

async fn look_up(shared: &Shared, id: Option<JobId>) -> Response<crate::http::RejectBody> {
    let Some(id) = id else {
        return answer::problem(StatusCode::NOT_FOUND, "no such job");
    };
    match shared.store.status(id).await {
        Ok(Some(status)) => answer::status(id, &status),
        Ok(None) => answer::problem(StatusCode::NOT_FOUND, "no such job"),
        Err(_) => answer::problem(
            StatusCode::SERVICE_UNAVAILABLE,
            "the job store cannot be read now",
        ),
    }
}

/// A deferrable request: read its body, check it, then serve or store it.
async fn spill<S, B, RB>(
    shared: Arc<Shared>,
    mut inner: S,
    req: Request<B>,
) -> Result<Response<ResponseBody<RB>>, S::Error>
where
    S: Service<Request<B>, Response = Response<RB>>,
    B: Body<Data = Bytes> + From<Bytes>,
    B::Error: Into<BoxError>,
{
    let config = &shared.config;
    let counters = &shared.counters;
    let refuse = |status, detail| Ok(answer::problem(status, detail).map(ResponseBody::rejected));
    let (parts, body) = req.into_parts();
    let body = match read_body(&parts, body, config.max_body).await {
        Ok(body) => body,
        Err(BodyRefused::TooLarge) => {
            counters.too_large.fetch_add(1, Relaxed);
            return refuse(
                StatusCode::PAYLOAD_TOO_LARGE,
                "the request body is too large to be accepted",
            );
        }
        Err(BodyRefused::Unreadable) => {
            return refuse(
                StatusCode::BAD_REQUEST,
                "the request body could not be read",
            );
        }
    };
    let Ok(idempotency_key) = idempotency_key(&parts.headers) else {
        counters.invalid.fetch_add(1, Relaxed);
        return refuse(
            StatusCode::BAD_REQUEST,
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        );
    };
    if let Some(validate) = &config.validate {
        if let Some(res) = validate(&parts, &body) {
            counters.invalid.fetch_add(1, Relaxed);
            return Ok(res.map(ResponseBody::rejected));
        }
    }
    let job = NewJob {
        priority: parts
            .extensions
            .get::<Priority>()
            .copied()
            .unwrap_or_default(),
        method: parts.method.clone(),
        uri: parts.uri.clone(),
        headers: kept_headers(&parts.headers, &config.keep_headers),
        body: body.clone(),
        idempotency_key,
    };
    if config.mode == Mode::Always {
        return Ok(match store(&shared, job).await {
            Some(accepted) => accepted,
            None => answer::problem(
                StatusCode::SERVICE_UNAVAILABLE,
                "the request cannot be accepted now",
            ),
        }
        .map(ResponseBody::rejected));
    }

    let res = inner
        .call(Request::from_parts(parts, B::from(body)))
        .await?;
    let refused = res
        .extensions()
        .get::<Overloaded>()
        .is_some_and(|o| !o.is_quota());
    if !refused {
        return Ok(res.map(ResponseBody::inner));
    }
    // The store full or failing: the stack's own refusal stands, with its
    // `Retry-After`.
    Ok(match store(&shared, job).await {
        Some(accepted) => accepted.map(ResponseBody::rejected),
        None => res.map(ResponseBody::inner),
    })
}

/// Stores `job` and builds its `202`; `None` when it could not be stored.
async fn store(shared: &Shared, job: NewJob) -> Option<Response<crate::http::RejectBody>> {
    let priority = job.priority;
    let mut batch = shared.enqueue();
    let stored: Result<Enqueued, BoxError> = async {
        poll_fn(|cx| batch.poll_ready(cx)).await?;
        batch.call(job).await
    }
    .await;
    let counters = &shared.counters;
    let (id, repeat) = match stored {
        Ok(Enqueued::New(id)) => {
            counters.spilled.fetch_add(1, Relaxed);
            shared.drain.stored.notify_one();
            (id, false)
        }
        Ok(Enqueued::Existing(id)) => {
            counters.repeated.fetch_add(1, Relaxed);
            (id, true)
        }
        Ok(Enqueued::Full) => {
            counters.full.fetch_add(1, Relaxed);
            return None;
        }
        Err(_) => {
            counters.store_errors.fetch_add(1, Relaxed);
            return None;
        }
    };
    let hint = poll_hint(shared, priority);
    Some(answer::accepted(&shared.config.prefix, id, hint, repeat))
}

/// When to poll: the jobs ahead of this one over the drain's rate, with a
/// tenth of jitter so pollers spread, between 1 s and the configured cap.
fn poll_hint(shared: &Shared, priority: Priority) -> Duration {
    let stats = shared.stats();
    let ahead: u64 = stats.queued[priority.index()..].iter().sum::<u64>() + stats.running;
    let secs = match shared.drain_rate() {
        Some(rate) => (ahead + 1) as f64 / rate,
        None => 1.0,
    };
    let secs = secs * (1.0 + 0.1 * fastrand::f64());
    let max = shared.config.max_poll_hint;
    Duration::try_from_secs_f64(secs.ceil())
        .unwrap_or(max)
        .clamp(Duration::from_secs(1), max)
}

enum BodyRefused {
    TooLarge,
    Unreadable,
}

async fn read_body<B>(parts: &Parts, body: B, max: usize) -> Result<Bytes, BodyRefused>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    let declared = parts
        .headers
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max as u64) {
        return Err(BodyRefused::TooLarge);
    }
    match Limited::new(body, max).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.is::<LengthLimitError>() => Err(BodyRefused::TooLarge),
        Err(_) => Err(BodyRefused::Unreadable),
    }
}

/// The caller's `Idempotency-Key`: `Ok(None)` without one, `Err` for one
/// that is empty, too long or not visible ASCII.
fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ()> {
    let mut values = headers.get_all("idempotency-key").iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(());
    }
    let bytes = value.as_bytes();
    let visible = bytes.iter().all(|b| (0x21..=0x7e).contains(b));
    if bytes.is_empty() || bytes.len() > 255 || !visible {
        return Err(());
    }
    Ok(Some(String::from_utf8_lossy(bytes).into_owned()))
}

fn kept_headers(headers: &HeaderMap, keep: &[http::HeaderName]) -> HeaderMap {
    let mut kept = HeaderMap::new();
    for name in keep {
        for value in headers.get_all(name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(value).unwrap(),
            );
        }
        h
    }

    #[test]
    fn idempotency_keys_must_be_short_visible_ascii() {
        assert_eq!(idempotency_key(&headers(&[])), Ok(None));
        assert_eq!(
            idempotency_key(&headers(&[("idempotency-key", b"order-42")])),
            Ok(Some("order-42".to_owned()))
        );
        let long = vec![b'a'; 256];
        for bad in [&b"a b"[..], b"caf\xc3\xa9", &long, b""] {
            assert_eq!(
                idempotency_key(&headers(&[("idempotency-key", bad)])),
                Err(())
            );
        }
        let twice = headers(&[("idempotency-key", b"a"), ("idempotency-key", b"b")]);
        assert_eq!(idempotency_key(&twice), Err(()));
    }

    #[test]
    fn only_the_named_headers_are_kept() {
        let h = headers(&[
            ("content-type", b"application/json"),
            ("authorization", b"Bearer secret"),
            ("x-a", b"1"),
            ("x-a", b"2"),
        ]);
        let kept = kept_headers(&h, &[http::header::CONTENT_TYPE, "x-a".parse().unwrap()]);
        assert_eq!(kept.len(), 3);
        assert!(kept.get("authorization").is_none());
        assert_eq!(kept.get_all("x-a").iter().count(), 2);
    }
}
