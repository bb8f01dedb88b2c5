//! `palisade-init`: the init of a sandbox's PID namespace (`pid_namespaces(7)`), a tiny static
//! program without libc that the sandbox's first process executes from a sealed memfd
//! (`execveat(2)` with `AT_EMPTY_PATH`) once it has started the command and dropped to the
//! command's credentials, so that nothing in the sandbox shares or shows the caller's memory.
//!
//! Built by `container/build.rs` and embedded by `container/src/spawn/init_image.rs`.
//!
//! # Contract
//!
//! - argv: `palisade-init <command-pid> <status-fd> <control-fd|-1> <death-fd|-1> <gate-fd|-1>
//!   <time-left-ms|-1>`, exactly these six, all decimal; the command pid is positive, the status
//!   fd non-negative, the time left non-negative or `-1` for no wall-clock limit. envp is empty
//!   and unused. Bad argv: exit 125 before touching anything.
//! - The time left is relative, in milliseconds: the init adds it to its own `CLOCK_MONOTONIC`
//!   (`clock_gettime(2)`) first thing, because a time namespace (`time_namespaces(7)`) may shift
//!   that clock against the caller's. It then waits with that deadline (below).
//! - The gate descriptor, if given, is closed as soon as the init is not dumpable, before its
//!   filter goes in: the sandbox passes it when its command cannot trace a non-dumpable process
//!   (it has no `CAP_SYS_PTRACE`, `ptrace(2)`), so the command need not wait for the filter.
//!   Otherwise the gate is simply not named, and closes with every other such descriptor once
//!   the init is confined.
//! - The command is a child of this process, started with exit signal SIGCHLD. On entry the
//!   signal mask already blocks SIGCHLD, SIGIO and the forwarded signals (SIGTERM, SIGINT, SIGHUP,
//!   SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH); the init sets that mask again (plus SIGPIPE) before
//!   anything else. Signals pending across `execve(2)` are kept, so a command that already exited
//!   is reaped on the first wait.
//! - Set-up, in this order: SIGCHLD back to its default disposition (an ignored SIGCHLD would
//!   reap the command behind our back); name `palisade-init` (`PR_SET_NAME`); not dumpable
//!   (`PR_SET_DUMPABLE` 0, so a command with the same uid cannot `ptrace(2)` it without
//!   `CAP_SYS_PTRACE`); `no_new_privs`; a seccomp allow-list filter ([`FILTER`]) that kills the
//!   process on anything else; and only then every descriptor but the three named ones closed
//!   (`close_range(2)`, or a close loop). So a descriptor inherited across the exec and not
//!   named (say, the write end of a pipe the command waits on before it runs) is closed only
//!   once the init is confined.
//! - The control and death descriptors get `F_SETOWN` to the init and `O_ASYNC | O_NONBLOCK`
//!   (`fcntl(2)`), so that a request or the caller's death raises SIGIO. Both settings belong to
//!   the open file description, which must therefore be this init's alone (not a `dup(2)` shared
//!   with another sandbox's init, which would take the signals over).
//! - If making itself non-dumpable, `no_new_privs`, the filter or the `fcntl(2)` calls fail, the
//!   init kills the command and exits 125 without a status.
//! - Loop on `rt_sigtimedwait(2)`:
//!   - SIGCHLD: reap every child (`wait4(2)`, `WNOHANG | __WALL`). When the command is reaped,
//!     write its report to the status fd in one `write(2)` and exit with the shell form of its
//!     status: the exit code, or 128 + the signal. The report is 32 native-endian bytes: the raw
//!     wait status (the `i32` `wait4` stored), then the resource usage of every child reaped so
//!     far, the command and the orphans alike, with their own reaped descendants
//!     (`getrusage(2)`, `RUSAGE_CHILDREN`; not the init's own): user and system CPU time in
//!     microseconds and the largest resident set in KiB, a `u64` each; then a `u32` of flags,
//!     bit 0 ([`TIMED_OUT`]) set when the init killed the sandbox at its deadline. Should
//!     `getrusage(2)` fail, the usage is left out: 8 bytes, the status and the flags. (Reports
//!     of 4 and 28 bytes, without the flags, are those of earlier inits.) No child left without
//!     the command having been reaped (it was not ours): exit 125.
//!   - The deadline, if any: `rt_sigtimedwait(2)` waits at most until it (the time left is
//!     computed afresh from `CLOCK_MONOTONIC` before each wait, so that no early return or
//!     other signal stretches it). Once it has passed, the init kills the sandbox as on the
//!     caller's death (`kill(-1, SIGKILL)` as PID 1, else only the command), keeps no deadline
//!     any more, and goes on waiting: the command's report, once it is reaped, has
//!     [`TIMED_OUT`] set (even if it exited on its own in that same instant).
//!   - SIGIO: serve every pending control request, then check the death fd.
//!     - Control: one request byte, 1 = IPv4 TCP socket, 2 = IPv4 UDP socket; any other byte or
//!       length gets `EINVAL`. The answer is 4 native-endian bytes of errno (0 on success) with
//!       the new socket (close-on-exec, in the sandbox's network namespace) as `SCM_RIGHTS`, sent
//!       with `MSG_DONTWAIT | MSG_NOSIGNAL`.
//!     - Death: a pipe or socket whose other end only the caller holds. Hang-up, an error, or
//!       end-of-file (read even without POLLIN) means the caller died: the init kills
//!       everything (`kill(-1, SIGKILL)`, but only when it is PID 1 of its namespace;
//!       otherwise only the command) and exits 137 without a status.
//!   - A forwarded signal: sent on to the command (`kill(2)`).
//! - Before the first wait, the control requests and the death fd are checked, and exited
//!   children reaped, once: what happened before `O_ASYNC` was set raised no signal.
//! - Should `clock_gettime(2)` ever fail with a deadline to keep (it cannot for
//!   `CLOCK_MONOTONIC` and a valid buffer), the init kills the command and exits 125 without a
//!   status, as for a failed set-up: the limit could not be kept.
#![no_std]
#![no_main]
// Stops LLVM from turning the loops of `memcpy` and friends into calls to themselves.
#![no_builtins]
#![deny(unsafe_op_in_unsafe_fn)]

