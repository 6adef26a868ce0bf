//! The protective stacks `stack.rs` times and `allocs.rs` counts the
//! allocations of, defined once so both measure the same thing: the HTTP
//! face and the generic face, each against tower's built-ins and against no
//! layer at all.

use std::{
    convert::Infallible,
    future::{Future, Ready, ready},
    pin::pin,
    task::{Context, Poll, Waker},
};

use bytes::Bytes;
use http::{Method, Request, Response};
use http_body_util::Empty;
use tower::{Service, ServiceBuilder};

use tower_spillway::{
    Priority,
    limit::{AdaptiveLimitLayer, Gradient},
    priority::{PriorityLayer, RouteTable},
    shed::{Adaptive, PriorityShedLayer},
};

pub type Body = Empty<Bytes>;

/// Answers at once with an empty 200.
#[derive(Clone, Copy)]
pub struct Ok200;

impl Service<Request<Body>> for Ok200 {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Body>, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request<Body>) -> Self::Future {
        ready(Ok(Response::new(Body::new())))
    }
}

/// The generic face's inner service: answers at once with the request.
#[derive(Clone, Copy)]
pub struct Echo;

impl Service<Priority> for Echo {
    type Response = Priority;
    type Error = Infallible;
    type Future = Ready<Result<Priority, Infallible>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, req: Priority) -> Self::Future {
        ready(Ok(req))
    }
}

/// One HTTP request: ready, call, poll the response, drop it (its empty body
/// has ended, which releases any permit it holds).
pub fn one<S>(svc: &mut S) -> bool
where
    S: Service<Request<Body>>,
{
    let mut cx = Context::from_waker(Waker::noop());
    if svc.poll_ready(&mut cx).is_pending() {
        return false;
    }
    let req = Request::post("/orders").body(Body::new()).unwrap();
    let fut = pin!(svc.call(req));
    matches!(fut.poll(&mut cx), Poll::Ready(Ok(_)))
}

/// One generic request, of the priority `/orders` has on the HTTP face:
/// ready, call, poll the response (which releases any permit it holds).
pub fn one_generic<S>(svc: &mut S) -> bool
where
    S: Service<Priority>,
{
    let mut cx = Context::from_waker(Waker::noop());
    if svc.poll_ready(&mut cx).is_pending() {
        return false;
    }
    let fut = pin!(svc.call(Priority::High));
    matches!(fut.poll(&mut cx), Poll::Ready(Ok(_)))
}

/// `PriorityLayer` (route table) → `PriorityShed` (adaptive, steering on the
/// limiter's queue) → `AdaptiveLimit` (Gradient), HTTP faces.
pub fn spillway() -> impl Service<Request<Body>> + Clone + Send + 'static {
    let routes = RouteTable::new()
        .route(Some(Method::POST), "/payments", Priority::Critical)
        .route(None, "/orders", Priority::High)
        .route(None, "/likes", Priority::Default)
        .route(None, "/analytics", Priority::Low);
    // The README's stack, with the defaults: an uncontended request is
    // admitted at once, so the cost measured is admitting and releasing.
    let limit = AdaptiveLimitLayer::builder(Gradient::default())
        .http()
        .build();
    let shed = PriorityShedLayer::builder(Adaptive::default())
        .signal(limit.handle())
        .http()
        .build();
    ServiceBuilder::new()
        .layer(PriorityLayer::new(routes))
        .layer(shed)
        .layer(limit)
        .service(Ok200)
}

/// tower's built-ins' equivalent: `LoadShed` → `ConcurrencyLimit`
/// (priority-blind, fixed limit, no `Retry-After`).
pub fn tower_stack() -> impl Service<Request<Body>> + Clone + Send + 'static {
    ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1_000)
        .service(Ok200)
}

/// The request is its own priority, so classifying reads it.
fn by_value(p: &Priority) -> Priority {
    *p
}

/// The same three decisions on the generic face: classifying (a function of
/// the request, where the HTTP face has `PriorityLayer`'s route table) →
/// `PriorityShed` (adaptive, steering on the limiter's queue) →
/// `AdaptiveLimit` (Gradient).
pub fn spillway_generic() -> impl Service<Priority> + Clone + Send + 'static {
    let limit = AdaptiveLimitLayer::builder(Gradient::default())
        .classify(by_value)
        .build();
    let shed = PriorityShedLayer::builder(Adaptive::default())
        .classify(by_value)
        .signal(limit.handle())
        .build();
    ServiceBuilder::new().layer(shed).layer(limit).service(Echo)
}

/// `LoadShed` → `ConcurrencyLimit` on the generic request type.
pub fn tower_generic() -> impl Service<Priority> + Clone + Send + 'static {
    ServiceBuilder::new()
        .load_shed()
        .concurrency_limit(1_000)
        .service(Echo)
}
