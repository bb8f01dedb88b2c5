#!/bin/busybox sh
# Guest init for tests/vm/run-v2.sh. Runs as PID 1 with busybox's ash, in two stages:
#
#   stage 1 (from the initramfs): load the virtio/9p/overlay modules, build the root out of the
#     host's / (read-only 9p) under a tmpfs-backed overlay, mount the API filesystems and a pure
#     cgroup v2 hierarchy into it, then switch_root.
#   stage 2 (in the new root, re-executed from /run/palisade): run the job that the host wrote
#     into the per-run share, send its output and an exit-code marker to the second serial port,
#     and power off.
#
# Anything that goes wrong is reported on the console (ttyS0, the host's log file) and the guest
# powers off without a marker, which the host reports as a boot failure.
#
# shellcheck shell=sh

BB=/bin/busybox
[ "${1:-}" = stage2 ] && BB=/run/palisade/busybox

# stdio is the console in both stages (switch_root keeps it).
say() { echo "palisade-init: $*" >&2; }

die() {
    say "FATAL: $*"
    "$BB" sync
    "$BB" poweroff -f
    # poweroff -f does not return; if it somehow does, PID 1 must not exit (that panics).
    while :; do "$BB" sleep 3600; done
}

# The console is a timing source as well as a log: the host reads "command starting" to report
# how long the boot took.
uptime_s() { "$BB" cut -d' ' -f1 /proc/uptime; }

stage1() {
    # The kernel opens /dev/console before running us only if the initramfs has one; mounting
    # devtmpfs first and reopening stdio avoids shipping a device node in the cpio (which would
    # need root to create on the host).
    "$BB" mount -t devtmpfs devtmpfs /dev
    exec </dev/console >/dev/console 2>&1
    "$BB" --install -s /bin
    export PATH=/bin

    mount -t proc proc /proc || die "mount /proc"
    mount -t sysfs sysfs /sys || die "mount /sys"

    # Dependency order was resolved on the host (from modules.dep); built-ins are not listed.
    while read -r mod; do
        [ -n "$mod" ] || continue
        insmod "/lib/modules/$mod.ko" || die "insmod $mod"
    done </etc/palisade/modules

    # The host's / is exported read-only; cache=loose is safe because nothing on the host is
    # expected to change under a test run, and it is much faster than the uncached modes.
    mkdir -p /lower /rw /newroot /job
    mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000,cache=loose hostroot /lower ||
        die "mount 9p share hostroot"
    mount -t 9p -o ro,trans=virtio,version=9p2000.L,msize=512000 palisade_job /job ||
        die "mount 9p share palisade_job"
    [ -r /job/job.sh ] || die "no job.sh in the job share"
    # shellcheck source=/dev/null
    . /job/job.sh

    # Every write the guest makes lands in this tmpfs, so the host is never modified.
    mount -t tmpfs -o mode=0755 palisade-rw /rw || die "mount tmpfs /rw"
    mkdir -p /rw/upper /rw/work
    mount -t overlay overlay -o lowerdir=/lower,upperdir=/rw/upper,workdir=/rw/work /newroot ||
        die "mount overlay"

    N=/newroot
    mkdir -p $N/proc $N/sys $N/dev $N/run $N/tmp
    mount --move /proc $N/proc || die "move /proc"
    mount --move /sys $N/sys || die "move /sys"
    mount --move /dev $N/dev || die "move /dev"
    mkdir -p $N/dev/pts $N/dev/shm $N/dev/mqueue
    mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $N/dev/pts
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs $N/dev/shm
    mount -t mqueue mqueue $N/dev/mqueue 2>/dev/null
    # udev normally makes these; bash process substitution and friends rely on /dev/fd.
    ln -sf /proc/self/fd $N/dev/fd
    ln -sf /proc/self/fd/0 $N/dev/stdin
    ln -sf /proc/self/fd/1 $N/dev/stdout
    ln -sf /proc/self/fd/2 $N/dev/stderr

    # Let the kernel load further modules (veth, bridge, nf_tables...) on demand from the
    # package's module tree, which the host prepared with a modules.dep. Bound before /tmp and
    # /run get their tmpfs, which could hide the cache if it lives there.
    if [ -n "${PALISADE_MODDIR:-}" ] && [ -d "$N$PALISADE_MODDIR" ]; then
        kver=$(uname -r)
        mkdir -p "$N/lib/modules/$kver"
        mount --bind "$N$PALISADE_MODDIR" "$N/lib/modules/$kver" || say "cannot bind the module tree"
        PALISADE_AUTOLOAD=1
    fi

    # The host decides whether /tmp gets a fresh tmpfs: not when the working directory is in it.
    if [ "${PALISADE_TMPFS_TMP:-1}" = 1 ]; then
        mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs $N/tmp || die "mount /tmp"
    fi
    mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs $N/run || die "mount /run"
    mkdir -p $N/run/palisade/job $N/run/palisade/bin
    mount --move /job $N/run/palisade/job || die "move job share"
    cp /bin/busybox /init $N/run/palisade/ || die "copy busybox"
    if [ -n "${PALISADE_AUTOLOAD:-}" ]; then
        ln -s ../busybox $N/run/palisade/bin/modprobe
        echo /run/palisade/bin/modprobe >$N/proc/sys/kernel/modprobe
    fi

    # Pure cgroup v2, mounted the way systemd does. cgroup_no_v1=all on the kernel command line
    # keeps v1 hierarchies from being mountable at all.
    mount -t cgroup2 -o nosuid,nodev,noexec,nsdelegate,memory_recursiveprot cgroup2 \
        $N/sys/fs/cgroup || die "mount cgroup2"
    # Enable every controller for the root's children, as systemd does. The command stays in the
    # root cgroup: the root is exempt from the no-internal-processes rule, so the code under test
    # can create children beneath its own cgroup with any controller.
    # shellcheck disable=SC2013 # a single line of words
    for c in $(cat $N/sys/fs/cgroup/cgroup.controllers); do
        echo "+$c" >$N/sys/fs/cgroup/cgroup.subtree_control || say "cannot enable controller $c"
    done

    # Raw mode: no \n -> \r\n translation and no echo, so the command's output arrives verbatim.
    stty -F $N/dev/ttyS1 raw -echo || die "stty ttyS1"
    hostname palisade-vm
    ip link set lo up 2>/dev/null

    # switch_root only works as PID 1 itself. Should the exec fail, the shell exits, which panics
    # the kernel (panic=-1, -no-reboot): the host then reports a boot failure with this console.
    # shellcheck disable=SC2093
    exec switch_root $N /run/palisade/busybox sh /run/palisade/init stage2
}

stage2() {
    export PATH=/run/palisade/bin
    # shellcheck source=/dev/null
    . /run/palisade/job/job.sh

    say "command starting at uptime $(uptime_s)"
    # palisade_command (from job.sh) cds and execs the command with a clean environment.
    (palisade_command) </dev/null >/dev/ttyS1 2>&1
    rc=$?
    say "command exited with $rc at uptime $(uptime_s)"
    # The marker rides on the same port as the output, after it: seeing it proves that all output
    # before it arrived. The nonce keeps the command's own output from faking it.
    printf '%s=%d\n' "$PALISADE_MARKER" "$rc" >/dev/ttyS1
    "$BB" sync
    "$BB" poweroff -f
    while :; do "$BB" sleep 3600; done
}

if [ "${1:-}" = stage2 ]; then
    stage2
else
    stage1
fi