use core::arch::global_asm;
use core::panic::PanicInfo;

mod abi;
use abi::*;

// clock_gettime(2), for the wall-clock limit: from the same crates as the rest of `abi`.
const NR_CLOCK_GETTIME: usize = syscalls::Sysno::clock_gettime as usize;
const CLOCK_MONOTONIC: usize = linux_raw_sys::general::CLOCK_MONOTONIC as usize;

// --- Entry ---

#[cfg(target_arch = "x86_64")]
global_asm!(
    ".globl _start",
    ".type _start, @function",
    "_start:",
    "xor ebp, ebp",
    "mov rdi, rsp",
    "and rsp, -16",
    "call {start}",
    "ud2",
    start = sym start,
);

#[cfg(target_arch = "aarch64")]
global_asm!(
    ".globl _start",
    ".type _start, %function",
    "_start:",
    "mov x29, xzr",
    "mov x30, xzr",
    "mov x0, sp",
    "bl {start}",
    "brk #1",
    start = sym start,
);

/// Called by `_start` with the initial stack pointer: argc, then argv's pointers and a null.
///
/// # Safety
///
/// `sp` is the stack the kernel set up for a new program (`execve(2)`).
unsafe extern "C" fn start(sp: *const usize) -> ! {
    // SAFETY: the kernel's initial stack holds argc followed by argc pointers to NUL-terminated
    // strings and a null pointer.
    let args = unsafe {
        let argc = *sp;
        let argv = sp.add(1) as *const *const u8;
        if argc == 7 {
            parse_args([
                *argv.add(1),
                *argv.add(2),
                *argv.add(3),
                *argv.add(4),
                *argv.add(5),
                *argv.add(6),
            ])
        } else {
            None
        }
    };
    match args {
        Some(args) => run(args),
        None => exit(125),
    }
}

/// What the caller passed on the command line.
struct Args {
    command: i32,
    status: i32,
    /// `-1`: no control socket.
    control: i32,
    /// `-1`: no death descriptor.
    death: i32,
    /// `-1`: no gate to open early.
    gate: i32,
    /// Milliseconds until the wall-clock limit, from now; `-1`: no limit.
    time_left: i64,
}

