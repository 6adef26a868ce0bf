//! The fault matrix: every layer, alone and in the axum stack, through every
//! fault an inner service or a caller can produce (an inner error, a panic in
//! `call`, a panic in the future, a caller that goes away, a body dropped
//! half-read, an error in the trailers or the body, a shutdown with requests
//! in flight). Each admitted request gets exactly one answer, nothing hangs,
//! and afterwards every in-flight, queued and permit counter is back to zero.
//!
//! The layers alone run on paused time; the stack runs on loopback sockets in
//! real time, as `examples/axum_stack` serves it.

mod support;

use std::{
    collections::{BTreeMap, HashMap},
    convert::Infallible,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU32, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Empty, Full, StreamBody, combinators::UnsyncBoxBody};
use tower::{Service, ServiceBuilder, ServiceExt, service_fn, util::BoxCloneService};
use tower_spillway::{
    BoxError,
    aggregate::{Aggregate, AggregateConfig},
    batch::{Batch, BatchConfig},
    coalesce::CoalesceLayer,
    deadline::DeadlineLayer,
    limit::{AdaptiveLimitLayer, Fixed, Gradient, LimitHandle},
    priority::{HeaderPriority, PriorityLayer},
    rate::{Quota, RateLimitLayer},
    retry_after::{HonorRetryAfterLayer, Retries, RetryAfterLayer},
    shed::{Adaptive, PriorityShedLayer, ShedHandle, Thresholds},
};

#[path = "../examples/flash_sale/backend.rs"]
#[allow(dead_code)]
mod backend;

#[path = "../examples/axum_stack/stack.rs"]
#[allow(dead_code)]
mod axum_stack;

// ---------------------------------------------------------------------------
// The faults, and an inner service that produces them on request.

/// What the inner service does with a request, named by its `x-fault` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
enum Fault {
    None,
    InnerError,
    PanicInCall,
    PanicInFuture,
    CallerCancels,
    BodyDroppedHalfRead,
    TrailersError,
    BodyError,
}

const FAULTS: [Fault; 8] = [
    Fault::None,
    Fault::InnerError,
    Fault::PanicInCall,
    Fault::PanicInFuture,
    Fault::CallerCancels,
    Fault::BodyDroppedHalfRead,
    Fault::TrailersError,
    Fault::BodyError,
];

impl Fault {
    fn name(self) -> &'static str {
        match self {
            Fault::None => "none",
            Fault::InnerError => "inner-error",
            Fault::PanicInCall => "panic-in-call",
            Fault::PanicInFuture => "panic-in-future",
            Fault::CallerCancels => "caller-cancels",
            Fault::BodyDroppedHalfRead => "body-dropped-half-read",
            Fault::TrailersError => "trailers-error",
            Fault::BodyError => "body-error",
        }
    }

    fn of(headers: &HeaderMap) -> Fault {
        let name = headers.get("x-fault").and_then(|v| v.to_str().ok());
        FAULTS
            .into_iter()
            .find(|f| Some(f.name()) == name)
            .unwrap_or(Fault::None)
    }
}

type Body = UnsyncBoxBody<Bytes, BoxError>;
type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

fn frames(frames: Vec<Result<Frame<Bytes>, BoxError>>, then_hang: bool) -> Body {
    let head = futures_util::stream::iter(frames);
    if then_hang {
        use futures_util::StreamExt;
        StreamBody::new(head.chain(futures_util::stream::pending())).boxed_unsync()
    } else {
        StreamBody::new(head).boxed_unsync()
    }
}

