use std::time::Duration;

use proptest::prelude::*;

use super::*;

const MS: Duration = Duration::from_millis(1);

/// A gradient with windows of `n` samples and otherwise the defaults.
fn gradient(n: u32) -> Gradient {
    Gradient::builder().window_samples(n).build().unwrap()
}

/// Feeds one window of `n` samples, admitted at `start` with `in_flight` in
/// flight, each taking `rtt`; returns the limit after it.
fn window(g: &mut Gradient, start: Duration, n: u32, rtt: Duration, in_flight: usize) -> usize {
    let mut limit = g.limit();
    for i in 0..n {
        let s =
            Sample::success(rtt, in_flight).started_at(start + Duration::from_micros(u64::from(i)));
        limit = g.update(s);
    }
    limit
}

#[test]
fn golden_slow_start_then_additive_growth() {
    let mut g = gradient(4);
    let mut t = Duration::ZERO;
    let mut limits = Vec::new();
    for _ in 0..4 {
        let l = g.limit();
        limits.push(window(&mut g, t, 4, 20 * MS, l));
        t += 21 * MS;
    }
    // Slow start: +50 % per saturated window (10, 15, 22.5, 33.75, 50.6,
    // each rounded to the nearest).
    assert_eq!(limits, [15, 23, 34, 51]);
    // A window 50 % over the baseline (far beyond the 2 ms slack) is
    // congested at once and ends slow start: × 20/30 (33.75).
    let l = g.limit();
    assert_eq!(window(&mut g, t, 4, 30 * MS, l), 34);
    assert!(!g.in_slow_start());
    t += 31 * MS;
    // Afterwards +2 % (at least half a request) per saturated window:
    // 34.4, then 35.1.
    let l = g.limit();
    assert_eq!(window(&mut g, t, 4, 20 * MS, l), 34);
    t += 21 * MS;
    let l = g.limit();
    assert_eq!(window(&mut g, t, 4, 20 * MS, l), 35);
}

#[test]
fn golden_drop_backs_off_by_the_ratio() {
    let mut g = Gradient::builder()
        .initial_limit(20)
        .window_samples(2)
        .build()
        .unwrap();
    g.update(Sample::success(10 * MS, 20));
    assert_eq!(g.update(Sample::dropped(10 * MS, 20)), 18);
    // An rtt over the timeout is a drop too.
    let t = 20 * MS;
    g.update(Sample::success(6 * Duration::from_secs(1), 18).started_at(t));
    assert_eq!(g.update(Sample::success(10 * MS, 18).started_at(t)), 16);
}

#[test]
fn a_slow_window_is_confirmed_by_the_next_unless_far_off() {
    let mut g = Gradient::builder()
        .initial_limit(100)
        .window_samples(10)
        .build()
        .unwrap();
    let mut t = Duration::ZERO;
    assert_eq!(window(&mut g, t, 10, 100 * MS, 100), 150); // baseline 100 ms
    t += 101 * MS;
    // 20 % over (slack 10 ms): one such window only holds ...
    assert_eq!(window(&mut g, t, 10, 120 * MS, 150), 150);
    t += 121 * MS;
    // ... a second cuts by the lesser of the two: × 100/115 (130.4).
    assert_eq!(window(&mut g, t, 10, 115 * MS, 150), 130);
    t += 116 * MS;
    // A hiccup followed by a normal window cuts nothing.
    assert_eq!(window(&mut g, t, 10, 125 * MS, 130), 130);
    t += 126 * MS;
    assert_eq!(window(&mut g, t, 10, 101 * MS, 130), 133);
    t += 102 * MS;
    // Far over (more than 4 × the slack): cut at once, at most halved
    // (133.04 / 2).
    assert_eq!(window(&mut g, t, 10, 400 * MS, 133), 67);
}

