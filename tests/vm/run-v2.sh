#!/usr/bin/env bash
# Runs a host-built command as root inside a throwaway QEMU guest whose only cgroup hierarchy is
# cgroup v2 (controllers enabled in the root, as systemd does), and exits with its exit status.
#
#   tests/vm/run-v2.sh [--timeout SECONDS] [--env NAME=VALUE]... [--verbose] -- COMMAND [ARG]...
#
# The guest sees the host's / read-only over virtio-9p with a tmpfs overlay on top, so the command
# runs at its own path with the host's libraries, in the host's current directory, and nothing it
# writes reaches the host. See tests/vm/README.md for the design and the cache layout.
#
# Exit status: the command's; 124 on timeout; 125 when the guest could not run it (setup or boot
# failure, with the tail of the kernel console); 2 on a usage error.
set -euo pipefail

SCRIPT_DIR=$(cd -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
REPO=$(cd -- "$SCRIPT_DIR/../.." && pwd)
CACHE=${PALISADE_VM_CACHE:-$REPO/target/palisade-vm}
INIT_SH=$SCRIPT_DIR/init.sh

# Modules loaded at boot, their dependencies added from modules.dep: those needed to reach the
# root filesystem, and loop, whose /dev/loop-control must exist before anything can ask for it
# (without udev's static nodes nothing would trigger loading it). Anything else is loaded on
# demand in the guest through modprobe.
BOOT_MODULES="virtio_pci 9pnet_virtio 9p overlay loop"
# Bumped whenever the initramfs layout changes, so old cached images are not reused.
INITRAMFS_FORMAT=1

TIMEOUT=900
VERBOSE=${PALISADE_VM_VERBOSE:-0}
ENVS=()

log() { echo "run-v2: $*" >&2; }
vlog() { [[ $VERBOSE == 1 ]] && log "$@"; return 0; }
die() {
    log "error: $*"
    exit 125
}

usage() {
    sed -n '2,/^set -euo/{/^set -euo/d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}" >&2
    exit 2
}

while (($#)); do
    case $1 in
    --timeout)
        (($# >= 2)) || usage
        TIMEOUT=$2
        shift 2
        ;;
    --timeout=*)
        TIMEOUT=${1#*=}
        shift
        ;;
    --env)
        (($# >= 2)) || usage
        ENVS+=("$2")
        shift 2
        ;;
    --env=*)
        ENVS+=("${1#*=}")
        shift
        ;;
    -v | --verbose)
        VERBOSE=1
        shift
        ;;
    -h | --help) usage ;;
    --)
        shift
        break
        ;;
    *)
        log "unexpected argument '$1' (the command goes after --)"
        usage
        ;;
    esac
