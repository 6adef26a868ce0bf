use std::fmt;

/// How loaded the service is, as the handlers and jobs that can do less need
/// to know it: `Normal < Elevated < Overloaded`.
///
/// A [`DegradeHandle`](super::DegradeHandle) derives it from the stack's
/// own handles; a [`DegradeLayer`](super::DegradeLayer) stamps it into each
/// request's extensions.
///
/// ```
/// use tower_spillway::degrade::LoadLevel;
///
/// assert!(LoadLevel::Overloaded > LoadLevel::Elevated);
/// assert_eq!(LoadLevel::default(), LoadLevel::Normal);
/// assert_eq!(LoadLevel::Elevated.to_string(), "elevated");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "lowercase"))]
#[repr(u8)]
pub enum LoadLevel {
    /// Capacity to spare: do everything.
    #[default]
    Normal = 0,
    /// Near capacity: skip what is optional (enrichment, prefetches,
    /// recommendations), sample logs, pause background jobs.
    Elevated = 1,
    /// Past capacity, refusing work: answer what can be answered from
    /// memory, defer everything that can wait.
    Overloaded = 2,
}

impl LoadLevel {
    /// Every level, lowest first; `ALL[level.index()] == level`.
    pub const ALL: [LoadLevel; 3] = [
        LoadLevel::Normal,
        LoadLevel::Elevated,
        LoadLevel::Overloaded,
    ];

    /// A dense index in `0..3`, lowest first, for per-level arrays.
    pub const fn index(self) -> usize {
        self as usize
    }

    /// The lower-case name used in headers, logs and JSON.
    pub const fn as_str(self) -> &'static str {
        match self {
            LoadLevel::Normal => "normal",
            LoadLevel::Elevated => "elevated",
            LoadLevel::Overloaded => "overloaded",
        }
    }

    /// The level stored as `index` (anything past the top is the top).
    pub(super) const fn from_index(index: u8) -> Self {
        match index {
            0 => LoadLevel::Normal,
            1 => LoadLevel::Elevated,
            _ => LoadLevel::Overloaded,
        }
    }
}

impl fmt::Display for LoadLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indices_round_trip() {
        for level in LoadLevel::ALL {
            assert_eq!(LoadLevel::ALL[level.index()], level);
            assert_eq!(LoadLevel::from_index(level as u8), level);
        }
        assert_eq!(LoadLevel::from_index(200), LoadLevel::Overloaded);
    }
}