#[test]
fn a_small_limit_is_cut_by_the_ratio_not_by_rounding() {
    // A drop backs off by 0.9: a limit of 2 keeps 1.8 of a request, shown
    // as 2; a second drop leaves 1.62, still 2; a third 1.46, shown as 1.
    // Floored at each step, the first drop alone would halve it.
    let mut g = Gradient::builder()
        .initial_limit(2)
        .window_samples(3)
        .build()
        .unwrap();
    let mut t = Duration::ZERO;
    let mut limits = Vec::new();
    for _ in 0..3 {
        for i in 0..3u64 {
            let s = Sample::dropped(10 * MS, 2).started_at(t + Duration::from_micros(i));
            g.update(s);
        }
        limits.push(g.limit());
        t += 11 * MS;
    }
    assert_eq!(limits, [2, 2, 1]);
}

#[test]
fn a_congested_window_cuts_small_and_large_limits_alike() {
    // The same queue seen by two instances of one backend, one holding 2 of
    // its slots and one 8: both keep baseline / mean of their limit (here
    // 20/24), so the small one is not cut to half of its share.
    let after = |initial: usize| {
        let mut g = Gradient::builder()
            .initial_limit(initial)
            .window_samples(3)
            .build()
            .unwrap();
        g.slow_start = false;
        let mut t = Duration::ZERO;
        for rtt in [20 * MS, 24 * MS, 24 * MS] {
            let l = g.limit();
            for i in 0..3u64 {
                g.update(Sample::success(rtt, l).started_at(t + Duration::from_micros(i)));
            }
            t += rtt + MS;
        }
        (g.limit(), g.estimate)
    };
    // 2 + 0.5 = 2.5 after the first window, × 20/24 = 2.08, shown as 2;
    // 8 + 0.5 = 8.5, × 20/24 = 7.08, shown as 7.
    let (small, small_estimate) = after(2);
    let (large, large_estimate) = after(8);
    assert_eq!((small, large), (2, 7));
    let kept = 20.0 / 24.0;
    assert!((small_estimate - 2.5 * kept).abs() < 1e-9);
    assert!((large_estimate - 8.5 * kept).abs() < 1e-9);
}

#[test]
fn the_window_statistic_is_the_mean() {
    // A backend of many slots queues only what is beyond its slots: most
    // requests of the window are fast, the mean is not.
    let mut g = Gradient::builder()
        .initial_limit(10)
        .window_samples(10)
        .build()
        .unwrap();
    assert_eq!(window(&mut g, Duration::ZERO, 10, 50 * MS, 10), 15);
    let l = g.limit();
    for i in 0..10u64 {
        let rtt = if i < 8 { 50 * MS } else { 200 * MS };
        g.update(Sample::success(rtt, l).started_at(60 * MS + Duration::from_micros(i)));
    }
    // Mean 80 ms, more than 4 × the slack over 50 ms: × 50/80.
    assert_eq!(g.limit(), 9);
}

#[test]
fn the_slack_grows_with_the_hosts_jitter() {
    let us = Duration::from_micros(1);
    let mut g = Gradient::builder().window_samples(5).build().unwrap();
    let mut t = Duration::ZERO;
    // Unsaturated windows wobbling between 5 and 7 ms: jitter, no queue.
    for i in 0..40 {
        let rtt = if i % 2 == 0 { 5 * MS } else { 7 * MS };
        window(&mut g, t, 5, rtt, 5);
        t += 10 * MS;
    }
    assert_eq!(g.limit(), 10);
    // Saturated windows at 7.5 ms: within three times the jitter, growth.
    let l = g.limit();
    assert!(window(&mut g, t, 5, 7_500 * us, l) > l);
    t += 10 * MS;
    let l = g.limit();
    assert!(window(&mut g, t, 5, 7_500 * us, l) > l);
}

#[test]
fn the_tolerance_floor_ignores_jitter_on_a_fast_backend() {
    let us = Duration::from_micros(1);
    let mut g = gradient(5);
    window(&mut g, Duration::ZERO, 5, 200 * us, 10);
    // 1 ms over a 200 µs baseline is 6×, but only the floor's worth: not a
    // queue; the limit grows.
    let l = g.limit();
    assert!(window(&mut g, 10 * MS, 5, 1_200 * us, l) > l);
    // 1.5 ms over is, confirmed by a second window.
    let l = g.limit();
    assert_eq!(window(&mut g, 20 * MS, 5, 1_700 * us, l), l);
    assert!(window(&mut g, 30 * MS, 5, 1_700 * us, l) < l);
}

