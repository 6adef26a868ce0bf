//! The overload stack to copy into an axum service.
//!
//! Four write routes and `GET /recommendations` over a simulated database
//! (`C` write slots, `M` ms per write, slower when oversubscribed; see
//! `flash_sale/backend.rs`), protected by:
//!
//! 1. `PriorityLayer` with a route table: `POST /payments` Critical,
//!    `/orders` High, `/likes` Default, `/analytics` and `/recommendations`
//!    Low;
//! 2. `PriorityShedLayer`, adaptive, steering on the limiter's queueing delay:
//!    the lowest priorities are refused first, with `503` and `Retry-After`;
//! 3. `AdaptiveLimitLayer` (AIMD with a latency target) and its bounded,
//!    priority-ordered wait queue: `503` and `Retry-After` when full or too
//!    slow;
//! 4. `DegradeLayer`, between the first two: a load level (normal, elevated,
//!    overloaded) read from the limiter and the shedder, stamped into every
//!    request; while it is elevated or worse, `GET /recommendations` (a
//!    database call when normal) answers `[]` with `x-degraded`.
//!
//! `GET /healthz`, `GET /stats` (the layers' figures and the load level as
//! JSON) and `GET /dashboard` (a page that polls `/stats` and draws the
//! limit, in flight, queueing delay, load level, and admitted and shed per
//! priority over the last five minutes) sit outside the limiter and bypass
//! the shedder: never refused, never queued. `GET /metrics` serves the same
//! figures, with the limiter's queue-wait and rtt histograms, in the
//! Prometheus text format (`axum_stack/metrics.rs`), outside every layer.
//!
//! ```text
//! cargo run --release --example axum_stack -- \
//!     [--addr 127.0.0.1:3000] [--capacity 20] [--service-ms 20] [--trust-priority-header]
//!
//! curl -X POST localhost:3000/payments
//! curl localhost:3000/stats
//! curl localhost:3000/metrics
//! # and open http://localhost:3000/dashboard in a browser
//! curl -i localhost:3000/recommendations
//! # under load, from any HTTP/1.1 or HTTP/2 client:
//! oha -z 10s -c 400 -m POST http://127.0.0.1:3000/analytics
//! ```
//!
//! Every write route takes POST with any (or no) body and answers `200` with a
//! small JSON body once the write is done. With `--trust-priority-header`, a caller's
//! `x-priority: critical|high|default|low` overrides the route table (without
//! it, the header can only lower a request's priority). The layers'
//! transitions are printed (the examples build with the `tracing` feature):
//! shedding started and stopped, and with `SPILLWAY_LOG=debug` every move of
//! the admission level and the concurrency limit.

use std::net::SocketAddr;

#[path = "flash_sale/backend.rs"]
#[allow(dead_code)]
mod backend;
#[path = "common/mod.rs"]
mod common;
#[path = "axum_stack/metrics.rs"]
mod metrics;
#[path = "axum_stack/stack.rs"]
mod stack;

struct Args {
    addr: SocketAddr,
    config: stack::Config,
}

fn args() -> Args {
    let mut args = Args {
        addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
        config: stack::Config::default(),
    };
    common::parse_flags(usage, |flag, value| match flag {
        "--addr" => {
            args.addr = value()
                .parse()
                .unwrap_or_else(|_| usage("--addr HOST:PORT"))
        }
        "--capacity" => args.config.capacity = common::capacity(value(), usage),
        "--service-ms" => args.config.service = common::service_ms(value(), usage),
        "--trust-priority-header" => args.config.trust_priority_header = true,
        "-h" | "--help" => usage(""),
        other => usage(&format!("unknown flag {other}")),
    });
    args
}

fn usage(error: &str) -> ! {
    common::exit_with_usage(
        error,
        "usage: axum_stack [--addr HOST:PORT] [--capacity C] [--service-ms M] [--trust-priority-header]",
    )
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    // The layers' transitions, not every request (with the `tracing`
    // feature).
    common::init_tracing();

    let Args { addr, config } = args();
    // The process's metrics recorder, before the layers register theirs.
    let prometheus = metrics::install_prometheus().expect("no other recorder is installed");
    let (app, handles) = stack::app(&config);
    let app = app.merge(metrics::metrics_routes(&handles, prometheus));
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!(
        "serving on http://{} (database: {} slots x {} ms = {:.0} writes/s; x-priority {})",
        listener.local_addr()?,
        config.capacity,
        config.service.as_millis(),
        config.capacity as f64 / config.service.as_secs_f64(),
        if config.trust_priority_header {
            "trusted"
        } else {
            "can only lower"
        },
    );
    println!(
        "routes: POST /payments /orders /likes /analytics; GET /recommendations /healthz /stats /dashboard /metrics"
    );
    // axum::serve speaks HTTP/1.1 and HTTP/2 (prior knowledge) on one port.
    axum::serve(listener, app).await
}
