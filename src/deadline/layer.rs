//! [`DeadlineLayer`]: the caller's timeout, read from the request's headers,
//! as a [`Deadline`] in its extensions.

use std::{
    task::{Context, Poll},
    time::Duration,
};

use http::{HeaderName, Request};
use tower_layer::Layer;
use tower_service::Service;

use super::{Deadline, parse_grpc_timeout, parse_timeout_header};

const GRPC_TIMEOUT: HeaderName = HeaderName::from_static("grpc-timeout");

/// Stamps each request's [`Deadline`] into its extensions, from
/// `grpc-timeout` and, if named with [`header`](Self::header), an HTTP
/// timeout header.
///
/// When both are present the earlier wins; a deadline already in the
/// extensions (set by an outer layer) is kept if it is earlier still.
/// Malformed values are ignored, and every timeout is capped at
/// [`max`](Self::max) (default 5 minutes), so a caller cannot make its
/// request look more patient than the operator allows.
#[derive(Debug, Clone)]
pub struct DeadlineLayer {
    header: Option<HeaderName>,
    max: Duration,
}

impl Default for DeadlineLayer {
    fn default() -> Self {
        Self::new()
    }
}

impl DeadlineLayer {
    /// Reads `grpc-timeout` only.
    pub const fn new() -> Self {
        Self {
            header: None,
            max: Duration::from_secs(300),
        }
    }

    /// Also reads the HTTP header `name` (for example `x-request-timeout`):
    /// seconds (`0.25`) or a number with a unit (`250ms`). A name that is not
    /// a valid header name is ignored.
    #[must_use]
    pub fn header(mut self, name: &str) -> Self {
        self.header = HeaderName::try_from(name).ok();
        self
    }

    /// The longest timeout a caller may ask for (default 5 minutes).
    #[must_use]
    pub fn max(mut self, max: Duration) -> Self {
        self.max = max;
        self
    }

    fn timeout<B>(&self, req: &Request<B>) -> Option<Duration> {
        let headers = req.headers();
        let grpc = headers
            .get(GRPC_TIMEOUT)
            .and_then(|v| parse_grpc_timeout(v.as_bytes()));
        let http = self
            .header
            .as_ref()
            .and_then(|name| headers.get(name))
            .and_then(|v| parse_timeout_header(v.as_bytes()));
        let timeout = match (grpc, http) {
            (Some(a), Some(b)) => a.min(b),
            (a, b) => a.or(b)?,
        };
        Some(timeout.min(self.max))
    }
}

impl<S> Layer<S> for DeadlineLayer {
    type Service = SetDeadline<S>;

    fn layer(&self, inner: S) -> Self::Service {
        SetDeadline {
            inner,
            layer: self.clone(),
        }
    }
}

/// The service [`DeadlineLayer`] makes.
#[derive(Debug, Clone)]
pub struct SetDeadline<S> {
    inner: S,
    layer: DeadlineLayer,
}

impl<S, B> Service<Request<B>> for SetDeadline<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request<B>) -> Self::Future {
        if let Some(timeout) = self.layer.timeout(&req) {
            let deadline = Deadline::after(timeout);
            let earlier = match req.extensions().get::<Deadline>() {
                Some(&outer) => outer.min(deadline),
                None => deadline,
            };
            req.extensions_mut().insert(earlier);
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use tower::{ServiceExt, service_fn};

    use super::*;

    async fn stamped(layer: DeadlineLayer, req: Request<()>) -> Option<Duration> {
        let svc = layer.layer(service_fn(|req: Request<()>| async move {
            Ok::<_, Infallible>(req.extensions().get::<Deadline>().map(|d| d.remaining()))
        }));
        svc.oneshot(req).await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn reads_grpc_timeout_and_the_named_header() {
        let req = Request::builder()
            .header("grpc-timeout", "300m")
            .body(())
            .unwrap();
        assert_eq!(
            stamped(DeadlineLayer::new(), req).await,
            Some(Duration::from_millis(300))
        );

        // The HTTP header only when named; the earlier of the two wins.
        let req = || {
            Request::builder()
                .header("x-request-timeout", "0.1")
                .header("grpc-timeout", "300m")
                .body(())
                .unwrap()
        };
        assert_eq!(
            stamped(DeadlineLayer::new(), req()).await,
            Some(Duration::from_millis(300))
        );
        let named = DeadlineLayer::new().header("x-request-timeout");
        assert_eq!(
            stamped(named, req()).await,
            Some(Duration::from_millis(100))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn malformed_values_are_ignored_and_huge_ones_capped() {
        let layer = DeadlineLayer::new()
            .header("x-request-timeout")
            .max(Duration::from_secs(10));
        let req = Request::builder()
            .header("x-request-timeout", "forever")
            .header("grpc-timeout", "1.5S")
            .body(())
            .unwrap();
        assert_eq!(stamped(layer.clone(), req).await, None);
        let req = Request::builder()
            .header("grpc-timeout", "99999999H")
            .body(())
            .unwrap();
        assert_eq!(stamped(layer, req).await, Some(Duration::from_secs(10)));
        // An invalid header name configures nothing.
        let req = Request::builder()
            .header("grpc-timeout", "1S")
            .body(())
            .unwrap();
        let bad = DeadlineLayer::new().header("not a header");
        assert_eq!(stamped(bad, req).await, Some(Duration::from_secs(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn an_earlier_outer_deadline_is_kept() {
        let mut req = Request::builder()
            .header("grpc-timeout", "5S")
            .body(())
            .unwrap();
        req.extensions_mut()
            .insert(Deadline::after(Duration::from_millis(50)));
        assert_eq!(
            stamped(DeadlineLayer::new(), req).await,
            Some(Duration::from_millis(50))
        );
    }
}
