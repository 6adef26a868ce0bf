//! What the examples that serve a stack share: the log of the layers'
//! transitions, and the reading of their flags, those that size the
//! simulated database among them. Each
//! example includes it with `#[path = "common/mod.rs"] mod common;`.

// Each example uses a different subset of these helpers.
#![allow(dead_code)]

use std::time::Duration;

/// Prints the layers' transitions, not every request: shedding started and
/// stopped (info, warn); with `SPILLWAY_LOG=debug` also every move of the
/// admission level and the concurrency limit. Without the `tracing`
/// feature, nothing.
pub fn init_tracing() {
    #[cfg(feature = "tracing")]
    {
        use tracing_subscriber::{filter::LevelFilter, filter::Targets, prelude::*};
        let level = std::env::var("SPILLWAY_LOG")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(LevelFilter::INFO);
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer())
            .with(Targets::new().with_target("tower_spillway", level))
            .init();
    }
}

/// Hands each flag of the command line to `flag`, with a closure that takes
/// the flag's value (the next argument; without one, `usage` is called).
pub fn parse_flags(usage: fn(&str) -> !, mut flag: impl FnMut(&str, &mut dyn FnMut() -> String)) {
    let mut it = std::env::args().skip(1);
    while let Some(name) = it.next() {
        let mut value = || {
            it.next()
                .unwrap_or_else(|| usage(&format!("{name} needs a value")))
        };
        flag(&name, &mut value);
    }
}

/// Prints `error` (if any) and the `usage` line, and exits: with status 0
/// when asked for help (no error), 2 otherwise.
pub fn exit_with_usage(error: &str, usage: &str) -> ! {
    if !error.is_empty() {
        eprintln!("error: {error}");
    }
    eprintln!("{usage}");
    std::process::exit(if error.is_empty() { 0 } else { 2 })
}

/// The value of `--capacity`: a positive number of write slots.
pub fn capacity(value: String, usage: fn(&str) -> !) -> usize {
    value
        .parse()
        .ok()
        .filter(|&c| c > 0)
        .unwrap_or_else(|| usage("--capacity: a positive number of write slots"))
}

/// The value of `--service-ms`: positive milliseconds per write.
pub fn service_ms(value: String, usage: fn(&str) -> !) -> Duration {
    let ms: u64 = value
        .parse()
        .ok()
        .filter(|&ms| ms > 0)
        .unwrap_or_else(|| usage("--service-ms: positive milliseconds per write"));
    Duration::from_millis(ms)
}
