//! `Coalesce`: the HTTP face over a real axum server and hyper client, and the
//! generic face's sharing of errors, panics and abandoned calls.

mod support;

use std::{
    convert::Infallible,
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, extract::State, http::HeaderMap, routing::get};
use bytes::Bytes;
use futures_util::future::join_all;
use http::{Method, Request, StatusCode};
use http_body_util::{BodyExt, Empty};
use support::{HttpClient, h1_client, serve_axum};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn, util::ServiceFn};
use tower_spillway::{coalesce::CoalesceLayer, key::key_fn};

async fn slow_page(State(calls): State<Arc<AtomicUsize>>, headers: HeaderMap) -> String {
    let n = calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let user = headers
        .get("authorization")
        .map_or("anonymous", |v| v.to_str().unwrap_or("?"))
        .to_string();
    format!("page for {user}, render #{n}")
}

async fn big_page(State(calls): State<Arc<AtomicUsize>>) -> String {
    calls.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(200)).await;
    "x".repeat(4096)
}

/// Serves the app on 127.0.0.1:0 with `CoalesceLayer::http()` in front of
/// every route, and returns its address and the handlers' call counter.
async fn serve(max_body: usize) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let app = Router::new()
        .route("/page", get(slow_page).post(slow_page))
        .route("/big", get(big_page))
        .with_state(calls.clone())
        .layer(CoalesceLayer::http().max_body(max_body));
    let addr = serve_axum(app).await;
    (format!("http://{addr}"), calls)
}

fn client() -> HttpClient {
    h1_client()
}

async fn fetch(
    client: &HttpClient,
    method: Method,
    url: &str,
    auth: Option<&str>,
) -> (StatusCode, String) {
    let mut req = Request::builder().method(method).uri(url);
    if let Some(auth) = auth {
        req = req.header("authorization", auth);
    }
    let (status, _, body) = support::send(client, req.body(Empty::new()).unwrap()).await;
    (status, String::from_utf8(body.to_vec()).unwrap())
}

/// `answer` as an inner service that counts its calls in `calls`.
fn counted<K, F, Fut>(
    calls: &Arc<AtomicUsize>,
    answer: F,
) -> ServiceFn<impl Fn(K) -> Fut + Clone + use<K, F, Fut>>
where
    F: Fn(K) -> Fut + Clone,
{
    let calls = calls.clone();
    service_fn(move |k| {
        calls.fetch_add(1, Ordering::SeqCst);
        answer(k)
    })
}

#[tokio::test]
async fn identical_concurrent_requests_make_one_inner_call() {
    let (base, calls) = serve(1 << 20).await;
    let client = client();
    let url = format!("{base}/page");
    let answers = join_all((0..64).map(|_| fetch(&client, Method::GET, &url, None))).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    for (status, body) in answers {
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, "page for anonymous, render #0");
    }

    // The key is forgotten once the call completes: no caching.
    let (_, body) = fetch(&client, Method::GET, &url, None).await;
    assert_eq!(body, "page for anonymous, render #1");
    assert_eq!(calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn different_credentials_make_separate_calls() {
    let (base, calls) = serve(1 << 20).await;
    let client = client();
    let url = format!("{base}/page");
    let users = ["Bearer alice", "Bearer bob"];
    let answers =
        join_all((0..20).map(|i| fetch(&client, Method::GET, &url, Some(users[i % 2])))).await;
    assert_eq!(calls.load(Ordering::SeqCst), 2);
    for (i, (_, body)) in answers.into_iter().enumerate() {
        assert!(
            body.starts_with(&format!("page for {},", users[i % 2])),
            "{body}"
        );
    }
}

#[tokio::test]
async fn other_methods_are_never_shared() {
    let (base, calls) = serve(1 << 20).await;
    let client = client();
    let url = format!("{base}/page");
    let answers = join_all((0..5).map(|_| fetch(&client, Method::POST, &url, None))).await;
    assert!(answers.iter().all(|(s, _)| *s == StatusCode::OK));
    assert_eq!(calls.load(Ordering::SeqCst), 5);
}

#[tokio::test]
async fn bodies_over_the_cap_are_not_shared_but_complete() {
    let (base, calls) = serve(1024).await;
    let client = client();
    let url = format!("{base}/big");
    let answers = join_all((0..6).map(|_| fetch(&client, Method::GET, &url, None))).await;
    for (status, body) in answers {
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body.len(), 4096, "every caller gets the whole body");
    }
    // The first call's response went to its caller; the five others called again.
    assert_eq!(calls.load(Ordering::SeqCst), 6);
}

