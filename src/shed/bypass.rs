//! Requests the shedder never touches.

/// Picks requests that are never shed and never counted as load: health
/// checks, readiness probes, metrics scrapes.
///
/// Implemented for closures `Fn(&Req) -> bool` and, for HTTP requests, by
/// [`HealthChecks`].
///
/// ```
/// use tower_spillway::shed::{Bypass, Thresholds, PriorityShedLayer};
///
/// let is_probe = |req: &http::Request<()>| req.uri().path() == "/probe";
/// assert!(is_probe.bypass(&http::Request::get("/probe").body(()).unwrap()));
/// let layer = PriorityShedLayer::builder(Thresholds::ladder(100)).bypass(is_probe).build();
/// # let _ = layer;
/// ```
pub trait Bypass<Req> {
    /// `true` when `req` must pass untouched.
    fn bypass(&self, req: &Req) -> bool;
}

impl<F, Req> Bypass<Req> for F
where
    F: Fn(&Req) -> bool,
{
    #[inline]
    fn bypass(&self, req: &Req) -> bool {
        self(req)
    }
}

/// The default: every request is subject to shedding.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoBypass;

impl<Req> Bypass<Req> for NoBypass {
    #[inline]
    fn bypass(&self, _req: &Req) -> bool {
        false
    }
}

/// Health checks pass untouched: `GET` or `HEAD` of exactly `/health`,
/// `/healthz`, `/livez`, `/readyz`, `/ready` or `/ping`, and the gRPC health
/// service's `Check` and `Watch`. Nothing under those paths and no other
/// method bypasses: a client could otherwise route ordinary work past the
/// shedder by its path.
///
/// A shedder that refused its own health checks would tell the load balancer
/// the instance is dead exactly when it is busiest, moving its load onto the
/// other instances and overloading them in turn.
///
/// ```
/// use tower_spillway::shed::{Bypass, HealthChecks};
///
/// let get = |p: &str| http::Request::get(p).body(()).unwrap();
/// assert!(HealthChecks.bypass(&get("/healthz")));
/// assert!(!HealthChecks.bypass(&get("/healthy-recipes")));
/// // Only the probe itself: nothing under it, and no other method.
/// assert!(!HealthChecks.bypass(&get("/health/payments")));
/// let post = http::Request::post("/healthz").body(()).unwrap();
/// assert!(!HealthChecks.bypass(&post));
/// let check = http::Request::post("/grpc.health.v1.Health/Check").body(()).unwrap();
/// assert!(HealthChecks.bypass(&check));
/// ```
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct HealthChecks;

#[cfg(feature = "http")]
impl<B> Bypass<http::Request<B>> for HealthChecks {
    fn bypass(&self, req: &http::Request<B>) -> bool {
        // Exact paths, and for HTTP only the methods a probe uses: a route
        // under a probe's path, or a POST to it, is ordinary work.
        const PROBES: [&str; 6] = [
            "/health", "/healthz", "/livez", "/readyz", "/ready", "/ping",
        ];
        const GRPC: [&str; 2] = [
            "/grpc.health.v1.Health/Check",
            "/grpc.health.v1.Health/Watch",
        ];
        let path = req.uri().path();
        let probe = matches!(*req.method(), http::Method::GET | http::Method::HEAD);
        (probe && PROBES.contains(&path)) || GRPC.contains(&path)
    }
}
