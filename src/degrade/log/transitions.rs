//! The level's log through `tracing`.

use std::time::Duration;

use crate::degrade::LoadLevel;

/// Each change of level, once.
#[derive(Debug)]
pub(crate) struct Transitions;

impl Transitions {
    pub(crate) fn new() -> Self {
        Self
    }

    /// The level moved `from` → `to` after `lasted` at `from`; `because`
    /// is what the sources showed.
    pub(crate) fn on_change(
        &self,
        from: LoadLevel,
        to: LoadLevel,
        because: &'static str,
        lasted: Duration,
    ) {
        let lasted_ms = lasted.as_millis() as u64;
        let (from_level, from) = (from, from.as_str());
        if to < from_level {
            tracing::info!(from, to = to.as_str(), lasted_ms, "load level lowered");
        } else if to == LoadLevel::Overloaded {
            tracing::warn!(
                from,
                to = to.as_str(),
                because,
                lasted_ms,
                "load level raised"
            );
        } else {
            tracing::info!(
                from,
                to = to.as_str(),
                because,
                lasted_ms,
                "load level raised"
            );
        }
    }
}
