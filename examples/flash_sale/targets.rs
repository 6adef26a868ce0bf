//! The traffic shapes of the sweep, and what the stack must achieve on each.
//!
//! A shape is a traffic mix (each tier's share), a spike (a multiple of the
//! database's capacity), a database (slots × write time) and the clients'
//! protocol. On every shape, during the spike:
//!
//! - Critical: ≥ 99.9 % succeed with p99 ≤ 5 × the write time while its
//!   demand is ≤ 90 % of capacity; when Critical alone exceeds capacity, its
//!   successes are ≥ 95 % of capacity;
//! - goodput ≥ 95 % of capacity;
//! - each lower tier gets ≥ 90 % of what is left after the tiers above it
//!   (checked where that is at least 5 % of capacity, below tiers that were
//!   themselves served);
//! - refusals answered with p99 ≤ 5 ms, every one with a valid `Retry-After`;
//! - the concurrency limit's mean over the second half of the spike within
//!   ±25 % of the slot count, and its maximum from the spike on never above
//!   2× it;
//!
//! and, in the 5 s after the spike, ≥ 99 % of each tier's requests succeed.

use std::time::Duration;

use serde_json::{Value, json};
use tower_spillway::Priority;

use crate::{
    load::{Mix, Outcome, Protocol, ROUTES},
    report::Run,
};

/// After the spike, the window whose requests must nearly all succeed.
pub const AFTER: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Critical, High, Default, Low shares (any scale).
    pub mix: Mix,
    /// The spike's rate as a multiple of the database's capacity.
    pub spike: f64,
    pub slots: usize,
    pub write_ms: u64,
    pub protocol: Protocol,
}

impl Shape {
    pub fn capacity(&self) -> f64 {
        self.slots as f64 * 1000.0 / self.write_ms as f64
    }

    /// Critical's demand during the spike, as a multiple of capacity.
    pub fn critical_demand(&self) -> f64 {
        self.spike * self.mix[0] / self.mix.iter().sum::<f64>()
    }

    pub fn label(&self) -> String {
        let total: f64 = self.mix.iter().sum();
        let mix: Vec<String> = self
            .mix
            .iter()
            .map(|s| format!("{:.0}", 100.0 * s / total))
            .collect();
        format!(
            "{} {}x {}x{}ms {}",
            mix.join("/"),
            self.spike,
            self.slots,
            self.write_ms,
            self.protocol.as_str()
        )
    }
}

/// Parses `--mix 5,15,30,50` (Critical, High, Default, Low).
pub fn parse_mix(s: &str) -> Result<Mix, String> {
    let parts: Vec<f64> = s
        .split(',')
        .map(|p| {
            p.trim()
                .parse::<f64>()
                .map_err(|e| format!("--mix {p:?}: {e}"))
        })
        .collect::<Result<_, _>>()?;
    let mix: Mix = parts
        .try_into()
        .map_err(|_| "--mix needs four shares: critical,high,default,low".to_string())?;
    if mix.iter().any(|s| !s.is_finite() || *s < 0.0) || mix.iter().sum::<f64>() <= 0.0 {
        return Err("--mix shares must be non-negative and not all zero".into());
    }
    Ok(mix)
}

/// What one run of the crate's stack achieved on a shape.
#[derive(Debug, Clone)]
pub struct Figures {
    pub shape: Shape,
    /// Critical's success share during the spike, and its p99 in write times.
    pub critical_ok: f64,
    pub critical_p99_writes: f64,
    /// Each tier's success share during the spike, Critical first.
    pub tier_ok: [f64; 4],
    /// Each tier's requests sent during the spike, Critical first.
    pub tier_offered: [u64; 4],
    /// Critical's successes per second during the spike, of capacity.
    pub critical_of_capacity: f64,
    pub goodput: f64,
    /// High, Default, Low: successes of what was left for them; `None` where
    /// less than 5 % of capacity was left.
    pub of_best: [Option<f64>; 3],
    pub refusal_p99_ms: f64,
    pub refusals: u64,
    pub refusals_without_hint: u64,
    pub limit_mean_of_slots: f64,
    pub limit_max_of_slots: f64,
    /// The worst tier's success share in the 5 s after the spike.
    pub after_worst: f64,
    /// Every tier's together.
    pub after_all: f64,
    /// How long after the spike requests were still refused: from its end
    /// to the last refused request sent in the 5 s after it.
    pub shed_after_ms: f64,
    pub timeouts: u64,
    pub errors: u64,
}