/// # Safety
///
/// Each pointer is a NUL-terminated string.
unsafe fn parse_args(argv: [*const u8; 6]) -> Option<Args> {
    // SAFETY: as the caller promises.
    let [command, status, control, death, gate, time_left] =
        unsafe { argv.map(|arg| parse_int(arg)) };
    let int = |value: Option<i64>| value.and_then(|v| i32::try_from(v).ok());
    let args = Args {
        command: int(command)?,
        status: int(status)?,
        control: int(control)?,
        death: int(death)?,
        gate: int(gate)?,
        time_left: time_left?,
    };
    let fd_or_none = |fd: i32| fd >= -1;
    (args.command > 0
        && args.status >= 0
        && fd_or_none(args.control)
        && fd_or_none(args.death)
        && fd_or_none(args.gate)
        && args.time_left >= -1)
        .then_some(args)
}

/// Parses a decimal `i64` with an optional leading `-`; nothing else is accepted.
///
/// # Safety
///
/// `s` is a NUL-terminated string.
unsafe fn parse_int(s: *const u8) -> Option<i64> {
    let mut i = 0;
    // SAFETY: reading up to and including the NUL.
    let negative = unsafe { *s } == b'-';
    if negative {
        i = 1;
    }
    // Accumulated negatively when the number is, so that `i64::MIN` fits too.
    let mut value: i64 = 0;
    loop {
        // SAFETY: index `i` is at most one past the last digit read, i.e. at most the NUL.
        let c = unsafe { *s.add(i) };
        if c == 0 {
            break;
        }
        if !c.is_ascii_digit() {
            return None;
        }
        let digit = (c - b'0') as i64;
        let shifted = value.checked_mul(10)?;
        value = if negative {
            shifted.checked_sub(digit)?
        } else {
            shifted.checked_add(digit)?
        };
        i += 1;
    }
    let digits = if negative { i - 1 } else { i };
    (digits > 0).then_some(value)
}

// --- The init ---

/// The signals the init waits for.
const WAITED: u64 = sig_bit(SIGCHLD)
    | sig_bit(SIGIO)
    | sig_bit(SIGTERM)
    | sig_bit(SIGINT)
    | sig_bit(SIGHUP)
    | sig_bit(SIGQUIT)
    | sig_bit(SIGUSR1)
    | sig_bit(SIGUSR2)
    | sig_bit(SIGWINCH);

/// SIGPIPE stays blocked (never waited for) so that a dead status pipe yields `EPIPE` rather than
/// an exit by signal.
const BLOCKED: u64 = WAITED | sig_bit(SIGPIPE);

const fn sig_bit(sig: i32) -> u64 {
    1 << (sig - 1)
}

fn run(args: Args) -> ! {
    sigprocmask(BLOCKED);
    // The deadline on this process's own clock, taken first: the caller counted the time left
    // up to the exec.
    let mut deadline = match args.time_left {
        -1 => None,
        left => match monotonic_ns() {
            Some(now) => Some(now.saturating_add(left.saturating_mul(1_000_000))),
            None => {
                kill(args.command, SIGKILL);
                exit(125);
            }
        },
    };
    sigchld_default();
    set_name(b"palisade-init\0");
    if prctl(PR_SET_DUMPABLE, 0) < 0 {
        kill(args.command, SIGKILL);
        exit(125);
    }
    if args.gate >= 0 {
        // Not dumpable, to a command without CAP_SYS_PTRACE this process is out of reach: the
        // command may go on while the filter is compiled.
        close(args.gate);
    }
    if prctl(PR_SET_NO_NEW_PRIVS, 1) < 0 || install_filter() < 0 {
        kill(args.command, SIGKILL);
        exit(125);
    }
    // Only now, confined: a descriptor the caller left open across the exec (a gate the command
    // waits on) closes once nothing can take this process over any more.
    close_all_but([args.status, args.control, args.death]);

    let me = getpid();
    for fd in [args.control, args.death] {
        // Unwatched, the caller's death would go unnoticed; blocking, a read would hang.
        if fd >= 0 && !raise_sigio(fd, me) {
            kill(args.command, SIGKILL);
            exit(125);
        }
    }
    // Whatever happened before O_ASYNC was set raised no signal.
    serve_and_watch(&args, me);
    let mut timed_out = false;
    reap(&args, timed_out);
    loop {
        // The wait ends at the deadline at the latest; the time left is taken afresh each time,
        // so that neither the signals served meanwhile nor an early return stretch it.
        let left = match deadline {
            None => None,
            Some(at) => {
                let Some(now) = monotonic_ns() else {
                    kill(args.command, SIGKILL);
                    exit(125);
                };
                if now >= at {
                    // The command's report, once it is reaped, says why it ended.
                    kill_sandbox(&args, me);
                    timed_out = true;
                    deadline = None;
                    continue;
                }
                Some(at - now)
            }
        };
        match sigtimedwait(WAITED, left) {
            SIGCHLD => reap(&args, timed_out),
            SIGIO => serve_and_watch(&args, me),
            sig if sig > 0 => {
                kill(args.command, sig);
            }
            // EAGAIN at the deadline, EINTR: the loop looks at the clock again.
            _ => {}
        }
    }
}

