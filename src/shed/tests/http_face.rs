use bytes::Bytes;
use http::{Request, Response, header};
use http_body_util::{BodyExt, Full, StreamBody};

use super::*;
use crate::http::RejectBody;

#[tokio::test]
async fn refusal_is_503_with_retry_after_and_body_holds_the_permit() {
    let layer = PriorityShedLayer::builder(Thresholds::builder().low(1).build().unwrap())
        .http()
        .build();
    let handle = layer.handle();
    type Frames = Vec<Result<http_body::Frame<Bytes>, Infallible>>;
    let inner = service_fn(|_req: Request<http_body_util::Empty<bytes::Bytes>>| async {
        let frames: Frames = vec![
            Ok(http_body::Frame::data(Bytes::from_static(b"a"))),
            Ok(http_body::Frame::data(Bytes::from_static(b"b"))),
        ];
        Ok::<_, Infallible>(Response::new(StreamBody::new(futures_util::stream::iter(
            frames,
        ))))
    });
    let svc = layer.layer(inner);
    let low = || {
        let mut req = Request::new(http_body_util::Empty::<bytes::Bytes>::new());
        req.extensions_mut().insert(Priority::Low);
        req
    };

    let res = svc.clone().oneshot(low()).await.unwrap();
    assert_eq!(res.status(), 200);
    // The head has arrived but the body has not ended: still in flight.
    assert_eq!(handle.snapshot().in_flight, 1);
    let refused = svc.clone().oneshot(low()).await.unwrap();
    assert_eq!(refused.status(), 503);
    let secs: u64 = refused.headers()[header::RETRY_AFTER]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=30).contains(&secs));
    assert_eq!(
        refused
            .extensions()
            .get::<Overloaded>()
            .map(Overloaded::priority),
        Some(Some(Priority::Low))
    );

    // Dropped half-read: released.
    let mut body = res.into_body();
    body.frame().await.unwrap().unwrap();
    drop(body);
    assert_eq!(handle.snapshot().in_flight, 0);

    // Read to the end: released.
    let res = svc.clone().oneshot(low()).await.unwrap();
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "ab");
    assert_eq!(handle.snapshot().in_flight, 0);
}

#[tokio::test]
async fn grpc_refusal_is_trailers_only_unavailable() {
    let layer = PriorityShedLayer::builder(Thresholds::ladder(1))
        .signal(|| 100usize)
        .http()
        .build();
    let svc = layer.layer(service_fn(
        |_req: Request<http_body_util::Empty<bytes::Bytes>>| async {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
        },
    ));
    let req = Request::builder()
        .header(header::CONTENT_TYPE, "application/grpc")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let res = svc.oneshot(req).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["grpc-status"], "14");
    let ms: u64 = res.headers()["grpc-retry-pushback-ms"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1000..=30_000).contains(&ms), "{ms}");
}

#[tokio::test]
async fn custom_rejection_and_health_checks() {
    let make = |o: &Overloaded, _: &crate::http::RequestInfo| {
        let mut res = Response::new(RejectBody::new(o.reason().as_str()));
        *res.status_mut() = http::StatusCode::IM_A_TEAPOT;
        res
    };
    let svc = PriorityShedLayer::builder(Thresholds::ladder(1))
        .signal(|| 100usize)
        .bypass(HealthChecks)
        .rejection(make)
        .build()
        .layer(service_fn(
            |_req: Request<http_body_util::Empty<bytes::Bytes>>| async {
                Ok::<_, Infallible>(Response::new(Full::new(Bytes::new())))
            },
        ));
    let res = svc
        .clone()
        .oneshot(
            Request::get("/x")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 418);
    let res = svc
        .oneshot(
            Request::get("/readyz")
                .body(http_body_util::Empty::<bytes::Bytes>::new())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}