/// The inner service: answers after 5 ms, or produces the request's fault.
fn inner<B>(req: Request<B>) -> BoxFuture<Result<Response<Body>, BoxError>> {
    let fault = Fault::of(req.headers());
    if fault == Fault::PanicInCall {
        panic!("injected: panic in call");
    }
    let data = || Ok(Frame::data(Bytes::from_static(b"half")));
    Box::pin(async move {
        tokio::time::sleep(Duration::from_millis(5)).await;
        let body = match fault {
            Fault::InnerError => return Err("injected: inner error".into()),
            Fault::PanicInFuture => panic!("injected: panic in the future"),
            Fault::CallerCancels => std::future::pending().await,
            Fault::BodyDroppedHalfRead => frames(vec![data()], true),
            Fault::TrailersError => {
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", "13".parse().unwrap());
                frames(vec![data(), Ok(Frame::trailers(trailers))], false)
            }
            Fault::BodyError => frames(vec![data(), Err("injected: body error".into())], false),
            Fault::None | Fault::PanicInCall => Full::new(Bytes::from_static(b"ok"))
                .map_err(|never| match never {})
                .boxed_unsync(),
        };
        Ok(Response::new(body))
    })
}

/// Keeps the injected panics out of the test output; any other panic is
/// printed as usual.
fn quiet_injected_panics() {
    support::quiet_panics("injected: ");
}

// ---------------------------------------------------------------------------
// The layers alone.

type Svc = BoxCloneService<Request<Full<Bytes>>, Response<Body>, BoxError>;

/// Counters that must read zero once every request has ended.
type Idle = Box<dyn Fn() -> Vec<(&'static str, i64)>>;

struct Case {
    svc: Svc,
    idle: Idle,
}

fn boxed<B>(res: Response<B>) -> Response<Body>
where
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    res.map(|b| b.map_err(Into::into).boxed_unsync())
}

fn boxed_error<E: Into<BoxError>>(e: E) -> BoxError {
    e.into()
}

fn limit_idle(handle: LimitHandle) -> Idle {
    Box::new(move || {
        let s = handle.snapshot();
        vec![
            ("limit.in_flight", s.in_flight as i64),
            ("limit.queued", s.queued as i64),
            (
                "limit.admitted - released",
                s.admitted as i64 - s.released as i64,
            ),
        ]
    })
}

fn shed_idle(handle: ShedHandle) -> Idle {
    Box::new(move || vec![("shed.in_flight", handle.snapshot().in_flight as i64)])
}

fn nothing_held() -> Idle {
    Box::new(Vec::new)
}

/// A layer over [`inner`], with the figures that must return to zero.
macro_rules! alone {
    ($layer:expr, $idle:expr) => {{
        let svc = ServiceBuilder::new()
            .map_response(boxed)
            .map_err(boxed_error)
            .layer($layer)
            .service(service_fn(inner));
        Case {
            svc: BoxCloneService::new(svc),
            idle: $idle,
        }
    }};
}

/// An error `Coalesce` can hand to every waiter.
#[derive(Debug, Clone)]
struct SharedError(Arc<str>);

impl std::fmt::Display for SharedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SharedError {}

