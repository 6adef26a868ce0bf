//! Vectors and properties of the adaptive admission level.

use super::*;

fn c(n: u8) -> Cohort {
    Cohort::new(n).unwrap()
}

#[test]
fn ranks_and_levels() {
    assert_eq!(rank(Priority::Low, c(0)), 0);
    assert_eq!(rank(Priority::Low, c(127)), 127);
    assert_eq!(rank(Priority::Default, c(0)), 128);
    assert_eq!(rank(Priority::Critical, c(127)), 511);
    // (level, priority, cohort, admitted)
    let vectors = [
        (SLOTS, Priority::Low, 0, true),
        (SLOTS - 1, Priority::Low, 0, false),
        (SLOTS - 1, Priority::Low, 1, true),
        (384, Priority::Low, 127, false),
        (384, Priority::Default, 0, true),
        (300, Priority::Default, 83, false),
        (300, Priority::Default, 84, true),
        (128, Priority::High, 127, false),
        (128, Priority::Critical, 0, true),
        (1, Priority::Critical, 126, false),
        (1, Priority::Critical, 127, true),
    ];
    for (level, p, n, admitted) in vectors {
        assert_eq!(admits_at(level, p, c(n)), admitted, "level {level} {p}/{n}");
    }
}

#[test]
fn cohort_selection_is_consistent_within_a_tier() {
    // At any level the admitted cohorts of a partly shed tier are exactly
    // the top ones: the same callers are refused while the level holds.
    for level in 0..=SLOTS {
        for p in Priority::ALL {
            let admitted: Vec<u8> = (0..128u8).filter(|&n| admits_at(level, p, c(n))).collect();
            if let Some(&first) = admitted.first() {
                assert_eq!(admitted.len(), 128 - usize::from(first));
            }
        }
    }
}

fn window(min_ms: Option<u64>, queue_ms: Option<u64>, in_flight: usize) -> Window {
    Window {
        min_latency: min_ms.map(Duration::from_millis),
        queue_delay: queue_ms.map(Duration::from_millis),
        in_flight,
    }
}

#[test]
fn level_moves_down_fast_and_up_slowly() {
    let t0 = Instant::now();
    let mut n = 0u32;
    let mut now = move || {
        n += 1;
        t0 + Duration::from_secs(u64::from(n))
    };
    let mut ctl = Controller::new(Adaptive::default());
    assert_eq!(ctl.level(), 512);
    // Queue delay over the 20 ms target: ×0.75 per window.
    let over = window(None, Some(50), 10);
    let downs: Vec<u32> = (0..4)
        .map(|_| match ctl.on_window(&over, now()) {
            Movement::Down { to, .. } => to,
            m => panic!("{m:?}"),
        })
        .collect();
    assert_eq!(downs, [416, 344, 290, 249]);
    // Within target: +4 per window.
    let under = window(None, Some(5), 10);
    assert_eq!(
        ctl.on_window(&under, now()),
        Movement::Up { from: 249, to: 253 }
    );
    assert_eq!(
        ctl.on_window(&under, now()),
        Movement::Up { from: 253, to: 257 }
    );
    // Exactly at target is within target.
    assert_eq!(
        ctl.on_window(&window(None, Some(20), 1), now()),
        Movement::Up { from: 257, to: 261 }
    );
}

#[test]
fn admission_opens_fully_once_the_queue_empties() {
    let t0 = Instant::now();
    let mut ctl = Controller::new(Adaptive::default());
    let over = window(None, Some(50), 10);
    for i in 0..8 {
        ctl.on_window(&over, t0 + Duration::from_secs(i));
    }
    let low = ctl.level();
    assert!(low < 200, "{low}");
    // One window with the queue empty: everything is admitted again.
    let calm = window(None, Some(0), 10);
    assert_eq!(
        ctl.on_window(&calm, t0 + Duration::from_secs(10)),
        Movement::Up {
            from: low,
            to: SLOTS
        }
    );
    // A window merely within target steps slowly again.
    let mut ctl = Controller::new(Adaptive::default());
    for i in 0..8 {
        ctl.on_window(&over, t0 + Duration::from_secs(i));
    }
    let from = ctl.level();
    let within = window(None, Some(10), 10);
    assert_eq!(
        ctl.on_window(&within, t0 + Duration::from_secs(20)),
        Movement::Up { from, to: from + 4 }
    );
}

