use std::{fmt, marker::PhantomData};

use tower_layer::Layer;
use tower_service::Service;

use super::{Batch, BatchConfig};
use crate::{AsError, BoxError};

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
pub struct BatchLayer<T, R, Rj = AsError> {
    config: BatchConfig<T>,
    reject: Rj,
    _r: PhantomData<fn() -> R>,
}

impl<T, R> BatchLayer<T, R> {
    /// A layer that batches with `config`; refusals (a full queue with
    /// [`reject_when_full`](super::BatchConfigBuilder::reject_when_full)) are
    /// [`Overloaded`](crate::Overloaded) errors.
    pub fn new(config: BatchConfig<T>) -> Self {
        Self {
            config,
            reject: AsError,
            _r: PhantomData,
        }
    }
}

impl<T, R, Rj> BatchLayer<T, R, Rj> {
    /// The HTTP face, for items that are `http::Request`s: refusals are `503`
    /// responses with `Retry-After`.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn http(self) -> BatchLayer<T, R, crate::http::AsResponse> {
        self.with_reject(crate::http::AsResponse::default())
    }

    /// The HTTP face with refusals built by `make`.
    #[cfg(feature = "http")]
    #[cfg_attr(docsrs, doc(cfg(feature = "http")))]
    pub fn rejection<M: crate::http::MakeRejection>(
        self,
        make: M,
    ) -> BatchLayer<T, R, crate::http::AsResponse<M>> {
        self.with_reject(crate::http::AsResponse::new(make))
    }

    #[cfg(feature = "http")]
    fn with_reject<Rj2>(self, reject: Rj2) -> BatchLayer<T, R, Rj2> {
        BatchLayer {
            config: self.config,
            reject,
            _r: PhantomData,
        }
    }
}

impl<S, T, R, E, Rj> Layer<S> for BatchLayer<T, R, Rj>
where
    S: Service<Vec<T>, Response = Vec<Result<R, E>>> + Send + 'static,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    E: Into<BoxError>,
    T: Send + 'static,
    R: Send + 'static,
    Rj: Clone,
{
    type Service = Batch<T, R, Rj>;

    fn layer(&self, inner: S) -> Batch<T, R, Rj> {
        Batch::new(inner, self.config.clone()).with_reject(self.reject.clone())
    }
}

impl<T, R, Rj: Clone> Clone for BatchLayer<T, R, Rj> {
    fn clone(&self) -> Self {
        Self {
            config: self.config.clone(),
            reject: self.reject.clone(),
            _r: PhantomData,
        }
    }
}

impl<T, R, Rj> fmt::Debug for BatchLayer<T, R, Rj> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BatchLayer")
            .field("config", &self.config)
            .finish()
    }
}
