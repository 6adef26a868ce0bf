use std::{
    fmt,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll, ready},
};

use tokio::time::{Instant, Sleep};
use tower_layer::Layer;
use tower_service::Service;

use super::{
    Quota, RateLimitHandle,
    gcra::{Decision, Limiter, Store},
};

/// Paces calls to stay within a [`Quota`]: a client-side rate limit.
///
/// A service made by this layer is not ready until the quota allows one more
/// call: `poll_ready` stays pending (on a timer until the exact instant the
/// next call conforms, never spinning) and the call that follows spends it.
/// Every service the layer makes, and every clone of them, shares one bucket,
/// so a client with many tasks and connections stays under the quota as a
/// whole.
///
/// ```
/// use tower::ServiceBuilder;
/// use tower_spillway::rate::{PaceLayer, Quota};
///
/// let client = ServiceBuilder::new()
///     .layer(PaceLayer::new(Quota::per_second(200)?))
///     .service_fn(|req: http::Request<String>| async move {
///         Ok::<_, std::convert::Infallible>(http::Response::new(req.into_body()))
///     });
/// # let _ = client;
/// # Ok::<(), tower_spillway::ConfigError>(())
/// ```
///
/// A readied service that is dropped without being called has spent its
/// share of the quota; tower's `RateLimit` behaves alike.
#[derive(Clone)]
pub struct PaceLayer {
    limiter: Arc<Limiter<()>>,
}

impl fmt::Debug for PaceLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PaceLayer")
            .field("quota", &self.limiter.quota())
            .finish()
    }
}

impl PaceLayer {
    /// Paces calls to `quota`.
    pub fn new(quota: Quota) -> Self {
        Self {
            limiter: Arc::new(Limiter::new(quota, Store::global())),
        }
    }

    /// A handle to read the counts and change the quota at runtime.
    pub fn handle(&self) -> RateLimitHandle<()> {
        RateLimitHandle::from_limiter(Arc::clone(&self.limiter))
    }
}

impl<S> Layer<S> for PaceLayer {
    type Service = Pace<S>;

    fn layer(&self, inner: S) -> Pace<S> {
        Pace {
            inner,
            limiter: Arc::clone(&self.limiter),
            permit: false,
            sleep: None,
        }
    }
}

/// The service [`PaceLayer`] makes.
pub struct Pace<S> {
    inner: S,
    limiter: Arc<Limiter<()>>,
    permit: bool,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl<S: Clone> Clone for Pace<S> {
    fn clone(&self) -> Self {
        // A clone has not been readied: it holds no permit and no timer.
        Self {
            inner: self.inner.clone(),
            limiter: Arc::clone(&self.limiter),
            permit: false,
            sleep: None,
        }
    }
}

impl<S: fmt::Debug> fmt::Debug for Pace<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Pace")
            .field("inner", &self.inner)
            .field("permit", &self.permit)
            .finish_non_exhaustive()
    }
}

impl<S, Req> Service<Req> for Pace<S>
where
    S: Service<Req>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        while !self.permit {
            if let Some(sleep) = &mut self.sleep {
                ready!(sleep.as_mut().poll(cx));
                self.sleep = None;
            }
            match self.limiter.check(&(), false) {
                Decision::Allow { .. } => self.permit = true,
                Decision::Deny { wait, .. } => {
                    self.sleep = Some(Box::pin(tokio::time::sleep_until(crate::time::after(
                        Instant::now(),
                        wait,
                    ))));
                }
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Req) -> S::Future {
        // Called without being readied is a caller bug; it is served anyway
        // rather than panicking, and does not count.
        self.permit = false;
        self.inner.call(req)
    }
}
