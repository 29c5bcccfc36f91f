#!/usr/bin/env bash
# Measures vbench's per-run overhead on the native backend against hyperfine's, side by side in
# one run: both tools run the same near-empty static binary (the workload ELF, `getpid iters=1`)
# the same number of times, alternating in blocks so machine drift hits both alike.
# Prints, per tool: the median wall time per run that the tool itself reports, and the elapsed
# time per run of the whole tool invocation (what the harness's own bookkeeping costs).
# hyperfine is run twice: as it is (the program's output goes to /dev/null) and with
# --output=pipe (read through a pipe, the work vbench does to find the result line).
# PIN=CPU runs both tools (and so their children) on that one CPU with taskset: on a 2-vCPU VM
# the unpinned figures are dominated by where the scheduler wakes the parent after the child
# exits (a cross-CPU wake-up is an IPI to a halted vCPU, tens of microseconds).
# Usage: [PIN=0] scripts/overhead-vs-hyperfine.sh [RUNS] [BLOCKS]   (needs: hyperfine, python3)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-100}
blocks=${2:-10}
pin=()
[ -z "${PIN:-}" ] || pin=(taskset -c "$PIN")
. scripts/need.sh
need hyperfine=hyperfine python3=python3
[ -z "${PIN:-}" ] || need taskset=util-linux
cargo build --release --locked -q -p vbench
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
vb=target/release/vbench
$vb workload-elf "$tmp/wl"
now() { date +%s%N; }
for b in $(seq 1 "$blocks"); do
    t0=$(now)
    "${pin[@]}" hyperfine -N --style none --warmup 10 --runs "$runs" --export-json "$tmp/h$b.json" "$tmp/wl getpid iters=1" >/dev/null
    t1=$(now)
    # the same, with the program's output read through a pipe as vbench must read it
    "${pin[@]}" hyperfine -N --style none --output=pipe --warmup 10 --runs "$runs" --export-json "$tmp/p$b.json" "$tmp/wl getpid iters=1" >/dev/null
    tp=$(now)
    "${pin[@]}" $vb run --warmup 10 --rounds "$runs" --out "$tmp/v$b.json" -- "$tmp/wl" getpid iters=1 >/dev/null 2>&1
    t2=$(now)
    echo "$((t1 - t0)) $((t2 - tp)) $((tp - t1))" >>"$tmp/elapsed"
done
python3 - "$tmp" "$runs" "$blocks" <<'PY'
import json, statistics, sys
tmp, runs, blocks = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
el = [tuple(map(int, l.split())) for l in open(f"{tmp}/elapsed")]
hw, pw, vw = [], [], []
for b in range(1, blocks + 1):
    h = json.load(open(f"{tmp}/h{b}.json"))["results"][0]["times"]
    hw.append(statistics.median(h) * 1e6)
    p = json.load(open(f"{tmp}/p{b}.json"))["results"][0]["times"]
    pw.append(statistics.median(p) * 1e6)
    v = json.load(open(f"{tmp}/v{b}.json"))["samples"]
    vw.append(statistics.median(s["sample"]["wall_ns"] for s in v) / 1e3)
he = [e[0] / (runs + 10) / 1e3 for e in el]
ve = [e[1] / (runs + 10) / 1e3 for e in el]
pe = [e[2] / (runs + 10) / 1e3 for e in el]
m = statistics.median
print(f"{runs} runs x {blocks} blocks of `workload getpid iters=1`, medians over blocks")
print(f"{'tool':<24} {'reported wall/run (us)':>24} {'elapsed/run incl. tool (us)':>28}")
print(f"{'hyperfine':<24} {m(hw):>24.1f} {m(he):>28.1f}")
print(f"{'hyperfine --output=pipe':<24} {m(pw):>24.1f} {m(pe):>28.1f}")
print(f"{'vbench':<24} {m(vw):>24.1f} {m(ve):>28.1f}")
print(f"ratio vbench/hyperfine: reported {m(vw)/m(hw):.3f}, elapsed {m(ve)/m(he):.3f}")
print(f"ratio vbench/hyperfine --output=pipe: reported {m(vw)/m(pw):.3f}, elapsed {m(ve)/m(pe):.3f}")
PY
