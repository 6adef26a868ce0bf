//! Golden vectors and properties of AIMD.

use super::*;

const MS: Duration = Duration::from_millis(1);

fn aimd(min: usize, initial: usize, max: usize) -> Aimd {
    Aimd::builder()
        .min_limit(min)
        .initial_limit(initial)
        .max_limit(max)
        .build()
        .unwrap()
}

// The vectors of Netflix's AIMDLimitTest, plus the clamps.
#[test]
fn golden_defaults() {
    let a = Aimd::default();
    assert_eq!(a.limit(), 20);
    assert_eq!(
        (a.min, a.max, a.backoff, a.timeout),
        (20, 200, 0.9, Duration::from_secs(5))
    );
    assert_eq!(aimd(1, 10, 200).limit(), 10);
}

#[test]
fn golden_increase_on_success() {
    let mut a = aimd(1, 20, 200);
    assert_eq!(a.update(Sample::success(MS, 10)), 21);
}

#[test]
fn golden_decrease_on_drop() {
    let mut a = aimd(1, 30, 200);
    assert_eq!(a.update(Sample::dropped(Duration::ZERO, 0)), 27);
    let mut a = aimd(1, 20, 200);
    assert_eq!(a.update(Sample::dropped(Duration::ZERO, 20)), 18);
    assert_eq!(a.update(Sample::dropped(Duration::ZERO, 18)), 16);
    assert_eq!(a.update(Sample::dropped(Duration::ZERO, 16)), 14);
}

#[test]
fn golden_success_overflow_stays_at_max() {
    let mut a = aimd(1, 21, 21);
    assert_eq!(a.update(Sample::success(MS, 10)), 21);
}

#[test]
fn growth_only_when_half_the_limit_is_in_flight() {
    let mut a = aimd(1, 20, 200);
    assert_eq!(a.update(Sample::success(MS, 9)), 20);
    assert_eq!(a.update(Sample::success(MS, 10)), 21);
    // 10 × 2 = 20 < 21: no longer enough.
    assert_eq!(a.update(Sample::success(MS, 10)), 21);
    assert_eq!(a.update(Sample::success(MS, 11)), 22);
}

#[test]
fn clamps_at_min_and_max() {
    let mut a = Aimd::default();
    assert_eq!(a.update(Sample::dropped(MS, 20)), 20, "never below min 20");
    let mut a = aimd(5, 5, 6);
    assert_eq!(a.update(Sample::success(MS, 5)), 6);
    assert_eq!(a.update(Sample::success(MS, 6)), 6);
    for _ in 0..10 {
        a.update(Sample::dropped(MS, 6));
    }
    assert_eq!(a.limit(), 5);
}

#[test]
fn rtt_over_timeout_is_a_drop() {
    let mut a = Aimd::builder()
        .min_limit(1)
        .timeout(Duration::from_secs(1))
        .build()
        .unwrap();
    assert_eq!(a.update(Sample::success(Duration::from_secs(1), 20)), 21);
    assert_eq!(
        a.update(Sample::success(Duration::from_millis(1001), 20)),
        18
    );
}

#[test]
fn fixed_latency_target() {
    let mut a = Aimd::builder()
        .min_limit(1)
        .latency_target(LatencyTarget::fixed(50 * MS))
        .build()
        .unwrap();
    assert_eq!(a.update(Sample::success(50 * MS, 20)), 21);
    assert_eq!(a.update(Sample::success(51 * MS, 20)), 18);
}

#[test]
fn min_rtt_multiple_target() {
    let mut a = Aimd::builder()
        .min_limit(1)
        .latency_target(LatencyTarget::MinRttMultiple {
            multiple: 2.0,
            floor: MS,
            window: 4,
        })
        .build()
        .unwrap();
    assert_eq!(a.update(Sample::success(10 * MS, 20)), 21);
    assert_eq!(
        a.update(Sample::success(20 * MS, 20)),
        22,
        "exactly 2x is fine"
    );
    assert_eq!(
        a.update(Sample::success(21 * MS, 20)),
        19,
        "slower than 2x min"
    );
    assert_eq!(a.recent_min_rtt(), Some(10 * MS));
    // The minimum follows the backend after two windows without it.
    for _ in 0..8 {
        a.update(Sample::success(30 * MS, 20));
    }
    assert_eq!(a.recent_min_rtt(), Some(30 * MS));
    let before = a.limit();
    assert_eq!(
        a.update(Sample::success(40 * MS, 20)),
        before + 1,
        "under 2x the new min"
    );
}

