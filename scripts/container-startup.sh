#!/usr/bin/env bash
# Container start-up latency: `vbench exec --backend container`, `runc run` of an OCI bundle
# holding the same static workload binary (its default spec: pid, net, ipc, uts, mount
# namespaces and cgroups), and util-linux `unshare` with the same eight namespaces as vbench,
# measured side by side in one hyperfine run (whole commands, wall clock). Also prints vbench's
# own clone-to-exec figure from a `vbench run`.
# crun is tried first; crun 1.8 (Debian 12) refuses hosts with v1 controllers beside an empty
# cgroup2 ("cgroups in hybrid mode not supported"), so the script says so and uses runc.
# Usage: scripts/container-startup.sh [RUNS]   (needs root, hyperfine, runc, python3)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-100}
for t in hyperfine runc unshare python3; do
    command -v "$t" >/dev/null || { echo "$t is not installed" >&2; exit 2; }
done
cargo build --release --locked -q -p vbench
vb=$PWD/target/release/vbench
tmp=$(mktemp -d)
trap 'runc delete -f vbench-startup >/dev/null 2>&1 || true; rm -rf "$tmp"' EXIT
mkdir -p "$tmp/bundle/rootfs"
$vb workload-elf "$tmp/bundle/rootfs/wl"
cp "$tmp/bundle/rootfs/wl" "$tmp/wl"
(cd "$tmp/bundle" && runc spec)
python3 - "$tmp/bundle/config.json" <<'PY'
import json, sys
p = sys.argv[1]
c = json.load(open(p))
c["process"]["args"] = ["/wl", "getpid", "iters=1"]
c["process"]["terminal"] = False
c["root"]["readonly"] = True
json.dump(c, open(p, "w"))
PY
if command -v crun >/dev/null && ! crun run --bundle "$tmp/bundle" vbench-crun-probe >/dev/null 2>"$tmp/crun.err"; then
    echo "crun cannot run here: $(tr -d '\n' <"$tmp/crun.err")" >&2
fi
hyperfine -N --style basic --warmup 5 --runs "$runs" --export-json "$tmp/h.json" \
    -n vbench "$vb exec --backend container -- $tmp/wl getpid iters=1" \
    -n runc "runc run --bundle $tmp/bundle vbench-startup" \
    -n unshare "unshare --fork --pid --mount --net --uts --ipc --user --map-root-user --cgroup --time --mount-proc $tmp/wl getpid iters=1" \
    -n native "$tmp/wl getpid iters=1" >/dev/null
$vb run --backend container --rounds "$runs" --warmup 5 --out "$tmp/v.json" -- "$tmp/wl" getpid iters=1 >/dev/null 2>&1
python3 - "$tmp/h.json" "$tmp/v.json" <<'PY'
import json, statistics, sys
h = json.load(open(sys.argv[1]))["results"]
print(f"{'command':<10} {'median ms':>10} {'mean ms':>9} {'stddev':>8}")
for r in h:
    print(f"{r['command']:<10} {statistics.median(r['times'])*1e3:>10.2f} {r['mean']*1e3:>9.2f} {r['stddev']*1e3:>8.2f}")
v = json.load(open(sys.argv[2]))
cells = {c["id"]: c["backend"] for c in v["plan"]["cells"]}
s = [x["sample"] for x in v["samples"] if cells[x["cell"]] == "container"]
st = [x["startup_ns"] / 1e6 for x in s if x.get("startup_ns")]
print(f"vbench clone-to-exec (inside vbench run): median {statistics.median(st):.2f} ms, min {min(st):.2f}, max {max(st):.2f} over {len(st)} runs")
PY