/// Kills the sandbox: every process of the namespace as its PID 1, else only the command.
fn kill_sandbox(args: &Args, me: isize) {
    if me == 1 {
        // Only as PID 1: kill(-1) reaches every process of our namespace and its descendants
        // (not the init itself, `kill(2)`), but from outside a PID namespace it would reach the
        // whole host.
        kill(-1, SIGKILL);
    } else {
        kill(args.command, SIGKILL);
    }
}

/// Makes `fd` non-blocking and signal this process with SIGIO when it has news (`fcntl(2)`).
fn raise_sigio(fd: i32, me: isize) -> bool {
    if fcntl(fd, F_SETOWN, me as usize) < 0 {
        return false;
    }
    let flags = fcntl(fd, F_GETFL, 0);
    flags >= 0 && fcntl(fd, F_SETFL, flags as usize | O_ASYNC | O_NONBLOCK) >= 0
}

/// Serves the control socket, then checks whether the caller died.
fn serve_and_watch(args: &Args, me: isize) {
    if args.control >= 0 {
        serve_sockets(args.control);
    }
    if args.death >= 0 && caller_died(args.death) {
        kill_sandbox(args, me);
        exit(137);
    }
}

/// Reaps every child that has exited; on the command, reports its status (killed at the
/// deadline if `timed_out`) and exits.
fn reap(args: &Args, timed_out: bool) {
    loop {
        let mut status = 0i32;
        let pid = wait4(-1, &mut status, WNOHANG | WALL);
        if pid == -EINTR {
            continue;
        }
        if pid == -ECHILD {
            // No child at all: the command was never ours, nothing will ever be reported.
            exit(125);
        }
        if pid <= 0 {
            return;
        }
        if pid == args.command as isize {
            report(args.status, status, if timed_out { TIMED_OUT } else { 0 });
            let (termsig, code) = (status & 0x7f, (status >> 8) & 0xff);
            exit(if termsig == 0 { code } else { 128 + termsig });
        }
    }
}

/// The length of a report with usage: the status, three `u64`, then the flags (`u32`).
const REPORT_LEN: usize = 4 + 3 * 8 + 4;

/// The report's flag for a command killed at the deadline (`status.rs` reads it as
/// `ExitStatus::timed_out`).
const TIMED_OUT: u32 = 1;

/// Writes the command's raw wait status, the usage of every child reaped so far if the kernel
/// gives it, and `flags` (see the contract at the top).
fn report(fd: i32, status: i32, flags: u32) {
    let mut out = [0u8; REPORT_LEN];
    let status = status.to_ne_bytes();
    let mut len = status.len();
    out[..len].copy_from_slice(&status);
    if let Some(words) = children_usage() {
        for word in words {
            out[len..len + 8].copy_from_slice(&word.to_ne_bytes());
            len += 8;
        }
    }
    out[len..len + 4].copy_from_slice(&flags.to_ne_bytes());
    len += 4;
    write_all(fd, &out[..len]);
}

/// User and system CPU time (microseconds) and the largest resident set (KiB) of the reaped
/// children and their reaped descendants (`getrusage(2)`, `RUSAGE_CHILDREN`).
fn children_usage() -> Option<[u64; 3]> {
    let mut usage = core::mem::MaybeUninit::<Rusage>::zeroed();
    // SAFETY: getrusage(2) writes one `struct rusage` into the live, properly sized buffer.
    let ret = unsafe {
        syscall(
            NR_GETRUSAGE,
            [
                RUSAGE_CHILDREN as isize as usize,
                usage.as_mut_ptr() as usize,
                0,
                0,
                0,
                0,
            ],
        )
    };
    if ret < 0 {
        return None;
    }
    // SAFETY: zeroed, then filled by the kernel; every field is an integer.
    let usage = unsafe { usage.assume_init() };
    let micros = |tv: Timeval| {
        (tv.tv_sec.max(0) as u64)
            .saturating_mul(1_000_000)
            .saturating_add(tv.tv_usec.max(0) as u64)
    };
    Some([
        micros(usage.ru_utime),
        micros(usage.ru_stime),
        usage.ru_maxrss.max(0) as u64,
    ])
}

