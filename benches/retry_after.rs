//! The cost of the refusal path: building a 503/429 with `Retry-After` and a
//! problem+json body, against tower's built-ins answering a bare 503 through
//! axum's `HandleErrorLayer`, in the same run.
//!
//! ```text
//! cargo bench -p tower-spillway-benches --bench retry_after
//! ```

use std::{
    future::{Ready, ready},
    task::{Context, Poll},
    time::Duration,
};

use axum::error_handling::HandleErrorLayer;
use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use tower::{BoxError, Layer, Service, load_shed::LoadShedLayer};
use tower_spillway::{
    Overloaded, Priority, Reason,
    http::{MakeRejection, ProblemDetails, RequestInfo},
    retry_after::RetryAfterLayer,
};

type Body = Full<Bytes>;

/// Answers at once with an empty 200.
#[derive(Clone, Copy)]
struct Ok200;

impl Service<Request<Body>> for Ok200 {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Ready<Result<Response<Body>, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request<Body>) -> Self::Future {
        ready(Ok(Response::new(Body::default())))
    }
}

/// Refuses every request the way this crate's generic faces do.
#[derive(Clone, Copy)]
struct RefuseAll;

impl Service<Request<Body>> for RefuseAll {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Ready<Result<Response<Body>, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }
    fn call(&mut self, _: Request<Body>) -> Self::Future {
        ready(Err(Overloaded::new(Reason::Shed)
            .with_priority(Priority::Low)
            .with_retry_after(Duration::from_millis(1500))
            .into()))
    }
}

/// Never ready: what tower's `LoadShed` sheds.
#[derive(Clone, Copy)]
struct Busy;

impl Service<Request<Body>> for Busy {
    type Response = Response<Body>;
    type Error = BoxError;
    type Future = Ready<Result<Response<Body>, BoxError>>;
    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Pending
    }
    fn call(&mut self, _: Request<Body>) -> Self::Future {
        unreachable!("never ready")
    }
}

fn once<S>(svc: &mut S) -> S::Response
where
    S: Service<Request<Body>>,
    S::Error: std::fmt::Debug,
{
    let req = Request::new(Body::default());
    let waker = futures_util::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    match svc.poll_ready(&mut cx) {
        Poll::Ready(Ok(())) => {}
        other => panic!("not ready: {other:?}"),
    }
    svc.call(req)
        .now_or_never()
        .expect("ready at once")
        .expect("answered")
}

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("reject_path");
    let mut spillway = RetryAfterLayer::new().layer(RefuseAll);
    g.bench_function(
        "spillway RetryAfter: 503 + Retry-After + problem+json",
        |b| {
            b.iter(|| {
                let res = once(&mut spillway);
                assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
                res
            })
        },
    );
    let mut tower =
        HandleErrorLayer::<_, ()>::new(|_: BoxError| async { StatusCode::SERVICE_UNAVAILABLE })
            .layer(LoadShedLayer::new().layer(Busy));
    g.bench_function("tower LoadShed + HandleErrorLayer: bare 503", |b| {
        b.iter(|| {
            let res = once(&mut tower);
            assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
            res
        })
    });
    let problem = ProblemDetails::new();
    let overloaded =
        Overloaded::new(Reason::RateLimited).with_retry_after(Duration::from_millis(250));
    g.bench_function("ProblemDetails::make_rejection alone (429)", |b| {
        b.iter(|| problem.make_rejection(&overloaded, &RequestInfo::new(false)))
    });
    g.bench_function("ProblemDetails::make_rejection alone (gRPC)", |b| {
        b.iter(|| problem.make_rejection(&overloaded, &RequestInfo::new(true)))
    });
    g.finish();

    let mut g = c.benchmark_group("pass_through");
    let mut bare = Ok200;
    g.bench_function("no layer", |b| b.iter(|| once(&mut bare)));
    let mut wrapped = RetryAfterLayer::new().layer(Ok200);
    g.bench_function("spillway RetryAfter", |b| b.iter(|| once(&mut wrapped)));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
