//! The caller's descriptors. Whatever the caller happens to hold open without `O_CLOEXEC` (a
//! library's directory handle, a socket, a log file) must not reach the sandbox: an open
//! directory of the host is a way out of any root file system, through
//! `/proc/self/fd/N/..` or `openat(N, "..")`.

use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use crate::common::{probe, sh};
use palisade::{Error, Sandbox};
use palisade_test_support::{require_root, TempDir};

/// A host directory the attacks try to reach: `TempDir/inner` (with a marker file) is what the
/// caller holds open, so that `inner/..` is still the test's own directory.
struct HostDir {
    dir: TempDir,
}

impl HostDir {
    fn new(tag: &str) -> HostDir {
        let dir = TempDir::new(tag);
        std::fs::create_dir(dir.path().join("inner")).unwrap();
        std::fs::write(dir.path().join("inner/palisade-marker"), "host secret\n").unwrap();
        HostDir { dir }
    }

    fn inner(&self) -> std::path::PathBuf {
        self.dir.path().join("inner")
    }

    /// Everything in the test's directory and in `inner`, to compare before and after.
    fn listing(&self) -> Vec<String> {
        let mut names = Vec::new();
        for dir in [self.dir.path().to_owned(), self.inner()] {
            for entry in std::fs::read_dir(&dir).unwrap() {
                names.push(entry.unwrap().path().display().to_string());
            }
        }
        names.sort();
        names
    }

