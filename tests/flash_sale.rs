//! The flash-sale demonstration, run as users run it (`--quick`), and its
//! claims checked: the crate's stack keeps Critical traffic alive and serves
//! the rest by priority at close to the backend's capacity, while the
//! unprotected service collapses and tower's built-ins shed blindly.
//!
//! The example is run with `cargo run --release` (as the README runs it) in a
//! separate process; its `--json` figures are what is checked.

mod support;

use serde_json::Value;
use support::{f, run_example};

/// The two runs measure a real-time load on a 2-core machine: never at once.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

fn run_quick() -> Value {
    run_example("flash_sale", &[], &["--quick"])
}

/// The share of a tier's requests sent during the spike that succeeded.
fn spike_ok(figures: &Value, scenario: &str, priority: &str) -> f64 {
    let s = &figures["scenarios"][scenario]["spike"][priority];
    f(&s["ok"]) / f(&s["offered"]).max(1.0)
}

fn spike_timeout(figures: &Value, scenario: &str) -> f64 {
    let tiers = ["critical", "high", "default", "low"];
    let sum = |field: &str| -> f64 {
        tiers
            .iter()
            .map(|p| f(&figures["scenarios"][scenario]["spike"][p][field]))
            .sum()
    };
    sum("timeout") / sum("offered")
}

#[test]
fn flash_sale_quick_run_keeps_its_promises() {
    let _alone = one_at_a_time();
    let figures = run_quick();
    let spike = |scenario: &str, field: &str| f(&figures["scenarios"][scenario]["spike"][field]);

    // The crate's stack: every tier of the JSON is there, and all of the
    // figures are consistent.
    for scenario in ["unprotected", "tower", "spillway", "spillway+spill"] {
        for p in ["critical", "high", "default", "low"] {
            let s = &figures["scenarios"][scenario][p];
            for field in [
                "offered", "ok", "accepted", "shed", "timeout", "p50_ms", "p99_ms",
            ] {
                assert!(s[field].is_number(), "{scenario}.{p}.{field} missing");
            }
            let answered = f(&s["ok"]) + f(&s["accepted"]) + f(&s["shed"]) + f(&s["timeout"]);
            assert!(answered <= f(&s["offered"]));
            if scenario != "spillway+spill" {
                assert_eq!(f(&s["accepted"]), 0.0, "{scenario} has no spill layer");
            }
        }
    }

    // Spillway: Critical survives, capacity is used, leftovers go by priority.
    let critical = spike_ok(&figures, "spillway", "critical");
    assert!(critical >= 0.99, "spillway critical {critical}");
    let goodput = spike("spillway", "goodput_of_capacity");
    assert!(goodput >= 0.90, "spillway goodput {goodput}");
    let high_of_best = spike("spillway", "high_of_best");
    assert!(high_of_best >= 0.80, "spillway high of best {high_of_best}");
    let (high, default, low) = (
        spike_ok(&figures, "spillway", "high"),
        spike_ok(&figures, "spillway", "default"),
        spike_ok(&figures, "spillway", "low"),
    );
    // High before Default, Default before Low. When nothing is left after
    // High, Default and Low both get almost nothing, and the few requests
    // that slipped through as the spike began can order them either way: a
    // percentage point of slack there.
    assert!(high > default, "high {high}, default {default}");
    assert!(default + 0.01 >= low, "default {default}, low {low}");
    // Every refusal told the client when to come back.
    for scenario in ["spillway", "spillway+spill"] {
        for p in ["critical", "high", "default", "low"] {
            let s = &figures["scenarios"][scenario][p];
            assert_eq!(f(&s["shed_without_retry_after"]), 0.0, "{scenario} {p}");
        }
    }

    // Spillway + spill: the same stack, and the deferrable tiers the spike
    // would have refused are accepted for later instead, then drained with
    // nothing lost. Critical and High fare as they do without the spill.
    let critical = spike_ok(&figures, "spillway+spill", "critical");
    assert!(critical >= 0.99, "spillway+spill critical {critical}");
    let goodput = spike("spillway+spill", "goodput_of_capacity");
    assert!(goodput >= 0.90, "spillway+spill goodput {goodput}");
    for p in ["default", "low"] {
        let s = &figures["scenarios"]["spillway+spill"]["spike"][p];
        let answered = (f(&s["ok"]) + f(&s["accepted"])) / f(&s["offered"]).max(1.0);
        assert!(
            answered >= 0.99,
            "spillway+spill {p}: {answered} served or accepted"
        );
        assert!(
            f(&s["accepted"]) > 0.0,
            "spillway+spill {p}: nothing spilled"
        );
    }
    for p in ["critical", "high"] {
        let s = &figures["scenarios"]["spillway+spill"][p];
        assert_eq!(f(&s["accepted"]), 0.0, "{p} is not deferrable");
    }
    let spill = &figures["scenarios"]["spillway+spill"]["spill"];
    let accepted: f64 = ["default", "low"]
        .iter()
        .map(|p| f(&figures["scenarios"]["spillway+spill"][p]["accepted"]))
        .sum();
    assert!(f(&spill["stored"]) >= accepted, "{spill}");
    assert_eq!(f(&spill["lost"]), 0.0, "{spill}");
    assert_eq!(f(&spill["drained"]), f(&spill["stored"]), "{spill}");
    assert!(
        f(&spill["replayed_writes"]) >= f(&spill["drained"]),
        "{spill}"
    );
    assert!(spill["time_to_drain_s"].is_number(), "{spill}");
    // With the traffic gone, the drain keeps the database busy.
    let drain = f(&spill["drain_of_capacity"]);
    assert!(drain >= 0.80, "drain at {drain} of capacity");

    // Unprotected: collapse. Most spike requests time out and goodput falls
    // far below capacity.
    let timeouts = spike_timeout(&figures, "unprotected");
    assert!(timeouts > 0.5, "unprotected timeouts {timeouts}");
    let goodput = spike("unprotected", "goodput_of_capacity");
    assert!(goodput < 0.5, "unprotected goodput {goodput}");

    // tower's built-ins: priority-blind. Critical fares no better than Low.
    let (critical, low) = (
        spike_ok(&figures, "tower", "critical"),
        spike_ok(&figures, "tower", "low"),
    );
    assert!(critical < 0.5, "tower critical {critical}");
    assert!(
        critical <= low + 0.1,
        "tower critical {critical} vs low {low}"
    );
}

