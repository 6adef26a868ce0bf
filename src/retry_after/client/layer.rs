//! [`HonorRetryAfterLayer`]: the configuration, and the state its clones share.

use std::{fmt, sync::Arc, time::Duration};

use tower_layer::Layer;

use super::{Cooldown, HonorRetryAfter, HonorRetryAfterHandle, Retries};

/// The longest cooldown honoured by default: five minutes.
pub(crate) const DEFAULT_COOLDOWN_CAP: Duration = Duration::from_secs(300);

/// The layer's configuration and the state every clone shares.
pub(crate) struct Honour {
    pub(super) cap: Duration,
    pub(super) cooldown: Cooldown,
    pub(super) retries: Option<Retries>,
    pub(super) stats: Stats,
}

#[derive(Default)]
pub(super) struct Stats {
    pub(super) calls: std::sync::atomic::AtomicU64,
    pub(super) retries: std::sync::atomic::AtomicU64,
    pub(super) budget_exhausted: std::sync::atomic::AtomicU64,
    pub(super) over_cap: std::sync::atomic::AtomicU64,
}

/// Makes a client honour the backoff its servers ask for.
///
/// When a response is `429`/`503` with `Retry-After`, or a trailers-only gRPC
/// `RESOURCE_EXHAUSTED`/`UNAVAILABLE` with `grpc-retry-pushback-ms`, a
/// *cooldown* opens for that server's origin (scheme, host and port), shared
/// by every clone of the client: until the instant the server named, every
/// call to it waits in its future instead of hammering it, while calls to
/// other origins go out. With [`global_cooldown`](HonorRetryAfterBuilder::global_cooldown)
/// one cooldown holds every call, and `poll_ready` stays pending on a timer
/// while it is open (a call readied before it opened waits in its future).
/// A request without an authority in its URI (a tonic `Channel`'s) is keyed
/// by its `Host` header, or shares one cooldown with the others that lack
/// both. Never earlier than asked; never
/// longer than the [`cap`](HonorRetryAfterBuilder::cap) (default 5 minutes) — a longer hint is
/// not waited and the response goes back to the caller. A negative or
/// unparseable pushback means "do not retry" (gRFC A6).
///
/// With [`retries`](HonorRetryAfterBuilder::retries) the refused call itself is sent again once
/// the cooldown ends (or after a full-jitter backoff when the server gave no
/// hint), within a [`RetryBudget`](super::RetryBudget), for idempotent methods unless allowed,
/// with the request body replayed from a bounded copy ([`ReplayBody`](super::ReplayBody)) and
/// the attempt number in a header.
///
/// The layer works on `http` requests and responses, so it wraps a hyper
/// client or a tonic `Channel` (whose body type it needs through
/// `map_request`, see [`ReplayBody`](super::ReplayBody)).
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_spillway::retry_after::{HonorRetryAfterLayer, Retries};
///
/// let honour = HonorRetryAfterLayer::builder().retries(Retries::new()).build();
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
    shared: Arc<Honour>,
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
    /// Honours cooldowns of up to five minutes, one per origin;
    /// no retries.
    pub fn new() -> Self {
        Self::builder().build()
    }

    /// Configures the layer: set the options in any order, then
    /// [`build`](HonorRetryAfterBuilder::build) it.
    pub fn builder() -> HonorRetryAfterBuilder {
        HonorRetryAfterBuilder {
            cap: DEFAULT_COOLDOWN_CAP,
            per_origin: true,
            retries: None,
        }
    }

    /// A handle on the cooldown and the counts.
    pub fn handle(&self) -> HonorRetryAfterHandle {
        HonorRetryAfterHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

/// The options of a [`HonorRetryAfterLayer`], a plain value: set them in any
/// order, then [`build`](Self::build) the layer, which creates the shared
/// cooldown once.
#[derive(Debug, Clone)]
pub struct HonorRetryAfterBuilder {
    cap: Duration,
    per_origin: bool,
    retries: Option<Retries>,
}

impl HonorRetryAfterBuilder {
    /// The longest cooldown honoured (default five minutes). A
    /// server asking for longer gets no cooldown and no retry: its response
    /// goes back to the caller.
    #[must_use]
    pub fn cap(mut self, cap: Duration) -> Self {
        self.cap = cap;
        self
    }

    /// Retries refused calls as `retries` says.
    #[must_use]
    pub fn retries(mut self, retries: Retries) -> Self {
        self.retries = Some(retries);
        self
    }

    /// One cooldown for every call, whatever its origin, waited out in
    /// `poll_ready`: for a client of a single origin, whose callers should
    /// not even ready a call while the server asks them to wait.
    #[must_use]
    pub fn global_cooldown(mut self) -> Self {
        self.per_origin = false;
        self
    }

    /// Creates the shared cooldown and the layer.
    pub fn build(self) -> HonorRetryAfterLayer {
        HonorRetryAfterLayer {
            shared: Arc::new(Honour {
                cap: self.cap,
                cooldown: Cooldown::new(self.per_origin),
                retries: self.retries,
                stats: Stats::default(),
            }),
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