done
(($#)) || usage
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || {
    log "--timeout wants a positive number of seconds, not '$TIMEOUT'"
    exit 2
}
for kv in "${ENVS[@]}"; do
    [[ $kv =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || {
        log "--env wants NAME=VALUE, not '$kv'"
        exit 2
    }
done
# env(1) in the guest would take a command name containing '=' for an assignment.
[[ $1 != *=* ]] || {
    log "the command's name must not contain '=': $1"
    exit 2
}

T0=$(date +%s.%N)
elapsed() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

# ---------------------------------------------------------------------------------------------
# Cleanup. Everything this run starts or creates is recorded here and undone on any exit, so no
# emulator outlives the script, even on Ctrl-C or a CI runner's SIGTERM.
QEMU_PID=
TAIL_PID=
FILTER_PID=
RUN_DIR=

# shellcheck disable=SC2317 # reached through the trap
cleanup() {
    local pid
    for pid in $QEMU_PID $TAIL_PID $FILTER_PID; do
        kill -KILL "$pid" 2>/dev/null || true
    done
    for pid in $QEMU_PID $TAIL_PID $FILTER_PID; do
        wait "$pid" 2>/dev/null || true
    done
    [[ -z $RUN_DIR ]] || rm -rf -- "$RUN_DIR"
}
trap cleanup EXIT
# Exiting from the signal traps runs the EXIT trap too; 128+N is the usual status for a signal.
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ---------------------------------------------------------------------------------------------
# Host tools. Installed from the distribution when missing, so a fresh machine or CI needs no
# manual step.
APT_UPDATED=0
apt_update_once() {
    ((APT_UPDATED)) && return 0
    APT_UPDATED=1
    [[ $(id -u) == 0 ]] || die "apt lists are needed but this is not root"
    log "apt-get update"
    DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null || die "apt-get update failed"
}

apt_install() {
    local missing=()
    local pkg
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'ok installed' || missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    [[ $(id -u) == 0 ]] || die "missing packages ${missing[*]} (install them as root)"
    log "installing ${missing[*]}"
    local cmd=(apt-get install -y -qq --no-install-recommends "${missing[@]}")
    if ! DEBIAN_FRONTEND=noninteractive "${cmd[@]}" >/dev/null 2>&1; then
        # Most often the package lists are missing or stale on a fresh machine.
        apt_update_once
        DEBIAN_FRONTEND=noninteractive "${cmd[@]}" >/dev/null || die "apt-get install ${missing[*]} failed"
    fi
}

# busybox-static (not busybox) because the initramfs has no shared libraries.
apt_install qemu-system-x86 busybox-static cpio
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found after installing it"
BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] || die "$BUSYBOX not found after installing busybox-static"

mkdir -p -- "$CACHE"
CACHE=$(cd -- "$CACHE" && pwd)

# Concurrent runs share the cache; only one at a time may build it.
exec {LOCK_FD}>"$CACHE/.lock"
flock "$LOCK_FD"

# ---------------------------------------------------------------------------------------------
# Kernel. The package is resolved once and remembered, so later runs neither need the network
# nor change kernels behind a test's back; delete the cache to move to a newer one.
resolve_kernel_pkg() {
    local dep
    dep=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
    if [[ -z $dep ]]; then
        apt_update_once
        dep=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }')
    fi
    [[ -n $dep ]] || die "cannot resolve linux-image-amd64 to a kernel package"
    echo "$dep"
}

# The extract-vmlinux method: find each compressed payload's magic in the bzImage, decompress
# from there, and keep the first result that is an ELF file. Decompressors complain about the
# bytes after the payload, so their status is not trusted; the ELF check is.
extract_vmlinux() {
    local bz=$1 out=$2 magic tool off
    local -a specs=(
        '\xFD7zXZ\x00|xz -dc --single-stream'
        '\x28\xB5\x2F\xFD|zstd -dcq'
        '\x1F\x8B\x08|gzip -dc'
        '\x02\x21\x4C\x18|lz4 -dc'
        'BZh|bzip2 -dc'
        '\x5D\x00\x00\x00|xz -dc --format=lzma'
    )
    local spec
    for spec in "${specs[@]}"; do
        magic=${spec%%|*}
        tool=${spec#*|}
        command -v "${tool%% *}" >/dev/null || continue
        # shellcheck disable=SC2013 # one offset per line, no spaces
        for off in $(LC_ALL=C grep -aboP "$magic" "$bz" | cut -d: -f1); do
            # shellcheck disable=SC2086 # $tool is a command with its options
            tail -c +"$((off + 1))" "$bz" | $tool >"$out" 2>/dev/null || true
            if [[ $(od -An -tx1 -N4 "$out" | tr -d ' \n') == 7f454c46 ]]; then
                return 0
            fi
        done
    done
    rm -f -- "$out"
    return 1
}

prepare_kernel() {
    local pkg
    if [[ -s $CACHE/kernel.pkg ]]; then
        pkg=$(<"$CACHE/kernel.pkg")
    else
        pkg=$(resolve_kernel_pkg)
    fi
    KDIR=$CACHE/kernel/$pkg
    if [[ ! -e $KDIR/.complete ]]; then
        log "fetching kernel package $pkg (first run only)"
        rm -rf -- "$KDIR"
        mkdir -p -- "$KDIR"
        local deb
        (cd -- "$KDIR" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >/dev/null 2>&1) || {
            apt_update_once
            (cd -- "$KDIR" && apt-get download -qq -o APT::Sandbox::User=root "$pkg" >/dev/null)
        } || die "apt-get download $pkg failed"
        deb=$(find "$KDIR" -maxdepth 1 -name '*.deb' | head -n1)
        dpkg -x "$deb" "$KDIR/root"
        basename -- "$deb" >"$KDIR/deb-name"
        rm -f -- "$deb"

        local config
        config=$(find "$KDIR/root/boot" -name 'config-*' | head -n1)
        [[ -n $config ]] || die "no /boot/config-* in $pkg"
        grep -qx 'CONFIG_PVH=y' "$config" || die "$pkg lacks CONFIG_PVH=y: it cannot boot as a bare vmlinux"
        # The bzImage compression decides which decompressor extraction needs.
        case $(grep -o '^CONFIG_KERNEL_[A-Z0-9]*=y' "$config") in
        CONFIG_KERNEL_XZ=y | CONFIG_KERNEL_LZMA=y) apt_install xz-utils ;;
        CONFIG_KERNEL_ZSTD=y) apt_install zstd ;;
        CONFIG_KERNEL_LZ4=y) apt_install lz4 ;;
        CONFIG_KERNEL_BZIP2=y) apt_install bzip2 ;;
        esac
        local vmlinuz
        vmlinuz=$(find "$KDIR/root/boot" -name 'vmlinuz-*' | head -n1)
        extract_vmlinux "$vmlinuz" "$KDIR/vmlinux" || die "cannot extract vmlinux from $vmlinuz"

        # Package modules come without modules.dep (depmod runs at install time); busybox's
        # depmod makes one for both the initramfs and the guest's on-demand modprobe.
        local kver
        kver=$(basename -- "$(find "$KDIR/root/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n1)")
        "$BUSYBOX" depmod -b "$KDIR/root" "$kver" || die "depmod failed"
        echo "$kver" >"$KDIR/kver"
        touch "$KDIR/.complete"
        echo "$pkg" >"$CACHE/kernel.pkg"
        log "kernel ready after $(elapsed)s"
    fi
    KVER=$(<"$KDIR/kver")
    MODDIR=$KDIR/root/lib/modules/$KVER
}