fn case(name: &str) -> Case {
    match name {
        "shed (adaptive)" => {
            let layer = PriorityShedLayer::builder(Adaptive::default())
                .http()
                .build();
            let idle = shed_idle(layer.handle());
            alone!(layer, idle)
        }
        "shed (static, refusing)" => {
            let layer = PriorityShedLayer::builder(Thresholds::ladder(2))
                .http()
                .build();
            let idle = shed_idle(layer.handle());
            alone!(layer, idle)
        }
        "limit (gradient)" => {
            let layer = AdaptiveLimitLayer::builder(Gradient::default())
                .http()
                .build();
            let idle = limit_idle(layer.handle());
            alone!(layer, idle)
        }
        "limit (1 permit, queueing)" => {
            let layer = AdaptiveLimitLayer::builder(Fixed::new(1).unwrap())
                .http()
                .build();
            let idle = limit_idle(layer.handle());
            alone!(layer, idle)
        }
        "rate (refusing)" => {
            let layer = RateLimitLayer::builder(Quota::per_second(2).unwrap())
                .http()
                .build();
            alone!(layer, nothing_held())
        }
        "retry_after (server)" => alone!(RetryAfterLayer::new(), nothing_held()),
        "retry_after (client, retrying)" => {
            let layer = HonorRetryAfterLayer::builder()
                .retries(Retries::new())
                .build();
            alone!(layer, nothing_held())
        }
        "coalesce" => {
            let layer = CoalesceLayer::http();
            let stats = layer.clone();
            let svc = ServiceBuilder::new()
                .map_response(boxed)
                .map_err(boxed_error)
                .layer(layer)
                .map_err(|e: BoxError| SharedError(e.to_string().into()))
                .service(service_fn(inner));
            Case {
                svc: BoxCloneService::new(svc),
                idle: Box::new(move || {
                    vec![("coalesce.in_flight", stats.stats().in_flight as i64)]
                }),
            }
        }
        "deadline" => alone!(
            DeadlineLayer::new().header("x-request-timeout"),
            nothing_held()
        ),
        "priority" => alone!(PriorityLayer::new(HeaderPriority::new()), nothing_held()),
        "batch (http)" => {
            // Each request is one item; the batch's inner service answers
            // each item by calling `inner` for it.
            let items = service_fn(|reqs: Vec<Request<Full<Bytes>>>| async move {
                let answers = reqs.into_iter().map(inner).collect::<Vec<_>>();
                let mut out = Vec::with_capacity(answers.len());
                for answer in answers {
                    out.push(answer.await);
                }
                Ok::<_, BoxError>(out)
            });
            let config = BatchConfig::builder()
                .max_items(4)
                .max_wait(Duration::from_millis(2))
                .queue_capacity(8)
                .reject_when_full(true)
                .build()
                .unwrap();
            let batch = Batch::new(items, config).http();
            let stats = batch.clone();
            let svc = ServiceBuilder::new()
                .map_response(boxed)
                .map_err(boxed_error)
                .service(batch);
            Case {
                svc: BoxCloneService::new(svc),
                idle: Box::new(move || vec![("batch.queued", stats.stats().queued as i64)]),
            }
        }
        other => unreachable!("no case {other}"),
    }
}

const CASES: [&str; 11] = [
    "shed (adaptive)",
    "shed (static, refusing)",
    "limit (gradient)",
    "limit (1 permit, queueing)",
    "rate (refusing)",
    "retry_after (server)",
    "retry_after (client, retrying)",
    "coalesce",
    "deadline",
    "priority",
    "batch (http)",
];

/// What a caller got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Answer {
    Status(u16),
    Error,
    Panicked,
    Cancelled,
}

/// A request for `fault`. Its path names the fault, so that `coalesce` shares
/// a call only among callers of the same fault.
fn request(fault: Fault) -> Request<Full<Bytes>> {
    Request::get(format!("http://backend.test/{}", fault.name()))
        .header("x-fault", fault.name())
        .body(Full::new(Bytes::new()))
        .unwrap()
}

/// Reads the body of `res` as `fault` says (half of it, or to its end),
/// and returns the status.
async fn read_as<B: http_body::Body + Unpin>(res: Response<B>, fault: Fault) -> u16 {
    let status = res.status().as_u16();
    let mut body = res.into_body();
    if fault == Fault::BodyDroppedHalfRead {
        let _ = body.frame().await;
        return status;
    }
    // An error in the body or its trailers ends the body; the head was the
    // answer.
    let _ = body.collect().await;
    status
}

/// One caller: calls, reads the body as the fault says, and reports what it
/// got. A caller that cancels goes away after 50 ms.
async fn caller(svc: Svc, fault: Fault) -> Answer {
    let task = tokio::spawn(async move {
        let res = svc.oneshot(request(fault)).await?;
        Ok::<_, BoxError>(read_as(res, fault).await)
    });
    if fault == Fault::CallerCancels {
        tokio::time::sleep(Duration::from_millis(50)).await;
        task.abort();
    }
    match task.await {
        Ok(Ok(status)) => Answer::Status(status),
        Ok(Err(_)) => Answer::Error,
        Err(e) if e.is_panic() => Answer::Panicked,
        Err(_) => Answer::Cancelled,
    }
}