#[test]
fn unused_headroom_decays_to_twice_the_peak() {
    let mut g = Gradient::builder()
        .initial_limit(100)
        .window_samples(5)
        .build()
        .unwrap();
    let mut t = Duration::ZERO;
    let mut limits = Vec::new();
    for _ in 0..16 {
        limits.push(window(&mut g, t, 5, 20 * MS, 10));
        t += 30 * MS;
    }
    // × 0.9 per window (90, 81, 72.9, 65.6), down to 2 × 10 in flight.
    assert_eq!(&limits[..4], [90, 81, 73, 66]);
    assert_eq!(*limits.last().unwrap(), 20);
    // Idle: never below 4.
    for _ in 0..30 {
        window(&mut g, t, 5, 20 * MS, 1);
        t += 30 * MS;
    }
    assert_eq!(g.limit(), 4);
}

#[test]
fn samples_admitted_before_a_decision_are_ignored() {
    let mut g = gradient(3);
    // A window admitted at 0..: decided at its last end (40 ms).
    assert_eq!(window(&mut g, Duration::ZERO, 3, 40 * MS, 10), 15);
    // Stragglers admitted before 40 ms (under the old limit), however slow,
    // neither cut nor count towards the next window.
    for _ in 0..10 {
        assert_eq!(
            g.update(Sample::dropped(200 * MS, 10).started_at(5 * MS)),
            15
        );
    }
    assert_eq!(window(&mut g, 41 * MS, 3, 40 * MS, 15), 23);
}

#[test]
fn the_baseline_does_not_follow_a_standing_queue() {
    // Every window is slow (a queue stands in the backend): the limit keeps
    // falling and the baseline stays at the real figure.
    let mut g = Gradient::builder()
        .initial_limit(200)
        .window_samples(10)
        .build()
        .unwrap();
    let mut t = Duration::ZERO;
    window(&mut g, t, 10, 20 * MS, 200);
    t += 25 * MS;
    for _ in 0..6 {
        let l = g.limit();
        assert!(window(&mut g, t, 10, 60 * MS, l) < l);
        assert_eq!(g.baseline(), Some(20 * MS));
        t += 61 * MS;
    }
}

#[test]
fn at_the_floor_a_slower_backend_becomes_the_baseline() {
    let mut g = Gradient::builder()
        .initial_limit(2)
        .min_limit(2)
        .window_samples(4)
        .build()
        .unwrap();
    let mut t = Duration::ZERO;
    window(&mut g, t, 4, 10 * MS, 2);
    t += 11 * MS;
    assert_eq!(g.baseline(), Some(10 * MS));
    // The backend is now 3× slower at any concurrency: cut to the floor,
    // then three congested windows there accept the new speed.
    for _ in 0..4 {
        let l = g.limit();
        window(&mut g, t, 4, 30 * MS, l);
        t += 31 * MS;
    }
    assert_eq!(g.baseline(), Some(30 * MS));
    // ... and the limit grows again on it.
    let l = g.limit();
    assert!(window(&mut g, t, 4, 30 * MS, l) > l);
}

#[test]
fn the_baseline_is_forgotten_after_two_periods() {
    let mut g = Gradient::builder()
        .window_samples(2)
        .baseline_period(Duration::from_secs(1))
        .build()
        .unwrap();
    window(&mut g, Duration::ZERO, 2, 10 * MS, 1);
    assert_eq!(g.baseline(), Some(10 * MS));
    // Faster is taken at once.
    window(&mut g, 100 * MS, 2, 8 * MS, 1);
    assert_eq!(g.baseline(), Some(8 * MS));
    // Slower only once the faster figure is two periods old.
    window(&mut g, Duration::from_millis(1500), 2, 12 * MS, 1);
    assert_eq!(g.baseline(), Some(8 * MS));
    window(&mut g, Duration::from_millis(2600), 2, 12 * MS, 1);
    assert_eq!(g.baseline(), Some(12 * MS));
}

