#!/usr/bin/env bash
# Every Palisade test, as root: the workspace's tests on this machine, then the cgroup suites
# again in a pure cgroup v2 QEMU guest (tests/vm/cgroup-v2.sh). Installs what the tests use and a
# fresh Debian machine lacks: busybox-static, the payload of the OCI image tests.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'install ok installed'; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq busybox-static >/dev/null
fi

cargo test --workspace
tests/vm/cgroup-v2.sh
