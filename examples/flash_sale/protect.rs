//! The adaptive limit every example stack uses, in one place: the flash
//! sale, `axum_stack`, `tonic_stack` and the stack benchmark.

use std::time::Duration;

use tower_spillway::{
    http::AsResponse,
    limit::{AdaptiveLimitLayer, Aimd, Growth, HttpOutcomes, LatencyTarget},
};

/// AIMD that grows about one per round trip, cuts at most once per round
/// trip, and counts a success slower than `latency_multiple` times the recent
/// minimum latency as an overload signal, so the limit shrinks as soon as the
/// database slows down, not only when it fails. At the limit, requests wait
/// by priority, 64 at most, for at most 500 ms (100 ms below Critical once a
/// queue stands); refusals are `503` + `Retry-After`.
pub fn adaptive_limit(
    initial: usize,
    latency_multiple: f64,
) -> AdaptiveLimitLayer<AsResponse, HttpOutcomes> {
    let aimd = Aimd::builder()
        .min_limit(4)
        .initial_limit(initial.max(4))
        .max_limit(initial.max(200))
        .growth(Growth::PerLimit)
        .decrease_once_per_rtt(true)
        .latency_target(LatencyTarget::min_rtt_multiple(latency_multiple))
        .build()
        .expect("a valid AIMD configuration");
    AdaptiveLimitLayer::new(aimd)
        .max_queue(64)
        .queue_timeout(Duration::from_millis(500))
        .standing_queue(Duration::from_millis(100), Duration::from_millis(100))
        .http()
}
