use std::sync::Arc;

use http::Method;
use tower_layer::Layer;

use super::{
    Degrade, DegradeHandle, Fallback, LoadLevel,
    fallback::{Kind, Routes},
};
use crate::ConfigError;

/// Stamps the [`LoadLevel`] into each request's extensions and, on the
/// routes given fallbacks, answers from them instead of calling the inner
/// service while the level is high; see the [module docs](super).
///
/// The route table and its last-good responses are created once, by
/// [`new`](Self::new) or [`DegradeLayerBuilder::build`], and shared by every
/// service the layer makes: `layer()` only clones an `Arc`, so one layer on
/// an axum `Router` with many routes keeps one table.
#[derive(Debug, Clone)]
pub struct DegradeLayer {
    pub(super) shared: Arc<Shared>,
}

/// What every service of one layer reads.
#[derive(Debug)]
pub(super) struct Shared {
    pub(super) handle: DegradeHandle,
    pub(super) routes: Routes,
}

impl DegradeLayer {
    /// Stamps the level `handle` reads into each request; no fallbacks.
    pub fn new(handle: DegradeHandle) -> Self {
        Self {
            shared: Arc::new(Shared {
                handle,
                routes: Routes::default(),
            }),
        }
    }

    /// Configures a layer on `handle`'s level: add fallbacks, then
    /// [`build`](DegradeLayerBuilder::build) it.
    pub fn builder(handle: DegradeHandle) -> DegradeLayerBuilder {
        DegradeLayerBuilder {
            handle,
            entries: Vec::new(),
        }
    }

    /// The handle on the level this layer stamps.
    pub fn handle(&self) -> DegradeHandle {
        self.shared.handle.clone()
    }
}

/// The fallbacks of a [`DegradeLayer`], a plain value: add them in any
/// order, then [`build`](Self::build) the layer.
#[derive(Debug, Clone)]
pub struct DegradeLayerBuilder {
    handle: DegradeHandle,
    entries: Vec<(Method, String, LoadLevel, Fallback)>,
}

impl DegradeLayerBuilder {
    /// While the level is `from` or above, answers `method` requests to
    /// exactly `path` (the query string aside) with `fallback` instead of
    /// calling the inner service. A route may have one fallback from
    /// `Elevated` and another from `Overloaded`; at each level the one with
    /// the highest `from` at or below it answers.
    #[must_use]
    pub fn fallback(
        mut self,
        method: Method,
        path: impl Into<String>,
        from: LoadLevel,
        fallback: Fallback,
    ) -> Self {
        self.entries.push((method, path.into(), from, fallback));
        self
    }

    /// Checks the fallbacks and creates the layer's shared state: a path
    /// must start with `/`, a fallback must start at `Elevated` or
    /// `Overloaded` (one from `Normal` would answer every request), a route
    /// may have one fallback per level, and a last-good fallback must keep
    /// at least one byte.
    pub fn build(mut self) -> Result<DegradeLayer, ConfigError> {
        for (i, (method, path, from, fallback)) in self.entries.iter().enumerate() {
            if !path.starts_with('/') {
                return Err(ConfigError::new("path", "must start with `/`"));
            }
            if *from == LoadLevel::Normal {
                return Err(ConfigError::new(
                    "from",
                    "a fallback starts at `Elevated` or `Overloaded`",
                ));
            }
            if matches!(fallback.kind, Kind::LastGood { max_body: 0 }) {
                return Err(ConfigError::new("max_body", "must be at least 1 byte"));
            }
            let twice = self.entries[..i]
                .iter()
                .any(|(m, p, f, _)| m == method && p == path && f == from);
            if twice {
                return Err(ConfigError::new(
                    "fallback",
                    "set twice for one route and level",
                ));
            }
        }
        self.entries.sort_by_key(|(_, _, from, _)| *from);
        Ok(DegradeLayer {
            shared: Arc::new(Shared {
                handle: self.handle,
                routes: Routes::new(self.entries),
            }),
        })
    }
}

impl<S> Layer<S> for DegradeLayer {
    type Service = Degrade<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Degrade {
            inner,
            shared: Arc::clone(&self.shared),
        }
    }
}
