//! A tonic client that adapts to a rate-limited API: copy `client_stack`.
//!
//! It paces calls under the quota it knows, honours `grpc-retry-pushback-ms`
//! (every clone of the client waits out the server's cooldown together) and
//! retries refused calls within a retry budget. Any generated tonic client
//! takes the stack in place of a `Channel`.
//!
//! ```text
//! cargo run --example tonic_client
//! ```

use std::time::Duration;

use tonic::transport::{Channel, Endpoint, Server, server::TcpIncoming};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tower::ServiceBuilder;
use tower_spillway::{
    BoxError,
    rate::{PaceLayer, Quota, RateLimitLayer},
    retry_after::{HonorRetryAfterLayer, ReplayBody, Retries, RetryBudget},
};

/// The client side of the conversation, around any `Channel`.
fn client_stack(
    channel: Channel,
    known_quota: Quota,
) -> Result<
    impl tonic::client::GrpcService<
        tonic::body::Body,
        Error = tonic::transport::Error,
        ResponseBody = tonic::body::Body,
        Future: Send,
    > + Clone
    + Send
    + 'static,
    BoxError,
> {
    let retries = Retries::new()
        .attempts(3)?
        .backoff(Duration::from_millis(50), Duration::from_secs(2))?
        .budget(RetryBudget::new(0.2, 10, Duration::from_secs(10))?)
        .max_body_bytes(64 * 1024)
        // gRPC calls are POSTs; refusals (RESOURCE_EXHAUSTED, UNAVAILABLE
        // with pushback) come before the server ran them.
        .allow_non_idempotent(true);
    Ok(ServiceBuilder::new()
        // Waits out cooldowns the server asks for (up to 5 minutes), retries.
        .layer(HonorRetryAfterLayer::builder().retries(retries).build())
        // Never more than the quota we know of.
        .layer(PaceLayer::new(known_quota))
        // The replayable body back into tonic's body type.
        .map_request(|req: http::Request<ReplayBody<tonic::body::Body>>| {
            req.map(tonic::body::Body::new)
        })
        .service(channel))
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    // A server limited to 20 calls per second, to talk to.
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter
        .set_service_status("", tonic_health::ServingStatus::Serving)
        .await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(
        Server::builder()
            .layer(
                RateLimitLayer::builder(Quota::per_second(20)?.burst(1)?)
                    .http()
                    .build(),
            )
            .add_service(health)
            .serve_with_incoming(TcpIncoming::from(listener)),
    );

    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect()
        .await?;
    // We believe the quota is 25/s: a little too much, so some calls are
    // refused and retried after the server's pushback.
    let mut client = HealthClient::new(client_stack(channel, Quota::per_second(25)?)?);
    let start = tokio::time::Instant::now();
    for _ in 0..40 {
        client
            .check(HealthCheckRequest {
                service: String::new(),
            })
            .await?;
    }
    println!(
        "40 calls in {:.2} s, none lost to the rate limit",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
