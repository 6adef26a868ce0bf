//! Which requests may be answered later.

use http::{Method, Request};

use crate::priority::route::segment_prefix;

/// Decides whether a request is deferrable: whether its caller is content
/// with `202 Accepted` and the result later.
///
/// Only requests whose effect the caller need not see at once qualify: a
/// like, an analytics event, a write whose answer nobody reads. Closures
/// `Fn(&Request<B>) -> bool` implement it, and so does [`DeferrableRoutes`].
pub trait Deferrable<B> {
    /// `true` when `req` may be stored and replayed later.
    fn is_deferrable(&self, req: &Request<B>) -> bool;
}

impl<B, F> Deferrable<B> for F
where
    F: Fn(&Request<B>) -> bool,
{
    fn is_deferrable(&self, req: &Request<B>) -> bool {
        self(req)
    }
}

/// Deferrable requests by method and path prefix.
///
/// Prefixes match whole path segments, as in
/// [`RouteTable`](crate::priority::RouteTable): `/likes` matches `/likes`
/// and `/likes/42`, not `/likesx`. Requests no route names are not
/// deferrable.
///
/// ```
/// use http::{Method, Request};
/// use tower_spillway::spill::{Deferrable, DeferrableRoutes};
///
/// let routes = DeferrableRoutes::new()
///     .route(Some(Method::POST), "/likes")
///     .route(Some(Method::POST), "/analytics");
/// assert!(routes.is_deferrable(&Request::post("/likes/7").body(()).unwrap()));
/// assert!(!routes.is_deferrable(&Request::get("/likes/7").body(()).unwrap()));
/// assert!(!routes.is_deferrable(&Request::post("/payments").body(()).unwrap()));
/// ```
#[derive(Debug, Clone, Default)]
pub struct DeferrableRoutes {
    routes: Vec<(Option<Method>, String)>,
}

impl DeferrableRoutes {
    /// No route: nothing is deferrable.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes requests with `method` (any method when `None`) under `prefix`
    /// deferrable. A trailing `/` on the prefix is ignored.
    #[must_use]
    pub fn route(mut self, method: Option<Method>, prefix: &str) -> Self {
        self.routes
            .push((method, prefix.trim_end_matches('/').to_owned()));
        self
    }

    /// `true` when a route names this method and path.
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        self.routes.iter().any(|(m, prefix)| {
            m.as_ref().is_none_or(|m| m == method) && segment_prefix(path, prefix)
        })
    }
}

impl<B> Deferrable<B> for DeferrableRoutes {
    fn is_deferrable(&self, req: &Request<B>) -> bool {
        self.matches(req.method(), req.uri().path())
    }
}
