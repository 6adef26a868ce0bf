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
}
