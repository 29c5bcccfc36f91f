#!/usr/bin/env bash
# Container start-up latency: `vbench exec --backend container`, `runc run` of an OCI bundle
# holding the same static workload binary (its default spec: pid, net, ipc, uts, mount
# namespaces and cgroups), and util-linux `unshare` with the same eight namespaces as vbench,
# measured side by side in one hyperfine run (whole commands, wall clock). Also prints vbench's
# own clone-to-exec figure from a `vbench run`.
# crun 1.8 (Debian 12) refuses hosts with v1 controllers beside an empty cgroup2 ("cgroups in
# hybrid mode not supported"). There the script keeps a mount namespace in which that empty
# cgroup2 is unmounted (crun then sees a plain v1 host) and runs crun in it through nsenter;
# `nsenter-native` (nsenter running the binary with no container) is the cost nsenter adds.
# Usage: scripts/container-startup.sh [RUNS]   (needs root, hyperfine, runc, crun, python3;
# it names the missing ones and the apt-get command that installs them)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-100}
. scripts/need.sh
need hyperfine=hyperfine runc=runc crun=crun nsenter=util-linux unshare=util-linux \
    mountpoint=util-linux python3=python3
[ "$(id -u)" = 0 ] || { echo "container-startup: needs root (containers, mounts)" >&2; exit 2; }
cargo build --release --locked -q -p vbench
vb=$PWD/target/release/vbench
tmp=$(mktemp -d)
cleanup() {
    runc delete -f vbench-startup >/dev/null 2>&1 || true
    crun delete -f vbench-crun >/dev/null 2>&1 || true
    umount "$tmp/ns/mnt" 2>/dev/null || true
    umount "$tmp/ns" 2>/dev/null || true
    rm -rf "$tmp"
}
trap cleanup EXIT
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
crun=(crun run --bundle "$tmp/bundle" vbench-crun)
enter=()
if ! "${crun[@]}" >/dev/null 2>"$tmp/crun.err"; then
    if grep -q 'hybrid mode' "$tmp/crun.err" && mountpoint -q /sys/fs/cgroup/unified; then
        echo "crun refuses this host as it is ($(tr -d '\n' <"$tmp/crun.err")):" \
            "running it where the empty cgroup2 at /sys/fs/cgroup/unified is unmounted" >&2
        mkdir "$tmp/ns"
        mount --bind "$tmp/ns" "$tmp/ns"
        mount --make-private "$tmp/ns"
        touch "$tmp/ns/mnt"
        unshare --mount="$tmp/ns/mnt" umount /sys/fs/cgroup/unified
        enter=(nsenter --mount="$tmp/ns/mnt")
        "${enter[@]}" "${crun[@]}" >/dev/null
    else
        echo "crun cannot run here: $(tr -d '\n' <"$tmp/crun.err")" >&2
        exit 1
    fi
fi
nsenter_runs=()
[ ${#enter[@]} -eq 0 ] || nsenter_runs=(-n nsenter-native "${enter[*]} $tmp/wl getpid iters=1")
hyperfine -N --style basic --warmup 5 --runs "$runs" --export-json "$tmp/h.json" \
    -n vbench "$vb exec --backend container -- $tmp/wl getpid iters=1" \
    -n crun "${enter[*]} ${crun[*]}" \
    "${nsenter_runs[@]}" \
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