#[test]
fn clamps_at_min_and_max() {
    let mut g = Gradient::builder()
        .initial_limit(5)
        .min_limit(4)
        .max_limit(6)
        .window_samples(1)
        .build()
        .unwrap();
    assert_eq!(g.update(Sample::success(MS, 5)), 6); // slow start: 8, clamped
    assert_eq!(g.update(Sample::success(MS, 6).started_at(2 * MS)), 6);
    for i in 0..5 {
        g.update(Sample::dropped(MS, 6).started_at((10 + 2 * i) * MS));
    }
    assert_eq!(g.limit(), 4);
}

#[test]
fn builder_rejects_out_of_range() {
    let bad = [
        Gradient::builder().min_limit(0).build(),
        Gradient::builder().min_limit(10).max_limit(5).build(),
        Gradient::builder().initial_limit(2000).build(),
        Gradient::builder().backoff_ratio(1.0).build(),
        Gradient::builder().backoff_ratio(0.4).build(),
        Gradient::builder().timeout(Duration::ZERO).build(),
        Gradient::builder().window_samples(0).build(),
        Gradient::builder().tolerance(0.0, MS).build(),
        Gradient::builder().tolerance(f64::NAN, MS).build(),
        Gradient::builder().growth(0.0).build(),
        Gradient::builder().growth(0.9).build(),
        Gradient::builder().baseline_period(Duration::ZERO).build(),
    ];
    for b in bad {
        assert!(b.is_err(), "{b:?}");
    }
    assert!(Gradient::builder().build().is_ok());
}

/// The database of the examples, as a fluid model: `slots` slots of
/// `service` each, slower by half a service time per slot's worth of
/// oversubscription (up to 5×), a request waiting for a slot when more than
/// `slots` are in flight.
fn rtt_at(limit: usize, slots: usize, service: Duration) -> Duration {
    let over = limit.saturating_sub(slots) as f64 / slots as f64;
    let slowdown = (1.0 + 0.5 * over).min(5.0);
    let queueing = (limit as f64 / slots as f64).max(1.0);
    service.mul_f64(slowdown * queueing)
}

/// Runs the defaults against the fluid database, saturated, for `rounds`
/// round trips; returns the limits seen in the second half.
fn converge(slots: usize, service: Duration, rounds: usize) -> Vec<usize> {
    let mut g = Gradient::default();
    let mut t = Duration::ZERO;
    let mut seen = Vec::new();
    for round in 0..rounds {
        let limit = g.limit();
        let rtt = rtt_at(limit, slots, service);
        // `limit` requests in flight, finishing evenly over one rtt.
        for i in 0..limit {
            let start = t + rtt.mul_f64(i as f64 / limit as f64);
            g.update(Sample::success(rtt, limit).started_at(start));
        }
        t += rtt;
        if round >= rounds / 2 {
            seen.push(g.limit());
        }
    }
    seen
}

#[test]
fn converges_on_the_slot_count_across_backends() {
    for slots in [4, 10, 20, 50, 100] {
        for service_ms in [5, 20, 100] {
            let seen = converge(slots, service_ms * MS, 400);
            let mean = seen.iter().sum::<usize>() as f64 / seen.len() as f64;
            let max = *seen.iter().max().unwrap();
            let s = slots as f64;
            assert!(
                (0.75 * s..=1.25 * s).contains(&mean),
                "{slots} slots x {service_ms} ms: mean limit {mean}"
            );
            assert!(max <= 2 * slots, "{slots} slots: max {max}");
        }
    }
}

proptest! {
    #[test]
    fn the_limit_stays_in_bounds(
        min in 1usize..10,
        span in 0usize..100,
        samples in proptest::collection::vec((0u64..200, any::<bool>(), 0usize..200), 0..300),
    ) {
        let max = min + span;
        let mut g = Gradient::builder()
            .min_limit(min)
            .initial_limit(min)
            .max_limit(max)
            .window_samples(3)
            .build()
            .unwrap();
        let mut t = Duration::ZERO;
        for (ms, dropped, in_flight) in samples {
            let rtt = Duration::from_millis(ms);
            let s = if dropped { Sample::dropped(rtt, in_flight) } else { Sample::success(rtt, in_flight) };
            let l = g.update(s.started_at(t));
            prop_assert!((min..=max).contains(&l));
            t += Duration::from_millis(1);
        }
    }
}
