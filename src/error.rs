//! Error types shared by every layer.

use std::fmt;

/// The error type that generic (non-HTTP) faces of the layers return: the inner
/// service's error, boxed, or an [`Overloaded`](crate::Overloaded).
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A configuration value was out of range.
///
/// Builders return this from `build()` so that a bad setting is found when the
/// service starts, never at request time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    field: &'static str,
    reason: &'static str,
}

impl ConfigError {
    /// A setting named `field` was rejected because of `reason`.
    pub const fn new(field: &'static str, reason: &'static str) -> Self {
        Self { field, reason }
    }

    /// The name of the rejected setting.
    pub fn field(&self) -> &'static str {
        self.field
    }

    /// Why the setting was rejected.
    pub fn reason(&self) -> &'static str {
        self.reason
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid `{}`: {}", self.field, self.reason)
    }
}

impl std::error::Error for ConfigError {}
