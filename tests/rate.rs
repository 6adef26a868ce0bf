//! Rate limits and the client that honours them, over real loopback servers:
//! axum answered to hyper clients, tonic answered to tonic clients.

mod support;

use std::{net::SocketAddr, time::Duration};

use axum::{Router, extract::ConnectInfo, routing::get};
use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use support::{HttpClient, h1_client, loopback};
use tokio::time::Instant;
use tower::{ServiceBuilder, ServiceExt};
use tower_spillway::{
    rate::{PeerIp, Quota, RATELIMIT, RATELIMIT_POLICY, RateLimitLayer},
    retry_after::{HonorRetryAfterLayer, ReplayBody, Retries},
};

/// Serves `app` on a loopback port, with each request's peer address in its
/// extensions (`ConnectInfo`).
async fn serve_axum(app: Router) -> SocketAddr {
    let (listener, addr) = loopback().await;
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    addr
}

fn routes() -> Router {
    Router::new()
        .route("/a", get(|| async { "a" }))
        .route("/b", get(|| async { "b" }))
}

type Body = ReplayBody<Full<Bytes>>;

fn client() -> HttpClient<Body> {
    h1_client()
}

fn get_req(addr: SocketAddr, path: &str) -> Request<Full<Bytes>> {
    support::get(addr, path)
}

#[tokio::test]
async fn axum_429_carries_exact_retry_after_and_ratelimit_fields() {
    // Keyed by the peer address axum's connect info records.
    let peer = PeerIp::from_extension(|ext: &http::Extensions| {
        ext.get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(a)| a.ip())
    });
    let limit = RateLimitLayer::builder(Quota::per_minute(2).unwrap())
        .keyed(peer)
        .http()
        .build();
    let handle = limit.handle();
    let addr = serve_axum(routes().layer(limit)).await;
    let plain = h1_client::<Full<Bytes>>();

    // Two routes, one limit.
    for path in ["/a", "/b"] {
        let res = plain.request(get_req(addr, path)).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    let res = plain.request(get_req(addr, "/a")).await.unwrap();
    assert_eq!(res.status(), StatusCode::TOO_MANY_REQUESTS);
    let secs = support::retry_after_secs(res.headers()).expect("a Retry-After");
    // One call per 30 s comes back; a little time has passed since.
    assert!((29..=30).contains(&secs), "{secs}");
    assert_eq!(res.headers()[RATELIMIT_POLICY], "\"default\";q=2;w=60");
    assert_eq!(
        res.headers()[RATELIMIT],
        format!("\"default\";r=0;t={secs}").as_str()
    );
    assert_eq!(
        res.headers()[header::CONTENT_TYPE],
        "application/problem+json"
    );
    let body = res.into_body().collect().await.unwrap().to_bytes();
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["status"], 429);
    assert_eq!(json["type"], "urn:tower-spillway:rate_limited");
    assert_eq!(handle.keys(), 1);
}

#[tokio::test]
async fn hyper_client_honours_the_limit_and_gets_through() {
    let limit = RateLimitLayer::builder(Quota::per_second(2).unwrap().burst(1).unwrap())
        .http()
        .build();
    let addr = serve_axum(routes().layer(limit)).await;
    let honour = HonorRetryAfterLayer::builder()
        .retries(Retries::new())
        .build();
    let handle = honour.handle();
    let svc = ServiceBuilder::new().layer(honour).service(client());

    let start = Instant::now();
    for _ in 0..3 {
        let res = svc.clone().oneshot(get_req(addr, "/a")).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
    }
    // Each refusal said "1 s": the retries waited for it, never less.
    let snap = handle.snapshot();
    assert!(snap.retries >= 1, "{snap:?}");
    assert!(
        start.elapsed() >= Duration::from_secs(snap.retries),
        "{snap:?}"
    );
    assert_eq!(snap.max_cooldown_ms, 1000);
}

#[tokio::test]
async fn refused_post_bodies_are_replayed_intact() {
    let limit = RateLimitLayer::builder(Quota::per_second(2).unwrap().burst(1).unwrap())
        .http()
        .build();
    let app = Router::new()
        .route(
            "/echo",
            axum::routing::post(|body: Bytes| async move { body }),
        )
        .layer(limit);
    let addr = serve_axum(app).await;
    let honour = HonorRetryAfterLayer::builder()
        .retries(Retries::new().allow_non_idempotent(true))
        .build();
    let handle = honour.handle();
    let svc = ServiceBuilder::new().layer(honour).service(client());
    for i in 0..2 {
        let payload = format!("payload number {i}, long enough to matter");
        let req = Request::post(format!("http://{addr}/echo"))
            .body(Full::new(Bytes::from(payload.clone())))
            .unwrap();
        let res = svc.clone().oneshot(req).await.unwrap();
        assert_eq!(res.status(), StatusCode::OK);
        let body = res.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(body, payload.as_bytes());
    }
    assert_eq!(handle.snapshot().retries, 1);
}

mod grpc {
    use tonic::transport::Server;
    use tonic_health::pb::health_client::HealthClient;
    use tower_spillway::rate::RateLimitHandle;

    use crate::support::{channel, health_request, pushback_ms, serve_tonic};

    use super::*;

    async fn serve_health(quota: Quota) -> (SocketAddr, RateLimitHandle<()>) {
        let (reporter, health) = tonic_health::server::health_reporter();
        reporter
            .set_service_status("", tonic_health::ServingStatus::Serving)
            .await;
        let limit = RateLimitLayer::builder(quota).http().build();
        let handle = limit.handle();
        let addr = serve_tonic(|incoming| {
            Server::builder()
                .layer(limit)
                .add_service(health)
                .serve_with_incoming(incoming)
        })
        .await;
        (addr, handle)
    }

    #[tokio::test]
    async fn refusal_reaches_tonic_as_resource_exhausted_with_pushback() {
        let (addr, handle) = serve_health(Quota::per_second(10).unwrap().burst(1).unwrap()).await;
        let mut client = HealthClient::new(channel(addr).await);
        client.check(health_request()).await.unwrap();
        let status = client.check(health_request()).await.unwrap_err();
        assert_eq!(status.code(), tonic::Code::ResourceExhausted, "{status:?}");
        let ms = pushback_ms(&status).expect("a pushback");
        assert!((1..=100).contains(&ms), "{ms}");
        assert_eq!(handle.snapshot().limited, 1);
    }

    #[tokio::test]
    async fn tonic_client_with_honour_layer_waits_out_the_pushback() {
        let (addr, handle) = serve_health(Quota::per_second(5).unwrap().burst(1).unwrap()).await;
        let honour = HonorRetryAfterLayer::builder()
            .retries(Retries::new().allow_non_idempotent(true))
            .build();
        let stats = honour.handle();
        let svc = ServiceBuilder::new()
            .layer(honour)
            .map_request(|req: http::Request<ReplayBody<tonic::body::Body>>| {
                req.map(tonic::body::Body::new)
            })
            .service(channel(addr).await);
        let mut client = HealthClient::new(svc);
        let start = Instant::now();
        for _ in 0..4 {
            client
                .check(health_request())
                .await
                .expect("retried until admitted");
        }
        // 4 calls at 5/s with a burst of 1 take at least 600 ms.
        assert!(start.elapsed() >= Duration::from_millis(600));
        let snap = stats.snapshot();
        assert!(snap.retries >= 3, "{snap:?}");
        assert!(snap.max_cooldown_ms <= 200, "{snap:?}");
        assert_eq!(handle.snapshot().allowed, 4);
    }
}
