//! The client half: honour `Retry-After` and `grpc-retry-pushback-ms`.

mod body;
mod budget;
mod cooldown;

mod future;

use std::{
    fmt,
    future::Future,
    mem,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
    time::Duration,
};

use http::{Method, Request, Response};
use tokio::time::Sleep;
use tower_layer::Layer;
use tower_service::Service;

pub use body::ReplayBody;
pub use budget::RetryBudget;
use cooldown::Cooldown;
pub use future::HonorFuture;

use crate::ConfigError;

/// The longest cooldown honoured by default: five minutes.
pub const DEFAULT_COOLDOWN_CAP: Duration = Duration::from_secs(300);

/// The header telling the server how many attempts came before this one, on
/// HTTP retries (gRPC calls carry `grpc-previous-rpc-attempts`, gRFC A6).
pub const RETRY_ATTEMPT: http::HeaderName = http::HeaderName::from_static("x-retry-attempt");

/// When and how [`HonorRetryAfter`] retries refused calls.
///
/// ```
/// use std::time::Duration;
/// use tower_spillway::retry_after::Retries;
///
/// let retries = Retries::new()
///     .attempts(4)?
///     .backoff(Duration::from_millis(50), Duration::from_secs(2))?
///     .max_body_bytes(64 * 1024)
///     .allow_non_idempotent(true); // e.g. gRPC, whose calls are all POSTs
/// # let _ = retries;
/// # Ok::<(), tower_spillway::ConfigError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Retries {
    attempts: u32,
    base: Duration,
    max_backoff: Duration,
    budget: Arc<RetryBudget>,
    max_body_bytes: usize,
    non_idempotent: bool,
}

impl Default for Retries {
    fn default() -> Self {
        Self {
            attempts: 3,
            base: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            budget: Arc::new(RetryBudget::default()),
            max_body_bytes: 64 * 1024,
            non_idempotent: false,
        }
    }
}

/// The most attempts (first call included) [`Retries::attempts`] accepts.
pub const MAX_ATTEMPTS: u32 = 5;

impl Retries {
    /// 3 attempts, full-jitter exponential backoff from 100 ms up to 5 s when
    /// the server gives no hint, the default [`RetryBudget`], bodies of up to
    /// 64 KiB replayed, idempotent methods only.
    pub fn new() -> Self {
        Self::default()
    }

    /// Attempts per call, the first included: `1..=5`.
    pub fn attempts(mut self, attempts: u32) -> Result<Self, ConfigError> {
        if !(1..=MAX_ATTEMPTS).contains(&attempts) {
            return Err(ConfigError::new("attempts", "must be within 1..=5"));
        }
        self.attempts = attempts;
        Ok(self)
    }

    /// The backoff without a server hint: before retry `n`, a uniformly random
    /// wait in `0..=min(max, base × 2^(n-1))` ("full jitter").
    pub fn backoff(mut self, base: Duration, max: Duration) -> Result<Self, ConfigError> {
        if base.is_zero() || max < base {
            return Err(ConfigError::new("backoff", "needs 0 < base <= max"));
        }
        self.base = base;
        self.max_backoff = max;
        Ok(self)
    }

    /// The retry budget shared by every clone of the client.
    #[must_use]
    pub fn budget(mut self, budget: RetryBudget) -> Self {
        self.budget = Arc::new(budget);
        self
    }

    /// The most body bytes kept for replay; a larger body is sent once.
    #[must_use]
    pub fn max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Retries non-idempotent methods (POST, PATCH) too. Off by default: a
    /// `503` may come after the server acted.
    #[must_use]
    pub fn allow_non_idempotent(mut self, allow: bool) -> Self {
        self.non_idempotent = allow;
        self
    }

    fn backoff_for(&self, retry: u32) -> Duration {
        let ceiling = self
            .base
            .saturating_mul(1u32 << retry.saturating_sub(1).min(16))
            .min(self.max_backoff);
        let nanos = u64::try_from(ceiling.as_nanos()).unwrap_or(u64::MAX);
        Duration::from_nanos(fastrand::u64(..=nanos))
    }
}

/// The layer's configuration and, behind their own `Arc`s, the state every
/// clone shares (so a handle taken while building stays valid).
#[derive(Clone)]
pub(crate) struct Shared {
    cap: Duration,
    cooldown: Arc<Cooldown>,
    retries: Option<Retries>,
    stats: Arc<Stats>,
}

#[derive(Default)]
struct Stats {
    calls: std::sync::atomic::AtomicU64,
    retries: std::sync::atomic::AtomicU64,
    budget_exhausted: std::sync::atomic::AtomicU64,
    over_cap: std::sync::atomic::AtomicU64,
}

