//! The sandbox's init as a program of its own: `palisade-init`, a tiny static ELF built from
//! `container/init/` by `build.rs` and embedded here, executed by the sandbox's first process
//! from a sealed memfd (`memfd_create(2)`, `execveat(2)` with `AT_EMPTY_PATH`) once it has
//! started the command and dropped to the command's credentials. Nothing in the sandbox then
//! shares or shows the caller's memory, and the init runs with no privileges of its own, not
//! dumpable, with `no_new_privs` and a seccomp allow-list of the system calls it makes.
//!
//! # Contract
//!
//! - argv: `palisade-init <command-pid> <status-fd> <control-fd|-1> <death-fd|-1> <gate-fd|-1>
//!   <time-left-ms|-1>`, exactly these six, all decimal; envp is empty. Bad argv (another
//!   count, a number out of range, a time left below -1): exit 125.
//! - The command is a child of the executing process, started with exit signal SIGCHLD. The
//!   signal mask blocks SIGCHLD, SIGIO and the forwarded signals (SIGTERM, SIGINT, SIGHUP,
//!   SIGQUIT, SIGUSR1, SIGUSR2, SIGWINCH) before the command starts, so that none is lost: blocked
//!   signals stay pending across `execve(2)` (a command that exited early is reaped on the first
//!   wait). The init sets that mask again itself, SIGPIPE added, and resets SIGCHLD to its
//!   default disposition.
//! - The three named descriptors must not be close-on-exec. The init closes every other one,
//!   but only once it is confined (non-dumpable, `no_new_privs`, filter): a descriptor left
//!   open across the exec on purpose (say, the write end of a gate pipe the command waits on)
//!   reports end-of-file only when nothing can take the init over any more.
//! - If it cannot make itself non-dumpable, set `no_new_privs`, install its seccomp filter or
//!   set the control and death descriptors up (below), it kills the command and exits 125
//!   without writing a status.
//! - When the command is reaped, its report is written to the status descriptor in one
//!   `write(2)`: its raw wait status (4 native-endian bytes, the `i32` of `wait4(2)`), the usage
//!   of the reaped children (three `u64`, left out if `getrusage(2)` fails) and a `u32` of flags
//!   (bit 0: killed at the deadline), 32 bytes or 8 (see [`init`](super::init)); the init then
//!   exits with the shell form of the status: the exit code, or 128 + the signal. Every other
//!   child (orphans) is reaped silently. With no child left and the command never reaped, it
//!   exits 125.
//! - With a time left, the init's deadline is that much after its start on its own
//!   `CLOCK_MONOTONIC`; there it kills the sandbox (`kill(-1, SIGKILL)` as PID 1, else only the
//!   command), and the command's report, once it is reaped, has the timed-out flag.
//! - Forwarded signals sent to the init go to the command (`kill(2)`).
//! - Control socket (the init's end of a `SOCK_SEQPACKET` pair): each request is one byte,
//!   1 = IPv4 TCP socket, 2 = IPv4 UDP socket, anything else `EINVAL`; each answer is 4
//!   native-endian bytes of errno (0 on success) with the socket as `SCM_RIGHTS`, exactly as the
//!   parent's `control::recv_fd` expects.
//! - Death descriptor (the read end of a pipe whose write end only the caller holds): on hang-up,
//!   error or end-of-file (read even without POLLIN), the init kills everything
//!   (`kill(-1, SIGKILL)` if it is PID 1 of its namespace, otherwise only the command) and exits
//!   137, no status.
//! - The control and death descriptors raise SIGIO (`fcntl(2)` `F_SETOWN`, `O_ASYNC`) and are
//!   made non-blocking. Both must be open file descriptions of this init's own: the owner and
//!   `O_ASYNC` belong to the open file description, so of several inits sharing one (`dup(2)`
//!   copies) only the last to call `F_SETOWN` would ever hear of the caller's death. A separate
//!   pipe per sandbox, or the read end reopened through `/proc/self/fd/<n>` (`open(2)` makes a
//!   new open file description of the same pipe), gives each its own.
//!
//! The source, `container/init/main.rs`, documents the same contract.

use std::ffi::CStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

/// The `palisade-init` program: a static, non-PIE x86_64 or aarch64 ELF without interpreter.
pub(crate) const INIT_ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/palisade-init"));

/// The seals that make the image immutable: no write, resize, or further change of seals
/// (`memfd_create(2)`, "File sealing").
const SEALS: libc::c_int =
    libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;

/// A close-on-exec memfd holding [`INIT_ELF`], sealed against any change, ready for
/// `execveat(2)`. Made in the parent, before the sandbox's first process starts.
pub(crate) fn sealed_memfd() -> io::Result<OwnedFd> {
    sealed_copy_of(c"palisade-init", &mut { INIT_ELF })
}

