//! What a run measured, and the targets each figure is held to.
//!
//! The spike is judged once it has settled: over its second half (the
//! **settled spike**). There:
//!
//! - **limit sum**: the mean, over the limit samples (every
//!   [`TICK`](crate::TICK)), of the sum of the instances' concurrency
//!   limits, as a share of the database's slots; target 0.8–1.2;
//! - **oscillation**: the coefficient of variation (standard deviation over
//!   mean) of that sum over the same samples; target ≤ [`MAX_CV`];
//! - **fairness**: Jain's index, (Σx)² / (n Σx²), of the instances' shares,
//!   once of their mean limits and once of the requests each served (sent in
//!   the settled spike, answered 200); 1 is a perfectly even split, 1/n all
//!   on one instance; target ≥ 0.95 for both.
//!
//! Over the whole run:
//!
//! - **Critical**: the share of Critical requests answered 200, over every
//!   instance; target ≥ 99.9 %;
//! - **recovery**: from the end of the spike until the fleet serves
//!   everything offered again: the send time of the last request sent after
//!   the spike that was refused or timed out, minus the spike's end (0 when
//!   every request sent after the spike succeeded); target ≤ 250 ms.

use serde_json::{Value, json};
use tower_spillway::Priority;

use crate::traffic::{Outcome, Sample};

/// Most coefficient of variation of the summed limit over the settled spike.
pub const MAX_CV: f64 = 0.10;
pub const LIMIT_SUM_BAND: (f64, f64) = (0.8, 1.2);
pub const MIN_JAIN: f64 = 0.95;
pub const MIN_CRITICAL: f64 = 0.999;
pub const MAX_RECOVERY_MS: f64 = 250.0;

/// The instances' limits at one moment, `t` seconds from the start.
#[derive(Debug, Clone)]
pub struct Tick {
    pub t: f64,
    pub limits: Vec<usize>,
}

/// The timing of one run, in seconds from its start.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub spike_start: f64,
    pub spike_end: f64,
}

impl Timing {
    /// The settled spike: its second half.
    pub fn settled(&self) -> (f64, f64) {
        ((self.spike_start + self.spike_end) / 2.0, self.spike_end)
    }
}

/// What one run was and what it recorded.
pub struct Run<'a> {
    pub instances: usize,
    pub balancer: &'static str,
    pub slots: usize,
    pub capacity_rps: f64,
    pub timing: Timing,
    pub samples: &'a [Sample],
    pub ticks: &'a [Tick],
    /// Critical requests the instances' shedders refused.
    pub critical_shed_by_shedder: u64,
    /// The limiters' refusals by reason.
    pub limiter_refusals: Value,
}

#[derive(Debug, Clone)]
pub struct Figures {
    pub instances: usize,
    pub balancer: &'static str,
    pub slots: usize,
    pub limit_sum_mean: f64,
    pub limit_sum_ratio: f64,
    pub limit_sum_cv: f64,
    pub limit_sum_min: usize,
    pub limit_sum_max: usize,
    pub jain_limits: f64,
    pub jain_served: f64,
    /// Each instance's mean limit over the settled spike.
    pub mean_limits: Vec<f64>,
    /// Each instance's requests served in the settled spike.
    pub served: Vec<f64>,
    /// Requests served per second in the settled spike, as a share of the
    /// database's capacity.
    pub goodput_of_capacity: f64,
    pub critical_offered: usize,
    pub critical_ok: usize,
    /// When the Critical requests that failed were sent (seconds from the
    /// start of the run), to which instance, and how they failed: the
    /// first 20.
    pub critical_failed: Vec<(f64, usize, Outcome)>,
    /// Critical requests refused by the shedders rather than the limiters.
    pub critical_shed_by_shedder: u64,
    /// The limiters' refusals (every priority) by reason.
    pub limiter_refusals: Value,
    pub recovery_ms: f64,
    pub timeouts: usize,
    pub errors: usize,
}

impl Figures {
    pub fn of(run: Run<'_>) -> Self {
        let Run {
            instances,
            balancer,
            slots,
            capacity_rps,
            timing,
            samples,
            ticks,
            critical_shed_by_shedder,
            limiter_refusals,
        } = run;
        let (from, to) = timing.settled();
        let settled: Vec<&Tick> = ticks.iter().filter(|t| t.t >= from && t.t < to).collect();
        let sums: Vec<f64> = settled
            .iter()
            .map(|t| t.limits.iter().sum::<usize>() as f64)
            .collect();
        let (mean, sd) = mean_sd(&sums);
        let mean_limits: Vec<f64> = (0..instances)
            .map(|i| {
                let each: Vec<f64> = settled.iter().map(|t| t.limits[i] as f64).collect();
                mean_sd(&each).0
            })
            .collect();
        let mut served = vec![0.0; instances];
        for s in samples {
            if s.outcome == Outcome::Ok && s.sent >= from && s.sent < to {
                served[s.instance] += 1.0;
            }
        }
        let critical: Vec<&Sample> = samples
            .iter()
            .filter(|s| s.priority == Priority::Critical)
            .collect();
        let last_refused = samples
            .iter()
            .filter(|s| s.sent >= timing.spike_end && s.outcome != Outcome::Ok)
            .map(|s| s.sent)
            .fold(None, |max: Option<f64>, t| {
                Some(max.map_or(t, |m| m.max(t)))
            });
        let goodput_of_capacity = served.iter().sum::<f64>() / (to - from) / capacity_rps;
        Figures {
            instances,
            balancer,
            slots,
            limit_sum_mean: mean,
            limit_sum_ratio: mean / slots as f64,
            limit_sum_cv: if mean > 0.0 { sd / mean } else { f64::NAN },
            limit_sum_min: sums.iter().copied().fold(f64::INFINITY, f64::min) as usize,
            limit_sum_max: sums.iter().copied().fold(0.0, f64::max) as usize,
            jain_limits: jain(&mean_limits),
            jain_served: jain(&served),
            mean_limits,
            served,
            goodput_of_capacity,
            critical_offered: critical.len(),
            critical_ok: critical.iter().filter(|s| s.outcome == Outcome::Ok).count(),
            critical_failed: critical
                .iter()
                .filter(|s| s.outcome != Outcome::Ok)
                .take(20)
                .map(|s| (s.sent, s.instance, s.outcome))
                .collect(),
            critical_shed_by_shedder,
            limiter_refusals,
            recovery_ms: last_refused.map_or(0.0, |t| 1000.0 * (t - timing.spike_end)),
            timeouts: count(samples, Outcome::Timeout),
            errors: count(samples, Outcome::Error),
        }
    }

