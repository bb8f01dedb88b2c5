#!/usr/bin/env bash
# A palisade pull of a several-layer image from a local registry against `skopeo copy` of the same
# image to an OCI layout, in one run, then a second palisade pull into the same store (which
# should cost one manifest request: nothing else is fetched or unpacked again).
#
# It starts its own `docker-registry` (Debian's package: distribution 2.8) on a free loopback
# port with a temporary storage, pushes a generated image into it with skopeo (5 layers of
# 4 MiB of random bytes, gzip-compressed, plus busybox), and times, with `farm-bench` when it is
# on PATH (else a plain loop that prints each run's wall time):
#
#   A: `image pull REF --store FRESH_DIR --insecure`  (the example, release build)
#   B: `skopeo copy docker://REF oci:FRESH_DIR:bench`
#   then `image pull REF --store SAME_DIR --insecure` again and again (warm).
#
# Usage: benches/pull.sh [RUNS]   (default 5; as any user: nothing here needs root)
set -euo pipefail
cd "$(dirname "$0")/.."
# skopeo run as root keeps a blob-info cache under /var/lib/containers: as root, the whole run
# happens in a mount namespace of its own with a throwaway /var/lib, so the host's is untouched.
if [ "$(id -u)" = 0 ] && [ -z "${PALISADE_BENCH_PRIVATE:-}" ]; then
  exec env PALISADE_BENCH_PRIVATE=1 unshare -m -- sh -c \
    'mount -t tmpfs -o mode=0755 palisade-bench /var/lib && exec "$0" "$@"' "$0" "$@"
fi
runs=${1:-5}

for tool in docker-registry skopeo python3; do
  command -v "$tool" >/dev/null || { echo "needs $tool (apt-get install $tool)" >&2; exit 1; }
done
# IMAGE_BIN overrides the example (to time another build of it).
if [ -z "${IMAGE_BIN:-}" ]; then
  cargo build --release --example image >&2
  image_bin=${CARGO_TARGET_DIR:-$PWD/target}/release/examples/image
else
  image_bin=$IMAGE_BIN
fi
[ -x "$image_bin" ] || { echo "no $image_bin: build the image example" >&2; exit 1; }

dir=$(mktemp -d /tmp/palisade-bench-pull.XXXXXX)
registry_pid=
cleanup() {
  if [ -n "$registry_pid" ]; then
    kill "$registry_pid" 2>/dev/null || true
    wait "$registry_pid" 2>/dev/null || true
  fi
  rm -rf "$dir"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$dir/registry.yml" <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $dir/storage
http:
  addr: 127.0.0.1:$port
EOF
docker-registry serve "$dir/registry.yml" >"$dir/registry.log" 2>&1 &
registry_pid=$!
python3 - "$port" <<'PY'
import sys, time, urllib.request
for _ in range(200):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/v2/", timeout=2)
        sys.exit(0)
    except Exception:
        time.sleep(0.05)
sys.exit("the registry did not start")
PY

# An OCI image layout (OCI image-spec, "Image Layout") of 6 gzip layers.
python3 - "$dir/layout" <<'PY'
import gzip, hashlib, io, json, os, platform, sys, tarfile
out = sys.argv[1]
os.makedirs(f"{out}/blobs/sha256")
def blob(data):
    digest = hashlib.sha256(data).hexdigest()
    with open(f"{out}/blobs/sha256/{digest}", "wb") as f:
        f.write(data)
    return f"sha256:{digest}", len(data)
def layer(files):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, data, mode in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), mode, 1_600_000_000
            tar.addfile(info, io.BytesIO(data))
    tar_bytes = raw.getvalue()
    digest, size = blob(gzip.compress(tar_bytes, mtime=0))
    return digest, size, "sha256:" + hashlib.sha256(tar_bytes).hexdigest()
layers = [layer([(f"data/{i}", os.urandom(4 << 20), 0o644)]) for i in range(5)]
layers.append(layer([("bin/busybox", open("/bin/busybox", "rb").read(), 0o755)]))
arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
config = json.dumps({"architecture": arch, "os": "linux",
                     "config": {"Cmd": ["/bin/busybox", "sh"]},
                     "rootfs": {"type": "layers", "diff_ids": [l[2] for l in layers]}}).encode()
config_digest, config_size = blob(config)
manifest = json.dumps({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": config_digest, "size": config_size},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": d, "size": s} for d, s, _ in layers]}).encode()
manifest_digest, manifest_size = blob(manifest)
with open(f"{out}/oci-layout", "w") as f:
    json.dump({"imageLayoutVersion": "1.0.0"}, f)
with open(f"{out}/index.json", "w") as f:
    json.dump({"schemaVersion": 2, "manifests": [{
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": manifest_digest,
        "size": manifest_size,
        "annotations": {"org.opencontainers.image.ref.name": "bench"}}]}, f)
PY
skopeo --insecure-policy copy --quiet --dest-tls-verify=false \
  "oci:$dir/layout:bench" "docker://127.0.0.1:$port/bench/pull:bench"
ref=127.0.0.1:$port/bench/pull:bench

cold="rm -rf $dir/cold && exec $image_bin pull $ref --store $dir/cold --insecure"
skopeo_cmd="rm -rf $dir/oci && exec skopeo --insecure-policy copy --quiet --src-tls-verify=false docker://$ref oci:$dir/oci:bench"
warm="exec $image_bin pull $ref --store $dir/warm --insecure"
"$image_bin" pull "$ref" --store "$dir/warm" --insecure >/dev/null

if command -v farm-bench >/dev/null; then
  echo "== cold palisade pull (A) vs skopeo copy to an OCI layout (B)"
  farm-bench -n "$runs" --timeout 600 --vs "sh -c '$skopeo_cmd'" -- sh -c "$cold"
  echo "== warm palisade pull (everything already in the store)"
  farm-bench -n "$runs" --timeout 300 -- sh -c "$warm"
else
  time_it() { # NAME COMMAND
    for _ in $(seq "$runs"); do
      start=$(date +%s.%N)
      sh -c "$2" >/dev/null
      end=$(date +%s.%N)
      python3 -c "print('$1', round($end - $start, 3), 's')"
    done
  }
  time_it "cold palisade pull" "$cold"
  time_it "skopeo copy" "$skopeo_cmd"
  time_it "warm palisade pull" "$warm"
fi
before=$(grep -c '"GET /v2/bench/pull/blobs/' "$dir/registry.log" || true)
"$image_bin" pull "$ref" --store "$dir/warm" --insecure >/dev/null
sleep 0.5
after=$(grep -c '"GET /v2/bench/pull/blobs/' "$dir/registry.log" || true)
echo "blob GETs of one more warm pull: $((after - before)) (expected 0)"