impl Figures {
    pub fn of(shape: Shape, run: &Run) -> Self {
        let (from, to) = run.spike;
        let secs = (to - from).as_secs_f64();
        let during = |p: Priority| run.spike_stats(Some(p));
        let critical = during(Priority::Critical);
        let capacity = run.capacity_rps * secs;

        // What is left for a tier is what the tiers above did not need.
        // Below a tier that was itself refused, what is "left" is only the
        // capacity lost (that is goodput's target), not a share to judge.
        let mut of_best = [None; 3];
        let mut above = critical.ok as f64;
        let mut above_served = critical.ok_frac() >= 0.9;
        for (i, (p, _, _)) in ROUTES.iter().enumerate().skip(1) {
            let s = during(*p);
            let best = (capacity - above).max(0.0).min(s.offered as f64);
            if above_served && best >= 0.05 * capacity {
                of_best[i - 1] = Some(s.ok as f64 / best);
            }
            above += s.ok as f64;
            above_served = above_served && s.ok_frac() >= 0.9;
        }

        let mut refusal_ms: Vec<f64> = run
            .samples
            .iter()
            .filter(|s| matches!(s.outcome, Outcome::Shed | Outcome::ShedNoHint))
            .map(|s| s.latency().as_secs_f64() * 1e3)
            .collect();
        refusal_ms.sort_by(f64::total_cmp);
        let refusals_without_hint = run
            .samples
            .iter()
            .filter(|s| s.outcome == Outcome::ShedNoHint)
            .count() as u64;

        let half = from + (to - from) / 2;
        let steady: Vec<f64> = run
            .limit
            .iter()
            .filter(|(t, _)| *t >= half.as_secs_f64() && *t < to.as_secs_f64())
            .map(|(_, l)| *l)
            .collect();
        let slots = shape.slots as f64;
        let limit_mean = steady.iter().sum::<f64>() / steady.len().max(1) as f64;
        // From the spike on: before it, the limit binds nothing.
        let limit_max = run
            .limit
            .iter()
            .filter(|(t, _)| *t >= from.as_secs_f64())
            .map(|(_, l)| *l)
            .fold(0.0, f64::max);

        let after_worst = ROUTES
            .iter()
            .map(|(p, _, _)| {
                let (n, ok) = run
                    .samples
                    .iter()
                    .filter(|s| s.priority == *p && s.sent >= to && s.sent < to + AFTER)
                    .fold((0u64, 0u64), |(n, ok), s| {
                        (n + 1, ok + u64::from(s.outcome == Outcome::Ok))
                    });
                if n == 0 { 1.0 } else { ok as f64 / n as f64 }
            })
            .fold(1.0, f64::min);

        let after: Vec<_> = run
            .samples
            .iter()
            .filter(|s| s.sent >= to && s.sent < to + AFTER)
            .collect();
        let after_all = if after.is_empty() {
            1.0
        } else {
            after.iter().filter(|s| s.outcome == Outcome::Ok).count() as f64 / after.len() as f64
        };
        let shed_after_ms = after
            .iter()
            .filter(|s| s.outcome != Outcome::Ok)
            .map(|s| (s.sent - to).as_secs_f64() * 1e3)
            .fold(0.0, f64::max);
        let count = |o: Outcome| run.samples.iter().filter(|s| s.outcome == o).count() as u64;
        Figures {
            shape,
            critical_ok: critical.ok_frac(),
            tier_ok: [0, 1, 2, 3].map(|i| during(ROUTES[i].0).ok_frac()),
            tier_offered: [0, 1, 2, 3].map(|i| during(ROUTES[i].0).offered),
            critical_p99_writes: critical.p99_ms / shape.write_ms as f64,
            critical_of_capacity: critical.ok as f64 / capacity,
            goodput: run.spike_goodput_frac(),
            of_best,
            refusal_p99_ms: percentile(&refusal_ms, 0.99),
            refusals: refusal_ms.len() as u64,
            refusals_without_hint,
            limit_mean_of_slots: limit_mean / slots,
            limit_max_of_slots: limit_max / slots,
            after_worst,
            after_all,
            shed_after_ms,
            timeouts: count(Outcome::Timeout),
            errors: count(Outcome::Error),
        }
    }