# ---------------------------------------------------------------------------------------------
# Initramfs: busybox, the boot modules (uncompressed), their load order and init.sh. Rebuilt
# only when one of those inputs changes.
declare -A MOD_PATH=() MOD_SEEN=()
MOD_ORDER=()

load_modules_dep() {
    local line rel name
    while IFS= read -r line; do
        rel=${line%%:*}
        name=${rel##*/}
        name=${name%%.ko*}
        MOD_PATH[${name//-/_}]=$rel
    done <"$MODDIR/modules.dep"
}

# Depth-first over modules.dep, so every module comes after what it needs.
add_module() {
    local name=${1//-/_} rel deps dep
    [[ -z ${MOD_SEEN[$name]:-} ]] || return 0
    MOD_SEEN[$name]=1
    rel=${MOD_PATH[$name]:-}
    if [[ -z $rel ]]; then
        grep -q "/${name//_/[-_]}\.ko" "$MODDIR/modules.builtin" && return 0
        die "module $name is neither in modules.dep nor built in"
    fi
    deps=$(grep -m1 "^$rel:" "$MODDIR/modules.dep" | cut -d: -f2-)
    for dep in $deps; do
        dep=$(basename -- "$dep")
        add_module "${dep%%.ko*}"
    done
    MOD_ORDER+=("$name")
}

prepare_initramfs() {
    local key
    key=$(
        {
            echo "format=$INITRAMFS_FORMAT kernel=$KDIR modules=$BOOT_MODULES"
            sha256sum "$INIT_SH" "$BUSYBOX" | cut -d' ' -f1
        } | sha256sum | cut -d' ' -f1
    )
    INITRAMFS=$CACHE/initramfs-$key.cpio
    [[ -s $INITRAMFS ]] && return 0

    log "building initramfs"
    load_modules_dep
    local m
    for m in $BOOT_MODULES; do add_module "$m"; done

    local stage
    stage=$(mktemp -d "$CACHE/palisade-initramfs.XXXXXX")
    RUN_DIR=$stage # removed by the EXIT trap if anything below fails
    mkdir -p "$stage"/{bin,dev,proc,sys,etc/palisade,lib/modules}
    cp -- "$BUSYBOX" "$stage/bin/busybox"
    cp -- "$INIT_SH" "$stage/init"
    chmod 0755 "$stage/init" "$stage/bin/busybox"
    local rel src
    for m in "${MOD_ORDER[@]}"; do
        rel=${MOD_PATH[$m]}
        src=$MODDIR/$rel
        # busybox insmod wants a plain ELF object.
        case $rel in
        *.ko.xz) xz -dc "$src" ;;
        *.ko.zst) zstd -dcq "$src" ;;
        *.ko.gz) gzip -dc "$src" ;;
        *) cat "$src" ;;
        esac >"$stage/lib/modules/$m.ko"
        echo "$m" >>"$stage/etc/palisade/modules"
    done
    # Uncompressed on purpose: under emulation, unpacking a compressed initramfs costs more boot
    # time than reading the bigger file does.
    (cd -- "$stage" && find . -mindepth 1 -print0 | LC_ALL=C sort -z |
        cpio --null -o -H newc --owner=0:0 --quiet) >"$INITRAMFS.tmp"
    mv -f -- "$INITRAMFS.tmp" "$INITRAMFS"
    rm -rf -- "$stage"
    RUN_DIR=
    # Other images are stale, but a concurrent run may have picked one and not yet started QEMU
    # on it; an hour is plenty for that.
    find "$CACHE" -maxdepth 1 -name 'initramfs-*.cpio' ! -name "$(basename -- "$INITRAMFS")" \
        -mmin +60 -delete
    vlog "initramfs modules: ${MOD_ORDER[*]}"
}

