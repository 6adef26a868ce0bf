//! The fixtures the integration tests share: loopback servers, clients, the
//! waits and quiet panics, a paused runtime, a counting allocator, and the
//! run of an example as a user runs it.
//!
//! Each test binary includes this file as a module of its own (`mod
//! support;`); being `tests/support/mod.rs`, not `tests/support.rs`, cargo
//! does not build it as a test binary by itself.

// Each test binary uses a different subset of these fixtures, and what one
// binary leaves unused would warn there as dead code.
#![allow(dead_code)]

use std::{future::Future, net::SocketAddr, process::Command, time::Duration};

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Empty};
use hyper_util::{
    client::legacy::{Client, connect::HttpConnector},
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
    service::TowerToHyperService,
};
use serde_json::Value;
use tokio::{net::TcpListener, time::Instant};
use tonic::transport::{Channel, Endpoint, server::TcpIncoming};
use tonic_health::pb::HealthCheckRequest;
use tower::Service;
use tower_spillway::{BoxError, limit::LimitHandle, shed::ShedHandle};

pub mod redis;

// ---- loopback servers -------------------------------------------------------

/// A listener on a free loopback port, and its address.
pub async fn loopback() -> (TcpListener, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (listener, addr)
}

/// Serves `app` on a loopback port with `axum::serve` (HTTP/1.1 and HTTP/2
/// on one port, as the examples serve it).
pub async fn serve_axum(app: axum::Router) -> SocketAddr {
    let (listener, addr) = loopback().await;
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    addr
}

/// Serves the tower service `svc` on a loopback port with hyper's automatic
/// HTTP/1.1 and HTTP/2 server, a task per connection, its settings changed
/// by `configure` (`|_| {}`: hyper's defaults).
pub async fn serve_hyper<S, B>(
    svc: S,
    configure: impl Fn(&mut auto::Builder<TokioExecutor>) + Send + 'static,
) -> SocketAddr
where
    S: Service<Request<hyper::body::Incoming>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let (listener, addr) = loopback().await;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let svc = TowerToHyperService::new(svc.clone());
            let mut builder = auto::Builder::new(TokioExecutor::new());
            configure(&mut builder);
            tokio::spawn(async move {
                let _ = builder.serve_connection(TokioIo::new(stream), svc).await;
            });
        }
    });
    addr
}

/// Runs the server `serve` makes of a loopback port (a tonic server's
/// `serve_with_incoming`) in a task of its own.
pub async fn serve_tonic<S, E>(serve: impl FnOnce(TcpIncoming) -> S) -> SocketAddr
where
    S: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Debug,
{
    let (addr, ()) = serve_tonic_with(|incoming| async move { (serve(incoming), ()) }).await;
    addr
}

/// [`serve_tonic`] for a server that comes with handles of its own, as an
/// example's `serve(incoming, config)` does: its address and the handles.
pub async fn serve_tonic_with<F, S, E, T>(serve: impl FnOnce(TcpIncoming) -> F) -> (SocketAddr, T)
where
    F: Future<Output = (S, T)>,
    S: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Debug,
{
    let incoming = TcpIncoming::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let addr = incoming.local_addr().unwrap();
    let (server, handles) = serve(incoming).await;
    tokio::spawn(async move { server.await.unwrap() });
    (addr, handles)
}

// ---- files -----------------------------------------------------------------

