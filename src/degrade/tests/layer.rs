//! The layer's tests: the stamp, the fallbacks, what a last-good fallback
//! keeps, on a paused clock with a mock inner service.

use std::convert::Infallible;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tower::{Service, ServiceExt, service_fn};
use tower_layer::Layer;

use super::*;

/// What the inner service answers to a request: `(status, headers, body)`
/// from its path and query, and a count of its calls.
#[derive(Clone, Default)]
struct Inner {
    calls: Arc<AtomicUsize>,
}

impl Inner {
    fn service(
        &self,
    ) -> impl Service<
        Request<()>,
        Response = Response<Full<Bytes>>,
        Error = Infallible,
        Future: Send,
    > + Clone
    + use<> {
        let calls = Arc::clone(&self.calls);
        service_fn(move |req: Request<()>| {
            let n = calls.fetch_add(1, Ordering::Relaxed) + 1;
            let level = req.extensions().get::<LoadLevel>().copied();
            let query = req.uri().query().unwrap_or("").to_owned();
            async move {
                let mut res = Response::builder().header("x-call", n);
                let mut body = format!("call {n}");
                for pair in query.split('&') {
                    match pair.split_once('=') {
                        Some(("status", s)) => res = res.status(s.parse::<u16>().unwrap()),
                        Some(("header", h)) => {
                            let (k, v) = h.split_once(':').unwrap();
                            res = res.header(k, v);
                        }
                        Some(("size", n)) => body = "x".repeat(n.parse().unwrap()),
                        _ => {}
                    }
                }
                if level.is_none() {
                    body = "not stamped".to_owned();
                }
                Ok(res.body(Full::new(Bytes::from(body))).unwrap())
            }
        })
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }
}

/// Sends `req`; the status, the headers and the body.
async fn send<S, B>(svc: &S, req: Request<()>) -> (StatusCode, http::HeaderMap, Bytes)
where
    S: Service<Request<()>, Response = Response<B>, Error = Infallible> + Clone,
    B: http_body::Body<Data = Bytes, Error = Infallible>,
{
    let res = svc.clone().oneshot(req).await.unwrap();
    let (parts, body) = res.into_parts();
    (
        parts.status,
        parts.headers,
        body.collect().await.unwrap().to_bytes(),
    )
}

fn get(uri: &str) -> Request<()> {
    Request::get(uri).body(()).unwrap()
}

#[tokio::test(start_paused = true)]
async fn stamps_the_level_into_every_request() {
    let dial = Dial::default();
    let svc = DegradeLayer::new(DegradeHandle::new(dial.source())).layer(service_fn(
        |req: Request<()>| async move {
            Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(
                req.extensions()
                    .get::<LoadLevel>()
                    .map_or("none", |l| l.as_str()),
            ))))
        },
    ));
    assert_eq!(send(&svc, get("/")).await.2, "normal");
    dial.set(LoadLevel::Overloaded);
    advance(50).await;
    let (status, headers, body) = send(&svc, get("/")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"overloaded"[..]));
    assert!(headers.get(X_DEGRADED).is_none(), "answered by the service");
}

#[tokio::test(start_paused = true)]
async fn a_fixed_fallback_answers_without_calling_the_service() {
    let (dial, inner) = (Dial::default(), Inner::default());
    let layer = DegradeLayer::builder(DegradeHandle::new(dial.source()))
        .fallback(
            Method::GET,
            "/recs",
            LoadLevel::Elevated,
            Fallback::json("[]"),
        )
        .build()
        .unwrap();
    let svc = layer.layer(inner.service());

    assert_eq!(send(&svc, get("/recs")).await.2, "call 1");
    dial.set(LoadLevel::Elevated);
    advance(50).await;
    let res = svc.clone().oneshot(get("/recs?x=1")).await.unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    assert_eq!(res.headers()[X_DEGRADED], "elevated");
    assert_eq!(
        res.headers()[http::header::CONTENT_TYPE],
        "application/json"
    );
    assert_eq!(
        res.extensions().get::<LoadLevel>(),
        Some(&LoadLevel::Elevated)
    );
    assert_eq!(res.into_body().collect().await.unwrap().to_bytes(), "[]");
    assert_eq!(inner.calls(), 1, "not called");
    // Other paths and methods go to the service.
    assert_eq!(send(&svc, get("/recs/1")).await.2, "call 2");
    let post = Request::post("/recs").body(()).unwrap();
    assert_eq!(send(&svc, post).await.2, "call 3");
    assert_eq!(layer.handle().snapshot().fallbacks, 1);
}

