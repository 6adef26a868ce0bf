//! Figures from the samples: the side-by-side table, the JSON, the chart.

use std::{path::Path, time::Duration};

use serde_json::{Value, json};
use tower_spillway::Priority;

use crate::load::{Outcome, ROUTES, Sample};

/// One scenario's run.
#[derive(Debug)]
pub struct Run {
    pub name: &'static str,
    pub samples: Vec<Sample>,
    /// The spike, from the start of the run.
    pub spike: (Duration, Duration),
    /// The database's capacity in writes per second.
    pub capacity_rps: f64,
    /// The adaptive limit sampled over time (seconds, limit), if the stack has one.
    pub limit: Vec<(f64, f64)>,
    pub duration: Duration,
    /// What the spill layer stored and drained, if the stack spills.
    pub spill: Option<SpillFigures>,
}

/// A spilling stack's figures: the backlog over time and what became of it.
#[derive(Debug, Default)]
pub struct SpillFigures {
    /// Jobs waiting or running over time (seconds, jobs).
    pub backlog: Vec<(f64, f64)>,
    /// Requests the layer stored and answered `202` (its own count; a client
    /// that gave up before its `202` arrived is in here, not in `accepted`).
    pub stored: u64,
    /// Stored jobs replayed to an answer.
    pub drained: u64,
    /// Writes the database did for replays (at-least-once: a replay whose
    /// lease ran out is done again).
    pub replayed_writes: u64,
    /// Stored jobs neither done nor waiting any longer: given up on.
    pub dead_lettered: u64,
    /// Jobs still waiting when the run stopped waiting for the drain.
    pub left: u64,
    /// From the end of the spike until the backlog was empty, if it emptied.
    pub time_to_drain: Option<Duration>,
    /// Jobs drained per second once the traffic had stopped (the drain alone
    /// on the database), if the backlog outlived the traffic by a second.
    pub drain_rps: Option<f64>,
}

impl SpillFigures {
    /// Jobs answered `202` and never done: dead-lettered or still waiting.
    pub fn lost(&self) -> u64 {
        self.dead_lettered + self.left
    }
}

#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub offered: u64,
    pub ok: u64,
    /// Answered `202 Accepted`: stored, done later.
    pub accepted: u64,
    pub shed: u64,
    pub shed_no_hint: u64,
    pub timeout: u64,
    pub error: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

