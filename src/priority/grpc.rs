use std::collections::HashMap;

use super::{Classify, Priority};

/// Classifies gRPC calls by their method path, `/package.Service/Method`.
///
/// An entry for a whole service (`package.Service`) covers its methods; an
/// entry for one method overrides it. Anything else gets the fallback.
///
/// ```
/// use http::Request;
/// use tower_spillway::priority::{Classify, GrpcMethods, Priority};
///
/// let methods = GrpcMethods::new()
///     .service("shop.Payments", Priority::Critical)
///     .method("/shop.Catalog/Prefetch", Priority::Low);
///
/// let req = Request::post("/shop.Payments/Charge").body(()).unwrap();
/// assert_eq!(methods.classify(&req), Priority::Critical);
/// let req = Request::post("/shop.Catalog/Prefetch").body(()).unwrap();
/// assert_eq!(methods.classify(&req), Priority::Low);
/// ```
#[derive(Debug, Clone, Default)]
pub struct GrpcMethods {
    methods: HashMap<String, Priority>,
    services: HashMap<String, Priority>,
    fallback: Priority,
}

impl GrpcMethods {
    /// An empty table: every call gets [`Priority::Default`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the priority of one method, written `/package.Service/Method`
    /// (the leading `/` may be left out).
    #[must_use]
    pub fn method(mut self, path: &str, priority: Priority) -> Self {
        let path = path.strip_prefix('/').unwrap_or(path);
        self.methods.insert(path.to_owned(), priority);
        self
    }

    /// Sets the priority of every method of `package.Service`.
    #[must_use]
    pub fn service(mut self, service: &str, priority: Priority) -> Self {
        let service = service.trim_matches('/');
        self.services.insert(service.to_owned(), priority);
        self
    }

    /// The priority of calls that match no entry.
    #[must_use]
    pub fn fallback(mut self, priority: Priority) -> Self {
        self.fallback = priority;
        self
    }

    /// The priority for a request path.
    pub fn lookup(&self, path: &str) -> Priority {
        let path = path.strip_prefix('/').unwrap_or(path);
        if let Some(p) = self.methods.get(path) {
            return *p;
        }
        path.split_once('/')
            .and_then(|(service, _)| self.services.get(service))
            .copied()
            .unwrap_or(self.fallback)
    }
}

impl<B> Classify<http::Request<B>> for GrpcMethods {
    fn classify(&self, req: &http::Request<B>) -> Priority {
        self.lookup(req.uri().path())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_overrides_service_and_fallback_applies() {
        let t = GrpcMethods::new()
            .service("/a.S/", Priority::High)
            .method("a.S/Slow", Priority::Low)
            .fallback(Priority::Low);
        assert_eq!(t.lookup("/a.S/Fast"), Priority::High);
        assert_eq!(t.lookup("/a.S/Slow"), Priority::Low);
        assert_eq!(t.lookup("/b.S/Fast"), Priority::Low);
        assert_eq!(t.lookup(""), Priority::Low);
        assert_eq!(t.lookup("/a.S"), Priority::Low);
    }
}
