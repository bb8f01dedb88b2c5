#!/usr/bin/env bash
# `palisade-oci run` of /bin/true against `runc run` and `crun run` of the same bundle, in turn,
# in one run: prints each runtime's median wall time and palisade-oci's ratio to each. As root,
# after building the runtime as README says (the static build:
# `cargo build --release -p palisade-oci --target x86_64-unknown-linux-musl`). The state roots
# are on /dev/shm (tmpfs, as /run is on most machines). crun refuses this kind of hybrid cgroup
# host: it runs in a mount namespace without the unified hierarchy. Run the whole script in one
# for figures without that wrapper, where all three see the same cgroup v1 view:
#
#   unshare -m sh -c 'umount /sys/fs/cgroup/unified && benches/oci-run.sh 50'
#
# Otherwise crun's figure includes the wrapper (unshare + sh + umount, a few ms).
#
# Usage: benches/oci-run.sh [RUNS]   (default 50; PAL=path picks another palisade-oci binary,
# such as the glibc build, target/release/palisade-oci)
set -euo pipefail
cd "$(dirname "$0")/.."
runs=${1:-50}
pal=${PAL:-$PWD/target/$(uname -m)-unknown-linux-musl/release/palisade-oci}
[ -x "$pal" ] || {
  echo "build it first: cargo build --release -p palisade-oci --target $(uname -m)-unknown-linux-musl" >&2
  exit 1
}

dir=$(mktemp -d /tmp/palisade-bench-oci.XXXXXX)
state=$(mktemp -d /dev/shm/palisade-bench-oci.XXXXXX)
trap 'rm -rf "$dir" "$state"' EXIT
mkdir -p "$dir/bundle/rootfs/bin" "$state/palisade" "$state/runc" "$state/crun"
cp /usr/bin/busybox "$dir/bundle/rootfs/bin/"
ln -s busybox "$dir/bundle/rootfs/bin/true"
for d in proc sys dev tmp etc; do mkdir -p "$dir/bundle/rootfs/$d"; done
(cd "$dir/bundle" && "$pal" spec)
# Not on a terminal, running /bin/true; a version crun 1.8 knows.
sed -i -e 's/"terminal": true/"terminal": false/' -e 's/"ociVersion": "[^"]*"/"ociVersion": "1.0.2"/' \
  "$dir/bundle/config.json"
python3 - "$dir/bundle/config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1]))
c["process"]["args"] = ["/bin/true"]
json.dump(c, open(sys.argv[1], "w"), indent=1)
PY
# The kernel's floor under all three (benches/oci-floor.c), when a C compiler is at hand.
floor=()
if command -v cc >/dev/null && cc -O2 -static -o "$dir/oci-floor" benches/oci-floor.c; then
  floor=("$dir/oci-floor" "$dir/bundle/rootfs")
fi
crun_cmd=(crun)
if mountpoint -q /sys/fs/cgroup/unified; then
  crun_cmd=(unshare -m sh -c 'umount /sys/fs/cgroup/unified && exec crun "$@"' crun)
fi

cd "$dir/bundle"
declare -A times
one() { # NAME COMMAND...
  local name=$1; shift
  local start=$EPOCHREALTIME
  "$@" >/dev/null
  local end=$EPOCHREALTIME
  times[$name]+="$(echo "$end - $start" | bc -l) "
}
for _ in $(seq "$runs"); do
  one palisade-oci "$pal" --root "$state/palisade" run pal-bench
  one runc runc --root "$state/runc" run pal-bench
  command -v crun >/dev/null && one crun "${crun_cmd[@]}" --root "$state/crun" run pal-bench
  [ ${#floor[@]} -eq 0 ] || one floor "${floor[@]}"
done
median() { tr ' ' '\n' | grep . | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
p=$(echo "${times[palisade-oci]}" | median)
printf '%-14s median %.2f ms\n' palisade-oci "$(echo "$p * 1000" | bc -l)"
for other in runc crun; do
  [ -n "${times[$other]:-}" ] || continue
  o=$(echo "${times[$other]}" | median)
  printf '%-14s median %.2f ms   palisade-oci is %.2fx faster\n' "$other" \
    "$(echo "$o * 1000" | bc -l)" "$(echo "$o / $p" | bc -l)"
done
if [ -n "${times[floor]:-}" ]; then
  f=$(echo "${times[floor]}" | median)
  printf '%-14s median %.2f ms   (namespaces, mounts and exec only: benches/oci-floor.c)\n' \
    floor "$(echo "$f * 1000" | bc -l)"
fi
