//! `examples/rate_limited_client.rs` run as users run it: a client told
//! nothing about the server's quota learns it from the answers and gets most
//! of it with few calls refused. (Four client processes sharing one key's
//! quota are checked in virtual time by the `rate::learn` unit tests; the
//! example's `--clients 4` runs them for real, see BENCHMARKS.md.)

mod support;

use support::{f, run_example};

#[test]
fn a_client_told_nothing_learns_the_quota() {
    // The example exits non-zero when it misses its targets (>= 90 % of the
    // quota, <= 5 % refused), which fails `run_example` too.
    let report = run_example(
        "rate_limited_client",
        &[],
        &["--secs", "8", "--settle", "3"],
    );
    let quota = f(&report["quota_rps"]);
    let achieved = f(&report["achieved_rps"]);
    assert!(achieved >= 0.9 * quota, "{achieved} of {quota}");
    assert!(
        f(&report["rejected"]) * 20.0 <= f(&report["calls"]),
        "{report}"
    );
    let learned = f(&report["learned_rps"]);
    assert!(
        (0.5 * quota..=1.0 * quota).contains(&learned),
        "learned {learned} for a quota of {quota}"
    );
    // The trace: a point every 250 ms over the 8 s, each [ms, pace, ok],
    // the calls answered never falling, ending at the learned pace.
    let trace = report["clients"][0]["trace_ms_pace_ok"]
        .as_array()
        .expect("a trace");
    assert!((28..=34).contains(&trace.len()), "{} points", trace.len());
    let ok_at = |p: &serde_json::Value| f(&p[2]);
    assert!(trace.windows(2).all(|w| ok_at(&w[0]) <= ok_at(&w[1])));
    assert!(f(&trace[trace.len() - 1][0]) >= 7_500.0);
    assert!(report.get("trace_ms_pace_ok").is_none(), "traced twice");
    let paced = f(&trace[trace.len() - 1][1]);
    assert!((0.5 * quota..=1.0 * quota).contains(&paced), "{paced}");
}
