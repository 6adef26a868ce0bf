//! The flash sale: one service, four ways, one spike.
//!
//! In one process, on loopback, the same axum shop (four routes over a
//! simulated database, see `backend.rs`) is served four ways:
//!
//! - `unprotected`: the app as it is;
//! - `tower`: tower's built-ins, `LoadShed` over `ConcurrencyLimit` sized to
//!   the database, with axum's usual `HandleErrorLayer` answering 503;
//! - `spillway`: this crate's stack with its defaults, see `stacks.rs`;
//! - `spillway+spill`: the same with `SpillLayer` over it, on a SQLite file:
//!   the deferrable tiers (`/likes`, `/analytics`) the stack would refuse are
//!   answered `202 Accepted` and replayed through the stack once it has room.
//!   The run goes on after the traffic until the backlog is empty (at most
//!   [`MAX_DRAIN_WAIT`]), and reports what was accepted, drained and lost.
//!
//! Each gets the same open-loop traffic: a calm phase at half the database's
//! capacity, a spike (ten times it by default), and recovery at half again.
//! Traffic mix: `POST /payments` Critical 5 %, `/orders` High 15 %, `/likes`
//! Default 30 %, `/analytics` Low 50 %. Clients give up after 2 s.
//!
//! ```text
//! cargo run --release --example flash_sale -- [--quick] [--json PATH] [--svg PATH]
//!     [--mix C,H,D,L] [--spike X] [--slots N] [--write-ms M] [--hold SECONDS] [--h1]
//!     [--only unprotected|tower|spillway|spillway+spill]
//! cargo run --release --example flash_sale -- --sweep [--quick] [--hold SECONDS] [--json PATH]
//! ```
//!
//! `--sweep` runs only the crate's stack over a grid of traffic shapes (see
//! `sweep.rs`) and prints one row per shape with the targets it met or
//! missed (`targets.rs`); `--quick` makes that grid small. `--h1` drives the
//! shop from HTTP/1.1 keep-alive connections instead of one HTTP/2
//! connection. `--hold` sets how long the spike lasts.

mod backend;
mod load;
mod report;
mod stacks;
mod sweep;
mod targets;

use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use load::{Live, Phase, Protocol};
use report::Run;
use targets::Shape;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// How long a spilling stack's run waits, after the traffic, for the drain
/// to empty the backlog; what is still waiting then counts as lost.
const MAX_DRAIN_WAIT: Duration = Duration::from_secs(120);

