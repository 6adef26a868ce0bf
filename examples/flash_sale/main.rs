//! The flash sale: one service, three ways, one 10x spike.
//!
//! In one process, on loopback, the same axum shop (four routes over a
//! simulated database, see `backend.rs`) is served three ways:
//!
//! - `unprotected`: the app as it is;
//! - `tower`: tower's built-ins, `LoadShed` over `ConcurrencyLimit` sized to
//!   the database, with axum's usual `HandleErrorLayer` answering 503;
//! - `spillway`: this crate's stack, see `stacks.rs`.
//!
//! Each gets the same open-loop traffic: a calm phase at half the database's
//! capacity, a spike at ten times it, and recovery at half again. Traffic mix:
//! `POST /payments` Critical 5 %, `/orders` High 15 %, `/likes` Default 30 %,
//! `/analytics` Low 50 %. Clients give up after 2 s.
//!
//! ```text
//! cargo run --release --example flash_sale [-- --quick] [--json PATH] [--svg PATH]
//!                                           [--slots N] [--service-ms M]
//! ```

mod backend;
mod load;
mod protect;
mod report;
mod stacks;

use std::{
    path::PathBuf,
    sync::{Arc, atomic::Ordering},
    time::Duration,
};

use load::{Live, Phase};
use report::Run;

const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);

struct Args {
    quick: bool,
    json: Option<PathBuf>,
    svg: Option<PathBuf>,
    slots: usize,
    service_ms: u64,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        quick: false,
        json: None,
        svg: None,
        slots: 20,
        service_ms: 50,
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--quick" => args.quick = true,
            "--json" => args.json = Some(value("--json")?.into()),
            "--svg" => args.svg = Some(value("--svg")?.into()),
            "--slots" => {
                args.slots = value("--slots")?
                    .parse()
                    .map_err(|e| format!("--slots: {e}"))?
            }
            "--service-ms" => {
                args.service_ms = value("--service-ms")?
                    .parse()
                    .map_err(|e| format!("--service-ms: {e}"))?
            }
            "-h" | "--help" => {
                println!(
                    "usage: flash_sale [--quick] [--json PATH] [--svg PATH] [--slots N] [--service-ms M]"
                );
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.slots == 0 || args.service_ms == 0 {
        return Err("--slots and --service-ms must be positive".into());
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
    let service = Duration::from_millis(args.service_ms);
    let capacity = args.slots as f64 / service.as_secs_f64();
    let (calm, spike, recovery) = if args.quick {
        (1.0, 3.0, 1.0)
    } else {
        (3.0, 8.0, 4.0)
    };
    let phases = [
        Phase {
            duration: Duration::from_secs_f64(calm),
            rate: 0.5 * capacity,
        },
        Phase {
            duration: Duration::from_secs_f64(spike),
            rate: 10.0 * capacity,
        },
        Phase {
            duration: Duration::from_secs_f64(recovery),
            rate: 0.5 * capacity,
        },
    ];
    println!(
        "database: {} slots x {} ms = {:.0} writes/s; spike {:.0} req/s for {spike} s; clients time out after {} s",
        args.slots,
        args.service_ms,
        capacity,
        10.0 * capacity,
        CLIENT_TIMEOUT.as_secs()
    );

    let mut runs = Vec::new();
    for scenario in stacks::Scenario::ALL {
        runs.push(run(scenario, &phases, args.slots, service).await?);
    }

    report::print_table(&runs);
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

async fn run(
    scenario: stacks::Scenario,
    phases: &[Phase],
    slots: usize,
    service: Duration,
) -> Result<Run, Box<dyn std::error::Error>> {
    let db = backend::Database::new(slots, service);
    let served = stacks::serve(scenario, Arc::clone(&db)).await?;
    println!("\n== {} ({})", scenario.name(), scenario.describe());

    let live = Arc::new(Live::default());
    let start = tokio::time::Instant::now();
    let limits = Arc::new(std::sync::Mutex::new(Vec::new()));
    let progress = {
        let live = Arc::clone(&live);
        let db = Arc::clone(&db);
        let limits = Arc::clone(&limits);
        let limit_of = served.limit.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut last = [0u64; 5];
            for n in 1u64.. {
                tick.tick().await;
                let limit = limit_of.as_ref().map(|f| f());
                if let Some(l) = limit {
                    limits
                        .lock()
                        .unwrap()
                        .push((start.elapsed().as_secs_f64(), l as f64));
                }
                if n % 10 != 0 {
                    continue;
                }
                let now = [
                    live.sent.load(Ordering::Relaxed),
                    live.ok.load(Ordering::Relaxed),
                    live.shed.load(Ordering::Relaxed),
                    live.timeout.load(Ordering::Relaxed),
                    live.error.load(Ordering::Relaxed),
                ];
                let d: Vec<u64> = now.iter().zip(last).map(|(n, l)| n - l).collect();
                last = now;
                let limit = limit.map(|l| format!("  limit {l}")).unwrap_or_default();
                println!(
                    "  t={:>2}s  sent {:>5}/s  ok {:>5}/s  shed {:>5}/s  timed out {:>5}/s  failed {:>4}/s  db busy {:>5}{limit}",
                    n / 10,
                    d[0],
                    d[1],
                    d[2],
                    d[3],
                    d[4],
                    db.busy()
                );
            }
        })
    };

    let samples = load::drive(served.addr, phases, CLIENT_TIMEOUT, Arc::clone(&live)).await;
    let duration = start.elapsed();
    progress.abort();
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
    })
}
