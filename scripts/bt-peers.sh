#!/usr/bin/env bash
# The bt backend beside its peers: the same unmodified static binaries natively, under
# `vbench exec --backend bt`, under `qemu-x86_64` (Debian qemu-user, a TCG translator) and under
# `valgrind --tool=none` (Valgrind's translator with no instrumentation), measured side by side in
# one hyperfine run per program (whole commands, wall clock, start-up included).
# Programs: busybox-static's sha256sum, md5sum, gzip -c and sort on generated inputs, and the CPU
# kernels of vbench's own workload ELF at their default parameters.
# Prints, per program, each runner's median and its ratio to native.
# Usage: scripts/bt-peers.sh [RUNS]   (needs hyperfine, qemu-user, valgrind, busybox-static, python3)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-10}
. scripts/need.sh
need hyperfine=hyperfine qemu-x86_64=qemu-user valgrind=valgrind busybox=busybox-static \
    python3=python3
[ -x target/release/vbench ] || cargo build --release --locked -q -p vbench
vb=$PWD/target/release/vbench
bb=$(command -v busybox)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
$vb workload-elf "$tmp/wl"
python3 - "$tmp" <<'PY'
import random, sys
d = sys.argv[1]
r = random.Random(7)
open(f"{d}/in.bin", "wb").write(r.randbytes(32 << 20))
with open(f"{d}/in.txt", "w") as f:
    for i in range(200_000):
        f.write(f"{r.randrange(10**6)} line {r.randrange(1000)}\n")
PY
progs=(
    "sha256sum|$bb sha256sum $tmp/in.bin"
    "md5sum|$bb md5sum $tmp/in.bin"
    "gzip|$bb gzip -c $tmp/in.txt"
    "sort|$bb sort $tmp/in.txt"
    "intmix|$tmp/wl intmix"
    "sha256|$tmp/wl sha256"
    "sieve|$tmp/wl sieve"
    "matmul|$tmp/wl matmul"
)
for p in "${progs[@]}"; do
    name=${p%%|*}
    cmd=${p#*|}
    hyperfine -N --style none --warmup 1 --runs "$runs" --export-json "$tmp/$name.json" \
        -n native "$cmd" \
        -n bt "$vb exec --backend bt -- $cmd" \
        -n qemu-user "qemu-x86_64 $cmd" \
        -n valgrind "valgrind --tool=none -q $cmd" >/dev/null
done
python3 - "$tmp" "${progs[@]}" <<'PY'
import json, statistics, sys
d = sys.argv[1]
names = [p.split("|")[0] for p in sys.argv[2:]]
print(f"{'program':<10} {'native ms':>10} {'bt':>16} {'qemu-user':>16} {'valgrind':>16}")
for n in names:
    res = {r["command"]: statistics.median(r["times"]) for r in json.load(open(f"{d}/{n}.json"))["results"]}
    base = res["native"]
    cols = "".join(f" {res[k]*1e3:>8.1f} {res[k]/base:>5.2f}x" for k in ("bt", "qemu-user", "valgrind"))
    print(f"{n:<10} {base*1e3:>10.1f}{cols}")
print("(median wall time of each whole command in ms, and its ratio to native)")
PY