#[test]
fn over_target_but_draining_holds() {
    let t0 = Instant::now();
    let mut n = 0u32;
    let mut now = move || {
        n += 1;
        t0 + Duration::from_secs(u64::from(n))
    };
    let mut ctl = Controller::new(Adaptive::default());
    assert!(matches!(
        ctl.on_window(&window(None, Some(200), 1), now()),
        Movement::Down { .. }
    ));
    // Still over target, but 25 % lower than the last window: hold.
    assert_eq!(
        ctl.on_window(&window(None, Some(150), 1), now()),
        Movement::Held
    );
    // Falling only a little is not draining: cut again.
    assert!(matches!(
        ctl.on_window(&window(None, Some(140), 1), now()),
        Movement::Down { .. }
    ));
    assert!(matches!(
        ctl.on_window(&window(None, Some(10), 1), now()),
        Movement::Up { .. }
    ));
}

#[test]
fn after_a_cut_the_level_waits_one_delay() {
    let t0 = Instant::now();
    let ms = Duration::from_millis;
    let mut ctl = Controller::new(Adaptive::default());
    // 300 ms over the target: cut, then hold until 300 ms have passed.
    let over = window(None, Some(300), 1);
    assert!(matches!(ctl.on_window(&over, t0), Movement::Down { .. }));
    assert_eq!(ctl.on_window(&over, t0 + ms(100)), Movement::Held);
    assert_eq!(ctl.on_window(&over, t0 + ms(200)), Movement::Held);
    assert!(matches!(
        ctl.on_window(&over, t0 + ms(300)),
        Movement::Down { .. }
    ));
    // Rising is never held.
    assert!(matches!(
        ctl.on_window(&window(None, Some(1), 1), t0 + ms(301)),
        Movement::Up { .. }
    ));
}

#[test]
fn critical_is_kept_unless_configured() {
    let t0 = Instant::now();
    let mut n = 0u32;
    let mut now = move || {
        n += 1;
        t0 + Duration::from_secs(u64::from(n))
    };
    let mut ctl = Controller::new(Adaptive::default());
    for _ in 0..100 {
        ctl.on_window(&window(None, Some(500), 1), now());
    }
    assert_eq!(ctl.level(), 128);
    assert!(admits_at(ctl.level(), Priority::Critical, c(0)));
    assert!(!admits_at(ctl.level(), Priority::High, c(127)));

    let cfg = Adaptive::builder().shed_critical(true).build().unwrap();
    let mut ctl = Controller::new(cfg);
    for _ in 0..100 {
        ctl.on_window(&window(None, Some(500), 1), now());
    }
    assert_eq!(ctl.level(), 1);
    assert!(!admits_at(ctl.level(), Priority::Critical, c(0)));
}

#[test]
fn latency_inflation_over_recent_minimum() {
    let t0 = Instant::now();
    let mut ctl = Controller::new(Adaptive::default());
    // 10 ms baseline: within target.
    assert!(matches!(
        ctl.on_window(&window(Some(10), None, 5), t0),
        Movement::Up { .. }
    ));
    assert_eq!(ctl.baseline(), Some(Duration::from_millis(10)));
    // 25 ms fastest response: 15 ms inflation, within the 20 ms target.
    assert!(matches!(
        ctl.on_window(&window(Some(25), None, 5), t0),
        Movement::Up { .. }
    ));
    assert_eq!(ctl.last_delay(), Some(Duration::from_millis(15)));
    // 40 ms: 30 ms inflation, over target.
    assert!(matches!(
        ctl.on_window(&window(Some(40), None, 5), t0),
        Movement::Down { .. }
    ));
    // A queue delay, when the signal has one, wins over latency.
    assert!(matches!(
        ctl.on_window(&window(Some(40), Some(1), 5), t0),
        Movement::Up { .. }
    ));
}