/// The sweep's small grid (`--sweep --quick`), run as a user would, on
/// traffic shapes the defaults were not tuned for: the flash sale's mix over
/// HTTP/1.1, a Critical-heavy mix whose Critical demand alone exceeds
/// capacity on a 4-slot database, a 100-slot slow database over HTTP/2, and
/// an 8-slot fast one.
///
/// The thresholds are the targets with the margin a loaded 2-core
/// machine needs (it also runs the load generator); `BENCHMARKS.md` shows
/// the figures of a quiet run against the exact targets.
#[test]
fn sweep_quick_grid_holds_across_shapes() {
    let _alone = one_at_a_time();
    let figures = run_example("flash_sale", &[], &["--sweep", "--quick"]);
    let shapes = figures["shapes"].as_array().expect("shapes");
    assert!(shapes.len() >= 4);
    let mut critical_over_capacity = false;
    for s in shapes {
        let name = s["shape"].as_str().unwrap_or("?");
        let demand = f(&s["critical_demand_of_capacity"]);
        if demand <= 0.9 {
            let ok = f(&s["critical_ok"]);
            // (Target 99.9 %; a loaded CI machine has refused a few.)
            assert!(ok >= 0.98, "{name}: critical ok {ok}");
            let p99 = f(&s["critical_p99_writes"]);
            assert!(p99 <= 10.0, "{name}: critical p99 {p99} writes");
        } else if demand > 1.0 {
            critical_over_capacity = true;
            let share = f(&s["critical_of_capacity"]);
            assert!(share >= 0.7, "{name}: critical {share} of capacity");
        }
        let goodput = f(&s["goodput_of_capacity"]);
        assert!(goodput >= 0.7, "{name}: goodput {goodput}");
        // Every refusal says when to come back; no connection fails.
        assert_eq!(f(&s["refusals_without_retry_after"]), 0.0, "{name}");
        assert_eq!(f(&s["failed"]), 0.0, "{name}");
        // The limit settles near the slot count and never runs away.
        let mean = f(&s["limit_mean_of_slots"]);
        assert!((0.7..=1.4).contains(&mean), "{name}: limit {mean} x slots");
        let max = f(&s["limit_max_of_slots"]);
        assert!(max <= 3.0, "{name}: limit max {max} x slots");
        // Shedding stops after the spike.
        let after = f(&s["after_all_ok"]);
        assert!(after >= 0.8, "{name}: {after} ok after the spike");
        // Tiers are served in order during the spike.
        let tiers: Vec<f64> = s["tier_ok_share"]
            .as_array()
            .expect("tier shares")
            .iter()
            .map(f)
            .collect();
        let offered: Vec<f64> = s["tier_offered"]
            .as_array()
            .expect("tier counts")
            .iter()
            .map(f)
            .collect();
        // (Slack: five points, or five requests of the lower tier. On the
        // 4-slot shape a lower tier has a few dozen requests in the spike,
        // and the handful admitted as it opens, before any queue forms (the
        // limit is then where the calm left it, up to twice the slots),
        // order the tiers either way: with 60 % Critical over capacity,
        // High gets 1 of 91 while Low has had 4 of 41.)
        for i in 1..tiers.len() {
            let slack = (5.0 / offered[i].max(1.0)).max(0.05);
            assert!(
                tiers[i - 1] + slack >= tiers[i],
                "{name}: tiers out of order {tiers:?} (sent {offered:?})"
            );
        }
    }
    assert!(
        critical_over_capacity,
        "the grid has a shape where Critical alone exceeds capacity"
    );
}
