//! [`PerPriority`]: one count per priority, as the handles report them.

use super::Priority;

/// Counts by priority: requests admitted or shed, waiters queued.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[non_exhaustive]
pub struct PerPriority {
    /// `Low` requests.
    pub low: u64,
    /// `Default` requests.
    pub default: u64,
    /// `High` requests.
    pub high: u64,
    /// `Critical` requests.
    pub critical: u64,
}

impl PerPriority {
    /// The counts `count` gives each priority.
    pub(crate) fn from_fn(count: impl Fn(Priority) -> u64) -> Self {
        Self {
            low: count(Priority::Low),
            default: count(Priority::Default),
            high: count(Priority::High),
            critical: count(Priority::Critical),
        }
    }

    /// The count for `priority`.
    pub const fn get(&self, priority: Priority) -> u64 {
        match priority {
            Priority::Low => self.low,
            Priority::Default => self.default,
            Priority::High => self.high,
            Priority::Critical => self.critical,
        }
    }

    /// The sum over every priority.
    pub const fn total(&self) -> u64 {
        self.low + self.default + self.high + self.critical
    }
}
