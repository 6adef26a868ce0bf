use std::{fmt, marker::PhantomData};

use tower_layer::Layer;
use tower_service::Service;

use super::{Batch, BatchConfig};
use crate::BoxError;

/// Wraps an inner `Service<Vec<T>>` in a [`Batch`].
///
/// Like `tower::buffer::BufferLayer`, every [`layer`](Layer::layer) call
/// starts a new worker that owns the service it wraps: apply it once, to the
/// one service that writes, and clone the resulting handle.
///
/// ```
/// use std::convert::Infallible;
/// use tower::{ServiceBuilder, ServiceExt, service_fn};
/// use tower_spillway::batch::{BatchConfig, BatchLayer};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let lengths = ServiceBuilder::new()
///     .layer(BatchLayer::new(BatchConfig::builder().max_items(64).build().unwrap()))
///     .service(service_fn(|words: Vec<&'static str>| async move {
///         Ok::<_, Infallible>(words.iter().map(|w| Ok::<_, Infallible>(w.len())).collect::<Vec<_>>())
///     }));
/// assert_eq!(lengths.oneshot("hello").await.unwrap(), 5);
/// # }
/// ```
pub struct BatchLayer<T, R> {
    config: BatchConfig<T>,
    _r: PhantomData<fn() -> R>,
}

impl<T, R> BatchLayer<T, R> {
    /// A layer that batches with `config`.
    pub fn new(config: BatchConfig<T>) -> Self {
        Self {
            config,
            _r: PhantomData,
        }
    }
}

impl<S, T, R, E> Layer<S> for BatchLayer<T, R>
where
    S: Service<Vec<T>, Response = Vec<Result<R, E>>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    E: Into<BoxError>,
    T: Send + 'static,
    R: Send + 'static,
{
    type Service = Batch<T, R>;

    fn layer(&self, inner: S) -> Batch<T, R> {
        Batch::new(inner, self.config.clone())
    }
}

impl<T, R> Clone for BatchLayer<T, R> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            _r: PhantomData,
        }
    }
}

impl<T, R> fmt::Debug for BatchLayer<T, R> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchLayer")
            .field("config", &self.config)
            .finish()
    }
}