#[tokio::test(start_paused = true)]
async fn each_level_answers_with_its_own_fallback() {
    let (dial, inner) = (Dial::default(), Inner::default());
    let busy = Fallback::response(
        Response::builder()
            .status(StatusCode::SERVICE_UNAVAILABLE)
            .header("retry-after", "5")
            .body("busy")
            .unwrap(),
    );
    // Given in any order.
    let svc = DegradeLayer::builder(DegradeHandle::new(dial.source()))
        .fallback(Method::GET, "/recs", LoadLevel::Overloaded, busy)
        .fallback(
            Method::GET,
            "/recs",
            LoadLevel::Elevated,
            Fallback::last_good(),
        )
        .build()
        .unwrap()
        .layer(inner.service());
    assert_eq!(send(&svc, get("/recs")).await.2, "call 1");

    dial.set(LoadLevel::Elevated);
    advance(50).await;
    let (status, headers, body) = send(&svc, get("/recs")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"call 1"[..]));
    assert_eq!(headers[X_DEGRADED], "elevated");

    dial.set(LoadLevel::Overloaded);
    advance(50).await;
    let (status, headers, body) = send(&svc, get("/recs")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        (&headers["retry-after"], &body[..]),
        (&"5".parse::<http::HeaderValue>().unwrap(), &b"busy"[..])
    );
    assert_eq!(headers[X_DEGRADED], "overloaded");
    assert_eq!(inner.calls(), 1);
}

/// A layer over `inner` answering `/recs` with its last good response
/// from `Elevated`, and the dial that sets the level.
fn last_good(
    inner: &Inner,
    max_body: usize,
) -> (
    Dial,
    impl Service<
        Request<()>,
        Response = Response<impl http_body::Body<Data = Bytes, Error = Infallible>>,
        Error = Infallible,
    > + Clone,
) {
    let dial = Dial::default();
    let svc = DegradeLayer::builder(DegradeHandle::new(dial.source()))
        .fallback(
            Method::GET,
            "/recs",
            LoadLevel::Elevated,
            Fallback::last_good_within(max_body),
        )
        .build()
        .unwrap()
        .layer(inner.service());
    (dial, svc)
}

#[tokio::test(start_paused = true)]
async fn a_last_good_fallback_replays_the_last_success_with_its_age() {
    let inner = Inner::default();
    let (dial, svc) = last_good(&inner, 1024);

    // Nothing kept yet: even while elevated, the service answers.
    dial.set(LoadLevel::Elevated);
    assert_eq!(send(&svc, get("/recs")).await.2, "call 1");
    dial.set(LoadLevel::Normal);
    advance(2_100).await;
    assert_eq!(send(&svc, get("/recs")).await.2, "call 2");
    // A failure does not replace it.
    assert_eq!(
        send(&svc, get("/recs?status=500")).await.0,
        StatusCode::INTERNAL_SERVER_ERROR
    );

    dial.set(LoadLevel::Elevated);
    advance(3_000).await;
    let (status, headers, body) = send(&svc, get("/recs")).await;
    assert_eq!((status, &body[..]), (StatusCode::OK, &b"call 2"[..]));
    assert_eq!(headers[X_DEGRADED], "elevated");
    assert_eq!(headers["x-call"], "2", "its own headers");
    assert_eq!(headers[http::header::AGE], "3");
    // Only to a request with the same query.
    assert_eq!(send(&svc, get("/recs?page=2")).await.2, "call 4");
    assert_eq!(
        send(&svc, get("/recs?page=2")).await.2,
        "call 4",
        "kept in turn"
    );
    assert_eq!(inner.calls(), 4);
}

