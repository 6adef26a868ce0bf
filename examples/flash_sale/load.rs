//! Open-loop traffic: Poisson arrivals sent on schedule, whatever the server
//! does, each with a client timeout. A closed loop (N clients that wait for
//! their answers) would slow down with the server and hide its collapse.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use http::{Request, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper_util::{client::legacy::Client, rt::TokioExecutor};
use tokio::time::Instant;
use tower_spillway::{Priority, retry_after::parse_retry_after};

/// The sale's routes and their default share of the traffic.
pub const ROUTES: [(Priority, &str, f64); 4] = [
    (Priority::Critical, "/payments", 0.05),
    (Priority::High, "/orders", 0.15),
    (Priority::Default, "/likes", 0.30),
    (Priority::Low, "/analytics", 0.50),
];

/// Each route's share of the traffic, in the order of [`ROUTES`].
pub type Mix = [f64; 4];

/// How the clients talk to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// HTTP/1.1 keep-alive: one request per connection at a time, a new
    /// connection opened when all are busy, at most [`H1_CONNECTIONS`].
    Http1,
    /// One HTTP/2 connection multiplexing every request.
    Http2,
}

/// The most HTTP/1.1 connections the clients open; a request finding all of
/// them busy waits for one (its wait counts against its timeout).
pub const H1_CONNECTIONS: usize = 1000;

impl Protocol {
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Http1 => "h1",
            Protocol::Http2 => "h2",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Phase {
    pub duration: Duration,
    /// Offered requests per second.
    pub rate: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// `202 Accepted`: stored, to be done later.
    Accepted,
    /// Refused with 503/429 and a valid `Retry-After`.
    Shed,
    /// Refused without a usable `Retry-After`.
    ShedNoHint,
    Timeout,
    Error,
}

#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub priority: Priority,
    /// When it was sent and answered, from the start of the run.
    pub sent: Duration,
    pub done: Duration,
    pub outcome: Outcome,
}

impl Sample {
    pub fn latency(&self) -> Duration {
        self.done - self.sent
    }
}

/// Counters the progress line reads every second.
#[derive(Debug, Default)]
pub struct Live {
    pub sent: AtomicU64,
    pub ok: AtomicU64,
    pub accepted: AtomicU64,
    pub shed: AtomicU64,
    pub timeout: AtomicU64,
    pub error: AtomicU64,
}

/// What to send: the phases' open-loop arrivals, picked by `mix`, to
/// `addr` over `protocol`, each request given up after `timeout`.
pub struct Traffic<'a> {
    pub addr: SocketAddr,
    pub phases: &'a [Phase],
    pub mix: Mix,
    pub protocol: Protocol,
    pub timeout: Duration,
}

/// Sends the traffic and returns every request's fate.
pub async fn drive(traffic: Traffic<'_>, live: Arc<Live>) -> Vec<Sample> {
    let samples = Arc::new(Mutex::new(Vec::with_capacity(64 * 1024)));
    let record = {
        let samples = Arc::clone(&samples);
        move |sample, _status| samples.lock().unwrap().push(sample)
    };
    drive_into(traffic, live, record).await;
    Arc::try_unwrap(samples)
        .map(|m| m.into_inner().unwrap())
        .unwrap_or_default()
}

