//! A gRPC shop over the simulated database, its protection, and a client
//! that adapts to it: copy `serve` and `client`.
//!
//! Shared by `examples/tonic_stack.rs` and `tests/stacks.rs`. The service is
//! written by hand (prost messages, tonic's codegen types) so no `protoc` is
//! needed; a generated service takes its place unchanged:
//!
//! ```text
//! package shop.v1;
//! service Shop {
//!   rpc Pay(WriteRequest) returns (WriteReply);         // Critical
//!   rpc PlaceOrder(WriteRequest) returns (WriteReply);  // High
//!   rpc Like(WriteRequest) returns (WriteReply);        // Default
//!   rpc Track(WriteRequest) returns (WriteReply);       // Low
//! }
//! message WriteRequest { string item = 1; uint32 quantity = 2; }
//! message WriteReply { bool ok = 1; string priority = 2; }
//! ```

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use tonic::{
    Status,
    body::Body,
    server::NamedService,
    service::LayerExt as _,
    transport::{Channel, Server, server::TcpIncoming},
};
use tonic_prost::ProstCodec;
use tower::{BoxError, Service, ServiceBuilder, ServiceExt as _};
use tower_spillway::{
    Priority,
    deadline::{Deadline, DeadlineLayer},
    limit::{AdaptiveLimitLayer, Aimd, Gradient, Growth, HttpOutcomes, LimitHandle},
    priority::{GrpcMethods, PriorityLayer},
    rate::{ApiKey, KeyDigest, Quota, RateLimitHandle, RateLimitLayer},
    retry_after::{HonorRetryAfterHandle, HonorRetryAfterLayer, ReplayBody},
    shed::{Adaptive, HealthChecks, PriorityShedLayer, ShedHandle},
};

use crate::backend::Database;

/// `shop.v1.WriteRequest`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteRequest {
    #[prost(string, tag = "1")]
    pub item: String,
    #[prost(uint32, tag = "2")]
    pub quantity: u32,
}

/// `shop.v1.WriteReply`.
#[derive(Clone, PartialEq, prost::Message)]
pub struct WriteReply {
    #[prost(bool, tag = "1")]
    pub ok: bool,
    /// The priority the server gave the call.
    #[prost(string, tag = "2")]
    pub priority: String,
}

/// The methods of `shop.v1.Shop`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    Pay,
    PlaceOrder,
    Like,
    Track,
}

impl Method {
    pub const ALL: [Method; 4] = [Method::Pay, Method::PlaceOrder, Method::Like, Method::Track];

    pub const fn path(self) -> &'static str {
        match self {
            Method::Pay => "/shop.v1.Shop/Pay",
            Method::PlaceOrder => "/shop.v1.Shop/PlaceOrder",
            Method::Like => "/shop.v1.Shop/Like",
            Method::Track => "/shop.v1.Shop/Track",
        }
    }

    pub const fn priority(self) -> Priority {
        match self {
            Method::Pay => Priority::Critical,
            Method::PlaceOrder => Priority::High,
            Method::Like => Priority::Default,
            Method::Track => Priority::Low,
        }
    }

    fn from_path(path: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.path() == path)
    }
}

/// The service: every method is one database write.
#[derive(Debug, Clone)]
pub struct ShopServer {
    db: Arc<Database>,
}

impl ShopServer {
    pub fn new(db: Arc<Database>) -> Self {
        Self { db }
    }
}

impl NamedService for ShopServer {
    const NAME: &'static str = "shop.v1.Shop";
}

impl<B> Service<http::Request<B>> for ShopServer
where
    B: http_body::Body + Send + 'static,
    B::Error: Into<BoxError> + Send + 'static,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let db = Arc::clone(&self.db);
        let known = Method::from_path(req.uri().path()).is_some();
        Box::pin(async move {
            if !known {
                return Ok(Status::unimplemented("no such method").into_http());
            }
            let write = tower::service_fn(move |req: tonic::Request<WriteRequest>| {
                let db = Arc::clone(&db);
                async move {
                    let priority = req.extensions().get::<Priority>().copied();
                    db.write().await;
                    Ok::<_, Status>(tonic::Response::new(WriteReply {
                        ok: true,
                        priority: priority.unwrap_or_default().as_str().to_owned(),
                    }))
                }
            });
            let mut grpc = tonic::server::Grpc::new(ProstCodec::default());
            Ok(grpc.unary(write, req).await)
        })
    }
}