#[test]
fn min_rtt_floor_ignores_jitter_on_tiny_minimums() {
    let mut a = Aimd::builder()
        .min_limit(1)
        .latency_target(LatencyTarget::min_rtt_multiple(2.0))
        .build()
        .unwrap();
    let us = Duration::from_micros(1);
    assert_eq!(a.update(Sample::success(100 * us, 20)), 21);
    assert_eq!(
        a.update(Sample::success(900 * us, 20)),
        22,
        "within the 1 ms floor"
    );
    assert_eq!(a.update(Sample::success(1200 * us, 20)), 19);
}

#[test]
fn per_limit_growth_adds_one_per_limit_of_successes() {
    let mut a = Aimd::builder()
        .min_limit(1)
        .initial_limit(4)
        .growth(Growth::PerLimit)
        .build()
        .unwrap();
    for _ in 0..3 {
        assert_eq!(a.update(Sample::success(MS, 4)), 4);
    }
    assert_eq!(a.update(Sample::success(MS, 4)), 5);
    // Idle samples do not count towards growth.
    for _ in 0..10 {
        assert_eq!(a.update(Sample::success(MS, 1)), 5);
    }
    for _ in 0..4 {
        a.update(Sample::success(MS, 5));
    }
    // A drop resets the count.
    assert_eq!(a.update(Sample::dropped(MS, 5)), 4);
    for _ in 0..3 {
        assert_eq!(a.update(Sample::success(MS, 4)), 4);
    }
    assert_eq!(a.update(Sample::success(MS, 4)), 5);
}

#[test]
fn decrease_once_per_rtt_ignores_drops_admitted_before_the_last_decrease() {
    let mut a = Aimd::builder()
        .min_limit(1)
        .initial_limit(40)
        .decrease_once_per_rtt(true)
        .build()
        .unwrap();
    let at = |ms: u64| Duration::from_millis(ms);
    // Admitted at 0 ms, ended at 10 ms: a decrease.
    assert_eq!(a.update(Sample::dropped(at(10), 40).started_at(at(0))), 36);
    // Admitted before 10 ms: the same overload, not counted again.
    assert_eq!(a.update(Sample::dropped(at(10), 40).started_at(at(1))), 36);
    assert_eq!(a.update(Sample::dropped(at(2), 40).started_at(at(9))), 36);
    // Admitted after the decrease: a new overload.
    assert_eq!(a.update(Sample::dropped(at(10), 36).started_at(at(10))), 32);
    // Netflix's default counts every drop.
    let mut n = aimd(1, 40, 200);
    assert_eq!(n.update(Sample::dropped(at(10), 40)), 36);
    assert_eq!(n.update(Sample::dropped(at(10), 40).started_at(at(1))), 32);
}

#[test]
fn builder_rejects_out_of_range() {
    let b = Aimd::builder;
    for (bad, field) in [
        (b().backoff_ratio(0.49), "backoff_ratio"),
        (b().backoff_ratio(1.0), "backoff_ratio"),
        (b().backoff_ratio(f64::NAN), "backoff_ratio"),
        (b().min_limit(0).initial_limit(0), "min_limit"),
        (b().max_limit(10), "max_limit"),
        (b().initial_limit(201), "initial_limit"),
        (b().initial_limit(19), "initial_limit"),
        (b().timeout(Duration::ZERO), "timeout"),
        (
            b().latency_target(LatencyTarget::fixed(Duration::ZERO)),
            "latency_target",
        ),
        (
            b().latency_target(LatencyTarget::min_rtt_multiple(1.0)),
            "latency_target",
        ),
    ] {
        assert_eq!(bad.build().unwrap_err().field(), field);
    }
    assert!(b().backoff_ratio(0.5).build().is_ok());
}
