//! Open-loop traffic through the balancer: Poisson arrivals sent on schedule
//! whatever the fleet does, as the flash sale's `load.rs` sends them, but
//! handed to an instance's router in process (`oneshot`) instead of over a
//! socket, so that sixteen instances and their clients fit on two cores.

use std::{
    sync::{Arc, Mutex, atomic::Ordering},
    time::Duration,
};

use axum::body::Body;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::ServiceExt;
use tower_spillway::Priority;

use crate::{
    load::{Mix, Phase, ROUTES},
    stack::{CALLER, Fleet},
};

/// How many distinct callers send the traffic.
pub const CALLERS: u64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// Refused with 503 or 429.
    Shed,
    /// No answer within the client's timeout.
    Timeout,
    /// Any other answer.
    Error,
}

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub instance: usize,
    pub priority: Priority,
    /// When it was sent, in seconds from the start of the run.
    pub sent: f64,
    pub outcome: Outcome,
}

/// Sends `phases` of traffic in `mix` through `fleet`, each request given up
/// after `timeout`, from `start` on, and returns every request's fate.
pub async fn drive(
    fleet: Arc<Fleet>,
    phases: &[Phase],
    mix: Mix,
    timeout: Duration,
    start: Instant,
) -> Vec<Sample> {
    let samples = Arc::new(Mutex::new(Vec::with_capacity(128 * 1024)));
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = start;
    let mut phase_end = start;
    for phase in phases {
        phase_end += phase.duration;
        while next < phase_end {
            tokio::time::sleep_until(next).await;
            let (priority, path) = pick_route(&mix);
            let caller = fastrand::u64(..CALLERS);
            let instance = fleet.pick();
            let fleet = Arc::clone(&fleet);
            let samples = Arc::clone(&samples);
            tasks.spawn(async move {
                let sent = start.elapsed().as_secs_f64();
                let target = &fleet.instances[instance];
                target.in_flight.fetch_add(1, Ordering::Relaxed);
                let req = Request::post(path)
                    .header(CALLER, caller)
                    .body(Body::from("{\"item\":42}"))
                    .expect("a valid request");
                let outcome = tokio::time::timeout(timeout, async {
                    let res = target.app.clone().oneshot(req).await;
                    let Ok(res) = res;
                    let status = res.status();
                    // The permits ride in the body: read it to the end, as
                    // a client does.
                    match res.into_body().collect().await {
                        Err(_) => Outcome::Error,
                        Ok(_) if status.is_success() => Outcome::Ok,
                        Ok(_)
                            if status == StatusCode::SERVICE_UNAVAILABLE
                                || status == StatusCode::TOO_MANY_REQUESTS =>
                        {
                            Outcome::Shed
                        }
                        Ok(_) => Outcome::Error,
                    }
                })
                .await
                .unwrap_or(Outcome::Timeout);
                target.in_flight.fetch_sub(1, Ordering::Relaxed);
                samples.lock().unwrap().push(Sample {
                    instance,
                    priority,
                    sent,
                    outcome,
                });
            });
            // Reap finished tasks as we go so the set stays small.
            while tasks.try_join_next().is_some() {}
            next += exponential(phase.rate);
        }
    }
    while tasks.join_next().await.is_some() {}
    std::mem::take(&mut *samples.lock().unwrap())
}

fn pick_route(mix: &Mix) -> (Priority, &'static str) {
    let total: f64 = mix.iter().sum();
    let mut x = fastrand::f64() * total;
    for ((priority, path, _), share) in ROUTES.iter().zip(mix) {
        if x < *share {
            return (*priority, path);
        }
        x -= share;
    }
    (ROUTES[3].0, ROUTES[3].1)
}

/// The gap to the next Poisson arrival at `rate` per second.
fn exponential(rate: f64) -> Duration {
    let u = 1.0 - fastrand::f64(); // (0, 1]
    Duration::from_secs_f64(-u.ln() / rate)
}
