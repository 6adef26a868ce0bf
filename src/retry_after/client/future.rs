use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, atomic::Ordering::Relaxed},
    task::{Context, Poll, ready},
    time::{Duration, SystemTime},
};

use http::{HeaderValue, Request, Response, StatusCode, header, request::Parts};
use pin_project_lite::pin_project;
use tokio::time::{Instant, Sleep};
use tower_service::Service;

use super::{RETRY_ATTEMPT, ReplayBody, body, cooldown::Origin, layer::Honour};
use crate::{
    grpc::{self, GRPC_RETRY_PUSHBACK_MS},
    retry_after::{parse_pushback_ms, parse_retry_after},
};

const GRPC_PREVIOUS_ATTEMPTS: http::HeaderName =
    http::HeaderName::from_static("grpc-previous-rpc-attempts");

pin_project! {
    /// The response future of [`HonorRetryAfter`](super::HonorRetryAfter).
    pub struct HonorFuture<S, B>
    where
        S: Service<Request<ReplayBody<B>>>,
    {
        #[pin]
        state: State<S::Future>,
        retry: Option<Box<Retry<S, B>>>,
        // The refusal a retry waits to replace: the caller's answer if the
        // retry cannot be sent after all.
        refused: Option<S::Response>,
        // Whose cooldown it waits for and opens.
        origin: Origin,
        shared: Arc<Honour>,
    }
}

pin_project! {
    #[project = StateProj]
    enum State<F> {
        Calling { #[pin] future: F },
        Waiting { #[pin] sleep: Sleep },
        Ready,
    }
}

struct Retry<S, B> {
    inner: S,
    parts: Parts,
    /// The recorded body, when the call may be retried.
    replay: Option<Arc<Mutex<body::Recording<B>>>>,
    next_body: Option<ReplayBody<B>>,
    /// Attempts sent so far.
    attempts: u32,
    /// `attempts` when the server last named its wait: our own backoff
    /// restarts from its base after a pushback (gRFC A6).
    hinted_at: u32,
}

impl<S, B> fmt::Debug for HonorFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HonorFuture")
            .field("attempts", &self.retry.as_ref().map_or(1, |r| r.attempts))
            .finish_non_exhaustive()
    }
}

impl<S, B> HonorFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>>,
{
    pub(crate) fn once(future: S::Future, origin: Origin, shared: Arc<Honour>) -> Self {
        Self {
            state: State::Calling { future },
            retry: None,
            refused: None,
            origin,
            shared,
        }
    }

    /// A first attempt that waits for the open cooldown before going out.
    pub(crate) fn delayed(
        until: Instant,
        inner: S,
        parts: Parts,
        body: ReplayBody<B>,
        replay: Option<Arc<Mutex<body::Recording<B>>>>,
        origin: Origin,
        shared: Arc<Honour>,
    ) -> Self {
        Self {
            state: State::Waiting {
                sleep: tokio::time::sleep_until(until),
            },
            retry: Some(Box::new(Retry {
                inner,
                parts,
                replay,
                next_body: Some(body),
                attempts: 0,
                hinted_at: 0,
            })),
            refused: None,
            origin,
            shared,
        }
    }

    pub(crate) fn retrying(
        future: S::Future,
        inner: S,
        parts: Parts,
        replay: Arc<Mutex<body::Recording<B>>>,
        origin: Origin,
        shared: Arc<Honour>,
    ) -> Self {
        Self {
            state: State::Calling { future },
            retry: Some(Box::new(Retry {
                inner,
                parts,
                replay: Some(replay),
                next_body: None,
                attempts: 1,
                hinted_at: 0,
            })),
            refused: None,
            origin,
            shared,
        }
    }
}

/// What a response says about backing off.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Not a refusal.
    Pass,
    /// A refusal naming its wait.
    Hint(Duration),
    /// A refusal without a usable hint: back off on our own.
    NoHint,
    /// A refusal that must not be retried (negative or garbled pushback).
    NoRetry,
}

pub(crate) fn verdict<B>(res: &Response<B>) -> Verdict {
    let headers = res.headers();
    let status = res.status();
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::SERVICE_UNAVAILABLE {
        return match headers.get(header::RETRY_AFTER) {
            Some(v) => parse_retry_after(v.as_bytes(), SystemTime::now())
                .map_or(Verdict::NoHint, Verdict::Hint),
            None => Verdict::NoHint,
        };
    }
    match grpc::grpc_status(headers) {
        Some(8 | 14) => match headers.get(GRPC_RETRY_PUSHBACK_MS) {
            Some(v) => parse_pushback_ms(v.as_bytes()).map_or(Verdict::NoRetry, Verdict::Hint),
            None => Verdict::NoHint,
        },
        _ => Verdict::Pass,
    }
}

