//! `SpillLayer` and its builder: configure, then build once.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderName, Response, request::Parts};
use tower_layer::Layer;

use crate::{ConfigError, http::RejectBody};

use super::{
    config::{Config, Mode},
    deferrable::DeferrableRoutes,
    handle::{Shared, SpillHandle},
    service::Spill,
    store::{Bounds, SpillStore},
};

/// Stores the deferrable requests the stack below cannot take now, answers
/// them `202 Accepted`, and serves their status; see the [module
/// docs](super).
///
/// Built once by [`SpillLayer::builder`]; `layer()` only shares what the
/// build created, so every service of one layer spills into one store.
#[derive(Debug, Clone)]
pub struct SpillLayer<D = DeferrableRoutes> {
    shared: Arc<Shared>,
    deferrable: D,
}

impl SpillLayer {
    /// A builder spilling into `store`. Nothing is deferrable until
    /// [`deferrable`](SpillLayerBuilder::deferrable) says what is.
    pub fn builder<St: SpillStore>(store: St) -> SpillLayerBuilder<DeferrableRoutes> {
        SpillLayerBuilder {
            store: Arc::new(store),
            config: Config::default(),
            deferrable: DeferrableRoutes::new(),
        }
    }
}

impl<D> SpillLayer<D> {
    /// The handle: figures, the store, and the drain.
    pub fn handle(&self) -> SpillHandle {
        SpillHandle {
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S, D: Clone> Layer<S> for SpillLayer<D> {
    type Service = Spill<S, D>;

    fn layer(&self, inner: S) -> Self::Service {
        Spill::new(inner, Arc::clone(&self.shared), self.deferrable.clone())
    }
}

/// The settings of a [`SpillLayer`]; [`build`](Self::build) checks them all.
pub struct SpillLayerBuilder<D> {
    store: Arc<dyn SpillStore>,
    config: Config,
    deferrable: D,
}

impl<D: std::fmt::Debug> std::fmt::Debug for SpillLayerBuilder<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SpillLayerBuilder")
            .field("config", &self.config)
            .field("deferrable", &self.deferrable)
            .finish()
    }
}

impl<D> SpillLayerBuilder<D> {
    /// Which requests may be stored: a [`DeferrableRoutes`] or a closure
    /// `Fn(&Request<B>) -> bool` (see [`Deferrable`](super::Deferrable)).
    pub fn deferrable<D2>(self, deferrable: D2) -> SpillLayerBuilder<D2> {
        SpillLayerBuilder {
            store: self.store,
            config: self.config,
            deferrable,
        }
    }

    /// When deferrable requests are stored (default [`Mode::Overflow`]).
    #[must_use]
    pub fn mode(mut self, mode: Mode) -> Self {
        self.config.mode = mode;
        self
    }

    /// The path under which job status is served, `GET <prefix>/<id>`
    /// (default `/jobs`).
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.config.prefix = prefix.to_owned();
        self
    }

    /// The largest body a deferrable request may have (default 1 MiB);
    /// a larger one is refused with `413` before anything is stored.
    #[must_use]
    pub fn max_body(mut self, bytes: usize) -> Self {
        self.config.max_body = bytes;
        self
    }

    /// Keeps header `name` in stored requests, beside the defaults
    /// (`content-type`, `content-encoding`, `idempotency-key`). Other
    /// headers (credentials among them) are not stored.
    #[must_use]
    pub fn keep_header(mut self, name: HeaderName) -> Self {
        if !self.config.keep_headers.contains(&name) {
            self.config.keep_headers.push(name);
        }
        self
    }

    /// The store's bounds (default 100,000 jobs, 256 MiB, one hour).
    #[must_use]
    pub fn bounds(mut self, bounds: Bounds) -> Self {
        self.config.bounds = bounds;
        self
    }

    /// How many bytes of a replay's answer the status keeps (default 4 KiB).
    #[must_use]
    pub fn status_body(mut self, bytes: usize) -> Self {
        self.config.status_body = bytes;
        self
    }

    /// The longest `Retry-After` a `202` suggests for polling (default 60 s).
    #[must_use]
    pub fn max_poll_hint(mut self, max: Duration) -> Self {
        self.config.max_poll_hint = max;
        self
    }

    /// Checks a deferrable request (its head and whole body) before it is
    /// served or stored; a `Some(response)` is sent to the caller instead
    /// and nothing is stored.
    /// Garbage refused here never reaches the queue.
    #[must_use]
    pub fn validate<F>(mut self, check: F) -> Self
    where
        F: Fn(&Parts, &Bytes) -> Option<Response<RejectBody>> + Send + Sync + 'static,
    {
        self.config.validate = Some(Arc::new(check));
        self
    }

    /// Checks every setting and creates the layer's shared state.
    pub fn build(self) -> Result<SpillLayer<D>, ConfigError> {
        self.config.check()?;
        Ok(SpillLayer {
            shared: Arc::new(Shared::new(self.store, self.config)),
            deferrable: self.deferrable,
        })
    }
}
