//! The retry budget.

use std::{sync::Mutex, time::Duration};

use tokio::time::Instant;

use crate::ConfigError;

/// How many retries a client may send: a share of its requests plus a floor,
/// over a sliding window (Finagle's and linkerd's retry budget).
///
/// A retry is allowed while, over the last `ttl`,
/// `retries < ratio × requests + min_per_sec × ttl`. The default — 20 % of
/// requests plus 10 per second over 10 s — lets a healthy client retry its
/// occasional failure, and caps a client whose every call fails at about
/// 1.2× its own traffic (plus the floor) instead of multiplying it by the
/// attempt count.
///
/// ```
/// use std::time::Duration;
/// use tower_spillway::retry_after::RetryBudget;
///
/// let budget = RetryBudget::new(0.1, 5, Duration::from_secs(30))?;
/// # let _ = budget;
/// # Ok::<(), tower_spillway::ConfigError>(())
/// ```
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    min_per_sec: u32,
    ttl: Duration,
    slot: Duration,
    ring: Mutex<[Slot; SLOTS]>,
    origin: Instant,
}

const SLOTS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    epoch: u64,
    deposits: u64,
    withdrawals: u64,
}

impl Default for RetryBudget {
    fn default() -> Self {
        Self::new(0.2, 10, Duration::from_secs(10)).unwrap_or_else(|_| unreachable!())
    }
}

impl RetryBudget {
    /// Retries up to `ratio` (within `0.0..=1000.0`) of requests plus
    /// `min_per_sec` per second, over a window of `ttl` (1 s to 60 s).
    pub fn new(ratio: f64, min_per_sec: u32, ttl: Duration) -> Result<Self, ConfigError> {
        if !(0.0..=1000.0).contains(&ratio) {
            return Err(ConfigError::new("ratio", "must be within 0.0..=1000.0"));
        }
        if !(Duration::from_secs(1)..=Duration::from_secs(60)).contains(&ttl) {
            return Err(ConfigError::new("ttl", "must be within 1 s..=60 s"));
        }
        Ok(Self {
            ratio,
            min_per_sec,
            ttl,
            slot: ttl / SLOTS as u32,
            ring: Mutex::new([Slot::default(); SLOTS]),
            origin: Instant::now(),
        })
    }

    fn with_slot<T>(&self, f: impl FnOnce(&mut [Slot; SLOTS], u64) -> T) -> T {
        let epoch = (self.origin.elapsed().as_nanos() / self.slot.as_nanos().max(1)) as u64 + 1;
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        let slot = &mut ring[(epoch % SLOTS as u64) as usize];
        if slot.epoch != epoch {
            *slot = Slot {
                epoch,
                ..Slot::default()
            };
        }
        f(&mut ring, epoch)
    }

    /// Records an original request.
    pub fn deposit(&self) {
        self.with_slot(|ring, epoch| ring[(epoch % SLOTS as u64) as usize].deposits += 1);
    }

    /// Takes one retry from the budget, if it has one.
    pub fn withdraw(&self) -> bool {
        self.with_slot(|ring, epoch| {
            let live = ring.iter().filter(|s| s.epoch + (SLOTS as u64) > epoch);
            let (deposits, withdrawals) = live.fold((0u64, 0u64), |(d, w), s| {
                (d + s.deposits, w + s.withdrawals)
            });
            let floor = f64::from(self.min_per_sec) * self.ttl.as_secs_f64();
            let allowed = floor + self.ratio * deposits as f64;
            if (withdrawals as f64) + 1.0 <= allowed {
                ring[(epoch % SLOTS as u64) as usize].withdrawals += 1;
                true
            } else {
                false
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn budget_allows_ratio_plus_floor() {
        let b = RetryBudget::new(0.2, 1, Duration::from_secs(10)).unwrap();
        for _ in 0..100 {
            b.deposit();
        }
        let granted = (0..100).filter(|_| b.withdraw()).count();
        // 20 % of 100 plus 1/s over 10 s.
        assert_eq!(granted, 30);
        // The window slides: after it, old deposits and withdrawals are gone.
        tokio::time::advance(Duration::from_secs(11)).await;
        let granted = (0..100).filter(|_| b.withdraw()).count();
        assert_eq!(granted, 10);
    }

    #[test]
    fn budget_config_is_validated() {
        assert!(RetryBudget::new(-0.1, 1, Duration::from_secs(10)).is_err());
        assert!(RetryBudget::new(f64::NAN, 1, Duration::from_secs(10)).is_err());
        assert!(RetryBudget::new(0.2, 1, Duration::from_millis(10)).is_err());
    }
}
