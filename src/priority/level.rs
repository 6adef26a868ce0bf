use std::{fmt, str::FromStr};

/// How much a request is worth when there is not enough capacity for all of
/// them: `Critical > High > Default > Low`.
///
/// Under overload the lowest tiers are refused first. Unknown or missing
/// priorities are [`Priority::Default`].
///
/// ```
/// use tower_spillway::Priority;
///
/// assert!(Priority::Critical > Priority::High);
/// assert_eq!("LOW".parse::<Priority>().unwrap(), Priority::Low);
/// assert_eq!(Priority::High.to_string(), "high");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
#[repr(u8)]
pub enum Priority {
    /// Work that may wait or be dropped first: analytics, prefetches, batch jobs.
    Low = 0,
    /// Ordinary work.
    #[default]
    Default = 1,
    /// Work users are waiting on: page loads, orders.
    High = 2,
    /// Work that must survive overload: payments, health of the business.
    Critical = 3,
}

impl Priority {
    /// Every priority, lowest first; `ALL[p.index()] == p`.
    pub const ALL: [Priority; 4] = [
        Priority::Low,
        Priority::Default,
        Priority::High,
        Priority::Critical,
    ];

    /// A dense index in `0..4`, lowest priority first, for per-priority arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The lower-case name used in headers, logs and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            Priority::Low => "low",
            Priority::Default => "default",
            Priority::High => "high",
            Priority::Critical => "critical",
        }
    }

    /// Parses a header value: a name (any case, surrounding spaces ignored) or a
    /// digit `0`–`3` (`0` is `Low`). Anything else is `None`.
    pub fn from_bytes(bytes: &[u8]) -> Option<Priority> {
        let trimmed = bytes.trim_ascii();
        match trimmed {
            [d @ b'0'..=b'3'] => Some(Priority::ALL[usize::from(d - b'0')]),
            _ => Priority::ALL
                .into_iter()
                .find(|p| p.as_str().as_bytes().eq_ignore_ascii_case(trimmed)),
        }
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error from parsing an unknown priority name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsePriorityError(());

impl fmt::Display for ParsePriorityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("unknown priority: expected critical, high, default or low")
    }
}

impl std::error::Error for ParsePriorityError {}

impl FromStr for Priority {
    type Err = ParsePriorityError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Priority::from_bytes(s.as_bytes()).ok_or(ParsePriorityError(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_is_critical_high_default_low() {
        let mut all = Priority::ALL;
        all.sort_by(|a, b| b.cmp(a));
        assert_eq!(
            all,
            [
                Priority::Critical,
                Priority::High,
                Priority::Default,
                Priority::Low
            ]
        );
        for (i, p) in Priority::ALL.iter().enumerate() {
            assert_eq!(p.index(), i);
        }
    }

    #[test]
    fn parse_is_case_insensitive_and_rejects_unknown() {
        for p in Priority::ALL {
            assert_eq!(p.as_str().parse::<Priority>(), Ok(p));
            assert_eq!(p.as_str().to_uppercase().parse::<Priority>(), Ok(p));
            assert_eq!(p.to_string().parse::<Priority>(), Ok(p));
        }
        assert_eq!(" High ".parse::<Priority>(), Ok(Priority::High));
        assert_eq!("3".parse::<Priority>(), Ok(Priority::Critical));
        for bad in ["", "urgent", "4", "-1", "críticál", "high\0", "hi gh"] {
            assert!(bad.parse::<Priority>().is_err(), "{bad:?}");
        }
        assert_eq!(Priority::from_bytes(&[0xff, 0xfe]), None);
    }

    #[test]
    fn default_is_default() {
        assert_eq!(Priority::default(), Priority::Default);
    }
}