#[test]
fn baseline_is_forgotten_after_two_periods() {
    let t0 = Instant::now();
    let mut ctl = Controller::new(Adaptive::default());
    ctl.on_window(&window(Some(5), None, 1), t0);
    let later = t0 + Duration::from_secs(11);
    ctl.on_window(&window(Some(50), None, 1), later);
    assert_eq!(ctl.baseline(), Some(Duration::from_millis(5)));
    let much_later = t0 + Duration::from_secs(22);
    ctl.on_window(&window(Some(50), None, 1), much_later);
    assert_eq!(ctl.baseline(), Some(Duration::from_millis(50)));
}

#[test]
fn empty_windows() {
    let now = Instant::now();
    let mut ctl = Controller::new(Adaptive::default());
    ctl.on_window(&window(None, Some(100), 1), now);
    let level = ctl.level();
    // Work in flight but nothing finished: hold.
    assert_eq!(ctl.on_window(&window(None, None, 3), now), Movement::Held);
    assert_eq!(ctl.level(), level);
    // Idle: recover.
    assert!(matches!(
        ctl.on_window(&window(None, None, 0), now),
        Movement::Up { .. }
    ));
}

#[test]
fn adaptive_config_is_validated() {
    assert!(Adaptive::builder().target(Duration::ZERO).build().is_err());
    assert!(
        Adaptive::builder()
            .window(0, Duration::from_millis(1))
            .build()
            .is_err()
    );
    assert!(
        Adaptive::builder()
            .window(1, Duration::ZERO)
            .build()
            .is_err()
    );
    assert!(Adaptive::builder().decrease(1.0).build().is_err());
    assert!(Adaptive::builder().decrease(f64::NAN).build().is_err());
    assert!(Adaptive::builder().increase(0).build().is_err());
    assert!(Adaptive::builder().increase(129).build().is_err());
    assert!(
        Adaptive::builder()
            .baseline_period(Duration::from_millis(10))
            .build()
            .is_err()
    );
    assert!(
        Adaptive::builder()
            .decrease(0.5)
            .increase(128)
            .build()
            .is_ok()
    );
}

mod properties {
    use proptest::prelude::*;

    use super::*;

    fn priority() -> impl Strategy<Value = Priority> {
        (0usize..4).prop_map(|i| Priority::ALL[i])
    }

    proptest! {
        #[test]
        fn a_higher_slot_is_admitted_whenever_a_lower_one_is(
            level in 0u32..=SLOTS,
            (p1, c1) in (priority(), 0u8..128),
            (p2, c2) in (priority(), 0u8..128),
        ) {
            let (a, b) = (Cohort::new(c1).unwrap(), Cohort::new(c2).unwrap());
            if rank(p1, a) <= rank(p2, b) && admits_at(level, p1, a) {
                prop_assert!(admits_at(level, p2, b));
            }
        }

        #[test]
        fn the_level_stays_in_bounds_and_keeps_critical(
            windows in proptest::collection::vec(
                (proptest::option::of(0u64..500), proptest::option::of(0u64..500), 0usize..3, 0u64..300),
                1..200,
            ),
            shed_critical in any::<bool>(),
        ) {
            let config = Adaptive::builder().shed_critical(shed_critical).build().unwrap();
            let mut ctl = Controller::new(config);
            let mut now = Instant::now();
            for (min, queue, in_flight, step) in windows {
                now += Duration::from_millis(step);
                let w = Window {
                    min_latency: min.map(Duration::from_millis),
                    queue_delay: queue.map(Duration::from_millis),
                    in_flight,
                };
                let before = ctl.level();
                match ctl.on_window(&w, now) {
                    Movement::Down { from, to } => prop_assert!(to < from || to == config.min_level(), "{from} -> {to}"),
                    Movement::Up { from, to } => prop_assert!(to >= from && from == before),
                    Movement::Held => prop_assert_eq!(ctl.level(), before),
                }
                prop_assert!(ctl.level() >= config.min_level() && ctl.level() <= SLOTS);
                if !shed_critical {
                    prop_assert!(admits_at(ctl.level(), Priority::Critical, Cohort::new(0).unwrap()));
                }
            }
        }
    }
}
