//! `RetryAfterLayer` over real loopback servers: an axum `Router` answered to a
//! hyper client, and a tonic server answered to a tonic client.

mod support;

use std::{
    net::SocketAddr,
    task::{Context, Poll},
    time::Duration,
};

use axum::{Router, routing::get};
use bytes::Bytes;
use futures_util::future::{Either, Ready, ready};
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Empty, Full};
use support::{h1_client, h2_client, serve_axum, serve_hyper};
use tower::{Service, ServiceBuilder, layer::layer_fn};
use tower_spillway::{
    BoxError, Overloaded, Priority, Reason, RetryAfterPolicy, retry_after::RetryAfterLayer,
};

/// Refuses requests that carry `x-refuse: capacity` or `x-refuse: quota`, the
/// way a generic-face layer of this crate would, and passes the rest on.
#[derive(Clone)]
struct Refuse<S>(S);

fn refusal(req_headers: &http::HeaderMap) -> Option<Overloaded> {
    match req_headers.get("x-refuse")?.as_bytes() {
        b"capacity" => Some(
            Overloaded::new(Reason::Shed)
                .with_priority(Priority::Low)
                .with_retry_after(Duration::from_millis(2500)),
        ),
        b"quota" => {
            Some(Overloaded::new(Reason::RateLimited).with_retry_after(Duration::from_millis(300)))
        }
        _ => None,
    }
}

impl<S, B> Service<Request<B>> for Refuse<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Either<
        Ready<Result<S::Response, BoxError>>,
        futures_util::future::MapErr<S::Future, fn(S::Error) -> BoxError>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.0.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        use futures_util::TryFutureExt;
        match refusal(req.headers()) {
            Some(o) => Either::Left(ready(Err(o.into()))),
            None => Either::Right(self.0.call(req).map_err(Into::into as fn(_) -> _)),
        }
    }
}

fn app() -> Router {
    Router::new()
        .route("/payments", get(|| async { "paid" }))
        .route("/busy", get(|| async { StatusCode::SERVICE_UNAVAILABLE }))
}

async fn get_with(
    addr: SocketAddr,
    path: &str,
    refuse: Option<&str>,
) -> (StatusCode, http::HeaderMap, Bytes) {
    let mut req = Request::get(format!("http://{addr}{path}"));
    if let Some(r) = refuse {
        req = req.header("x-refuse", r);
    }
    support::send(&h1_client(), req.body(Empty::<Bytes>::new()).unwrap()).await
}

fn retry_after_secs(headers: &http::HeaderMap) -> u64 {
    support::retry_after_secs(headers).expect("a Retry-After in whole seconds")
}

#[tokio::test]
async fn axum_router_refusals_reach_hyper_client_as_503_and_429() {
    let svc = ServiceBuilder::new()
        .layer(RetryAfterLayer::new())
        .layer(layer_fn(Refuse))
        .service(app());
    let addr = serve_hyper(svc, |_| {}).await;

    let (status, _, body) = get_with(addr, "/payments", None).await;
    assert_eq!(status, 200);
    assert_eq!(body, "paid");

    let (status, headers, body) = get_with(addr, "/payments", Some("capacity")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    // 2.5 s, rounded up, jittered upwards by at most 20 %.
    assert_eq!(retry_after_secs(&headers), 3, "{headers:?}");
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["status"], 503);
    assert_eq!(json["title"], "Service Unavailable");
    assert_eq!(json["priority"], "low");
    assert_eq!(json["retry_after"], 3);
    assert_eq!(json["type"], "urn:tower-spillway:shed");

    let (status, headers, body) = get_with(addr, "/payments", Some("quota")).await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        retry_after_secs(&headers),
        1,
        "300 ms rounds up to 1 s, never 0"
    );
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["status"], 429);
    assert_eq!(json["retry_after"], 1);
}

#[tokio::test]
async fn axum_router_layer_fills_missing_retry_after() {
    // On a Router the inner error type is Infallible and stays Infallible:
    // `Router::layer` accepts the layer as it is.
    let app = app().layer(
        RetryAfterLayer::new()
            .fill_missing(RetryAfterPolicy::new().default_delay(Duration::from_secs(4))),
    );
    let addr = serve_axum(app).await;

    let (status, headers, _) = get_with(addr, "/busy", None).await;
    assert_eq!(status, 503);
    assert!((4..=5).contains(&retry_after_secs(&headers)));
    let (status, headers, _) = get_with(addr, "/payments", None).await;
    assert_eq!(status, 200);
    assert!(!headers.contains_key(header::RETRY_AFTER));
}

mod grpc {
    use tonic::transport::Server;
    use tonic_health::pb::health_client::HealthClient;

    use super::*;
    use crate::support::{channel, health_request, pushback_ms, serve_tonic};

    async fn serve_health() -> SocketAddr {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        serve_tonic(|incoming| {
            Server::builder()
                .layer(RetryAfterLayer::new())
                .layer(layer_fn(Refuse))
                .add_service(health)
                .serve_with_incoming(incoming)
        })
        .await
    }

    async fn check(addr: SocketAddr, refuse: &'static str) -> Result<(), tonic::Status> {
        let mut client = HealthClient::new(channel(addr).await);
        let mut req = tonic::Request::new(health_request());
        req.metadata_mut()
            .insert("x-refuse", refuse.parse().unwrap());
        client.check(req).await.map(|_| ())
    }

    #[tokio::test]
    async fn refused_calls_reach_tonic_client_as_statuses_with_pushback() {
        let addr = serve_health().await;

        check(addr, "no").await.expect("an unrefused call succeeds");

        let status = check(addr, "capacity").await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
        assert!(status.message().contains("shed"), "{status:?}");
        assert!(
            (2500..=3000).contains(&pushback_ms(&status).unwrap()),
            "{status:?}"
        );

        let status = check(addr, "quota").await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        assert!(
            (300..=360).contains(&pushback_ms(&status).unwrap()),
            "{status:?}"
        );
    }

    #[tokio::test]
    async fn refusal_is_trailers_only_with_an_empty_body() {
        let addr = serve_health().await;
        let client = h2_client::<Full<Bytes>>();
        // A gRPC request whose body is never read: the refusal must not wait for it.
        let req = Request::post(format!("http://{addr}/grpc.health.v1.Health/Check"))
            .header(header::CONTENT_TYPE, "application/grpc")
            .header("te", "trailers")
            .header("x-refuse", "capacity")
            .body(Full::new(Bytes::from_static(b"\0\0\0\0\0")))
            .unwrap();
        let res = client.request(req).await.unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["grpc-status"], "14");
        assert!(res.headers().contains_key("grpc-retry-pushback-ms"));
        assert!(res.headers().contains_key("grpc-message"));
        let collected = res.into_body().collect().await.unwrap();
        assert!(
            collected.trailers().is_none(),
            "everything is in the headers"
        );
        assert!(collected.to_bytes().is_empty());
    }
}
