//! `GET /metrics` of `examples/axum_stack`, served on loopback as the
//! example serves it (the process's Prometheus recorder, the stack, the
//! route), scraped over HTTP/1.1 after a small overload: every name of the
//! crate's table for the stack's layers is there, with its labels, and the
//! counts that must have moved have.

mod support;

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::Duration,
};

use http::{Method, Request, StatusCode, header};
use http_body_util::Empty;
use support::{HttpClient, h1_client};

#[path = "../examples/flash_sale/backend.rs"]
#[allow(dead_code)]
mod backend;

#[path = "../examples/axum_stack/stack.rs"]
#[allow(dead_code)]
mod stack;

#[path = "../examples/axum_stack/metrics.rs"]
mod metrics_route;

/// The names the crate's table lists for a module (`limit`, `shed`, ...),
/// with their type.
fn table(module: &str) -> Vec<(String, String)> {
    let prefix = format!("//! | `spillway_{module}_");
    include_str!("../src/metrics/mod.rs")
        .lines()
        .filter(|line| line.starts_with(&prefix))
        .map(|line| {
            let mut cells = line["//! | ".len()..].split('|').map(str::trim);
            let name = cells.next().unwrap().trim_matches('`').to_owned();
            (name, cells.next().unwrap().to_owned())
        })
        .collect()
}

/// The value of the sample `name` whose labels include every one of
/// `labels`; the first such sample.
fn sample(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?;
        let (labelset, value) = match rest.strip_prefix('{') {
            Some(rest) => rest.split_once("} ")?,
            None => ("", rest.strip_prefix(' ')?),
        };
        let all = labels
            .iter()
            .all(|(k, v)| labelset.split(',').any(|l| l == format!("{k}=\"{v}\"")));
        all.then(|| value.trim().parse().ok()).flatten()
    })
}

async fn post(client: &HttpClient, addr: std::net::SocketAddr, path: &str) -> StatusCode {
    let req = Request::builder()
        .method(Method::POST)
        .uri(format!("http://{addr}{path}"))
        .body(Empty::new())
        .unwrap();
    support::send(client, req).await.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_serves_the_tables_names_with_the_stacks_figures() {
    // As `main` does: the recorder first, then the stack, then the route.
    let prometheus = metrics_route::install_prometheus().unwrap();
    let config = stack::Config {
        capacity: 2,
        service: Duration::from_millis(40),
        trust_priority_header: false,
    };
    let (app, handles) = stack::app(&config);
    let addr =
        support::serve_axum(app.merge(metrics_route::metrics_routes(&handles, prometheus))).await;
    let client = h1_client();

    // Calm first, so the limiter has samples; then 24 callers of Low and
    // 6 of Critical on a database of two slots, for a second.
    for path in ["/payments", "/analytics"] {
        for _ in 0..3 {
            assert_eq!(post(&client, addr, path).await, StatusCode::OK);
        }
    }
    let stop = Arc::new(AtomicBool::new(false));
    let refused = Arc::new(AtomicU64::new(0));
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let (client, stop, refused) = (client.clone(), stop.clone(), refused.clone());
            let path = if i % 5 == 0 {
                "/payments"
            } else {
                "/analytics"
            };
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match post(&client, addr, path).await {
                        StatusCode::OK => {}
                        StatusCode::SERVICE_UNAVAILABLE => {
                            refused.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                        other => panic!("{path}: {other}"),
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_secs(1)).await;

    // Scraped while loaded: the level is up and requests wait.
    let req = Request::get(format!("http://{addr}/metrics"))
        .body(Empty::new())
        .unwrap();
    let (status, headers, body) = support::send(&client, req).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        headers[header::CONTENT_TYPE],
        metrics_route::TEXT_FORMAT,
        "the Prometheus text format"
    );
    let text = std::str::from_utf8(&body).unwrap();
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "the overload was refused"
    );

    // Every name of the table for the stack's layers, each with its type and
    // help line; histograms as Prometheus histograms.
    for module in ["limit", "shed", "degrade"] {
        let names = table(module);
        assert!(names.len() >= 3, "{module}: the table lists its names");
        for (name, kind) in names {
            assert!(
                text.contains(&format!("# TYPE {name} {kind}\n")),
                "{name} is a {kind}:\n{text}"
            );
            assert!(text.contains(&format!("# HELP {name} ")), "{name} has help");
        }
    }

    let db = [("layer", "db")];
    let low = [("layer", "db"), ("priority", "low")];
    let critical = [("layer", "db"), ("priority", "critical")];
    let edge_low = [("layer", "edge"), ("priority", "low")];
    let value = |name: &str, labels: &[(&str, &str)]| {
        sample(text, name, labels).unwrap_or_else(|| panic!("no {name} {labels:?}:\n{text}"))
    };
    assert!(value("spillway_limit_concurrency_limit", &db) >= 1.0);
    assert!(value("spillway_limit_admitted_total", &critical) >= 3.0);
    assert!(value("spillway_limit_admitted_total", &low) >= 1.0);
    assert!(value("spillway_limit_samples_total", &db) >= 5.0);
    assert!(value("spillway_limit_rtt_seconds_count", &db) >= 5.0);
    let rtt = value("spillway_limit_rtt_seconds_sum", &db)
        / value("spillway_limit_rtt_seconds_count", &db);
    assert!(rtt >= 0.03, "the writes take 40 ms: mean rtt {rtt}");
    assert!(
        sample(
            text,
            "spillway_limit_rtt_seconds_bucket",
            &[("layer", "db"), ("le", "0.1")]
        )
        .is_some(),
        "rtt buckets"
    );
    assert!(value("spillway_shed_admitted_total", &edge_low) >= 1.0);
    assert!(value("spillway_shed_bypassed_total", &[("layer", "edge")]) >= 0.0);
    // Refused somewhere: by the shedder, or by the limiter at its door.
    let shed: f64 = ["low", "default", "high", "critical"]
        .iter()
        .map(|p| {
            sample(
                text,
                "spillway_shed_rejected_total",
                &[("layer", "edge"), ("priority", p)],
            )
            .unwrap_or(0.0)
        })
        .sum();
    let limited: f64 = ["queue_full", "queue_timeout", "expected_wait", "deadline"]
        .iter()
        .map(|r| {
            sample(
                text,
                "spillway_limit_rejected_total",
                &[("layer", "db"), ("reason", r)],
            )
            .unwrap_or(0.0)
        })
        .sum();
    assert!(
        shed + limited >= 1.0,
        "refusals counted: shed {shed}, limit {limited}"
    );
    assert!(value("spillway_shed_admission_level", &[("layer", "edge")]) <= 512.0);
    let level = value("spillway_degrade_load_level", &[("layer", "load")]);
    assert!(level >= 1.0, "loaded: level {level}");
    assert!(value("spillway_degrade_transitions_total", &[("layer", "load")]) >= 1.0);
    let queued: f64 = ["low", "default", "high", "critical"]
        .iter()
        .map(|p| {
            sample(
                text,
                "spillway_limit_queued_total",
                &[("layer", "db"), ("priority", p)],
            )
            .unwrap_or(0.0)
        })
        .sum();
    assert!(queued >= 1.0, "requests waited");
    assert!(value("spillway_limit_queue_wait_seconds_count", &critical) >= 0.0);
}