prepare_kernel
prepare_initramfs
flock -u "$LOCK_FD"

# ---------------------------------------------------------------------------------------------
# Acceleration. These machines' /dev/kvm is often the PVM flavour, which only runs a PVM guest
# kernel; a stock kernel needs real VMX/SVM. Anything else gets TCG, which always works.
pick_accel() {
    case ${PALISADE_VM_ACCEL:-auto} in
    kvm | tcg)
        echo "${PALISADE_VM_ACCEL}"
        return
        ;;
    esac
    if [[ -r /dev/kvm && -w /dev/kvm && ! -e /sys/module/kvm_pvm ]] &&
        grep -qwE 'vmx|svm' /proc/cpuinfo; then
        echo kvm
    else
        echo tcg
    fi
}
ACCEL=$(pick_accel)
# shellcheck disable=SC2054 # the commas belong to QEMU's option syntax
if [[ $ACCEL == kvm ]]; then
    # Listing tcg second lets QEMU fall back by itself if KVM refuses to initialise.
    ACCEL_ARGS=(-accel kvm -accel tcg,thread=multi)
else
    ACCEL_ARGS=(-accel tcg,thread=multi)
fi

# ---------------------------------------------------------------------------------------------
# The job: a shell fragment the guest's init sources from a second, per-run 9p share. Quoting
# every word for sh avoids any limit or escaping trouble of the kernel command line.
RUN_DIR=$(mktemp -d "$CACHE/palisade-run.XXXXXX")
shq() { printf "'%s'" "${1//\'/\'\\\'\'}"; }

