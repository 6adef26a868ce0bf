#!/usr/bin/env python3
"""Runs the benches the performance targets name, three times, and prints the
median of the three runs for each case, each ratio against its peer from the
same runs, and whether the target is met: the table in BENCHMARKS.md.

    python3 benches/targets.py [--runs 3] [--measurement-time 3] [--only shed limit ...]

Run it on an otherwise idle machine (the two-thread cases need both cores).
"""

import argparse
import re
import statistics
import subprocess
import sys

# (bench binary, criterion filter) pairs run each round.
BENCHES = [
    ("shed", "uncontended|refusal"),
    ("limit", "limit/uncontended/(tower|adaptive_limit_fixed)|aimd_peers"),
    ("stack", "stack/(generic/)?uncontended"),
    ("rate", "rate_admit/2 threads"),
    ("batch", "batch_vs_buffer"),
]

UNITS = {"ps": 1e-3, "ns": 1.0, "µs": 1e3, "us": 1e3, "ms": 1e6, "s": 1e9}
TIME = re.compile(r"time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]")


def run_once(measurement_time, only):
    """One round of every bench (or of those named in `only`): {case: ns}."""
    times = {}
    for bench, pattern in BENCHES:
        if only and bench not in only:
            continue
        out = subprocess.run(
            ["cargo", "bench", "-q", "-p", "tower-spillway-benches", "--bench", bench, "--",
             pattern, "--warm-up-time", "1", "--measurement-time", str(measurement_time)],
            check=True, capture_output=True, text=True).stdout
        case = None
        for line in out.splitlines():
            m = TIME.search(line)
            head = line[:m.start()].strip() if m else line.strip()
            if head and not head.startswith(("Benchmarking", "Found", "thrpt", "change",
                                            "Performance", "No change", "Change")) \
                    and "outlier" not in head and not head.startswith(("time:", "[")):
                case = head
            if m and case:
                times[case] = float(m.group(1)) * UNITS[m.group(2)]
                case = None
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--measurement-time", type=float, default=3)
    ap.add_argument("--only", nargs="*", default=[], help="bench binaries to run (default: all)")
    args = ap.parse_args()
    rounds = []
    for i in range(args.runs):
        print(f"round {i + 1} of {args.runs}", file=sys.stderr)
        rounds.append(run_once(args.measurement_time, args.only))
    cases = sorted(set().union(*rounds))
    med = {c: statistics.median(r[c] for r in rounds if c in r) for c in cases}

    print("| case | median of %d runs (ns) | runs (ns) |" % args.runs)
    print("|---|---:|---|")
    for c in cases:
        runs = ", ".join("%.1f" % r[c] for r in rounds if c in r)
        print(f"| `{c}` | {med[c]:.1f} | {runs} |")

    def m(case):
        return med.get(case, float("nan"))

    print()
    print("| target | ours | peer | figure | target | |")
    print("|---|---:|---:|---:|---|---|")

    def ratio(name, ours, peer, limit, per=1):
        r = m(ours) / m(peer)
        ok = "met" if r <= limit else "missed"
        print(f"| {name} | {m(ours) / per:.1f} ns | {m(peer) / per:.1f} ns | {r:.2f}× "
              f"| ≤ {limit}× | {ok} |")

    def over(name, ours, base, peer, limit):
        d = m(ours) - m(base)
        p = m(peer) - m(base)
        ok = "met" if d <= limit else "missed"
        print(f"| {name} | {d:.0f} ns over baseline | tower's pair {p:.0f} ns | {d:.0f} ns "
              f"| ≤ {limit} ns | {ok} |")

    tower_shed = "tower LoadShed+ConcurrencyLimit/uncontended"
    ratio("static shed vs LoadShed(ConcurrencyLimit)", "PriorityShed static/uncontended",
          tower_shed, 1.3)
    ratio("Fixed limit vs ConcurrencyLimit", "limit/uncontended/adaptive_limit_fixed",
          "limit/uncontended/tower_concurrency_limit", 1.3)
    ratio("adaptive shed vs LoadShed(ConcurrencyLimit)", "PriorityShed adaptive/uncontended",
          tower_shed, 2.0)
    ratio("Aimd::default() vs tower-acc, uncontended",
          "limit/aimd_peers/uncontended/adaptive_limit_aimd_default",
          "limit/aimd_peers/uncontended/tower_acc_aimd", 1.0)
    ratio("Aimd::default() vs tower-acc, 2 threads",
          "limit/aimd_peers/2_threads/adaptive_limit_aimd_default",
          "limit/aimd_peers/2_threads/tower_acc_aimd", 1.0)
    over("generic stack", "stack/generic/uncontended/spillway PriorityShed + AdaptiveLimit",
         "stack/generic/uncontended/no layers",
         "stack/generic/uncontended/tower LoadShed + ConcurrencyLimit", 120)
    over("HTTP stack", "stack/uncontended/spillway PriorityLayer + PriorityShed + AdaptiveLimit",
         "stack/uncontended/no layers", "stack/uncontended/tower LoadShed + ConcurrencyLimit", 150)
    ratio("global RateLimit, 2 threads, vs governor's check",
          "rate_admit/2 threads/spillway RateLimit global",
          "rate_admit/2 threads/governor direct check", 1.5)
    ratio("shed refusal vs LoadShed's", "refusal/PriorityShed generic", "refusal/tower LoadShed",
          2.0)
    for n in (1, 4, 16, 64, 256, 1000):
        # An iteration is 1,000 requests: per request.
        ratio(f"Batch vs Buffer per request, {n} callers", f"batch_vs_buffer/batch/{n}",
              f"batch_vs_buffer/buffer/{n}", 1.0, per=1000)


if __name__ == "__main__":
    main()