/// A close-on-exec memfd named `name` holding what `contents` reads, sealed against any change
/// ([`SEALS`]), ready for `execveat(2)`: the init's image, or a program an exec runs by
/// descriptor.
pub(crate) fn sealed_copy_of(name: &CStr, contents: &mut impl Read) -> io::Result<OwnedFd> {
    let flags = libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING;
    // MFD_EXEC (Linux 6.3) says the file is to be executed, as `vm.memfd_noexec` wants it said;
    // older kernels refuse the unknown flag with EINVAL, and every memfd is executable there.
    // SAFETY: memfd_create(2) reads the NUL-terminated name and returns a new descriptor or -1.
    let mut fd = unsafe { libc::memfd_create(name.as_ptr(), flags | libc::MFD_EXEC) };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EINVAL) {
        // SAFETY: as above.
        fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    }
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the descriptor is new and owned by nobody else; closed on every error below.
    let mut file = File::from(unsafe { OwnedFd::from_raw_fd(fd) });
    io::copy(contents, &mut file)?;
    // SAFETY: fcntl(2) F_ADD_SEALS takes an integer argument and acts on our descriptor only.
    if unsafe { libc::fcntl(file.as_raw_fd(), libc::F_ADD_SEALS, SEALS) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file.into())
}

#[cfg(test)]
mod tests {
    //! Against the kernel, as root: the test forks X, X enters a new PID namespace and forks Y
    //! (PID 1 there), Y forks the command G and executes the init image. After each fork only
    //! raw async-signal-safe calls run: the test process has other threads.

    use super::*;
    use palisade_ns::child::{decimal, fexecve, ExecArray};
    use std::ffi::c_char;
    use std::io::Write;
    use std::os::fd::{AsFd, BorrowedFd, RawFd};
    use std::time::{Duration, Instant};

    const TIMEOUT: Duration = Duration::from_secs(10);
    /// The init's exit code for bad arguments or a failed set-up.
    const EXIT_SETUP: i32 = 125;
    /// The init's exit code when the caller died.
    const EXIT_CALLER_DIED: i32 = 137;