MARKER="PALISADE-VM-EXIT-$(od -An -N8 -tx1 /dev/urandom | tr -d ' \n')"
TMPFS_TMP=1
case $PWD in /tmp | /tmp/*) TMPFS_TMP=0 ;; esac
{
    echo "PALISADE_MARKER=$(shq "$MARKER")"
    echo "PALISADE_TMPFS_TMP=$TMPFS_TMP"
    echo "PALISADE_MODDIR=$(shq "$MODDIR")"
    echo "palisade_command() {"
    printf '    cd -- %s || { echo "run-v2: cannot enter %s in the guest" >&2; exit 125; }\n' \
        "$(shq "$PWD")" "$(shq "$PWD")"
    # Later assignments win, so --env can override the defaults, PATH included.
    # busybox env takes no options after the first assignment, hence -- right after -i.
    printf '    exec /run/palisade/busybox env -i --'
    for kv in "PATH=${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}" \
        HOME=/root PALISADE_IN_VM=1 "${ENVS[@]}"; do
        printf ' %s' "$(shq "$kv")"
    done
    for arg in "$@"; do printf ' %s' "$(shq "$arg")"; done
    printf '\n}\n'
} >"$RUN_DIR/job.sh"

CONSOLE_LOG=$RUN_DIR/console.log
OUT=$RUN_DIR/out
: >"$OUT"

# QEMU option values are comma-separated; a literal comma is written twice.
qarg() { printf '%s' "${1//,/,,}"; }

CMDLINE="console=ttyS0 panic=-1 quiet cgroup_no_v1=all mitigations=off no_timer_check"
CMDLINE+=" i8042.noaux i8042.nokbd i8042.nopnp random.trust_cpu=on"
# For debugging the guest, e.g. PALISADE_VM_APPEND="initcall_debug loglevel=7".
CMDLINE+=${PALISADE_VM_APPEND:+ $PALISADE_VM_APPEND}

# shellcheck disable=SC2054 # the commas belong to QEMU's option syntax
QEMU_ARGS=(
    -machine pc "${ACCEL_ARGS[@]}" -cpu max -smp 2 -m 1536M
    -nodefaults -no-user-config -display none -no-reboot
    -kernel "$KDIR/vmlinux" -initrd "$INITRAMFS" -append "$CMDLINE"
    -chardev "file,id=console,path=$(qarg "$CONSOLE_LOG")" -serial chardev:console
    -chardev "file,id=out,path=$(qarg "$OUT")" -serial chardev:out
    -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap
    -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
    -fsdev "local,id=job,path=$(qarg "$RUN_DIR"),security_model=none,readonly=on"
    -device virtio-9p-pci,fsdev=job,mount_tag=palisade_job
)

vlog "accel=$ACCEL kernel=$(basename -- "$KDIR") setup took $(elapsed)s"
T_BOOT=$(date +%s.%N)
qemu-system-x86_64 "${QEMU_ARGS[@]}" </dev/null >"$RUN_DIR/qemu.log" 2>&1 &
QEMU_PID=$!

# Stream the output while the guest runs. The marker line is cut out; a line that ends with it is
# the command's last, unterminated line.
mkfifo "$RUN_DIR/out.fifo"
awk -v m="$MARKER" '
    { i = index($0, m "=") }
    i { printf "%s", substr($0, 1, i - 1); fflush(); exit }
    { print; fflush() }
' <"$RUN_DIR/out.fifo" &
FILTER_PID=$!
tail -n +1 -s 0.1 -f --pid="$QEMU_PID" "$OUT" >"$RUN_DIR/out.fifo" 2>/dev/null &
TAIL_PID=$!

# A watchdog loop rather than timeout(1): the script itself must know QEMU's pid for its traps.
now_us() { echo "${EPOCHREALTIME/./}"; }
TIMED_OUT=0
deadline=$(($(now_us) + TIMEOUT * 1000000))
while kill -0 "$QEMU_PID" 2>/dev/null; do
    if (($(now_us) >= deadline)); then
        TIMED_OUT=1
        # SIGTERM lets QEMU exit cleanly (and quietly); SIGKILL if it does not within a second.
        kill -TERM "$QEMU_PID" 2>/dev/null || true
        for _ in 1 2 3 4 5 6 7 8 9 10; do
            kill -0 "$QEMU_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$QEMU_PID" 2>/dev/null || true
        break
    fi
    sleep 0.1
done
QEMU_RC=0
wait "$QEMU_PID" 2>/dev/null || QEMU_RC=$?
QEMU_PID=
wait "$TAIL_PID" || true
TAIL_PID=
wait "$FILTER_PID" || true
FILTER_PID=

# Keep the last console log outside the run directory, for a look after the fact.
cp -f -- "$CONSOLE_LOG" "$CACHE/console-last.log" 2>/dev/null || true

show_failure() {
    log "$1"
    # console-last.log may already belong to a concurrent run; failures keep their own copy.
    local keep
    keep=$CACHE/logs/console-failed-$(date +%Y%m%d-%H%M%S)-$$.log
    mkdir -p -- "$CACHE/logs"
    cp -f -- "$CONSOLE_LOG" "$keep" 2>/dev/null || true
    find "$CACHE/logs" -name 'console-failed-*.log' -mtime +7 -delete 2>/dev/null || true
    # The line about our own SIGTERM on a timeout is noise.
    if grep -qv 'terminating on signal' "$RUN_DIR/qemu.log" 2>/dev/null; then
        log "qemu said:"
        sed 's/^/  /' "$RUN_DIR/qemu.log" >&2
    fi
    log "last lines of the kernel console (full log: $keep):"
    tail -n 40 "$CONSOLE_LOG" 2>/dev/null | tr -d '\r' | sed 's/^/  /' >&2 || true
}

if ((TIMED_OUT)); then
    show_failure "timed out after ${TIMEOUT}s; the guest was killed"
    exit 124
fi

rc=$(LC_ALL=C grep -ao "$MARKER=[0-9]*" "$OUT" | tail -n1 | cut -d= -f2 || true)
if [[ -z $rc ]]; then
    show_failure "the guest stopped (qemu status $QEMU_RC) without reporting the command's exit status"
    exit 125
fi

if [[ $VERBOSE == 1 ]]; then
    started=$(grep -ao 'command starting at uptime [0-9.]*' "$CONSOLE_LOG" | awk '{ print $NF }' || true)
    log "guest boot to command: ${started:-?}s (guest clock); qemu ran" \
        "$(awk -v a="$T_BOOT" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')s;" \
        "total $(elapsed)s; exit status $rc"
fi
exit "$rc"
