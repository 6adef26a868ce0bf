use std::time::Duration;

use http_body_util::{BodyExt, Full};
use tower::{ServiceExt, service_fn};

use http::{HeaderValue, Request, Response, StatusCode, header};
use tower_layer::Layer;
use tower_service::Service;

use super::*;
use crate::{
    BoxError, Overloaded, Priority, Reason, RetryAfterPolicy, grpc::GRPC_RETRY_PUSHBACK_MS,
};

type Body = Full<bytes::Bytes>;

fn failing(
    err: fn() -> BoxError,
) -> impl Service<Request<Body>, Response = Response<Body>, Error = BoxError, Future: Send> + Clone
{
    service_fn(move |_req: Request<Body>| async move { Err::<Response<Body>, _>(err()) })
}

#[tokio::test]
async fn overloaded_error_becomes_503() {
    let svc = RetryAfterLayer::new().layer(failing(|| {
        Box::new(
            Overloaded::new(Reason::QueueTimeout)
                .with_priority(Priority::High)
                .with_retry_after(Duration::from_secs(3)),
        )
    }));
    let res = svc.oneshot(Request::new(Body::default())).await.unwrap();
    assert_eq!(res.status(), 503);
    let secs: u64 = res.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((3..=4).contains(&secs), "{secs}");
    assert_eq!(
        res.extensions().get::<Overloaded>().map(Overloaded::reason),
        Some(Reason::QueueTimeout)
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["priority"], "high");
}

#[tokio::test]
async fn other_errors_pass_untouched() {
    let svc = RetryAfterLayer::new().layer(failing(|| "database on fire".into()));
    let err = svc
        .oneshot(Request::new(Body::default()))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "database on fire");
}

#[tokio::test]
async fn grpc_request_gets_trailers_only() {
    let svc =
        RetryAfterLayer::new().layer(failing(|| Box::new(Overloaded::new(Reason::RateLimited))));
    let req = Request::builder()
        .header("content-type", "application/grpc")
        .body(Body::default())
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["grpc-status"], "8");
    assert!(res.headers().contains_key(GRPC_RETRY_PUSHBACK_MS));
}

#[tokio::test]
async fn fills_missing_retry_after_only_when_asked() {
    let answer = |status: u16| {
        service_fn(move |_req: Request<Body>| async move {
            let mut res = Response::new(Body::default());
            *res.status_mut() = StatusCode::from_u16(status).unwrap();
            Ok::<_, BoxError>(res)
        })
    };
    let policy = RetryAfterPolicy::new().default_delay(Duration::from_secs(5));
    // Configuring a layer that was already cloned is fine too.
    let original = RetryAfterLayer::new();
    let _clone = original.clone();
    let filled = original.fill_missing(policy.clone());

    let res = filled
        .layer(answer(503))
        .oneshot(Request::new(Body::default()))
        .await
        .unwrap();
    let secs: u64 = res.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((5..=6).contains(&secs));

    let res = filled
        .layer(answer(500))
        .oneshot(Request::new(Body::default()))
        .await
        .unwrap();
    assert!(!res.headers().contains_key(header::RETRY_AFTER));

    let res = RetryAfterLayer::new()
        .layer(answer(429))
        .oneshot(Request::new(Body::default()))
        .await
        .unwrap();
    assert!(!res.headers().contains_key(header::RETRY_AFTER));

    let kept = service_fn(|_req: Request<Body>| async {
        let mut res = Response::new(Body::default());
        *res.status_mut() = StatusCode::TOO_MANY_REQUESTS;
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("42"));
        Ok::<_, BoxError>(res)
    });
    let res = filled
        .layer(kept)
        .oneshot(Request::new(Body::default()))
        .await
        .unwrap();
    assert_eq!(res.headers()[header::RETRY_AFTER], "42");

    let grpc = service_fn(|_req: Request<Body>| async {
        let mut res = Response::new(Body::default());
        res.headers_mut()
            .insert("grpc-status", HeaderValue::from_static("14"));
        Ok::<_, BoxError>(res)
    });
    let res = filled
        .layer(grpc)
        .oneshot(Request::new(Body::default()))
        .await
        .unwrap();
    let ms: u64 = res.headers()[GRPC_RETRY_PUSHBACK_MS]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((5000..=6000).contains(&ms));
}
