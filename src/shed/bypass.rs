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
/// let layer = PriorityShedLayer::new(Thresholds::ladder(100)).bypass(is_probe);
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

/// Health checks pass untouched: the paths `/health`, `/healthz`, `/livez`,
/// `/readyz`, `/ready` and `/ping` (and anything under them), and the gRPC
/// health service `grpc.health.v1.Health`.
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
/// assert!(HealthChecks.bypass(&get("/grpc.health.v1.Health/Check")));
/// assert!(!HealthChecks.bypass(&get("/healthy-recipes")));
/// ```
#[cfg(feature = "http")]
#[cfg_attr(docsrs, doc(cfg(feature = "http")))]
#[derive(Debug, Clone, Copy, Default)]
pub struct HealthChecks;

#[cfg(feature = "http")]
impl<B> Bypass<http::Request<B>> for HealthChecks {
    fn bypass(&self, req: &http::Request<B>) -> bool {
        const PATHS: [&str; 7] = [
            "/health",
            "/healthz",
            "/livez",
            "/readyz",
            "/ready",
            "/ping",
            "/grpc.health.v1.Health",
        ];
        let path = req.uri().path();
        PATHS.iter().any(|p| {
            path.strip_prefix(p)
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
        })
    }
}
