#!/usr/bin/env bash
# Calibrates `vbench gate` on this machine (needs root: the container backend).
#
# 1. False alarms: N+1 runs of the unchanged build in the configuration .ci/run gates
#    (container, every workload, --quick, 10 rounds); N gate evaluations against a fixed
#    baseline (run 0, as CI does), plus N evaluations of consecutive pairs (run i-1 vs run i).
#    Prints how many evaluations failed (exit 1) and how many of the metric verdicts were
#    regressions, and the spread of the unchanged changes per metric.
# 2. Sensitivity: real slowdowns from a CPU quota on the container. The workload loop must run
#    for several 100 ms CFS periods for the quota to slow it smoothly (by about 1/quota - 1), so
#    this part runs the workload ELF with a long intmix loop (~0.37 s) as a custom program.
#    For each quota, REPS runs are gated against one unthrottled baseline; prints the measured
#    slowdown (median change) and how many evaluations caught it (exit 1).
#
# Environment: V (vbench binary), N, REPS, QUOTAS (`none` = no quota: a false-alarm control for
# this workload), SENS_ROUNDS, THRESHOLD, ALPHA, OUT (runs there are reused, so re-running with
# another THRESHOLD only re-gates), SKIP_FALSE, SKIP_SENS.
# Example: scripts/gate-calibration.sh               (about 15 minutes)
#          THRESHOLD=5% scripts/gate-calibration.sh  (the same with a 5% noise threshold)
set -euo pipefail
cd "$(dirname "$0")/.."

V=${V:-target/release/vbench}
N=${N:-20}
REPS=${REPS:-10}
QUOTAS=${QUOTAS:-"0.95 0.91 0.87 0.83 0.80"}
THRESHOLD=${THRESHOLD:-10%}
ALPHA=${ALPHA:-0.05}
OUT=${OUT:-target/gate-calibration}
CI_ARGS=(--backend container --quick --rounds 10)
SENS_ROUNDS=${SENS_ROUNDS:-10}
SENS_PROGRAM=(intmix iters=100000000)

[ "$(id -u)" = 0 ] || { echo "gate-calibration: needs root (container backend)" >&2; exit 2; }
. scripts/need.sh
need python3=python3
[ -x "$V" ] || cargo build --release -p vbench
mkdir -p "$OUT"
GATE=("$V" gate --threshold "$THRESHOLD" --alpha "$ALPHA")

# Runs the gate, appends "exit-status<TAB>table" to $1; never fails the script.
gate_into() {
    local log=$1; shift
    local rc=0 table
    table=$("${GATE[@]}" "$@" 2>&1) || rc=$?
    printf '%s\t%s\n' "$rc" "$(printf '%s' "$table" | base64 -w0)" >>"$log"
}

# Summarises a log written by gate_into: evaluations, failed ones, metric verdicts, and (unless
# a third argument is given) each metric's changes.
summarise() {
    python3 - "$@" <<'EOF'
import base64, re, statistics, sys
log, what, brief = sys.argv[1], sys.argv[2], len(sys.argv) > 3
evals = fails = bad = metrics = regs = 0
changes = {}
for line in open(log):
    rc, table = line.rstrip("\n").split("\t")
    table = base64.b64decode(table).decode()
    evals += 1
    fails += rc == "1"
    bad += rc not in ("0", "1")
    for row in table.splitlines():
        cols = re.split(r"\s{2,}", row.strip())
        if len(cols) == 8 and cols[0] != "metric" and not cols[0].startswith("-"):
            metrics += 1
            regs += cols[7] == "REGRESSION"
            changes.setdefault(cols[0], []).append(float(cols[3].rstrip("%")))
print(f"{what}: {evals} gate evaluations, {fails} failed (exit 1) = {100*fails/max(evals,1):.1f}%, "
      f"{bad} bad input; {regs} of {metrics} metric verdicts were regressions")
for m, c in ([] if brief else changes.items()):
    c.sort()
    print(f"  {m:<26} median change {statistics.median(c):+6.1f}%  "
          f"range [{c[0]:+.1f}%, {c[-1]:+.1f}%]  |change| max {max(abs(x) for x in c):.1f}%")
EOF
}

if [ -z "${SKIP_FALSE:-}" ]; then
    echo "== false alarms: $((N + 1)) runs of the unchanged build: vbench run ${CI_ARGS[*]}"
    for i in $(seq 0 "$N"); do
        [ -f "$OUT/same-$i.json" ] || "$V" run "${CI_ARGS[@]}" --seed "$((i + 1))" --out "$OUT/same-$i.json" >/dev/null 2>&1
    done
    rm -f "$OUT/fixed.log" "$OUT/pairs.log"
    for i in $(seq 1 "$N"); do
        gate_into "$OUT/fixed.log" --baseline "$OUT/same-0.json" "$OUT/same-$i.json"
        gate_into "$OUT/pairs.log" --baseline "$OUT/same-$((i - 1)).json" "$OUT/same-$i.json"
    done
    summarise "$OUT/fixed.log" "fixed baseline (run 0) vs runs 1..$N, threshold $THRESHOLD"
    summarise "$OUT/pairs.log" "consecutive pairs, threshold $THRESHOLD" brief
fi

if [ -z "${SKIP_SENS:-}" ]; then
    echo "== sensitivity: container CPU quotas on ${SENS_PROGRAM[*]} ($SENS_ROUNDS rounds), $REPS runs per quota"
    "$V" workload-elf "$OUT/wl"
    sens() { "$V" run --backend container --rounds "$SENS_ROUNDS" "$@" -- "$OUT/wl" "${SENS_PROGRAM[@]}" >/dev/null 2>&1; }
    [ -f "$OUT/sens-base.json" ] || sens --out "$OUT/sens-base.json"
    for q in $QUOTAS; do
        rm -f "$OUT/sens-$q.log"
        for r in $(seq 1 "$REPS"); do
            quota=(--cpus "$q"); [ "$q" = none ] && quota=()   # `none`: the false-alarm control
            [ -f "$OUT/sens-$q-$r.json" ] || sens "${quota[@]}" --seed "$r" --out "$OUT/sens-$q-$r.json"
            gate_into "$OUT/sens-$q.log" --baseline "$OUT/sens-base.json" "$OUT/sens-$q-$r.json"
        done
        expect=0%; [ "$q" = none ] || expect=$(python3 -c "print(f'{100*(1/$q-1):.0f}%')")
        summarise "$OUT/sens-$q.log" "quota $q (1/quota - 1 = $expect)"
    done
fi