/// Requests on the control socket, one byte each.
const REQUEST_TCP: u8 = 1;
const REQUEST_UDP: u8 = 2;

/// Answers every pending request on the control socket; returns when none is left or the caller
/// closed its end.
fn serve_sockets(control: i32) {
    loop {
        let mut request = [0u8; 1];
        let n = recv(control, &mut request, MSG_DONTWAIT | MSG_TRUNC);
        if n == -EINTR {
            continue;
        }
        if n <= 0 {
            return;
        }
        let kind = match request[0] {
            REQUEST_TCP if n == 1 => SOCK_STREAM,
            REQUEST_UDP if n == 1 => SOCK_DGRAM,
            _ => 0,
        };
        let sock = if kind == 0 {
            -EINVAL
        } else {
            socket(AF_INET, kind | SOCK_CLOEXEC, 0)
        };
        let errno = if sock < 0 { -sock as i32 } else { 0 };
        send_with_fd(control, &errno.to_ne_bytes(), sock as i32);
        if sock >= 0 {
            close(sock as i32);
        }
    }
}

/// Whether the death descriptor reports hang-up or an error, or reads end-of-file (data is
/// drained). The read is tried even without POLLIN or POLLHUP: it costs one system call, and a
/// named FIFO (`fifo(7)`) reports POLLHUP only for writers that came after it was opened, while
/// it reads end-of-file whenever no writer is left.
fn caller_died(death: i32) -> bool {
    let mut fds = [PollFd {
        fd: death,
        events: POLLIN,
        revents: 0,
    }];
    if poll_now(&mut fds) > 0 && fds[0].revents & (POLLHUP | POLLERR) != 0 {
        return true;
    }
    let mut buf = [0u8; 64];
    loop {
        match read(death, &mut buf) {
            0 => return true,
            n if n == -EINTR || n > 0 => continue,
            // EAGAIN: a writer is still there.
            _ => return false,
        }
    }
}

/// Closes every descriptor but those in `keep` (`-1`: none), so that the init holds neither the
/// command's stdio nor anything else the sandbox's first process had open.
fn close_all_but(keep: [i32; 3]) {
    let mut keep = keep.map(|fd| if fd < 0 { u32::MAX } else { fd as u32 });
    // Three elements: a tiny sort without pulling in core's.
    for i in 0..keep.len() {
        for j in i + 1..keep.len() {
            if keep[j] < keep[i] {
                keep.swap(i, j);
            }
        }
    }
    let mut from = 0u32;
    let mut ok = true;
    for fd in keep {
        if fd == u32::MAX {
            break;
        }
        if fd > from {
            ok &= close_range(from, fd - 1) >= 0;
        }
        from = fd.saturating_add(1);
    }
    if from < u32::MAX {
        ok &= close_range(from, u32::MAX) >= 0;
    }
    if !ok {
        for fd in 0..4096u32 {
            if !keep.contains(&fd) {
                close(fd as i32);
            }
        }
    }
}

// --- Seccomp ---

/// The system calls the init makes once the filter is installed. `clock_gettime(2)` is the
/// system call itself: this program has no vDSO lookup, and even the vDSO's version falls back
/// to the system call when the clock source cannot be read from user space (`vdso(7)`).
const ALLOWED: [usize; 20] = [
    NR_RT_SIGTIMEDWAIT,
    NR_RT_SIGPROCMASK,
    NR_RT_SIGRETURN,
    NR_RESTART_SYSCALL,
    NR_WAIT4,
    NR_KILL,
    NR_READ,
    NR_WRITE,
    NR_EXIT,
    NR_EXIT_GROUP,
    NR_RECVFROM,
    NR_SENDMSG,
    NR_SOCKET,
    NR_CLOSE,
    NR_FCNTL,
    NR_PPOLL,
    NR_GETPID,
    NR_CLOSE_RANGE,
    NR_GETRUSAGE,
    NR_CLOCK_GETTIME,
];

/// Instructions before the allow list: load arch, check it, load nr, (x86_64) refuse x32.
const HEAD: usize = if cfg!(target_arch = "x86_64") { 4 } else { 3 };
const FILTER_LEN: usize = HEAD + ALLOWED.len() + 2;

