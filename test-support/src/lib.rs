//! Shared by the integration tests of every Palisade crate (a dev-dependency of each): the policy
//! for tests that need root, temporary directories that are removed on drop, threads in network
//! namespaces of their own, and hand-made Ethernet frames ([`frames`]).

pub mod frames;
pub mod registry;

use std::path::{Path, PathBuf};

/// Whether the test runs as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Returns from the test unless it runs as root. Skipping says why on stderr, past the test
/// harness's capture, as a `SKIPPED:` line that CI looks for; with `PALISADE_NO_SKIP` set (as CI
/// sets it) the test fails instead.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::is_root() {
            $crate::skip("needs root (CAP_SYS_ADMIN)");
            return;
        }
    };
}

/// Reports the current test as skipped, or panics when skipping is forbidden. The test harness
/// names each test's thread after the test.
pub fn skip(reason: &str) {
    let thread = std::thread::current();
    let test = thread.name().unwrap_or("a test");
    if std::env::var_os("PALISADE_NO_SKIP").is_some() {
        panic!("{test}: {reason}, and PALISADE_NO_SKIP forbids skipping");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "SKIPPED: {test}: {reason}");
}

/// A directory under the temporary directory, named `palisade-test-<tag>-<pid>-<n>` so that a leak
/// is easy to spot, removed with its contents on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a fresh directory.
    pub fn new(tag: &str) -> TempDir {
        use std::sync::atomic::{AtomicUsize, Ordering};
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("palisade-test-{tag}-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Joins the calling thread (one of the test's own) to the network namespace `ns`.
pub fn join_netns(ns: &std::fs::File) {
    use std::os::fd::AsRawFd;
    // SAFETY: setns reads the fd, which `ns` keeps open; it changes this thread only.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns: {}", std::io::Error::last_os_error());
}

/// Runs `f` in a fresh thread that has unshared a network namespace of its own, which dies with
/// the thread (unless something `f` made keeps it).
pub fn in_new_netns<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare affects only this thread.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare: {}", std::io::Error::last_os_error());
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// Runs `f` in a fresh thread that has joined the network namespace of process `pid`.
pub fn in_netns_of<T: Send>(pid: u32, f: impl FnOnce() -> T + Send) -> T {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net")).unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            join_netns(&ns);
            f()
        })
        .join()
        .unwrap_or_else(|p| std::panic::resume_unwind(p))
    })
}

/// A command that runs the ignored test `name` of the test binary `exe` alone, on one thread,
/// its output not captured: how a test runs part of itself in a process of its own.
pub fn ignored_test_command(exe: &Path, name: &str) -> std::process::Command {
    let mut command = std::process::Command::new(exe);
    command.args([
        "--exact",
        name,
        "--ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    command
}

/// Runs the ignored test `name` of this very test binary in a process of its own. Returns
/// whether it passed, and its output, for the assertion message.
pub fn run_ignored_test(name: &str) -> (bool, String) {
    let out = ignored_test_command(&std::env::current_exe().unwrap(), name)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success() && text.contains("1 passed"), text)
}

/// Runs the ignored test `name` of this very test binary again as `uid`:`uid` (no passwd entry
/// needed), from a copy the user can execute, with `env` set and `/` as its directory. Returns
/// whether it passed, and its output, for the assertion message.
pub fn run_ignored_test_as(uid: u32, name: &str, env: &[(&str, &str)]) -> (bool, String) {
    run_ignored_test_as_in(uid, &[], name, env)
}

/// [`run_ignored_test_as`], started in the cgroups whose `cgroup.procs` files `procs` names:
/// it moves there while still root, then becomes `uid`, as a service manager starts a user's
/// process in a group delegated to it (an unprivileged process may not move itself out of a
/// group it does not own, `cgroups(7)`, "Cgroups v2 delegation").
pub fn run_ignored_test_as_in(
    uid: u32,
    procs: &[PathBuf],
    name: &str,
    env: &[(&str, &str)],
) -> (bool, String) {
    use std::ffi::CString;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let dir = TempDir::new("as-user");
    let exe = dir.path().join("tests");
    std::fs::copy(std::env::current_exe().unwrap(), &exe).unwrap();
    for p in [dir.path(), &exe] {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    // Made before the fork: the child only makes system calls.
    let procs: Vec<CString> = procs
        .iter()
        .map(|p| CString::new(p.as_os_str().as_bytes()).unwrap())
        .collect();
    // A child forked by another test thread while the copy was open for writing holds that
    // descriptor until its exec, and the kernel refuses to execute a file open for writing
    // (ETXTBSY): retry until those children have moved on.
    let mut attempts = 0;
    let out = loop {
        let mut command = ignored_test_command(&exe, name);
        command.envs(env.iter().copied()).current_dir("/");
        if procs.is_empty() {
            command.uid(uid).gid(uid);
        } else {
            let procs = procs.clone();
            // SAFETY: the hook only makes system calls (open, write, close, setgroups, setgid,
            // setuid) on memory made before the fork.
            unsafe {
                command.pre_exec(move || {
                    for path in &procs {
                        let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
                        if fd < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                        let written = libc::write(fd, b"0".as_ptr().cast(), 1);
                        libc::close(fd);
                        if written != 1 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    if libc::setgroups(0, std::ptr::null()) != 0
                        || libc::setgid(uid) != 0
                        || libc::setuid(uid) != 0
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        match command.output() {
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 100 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => break other.unwrap(),
        }
    };
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let passed = out.status.success() && text.contains("1 passed");
    (passed, text)
}