/// The answers a caller may get for a fault: the inner service's own
/// outcome, or a refusal (503/429) by a layer that sheds or limits.
fn acceptable(fault: Fault, answer: Answer) -> bool {
    let refused = matches!(answer, Answer::Status(503 | 429));
    refused
        || match fault {
            Fault::None | Fault::BodyDroppedHalfRead | Fault::TrailersError | Fault::BodyError => {
                answer == Answer::Status(200)
            }
            Fault::InnerError => answer == Answer::Error,
            // A layer that shares the call (coalesce) or moves it to another
            // task (batch) hands the caller an error instead of the panic.
            Fault::PanicInCall | Fault::PanicInFuture => {
                matches!(answer, Answer::Panicked | Answer::Error)
            }
            Fault::CallerCancels => answer == Answer::Cancelled,
        }
}

fn assert_idle(what: &str, idle: &Idle) {
    for (counter, value) in idle() {
        assert_eq!(
            value, 0,
            "{what}: {counter} is {value} after every request ended"
        );
    }
}

/// Four callers at once with each fault in turn, then all the faults mixed:
/// every caller is answered once, with an answer its fault allows, and the
/// layer's counters return to zero.
#[test]
fn every_layer_alone_answers_each_caller_once_and_returns_to_idle() {
    quiet_injected_panics();
    let mut table: BTreeMap<&str, BTreeMap<Fault, BTreeMap<Answer, usize>>> = BTreeMap::new();
    for name in CASES {
        let mut runs: Vec<Vec<Fault>> = FAULTS.iter().map(|&f| vec![f; 4]).collect();
        runs.push(FAULTS.iter().flat_map(|&f| [f; 3]).collect());
        for faults in runs {
            let rt = support::paused_runtime();
            let idle = rt.block_on(async {
                let Case { svc, idle } = case(name);
                let callers = faults
                    .iter()
                    .map(|&fault| tokio::spawn(caller(svc.clone(), fault)))
                    .collect::<Vec<_>>();
                // On paused time, a caller that hung would make this wait
                // forever; the time-out makes it a failure instead.
                let answers = tokio::time::timeout(
                    Duration::from_secs(600),
                    futures_util::future::join_all(callers),
                )
                .await
                .unwrap_or_else(|_| panic!("{name}: a caller was never answered ({faults:?})"));
                for (&fault, answer) in faults.iter().zip(answers) {
                    let answer = answer.expect("the caller task itself never panics");
                    assert!(
                        acceptable(fault, answer),
                        "{name}: {fault:?} was answered {answer:?}"
                    );
                    *table
                        .entry(name)
                        .or_default()
                        .entry(fault)
                        .or_default()
                        .entry(answer)
                        .or_default() += 1;
                }
                // Refused bodies drain for up to a second; let them.
                tokio::time::sleep(Duration::from_secs(2)).await;
                drop(svc);
                idle
            });
            assert_idle(name, &idle);
        }
    }
    print_table(&table);
}

/// The answers by layer and fault, for RELIABILITY.md (`--nocapture`).
fn print_table(table: &BTreeMap<&str, BTreeMap<Fault, BTreeMap<Answer, usize>>>) {
    for (name, faults) in table {
        let row = faults
            .iter()
            .map(|(fault, answers)| {
                let answers = answers
                    .iter()
                    .map(|(a, n)| format!("{a:?}×{n}"))
                    .collect::<Vec<_>>()
                    .join(" ");
                format!("{}: {answers}", fault.name())
            })
            .collect::<Vec<_>>()
            .join("; ");
        println!("{name} | {row}");
    }
}

