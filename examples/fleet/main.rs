//! A fleet: 1 to 16 instances of the crate's stack over one database, behind
//! a balancer, through a spike.
//!
//! Each instance is the README's stack (`stack.rs`), its own layers and its
//! own adaptive limit, over its own copy of the flash sale's shop; all of
//! them write to ONE simulated database (`flash_sale/backend.rs`, by default
//! 40 slots × 20 ms = 2000 writes/s, slower when oversubscribed). No
//! instance sees the database whole or knows of the others: each finds its
//! share from the latency it measures. The instances are axum routers called
//! in process (`tower::ServiceExt::oneshot`), not loopback servers, so that
//! sixteen of them and their clients fit on two cores; the stack is the same
//! either way, minus the sockets.
//!
//! A balancer spreads the requests: `round-robin`, or `p2c` (two instances
//! at random, the one with fewer of the balancer's requests in flight). The
//! traffic is open-loop (Poisson arrivals sent on schedule, clients giving
//! up after 2 s), the flash sale's mix (`POST /payments` Critical 5 %,
//! `/orders` High 15 %, `/likes` Default 30 %, `/analytics` Low 50 %) from
//! 10 000 callers, each request naming its caller in `x-caller`: a calm
//! phase at half the database's capacity, a spike (4 × by default), and
//! recovery at half again.
//!
//! ```text
//! cargo run --release --example fleet -- [--quick] [--json PATH] [--check]
//!     [--instances 1,2,4,8,16] [--balancer round-robin|p2c|both]
//!     [--spike X] [--hold SECONDS] [--slots N] [--write-ms M]
//! ```
//!
//! Every run prints one row: the targets and their definitions are in
//! `figures.rs`. `--quick` runs 1, 4 and 8 instances with a 4 s spike (the
//! test's grid); the full grid is 1, 2, 4, 8 and 16 with an 8 s spike.
//! `--check` exits with status 1 when any run missed a target.

#[path = "../flash_sale/backend.rs"]
#[allow(dead_code)]
mod backend;
mod figures;
#[path = "../flash_sale/load.rs"]
#[allow(dead_code)]
mod load;
mod stack;
mod traffic;

use std::{path::PathBuf, sync::Arc, time::Duration};

use serde_json::json;
use tokio::time::Instant;

use figures::{Figures, Tick, Timing};
use load::Phase;
use stack::{Balancer, Fleet};

const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

/// How often the instances' limits are read.
pub const TICK: Duration = Duration::from_millis(20);

/// The flash sale's default mix: Critical, High, Default, Low.
const MIX: load::Mix = [5.0, 15.0, 30.0, 50.0];