    /// What the init is told on its command line.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct InitArgs {
        /// The command's pid, as the executing process sees it; the command is its child.
        command: libc::pid_t,
        /// Where the command's wait status is written.
        status: RawFd,
        /// The init's end of the control socket, or -1.
        control: RawFd,
        /// The read end of the death pipe, or -1.
        death: RawFd,
        /// A descriptor to close once the init is not dumpable, or -1.
        gate: RawFd,
        /// Milliseconds until the init's deadline, or -1 for none.
        time_left: i64,
    }

    /// Executes the init image in `memfd` ([`sealed_memfd`]) with `args` and an empty environment,
    /// after clearing `FD_CLOEXEC` on the descriptors in `args` (`execveat(2)`). Returns only on
    /// failure, with `-errno`.
    ///
    /// Async-signal-safe: no allocation, raw system calls on this stack only.
    fn exec_init(memfd: RawFd, args: &InitArgs) -> isize {
        exec_init_with(memfd, args, 6)
    }

    /// As [`exec_init`], with only the first `count` of the six arguments.
    fn exec_init_with(memfd: RawFd, args: &InitArgs, count: usize) -> isize {
        let mut bufs = [[0u8; 24]; 6];
        let [command, status, control, death, gate, time_left] = &mut bufs;
        let mut argv: [*const c_char; 8] = [
            c"palisade-init".as_ptr(),
            decimal(args.command.into(), command).as_ptr(),
            decimal(args.status.into(), status).as_ptr(),
            decimal(args.control.into(), control).as_ptr(),
            decimal(args.death.into(), death).as_ptr(),
            decimal(args.gate.into(), gate).as_ptr(),
            decimal(args.time_left, time_left).as_ptr(),
            std::ptr::null(),
        ];
        if count < 6 {
            argv[1 + count] = std::ptr::null();
        }
        for fd in [args.status, args.control, args.death] {
            if fd >= 0 {
                // SAFETY: a descriptor of this process, borrowed for the call.
                let fd = unsafe { BorrowedFd::borrow_raw(fd) };
                if let Err(e) = rustix::io::fcntl_setfd(fd, rustix::io::FdFlags::empty()) {
                    return -(e.raw_os_error() as isize);
                }
            }
        }
        // SAFETY: static strings and decimals on this stack, ending with null.
        let Ok(argv) = (unsafe { ExecArray::new(&argv) }) else {
            return -(libc::EINVAL as isize);
        };
        // SAFETY: the image's descriptor, borrowed for the call.
        let memfd = unsafe { BorrowedFd::borrow_raw(memfd) };
        -(fexecve(memfd, argv, ExecArray::EMPTY).raw_os_error() as isize)
    }

    /// Returns false (after saying so, or failing under `PALISADE_NO_SKIP`) when not root.
    fn root() -> bool {
        let root = palisade_test_support::is_root();
        if !root {
            palisade_test_support::skip("needs root");
        }
        root
    }

    fn pipe() -> (OwnedFd, OwnedFd) {
        let mut fds = [-1; 2];
        // SAFETY: pipe2(2) writes two new descriptors, which we then own.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh descriptors owned by nobody else.
        unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
    }

    /// Waits until `fd` is readable (or hung up); false on timeout.
    fn readable(fd: RawFd, deadline: Instant) -> bool {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut pfd = libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll(2) on one live pollfd.
            let n = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as libc::c_int) };
            if n > 0 {
                return true;
            }
            if n == 0 || Instant::now() >= deadline {
                return false;
            }
        }
    }

    /// Reads up to 4 bytes (within [`TIMEOUT`]): the wait status the init wrote, or `None` at
    /// end-of-file.
    fn read_status(fd: &OwnedFd) -> Option<i32> {
        let deadline = Instant::now() + TIMEOUT;
        let mut buf = [0u8; 4];
        let mut got = 0;
        while got < 4 {
            assert!(readable(fd.as_raw_fd(), deadline), "no status in time");
            // SAFETY: read(2) into the rest of a live buffer.
            let n = unsafe { libc::read(fd.as_raw_fd(), buf[got..].as_mut_ptr().cast(), 4 - got) };
            assert!(n >= 0, "read: {}", io::Error::last_os_error());
            if n == 0 {
                assert_eq!(got, 0, "a partial status");
                return None;
            }
            got += n as usize;
        }
        Some(i32::from_ne_bytes(buf))
    }

    /// PID 1's exit code in a nested sandbox when the init killed a process besides the command.
    const BYSTANDER_KILLED: i32 = 99;

    /// Waits for a child (async-signal-safe) and returns its shell-form exit code.
    fn wait_code(pid: libc::pid_t) -> i32 {
        let mut st = 0;
        // SAFETY: waitpid(2) on a child of this process, into a local.
        while unsafe { libc::waitpid(pid, &mut st, 0) } < 0 {}
        if libc::WIFEXITED(st) {
            libc::WEXITSTATUS(st)
        } else {
            128 + libc::WTERMSIG(st)
        }
    }

    /// A fork-like child without libc's atfork handlers (in a child of a child): its pid in the
    /// parent, 0 in the child, -errno on failure.
    fn raw_fork() -> libc::pid_t {
        // SAFETY: the copy only makes raw calls and executes or exits (see the callers).
        match unsafe { palisade_ns::child::fork() } {
            Ok(Some(pid)) => pid,
            Ok(None) => 0,
            Err(e) => -e.raw_os_error(),
        }
    }

    /// X, the test's child, and the init it started (Y, PID 1 of a new PID namespace).
    struct Sandbox {
        x: libc::pid_t,
        init: libc::pid_t,
        reaped: bool,
    }

    impl Sandbox {
        /// Starts `command` (absolute path and arguments) under the init, PID 1 of a new PID
        /// namespace, which gets `status`, `control` and `death`.
        fn start(
            command: &[&str],
            status: &OwnedFd,
            control: Option<&OwnedFd>,
            death: Option<&OwnedFd>,
        ) -> Sandbox {
            Sandbox::start_as(false, command, status, control, death)
        }

        /// As [`Sandbox::start`], or if `nested`, with the init as PID 3 of the namespace: PID 1
        /// starts a bystander running the command too, then the init, and exits with the init's
        /// code, or [`BYSTANDER_KILLED`] if the bystander did not survive the init.
        fn start_as(
            nested: bool,
            command: &[&str],
            status: &OwnedFd,
            control: Option<&OwnedFd>,
            death: Option<&OwnedFd>,
        ) -> Sandbox {
            Sandbox::start_with(nested, command, status, control, death, -1)
        }

        /// As [`Sandbox::start_as`], the init told `time_left` (milliseconds, or -1) until its
        /// deadline.
        fn start_with(
            nested: bool,
            command: &[&str],
            status: &OwnedFd,
            control: Option<&OwnedFd>,
            death: Option<&OwnedFd>,
            time_left: i64,
        ) -> Sandbox {
            // Everything the children need, made before forking.
            let image = sealed_memfd().expect("sealed memfd");
            let argv: Vec<std::ffi::CString> = command
                .iter()
                .map(|a| std::ffi::CString::new(*a).unwrap())
                .collect();
            let mut argv_ptrs: Vec<*const c_char> = argv.iter().map(|a| a.as_ptr()).collect();
            argv_ptrs.push(std::ptr::null());
            let envp: [*const c_char; 1] = [std::ptr::null()];
            let raw = |fd: Option<&OwnedFd>| fd.map_or(-1, |fd| fd.as_raw_fd());
            let (control, death) = (raw(control), raw(death));
            let mut keep: Vec<RawFd> = [0, 1, 2, image.as_raw_fd(), status.as_raw_fd()]
                .into_iter()
                .chain([control, death].into_iter().filter(|&fd| fd >= 0))
                .collect();
            keep.sort_unstable();
            // The sets the sandbox's child uses: the init's signals blocked, or none.
            let (empty, blocked) = (
                palisade_ns::child::SignalSet::EMPTY,
                crate::spawn::plan::init_signals(),
            );
            let (report_r, report_w) = pipe();

            // SAFETY: fork(2); the child only makes async-signal-safe calls and exits.
            let x = unsafe { libc::fork() };
            assert!(x >= 0, "fork: {}", io::Error::last_os_error());
            if x == 0 {
                // SAFETY: the children (single-threaded copies) make only raw system calls on
                // data prepared before the fork, and end in _exit or an exec.
                unsafe {
                    let become_init = || -> ! {
                        let _ = palisade_ns::child::set_signal_mask(&blocked);
                        palisade_ns::child::close_all_but(&keep);
                        let g = raw_fork();
                        if g == 0 {
                            let _ = palisade_ns::child::set_signal_mask(&empty);
                            libc::execve(argv_ptrs[0], argv_ptrs.as_ptr(), envp.as_ptr());
                            libc::_exit(127);
                        }
                        if g < 0 {
                            libc::_exit(121);
                        }
                        let args = InitArgs {
                            command: g,
                            status: status.as_raw_fd(),
                            control,
                            death,
                            gate: -1,
                            time_left,
                        };
                        exec_init(image.as_raw_fd(), &args);
                        libc::_exit(122)
                    };
                    if libc::unshare(libc::CLONE_NEWPID) != 0 {
                        libc::_exit(120);
                    }
                    let y = raw_fork();
                    if y == 0 && !nested {
                        become_init();
                    }
                    if y == 0 {
                        // PID 1 of the namespace: a bystander running the command too, and
                        // the init as PID 3.
                        palisade_ns::child::close_all_but(&keep);
                        let bystander = raw_fork();
                        if bystander == 0 {
                            libc::execve(argv_ptrs[0], argv_ptrs.as_ptr(), envp.as_ptr());
                            libc::_exit(127);
                        }
                        let init = raw_fork();
                        if init == 0 {
                            become_init();
                        }
                        let code = wait_code(init);
                        let alive = libc::waitpid(bystander, std::ptr::null_mut(), libc::WNOHANG);
                        libc::kill(bystander, libc::SIGKILL);
                        libc::_exit(if alive == 0 { code } else { BYSTANDER_KILLED });
                    }
                    palisade_ns::child::close_all_but(&[report_w.as_raw_fd()]);
                    if y < 0 {
                        libc::_exit(123);
                    }
                    let bytes = y.to_ne_bytes();
                    libc::write(report_w.as_raw_fd(), bytes.as_ptr().cast(), bytes.len());
                    libc::close(report_w.as_raw_fd());
                    libc::_exit(wait_code(y));
                }
            }
            drop(report_w);
            let mut sandbox = Sandbox {
                x,
                init: 0,
                reaped: false,
            };
            let mut pid = [0u8; 4];
            let deadline = Instant::now() + TIMEOUT;
            assert!(readable(report_r.as_raw_fd(), deadline), "no init pid");
            // SAFETY: read(2) into a live 4-byte buffer.
            let n = unsafe { libc::read(report_r.as_raw_fd(), pid.as_mut_ptr().cast(), 4) };
            assert_eq!(n, 4, "X did not report the init's pid");
            sandbox.init = i32::from_ne_bytes(pid);
            if nested {
                sandbox.init = sandbox.find_init(deadline);
            }
            sandbox
        }

        /// The pid of the init among the children of the namespace's PID 1.
        fn find_init(&self, deadline: Instant) -> libc::pid_t {
            let children = format!("/proc/{0}/task/{0}/children", self.init);
            while Instant::now() < deadline {
                let list = std::fs::read_to_string(&children).unwrap_or_default();
                for pid in list.split_whitespace() {
                    let comm = std::fs::read(format!("/proc/{pid}/comm")).unwrap_or_default();
                    if comm == b"palisade-init\n" {
                        return pid.parse().unwrap();
                    }
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            panic!("no init among the children of {}", self.init);
        }

        fn proc_file(&self, name: &str) -> Vec<u8> {
            std::fs::read(format!("/proc/{}/{name}", self.init)).unwrap_or_default()
        }

        /// Waits until the init has confined itself (its filter shows), so that it has
        /// executed and set its signal mask and descriptors up.
        fn wait_ready(&self) {
            let deadline = Instant::now() + TIMEOUT;
            while Instant::now() < deadline {
                let status = String::from_utf8_lossy(&self.proc_file("status")).into_owned();
                if status.contains("Seccomp:\t2") {
                    // The filter comes before F_SETOWN and O_ASYNC; give it a moment.
                    std::thread::sleep(Duration::from_millis(50));
                    return;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            panic!("the init did not start in time");
        }

        /// Whether X has exited yet (reaping it if so); its exit code.
        fn try_wait(&mut self) -> Option<i32> {
            let mut st = 0;
            // SAFETY: waitpid(2) on our own child.
            let pid = unsafe { libc::waitpid(self.x, &mut st, libc::WNOHANG) };
            assert!(pid >= 0, "waitpid: {}", io::Error::last_os_error());
            if pid == 0 {
                return None;
            }
            self.reaped = true;
            assert!(libc::WIFEXITED(st), "X died by signal: {st:#x}");
            Some(libc::WEXITSTATUS(st))
        }

        /// X's exit code, which is the init's (or 128 + its signal), within [`TIMEOUT`].
        fn wait(&mut self) -> i32 {
            let deadline = Instant::now() + TIMEOUT;
            while Instant::now() < deadline {
                if let Some(code) = self.try_wait() {
                    return code;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            panic!("the init did not exit in time");
        }

        fn signal(&self, sig: libc::c_int) {
            // SAFETY: kill(2) of the init we started, not yet reaped (X reaps it).
            assert_eq!(unsafe { libc::kill(self.init, sig) }, 0);
        }
    }

    impl Drop for Sandbox {
        fn drop(&mut self) {
            if !self.reaped {
                // SAFETY: kill(2) and waitpid(2) of processes this test started: killing the
                // init ends its namespace, X then exits or is killed, and we reap it.
                unsafe {
                    if self.init > 0 {
                        libc::kill(self.init, libc::SIGKILL);
                    }
                    libc::kill(self.x, libc::SIGKILL);
                    libc::waitpid(self.x, std::ptr::null_mut(), 0);
                }
            }
        }
    }

    #[test]
    fn image_is_a_static_executable() {
        assert_eq!(&INIT_ELF[..4], b"\x7fELF");
        // e_type ET_EXEC (not ET_DYN: no PIE), native endian.
        assert_eq!(u16::from_ne_bytes([INIT_ELF[16], INIT_ELF[17]]), 2);
        // No PT_INTERP (3) among the program headers.
        let word = |at: usize| u64::from_ne_bytes(INIT_ELF[at..at + 8].try_into().unwrap());
        let half = |at: usize| u16::from_ne_bytes([INIT_ELF[at], INIT_ELF[at + 1]]);
        let (phoff, phentsize, phnum) = (word(32) as usize, half(54) as usize, half(56));
        for i in 0..phnum as usize {
            let kind =
                u32::from_ne_bytes(INIT_ELF[phoff + i * phentsize..][..4].try_into().unwrap());
            assert_ne!(kind, 3, "the init has an interpreter");
        }
        assert!(INIT_ELF.len() < 64 * 1024, "{} bytes", INIT_ELF.len());
    }

    #[test]
    fn memfd_is_sealed() {
        let fd = sealed_memfd().unwrap();
        // SAFETY: fcntl(2) F_GET_SEALS on our descriptor.
        let seals = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
        assert_eq!(seals, SEALS);
        let mut file = File::from(fd);
        assert_eq!(
            file.write(b"x").unwrap_err().raw_os_error(),
            Some(libc::EPERM)
        );
        assert_eq!(file.metadata().unwrap().len(), INIT_ELF.len() as u64);
    }

    #[test]
    fn bad_arguments_exit_125() {
        if !root() {
            return;
        }
        let image = sealed_memfd().unwrap();
        for args in [
            InitArgs {
                command: 0,
                status: 1,
                control: -1,
                death: -1,
                gate: -1,
                time_left: -1,
            },
            InitArgs {
                command: 5,
                status: -1,
                control: -1,
                death: -1,
                gate: -1,
                time_left: -1,
            },
            InitArgs {
                command: 5,
                status: 1,
                control: -2,
                death: -1,
                gate: -1,
                time_left: -1,
            },
        ] {
            // SAFETY: the child only executes (async-signal-safe) or exits.
            let pid = unsafe { libc::fork() };
            assert!(pid >= 0);
            if pid == 0 {
                exec_init(image.as_raw_fd(), &args);
                // SAFETY: leaving the forked child.
                unsafe { libc::_exit(99) };
            }
            let mut sandbox = Sandbox {
                x: pid,
                init: 0,
                reaped: false,
            };
            assert_eq!(sandbox.wait(), EXIT_SETUP, "{args:?}");
        }
    }

    #[test]
    fn exit_code_is_reported() {
        if !root() {
            return;
        }
        let (status_r, status_w) = pipe();
        let mut sandbox = Sandbox::start(&["/bin/sh", "-c", "exit 3"], &status_w, None, None);
        drop(status_w);
        assert_eq!(sandbox.wait(), 3);
        let status = read_status(&status_r).expect("a status");
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 3,
            "{status:#x}"
        );
        // Then the usage of the reaped children, three `u64` (six 4-byte reads), the flags,
        // none set, and nothing more.
        for _ in 0..6 {
            assert!(
                read_status(&status_r).is_some(),
                "no usage after the status"
            );
        }
        assert_eq!(read_status(&status_r), Some(0), "flags");
        assert_eq!(read_status(&status_r), None);
    }

    /// The init takes exactly its six arguments: five (an earlier init's argv) are bad argv,
    /// even with a real command to wait for, and so is a time left below -1; with all six it
    /// waits for the command (the positive control).
    #[test]
    fn the_argument_count_is_checked_exactly() {
        if !root() {
            return;
        }
        let image = sealed_memfd().unwrap();
        for (count, time_left, bad) in [(5, -1, true), (6, -2, true), (6, -1, false)] {
            let (status_r, status_w) = pipe();
            let (hold_r, hold_w) = pipe();
            // SAFETY: fork(2); the children only make raw async-signal-safe calls and exit or
            // execute.
            let x = unsafe { libc::fork() };
            assert!(x >= 0, "fork: {}", io::Error::last_os_error());
            if x == 0 {
                // SAFETY: as above, on descriptors prepared before the fork.
                unsafe {
                    let g = raw_fork();
                    if g == 0 {
                        // The command: runs until the test closes its end of the hold pipe,
                        // without a copy of the status pipe of its own.
                        libc::close(hold_w.as_raw_fd());
                        libc::close(status_w.as_raw_fd());
                        let mut byte = 0u8;
                        libc::read(hold_r.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
                        libc::_exit(0);
                    }
                    let args = InitArgs {
                        command: g,
                        status: status_w.as_raw_fd(),
                        control: -1,
                        death: -1,
                        gate: -1,
                        time_left,
                    };
                    exec_init_with(image.as_raw_fd(), &args, count);
                    libc::_exit(99);
                }
            }
            drop((status_w, hold_r));
            let mut sandbox = Sandbox {
                x,
                init: 0,
                reaped: false,
            };
            if bad {
                assert_eq!(sandbox.wait(), EXIT_SETUP, "{count} arguments, {time_left}");
                assert_eq!(read_status(&status_r), None, "a status for bad argv");
                drop(hold_w);
            } else {
                std::thread::sleep(Duration::from_millis(200));
                assert_eq!(sandbox.try_wait(), None, "the init did not wait");
                drop(hold_w);
                assert_eq!(sandbox.wait(), 0);
                assert!(read_status(&status_r).is_some_and(|s| s == 0));
            }
        }
    }

    /// The report the init wrote to `status_r`, read to its end once the init has exited.
    fn report(status_r: OwnedFd) -> crate::ExitStatus {
        crate::ExitStatus::read_report(&mut File::from(status_r)).expect("a report")
    }

    #[test]
    fn the_deadline_kills_the_sandbox_and_is_reported() {
        if !root() {
            return;
        }
        let (status_r, status_w) = pipe();
        // The shell waits for a sleep in the background: as PID 1 the init kills both.
        let mut sandbox = Sandbox::start_with(
            false,
            &["/bin/sh", "-c", "/bin/sleep 60 & wait"],
            &status_w,
            None,
            None,
            200,
        );
        drop(status_w);
        assert_eq!(sandbox.wait(), 128 + libc::SIGKILL);
        let status = report(status_r);
        assert!(status.timed_out(), "{status}");
        assert_eq!(status.signal(), Some(libc::SIGKILL), "{status}");
        assert!(status.cpu_time().is_some(), "{status:#}");
    }

    #[test]
    fn a_command_that_ends_before_the_deadline_is_not_timed_out() {
        if !root() {
            return;
        }
        let (status_r, status_w) = pipe();
        let mut sandbox = Sandbox::start_with(
            false,
            &["/bin/sh", "-c", "exit 3"],
            &status_w,
            None,
            None,
            60_000,
        );
        drop(status_w);
        assert_eq!(sandbox.wait(), 3);
        let status = report(status_r);
        assert!(!status.timed_out(), "{status}");
        assert_eq!(status.code(), Some(3));
    }

    /// Not PID 1, the init kills only the command at the deadline, as on the caller's death.
    #[test]
    fn the_deadline_outside_pid_1_kills_only_the_command() {
        if !root() {
            return;
        }
        let (status_r, status_w) = pipe();
        let mut sandbox =
            Sandbox::start_with(true, &["/bin/sleep", "60"], &status_w, None, None, 200);
        drop(status_w);
        // The init's code, 128 + SIGKILL for its command, and not BYSTANDER_KILLED.
        assert_eq!(sandbox.wait(), 128 + libc::SIGKILL);
        assert!(report(status_r).timed_out());
    }

    #[test]
    fn sigterm_is_forwarded() {
        if !root() {
            return;
        }
        let (status_r, status_w) = pipe();
        let mut sandbox = Sandbox::start(&["/bin/sleep", "60"], &status_w, None, None);
        drop(status_w);
        sandbox.wait_ready();
        sandbox.signal(libc::SIGTERM);
        assert_eq!(sandbox.wait(), 128 + libc::SIGTERM);
        let status = read_status(&status_r).expect("a status");
        assert!(libc::WIFSIGNALED(status), "{status:#x}");
        assert_eq!(libc::WTERMSIG(status), libc::SIGTERM);
    }

    #[test]
    fn caller_death_kills_the_sandbox() {
        if !root() {
            return;
        }
        let (status_r, status_w) = pipe();
        let (death_r, death_w) = pipe();
        let mut sandbox = Sandbox::start(&["/bin/sleep", "60"], &status_w, None, Some(&death_r));
        drop((status_w, death_r));
        sandbox.wait_ready();
        // Positive control: alive while the caller's end is open.
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(sandbox.try_wait(), None, "the init exited on its own");
        drop(death_w);
        assert_eq!(sandbox.wait(), EXIT_CALLER_DIED);
        assert_eq!(
            read_status(&status_r),
            None,
            "a status after the caller died"
        );
    }

    /// Two sandboxes of one caller watching the same death pipe, each init through its own open
    /// file description (reopened through `/proc/self/fd`) or, if `share_description`, through
    /// `dup(2)` copies of one. Closes the write end and returns each init's exit code, `None`
    /// for one still running after two seconds.
    fn shared_death_pipe(share_description: bool) -> [Option<i32>; 2] {
        let (status_r, status_w) = pipe();
        let (death_r, death_w) = pipe();
        let own = |fd: &OwnedFd| -> OwnedFd {
            if share_description {
                fd.try_clone().unwrap()
            } else {
                File::open(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                    .unwrap()
                    .into()
            }
        };
        let (first, second) = (own(&death_r), own(&death_r));
        let mut a = Sandbox::start(&["/bin/sleep", "60"], &status_w, None, Some(&first));
        let mut b = Sandbox::start(&["/bin/sleep", "60"], &status_w, None, Some(&second));
        drop((status_w, status_r, death_r, first, second));
        a.wait_ready();
        b.wait_ready();
        drop(death_w);
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut codes = [None, None];
        while Instant::now() < deadline && codes.iter().any(Option::is_none) {
            for (code, sandbox) in codes.iter_mut().zip([&mut a, &mut b]) {
                if code.is_none() {
                    *code = sandbox.try_wait();
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        codes
    }

    #[test]
    fn caller_death_reaches_every_sandbox() {
        if root() {
            let codes = shared_death_pipe(false);
            assert_eq!(codes, [Some(EXIT_CALLER_DIED); 2]);
        }
    }

    /// The control for the test above, and why each init needs a description of its own: with
    /// one shared description (`dup(2)`), only the init that called `F_SETOWN` last is told.
    #[test]
    fn shared_death_description_reaches_one_sandbox_only() {
        if root() {
            let codes = shared_death_pipe(true);
            assert_eq!(
                codes.iter().flatten().collect::<Vec<_>>(),
                [&EXIT_CALLER_DIED],
                "{codes:?}"
            );
        }
    }

    /// Not PID 1, the init must kill only the command when the caller dies: `kill(-1)` would
    /// reach every process it may signal (outside a PID namespace, the whole host). Here it runs
    /// as PID 3, so that a wrong `kill(-1)` would only reach the bystander next to it.
    #[test]
    fn caller_death_outside_pid_1_kills_only_the_command() {
        if !root() {
            return;
        }
        let (status_r, status_w) = pipe();
        let (death_r, death_w) = pipe();
        let mut sandbox =
            Sandbox::start_as(true, &["/bin/sleep", "60"], &status_w, None, Some(&death_r));
        drop((status_w, death_r));
        sandbox.wait_ready();
        let status = String::from_utf8_lossy(&sandbox.proc_file("status")).into_owned();
        let nspid = status
            .lines()
            .find(|l| l.starts_with("NSpid:"))
            .unwrap_or("");
        assert!(!nspid.ends_with("\t1"), "the init is PID 1: {nspid}");
        drop(death_w);
        assert_eq!(sandbox.wait(), EXIT_CALLER_DIED);
        assert_eq!(
            read_status(&status_r),
            None,
            "a status after the caller died"
        );
    }

    #[test]
    fn socket_factory_serves_requests() {
        if !root() {
            return;
        }
        let (status_r, status_w) = pipe();
        let (parent, child) = super::super::control::socketpair().unwrap();
        let mut sandbox = Sandbox::start(&["/bin/sleep", "60"], &status_w, Some(&child), None);
        drop((status_w, child));
        sandbox.wait_ready();
        let ask = |request: &[u8]| -> io::Result<OwnedFd> {
            // SAFETY: send(2) from a live slice on our socket.
            let sent = unsafe {
                libc::send(
                    parent.as_raw_fd(),
                    request.as_ptr().cast(),
                    request.len(),
                    0,
                )
            };
            assert_eq!(sent, request.len() as isize);
            assert!(
                readable(parent.as_raw_fd(), Instant::now() + TIMEOUT),
                "no answer"
            );
            super::super::control::recv_fd(&parent, false)
        };
        let sockopt = |fd: &OwnedFd, opt: libc::c_int| -> libc::c_int {
            let mut value: libc::c_int = 0;
            let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
            // SAFETY: getsockopt(2) writes one int into a live variable.
            let ret = unsafe {
                libc::getsockopt(
                    fd.as_fd().as_raw_fd(),
                    libc::SOL_SOCKET,
                    opt,
                    (&mut value as *mut libc::c_int).cast(),
                    &mut len,
                )
            };
            assert_eq!(ret, 0, "getsockopt: {}", io::Error::last_os_error());
            value
        };
        let tcp = ask(&[1]).expect("a TCP socket");
        assert_eq!(sockopt(&tcp, libc::SO_TYPE), libc::SOCK_STREAM);
        assert_eq!(sockopt(&tcp, libc::SO_DOMAIN), libc::AF_INET);
        let udp = ask(&[2]).expect("a UDP socket");
        assert_eq!(sockopt(&udp, libc::SO_TYPE), libc::SOCK_DGRAM);
        for bad in [&[7u8][..], &[1, 1]] {
            let err = ask(bad).expect_err("a socket for a bad request");
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL), "{bad:?}");
        }
        sandbox.signal(libc::SIGTERM);
        assert_eq!(sandbox.wait(), 128 + libc::SIGTERM);
        assert!(read_status(&status_r).is_some());
    }

    #[test]
    fn init_is_confined_and_shows_nothing_of_the_caller() {
        if !root() {
            return;
        }
        let (status_r, status_w) = pipe();
        let (death_r, _death_w) = pipe();
        let (_parent, child) = super::super::control::socketpair().unwrap();
        let mut sandbox = Sandbox::start(
            &["/bin/sleep", "60"],
            &status_w,
            Some(&child),
            Some(&death_r),
        );
        let expected_fds = {
            let mut fds = [status_w.as_raw_fd(), child.as_raw_fd(), death_r.as_raw_fd()];
            fds.sort_unstable();
            fds
        };
        drop((status_w, child, death_r));
        sandbox.wait_ready();

        let status = String::from_utf8_lossy(&sandbox.proc_file("status")).into_owned();
        assert!(status.contains("NoNewPrivs:\t1"), "{status}");
        assert!(status.contains("Seccomp:\t2"), "{status}");
        let nspid = status
            .lines()
            .find(|l| l.starts_with("NSpid:"))
            .unwrap_or("");
        assert!(
            nspid.ends_with("\t1"),
            "not PID 1 of its namespace: {nspid}"
        );
        assert_eq!(sandbox.proc_file("comm"), b"palisade-init\n");

        let cmdline = sandbox.proc_file("cmdline");
        assert!(cmdline.starts_with(b"palisade-init\0"), "{cmdline:?}");
        let me = std::env::args().next().unwrap();
        let needle = me.as_bytes();
        assert!(
            !cmdline.windows(needle.len()).any(|w| w == needle),
            "the init's argv holds the test's"
        );
        assert_eq!(
            sandbox.proc_file("environ"),
            b"",
            "the init has an environment"
        );

        let mut fds: Vec<RawFd> = std::fs::read_dir(format!("/proc/{}/fd", sandbox.init))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_str().unwrap().parse().unwrap())
            .collect();
        fds.sort_unstable();
        assert_eq!(fds, expected_fds, "the init holds other descriptors");

        sandbox.signal(libc::SIGTERM);
        assert_eq!(sandbox.wait(), 128 + libc::SIGTERM);
        assert!(read_status(&status_r).is_some());
    }
}
