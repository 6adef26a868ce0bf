//! `--sweep`: the crate's stack, with its defaults, over a family of traffic
//! shapes nobody tuned it for, one row per shape.
//!
//! The family: Critical from 5 % to 60 % of the traffic, spikes from 2× to 10×
//! capacity, databases of 4 to 100 slots taking 5 to 100 ms a write, clients
//! on HTTP/1.1 keep-alive connections and on HTTP/2. Shapes whose spike would
//! ask more than about 8,000 requests a second of a 2-core machine (that also
//! runs the load generator) are left out: they would measure the machine.

use std::{path::Path, time::Duration};

use crate::{
    load::Protocol::{Http1, Http2},
    stacks::Scenario,
    targets::{self, AFTER, Figures, Shape},
};

const fn shape(
    mix: [f64; 4],
    spike: f64,
    slots: usize,
    write_ms: u64,
    protocol: crate::load::Protocol,
) -> Shape {
    Shape {
        mix,
        spike,
        slots,
        write_ms,
        protocol,
    }
}

/// The small grid the tests run: the flash sale's own shape, a Critical-heavy
/// mix whose Critical demand alone exceeds capacity, a big slow database, and
/// a small fast one (10 ms: at 5 ms the figures are the machine's, see
/// `BENCHMARKS.md`).
pub const QUICK: [Shape; 4] = [
    shape([5.0, 15.0, 30.0, 50.0], 10.0, 20, 50, Http1),
    shape([60.0, 20.0, 10.0, 10.0], 3.0, 4, 100, Http1),
    shape([20.0, 20.0, 30.0, 30.0], 4.0, 100, 100, Http2),
    shape([10.0, 30.0, 30.0, 30.0], 2.0, 8, 10, Http1),
];

/// The whole family.
pub const FULL: [Shape; 16] = [
    shape([5.0, 15.0, 30.0, 50.0], 10.0, 20, 50, Http1),
    shape([5.0, 15.0, 30.0, 50.0], 10.0, 20, 50, Http2),
    shape([5.0, 15.0, 30.0, 50.0], 2.0, 50, 50, Http1),
    shape([5.0, 45.0, 25.0, 25.0], 5.0, 4, 5, Http1),
    shape([10.0, 30.0, 30.0, 30.0], 2.0, 10, 5, Http1),
    shape([20.0, 20.0, 30.0, 30.0], 4.0, 100, 100, Http2),
    shape([20.0, 20.0, 30.0, 30.0], 2.0, 4, 100, Http1),
    shape([30.0, 30.0, 20.0, 20.0], 1.5, 50, 20, Http1),
    shape([40.0, 20.0, 20.0, 20.0], 2.0, 100, 50, Http2),
    shape([40.0, 30.0, 20.0, 10.0], 4.0, 20, 20, Http1),
    shape([45.0, 15.0, 15.0, 25.0], 2.0, 8, 5, Http2),
    shape([60.0, 20.0, 10.0, 10.0], 3.0, 4, 100, Http1),
    shape([60.0, 20.0, 10.0, 10.0], 8.0, 10, 20, Http2),
    shape([60.0, 10.0, 10.0, 20.0], 2.0, 20, 10, Http1),
    shape([15.0, 25.0, 30.0, 30.0], 5.0, 8, 10, Http1),
    shape([10.0, 10.0, 40.0, 40.0], 2.0, 100, 50, Http1),
];

/// Runs the grid and prints (and optionally writes) one row per shape.
pub async fn run(
    quick: bool,
    hold: Option<f64>,
    json: Option<&Path>,
) -> Result<(), Box<dyn std::error::Error>> {
    let grid: &[Shape] = if quick { &QUICK } else { &FULL };
    let hold = hold.unwrap_or(if quick { 4.0 } else { 8.0 });
    let calm = 2.0;
    let mut rows = Vec::new();
    for shape in grid {
        println!(
            "\n### {} ({:.0} writes/s, spike {:.0} req/s for {hold} s)",
            shape.label(),
            shape.capacity(),
            shape.spike * shape.capacity()
        );
        let phases = crate::phases(shape, calm, hold, AFTER.as_secs_f64());
        let run = crate::run(Scenario::Spillway, shape, &phases).await?;
        let figures = Figures::of(*shape, &run);
        targets::print_header();
        targets::print_row(&figures);
        rows.push(figures);
        // Let the previous shape's sockets close before the next one starts.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!();
    println!(
        "sweep: {} shapes, spike held {hold} s, then {} s after",
        grid.len(),
        AFTER.as_secs()
    );
    targets::print_header();
    for row in &rows {
        targets::print_row(row);
    }
    let met = rows.iter().filter(|r| r.misses().is_empty()).count();
    println!("{met} of {} shapes met every target", rows.len());
    if let Some(path) = json {
        let json = serde_json::json!({
            "hold_s": hold,
            "after_s": AFTER.as_secs(),
            "shapes": rows.iter().map(Figures::to_json).collect::<Vec<_>>(),
        });
        std::fs::write(path, serde_json::to_vec_pretty(&json)?)?;
        println!("wrote {}", path.display());
    }
    Ok(())
}