struct Args {
    quick: bool,
    check: bool,
    json: Option<PathBuf>,
    instances: Option<Vec<usize>>,
    balancers: Vec<Balancer>,
    spike: f64,
    hold: Option<f64>,
    slots: usize,
    write_ms: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        check: false,
        json: None,
        instances: None,
        balancers: Balancer::ALL.to_vec(),
        spike: 4.0,
        hold: None,
        slots: 40,
        write_ms: 20,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        fn number<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, String>
        where
            T::Err: std::fmt::Display,
        {
            v.parse().map_err(|e| format!("{name}: {e}"))
        }
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--check" => args.check = true,
            "--json" => args.json = Some(value("--json")?.into()),
            "--instances" => {
                let list = value("--instances")?;
                let counts = list
                    .split(',')
                    .map(|n| number::<usize>("--instances", n.trim()))
                    .collect::<Result<Vec<_>, _>>()?;
                if counts.iter().any(|&n| n == 0 || n > 64) {
                    return Err("--instances: each count must be 1 to 64".into());
                }
                args.instances = Some(counts);
            }
            "--balancer" => {
                let name = value("--balancer")?;
                args.balancers = match name.as_str() {
                    "both" => Balancer::ALL.to_vec(),
                    other => vec![
                        Balancer::parse(other)
                            .ok_or(format!("--balancer: no balancer {other:?}"))?,
                    ],
                };
            }
            "--spike" => args.spike = number("--spike", &value("--spike")?)?,
            "--hold" => args.hold = Some(number("--hold", &value("--hold")?)?),
            "--slots" => args.slots = number("--slots", &value("--slots")?)?,
            "--write-ms" => args.write_ms = number("--write-ms", &value("--write-ms")?)?,
            "-h" | "--help" => {
                println!(
                    "usage: fleet [--quick] [--json PATH] [--check] [--instances 1,2,4,8,16]\n             [--balancer round-robin|p2c|both] [--spike X] [--hold SECONDS]\n             [--slots N] [--write-ms M]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.slots == 0 || args.write_ms == 0 {
        return Err("--slots and --write-ms must be positive".into());
    }
    if !(args.spike.is_finite() && args.spike > 0.0) {
        return Err("--spike must be a positive multiple of capacity".into());
    }
    if args.hold.is_some_and(|h| !(h.is_finite() && h >= 1.0)) {
        return Err("--hold must be at least 1 second".into());
    }
    Ok(args)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = parse_args().map_err(|e| {
        eprintln!("fleet: {e}");
        std::process::exit(2)
    })?;
    let counts = args.instances.clone().unwrap_or(if args.quick {
        vec![1, 4, 8]
    } else {
        vec![1, 2, 4, 8, 16]
    });
    let (calm, recovery) = if args.quick { (1.0, 2.0) } else { (2.0, 4.0) };
    let spike = args.hold.unwrap_or(if args.quick { 4.0 } else { 8.0 });
    let service = Duration::from_millis(args.write_ms);
    let capacity = args.slots as f64 / service.as_secs_f64();
    let phases = [
        Phase {
            duration: Duration::from_secs_f64(calm),
            rate: 0.5 * capacity,
        },
        Phase {
            duration: Duration::from_secs_f64(spike),
            rate: args.spike * capacity,
        },
        Phase {
            duration: Duration::from_secs_f64(recovery),
            rate: 0.5 * capacity,
        },
    ];
    let timing = Timing {
        spike_start: calm,
        spike_end: calm + spike,
    };
    println!(
        "database: {} slots x {} ms = {capacity:.0} writes/s, shared by every instance; calm {calm} s at {:.0} req/s, spike {spike} s at {:.0} req/s, recovery {recovery} s; clients time out after {} s",
        args.slots,
        args.write_ms,
        0.5 * capacity,
        args.spike * capacity,
        CLIENT_TIMEOUT.as_secs()
    );
    println!(
        "settled spike: its second half; limits read every {} ms\n",
        TICK.as_millis()
    );
    figures::print_header();

    let mut runs = Vec::new();
    for &balancer in &args.balancers {
        for &n in &counts {
            let f = run(n, balancer, args.slots, service, &phases, timing).await;
            figures::print_row(&f);
            runs.push(f);
        }
    }

    let missed: Vec<String> = runs
        .iter()
        .flat_map(|f| {
            f.misses()
                .into_iter()
                .map(move |m| format!("{} x {}: {m}", f.instances, f.balancer))
        })
        .collect();
    if let Some(path) = &args.json {
        let report = json!({
            "slots": args.slots,
            "write_ms": args.write_ms,
            "capacity_rps": capacity,
            "spike": args.spike,
            "phases_s": [calm, spike, recovery],
            "targets": {
                "limit_sum_ratio": figures::LIMIT_SUM_BAND,
                "max_limit_sum_cv": figures::MAX_CV,
                "min_jain": figures::MIN_JAIN,
                "min_critical_success": figures::MIN_CRITICAL,
                "max_recovery_ms": figures::MAX_RECOVERY_MS,
            },
            "runs": runs.iter().map(Figures::to_json).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
        println!("wrote {}", path.display());
    }
    if missed.is_empty() {
        println!("\nevery run met every target");
    } else {
        println!("\nmissed: {}", missed.join("; "));
        if args.check {
            std::process::exit(1);
        }
    }
    Ok(())
}

/// One run: a fresh database and fleet, the traffic, the figures.
async fn run(
    n: usize,
    balancer: Balancer,
    slots: usize,
    service: Duration,
    phases: &[Phase],
    timing: Timing,
) -> Figures {
    let db = backend::Database::new(slots, service);
    let fleet = Arc::new(Fleet::new(n, balancer, &db));
    let start = Instant::now();
    let sampler = {
        let fleet = Arc::clone(&fleet);
        tokio::spawn(async move {
            let mut ticks = Vec::new();
            let mut tick = tokio::time::interval(TICK);
            loop {
                tick.tick().await;
                let t = start.elapsed().as_secs_f64();
                ticks.push(Tick {
                    t,
                    limits: fleet.limits(),
                });
                if t > timing.spike_end {
                    return ticks;
                }
            }
        })
    };
    let samples = traffic::drive(Arc::clone(&fleet), phases, MIX, CLIENT_TIMEOUT, start).await;
    let ticks = sampler.await.expect("the sampler does not panic");
    Figures::of(figures::Run {
        instances: n,
        balancer: balancer.name(),
        slots,
        capacity_rps: db.capacity_rps(),
        timing,
        samples: &samples,
        ticks: &ticks,
        critical_shed_by_shedder: fleet.critical_shed(),
        limiter_refusals: fleet.limiter_refusals(),
    })
}