/// The longest a caller may take to send its request message (less if its
/// deadline is sooner).
pub const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// The largest request body: tonic's default 4 MiB message and its prefix.
const BODY_LIMIT: usize = 4 * 1024 * 1024 + 5;

/// Reads a call's request body before the limiter: a permit stands for a
/// database write, not for the caller's upload. Were the message read under
/// the permit, a caller that stalls it (an HTTP/2 stream left open after
/// a few bytes) would hold the permit as long as it liked, and as many such
/// calls as the limit would have every call refused. A message not sent
/// within [`BODY_TIMEOUT`] is `DEADLINE_EXCEEDED`; one over 4 MiB
/// `OUT_OF_RANGE`.
#[derive(Debug, Clone)]
pub struct ReadBody<S> {
    inner: S,
}

impl<S> ReadBody<S> {
    pub fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B> Service<http::Request<Body>> for ReadBody<S>
where
    S: Service<http::Request<Body>, Response = http::Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = http::Response<Body>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        // Each call readies its own clone once its body has arrived.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<Body>) -> Self::Future {
        let inner = self.inner.clone();
        Box::pin(async move {
            let (parts, body) = req.into_parts();
            let within = parts
                .extensions
                .get::<Deadline>()
                .map_or(BODY_TIMEOUT, |d| d.remaining().min(BODY_TIMEOUT));
            let read = Limited::new(body, BODY_LIMIT).collect();
            let status = match tokio::time::timeout(within, read).await {
                Ok(Ok(body)) => {
                    let req = http::Request::from_parts(parts, Body::new(body));
                    let res = inner.oneshot(req).await?;
                    return Ok(res.map(Body::new));
                }
                Ok(Err(err)) if err.is::<LengthLimitError>() => {
                    Status::out_of_range("request message larger than 4 MiB")
                }
                Ok(Err(_)) => Status::cancelled("request body failed"),
                Err(_) => Status::deadline_exceeded("request message not sent in time"),
            };
            Ok(status.into_http())
        })
    }
}

/// The server's settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// The database's write slots.
    pub capacity: usize,
    /// The database's time per write.
    pub service: Duration,
    /// Calls per second each API key (`x-api-key`) may make.
    pub quota_per_key: u32,
}

/// The server's figures.
#[derive(Debug, Clone)]
pub struct Handles {
    pub limit: LimitHandle,
    pub shed: ShedHandle,
    pub rate: RateLimitHandle<Option<KeyDigest>>,
}

/// Which method is worth what.
pub fn methods() -> GrpcMethods {
    Method::ALL
        .into_iter()
        .fold(GrpcMethods::new(), |m, method| {
            m.method(method.path(), method.priority())
        })
}

/// Serves the shop and the gRPC health service on `incoming`:
///
/// - every call: `DeadlineLayer` (the caller's `grpc-timeout`),
///   `PriorityLayer` (by method), then `PriorityShedLayer` (adaptive: it
///   refuses what the limiter forecasts it would refuse; health checks
///   bypass it);
/// - shop calls only: a rate limit per API key (`RESOURCE_EXHAUSTED` with the
///   exact wait), then [`ReadBody`] (the message arrives before a permit is
///   taken), then the adaptive limit (the default `Gradient`, priority
///   queue, refusal at the door of what cannot be served in time or before
///   the caller's deadline).
///
/// Every refusal is a trailers-only `UNAVAILABLE` (capacity) or
/// `RESOURCE_EXHAUSTED` (quota) with `grpc-retry-pushback-ms`.
pub async fn serve(
    incoming: TcpIncoming,
    config: &Config,
) -> (
    impl Future<Output = Result<(), tonic::transport::Error>> + Send + 'static,
    Handles,
) {
    let db = Database::new(config.capacity, config.service);
    // Every number a default: the limit finds the database's capacity.
    let limit = AdaptiveLimitLayer::builder(Gradient::default())
        .http()
        .build();
    let shed = PriorityShedLayer::builder(Adaptive::default())
        .signal(limit.handle())
        .bypass(HealthChecks)
        .http()
        .build();
    let quota = Quota::per_second(config.quota_per_key)
        .and_then(|q| q.burst(config.quota_per_key.div_ceil(10)))
        .expect("a positive quota");
    let rate = RateLimitLayer::builder(quota).keyed(ApiKey).http().build();
    let handles = Handles {
        limit: limit.handle(),
        shed: shed.handle(),
        rate: rate.handle(),
    };

    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<ShopServer>().await;

    // The edge of the server, for every service.
    let edge = ServiceBuilder::new()
        .layer(DeadlineLayer::new())
        .layer(PriorityLayer::new(methods()))
        .layer(shed);
    // The shop's own protection: `named_layer` keeps the service's gRPC name.
    let shop = ServiceBuilder::new()
        .layer(rate)
        .layer_fn(ReadBody::new)
        .layer(limit)
        .named_layer(ShopServer::new(db));
    let server = Server::builder()
        .layer(edge)
        .add_service(health)
        .add_service(shop)
        .serve_with_incoming(incoming);
    (server, handles)
}