/// The classic BPF program (`seccomp(2)`): kill the process on a foreign architecture (or an x32
/// system call number on x86_64), allow [`ALLOWED`], kill on anything else.
static FILTER: [SockFilter; FILTER_LEN] = build_filter();

const fn build_filter() -> [SockFilter; FILTER_LEN] {
    const KILL: usize = FILTER_LEN - 2;
    const ALLOW: usize = FILTER_LEN - 1;
    // A jump's offset counts from the next instruction; all fit in a u8.
    const fn to(target: usize, from: usize) -> u8 {
        assert!(target > from && target - from - 1 <= u8::MAX as usize);
        (target - from - 1) as u8
    }
    let mut f = [stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS); FILTER_LEN];
    f[0] = stmt(BPF_LD_W_ABS, SECCOMP_DATA_ARCH);
    f[1] = jump(BPF_JEQ_K, AUDIT_ARCH, 0, to(KILL, 1));
    f[2] = stmt(BPF_LD_W_ABS, SECCOMP_DATA_NR);
    if cfg!(target_arch = "x86_64") {
        f[3] = jump(BPF_JGE_K, X32_SYSCALL_BIT, to(KILL, 3), 0);
    }
    let mut i = 0;
    while i < ALLOWED.len() {
        let at = HEAD + i;
        f[at] = jump(BPF_JEQ_K, ALLOWED[i] as u32, to(ALLOW, at), 0);
        i += 1;
    }
    f[KILL] = stmt(BPF_RET_K, SECCOMP_RET_KILL_PROCESS);
    f[ALLOW] = stmt(BPF_RET_K, SECCOMP_RET_ALLOW);
    f
}

fn install_filter() -> isize {
    let prog = SockFprog {
        len: FILTER_LEN as u16,
        // The kernel only reads the program (`seccomp(2)`); the type says `*mut` as C does.
        filter: FILTER.as_ptr() as *mut SockFilter,
    };
    // SAFETY: seccomp(2) copies the program, which lives in a static, during the call.
    unsafe {
        syscall(
            NR_SECCOMP,
            [
                SECCOMP_SET_MODE_FILTER,
                0,
                &prog as *const SockFprog as usize,
                0,
                0,
                0,
            ],
        )
    }
}

// --- Runtime support ---

#[panic_handler]
fn panic(_: &PanicInfo) -> ! {
    exit(125)
}

/// # Safety
///
/// As C's `memcpy`: valid, non-overlapping regions of `n` bytes.
#[no_mangle]
unsafe extern "C" fn memcpy(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: as the caller promises; overlap is handled anyway.
    unsafe { memmove(dest, src, n) }
}

/// # Safety
///
/// As C's `memmove`: valid regions of `n` bytes.
#[no_mangle]
unsafe extern "C" fn memmove(dest: *mut u8, src: *const u8, n: usize) -> *mut u8 {
    // SAFETY: every access is within the `n` bytes of each region; copying backwards when the
    // destination starts after the source keeps overlapping bytes intact.
    unsafe {
        if (dest as usize) <= (src as usize) {
            for i in 0..n {
                *dest.add(i) = *src.add(i);
            }
        } else {
            for i in (0..n).rev() {
                *dest.add(i) = *src.add(i);
            }
        }
    }
    dest
}

/// # Safety
///
/// As C's `memset`: a valid region of `n` bytes.
#[no_mangle]
unsafe extern "C" fn memset(dest: *mut u8, c: i32, n: usize) -> *mut u8 {
    for i in 0..n {
        // SAFETY: within the region the caller passed.
        unsafe { *dest.add(i) = c as u8 };
    }
    dest
}

/// # Safety
///
/// As C's `memcmp`: valid regions of `n` bytes.
#[no_mangle]
unsafe extern "C" fn memcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    for i in 0..n {
        // SAFETY: within the regions the caller passed.
        let (x, y) = unsafe { (*a.add(i), *b.add(i)) };
        if x != y {
            return x as i32 - y as i32;
        }
    }
    0
}

/// `bcmp` is `memcmp` that only tells equality; LLVM may call it for comparisons.
///
/// # Safety
///
/// As [`memcmp`].
#[no_mangle]
unsafe extern "C" fn bcmp(a: *const u8, b: *const u8, n: usize) -> i32 {
    // SAFETY: as the caller promises.
    unsafe { memcmp(a, b, n) }
}

// --- System calls ---