/// Sends the traffic and hands each request's fate, with the status it was
/// answered with (`None`: no complete answer), to `record` as soon as it is
/// known. Nothing is kept, so a run of any length holds only the requests
/// in flight.
pub async fn drive_into<R>(traffic: Traffic<'_>, live: Arc<Live>, record: R)
where
    R: Fn(Sample, Option<StatusCode>) + Clone + Send + 'static,
{
    let Traffic {
        addr,
        phases,
        mix,
        protocol,
        timeout,
    } = traffic;
    let client = match protocol {
        // One HTTP/2 connection multiplexes every request, so the client
        // needs no socket per outstanding request however badly the server
        // falls behind.
        Protocol::Http2 => Client::builder(TokioExecutor::new())
            .http2_only(true)
            .build_http::<Full<Bytes>>(),
        // The pool keeps idle connections and opens one per request that
        // finds none idle; the semaphore below caps them.
        Protocol::Http1 => Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(H1_CONNECTIONS)
            .pool_idle_timeout(Duration::from_secs(30))
            .build_http::<Full<Bytes>>(),
    };
    let connections = Arc::new(tokio::sync::Semaphore::new(match protocol {
        Protocol::Http1 => H1_CONNECTIONS,
        Protocol::Http2 => tokio::sync::Semaphore::MAX_PERMITS,
    }));
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    let mut next = start;
    let mut phase_end = start;
    for phase in phases {
        phase_end += phase.duration;
        while next < phase_end {
            tokio::time::sleep_until(next).await;
            let (priority, path) = pick_route(&mix);
            let client = client.clone();
            let record = record.clone();
            let live = Arc::clone(&live);
            let connections = Arc::clone(&connections);
            live.sent.fetch_add(1, Ordering::Relaxed);
            tasks.spawn(async move {
                let sent = start.elapsed();
                let (outcome, status) = tokio::time::timeout(timeout, async {
                    let _connection = connections.acquire().await;
                    send(&client, addr, path).await
                })
                .await
                .unwrap_or((Outcome::Timeout, None));
                let done = start.elapsed();
                match outcome {
                    Outcome::Ok => &live.ok,
                    Outcome::Accepted => &live.accepted,
                    Outcome::Shed | Outcome::ShedNoHint => &live.shed,
                    Outcome::Timeout => &live.timeout,
                    Outcome::Error => &live.error,
                }
                .fetch_add(1, Ordering::Relaxed);
                record(
                    Sample {
                        priority,
                        sent,
                        done,
                        outcome,
                    },
                    status,
                );
            });
            // Reap finished tasks as we go so the set stays small.
            while tasks.try_join_next().is_some() {}
            next += exponential(phase.rate);
        }
    }
    while tasks.join_next().await.is_some() {}
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
    let last = ROUTES
        .iter()
        .zip(mix)
        .rev()
        .find(|(_, share)| **share > 0.0);
    last.map_or((ROUTES[3].0, ROUTES[3].1), |((p, path, _), _)| (*p, path))
}

/// The gap to the next Poisson arrival at `rate` per second.
fn exponential(rate: f64) -> Duration {
    let u = 1.0 - fastrand::f64(); // (0, 1]
    Duration::from_secs_f64(-u.ln() / rate)
}

async fn send(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    addr: SocketAddr,
    path: &str,
) -> (Outcome, Option<StatusCode>) {
    let req = Request::post(format!("http://{addr}{path}"))
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from_static(b"{\"item\":42}")))
        .expect("a valid request");
    let res = match client.request(req).await {
        Ok(res) => res,
        Err(e) => {
            if std::env::var_os("FLASH_SALE_DEBUG").is_some() {
                eprintln!("request failed: {e:?}");
            }
            return (Outcome::Error, None);
        }
    };
    let status = res.status();
    let hint = res
        .headers()
        .get(header::RETRY_AFTER)
        .and_then(|v| parse_retry_after(v.as_bytes(), std::time::SystemTime::now()));
    if res.into_body().collect().await.is_err() {
        return (Outcome::Error, None);
    }
    let outcome = match (status, hint) {
        (StatusCode::ACCEPTED, _) => Outcome::Accepted,
        (status, _) if status.is_success() => Outcome::Ok,
        (StatusCode::SERVICE_UNAVAILABLE | StatusCode::TOO_MANY_REQUESTS, hint) => match hint {
            Some(d) if d >= Duration::from_secs(1) => Outcome::Shed,
            _ => Outcome::ShedNoHint,
        },
        (status, _) => {
            if std::env::var_os("FLASH_SALE_DEBUG").is_some() {
                eprintln!("unexpected status {status}");
            }
            Outcome::Error
        }
    };
    (outcome, Some(status))
}