/// A fresh directory under the system's temporary one, removed when dropped.
pub struct TempDir(std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let dir = std::env::temp_dir().join(format!(
            "spillway-{name}-{}-{}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    pub fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---- clients ---------------------------------------------------------------

/// hyper's pooled client, sending bodies of type `B`.
pub type HttpClient<B = Empty<Bytes>> = Client<HttpConnector, B>;

/// A client that speaks HTTP/1.1.
pub fn h1_client<B>() -> HttpClient<B>
where
    B: http_body::Body + Send,
    B::Data: Send,
{
    Client::builder(TokioExecutor::new()).build_http()
}

/// A client that speaks HTTP/2 only (prior knowledge).
pub fn h2_client<B>() -> HttpClient<B>
where
    B: http_body::Body + Send,
    B::Data: Send,
{
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A `GET` of `path` on `addr`, with an empty body.
pub fn get<B: Default>(addr: SocketAddr, path: &str) -> Request<B> {
    Request::get(format!("http://{addr}{path}"))
        .body(B::default())
        .unwrap()
}

/// Sends `req` and reads the whole answer: its status, headers and body.
pub async fn send<B>(client: &HttpClient<B>, req: Request<B>) -> (StatusCode, HeaderMap, Bytes)
where
    B: http_body::Body + Send + Unpin + 'static,
    B::Data: Send,
    B::Error: Into<BoxError>,
{
    let res = client.request(req).await.unwrap();
    let (parts, body) = res.into_parts();
    let body = body.collect().await.unwrap().to_bytes();
    (parts.status, parts.headers, body)
}

/// A tonic channel to `addr`, connected.
pub async fn channel(addr: SocketAddr) -> Channel {
    Endpoint::from_shared(format!("http://{addr}"))
        .unwrap()
        .connect()
        .await
        .unwrap()
}

/// A health check of the whole server (`service: ""`).
pub fn health_request() -> HealthCheckRequest {
    HealthCheckRequest {
        service: String::new(),
    }
}

/// The whole seconds of a `Retry-After` in delay-seconds form, if there is
/// one.
pub fn retry_after_secs(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

/// The `grpc-retry-pushback-ms` a status carries, if there is one.
pub fn pushback_ms(status: &tonic::Status) -> Option<u64> {
    status
        .metadata()
        .get("grpc-retry-pushback-ms")?
        .to_str()
        .ok()?
        .parse()
        .ok()
}

// ---- waiting ---------------------------------------------------------------

/// Waits (up to 10 s) until `cond` holds.
pub async fn wait_until(what: &str, cond: impl FnMut() -> bool) {
    wait_until_within(Duration::from_secs(10), what, cond).await;
}

/// Waits (up to `within`) until `cond` holds.
pub async fn wait_until_within(within: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// Waits (up to `within`) until a limiter and a shedder hold nothing: no
/// request in flight or queued, and every admitted one released.
pub async fn wait_idle(what: &str, within: Duration, limit: &LimitHandle, shed: &ShedHandle) {
    let idle = || {
        let (l, s) = (limit.snapshot(), shed.snapshot());
        l.in_flight == 0 && l.queued == 0 && l.admitted == l.released && s.in_flight == 0
    };
    let deadline = Instant::now() + within;
    while !idle() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting until {what}: {:?} {:?}",
            limit.snapshot(),
            shed.snapshot()
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A current-thread runtime on paused time, for a test that runs its own
/// (a property test's cases, a runtime shut down mid-request).
pub fn paused_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .start_paused(true)
        .build()
        .unwrap()
}

/// Keeps the panics a test provokes on purpose, those whose message starts
/// with `prefix`, out of the test output; any other panic is printed as
/// usual. The first call in a test binary installs the hook.
pub fn quiet_panics(prefix: &'static str) {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let payload = info.payload();
            let msg = payload
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
                .unwrap_or_default();
            if !msg.starts_with(prefix) {
                default(info);
            }
        }));
    });
}

// ---- memory ----------------------------------------------------------------

/// The examples' counting allocator (`examples/common/heap.rs`): the
/// process's live heap bytes ([`live_heap`]). A `#[global_allocator]` must
/// be declared at a crate's root, so a test binary that measures memory
/// declares it there:
///
/// ```ignore
/// #[global_allocator]
/// static ALLOCATOR: support::Counting = support::Counting;
/// ```
#[path = "../../examples/common/heap.rs"]
mod heap;

// Only the binaries that measure memory name it.
#[allow(unused_imports)]
pub use heap::Counting;

/// Live heap bytes, for the whole process (with [`Counting`] as the test
/// binary's allocator).
pub fn live_heap() -> isize {
    heap::live_bytes()
}

// ---- the examples, run as a user runs them ---------------------------------

/// Runs `example` as the README runs it, `cargo run --release` (wherever the
/// target directory is) in a separate process, with `features`, then `args`
/// and `--json PATH`; prints its output, asserts that it succeeded, and
/// returns the JSON it wrote.
pub fn run_example(example: &str, features: &[&str], args: &[&str]) -> Value {
    let json = std::env::temp_dir().join(format!(
        "{example}-{}-{}.json",
        std::process::id(),
        args.join("")
    ));
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["run", "--quiet", "--release"]);
    if !features.is_empty() {
        cargo.args(["--features", &features.join(",")]);
    }
    let out = cargo
        .args(["--example", example, "--"])
        .args(args)
        .arg("--json")
        .arg(&json)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    println!("{}", String::from_utf8_lossy(&out.stdout));
    assert!(
        out.status.success(),
        "{example} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let figures = serde_json::from_slice(&std::fs::read(&json).expect("the JSON was written"))
        .expect("valid JSON");
    let _ = std::fs::remove_file(&json);
    figures
}

/// A number of an example's JSON figures.
pub fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}
