//! `palisade-ns` against the real kernel. Tests that create namespaces other than a user namespace
//! need root; they skip with a reason on stderr when not root, and fail instead when
//! PALISADE_NO_SKIP is set (as CI does).

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;

use palisade_ns::{
    clone, clone3, persist, pidfd_open, setns, unshare, write_timens_offsets, CloneArgs, Error,
    Forked, Namespace, NsFile, NsId, Offset, TimeOffsets,
};
use palisade_test_support::{require_root, TempDir};

fn pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for two descriptors.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: pipe2 returned two new descriptors.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A child that sits in its new namespaces until the returned write end is closed.
struct Parked {
    child: palisade_ns::ClonedChild,
    release: Option<OwnedFd>,
}

impl Parked {
    fn pid(&self) -> libc::pid_t {
        self.child.pid()
    }

    fn finish(mut self) -> i32 {
        // Release with a byte, not by closing: children parked by concurrent tests hold copies
        // of this pipe's write end, so end-of-file could be long in coming.
        let release = self.release.take().unwrap();
        // SAFETY: writing one byte from a live buffer to a pipe we own.
        let written = unsafe { libc::write(release.as_raw_fd(), b"x".as_ptr().cast(), 1) };
        assert_eq!(written, 1);
        let status = self.child.wait().unwrap();
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        libc::WEXITSTATUS(status)
    }
}

fn park(namespaces: Namespace, use_clone3: bool) -> Result<Parked, Error> {
    let (r, w) = pipe();
    let args = CloneArgs::new(namespaces);
    // SAFETY: the child only calls read and _exit.
    let forked = unsafe {
        if use_clone3 {
            clone3(&args)
        } else {
            clone(&args)
        }
    }?;
    match forked {
        Forked::Child => {
            let mut byte = 0u8;
            // SAFETY: blocking read into a local, then _exit; no allocation or locks.
            unsafe {
                libc::close(w.as_raw_fd());
                libc::read(r.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
                libc::_exit(0)
            }
        }
        Forked::Parent(child) => Ok(Parked {
            child,
            release: Some(w),
        }),
    }
}

fn own_id(kind: Namespace) -> NsId {
    NsId::of(std::process::id() as libc::pid_t, kind).unwrap()
}

#[test]
fn clone3_creates_all_eight_namespaces() {
    require_root!();
    let parked = park(Namespace::all(), true).unwrap();
    for kind in Namespace::all().kinds() {
        let child_ns = NsFile::open(parked.pid(), kind).unwrap();
        assert_eq!(child_ns.kind(), kind);
        assert_ne!(child_ns.id().unwrap(), own_id(kind), "{kind} not new");
    }
    assert_eq!(parked.finish(), 0);
}

#[test]
fn clone_fallback_creates_namespaces_too() {
    require_root!();
    let kinds = Namespace::all() - Namespace::TIME;
    let parked = park(kinds, false).unwrap();
    for kind in kinds.kinds() {
        assert_ne!(
            NsId::of(parked.pid(), kind).unwrap(),
            own_id(kind),
            "{kind}"
        );
    }
    assert_eq!(
        NsId::of(parked.pid(), Namespace::TIME).unwrap(),
        own_id(Namespace::TIME)
    );
    assert_eq!(parked.finish(), 0);
}

#[test]
fn a_new_user_namespace_needs_no_privilege() {
    // Works as root and unprivileged alike.
    let parked = park(Namespace::USER, true).unwrap();
    assert_ne!(
        NsId::of(parked.pid(), Namespace::USER).unwrap(),
        own_id(Namespace::USER)
    );
    assert_eq!(parked.finish(), 0);
}

#[test]
fn setns_by_file_and_by_pidfd() {
    require_root!();
    let kinds = Namespace::NET | Namespace::UTS | Namespace::IPC | Namespace::CGROUP;
    let parked = park(kinds, true).unwrap();
    let pid = parked.pid();
    std::thread::spawn(move || {
        for kind in kinds.kinds() {
            NsFile::open(pid, kind).unwrap().setns().unwrap();
            assert_eq!(
                NsFile::open_current(kind).unwrap().id().unwrap(),
                NsId::of(pid, kind).unwrap()
            );
        }
    })
    .join()
    .unwrap();
    let pidfd = pidfd_open(pid).unwrap();
    std::thread::spawn(move || {
        setns(pidfd.as_fd(), kinds).unwrap();
        for kind in kinds.kinds() {
            assert_eq!(
                NsFile::open_current(kind).unwrap().id().unwrap(),
                NsId::of(pid, kind).unwrap()
            );
        }
    })
    .join()
    .unwrap();
    assert_eq!(parked.finish(), 0);
}

#[test]
fn setns_into_the_wrong_kind_is_refused() {
    require_root!();
    let net = NsFile::open(std::process::id() as i32, Namespace::NET).unwrap();
    let err = setns(net.as_fd(), Namespace::UTS).unwrap_err();
    assert!(matches!(err, Error::Setns { .. }), "{err}");
    assert_eq!(err.errno(), Some(libc::EINVAL));
}

#[test]
fn unshare_moves_only_the_calling_thread() {
    require_root!();
    let host = own_id(Namespace::UTS);
    let inner = std::thread::spawn(|| {
        unshare(Namespace::UTS).unwrap();
        let name = b"palisade-unshare";
        // SAFETY: valid buffer and length.
        let ret = unsafe { libc::sethostname(name.as_ptr().cast(), name.len()) };
        assert_eq!(ret, 0);
        NsFile::open_current(Namespace::UTS).unwrap().id().unwrap()
    })
    .join()
    .unwrap();
    assert_ne!(inner, host);
    assert_eq!(own_id(Namespace::UTS), host);
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_ne!(host_name.trim(), "palisade-unshare");
}

#[test]
fn persisted_namespace_outlives_its_last_process() {
    require_root!();
    let dir = TempDir::new("persist");
    let target = dir.path().join("net");
    let target_for_thread = target.clone();
    // All mounts happen in a private mount namespace owned by this thread; it vanishes with it.
    std::thread::spawn(move || {
        unshare(Namespace::MOUNT).unwrap();
        let root = CString::new("/").unwrap();
        // SAFETY: valid path; changes propagation of this thread's mount namespace only.
        let ret = unsafe {
            libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            )
        };
        assert_eq!(ret, 0);

        let parked = park(Namespace::NET, true).unwrap();
        let id = NsId::of(parked.pid(), Namespace::NET).unwrap();
        let net = NsFile::open(parked.pid(), Namespace::NET).unwrap();
        let persisted = persist(&net, &target_for_thread).unwrap();
        drop(net);
        assert_eq!(parked.finish(), 0);

        // No process is left in it, yet the namespace lives on at the bind mount.
        let reopened = persisted.open().unwrap();
        assert_eq!(reopened.kind(), Namespace::NET);
        assert_eq!(reopened.id().unwrap(), id);

        // Persisting onto an existing path fails and leaves that path alone.
        let err = persist(&reopened, &target_for_thread).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EEXIST), "{err}");
        drop(reopened);

        persisted.remove().unwrap();
        assert!(!target_for_thread.exists());
    })
    .join()
    .unwrap();
    assert!(!target.exists());
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mountinfo.contains(dir.path().to_str().unwrap()));
}