    /// Every target this run missed, in words; empty when all were met.
    pub fn misses(&self) -> Vec<String> {
        let mut misses = Vec::new();
        let demand = self.shape.critical_demand();
        if demand <= 0.9 {
            if self.critical_ok < 0.999 {
                misses.push(format!("critical ok {:.2}%", 100.0 * self.critical_ok));
            }
            if self.critical_p99_writes > 5.0 {
                misses.push(format!(
                    "critical p99 {:.1}x write",
                    self.critical_p99_writes
                ));
            }
        } else if demand > 1.0 && self.critical_of_capacity < 0.95 {
            misses.push(format!(
                "critical {:.0}% of capacity",
                100.0 * self.critical_of_capacity
            ));
        }
        if self.goodput < 0.95 {
            misses.push(format!("goodput {:.1}%", 100.0 * self.goodput));
        }
        for (share, p) in self.of_best.iter().zip(["high", "default", "low"]) {
            if let Some(s) = share.filter(|s| *s < 0.9) {
                misses.push(format!("{p} {:.0}% of best", 100.0 * s));
            }
        }
        if self.refusal_p99_ms > 5.0 {
            misses.push(format!("refusal p99 {:.1} ms", self.refusal_p99_ms));
        }
        if self.refusals_without_hint > 0 {
            misses.push(format!(
                "{} refusals without Retry-After",
                self.refusals_without_hint
            ));
        }
        if !(0.75..=1.25).contains(&self.limit_mean_of_slots) {
            misses.push(format!("limit {:.2}x slots", self.limit_mean_of_slots));
        }
        if self.limit_max_of_slots > 2.0 {
            misses.push(format!("limit max {:.2}x slots", self.limit_max_of_slots));
        }
        if self.after_worst < 0.99 {
            misses.push(format!("after {:.1}%", 100.0 * self.after_worst));
        }
        if self.errors > 0 {
            misses.push(format!("{} failed", self.errors));
        }
        misses
    }

    pub fn to_json(&self) -> Value {
        json!({
            "shape": self.shape.label(),
            "mix": self.shape.mix,
            "spike": self.shape.spike,
            "slots": self.shape.slots,
            "write_ms": self.shape.write_ms,
            "protocol": self.shape.protocol.as_str(),
            "critical_demand_of_capacity": self.shape.critical_demand(),
            "critical_ok": self.critical_ok,
            "critical_p99_writes": self.critical_p99_writes,
            "critical_of_capacity": self.critical_of_capacity,
            "goodput_of_capacity": self.goodput,
            "high_of_best": self.of_best[0],
            "default_of_best": self.of_best[1],
            "low_of_best": self.of_best[2],
            "refusal_p99_ms": self.refusal_p99_ms,
            "refusals": self.refusals,
            "refusals_without_retry_after": self.refusals_without_hint,
            "limit_mean_of_slots": self.limit_mean_of_slots,
            "limit_max_of_slots": self.limit_max_of_slots,
            "after_worst_tier_ok": self.after_worst,
            "after_all_ok": self.after_all,
            "shed_after_ms": self.shed_after_ms,
            "critical_ok_share": self.critical_ok,
            "tier_ok_share": self.tier_ok,
            "tier_offered": self.tier_offered,
            "timeouts": self.timeouts,
            "failed": self.errors,
            "misses": self.misses(),
        })
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

pub fn print_header() {
    println!(
        "| {:<32} | {:>8} | {:>8} | {:>7} | {:>15} | {:>8} | {:>11} | {:>6} | {:>8} | {:>8} | misses",
        "shape (mix spike slots×write)",
        "crit ok",
        "crit p99",
        "goodput",
        "high/def/low",
        "ref. p99",
        "limit/slots",
        "after",
        "shed for",
        "timeouts",
    );
    println!(
        "|{}|{}|{}|{}|{}|{}|{}|{}|{}|{}|---|",
        "-".repeat(34),
        "-".repeat(10),
        "-".repeat(10),
        "-".repeat(9),
        "-".repeat(17),
        "-".repeat(10),
        "-".repeat(13),
        "-".repeat(8),
        "-".repeat(10),
        "-".repeat(10),
    );
}

pub fn print_row(f: &Figures) {
    let best = |s: Option<f64>| s.map_or("-".to_string(), |s| format!("{:.0}", 100.0 * s));
    let misses = f.misses();
    println!(
        "| {:<32} | {:>7.2}% | {:>7.1}w | {:>6.1}% | {:>15} | {:>5.1} ms | {:>4.2} / {:>4.2} | {:>5.1}% | {:>5.0} ms | {:>8} | {}",
        f.shape.label(),
        100.0 * f.critical_ok,
        f.critical_p99_writes,
        100.0 * f.goodput,
        format!(
            "{}/{}/{}",
            best(f.of_best[0]),
            best(f.of_best[1]),
            best(f.of_best[2])
        ),
        f.refusal_p99_ms,
        f.limit_mean_of_slots,
        f.limit_max_of_slots,
        100.0 * f.after_worst,
        f.shed_after_ms,
        f.timeouts,
        if misses.is_empty() {
            "all met".to_string()
        } else {
            misses.join(", ")
        }
    );
}
