use std::{
    sync::Arc,
    task::{Context, Poll},
};

use tower_layer::Layer;
use tower_service::Service;

use super::{Classify, Cohort, Cohorts, Priority};
use crate::key::{KeyExtractor, KeyType};

/// Stamps each request's [`Priority`] (and, optionally, its [`Cohort`]) into
/// the request's extensions, where every later layer finds it.
///
/// A request an outer layer already stamped keeps its stamp, so an edge proxy's
/// decision is not overridden by a more generous inner default.
///
/// The layer is a plain value holding no state: `layer()` hands each service
/// a shared copy of the classifier.
///
/// ```
/// use axum::{Router, routing::post};
/// use http::Method;
/// use tower_spillway::priority::{Priority, PriorityLayer, RouteTable};
///
/// let routes = RouteTable::new()
///     .route(Some(Method::POST), "/payments", Priority::Critical)
///     .route(None, "/analytics", Priority::Low);
///
/// let app: Router = Router::new()
///     .route("/payments", post(|| async { "paid" }))
///     .layer(PriorityLayer::new(routes));
/// ```
#[derive(Debug, Clone)]
pub struct PriorityLayer<C, K = NoCohorts> {
    shared: Stamp<C, K>,
}

/// The caller key of a [`PriorityLayer`] that assigns no cohorts.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCohorts;

impl KeyType for NoCohorts {
    type Key = Option<()>;
}

impl<Req> KeyExtractor<Req> for NoCohorts {
    fn key(&self, _req: &Req) -> Option<()> {
        None
    }
}

#[derive(Debug, Clone)]
struct Stamp<C, K> {
    classify: C,
    cohorts: Option<Cohorts<K>>,
}

impl<C> PriorityLayer<C, NoCohorts> {
    /// Classifies every request with `classify`.
    pub fn new(classify: C) -> Self {
        Self {
            shared: Stamp {
                classify,
                cohorts: None,
            },
        }
    }

    /// Also assigns each request a [`Cohort`] from its caller.
    #[must_use]
    pub fn cohorts<K>(self, cohorts: Cohorts<K>) -> PriorityLayer<C, K> {
        PriorityLayer {
            shared: Stamp {
                classify: self.shared.classify,
                cohorts: Some(cohorts),
            },
        }
    }
}

impl<S, C: Clone, K: Clone> Layer<S> for PriorityLayer<C, K> {
    type Service = SetPriority<S, C, K>;

    fn layer(&self, inner: S) -> Self::Service {
        SetPriority {
            inner,
            shared: Arc::new(self.shared.clone()),
        }
    }
}

/// The service [`PriorityLayer`] makes: stamps the priority, then calls the
/// inner service. It never refuses anything and adds no future of its own.
#[derive(Debug)]
pub struct SetPriority<S, C, K = NoCohorts> {
    inner: S,
    shared: Arc<Stamp<C, K>>,
}

impl<S: Clone, C, K> Clone for SetPriority<S, C, K> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, C, K, B, T> Service<http::Request<B>> for SetPriority<S, C, K>
where
    S: Service<http::Request<B>>,
    C: Classify<http::Request<B>>,
    K: KeyExtractor<http::Request<B>, Key = Option<T>>,
    T: std::hash::Hash,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        if req.extensions().get::<Priority>().is_none() {
            let priority = self.shared.classify.classify(&req);
            req.extensions_mut().insert(priority);
        }
        if let Some(cohorts) = &self.shared.cohorts {
            if req.extensions().get::<Cohort>().is_none() {
                if let Some(cohort) = cohorts.cohort(&req) {
                    req.extensions_mut().insert(cohort);
                }
            }
        }
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tower::{ServiceExt, service_fn};

    use super::*;
    use crate::priority::RouteTable;

    type Seen = (Option<Priority>, Option<Cohort>);

    fn echo()
    -> impl Service<
        http::Request<()>,
        Response = Seen,
        Error = std::convert::Infallible,
        Future: Send,
    > + Clone {
        service_fn(|req: http::Request<()>| async move {
            Ok((
                req.extensions().get::<Priority>().copied(),
                req.extensions().get::<Cohort>().copied(),
            ))
        })
    }

    #[tokio::test]
    async fn stamps_priority_from_classifier() {
        let layer = PriorityLayer::new(RouteTable::new().route(None, "/pay", Priority::Critical));
        let svc = layer.layer(echo());
        let req = http::Request::get("/pay/1").body(()).unwrap();
        assert_eq!(
            svc.clone().oneshot(req).await.unwrap(),
            (Some(Priority::Critical), None)
        );
        let req = http::Request::get("/other").body(()).unwrap();
        assert_eq!(
            svc.oneshot(req).await.unwrap(),
            (Some(Priority::Default), None)
        );
    }

    #[tokio::test]
    async fn outer_stamp_is_kept() {
        let svc = PriorityLayer::new(Priority::Critical).layer(echo());
        let mut req = http::Request::new(());
        req.extensions_mut().insert(Priority::Low);
        assert_eq!(svc.oneshot(req).await.unwrap().0, Some(Priority::Low));
    }

    #[tokio::test]
    async fn cohorts_from_header_are_stable_per_caller() {
        // Configuring a layer that was already cloned is fine.
        let original = PriorityLayer::new(Priority::Low);
        let _clone = original.clone();
        let layer = original.cohorts(
            Cohorts::new(crate::rate::HeaderKey::new(http::HeaderName::from_static(
                "x-user",
            )))
            .period(Duration::ZERO),
        );
        let svc = layer.layer(echo());
        let call = |user: &'static str| {
            let svc = svc.clone();
            async move {
                let req = http::Request::get("/")
                    .header("x-user", user)
                    .body(())
                    .unwrap();
                svc.oneshot(req).await.unwrap().1
            }
        };
        let a1 = call("alice").await;
        assert!(a1.is_some());
        assert_eq!(call("alice").await, a1);
        let anonymous = svc.clone().oneshot(http::Request::new(())).await.unwrap();
        assert_eq!(anonymous, (Some(Priority::Low), None));
    }
}