#[test]
fn time_offsets_are_set_before_the_first_process_enters() {
    require_root!();
    let ten_days = 10 * 86_400;
    std::thread::spawn(move || {
        unshare(Namespace::TIME).unwrap();
        // SAFETY: gettid cannot fail.
        let tid = unsafe { libc::gettid() };
        let offsets = TimeOffsets::both(Offset::secs(ten_days));
        write_timens_offsets(tid, &offsets).unwrap();
        // A process started from this thread enters the time namespace (at execve).
        let out = std::process::Command::new("cat")
            .arg("/proc/uptime")
            .output()
            .unwrap();
        let uptime: f64 = String::from_utf8(out.stdout)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(uptime >= ten_days as f64, "uptime {uptime}");
        // Once a process has entered, the offsets are frozen.
        let err = write_timens_offsets(tid, &offsets).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EACCES), "{err}");
    })
    .join()
    .unwrap();
}

#[test]
fn clone3_into_cgroup_starts_the_child_in_that_group() {
    require_root!();
    // The cgroup2 hierarchy: /sys/fs/cgroup on a pure v2 host, /sys/fs/cgroup/unified on a hybrid.
    let root = ["/sys/fs/cgroup/unified", "/sys/fs/cgroup"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.join("cgroup.procs").exists() && p.join("cgroup.controllers").exists())
        .expect("a cgroup2 mount");
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let own = own
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .unwrap()
        .trim_start_matches('/');
    let name = format!("palisade-ns-test-{}", std::process::id());
    let group = root.join(own).join(&name);
    std::fs::create_dir(&group).unwrap();
    let dir = std::fs::File::open(&group).unwrap();
    let (r, w) = pipe();
    let args = CloneArgs::new(Namespace::empty()).into_cgroup(dir.as_fd());
    // SAFETY: the child only calls read and _exit.
    let child = match unsafe { clone3(&args) }.unwrap() {
        // SAFETY: a blocking read into a local, then _exit.
        Forked::Child => unsafe {
            let mut byte = 0u8;
            libc::read(r.as_raw_fd(), (&mut byte as *mut u8).cast(), 1);
            libc::_exit(0)
        },
        Forked::Parent(child) => child,
    };
    let procs = std::fs::read_to_string(group.join("cgroup.procs")).unwrap();
    let membership = std::fs::read_to_string(format!("/proc/{}/cgroup", child.pid())).unwrap();
    // SAFETY: writing one byte from a live buffer to a pipe we own.
    let written = unsafe { libc::write(w.as_raw_fd(), b"x".as_ptr().cast(), 1) };
    assert_eq!(written, 1);
    child.wait().unwrap();
    // Clean up before asserting, so that a failure leaves no group behind.
    std::fs::remove_dir(&group).unwrap();
    assert_eq!(procs.trim(), child.pid().to_string());
    assert!(
        membership
            .lines()
            .any(|l| l.starts_with("0::") && l.ends_with(&name)),
        "{membership}"
    );
}
