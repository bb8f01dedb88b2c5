#!/usr/bin/env bash
# Every Palisade test, as root: the workspace's tests on this machine, then the cgroup suites
# again in a pure cgroup v2 QEMU guest (tests/vm/cgroup-v2.sh). Installs what the tests use and a
# fresh Debian machine lacks: busybox-static, the payload of the OCI image tests and of the OCI
# runtime's bundles; podman, containerd and runc, the real clients of palisade-oci and its
# control (each test runs its own podman or containerd, with a storage and state of its own);
# protoc, with which the CRI client of the containerd CRI test is generated at build;
# docker-registry and skopeo, the registry the image pulls are tested against and the tool that
# pushes the fixtures into it (each test runs its own registry on a loopback port).
# The Rust musl target, for palisade-oci's static build, whose suites run a second time.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
for pkg in busybox-static podman runc containerd protobuf-compiler docker-registry skopeo; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

cargo test --workspace
cargo test -p palisade --features tokio --test async

# palisade-oci's static build (README, "Building the runtime"): musl, no interpreter, and the
# runtime's own suites again against that binary.
musl=$(uname -m)-unknown-linux-musl
rustup target list --installed | grep -qx "$musl" || rustup target add "$musl"
cargo build --release -p palisade-oci --target "$musl"
static_bin=$(realpath "${CARGO_TARGET_DIR:-target}/$musl/release/palisade-oci")
if readelf -l "$static_bin" | grep -q 'Requesting program interpreter'; then
  echo "$static_bin is not static: it names a program interpreter" >&2
  exit 1
fi
PALISADE_OCI_BIN=$static_bin cargo test -p palisade-oci \
  --test cli --test process --test mounts --test resources --test hooks \
  --test podman --test containerd --test cri
tests/vm/cgroup-v2.sh