/// The system call `nr` with `a`; returns the result or `-errno`. The `syscalls` crate issues it
/// (inline `syscall`/`svc 0`), so the program writes no system call instruction of its own.
///
/// # Safety
///
/// A valid system call with arguments it accepts (pointers valid for what it reads or writes).
unsafe fn syscall(nr: usize, a: [usize; 6]) -> isize {
    // SAFETY: as the caller promises.
    unsafe { syscalls::raw::syscall6(nr, a[0], a[1], a[2], a[3], a[4], a[5]) as isize }
}

/// A system call whose arguments are plain integers (no pointers).
fn sys(nr: usize, a: [usize; 6]) -> isize {
    // SAFETY: every caller passes only integers, which the kernel checks; none is a pointer.
    unsafe { syscall(nr, a) }
}

fn exit(code: i32) -> ! {
    loop {
        sys(NR_EXIT_GROUP, [code as usize, 0, 0, 0, 0, 0]);
    }
}

fn getpid() -> isize {
    sys(NR_GETPID, [0; 6])
}

fn kill(pid: i32, sig: i32) -> isize {
    sys(NR_KILL, [pid as isize as usize, sig as usize, 0, 0, 0, 0])
}

fn close(fd: i32) -> isize {
    sys(NR_CLOSE, [fd as usize, 0, 0, 0, 0, 0])
}

fn close_range(first: u32, last: u32) -> isize {
    sys(NR_CLOSE_RANGE, [first as usize, last as usize, 0, 0, 0, 0])
}

fn fcntl(fd: i32, cmd: usize, arg: usize) -> isize {
    // Only integer commands are used (F_GETFL, F_SETFL, F_SETOWN).
    sys(NR_FCNTL, [fd as usize, cmd, arg, 0, 0, 0])
}

fn socket(domain: usize, kind: usize, protocol: usize) -> isize {
    sys(NR_SOCKET, [domain, kind, protocol, 0, 0, 0])
}

fn prctl(option: usize, arg: usize) -> isize {
    // Only options whose argument is an integer (PR_SET_DUMPABLE, PR_SET_NO_NEW_PRIVS).
    sys(NR_PRCTL, [option, arg, 0, 0, 0, 0])
}

fn set_name(name: &'static [u8]) {
    // The kernel reads up to 16 bytes and stops at the first NUL.
    if name.last() == Some(&0) {
        // SAFETY: prctl(2) PR_SET_NAME reads the NUL-terminated name from a static.
        unsafe { syscall(NR_PRCTL, [PR_SET_NAME, name.as_ptr() as usize, 0, 0, 0, 0]) };
    }
}

fn sigprocmask(set: u64) {
    // SAFETY: rt_sigprocmask(2) reads the set from this frame; no old set is asked for.
    unsafe {
        syscall(
            NR_RT_SIGPROCMASK,
            [
                SIG_SETMASK,
                &set as *const u64 as usize,
                0,
                SIGSET_SIZE,
                0,
                0,
            ],
        )
    };
}

/// Waits for one of `set` (blocked) and returns it, or `-errno`: `-EAGAIN` once `timeout_ns`
/// (`None`: no limit) has passed with none of them (`rt_sigtimedwait(2)`).
fn sigtimedwait(set: u64, timeout_ns: Option<i64>) -> i32 {
    let timeout = timeout_ns.map(|ns| Timespec {
        tv_sec: ns / 1_000_000_000,
        tv_nsec: ns % 1_000_000_000,
    });
    let timeout_ptr = match &timeout {
        Some(t) => t as *const Timespec as usize,
        None => 0,
    };
    // SAFETY: rt_sigtimedwait(2) reads the set and the timeout, if any, from this frame; no
    // siginfo.
    unsafe {
        syscall(
            NR_RT_SIGTIMEDWAIT,
            [
                &set as *const u64 as usize,
                0,
                timeout_ptr,
                SIGSET_SIZE,
                0,
                0,
            ],
        ) as i32
    }
}

/// `CLOCK_MONOTONIC` now, in nanoseconds (`clock_gettime(2)`); `None` if the kernel refuses.
fn monotonic_ns() -> Option<i64> {
    let mut now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime(2) writes one `struct __kernel_timespec` into the live local.
    let ret = unsafe {
        syscall(
            NR_CLOCK_GETTIME,
            [
                CLOCK_MONOTONIC,
                &mut now as *mut Timespec as usize,
                0,
                0,
                0,
                0,
            ],
        )
    };
    if ret < 0 {
        return None;
    }
    Some(
        now.tv_sec
            .saturating_mul(1_000_000_000)
            .saturating_add(now.tv_nsec),
    )
}

