//! [`MetricsReporter`]: the layers' figures, read from their handles and
//! published through the `metrics` facade.

use std::{fmt, sync::Arc, time::Duration};

use super::{degrade::DegradeMetrics, limit::LimitMetrics, shed::ShedMetrics, task::Publishing};
use crate::{degrade::DegradeHandle, limit::LimitHandle, shed::ShedHandle};

/// One layer's registered metrics, published from its handle's snapshot.
pub(super) trait Publish: Send + Sync {
    fn publish(&self);
}

/// Publishes the figures of a stack's layers through the `metrics` facade,
/// read from their handles: the counters the handles keep as counters, the
/// levels as gauges. Requests pay nothing for it; the figures are as fresh
/// as the last [`publish`](Self::publish).
///
/// Each layer is added with a name, its `layer` label. The metrics are
/// registered when the layer is added, with the recorder installed then (the
/// global one, or one set with `metrics::with_local_recorder`), so install
/// the recorder first. See the [module docs](super) for every name.
///
/// ```
/// use std::time::Duration;
/// use tower_spillway::{
///     limit::{AdaptiveLimitLayer, Gradient},
///     metrics::MetricsReporter,
///     shed::{Adaptive, PriorityShedLayer},
/// };
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // metrics_exporter_prometheus::PrometheusBuilder::new().install_recorder()?;
/// let limit = AdaptiveLimitLayer::builder(Gradient::default()).name("db").build();
/// let shed = PriorityShedLayer::builder(Adaptive::default()).signal(limit.handle()).build();
///
/// let reporter = MetricsReporter::new()
///     .limit(&limit.handle())
///     .shed("edge", &shed.handle());
/// let _publishing = reporter.spawn(Duration::from_secs(1)); // stops when dropped
/// reporter.publish(); // also right before rendering a scrape, for fresh figures
/// # }
/// ```
#[derive(Clone, Default)]
pub struct MetricsReporter {
    sources: Vec<Arc<dyn Publish>>,
    /// (module, name) of each layer added, for `Debug`.
    layers: Vec<(&'static str, String)>,
}

impl fmt::Debug for MetricsReporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsReporter")
            .field("layers", &self.layers)
            .finish()
    }
}

impl MetricsReporter {
    /// A reporter of no layer yet.
    pub fn new() -> Self {
        Self::default()
    }

    fn add(mut self, module: &'static str, layer: &str, source: Arc<dyn Publish>) -> Self {
        self.sources.push(source);
        self.layers.push((module, layer.to_owned()));
        self
    }

    /// Adds an [`AdaptiveLimitLayer`](crate::limit::AdaptiveLimitLayer)'s
    /// figures, labelled with the limiter's own
    /// [`name`](crate::limit::AdaptiveLimitBuilder::name): the label its
    /// queue-wait and rtt histograms carry.
    #[must_use]
    pub fn limit(self, handle: &LimitHandle) -> Self {
        let source = Arc::new(LimitMetrics::new(handle));
        self.add("limit", handle.name(), source)
    }

    /// Adds a [`PriorityShedLayer`](crate::shed::PriorityShedLayer)'s
    /// figures, labelled `layer`.
    #[must_use]
    pub fn shed(self, layer: &str, handle: &ShedHandle) -> Self {
        let source = Arc::new(ShedMetrics::new(layer, handle));
        self.add("shed", layer, source)
    }

    /// Adds a load level's figures, labelled `layer`.
    #[must_use]
    pub fn degrade(self, layer: &str, handle: &DegradeHandle) -> Self {
        let source = Arc::new(DegradeMetrics::new(layer, handle));
        self.add("degrade", layer, source)
    }

    /// Adds a [`RateLimitLayer`](crate::rate::RateLimitLayer)'s (or a
    /// [`PaceLayer`](crate::rate::PaceLayer)'s) figures, labelled `layer`.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[must_use]
    pub fn rate<K>(self, layer: &str, handle: &crate::rate::RateLimitHandle<K>) -> Self
    where
        K: std::hash::Hash + Eq + Clone + Send + Sync + 'static,
    {
        let source = Arc::new(super::rate::RateMetrics::new(layer, handle));
        self.add("rate", layer, source)
    }

    /// Adds an [`HonorRetryAfterLayer`](crate::retry_after::HonorRetryAfterLayer)'s
    /// retry and cooldown figures, labelled `layer`.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    #[must_use]
    pub fn honor_retry_after(
        self,
        layer: &str,
        handle: &crate::retry_after::HonorRetryAfterHandle,
    ) -> Self {
        let source = Arc::new(super::client::ClientMetrics::new(layer, handle));
        self.add("client", layer, source)
    }

    /// Reads every handle and sets the metrics: a snapshot of each layer,
    /// no request waits for it.
    pub fn publish(&self) {
        for source in &self.sources {
            source.publish();
        }
    }

    /// Publishes every `period` (at least 1 ms) on a tokio task, until the
    /// returned [`Publishing`] is dropped.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime, as `tokio::spawn` does: call it at start-up,
    /// within the runtime that serves the stack.
    #[must_use = "dropping the guard stops publishing"]
    pub fn spawn(&self, period: Duration) -> Publishing {
        Publishing::spawn(self.clone(), period)
    }
}
