//! `GET /metrics`: the layers' figures in the Prometheus text format (the
//! crate's `metrics` feature and `metrics-exporter-prometheus`).
//!
//! Shared by `examples/axum_stack.rs` and `tests/metrics.rs`. The recorder is
//! process-wide: install it once, in `main`, before building the stack.

use axum::{Router, extract::State, http::header, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};
use tower_spillway::metrics::MetricsReporter;

use crate::stack::Handles;

/// The Prometheus text format's content type.
pub const TEXT_FORMAT: &str = "text/plain; version=0.0.4";

/// Installs the process's Prometheus recorder; durations (`*_seconds`) get
/// histogram buckets from 1 ms to 2.5 s, so they can be summed across
/// instances. Call it before `stack::app`: the limiter registers its
/// histograms when it is built.
pub fn install_prometheus() -> Result<PrometheusHandle, BuildError> {
    const SECONDS: [f64; 11] = [
        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    ];
    PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &SECONDS)?
        .install_recorder()
}

/// `GET /metrics`, to merge into the app outside its layers (and
/// `stack::operational` lets it bypass the shedder wherever it is merged):
/// each scrape reads the handles first, so the figures are those of the
/// moment of the scrape.
pub fn metrics_routes(handles: &Handles, prometheus: PrometheusHandle) -> Router {
    let reporter = MetricsReporter::new()
        .limit(&handles.limit)
        .shed("edge", &handles.shed)
        .degrade("load", &handles.level);
    Router::new()
        .route("/metrics", get(scrape))
        .with_state((reporter, prometheus))
}

async fn scrape(
    State((reporter, prometheus)): State<(MetricsReporter, PrometheusHandle)>,
) -> impl IntoResponse {
    reporter.publish();
    ([(header::CONTENT_TYPE, TEXT_FORMAT)], prometheus.render())
}
