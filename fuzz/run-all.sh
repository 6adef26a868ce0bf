#!/usr/bin/env bash
# Runs every fuzz target (or the ones named) in turn, one at a time, for RUNS
# inputs each, then prints a table: inputs run, seconds, exec/s, crashes.
#
#   fuzz/run-all.sh [RUNS] [TARGET...]      RUNS defaults to 10000000
#
# SANITIZER=none skips AddressSanitizer (faster; the crate has no unsafe code).
# A target's dictionary, if any, is fuzz/dicts/<target>.dict. Logs go to
# fuzz/target/run-all/<target>.log, crashes to fuzz/artifacts/.
set -uo pipefail
cd "$(dirname "$0")"

runs=${1:-10000000}
shift || true
# cargo fuzz passes nightly-only flags; this lets a stable toolchain take them.
export RUSTC_BOOTSTRAP=1
sanitizer=${SANITIZER:-address}

if [ $# -gt 0 ]; then
    targets=("$@")
else
    mapfile -t targets < <(cargo fuzz list)
fi

# Build once, then run the binaries: a source edit mid-run must not put a
# rebuild into one target's time.
cargo fuzz build -s "$sanitizer" || exit 1
bin=target/$(rustc -vV | sed -n 's/^host: //p')/release
mkdir -p target/run-all

rows=()
failed=0
for t in "${targets[@]}"; do
    log=target/run-all/$t.log
    echo "==> $t: $runs runs" >&2
    mkdir -p "corpus/$t" "artifacts/$t"
    dict=()
    [ -f "dicts/$t.dict" ] && dict=(-dict="dicts/$t.dict")
    start=$(date +%s%N)
    nice -n 10 "$bin/$t" -runs="$runs" -print_final_stats=1 "${dict[@]}" \
        -artifact_prefix="artifacts/$t/" "corpus/$t" >"$log" 2>&1
    rc=$?
    end=$(date +%s%N)
    # The final stats, or after a crash the last progress line (`#N ...`).
    inputs=$(awk '/^#[0-9]+/ { n = substr($1, 2) } /number_of_executed_units:/ { n = $2 } END { print n }' "$log")
    secs=$(awk -v ns=$((end - start)) 'BEGIN { printf "%.1f", ns / 1e9 }')
    execs=$(awk -v n="${inputs:-0}" -v ns=$((end - start)) 'BEGIN { printf "%d", n / (ns / 1e9) }')
    if [ "$rc" -eq 0 ]; then
        crashes=0
    else
        crashes="1 (see $log)"
        failed=1
    fi
    rows+=("| $t | ${inputs:-?} | $secs | $execs | $crashes |")
done

echo
echo "| target | inputs | seconds | exec/s | crashes |"
echo "|---|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
exit "$failed"