    pub fn critical_success(&self) -> f64 {
        self.critical_ok as f64 / self.critical_offered.max(1) as f64
    }

    /// The targets this run missed, each with its figure; empty when all
    /// were met.
    pub fn misses(&self) -> Vec<String> {
        let mut missed = Vec::new();
        let (lo, hi) = LIMIT_SUM_BAND;
        if !(lo..=hi).contains(&self.limit_sum_ratio) {
            missed.push(format!("limit sum {:.2} x slots", self.limit_sum_ratio));
        }
        if self.limit_sum_cv.is_nan() || self.limit_sum_cv > MAX_CV {
            missed.push(format!("limit sum cv {:.3}", self.limit_sum_cv));
        }
        if self.jain_limits < MIN_JAIN {
            missed.push(format!("jain(limits) {:.3}", self.jain_limits));
        }
        if self.jain_served < MIN_JAIN {
            missed.push(format!("jain(served) {:.3}", self.jain_served));
        }
        if self.critical_success() < MIN_CRITICAL {
            missed.push(format!("critical {:.4}", self.critical_success()));
        }
        if self.recovery_ms > MAX_RECOVERY_MS {
            missed.push(format!("recovery {:.0} ms", self.recovery_ms));
        }
        missed
    }

    pub fn to_json(&self) -> Value {
        json!({
            "instances": self.instances,
            "balancer": self.balancer,
            "slots": self.slots,
            "limit_sum_mean": self.limit_sum_mean,
            "limit_sum_ratio": self.limit_sum_ratio,
            "limit_sum_cv": self.limit_sum_cv,
            "limit_sum_min": self.limit_sum_min,
            "limit_sum_max": self.limit_sum_max,
            "jain_limits": self.jain_limits,
            "jain_served": self.jain_served,
            "mean_limits": self.mean_limits,
            "served": self.served,
            "goodput_of_capacity": self.goodput_of_capacity,
            "critical_offered": self.critical_offered,
            "critical_ok": self.critical_ok,
            "critical_success": self.critical_success(),
            "critical_failed": self
                .critical_failed
                .iter()
                .map(|(t, i, outcome)| {
                    json!({"sent_s": t, "instance": i, "outcome": format!("{outcome:?}")})
                })
                .collect::<Vec<_>>(),
            "critical_shed_by_shedder": self.critical_shed_by_shedder,
            "limiter_refusals": self.limiter_refusals,
            "recovery_ms": self.recovery_ms,
            "timeouts": self.timeouts,
            "errors": self.errors,
            "missed": self.misses(),
        })
    }
}

pub fn print_header() {
    println!(
        "{:>4} {:<11} {:>9} {:>7} {:>9} {:>6} {:>7} {:>7} {:>8} {:>9} {:>8}  missed",
        "n",
        "balancer",
        "sum/slots",
        "cv",
        "min..max",
        "jainL",
        "jainS",
        "goodput",
        "critical",
        "recovery",
        "timeouts"
    );
}

pub fn print_row(f: &Figures) {
    let missed = f.misses();
    println!(
        "{:>4} {:<11} {:>9.2} {:>7.3} {:>9} {:>6.3} {:>7.3} {:>7.2} {:>7.2}% {:>6.0} ms {:>8}  {}",
        f.instances,
        f.balancer,
        f.limit_sum_ratio,
        f.limit_sum_cv,
        format!("{}..{}", f.limit_sum_min, f.limit_sum_max),
        f.jain_limits,
        f.jain_served,
        f.goodput_of_capacity,
        100.0 * f.critical_success(),
        f.recovery_ms,
        f.timeouts,
        if missed.is_empty() {
            "-".to_string()
        } else {
            missed.join(", ")
        }
    );
}

fn count(samples: &[Sample], outcome: Outcome) -> usize {
    samples.iter().filter(|s| s.outcome == outcome).count()
}

fn mean_sd(xs: &[f64]) -> (f64, f64) {
    if xs.is_empty() {
        return (f64::NAN, f64::NAN);
    }
    let n = xs.len() as f64;
    let mean = xs.iter().sum::<f64>() / n;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
    (mean, var.sqrt())
}

/// Jain's fairness index of `xs`: 1 when all are equal, 1/n when one holds
/// everything.
pub fn jain(xs: &[f64]) -> f64 {
    let sum: f64 = xs.iter().sum();
    let squares: f64 = xs.iter().map(|x| x * x).sum();
    if squares == 0.0 {
        return f64::NAN;
    }
    sum * sum / (xs.len() as f64 * squares)
}