#[derive(Debug, Clone, PartialEq)]
struct Failed(&'static str);

#[tokio::test(start_paused = true)]
async fn errors_reach_every_waiter() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(CoalesceLayer::new(key_fn(|k: &u32| Some(*k))))
        .service(counted(&calls, |_k: u32| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Err::<String, _>(Failed("backend down"))
        }));
    let answers = join_all((0..10).map(|_| svc.clone().oneshot(1))).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(answers.iter().all(|a| *a == Err(Failed("backend down"))));
}

#[tokio::test(start_paused = true)]
async fn panics_reach_every_waiter() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(CoalesceLayer::new(key_fn(|k: &u32| Some(*k))))
        .service(counted(&calls, |_k: u32| async {
            tokio::time::sleep(Duration::from_millis(10)).await;
            panic!("render failed");
            #[allow(unreachable_code)]
            Ok::<String, Infallible>(String::new())
        }));
    let waiters: Vec<_> = (0..5)
        .map(|_| tokio::spawn(svc.clone().oneshot(1)))
        .collect();
    for waiter in waiters {
        let err = waiter.await.unwrap_err();
        assert!(err.is_panic());
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    // Nothing is left behind: the next call runs afresh.
    let mut svc = svc;
    assert_eq!(svc.ready().await.unwrap().in_flight(), 0);
}

#[tokio::test(start_paused = true)]
async fn the_shared_call_outlives_its_first_caller_but_not_its_last() {
    let started = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicUsize::new(0));
    let svc = {
        let finished = finished.clone();
        ServiceBuilder::new()
            .layer(CoalesceLayer::new(key_fn(|k: &u32| Some(*k))))
            .service(counted(&started, move |k: u32| {
                let finished = finished.clone();
                async move {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    finished.fetch_add(1, Ordering::SeqCst);
                    Ok::<_, Infallible>(k * 10)
                }
            }))
    };

    // The first caller leaves; the follower still gets the shared answer.
    let first = tokio::spawn(svc.clone().oneshot(4));
    tokio::time::sleep(Duration::from_millis(10)).await;
    let follower = tokio::spawn(svc.clone().oneshot(4));
    tokio::time::sleep(Duration::from_millis(10)).await;
    first.abort();
    assert_eq!(follower.await.unwrap().unwrap(), 40);
    assert_eq!(
        (
            started.load(Ordering::SeqCst),
            finished.load(Ordering::SeqCst)
        ),
        (1, 1)
    );

    // Every waiter leaves: the call is dropped and its key forgotten.
    let a = tokio::spawn(svc.clone().oneshot(5));
    let b = tokio::spawn(svc.clone().oneshot(5));
    tokio::time::sleep(Duration::from_millis(10)).await;
    a.abort();
    b.abort();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        (
            started.load(Ordering::SeqCst),
            finished.load(Ordering::SeqCst)
        ),
        (2, 1)
    );
    let mut svc = svc;
    let ready = svc.ready().await.unwrap();
    assert_eq!(ready.in_flight(), 0);
    assert_eq!(ready.call(5).await.unwrap(), 50);
    assert_eq!(started.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn requests_without_a_key_pass_straight_through() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(CoalesceLayer::new(key_fn(|k: &u32| {
            (*k != 0).then_some(*k)
        })))
        .service(counted(&calls, |k: u32| async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, Infallible>(k)
        }));
    join_all((0..4).map(|_| svc.clone().oneshot(0))).await;
    assert_eq!(calls.load(Ordering::SeqCst), 4);
}

#[tokio::test]
async fn identical_concurrent_calls_share_one_inner_call_in_the_generic_face() {
    let calls = Arc::new(AtomicUsize::new(0));
    let svc = ServiceBuilder::new()
        .layer(CoalesceLayer::new(key_fn(|k: &u64| Some(*k))))
        .service(counted(&calls, |k: u64| async move {
            // In flight until every caller has arrived (a call that
            // completes before a request arrives is not shared).
            tokio::time::sleep(Duration::from_millis(5)).await;
            Ok::<_, Infallible>(k)
        }));
    for round in 1..=3 {
        let answers = join_all((0..64).map(|_| svc.clone().oneshot(7))).await;
        assert!(answers.into_iter().all(|a| a == Ok(7)));
        assert_eq!(calls.load(Ordering::SeqCst), round);
    }
    let stats = svc.stats();
    assert_eq!((stats.calls, stats.joined, stats.in_flight), (3, 189, 0));
}