struct Args {
    quick: bool,
    sweep: bool,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
    shape: Shape,
    /// How long the spike lasts; by default 8 s (3 s with `--quick`).
    hold: Option<f64>,
    /// Only this scenario (`unprotected`, `tower`, `spillway`, `spillway+spill`).
    only: Option<String>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        sweep: false,
        json: None,
        svg: None,
        shape: Shape {
            mix: [5.0, 15.0, 30.0, 50.0],
            spike: 10.0,
            slots: 20,
            write_ms: 50,
            protocol: Protocol::Http2,
        },
        hold: None,
        only: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        fn number<T: std::str::FromStr>(name: &str, v: String) -> Result<T, String>
        where
            T::Err: std::fmt::Display,
        {
            v.parse().map_err(|e| format!("{name}: {e}"))
        }
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--sweep" => args.sweep = true,
            "--h1" => args.shape.protocol = Protocol::Http1,
            "--h2" => args.shape.protocol = Protocol::Http2,
            "--json" => args.json = Some(value("--json")?.into()),
            "--svg" => args.svg = Some(value("--svg")?.into()),
            "--mix" => args.shape.mix = targets::parse_mix(&value("--mix")?)?,
            "--spike" => args.shape.spike = number("--spike", value("--spike")?)?,
            "--slots" => args.shape.slots = number("--slots", value("--slots")?)?,
            "--write-ms" | "--service-ms" => {
                args.shape.write_ms = number("--write-ms", value("--write-ms")?)?
            }
            "--hold" => args.hold = Some(number("--hold", value("--hold")?)?),
            "--only" => {
                let name = value("--only")?;
                if !stacks::Scenario::ALL.iter().any(|s| s.name() == name) {
                    return Err(format!("--only: no scenario {name:?}"));
                }
                args.only = Some(name);
            }
            "-h" | "--help" => {
                println!(
                    "usage: flash_sale [--quick] [--json PATH] [--svg PATH] [--mix C,H,D,L] [--spike X]\n                  [--slots N] [--write-ms M] [--hold SECONDS] [--h1] [--only NAME]\n       flash_sale --sweep [--quick] [--hold SECONDS] [--json PATH]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    let s = &args.shape;
    if s.slots == 0 || s.write_ms == 0 {
        return Err("--slots and --write-ms must be positive".into());
    }
    if !(s.spike.is_finite() && s.spike > 0.0) {
        return Err("--spike must be a positive multiple of capacity".into());
    }
    if args.hold.is_some_and(|h| !(h.is_finite() && h > 0.0)) {
        return Err("--hold must be a positive number of seconds".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args().map_err(|e| {
        eprintln!("flash_sale: {e}");
        std::process::exit(2)
    })?;
    if std::env::var_os("FLASH_SALE_DEBUG").is_some() {
        use tracing_subscriber::{filter::Targets, prelude::*};
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().with_writer(std::io::stderr))
            .with(Targets::new().with_target("h2", tracing_subscriber::filter::LevelFilter::DEBUG))
            .init();
    }
    if args.sweep {
        return sweep::run(args.quick, args.hold, args.json.as_deref()).await;
    }
    let shape = args.shape;
    let (calm, recovery) = if args.quick { (1.0, 1.0) } else { (3.0, 5.0) };
    let spike = args.hold.unwrap_or(if args.quick { 3.0 } else { 8.0 });
    let phases = phases(&shape, calm, spike, recovery);
    println!(
        "database: {} slots x {} ms = {:.0} writes/s; spike {:.0} req/s for {spike} s; mix {}; {}; clients time out after {} s",
        shape.slots,
        shape.write_ms,
        shape.capacity(),
        shape.spike * shape.capacity(),
        shape.label(),
        shape.protocol.as_str(),
        CLIENT_TIMEOUT.as_secs()
    );

    let mut runs = Vec::new();
    for scenario in stacks::Scenario::ALL {
        if args
            .only
            .as_deref()
            .is_some_and(|only| only != scenario.name())
        {
            continue;
        }
        runs.push(run(scenario, &shape, &phases).await?);
    }

    report::print_table(&runs);
    if let Some(spillway) = runs.iter().find(|r| r.name == "spillway") {
        println!();
        targets::print_header();
        targets::print_row(&targets::Figures::of(shape, spillway));
    }
    if let Some(path) = &args.json {
        std::fs::write(path, serde_json::to_vec_pretty(&report::to_json(&runs))?)?;
        println!("wrote {}", path.display());
    }
    if let Some(path) = &args.svg {
        report::write_svg(&runs, path)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}

/// Calm at half capacity, the spike, calm again.
fn phases(shape: &Shape, calm: f64, spike: f64, recovery: f64) -> [Phase; 3] {
    let capacity = shape.capacity();
    [
        Phase {
            duration: Duration::from_secs_f64(calm),
            rate: 0.5 * capacity,
        },
        Phase {
            duration: Duration::from_secs_f64(spike),
            rate: shape.spike * capacity,
        },
        Phase {
            duration: Duration::from_secs_f64(recovery),
            rate: 0.5 * capacity,
        },
    ]
}

async fn run(
    scenario: stacks::Scenario,
    shape: &Shape,
    phases: &[Phase],
) -> Result<Run, Box<dyn std::error::Error>> {
    let db = backend::Database::new(shape.slots, Duration::from_millis(shape.write_ms));
    let served = stacks::serve(scenario, Arc::clone(&db)).await?;
    println!("\n== {} ({})", scenario.name(), scenario.describe());

    let live = Arc::new(Live::default());
    let start = tokio::time::Instant::now();
    let limits = Arc::new(std::sync::Mutex::new(Vec::new()));
    let backlog = Arc::new(std::sync::Mutex::new(Vec::new()));
    let progress = {
        let live = Arc::clone(&live);
        let db = Arc::clone(&db);
        let limits = Arc::clone(&limits);
        let backlog = Arc::clone(&backlog);
        let limit_of = served.limit.clone();
        let spill = served.spill.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut last = [0u64; 6];
            for n in 1u64.. {
                tick.tick().await;
                let t = start.elapsed().as_secs_f64();
                let limit = limit_of.as_ref().map(|f| f());
                if let Some(l) = limit {
                    limits.lock().unwrap().push((t, l as f64));
                }
                let waiting = match &spill {
                    Some(spill) => spill.store_stats().await.ok().map(|s| waiting(&s)),
                    None => None,
                };
                if let Some(w) = waiting {
                    backlog.lock().unwrap().push((t, w as f64));
                }
                if n % 10 != 0 {
                    continue;
                }
                let now = [
                    live.sent.load(Ordering::Relaxed),
                    live.ok.load(Ordering::Relaxed),
                    live.accepted.load(Ordering::Relaxed),
                    live.shed.load(Ordering::Relaxed),
                    live.timeout.load(Ordering::Relaxed),
                    live.error.load(Ordering::Relaxed),
                ];
                let d: Vec<u64> = now.iter().zip(last).map(|(n, l)| n - l).collect();
                last = now;
                let limit = limit.map(|l| format!("  limit {l}")).unwrap_or_default();
                let spilled = match (&spill, waiting) {
                    (Some(_), Some(w)) => format!("  202 {:>5}/s  backlog {w:>6}", d[2]),
                    _ => String::new(),
                };
                println!(
                    "  t={:>2}s  sent {:>5}/s  ok {:>5}/s  shed {:>5}/s  timed out {:>5}/s  failed {:>4}/s  db busy {:>5}{limit}{spilled}",
                    n / 10,
                    d[0],
                    d[1],
                    d[3],
                    d[4],
                    d[5],
                    db.busy()
                );
            }
        })
    };

    let traffic = load::Traffic {
        addr: served.addr,
        phases,
        mix: shape.mix,
        protocol: shape.protocol,
        timeout: CLIENT_TIMEOUT,
    };
    let samples = load::drive(traffic, Arc::clone(&live)).await;
    let spike_end = (phases[0].duration + phases[1].duration).as_secs_f64();
    let traffic_end = phases.iter().map(|p| p.duration.as_secs_f64()).sum();
    let spill = match &served.spill {
        Some(spill) => Some(wait_for_drain(spill, &db, spike_end, traffic_end, &backlog).await),
        None => None,
    };
    let duration = start.elapsed();
    progress.abort();
    if let Some(stats) = &served.stats {
        if std::env::var_os("FLASH_SALE_DEBUG").is_some() {
            println!("  {}", stats());
        }
    }
    let limit = std::mem::take(&mut *limits.lock().unwrap());
    // Work the clients gave up on may still be running in this scenario's
    // database; each scenario has its own, so it cannot slow the next one.
    served.shutdown();

    let calm = phases[0].duration;
    Ok(Run {
        name: scenario.name(),
        samples,
        spike: (calm, calm + phases[1].duration),
        capacity_rps: db.capacity_rps(),
        limit,
        duration,
        spill,
    })
}

/// Jobs a spill store holds that are not done yet.
fn waiting(stats: &tower_spillway::spill::StoreStats) -> u64 {
    stats.queued_total() + stats.running
}

/// Waits until the spill store holds nothing to do (at most
/// [`MAX_DRAIN_WAIT`]) and reads what became of the jobs. `spike_end` and
/// `traffic_end` are in seconds from the start of the run, as the backlog's
/// samples are.
async fn wait_for_drain(
    spill: &tower_spillway::spill::SpillHandle,
    db: &backend::Database,
    spike_end: f64,
    traffic_end: f64,
    backlog: &std::sync::Mutex<Vec<(f64, f64)>>,
) -> report::SpillFigures {
    let deadline = tokio::time::Instant::now() + MAX_DRAIN_WAIT;
    let mut stats = spill.store_stats().await.ok();
    while stats.is_none_or(|s| waiting(&s) > 0) && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stats = spill.store_stats().await.ok();
    }
    let emptied = stats.is_some_and(|s| waiting(&s) == 0);
    let stats = stats.unwrap_or_default();
    let backlog = backlog.lock().unwrap().clone();
    // The drain ended with the last sample that still saw a job waiting
    // (samples are 100 ms apart).
    let last_busy = backlog
        .iter()
        .rev()
        .find(|(_, w)| *w > 0.0)
        .map_or(spike_end, |(t, _)| t + 0.1);
    let time_to_drain = emptied.then(|| Duration::from_secs_f64((last_busy - spike_end).max(0.0)));
    // With no traffic left, the drain has the database to itself: how fast
    // it empties the backlog then is how much of the capacity it uses.
    let at_traffic_end = backlog.iter().find(|(t, _)| *t >= traffic_end);
    let drain_rps = match at_traffic_end {
        Some((t, jobs)) if emptied && last_busy - t >= 1.0 => Some(jobs / (last_busy - t)),
        _ => None,
    };
    report::SpillFigures {
        backlog,
        stored: spill.snapshot().spilled,
        drained: stats.done,
        replayed_writes: db.replayed(),
        dead_lettered: stats.failed,
        left: waiting(&stats),
        time_to_drain,
        drain_rps,
    }
}