impl<S, B, ResB> Future for HonorFuture<S, B>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResB>>,
    B: http_body::Body,
{
    type Output = Result<Response<ResB>, S::Error>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match this.state.as_mut().project() {
                StateProj::Calling { future } => {
                    let res = ready!(future.poll(cx))?;
                    match decide(&res, this.shared, this.origin, this.retry.as_deref_mut()) {
                        None => return Poll::Ready(Ok(res)),
                        Some(at) if at <= Instant::now() => {
                            *this.refused = Some(res);
                            this.state.set(State::Ready);
                        }
                        Some(at) => {
                            *this.refused = Some(res);
                            this.state.set(State::Waiting {
                                sleep: tokio::time::sleep_until(at),
                            });
                        }
                    }
                }
                StateProj::Waiting { sleep } => {
                    ready!(sleep.poll(cx));
                    this.state.set(State::Ready);
                }
                StateProj::Ready => {
                    // A cooldown opened meanwhile by another call holds this
                    // retry too.
                    if let Some(until) = this.shared.cooldown.until(this.origin) {
                        this.state.set(State::Waiting {
                            sleep: tokio::time::sleep_until(until),
                        });
                        continue;
                    }
                    let Some(retry) = this.retry.as_deref_mut() else {
                        unreachable!("only futures holding their service wait");
                    };
                    if let Err(err) = ready!(retry.inner.poll_ready(cx)) {
                        // The service cannot take the retry: the caller gets
                        // the server's answer, not this error.
                        return Poll::Ready(this.refused.take().ok_or(err));
                    }
                    let Some(body) = retry.next_body.take() else {
                        unreachable!("an attempt is decided with its body");
                    };
                    let mut parts = retry.parts.clone();
                    if retry.attempts > 0 {
                        let previous = HeaderValue::from(retry.attempts);
                        if grpc::is_grpc_request(&parts.headers) {
                            parts.headers.insert(GRPC_PREVIOUS_ATTEMPTS, previous);
                        } else {
                            parts.headers.insert(RETRY_ATTEMPT, previous);
                        }
                        this.shared.stats.retries.fetch_add(1, Relaxed);
                    }
                    retry.attempts += 1;
                    let future = retry.inner.call(Request::from_parts(parts, body));
                    *this.refused = None;
                    this.state.set(State::Calling { future });
                }
            }
        }
    }
}

/// Opens the cooldown a response asks for and decides whether to retry: the
/// instant to send the retry at, or `None` to hand the response back.
fn decide<S, B, ResB>(
    res: &Response<ResB>,
    shared: &Honour,
    origin: &Origin,
    retry: Option<&mut Retry<S, B>>,
) -> Option<Instant>
where
    B: http_body::Body,
{
    let verdict = verdict(res);
    let at = match verdict {
        Verdict::Pass | Verdict::NoRetry => return None,
        Verdict::Hint(wait) if wait > shared.cap => {
            shared.stats.over_cap.fetch_add(1, Relaxed);
            return None;
        }
        Verdict::Hint(wait) if wait.is_zero() => Instant::now(),
        Verdict::Hint(wait) => shared.cooldown.open(origin, wait),
        Verdict::NoHint => {
            let retry = retry.as_ref()?;
            let policy = shared.retries.as_ref()?;
            let since_hint = retry.attempts - retry.hinted_at;
            crate::time::after(Instant::now(), policy.backoff_for(since_hint))
        }
    };
    let retry = retry?;
    if matches!(verdict, Verdict::Hint(_)) {
        retry.hinted_at = retry.attempts;
    }
    let policy = shared.retries.as_ref()?;
    if retry.attempts >= policy.attempts {
        return None;
    }
    let body = ReplayBody::retry(retry.replay.as_ref()?)?;
    if !policy.budget.withdraw() {
        shared.stats.budget_exhausted.fetch_add(1, Relaxed);
        // The caller's body goes back for nobody: dropping it is enough.
        drop(body);
        return None;
    }
    retry.next_body = Some(body);
    Some(at)
}