/// Callers that arrive and leave at once, from many threads: a caller may
/// find a call whose last waiter leaves while the table is being read, and
/// the call it then drops must not lock the table it is reading (a
/// deadlock). Fails by timing out.
#[test]
fn callers_racing_in_and_out_never_deadlock_the_table() {
    let svc = ServiceBuilder::new()
        .layer(CoalesceLayer::new(key_fn(|k: &u64| Some(*k))))
        .service(service_fn(|k: u64| {
            // Widens the gap between looking for a call and registering one,
            // where another caller's call comes and goes.
            std::thread::yield_now();
            async move { Ok::<_, Infallible>(k) }
        }));
    let (done, finished) = std::sync::mpsc::channel();
    for t in 0..4 {
        let svc = svc.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            for i in 0..200_000u64 {
                let mut svc = svc.clone();
                let key = (i + t) % 2;
                // Made, never polled, dropped: a waiter that leaves at once.
                drop(svc.call(key));
            }
            let _ = done.send(());
        });
    }
    for _ in 0..4 {
        finished
            .recv_timeout(Duration::from_secs(60))
            .expect("a thread deadlocked on the table");
    }
    assert_eq!(svc.stats().in_flight, 0);
}

/// A page that answers with `header: value` (if any), after 200 ms so that
/// concurrent requests overlap, and counts its calls.
async fn serve_headed(header: &'static str, value: &'static str) -> (String, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let page = move |State(calls): State<Arc<AtomicUsize>>| async move {
        let n = calls.fetch_add(1, Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(200)).await;
        let mut res = axum::response::Response::new(axum::body::Body::from(format!("render #{n}")));
        if !header.is_empty() {
            let value = value.replace("{n}", &n.to_string());
            res.headers_mut()
                .insert(header, http::HeaderValue::from_str(&value).unwrap());
        }
        res
    };
    let app = Router::new()
        .route("/login", get(page))
        .with_state(calls.clone())
        .layer(CoalesceLayer::http());
    let addr = serve_axum(app).await;
    (format!("http://{addr}/login"), calls)
}

/// Eight concurrent anonymous requests; what each got.
async fn eight_at_once(url: &str) -> Vec<(Option<String>, String)> {
    let client = client();
    let one = |client: HttpClient| async move {
        let req = Request::get(url).body(Empty::new()).unwrap();
        let res = client.request(req).await.unwrap();
        let cookie = res
            .headers()
            .get("set-cookie")
            .map(|v| v.to_str().unwrap().to_owned());
        let body = res.into_body().collect().await.unwrap().to_bytes();
        (cookie, String::from_utf8(body.to_vec()).unwrap())
    };
    join_all((0..8).map(|_| one(client.clone()))).await
}

#[tokio::test]
async fn a_response_that_sets_a_cookie_is_never_shared() {
    let (url, calls) = serve_headed("set-cookie", "session={n}").await;
    let answers = eight_at_once(&url).await;
    assert_eq!(calls.load(Ordering::SeqCst), 8);
    let mut cookies: Vec<_> = answers.into_iter().map(|(c, _)| c.unwrap()).collect();
    cookies.sort();
    cookies.dedup();
    assert_eq!(
        cookies.len(),
        8,
        "every caller its own session: {cookies:?}"
    );
}

#[tokio::test]
async fn private_no_store_and_unkeyed_vary_responses_are_never_shared() {
    for (header, value) in [
        ("cache-control", "max-age=0, private"),
        ("cache-control", "no-store"),
        ("vary", "X-Tenant"),
        ("vary", "*"),
    ] {
        let (url, calls) = serve_headed(header, value).await;
        eight_at_once(&url).await;
        assert_eq!(calls.load(Ordering::SeqCst), 8, "{header}: {value}");
    }
    // Varying on a header the key holds is shared as before.
    let (url, calls) = serve_headed("vary", "Accept-Encoding").await;
    let answers = eight_at_once(&url).await;
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    assert!(answers.iter().all(|(_, body)| body == "render #0"));
}

#[tokio::test]
async fn a_streamed_response_reaches_its_caller_as_it_arrives() {
    // The second chunk is sent only once the caller has read the first: a
    // coalescer that held the body to its end would never deliver it.
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, Infallible>>(1);
    let rx = Arc::new(tokio::sync::Mutex::new(Some(rx)));
    let stream = move || {
        let rx = rx.clone();
        async move {
            let rx = rx.lock().await.take().unwrap();
            let chunks = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|c| (c, rx))
            });
            axum::body::Body::from_stream(chunks)
        }
    };
    let app = Router::new()
        .route("/stream", get(stream))
        .layer(CoalesceLayer::http());
    let addr = serve_axum(app).await;

    let req = Request::get(format!("http://{addr}/stream"))
        .body(Empty::new())
        .unwrap();
    let (res, sent) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(5), client().request(req)),
        tx.send(Ok(Bytes::from_static(b"first")))
    );
    sent.unwrap();
    let res = res.expect("the head arrives before the body ends").unwrap();
    let mut body = res.into_body();
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("the first chunk arrives before the body ends")
        .unwrap()
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), "first");
    tx.send(Ok(Bytes::from_static(b"second"))).await.unwrap();
    drop(tx);
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(rest, "second");
}