/// A shutdown with requests in flight (the runtime goes away, dropping every
/// task) releases every permit and empties every queue.
#[test]
fn every_layer_alone_returns_to_idle_when_the_runtime_shuts_down_mid_request() {
    quiet_injected_panics();
    for name in CASES {
        let rt = support::paused_runtime();
        let idle = rt.block_on(async {
            let Case { svc, idle } = case(name);
            for _ in 0..4 {
                let svc = svc.clone();
                tokio::spawn(async move {
                    let _ = svc.oneshot(request(Fault::CallerCancels)).await;
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
            idle
        });
        drop(rt);
        assert_idle(name, &idle);
    }
}

// ---------------------------------------------------------------------------
// The batcher and the aggregate: items, not requests.

/// Every item a batch holds gets exactly one result whatever its batch's
/// inner service does, and a batcher whose worker is gone answers `Closed`.
#[test]
fn batch_answers_every_item_once_through_every_fault() {
    quiet_injected_panics();
    let rt = support::paused_runtime();
    rt.block_on(async {
        // The item says what its batch does.
        let inner = service_fn(|items: Vec<Fault>| {
            if items.contains(&Fault::PanicInCall) {
                panic!("injected: panic in call");
            }
            async move {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if items.contains(&Fault::PanicInFuture) {
                    panic!("injected: panic in the future");
                }
                if items.contains(&Fault::InnerError) {
                    return Err::<Vec<Result<u8, BoxError>>, BoxError>(
                        "injected: inner error".into(),
                    );
                }
                if items.contains(&Fault::CallerCancels) {
                    std::future::pending::<()>().await;
                }
                Ok(items
                    .iter()
                    .map(|f| match f {
                        Fault::BodyError => Err("injected: this item failed".into()),
                        _ => Ok(1),
                    })
                    .collect())
            }
        });
        let config = BatchConfig::builder()
            .max_items(3)
            .max_wait(Duration::from_millis(2))
            .max_in_flight(4)
            .build()
            .unwrap();
        let (batch, worker) = Batch::pair(inner, config);
        let worker = tokio::spawn(worker);
        let mut answers = HashMap::<Fault, (usize, usize)>::new();
        for fault in FAULTS {
            let callers = (0..3)
                .map(|_| {
                    let batch = batch.clone();
                    tokio::spawn(async move { batch.oneshot(fault).await })
                })
                .collect::<Vec<_>>();
            if fault == Fault::CallerCancels {
                tokio::time::sleep(Duration::from_millis(50)).await;
                callers.iter().for_each(|c| c.abort());
            }
            for c in callers {
                let entry = answers.entry(fault).or_default();
                match c.await {
                    Ok(Ok(_)) => entry.0 += 1,
                    Ok(Err(_)) => entry.1 += 1,
                    Err(e) => assert!(e.is_cancelled(), "a caller panicked: {e}"),
                }
            }
        }
        assert_eq!(answers[&Fault::None], (3, 0));
        assert_eq!(answers[&Fault::BodyError], (0, 3), "each item's own error");
        for fault in [Fault::InnerError, Fault::PanicInCall, Fault::PanicInFuture] {
            assert_eq!(
                answers[&fault],
                (0, 3),
                "{fault:?} fails its batch's callers"
            );
        }
        assert_eq!(batch.stats().queued, 0);
        assert!(batch.stats().failed_batches >= 3);

        // Shutdown: the worker goes away with items queued; their callers
        // are answered, not left waiting.
        let waiting = (0..3)
            .map(|_| tokio::spawn(batch.clone().oneshot(Fault::CallerCancels)))
            .collect::<Vec<_>>();
        tokio::time::sleep(Duration::from_millis(20)).await;
        worker.abort();
        let _ = worker.await;
        for w in waiting {
            assert!(
                w.await.unwrap().is_err(),
                "a stopped batcher answers Closed"
            );
        }
        assert!(batch.stats().closed);
        assert!(batch.clone().oneshot(Fault::None).await.is_err());
    });
}

/// An aggregate whose flushes fail, panic in `call` and panic in their
/// future keeps its updates and delivers them; `shutdown` returns and
/// flushes what is left.
#[test]
fn aggregate_keeps_every_update_through_failing_flushes_and_shutdown() {
    quiet_injected_panics();
    let rt = support::paused_runtime();
    rt.block_on(async {
        let attempt = Arc::new(AtomicU32::new(0));
        let delivered = Arc::new(Mutex::new(HashMap::<u32, u64>::new()));
        let flush = {
            let (attempt, delivered) = (attempt.clone(), delivered.clone());
            service_fn(move |map: HashMap<u32, u64>| {
                let n = attempt.fetch_add(1, Ordering::Relaxed);
                if n == 1 {
                    panic!("injected: panic in call");
                }
                let delivered = delivered.clone();
                async move {
                    match n {
                        0 => Err::<(), BoxError>("injected: inner error".into()),
                        2 => panic!("injected: panic in the future"),
                        _ => {
                            let mut d = delivered.lock().unwrap();
                            for (k, v) in map {
                                *d.entry(k).or_default() += v;
                            }
                            Ok(())
                        }
                    }
                }
            })
        };
        let config = AggregateConfig::builder()
            .interval(Duration::from_millis(100))
            .max_keys(1000)
            .build()
            .unwrap();
        let agg = Aggregate::new(flush, config);
        for k in 0..50u32 {
            agg.clone().oneshot((k, 1u64)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tokio::time::timeout(Duration::from_secs(600), agg.shutdown())
            .await
            .expect("shutdown returns");
        let stats = agg.stats();
        assert_eq!(stats.keys_dropped, 0);
        assert_eq!(stats.pending_keys, 0);
        assert!(stats.failed_flushes >= 3, "{stats:?}");
        let delivered = delivered.lock().unwrap().clone();
        assert_eq!(delivered.len(), 50, "every key delivered: {stats:?}");
        assert!(delivered.values().all(|&v| v == 1), "each exactly once");
        assert!(agg.clone().oneshot((0, 1)).await.is_err(), "shut down");
    });
}

// ---------------------------------------------------------------------------
// The axum stack on loopback.

/// `inner` as an axum route: an inner error is the handler's `500`.
#[derive(Clone)]
struct Route;

impl Service<Request<axum::body::Body>> for Route {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = BoxFuture<Result<Response<Body>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<axum::body::Body>) -> Self::Future {
        let delay = req
            .headers()
            .get("x-delay-ms")
            .and_then(|v| v.to_str().ok()?.parse().ok())
            .map(Duration::from_millis);
        let answer = inner(req);
        Box::pin(async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            Ok(answer.await.unwrap_or_else(|_| {
                let mut res = Response::new(Empty::new().map_err(|n| match n {}).boxed_unsync());
                *res.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
                res
            }))
        })
    }
}

/// The layers of `examples/axum_stack` with every default, over routes that
/// produce faults.
fn faulty_stack() -> (axum::Router, LimitHandle, ShedHandle) {
    let limit = AdaptiveLimitLayer::builder(Gradient::default())
        .http()
        .build();
    let limit_handle = limit.handle();
    let shed = PriorityShedLayer::builder(Adaptive::default())
        .signal(limit_handle.clone())
        .bypass(axum_stack::operational)
        .http()
        .build();
    let shed_handle = shed.handle();
    let protected = ["/payments", "/orders", "/likes", "/analytics"]
        .into_iter()
        .fold(axum::Router::new(), |r, path| r.route_service(path, Route))
        .layer(limit);
    let app = axum::Router::new()
        .merge(protected)
        .layer(shed)
        .layer(PriorityLayer::new(HeaderPriority::with_base(
            axum_stack::routes(),
        )))
        .layer(DeadlineLayer::new().header("x-request-timeout"));
    (app, limit_handle, shed_handle)
}

type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Empty<Bytes>,
>;

fn client(h2: bool) -> Client {
    let mut b = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new());
    // A panicking handler takes its connection down; one connection per
    // request keeps that from answering the other requests too.
    b.pool_max_idle_per_host(0).http2_only(h2);
    b.build_http()
}

/// Waits (up to 20 s) until the limiter and the shedder hold nothing.
async fn wait_idle(limit: &LimitHandle, shed: &ShedHandle) {
    support::wait_idle("idle", Duration::from_secs(20), limit, shed).await;
}

async fn stack_caller(client: Client, addr: SocketAddr, path: &str, fault: Fault) -> Answer {
    let req = Request::post(format!("http://{addr}{path}"))
        .header("x-fault", fault.name())
        .body(Empty::new())
        .unwrap();
    let call = async move {
        let res = client.request(req).await?;
        Ok::<_, BoxError>(read_as(res, fault).await)
    };
    let timeout = match fault {
        Fault::CallerCancels => Duration::from_millis(100),
        _ => Duration::from_secs(20),
    };
    match tokio::time::timeout(timeout, call).await {
        Ok(Ok(status)) => Answer::Status(status),
        Ok(Err(_)) => Answer::Error,
        Err(_) => Answer::Cancelled,
    }
}

/// Every fault at once, on every route, over HTTP/1.1 and HTTP/2: every
/// request is answered (a panicking handler's connection closes, which its
/// caller sees as an error), and the limiter and shedder return to idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_stack_answers_every_fault_and_returns_to_idle() {
    quiet_injected_panics();
    let (app, limit, shed) = faulty_stack();
    let addr = support::serve_axum(app).await;

    let mut callers = Vec::new();
    for h2 in [false, true] {
        for path in ["/payments", "/orders", "/likes", "/analytics"] {
            for fault in FAULTS {
                for _ in 0..3 {
                    let client = client(h2);
                    callers.push((
                        fault,
                        tokio::spawn(async move { stack_caller(client, addr, path, fault).await }),
                    ));
                }
            }
        }
    }
    for (fault, caller) in callers {
        let answer = caller.await.unwrap();
        let ok = match fault {
            Fault::None | Fault::BodyDroppedHalfRead | Fault::TrailersError | Fault::BodyError => {
                matches!(answer, Answer::Status(200 | 503))
                    // An error mid-body resets the stream or connection.
                    || (fault == Fault::BodyError && answer == Answer::Error)
            }
            Fault::InnerError => matches!(answer, Answer::Status(500 | 503)),
            Fault::PanicInCall | Fault::PanicInFuture => {
                matches!(answer, Answer::Error | Answer::Status(503))
            }
            Fault::CallerCancels => matches!(answer, Answer::Cancelled | Answer::Status(503)),
        };
        assert!(ok, "{fault:?} was answered {answer:?}");
    }
    wait_idle(&limit, &shed).await;

    // And it still serves.
    let answer = stack_caller(client(false), addr, "/payments", Fault::None).await;
    assert_eq!(answer, Answer::Status(200));
    wait_idle(&limit, &shed).await;
}

/// A graceful shutdown with requests in flight: each is answered, the server
/// ends, and nothing is left holding a permit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_axum_stack_answers_requests_in_flight_through_a_graceful_shutdown() {
    let (app, limit, shed) = faulty_stack();
    let (listener, addr) = support::loopback().await;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                let _ = stopped.await;
            })
            .await
            .unwrap()
    });

    let callers = (0..16)
        .map(|i| {
            let client = client(i % 2 == 1);
            tokio::spawn(async move {
                let req = Request::post(format!("http://{addr}/payments"))
                    .header("x-delay-ms", "300")
                    .body(Empty::new())
                    .unwrap();
                let res = client.request(req).await?;
                let status = res.status();
                res.into_body().collect().await?;
                Ok::<_, BoxError>(status)
            })
        })
        .collect::<Vec<_>>();
    // Once every request is in, ask the server to stop.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while limit.snapshot().in_flight + limit.snapshot().queued < 16 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{:?}",
            limit.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    stop.send(()).unwrap();
    for caller in callers {
        let status = caller
            .await
            .unwrap()
            .expect("answered through the shutdown");
        assert_eq!(status, StatusCode::OK);
    }
    tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .expect("the server ends once its requests are answered")
        .unwrap();
    wait_idle(&limit, &shed).await;
}
