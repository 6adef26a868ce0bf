//! What a `SpillLayer` is set to do, and its builder.

use std::{fmt, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{HeaderName, Response, request::Parts};

use crate::{ConfigError, http::RejectBody};

use super::store::Bounds;

/// When deferrable requests are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Served as usual; stored (and answered `202`) only when the stack
    /// below refuses them for capacity: shed, queue full, queue timeout,
    /// expected wait or deadline. Quota refusals (`429`) are not spilled:
    /// a caller over its quota must slow down, not queue more.
    #[default]
    Overflow,
    /// Always stored and answered `202` at once; only replays reach the
    /// handler.
    Always,
}

/// A check run on a deferrable request before it is stored: `Some` is the
/// answer the caller gets instead, and nothing is stored.
pub(crate) type Validate =
    Arc<dyn Fn(&Parts, &Bytes) -> Option<Response<RejectBody>> + Send + Sync>;

/// The settings of a [`SpillLayer`](super::SpillLayer).
#[derive(Clone)]
pub(crate) struct Config {
    pub(crate) mode: Mode,
    pub(crate) prefix: String,
    pub(crate) max_body: usize,
    pub(crate) keep_headers: Vec<HeaderName>,
    pub(crate) bounds: Bounds,
    pub(crate) status_body: usize,
    pub(crate) max_poll_hint: Duration,
    pub(crate) validate: Option<Validate>,
}

impl fmt::Debug for Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Config")
            .field("mode", &self.mode)
            .field("prefix", &self.prefix)
            .field("max_body", &self.max_body)
            .field("keep_headers", &self.keep_headers)
            .field("bounds", &self.bounds)
            .field("status_body", &self.status_body)
            .field("max_poll_hint", &self.max_poll_hint)
            .field("validate", &self.validate.is_some())
            .finish()
    }
}

impl Default for Config {
    fn default() -> Self {
        Self {
            mode: Mode::Overflow,
            prefix: "/jobs".to_owned(),
            max_body: 1024 * 1024,
            keep_headers: vec![
                http::header::CONTENT_TYPE,
                http::header::CONTENT_ENCODING,
                HeaderName::from_static("idempotency-key"),
            ],
            bounds: Bounds::default(),
            status_body: 4096,
            max_poll_hint: Duration::from_secs(60),
            validate: None,
        }
    }
}

impl Config {
    pub(crate) fn check(&self) -> Result<(), ConfigError> {
        let prefix_ok =
            self.prefix.starts_with('/') && self.prefix.len() > 1 && !self.prefix.ends_with('/');
        if !prefix_ok {
            return Err(ConfigError::new(
                "prefix",
                "must start with `/`, not end with one, and not be `/`",
            ));
        }
        if self.max_body == 0 {
            return Err(ConfigError::new("max_body", "must be at least 1 byte"));
        }
        let b = &self.bounds;
        if b.max_jobs == 0 || b.max_bytes == 0 || b.max_age.is_zero() {
            return Err(ConfigError::new("bounds", "every bound must be above zero"));
        }
        if self.max_poll_hint < Duration::from_secs(1) {
            return Err(ConfigError::new("max_poll_hint", "must be at least 1 s"));
        }
        Ok(())
    }
}
