use http::Method;

use super::{Classify, Priority};

/// Classifies HTTP requests by method and path prefix.
///
/// The most specific matching route wins: the longest prefix, and at equal
/// length a route with a method over one without. Prefixes match whole path
/// segments, so `/pay` matches `/pay` and `/pay/42` but not `/payments`.
/// Requests no route matches get the fallback ([`Priority::Default`] unless set).
///
/// ```
/// use http::{Method, Request};
/// use tower_spillway::priority::{Classify, Priority, RouteTable};
///
/// let routes = RouteTable::new()
///     .route(Some(Method::POST), "/payments", Priority::Critical)
///     .route(None, "/analytics", Priority::Low)
///     .fallback(Priority::Default);
///
/// let req = Request::post("/payments/42").body(()).unwrap();
/// assert_eq!(routes.classify(&req), Priority::Critical);
/// let req = Request::get("/payments/42").body(()).unwrap();
/// assert_eq!(routes.classify(&req), Priority::Default);
/// ```
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    fallback: Priority,
}

#[derive(Debug, Clone)]
struct Route {
    method: Option<Method>,
    prefix: String,
    priority: Priority,
}

impl RouteTable {
    /// An empty table: every request gets [`Priority::Default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a route. `method: None` matches any method. A trailing `/` on the
    /// prefix is ignored, so `/a/` and `/a` are the same route.
    #[must_use]
    pub fn route(mut self, method: Option<Method>, prefix: &str, priority: Priority) -> Self {
        let prefix = prefix.trim_end_matches('/');
        self.routes.push(Route {
            method,
            prefix: prefix.to_owned(),
            priority,
        });
        self
    }

    /// The priority of requests no route matches.
    #[must_use]
    pub fn fallback(mut self, priority: Priority) -> Self {
        self.fallback = priority;
        self
    }

    /// The priority for a request with this method and path.
    pub fn lookup(&self, method: &Method, path: &str) -> Priority {
        let mut best: Option<(usize, bool, Priority)> = None;
        for route in &self.routes {
            if route.method.as_ref().is_some_and(|m| m != method) {
                continue;
            }
            if !segment_prefix(path, &route.prefix) {
                continue;
            }
            let rank = (route.prefix.len(), route.method.is_some());
            if best.is_none_or(|(len, has_method, _)| rank > (len, has_method)) {
                best = Some((rank.0, rank.1, route.priority));
            }
        }
        best.map_or(self.fallback, |(_, _, p)| p)
    }
}

/// `true` when `prefix` (without a trailing slash) covers `path` on a segment boundary.
pub(crate) fn segment_prefix(path: &str, prefix: &str) -> bool {
    match path.strip_prefix(prefix) {
        Some(rest) => rest.is_empty() || rest.starts_with('/') || prefix.is_empty(),
        None => false,
    }
}

impl<B> Classify<http::Request<B>> for RouteTable {
    fn classify(&self, req: &http::Request<B>) -> Priority {
        self.lookup(req.method(), req.uri().path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> RouteTable {
        RouteTable::new()
            .route(None, "/api", Priority::Default)
            .route(None, "/api/orders", Priority::High)
            .route(Some(Method::POST), "/api/orders", Priority::Critical)
            .route(None, "/analytics/", Priority::Low)
            .fallback(Priority::Low)
    }

    #[test]
    fn most_specific_route_wins() {
        let t = table();
        assert_eq!(t.lookup(&Method::GET, "/api/orders/1"), Priority::High);
        assert_eq!(t.lookup(&Method::POST, "/api/orders"), Priority::Critical);
        assert_eq!(t.lookup(&Method::GET, "/api/likes"), Priority::Default);
        assert_eq!(t.lookup(&Method::GET, "/analytics"), Priority::Low);
        assert_eq!(t.lookup(&Method::GET, "/elsewhere"), Priority::Low);
    }

    #[test]
    fn prefixes_match_whole_segments() {
        let t = table();
        assert_eq!(t.lookup(&Method::POST, "/api/ordersx"), Priority::Default);
        assert_eq!(t.lookup(&Method::GET, "/apix"), Priority::Low);
    }

    #[test]
    fn root_prefix_matches_everything() {
        let t = RouteTable::new().route(None, "/", Priority::High);
        assert_eq!(t.lookup(&Method::GET, "/anything/at/all"), Priority::High);
    }

    #[test]
    fn route_order_does_not_matter() {
        let t = RouteTable::new()
            .route(None, "/a/b", Priority::Critical)
            .route(None, "/a", Priority::Low);
        assert_eq!(t.lookup(&Method::GET, "/a/b/c"), Priority::Critical);
        assert_eq!(t.lookup(&Method::GET, "/a/c"), Priority::Low);
    }
}
