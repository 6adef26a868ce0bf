use std::{collections::HashMap, fmt, hash::Hash, marker::PhantomData};

use tower_layer::Layer;
use tower_service::Service;

use super::{Aggregate, AggregateConfig, Merge};
use crate::BoxError;

/// Puts an [`Aggregate`] in front of an inner `Service<HashMap<K, V>>`.
///
/// Every [`layer`](Layer::layer) call starts a new aggregate and worker that
/// owns the wrapped service, as `tower::buffer::BufferLayer` does: apply it
/// once and clone the handle.
pub struct AggregateLayer<K, V> {
    config: AggregateConfig,
    _kv: PhantomData<fn() -> (K, V)>,
}

impl<K, V> AggregateLayer<K, V> {
    /// A layer that aggregates with `config`.
    pub fn new(config: AggregateConfig) -> Self {
        Self {
            config,
            _kv: PhantomData,
        }
    }
}

impl<S, K, V> Layer<S> for AggregateLayer<K, V>
where
    S: Service<HashMap<K, V>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send,
    K: Hash + Eq + Clone + Send + 'static,
    V: Merge + Clone + Send + 'static,
{
    type Service = Aggregate<K, V>;

    fn layer(&self, inner: S) -> Aggregate<K, V> {
        Aggregate::new(inner, self.config)
    }
}

impl<K, V> Clone for AggregateLayer<K, V> {
    fn clone(&self) -> Self {
        Self::new(self.config)
    }
}

impl<K, V> fmt::Debug for AggregateLayer<K, V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AggregateLayer")
            .field("config", &self.config)
            .finish()
    }
}