/// Makes a client honour the backoff its servers ask for.
///
/// When a response is `429`/`503` with `Retry-After`, or a trailers-only gRPC
/// `RESOURCE_EXHAUSTED`/`UNAVAILABLE` with `grpc-retry-pushback-ms`, a
/// *cooldown* opens for that server's origin (scheme, host and port), shared
/// by every clone of the client: until the instant the server named, every
/// call to it waits in its future instead of hammering it, while calls to
/// other origins go out. With [`global_cooldown`](Self::global_cooldown)
/// one cooldown holds every call, and `poll_ready` stays pending on a timer
/// while it is open (a call readied before it opened waits in its future).
/// A request without an authority in its URI (a tonic `Channel`'s) is keyed
/// by its `Host` header, or shares one cooldown with the others that lack
/// both. Never earlier than asked; never
/// longer than the [`cap`](Self::cap) (default 5 minutes) — a longer hint is
/// not waited and the response goes back to the caller. A negative or
/// unparseable pushback means "do not retry" (gRFC A6).
///
/// With [`retries`](Self::retries) the refused call itself is sent again once
/// the cooldown ends (or after a full-jitter backoff when the server gave no
/// hint), within a [`RetryBudget`], for idempotent methods unless allowed,
/// with the request body replayed from a bounded copy ([`ReplayBody`]) and
/// the attempt number in a header.
///
/// The layer works on `http` requests and responses, so it wraps a hyper
/// client or a tonic `Channel` (whose body type it needs through
/// `map_request`, see [`ReplayBody`]).
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_spillway::retry_after::{HonorRetryAfterLayer, Retries};
///
/// let honour = HonorRetryAfterLayer::new().retries(Retries::new());
/// let client = ServiceBuilder::new()
///     .layer(honour.clone())
///     .service_fn(|req: http::Request<_>| async move {
///         let _: &tower_spillway::retry_after::ReplayBody<String> = req.body();
///         Ok::<_, std::convert::Infallible>(http::Response::new(String::new()))
///     });
/// # let _ = client;
/// println!("{:?}", honour.handle().snapshot());
/// ```
///
/// # Differences from tower's `Retry`
///
/// tower's `Retry` cannot clone an `http::Request` (bodies are streams), does
/// not read `Retry-After` or pushback, and each call retries on its own.
/// Here the cooldown is shared, so a whole client backs off at once, the body
/// is replayed from a bounded copy, and the budget caps retries across all
/// calls.
#[derive(Clone)]
pub struct HonorRetryAfterLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for HonorRetryAfterLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HonorRetryAfterLayer")
            .field("cap", &self.shared.cap)
            .field("retries", &self.shared.retries)
            .finish()
    }
}

impl Default for HonorRetryAfterLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl HonorRetryAfterLayer {
    /// Honours cooldowns of up to [`DEFAULT_COOLDOWN_CAP`]; no retries.
    pub fn new() -> Self {
        Self {
            shared: Arc::new(Shared {
                cap: DEFAULT_COOLDOWN_CAP,
                cooldown: Arc::new(Cooldown::new(true)),
                retries: None,
                stats: Arc::default(),
            }),
        }
    }

    fn edit(self, f: impl FnOnce(&mut Shared)) -> Self {
        let mut shared = Arc::unwrap_or_clone(self.shared);
        f(&mut shared);
        Self {
            shared: Arc::new(shared),
        }
    }

    /// The longest cooldown honoured. A server asking for longer gets no
    /// cooldown and no retry: its response goes back to the caller.
    #[must_use]
    pub fn cap(self, cap: Duration) -> Self {
        self.edit(|s| s.cap = cap)
    }

    /// Retries refused calls as `retries` says.
    #[must_use]
    pub fn retries(self, retries: Retries) -> Self {
        self.edit(|s| s.retries = Some(retries))
    }

    /// One cooldown for every call, whatever its origin, waited out in
    /// `poll_ready`: for a client of a single origin, whose callers should
    /// not even ready a call while the server asks them to wait.
    #[must_use]
    pub fn global_cooldown(self) -> Self {
        self.edit(|s| s.cooldown = Arc::new(Cooldown::new(false)))
    }

    /// A handle on the cooldown and the counts.
    pub fn handle(&self) -> HonorRetryAfterHandle {
        HonorRetryAfterHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> Layer<S> for HonorRetryAfterLayer {
    type Service = HonorRetryAfter<S>;

    fn layer(&self, inner: S) -> HonorRetryAfter<S> {
        HonorRetryAfter {
            inner,
            shared: Arc::clone(&self.shared),
            sleep: None,
        }
    }
}

/// A cheap handle on an [`HonorRetryAfterLayer`]'s shared state.
#[derive(Clone)]
pub struct HonorRetryAfterHandle {
    shared: Arc<Shared>,
}

impl fmt::Debug for HonorRetryAfterHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("HonorRetryAfterHandle")
            .field(&self.snapshot())
            .finish()
    }
}