    /// Opens `inner` the way a careless library would: without `O_CLOEXEC`.
    fn open_leaky(&self) -> OwnedFd {
        let path =
            std::ffi::CString::new(self.inner().into_os_string().into_encoded_bytes()).unwrap();
        // SAFETY: a NUL-terminated path; the returned descriptor is owned below.
        let fd = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
        assert!(fd >= 0, "open: {}", std::io::Error::last_os_error());
        // SAFETY: a fresh descriptor nothing else owns.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }
}

#[test]
fn a_leaked_directory_cannot_be_the_working_directory() {
    require_root!();
    let host = HostDir::new("fd-cwd");
    let before = host.listing();
    let fd = host.open_leaky();
    let n = fd.as_raw_fd();
    let mut b = sh("pwd; ls; echo pwned > escaped-through-cwd; echo wrote");
    b.current_dir(format!("/proc/self/fd/{n}"));
    let result = b.output();
    drop(fd);
    let after = host.listing();
    assert_eq!(after, before, "the sandbox wrote into the host directory");
    match result {
        Err(Error::Child { .. }) | Err(Error::InvalidValue { .. }) => {}
        Err(other) => panic!("not the typed error expected: {other}"),
        Ok(out) => {
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                !stdout.contains("palisade-marker"),
                "the command runs in the host directory: {stdout}"
            );
            panic!(
                "a working directory through fd {n} was accepted ({}): {stdout}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

#[test]
fn a_leaked_directory_is_not_visible_in_the_sandbox() {
    require_root!();
    let host = HostDir::new("fd-proc");
    let before = host.listing();
    let fd = host.open_leaky();
    let n = fd.as_raw_fd();
    let script = format!(
        "ls /proc/self/fd/{n}/ 2>/dev/null; \
         echo pwned > /proc/self/fd/{n}/../escaped-through-proc 2>/dev/null && echo wrote; \
         test -e /proc/self/fd/{n} && echo fd-{n}-open; echo end"
    );
    let out = sh(&script).output().unwrap();
    drop(fd);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(host.listing(), before, "a write reached the host: {stdout}");
    assert!(!stdout.contains("palisade-marker"), "{stdout}");
    assert!(!stdout.contains("wrote"), "{stdout}");
    assert!(
        !stdout.contains(&format!("fd-{n}-open")),
        "the caller's fd {n} is open in the sandbox: {stdout}"
    );
    // The control: the script ran to its end.
    assert!(stdout.ends_with("end\n"), "{stdout}");
}

#[test]
fn a_leaked_directory_cannot_be_climbed_with_openat() {
    require_root!();
    let host = HostDir::new("fd-openat");
    let before = host.listing();
    let fd = host.open_leaky();
    let n = fd.as_raw_fd();
    let mut b = probe("fds::probe_openat_leaked_fd");
    b.env("PALISADE_LEAKED_FD", n.to_string());
    let out = b.output().unwrap();
    drop(fd);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        stdout.contains("\nleaked "),
        "the probe did not run: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(host.listing(), before, "a write reached the host: {stdout}");
    assert!(
        stdout.contains(&format!("\nleaked {n} closed\n")),
        "the caller's fd {n} reached the sandbox: {stdout}"
    );
}

/// Runs only inside a sandbox: climbs from the descriptor `PALISADE_LEAKED_FD` with
/// `openat(fd, "..")` and creates a file there. Prints `leaked N closed` if the descriptor is
/// not open, else what it could do.
#[test]
#[ignore = "run inside a sandbox by a_leaked_directory_cannot_be_climbed_with_openat"]
fn probe_openat_leaked_fd() {
    assert!(std::env::var_os("PALISADE_PROBE").is_some());
    println!();
    let n: RawFd = std::env::var("PALISADE_LEAKED_FD")
        .unwrap()
        .parse()
        .unwrap();
    // SAFETY: fcntl(2) and openat(2) on plain values and NUL-terminated names; the descriptors
    // opened here are closed when the process exits.
    unsafe {
        if libc::fcntl(n, libc::F_GETFD) == -1 {
            println!("leaked {n} closed");
            return;
        }
        let up = libc::openat(n, c"..".as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY);
        if up < 0 {
            println!(
                "leaked {n} open, openat .. {}",
                std::io::Error::last_os_error()
            );
            return;
        }
        let f = libc::openat(
            up,
            c"escaped-through-openat".as_ptr(),
            libc::O_CREAT | libc::O_WRONLY,
            0o644,
        );
        if f < 0 {
            println!(
                "leaked {n} open, create {}",
                std::io::Error::last_os_error()
            );
        } else {
            println!("leaked {n} open, created a file beside it");
        }
    }
}

/// A pipe, both ends close-on-exec as std makes them: `(read, write)`.
fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array, owned below.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: fresh descriptors nothing else owns.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

#[test]
fn a_named_descriptor_is_passed_and_an_unnamed_one_is_not() {
    require_root!();
    let dir = TempDir::new("fd-named");
    // A directory opened without O_CLOEXEC, as a careless library would.
    let path = std::ffi::CString::new(dir.path().as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a NUL-terminated path; the descriptor is owned below.
    let leaked = unsafe { libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    assert!(leaked >= 0);
    // SAFETY: a fresh descriptor nothing else owns.
    let leaked = unsafe { OwnedFd::from_raw_fd(leaked) };
    let n = leaked.as_raw_fd();

    let (read, write) = pipe();
    // Any number but the leaked one's.
    let t = n + 1;
    // bash, which redirects to any number (dash only to 0 to 9).
    let mut b = Sandbox::builder("bash");
    b.args([
        "-c",
        &format!("echo through-{t} >&{t}; test -e /proc/self/fd/{n} && echo fd-{n}-open; echo end"),
    ]);
    b.inherit_fd(t, write);
    let out = b.output().unwrap();
    drop(leaked);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout, "end\n", "the unnamed fd {n} reached the sandbox");
    // The sandbox has exited: what it wrote waits in the pipe. Read without blocking, in case
    // a copy of the write end is still open somewhere.
    drop(b);
    // SAFETY: fcntl(2) on a descriptor this test owns.
    unsafe { libc::fcntl(read.as_raw_fd(), libc::F_SETFL, libc::O_NONBLOCK) };
    let mut got = vec![0u8; 64];
    let len = std::fs::File::from(read).read(&mut got).unwrap();
    assert_eq!(&got[..len], format!("through-{t}\n").as_bytes());
}