fn sigchld_default() {
    // SIG_DFL is the null handler; no flags, no restorer, an empty mask.
    let action = KernelSigaction {
        sa_handler_kernel: None,
        sa_flags: 0,
        sa_restorer: None,
        sa_mask: KernelSigset { sig: [0] },
    };
    // SAFETY: rt_sigaction(2) reads the action from this frame; the old one is not asked for.
    unsafe {
        syscall(
            NR_RT_SIGACTION,
            [
                SIGCHLD as usize,
                &action as *const KernelSigaction as usize,
                0,
                SIGSET_SIZE,
                0,
                0,
            ],
        )
    };
}

fn wait4(pid: i32, status: &mut i32, options: usize) -> isize {
    // SAFETY: wait4(2) writes one i32 through a live reference; no rusage.
    unsafe {
        syscall(
            NR_WAIT4,
            [
                pid as isize as usize,
                status as *mut i32 as usize,
                options,
                0,
                0,
                0,
            ],
        )
    }
}

fn read(fd: i32, buf: &mut [u8]) -> isize {
    // SAFETY: read(2) writes at most `buf.len()` bytes into the live buffer.
    unsafe {
        syscall(
            NR_READ,
            [fd as usize, buf.as_mut_ptr() as usize, buf.len(), 0, 0, 0],
        )
    }
}

fn write_all(fd: i32, mut bytes: &[u8]) {
    while !bytes.is_empty() {
        // SAFETY: write(2) reads at most `bytes.len()` bytes from the live slice.
        let n = unsafe {
            syscall(
                NR_WRITE,
                [fd as usize, bytes.as_ptr() as usize, bytes.len(), 0, 0, 0],
            )
        };
        if n == -EINTR {
            continue;
        }
        if n <= 0 {
            return;
        }
        bytes = bytes.get(n as usize..).unwrap_or(&[]);
    }
}

fn recv(fd: i32, buf: &mut [u8], flags: usize) -> isize {
    // SAFETY: recvfrom(2) writes at most `buf.len()` bytes into the live buffer; no address.
    unsafe {
        syscall(
            NR_RECVFROM,
            [
                fd as usize,
                buf.as_mut_ptr() as usize,
                buf.len(),
                flags,
                0,
                0,
            ],
        )
    }
}

/// Polls `fds` without waiting.
fn poll_now(fds: &mut [PollFd]) -> isize {
    let zero = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ppoll(2) reads and updates the live array and reads the timeout; no signal mask.
    unsafe {
        syscall(
            NR_PPOLL,
            [
                fds.as_mut_ptr() as usize,
                fds.len(),
                &zero as *const Timespec as usize,
                0,
                0,
                0,
            ],
        )
    }
}

/// Sends `data` and, when `fd >= 0`, `fd` as `SCM_RIGHTS` (`unix(7)`), without blocking.
fn send_with_fd(sock: i32, data: &[u8], fd: i32) -> isize {
    let mut cmsg = FdCmsg {
        hdr: CmsgHdr {
            cmsg_len: CMSG_LEN_FD,
            cmsg_level: SOL_SOCKET,
            cmsg_type: SCM_RIGHTS,
        },
        fd,
        _pad: 0,
    };
    let mut iov = IoVec {
        iov_base: data.as_ptr() as *mut _,
        iov_len: data.len() as _,
    };
    let msg = MsgHdr {
        msg_name: core::ptr::null_mut(),
        msg_namelen: 0,
        // `net`'s `msghdr` names the same `struct iovec` as `general`'s, opaquely.
        msg_iov: (&mut iov as *mut IoVec).cast(),
        msg_iovlen: 1,
        msg_control: if fd >= 0 {
            (&mut cmsg as *mut FdCmsg).cast()
        } else {
            core::ptr::null_mut()
        },
        msg_controllen: if fd >= 0 { CMSG_SPACE_FD } else { 0 },
        msg_flags: 0,
    };
    // SAFETY: sendmsg(2) reads the header, the iovec, the data and the control message, all live
    // for the call.
    unsafe {
        syscall(
            NR_SENDMSG,
            [
                sock as usize,
                &msg as *const MsgHdr as usize,
                MSG_DONTWAIT | MSG_NOSIGNAL,
                0,
                0,
                0,
            ],
        )
    }
}