#[tokio::test(start_paused = true)]
async fn a_last_good_fallback_keeps_only_what_any_caller_may_see() {
    let not_kept = [
        "/recs?header=set-cookie:a%3Db",
        "/recs?header=cache-control:private",
        "/recs?header=cache-control:no-store",
        "/recs?header=vary:accept-language",
        "/recs?status=206",
        "/recs?status=404",
        "/recs?size=1025",
    ];
    for uri in not_kept {
        let inner = Inner::default();
        let (dial, svc) = last_good(&inner, 1024);
        send(&svc, get(uri)).await;
        dial.set(LoadLevel::Elevated);
        advance(50).await;
        send(&svc, get(uri)).await;
        assert_eq!(inner.calls(), 2, "{uri} was replayed");
    }
    for (credentials, public, kept) in [
        ("authorization", false, false),
        ("cookie", false, false),
        ("x-api-key", false, false),
        ("authorization", true, true),
    ] {
        let inner = Inner::default();
        let (dial, svc) = last_good(&inner, 1024);
        let uri = if public {
            "/recs?header=cache-control:public"
        } else {
            "/recs"
        };
        let req = || {
            Request::get(uri)
                .header(credentials, "secret")
                .body(())
                .unwrap()
        };
        send(&svc, req()).await;
        dial.set(LoadLevel::Elevated);
        advance(50).await;
        send(&svc, req()).await;
        assert_eq!(inner.calls() == 1, kept, "{credentials}, public: {public}");
    }
    // At the cap exactly, it is kept.
    let inner = Inner::default();
    let (dial, svc) = last_good(&inner, 1024);
    send(&svc, get("/recs?size=1024")).await;
    dial.set(LoadLevel::Elevated);
    advance(50).await;
    assert_eq!(send(&svc, get("/recs?size=1024")).await.2.len(), 1024);
    assert_eq!(inner.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_body_read_half_way_is_not_kept() {
    let inner = Inner::default();
    let (dial, svc) = last_good(&inner, 1024);
    let res = svc.clone().oneshot(get("/recs")).await.unwrap();
    drop(res);
    dial.set(LoadLevel::Elevated);
    advance(50).await;
    // `Full` says it has ended only once its one frame is read: dropped
    // unread, nothing was kept.
    assert_eq!(send(&svc, get("/recs")).await.2, "call 2");
}

#[tokio::test]
async fn a_streamed_body_is_kept_once_it_has_ended() {
    use http_body_util::StreamBody;

    let dial = Dial::default();
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = DegradeLayer::builder(DegradeHandle::new(dial.source()))
        .fallback(
            Method::GET,
            "/s",
            LoadLevel::Elevated,
            Fallback::last_good(),
        )
        .build()
        .unwrap()
        .layer(service_fn({
            let calls = Arc::clone(&calls);
            move |_: Request<()>| {
                calls.fetch_add(1, Ordering::Relaxed);
                let frames = ["a", "b", "c"]
                    .map(|s| Ok::<_, Infallible>(http_body::Frame::data(Bytes::from(s))));
                let stream = futures_util::stream::iter(frames);
                async move { Ok::<_, Infallible>(Response::new(StreamBody::new(stream))) }
            }
        }));
    assert_eq!(send(&svc, get("/s")).await.2, "abc");
    dial.set(LoadLevel::Elevated);
    tokio::time::sleep(Duration::from_millis(60)).await;
    let (_, headers, body) = send(&svc, get("/s")).await;
    assert_eq!(&body[..], b"abc");
    assert_eq!(headers[X_DEGRADED], "elevated");
    assert_eq!(calls.load(Ordering::Relaxed), 1);
}

#[tokio::test(start_paused = true)]
async fn one_layer_on_a_router_is_one_table() {
    use axum::{Router, routing::get as route_get};

    let dial = Dial::default();
    let layer = DegradeLayer::builder(DegradeHandle::new(dial.source()))
        .fallback(Method::GET, "/a", LoadLevel::Elevated, Fallback::json("[]"))
        .fallback(
            Method::GET,
            "/b",
            LoadLevel::Elevated,
            Fallback::last_good(),
        )
        .build()
        .unwrap();
    let handle = layer.handle();
    // `Router::layer` calls `layer()` once per route; `Infallible` stays.
    let app: Router = Router::new()
        .route("/a", route_get(|| async { "a" }))
        .route("/b", route_get(|| async { "b" }))
        .route("/c", route_get(|| async { "c" }))
        .layer(layer);
    let call = |uri: &'static str| {
        let app = app.clone();
        async move {
            let req = Request::get(uri).body(axum::body::Body::empty()).unwrap();
            let res = app.oneshot(req).await.unwrap();
            res.into_body().collect().await.unwrap().to_bytes()
        }
    };
    assert_eq!(call("/b").await, "b");
    dial.set(LoadLevel::Elevated);
    advance(50).await;
    assert_eq!(call("/a").await, "[]");
    assert_eq!(call("/b").await, "b");
    assert_eq!(call("/c").await, "c");
    assert_eq!(handle.snapshot().fallbacks, 2);
}

#[test]
fn bad_fallbacks_are_refused_when_built() {
    let handle = DegradeHandle::new(Dial::default().source());
    let build = |b: DegradeLayerBuilder| b.build().map(|_| ()).unwrap_err().field();
    let b = || DegradeLayer::builder(handle.clone());
    let json = || Fallback::json("[]");
    assert_eq!(
        build(b().fallback(Method::GET, "recs", LoadLevel::Elevated, json())),
        "path"
    );
    assert_eq!(
        build(b().fallback(Method::GET, "/recs", LoadLevel::Normal, json())),
        "from"
    );
    assert_eq!(
        build(
            b().fallback(Method::GET, "/recs", LoadLevel::Elevated, json())
                .fallback(
                    Method::GET,
                    "/recs",
                    LoadLevel::Elevated,
                    Fallback::last_good()
                )
        ),
        "fallback"
    );
    assert_eq!(
        build(b().fallback(
            Method::GET,
            "/recs",
            LoadLevel::Elevated,
            Fallback::last_good_within(0)
        )),
        "max_body"
    );
    assert!(
        b().fallback(Method::GET, "/recs", LoadLevel::Elevated, json())
            .fallback(Method::HEAD, "/recs", LoadLevel::Elevated, json())
            .fallback(Method::GET, "/recs", LoadLevel::Overloaded, json())
            .build()
            .is_ok()
    );
}