/// The figures of an [`HonorRetryAfterLayer`] at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct HonorRetryAfterSnapshot {
    /// Calls made by callers (retries not counted).
    pub calls: u64,
    /// Retries sent.
    pub retries: u64,
    /// Retries the budget refused.
    pub budget_exhausted: u64,
    /// Hints longer than the cap, handed back to the caller.
    pub over_cap: u64,
    /// Times a cooldown opened or was extended.
    pub cooldowns: u64,
    /// The longest cooldown asked for and honoured, in milliseconds.
    pub max_cooldown_ms: u64,
    /// Milliseconds left in the open cooldown (0 when closed).
    pub cooldown_remaining_ms: u64,
}

impl HonorRetryAfterHandle {
    /// The instant the open cooldown ends, if one is open; per origin, the
    /// last one to end.
    pub fn cooldown_until(&self) -> Option<tokio::time::Instant> {
        self.shared.cooldown.latest()
    }

    /// The figures now.
    pub fn snapshot(&self) -> HonorRetryAfterSnapshot {
        use std::sync::atomic::Ordering::Relaxed;
        let s = &self.shared.stats;
        HonorRetryAfterSnapshot {
            calls: s.calls.load(Relaxed),
            retries: s.retries.load(Relaxed),
            budget_exhausted: s.budget_exhausted.load(Relaxed),
            over_cap: s.over_cap.load(Relaxed),
            cooldowns: self.shared.cooldown.opened(),
            max_cooldown_ms: self.shared.cooldown.longest_ms(),
            cooldown_remaining_ms: self.cooldown_until().map_or(0, |u| {
                crate::hint::ceil_millis(u.saturating_duration_since(tokio::time::Instant::now()))
            }),
        }
    }
}

/// The service [`HonorRetryAfterLayer`] makes.
pub struct HonorRetryAfter<S> {
    inner: S,
    shared: Arc<Shared>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S: Clone> Clone for HonorRetryAfter<S> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
            sleep: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for HonorRetryAfter<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HonorRetryAfter")
            .field("inner", &self.inner)
            .field("cooling_down", &self.sleep.is_some())
            .finish_non_exhaustive()
    }
}

fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE | Method::PUT | Method::DELETE
    )
}

impl<S, B, ResB> Service<Request<B>> for HonorRetryAfter<S>
where
    S: Service<Request<ReplayBody<B>>, Response = Response<ResB>> + Clone,
    B: http_body::Body,
{
    type Response = Response<ResB>;
    type Error = S::Error;
    type Future = HonorFuture<S, B>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        loop {
            if let Some(sleep) = &mut self.sleep {
                ready!(sleep.as_mut().poll(cx));
                self.sleep = None;
            }
            // Re-read after each wait: another call may have extended it.
            let cooldown = &self.shared.cooldown;
            let global = (!cooldown.per_origin()).then(|| cooldown.until(&None));
            match global.flatten() {
                Some(until) => self.sleep = Some(Box::pin(tokio::time::sleep_until(until))),
                None => break,
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        use std::sync::atomic::Ordering::Relaxed;
        self.shared.stats.calls.fetch_add(1, Relaxed);
        let clone = self.inner.clone();
        let mut inner = mem::replace(&mut self.inner, clone);
        let retries = self
            .shared
            .retries
            .as_ref()
            .filter(|r| r.attempts > 1 && (r.non_idempotent || idempotent(req.method())));
        // The cooldown of its origin (or one opened after it was readied):
        // the call waits for it.
        let origin = self.shared.cooldown.origin_of(&req);
        let cooldown = self.shared.cooldown.until(&origin);
        let shared = Arc::clone(&self.shared);
        match (retries, cooldown) {
            (None, None) => {
                HonorFuture::once(inner.call(req.map(ReplayBody::once)), origin, shared)
            }
            (None, Some(until)) => {
                let (parts, body) = req.into_parts();
                HonorFuture::delayed(
                    until,
                    inner,
                    parts,
                    ReplayBody::once(body),
                    None,
                    origin,
                    shared,
                )
            }
            (Some(r), cooldown) => {
                r.budget.deposit();
                let (parts, body) = req.into_parts();
                let (body, replay) = ReplayBody::first(body, r.max_body_bytes);
                match cooldown {
                    None => {
                        let future = inner.call(Request::from_parts(parts.clone(), body));
                        HonorFuture::retrying(future, inner, parts, replay, origin, shared)
                    }
                    Some(until) => HonorFuture::delayed(
                        until,
                        inner,
                        parts,
                        body,
                        Some(replay),
                        origin,
                        shared,
                    ),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