/// A typed client for `shop.v1.Shop` over any gRPC transport stack.
#[derive(Debug, Clone)]
pub struct ShopClient<T> {
    inner: tonic::client::Grpc<T>,
}

impl<T> ShopClient<T>
where
    T: tonic::client::GrpcService<Body>,
    T::Error: Into<BoxError>,
    T::ResponseBody: http_body::Body<Data = Bytes> + Send + 'static,
    <T::ResponseBody as http_body::Body>::Error: Into<BoxError> + Send,
{
    pub fn new(inner: T) -> Self {
        Self {
            inner: tonic::client::Grpc::new(inner),
        }
    }

    /// Calls `method`.
    pub async fn call(
        &mut self,
        method: Method,
        request: tonic::Request<WriteRequest>,
    ) -> Result<tonic::Response<WriteReply>, Status> {
        self.inner
            .ready()
            .await
            .map_err(|e| Status::unknown(format!("service was not ready: {}", e.into())))?;
        let path = http::uri::PathAndQuery::from_static(method.path());
        self.inner.unary(request, path, ProstCodec::default()).await
    }
}

/// The client stack around a `Channel`, outermost first:
///
/// - `HonorRetryAfterLayer`: a refusal's `grpc-retry-pushback-ms` opens a
///   cooldown every clone waits out before its next call (no retries here,
///   so the caller sees each refusal);
/// - `AdaptiveLimitLayer` with `HttpOutcomes`: fewer calls in flight when the
///   server refuses (gRPC 8/14) or slows down, more when it recovers.
pub fn client(
    channel: Channel,
    tasks: usize,
) -> (
    ShopClient<
        impl tonic::client::GrpcService<
            Body,
            Error: Into<BoxError>,
            ResponseBody: http_body::Body<Data = Bytes, Error: Into<BoxError> + Send>
                              + Send
                              + 'static,
            Future: Send,
        > + Clone
        + Send
        + 'static,
    >,
    HonorRetryAfterHandle,
    LimitHandle,
) {
    let honour = HonorRetryAfterLayer::new();
    let cooldowns = honour.handle();
    let aimd = Aimd::builder()
        .min_limit(1)
        .initial_limit(tasks.max(1))
        .max_limit(tasks.max(1) * 4)
        .growth(Growth::PerLimit)
        .decrease_once_per_rtt(true)
        .build()
        .expect("a valid AIMD configuration");
    let limit = AdaptiveLimitLayer::builder(aimd)
        .outcomes(HttpOutcomes::new())
        // A closed-loop caller has nothing better to do than wait its turn.
        .max_queue(tasks)
        .queue_timeout(Duration::from_secs(30))
        .build();
    let limit_handle = limit.handle();
    let stack = ServiceBuilder::new()
        .layer(honour)
        .layer(limit)
        .map_request(|req: http::Request<ReplayBody<Body>>| req.map(Body::new))
        .service(channel);
    (ShopClient::new(stack), cooldowns, limit_handle)
}