impl Stats {
    pub fn of<'a>(samples: impl Iterator<Item = &'a Sample>) -> Stats {
        let mut s = Stats::default();
        let mut latencies = Vec::new();
        for sample in samples {
            s.offered += 1;
            match sample.outcome {
                Outcome::Ok => {
                    s.ok += 1;
                    latencies.push(sample.latency().as_secs_f64() * 1e3);
                }
                Outcome::Accepted => s.accepted += 1,
                Outcome::Shed => s.shed += 1,
                Outcome::ShedNoHint => s.shed_no_hint += 1,
                Outcome::Timeout => s.timeout += 1,
                Outcome::Error => s.error += 1,
            }
        }
        latencies.sort_by(f64::total_cmp);
        s.p50_ms = percentile(&latencies, 0.50);
        s.p99_ms = percentile(&latencies, 0.99);
        s
    }

    pub fn ok_frac(&self) -> f64 {
        if self.offered == 0 {
            1.0
        } else {
            self.ok as f64 / self.offered as f64
        }
    }

    /// The share answered `202`: stored to be done later.
    pub fn accepted_frac(&self) -> f64 {
        if self.offered == 0 {
            0.0
        } else {
            self.accepted as f64 / self.offered as f64
        }
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl Run {
    pub fn stats(&self, priority: Priority) -> Stats {
        Stats::of(self.samples.iter().filter(|s| s.priority == priority))
    }

    /// Requests sent during the spike.
    pub fn spike_stats(&self, priority: Option<Priority>) -> Stats {
        let (from, to) = self.spike;
        Stats::of(
            self.samples.iter().filter(|s| {
                s.sent >= from && s.sent < to && priority.is_none_or(|p| s.priority == p)
            }),
        )
    }

    /// Successes per second during the spike, as a fraction of capacity.
    pub fn spike_goodput_frac(&self) -> f64 {
        let secs = (self.spike.1 - self.spike.0).as_secs_f64();
        self.spike_stats(None).ok as f64 / secs / self.capacity_rps
    }

    /// High's successes during the spike as a fraction of the most it could
    /// get: the capacity left after Critical, or all of High's traffic.
    pub fn spike_high_frac_of_best(&self) -> f64 {
        let secs = (self.spike.1 - self.spike.0).as_secs_f64();
        let critical = self.spike_stats(Some(Priority::Critical));
        let high = self.spike_stats(Some(Priority::High));
        let left = (self.capacity_rps * secs - critical.ok as f64).max(0.0);
        let best = left.min(high.offered as f64);
        if best == 0.0 {
            1.0
        } else {
            high.ok as f64 / best
        }
    }
}

pub fn print_table(runs: &[Run]) {
    println!();
    println!(
        "{:<15} {:<9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7} {:>7}",
        "scenario",
        "priority",
        "offered",
        "ok",
        "202",
        "shed+RA",
        "shed",
        "timeout",
        "failed",
        "p50 ms",
        "p99 ms"
    );
    for run in runs {
        for (priority, _, _) in ROUTES {
            let s = run.stats(priority);
            println!(
                "{:<15} {:<9} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7} {:>7.0} {:>7.0}",
                run.name,
                priority.as_str(),
                s.offered,
                s.ok,
                s.accepted,
                s.shed,
                s.shed_no_hint,
                s.timeout,
                s.error,
                s.p50_ms,
                s.p99_ms
            );
        }
    }
    println!(
        "(202: accepted for later; shed+RA: refused with a valid Retry-After; shed: refused without one;\n failed: connection errors; p50/p99 of the requests served at once)"
    );
    println!();
    println!("during the spike:");
    println!(
        "{:<15} {:>12} {:>12} {:>12} {:>12} {:>10} {:>14}",
        "scenario", "critical", "high", "default", "low", "goodput", "high of best"
    );
    for run in runs {
        let pct = |p| {
            let s = run.spike_stats(Some(p));
            match s.accepted {
                0 => format!("{:.1}%", 100.0 * s.ok_frac()),
                _ => format!(
                    "{:.1}%+{:.1}%",
                    100.0 * s.ok_frac(),
                    100.0 * s.accepted_frac()
                ),
            }
        };
        println!(
            "{:<15} {:>12} {:>12} {:>12} {:>12} {:>9.0}% {:>13.0}%",
            run.name,
            pct(Priority::Critical),
            pct(Priority::High),
            pct(Priority::Default),
            pct(Priority::Low),
            100.0 * run.spike_goodput_frac(),
            100.0 * run.spike_high_frac_of_best(),
        );
    }
    println!(
        "(share of each tier's requests that succeeded, +share accepted for later; goodput as a share of capacity)"
    );
    let spilled: Vec<_> = runs
        .iter()
        .filter_map(|r| r.spill.as_ref().map(|s| (r, s)))
        .collect();
    if spilled.is_empty() {
        return;
    }
    println!();
    println!("accepted for later:");
    println!(
        "{:<15} {:>10} {:>10} {:>10} {:>10} {:>15} {:>18}",
        "scenario", "accepted", "stored", "drained", "lost", "time to drain", "drain rate"
    );
    for (run, spill) in spilled {
        let accepted: u64 = ROUTES.iter().map(|r| run.stats(r.0).accepted).sum();
        let time = spill.time_to_drain.map_or_else(
            || format!("> {:.0} s", run.duration.as_secs_f64()),
            |t| format!("{:.1} s", t.as_secs_f64()),
        );
        let rate = spill.drain_rps.map_or_else(
            || "-".to_owned(),
            |r| format!("{r:.0}/s ({:.1}%)", 100.0 * r / run.capacity_rps),
        );
        println!(
            "{:<15} {:>10} {:>10} {:>10} {:>10} {:>15} {:>18}",
            run.name,
            accepted,
            spill.stored,
            spill.drained,
            spill.lost(),
            time,
            rate
        );
    }
    println!(
        "(accepted: 202s the clients received; stored: jobs the layer committed; drained: jobs replayed to\n an answer; lost: stored and never done; time to drain: from the end of the spike to an empty backlog;\n drain rate: jobs done per second once the traffic had stopped, and as a share of capacity)"
    );
}

fn stats_json(s: &Stats) -> Value {
    json!({
        "offered": s.offered,
        "ok": s.ok,
        "accepted": s.accepted,
        "shed": s.shed + s.shed_no_hint,
        "shed_without_retry_after": s.shed_no_hint,
        "timeout": s.timeout,
        "failed": s.error,
        "p50_ms": (s.p50_ms * 10.0).round() / 10.0,
        "p99_ms": (s.p99_ms * 10.0).round() / 10.0,
    })
}

pub fn to_json(runs: &[Run]) -> Value {
    let mut scenarios = serde_json::Map::new();
    for run in runs {
        let mut per = serde_json::Map::new();
        let mut spike = serde_json::Map::new();
        for (priority, _, _) in ROUTES {
            per.insert(priority.as_str().into(), stats_json(&run.stats(priority)));
            spike.insert(
                priority.as_str().into(),
                stats_json(&run.spike_stats(Some(priority))),
            );
        }
        spike.insert(
            "goodput_of_capacity".into(),
            json!(run.spike_goodput_frac()),
        );
        spike.insert("high_of_best".into(), json!(run.spike_high_frac_of_best()));
        per.insert("spike".into(), Value::Object(spike));
        if let Some(spill) = &run.spill {
            per.insert(
                "spill".into(),
                json!({
                    "stored": spill.stored,
                    "drained": spill.drained,
                    "replayed_writes": spill.replayed_writes,
                    "dead_lettered": spill.dead_lettered,
                    "left": spill.left,
                    "lost": spill.lost(),
                    "time_to_drain_s": spill.time_to_drain.map(|t| t.as_secs_f64()),
                    "drain_rps": spill.drain_rps,
                    "drain_of_capacity": spill.drain_rps.map(|r| r / run.capacity_rps),
                }),
            );
        }
        scenarios.insert(run.name.into(), Value::Object(per));
    }
    json!({
        "capacity_rps": runs.first().map(|r| r.capacity_rps),
        "scenarios": scenarios,
    })
}

/// Successes per second per priority over time, one panel per scenario, and
/// the adaptive limit.
pub fn write_svg(runs: &[Run], path: &Path) -> Result<(), Box<dyn std::error::Error>> {
    use plotters::prelude::*;

    let backlog_run = runs.iter().find(|r| r.spill.is_some());
    let panels = runs.len() + 1 + usize::from(backlog_run.is_some());
    let root = SVGBackend::new(path, (900, 260 * panels as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let areas = root.split_evenly((panels, 1));
    let colors = [RED, BLUE, GREEN, BLACK];
    let secs = runs
        .iter()
        .map(|r| r.duration.as_secs_f64().ceil())
        .fold(1.0, f64::max);
    let capacity = runs.first().map_or(1.0, |r| r.capacity_rps);

    for (run, area) in runs.iter().zip(&areas) {
        let caption = format!("{}: successes per second", run.name);
        let mut chart = panel(area, caption, secs, capacity * 1.2)?;
        chart
            .configure_mesh()
            .x_desc("seconds")
            .light_line_style(WHITE)
            .draw()?;
        chart.draw_series(std::iter::once(Rectangle::new(
            [
                (run.spike.0.as_secs_f64(), 0.0),
                (run.spike.1.as_secs_f64(), capacity * 1.2),
            ],
            RGBColor(255, 240, 200).filled(),
        )))?;
        for ((priority, _, _), color) in ROUTES.iter().zip(colors) {
            // Half-second bins, scaled to a rate per second.
            const BIN: f64 = 0.5;
            let mut bins = vec![0u32; (secs / BIN) as usize + 1];
            let last = bins.len() - 1;
            for s in run
                .samples
                .iter()
                .filter(|s| s.priority == *priority && s.outcome == Outcome::Ok)
            {
                bins[((s.done.as_secs_f64() / BIN) as usize).min(last)] += 1;
            }
            chart
                .draw_series(LineSeries::new(
                    bins.iter()
                        .enumerate()
                        .map(|(i, n)| ((i as f64 + 0.5) * BIN, f64::from(*n) / BIN)),
                    color.stroke_width(2),
                ))?
                .label(priority.as_str())
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], color));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.8))
            .border_style(BLACK)
            .draw()?;
    }

    let limit_run = runs.iter().find(|r| !r.limit.is_empty());
    if let (Some(run), Some(area)) = (limit_run, areas.get(runs.len())) {
        let max = run.limit.iter().map(|p| p.1).fold(1.0, f64::max);
        let caption = format!("{}: adaptive concurrency limit", run.name);
        let mut chart = panel(area, caption, secs, max * 1.2)?;
        chart.configure_mesh().x_desc("seconds").draw()?;
        chart.draw_series(LineSeries::new(
            run.limit.iter().copied(),
            MAGENTA.stroke_width(2),
        ))?;
    }
    let backlog = backlog_run.and_then(|r| Some((r, r.spill.as_ref()?)));
    if let (Some((run, spill)), Some(area)) = (backlog, areas.get(runs.len() + 1)) {
        let max = spill.backlog.iter().map(|p| p.1).fold(1.0, f64::max);
        let caption = format!("{}: jobs accepted for later and not yet done", run.name);
        let mut chart = panel(area, caption, secs, max * 1.2)?;
        chart.configure_mesh().x_desc("seconds").draw()?;
        chart.draw_series(LineSeries::new(
            spill.backlog.iter().copied(),
            CYAN.stroke_width(2),
        ))?;
    }
    root.present()?;
    Ok(())
}

/// A panel's chart: seconds across, a figure up.
type Panel<'a, DB> = plotters::prelude::ChartContext<
    'a,
    DB,
    plotters::prelude::Cartesian2d<
        plotters::coord::types::RangedCoordf64,
        plotters::coord::types::RangedCoordf64,
    >,
>;

/// One panel of the chart: `caption` over `0..secs` seconds and `0..y_max`.
fn panel<DB: plotters::prelude::DrawingBackend>(
    area: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    caption: String,
    secs: f64,
    y_max: f64,
) -> Result<Panel<'_, DB>, plotters::prelude::DrawingAreaErrorKind<DB::ErrorType>> {
    plotters::prelude::ChartBuilder::on(area)
        .caption(caption, ("sans-serif", 18))
        .margin(8)
        .x_label_area_size(28)
        .y_label_area_size(48)
        .build_cartesian_2d(0.0..secs, 0.0..y_max)
}
