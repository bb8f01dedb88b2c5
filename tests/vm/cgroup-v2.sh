#!/usr/bin/env bash
# Runs the cgroup test suites (palisade-cgroup's kernel tests and the sandbox limit tests) inside
# a pure cgroup v2 guest, whatever the host's layout: the host builds the test binaries, and
# run-v2.sh boots a kernel that mounts only cgroup2 and runs each binary there, from the host's
# files shared read-only. PALISADE_EXPECT_BACKEND=v2 makes the tests check that they really see
# cgroup v2, and PALISADE_NO_SKIP=1 turns any skip into a failure, as on the host.
#
# Usage: tests/vm/cgroup-v2.sh [extra test-harness arguments, e.g. a test name filter]
set -euo pipefail
cd "$(dirname "$0")/../.."

# The test executables, from cargo's JSON messages (only test targets have an "executable").
mapfile -t bins < <(
  cargo test --quiet --no-run --message-format=json \
    -p palisade-cgroup --test kernel -p palisade --test cgroup |
    grep -o '"executable":"[^"]*"' | sed 's/^"executable":"//; s/"$//'
)
if [ "${#bins[@]}" -ne 2 ]; then
  echo "cgroup-v2: expected two test binaries, found: ${bins[*]:-none}" >&2
  exit 1
fi

status=0
for bin in "${bins[@]}"; do
  printf '\n=== %s (pure cgroup v2 guest)\n' "${bin##*/}"
  # One test at a time: the CPU-quota tests measure usage against wall-clock time, and the guest
  # has two emulated CPUs.
  tests/vm/run-v2.sh --timeout 900 \
    --env PALISADE_NO_SKIP=1 --env PALISADE_EXPECT_BACKEND=v2 --env RUST_BACKTRACE=1 \
    -- "$bin" --test-threads=1 "$@" || status=$?
  [ "$status" = 0 ] || break
done
exit "$status"
