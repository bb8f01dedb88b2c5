//! Mount options, device nodes and propagation of a `Rootfs`, applied on the real kernel in
//! forked children, as in `rootfs_apply.rs`: each child moves into a private mount namespace
//! of its own, may mount something there first (the submounts of a volume's source), applies
//! the plan, checks the result from inside and reports through a pipe. Its mounts die with it.
//! The child makes only system calls, on strings prepared before the fork.

use std::ffi::{CStr, CString};
use std::fs;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;

use palisade_overlay::rootfs::{
    Access, At, Device, DeviceKind, MountAttr, MountAttrChange, Op, Propagation, Rootfs,
    RootfsPlan, Tmpfs, TmpfsOptions, Volume,
};
use palisade_overlay::Error;
use palisade_test_support::{require_root, TempDir};
use rustix::fs::{FileType, Mode, OFlags, StatVfsMountFlags, CWD};
use rustix::io::Errno;

/// A failed check: its number and the errno it met (0 if none).
type Failed = (u32, i32);

/// A step run in the child: `Err` names the check that failed.
type Step = fn() -> Result<(), Failed>;

/// The source directory whose submount `mount_submount` makes; set before the fork, read in the
/// child (a plain load once set).
static SUBMOUNT: Mutex<Option<CString>> = Mutex::new(None);

/// What a child reported: `Ok` when the plan applied and every check passed, else
/// `Err((1, index, errno))` for a failed op or `Err((0, check, errno))` for a failed check.
fn apply_in_child(plan: &RootfsPlan, pre: Step, check: Step) -> Result<(), (u32, u32, i32)> {
    let (rx, tx) = rustix::pipe::pipe().unwrap();
    // SAFETY: the child makes only system calls (rustix, and libc's unshare/mount/_exit, whose
    // errno writes are the child's own after fork) on memory prepared before the fork.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        drop(rx);
        child(plan, pre, check, &tx);
    }
    drop(tx);
    let mut buf = [0u8; 12];
    let read = fs::File::from(rx).read_exact(&mut buf);
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is a live local.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    read.unwrap_or_else(|e| panic!("no report from the child (status {status:#x}): {e}"));
    let word = |i: usize| u32::from_ne_bytes(buf[i * 4..i * 4 + 4].try_into().unwrap());
    match (word(0), word(1), word(2)) {
        (0, 0, _) => Ok(()),
        (kind, n, errno) => Err((kind, n, errno as i32)),
    }
}

fn child(plan: &RootfsPlan, pre: Step, check: Step, tx: &OwnedFd) -> ! {
    // SAFETY: unshare and mount change only this (single-threaded) child's mount namespace.
    let private = unsafe {
        libc::unshare(libc::CLONE_NEWNS) == 0
            && libc::mount(
                std::ptr::null(),
                c"/".as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ) == 0
    };
    if !private {
        // SAFETY: exits the child without running the parent's destructors.
        unsafe { libc::_exit(3) };
    }
    let out: [u32; 3] = match pre() {
        Err((n, e)) => [0, 1000 + n, e as u32],
        Ok(()) => match plan.apply() {
            Err(f) => [1, f.index, f.errno.raw_os_error() as u32],
            Ok(()) => match check() {
                Ok(()) => [0, 0, 0],
                Err((n, e)) => [0, n, e as u32],
            },
        },
    };
    let mut buf = [0u8; 12];
    for (i, w) in out.iter().enumerate() {
        buf[i * 4..i * 4 + 4].copy_from_slice(&w.to_ne_bytes());
    }
    let code = match rustix::io::write(tx, &buf) {
        Ok(12) => 0,
        _ => 4,
    };
    // SAFETY: as above.
    unsafe { libc::_exit(code) }
}

fn ok<T>(n: u32, r: rustix::io::Result<T>) -> Result<T, Failed> {
    r.map_err(|e| (n, e.raw_os_error()))
}

fn ensure(n: u32, cond: bool) -> Result<(), Failed> {
    if cond {
        Ok(())
    } else {
        Err((n, 0))
    }
}

fn nothing() -> Result<(), Failed> {
    Ok(())
}

/// Mounts a tmpfs on `sub` of the [`SUBMOUNT`] directory, in the child's namespace.
fn mount_submount() -> Result<(), Failed> {
    let guard = SUBMOUNT.try_lock().map_err(|_| (1, 0))?;
    let dir = guard.as_ref().ok_or((2, 0))?;
    ok(
        3,
        rustix::mount::mount(
            c"tmpfs",
            dir.as_c_str(),
            c"tmpfs",
            rustix::mount::MountFlags::empty(),
            Some(c"size=1m"),
        ),
    )
}

fn flags(n: u32, path: &CStr) -> Result<StatVfsMountFlags, Failed> {
    Ok(ok(n, rustix::fs::statvfs(path))?.f_flag)
}

/// Whether the mountinfo line of the mount at `point` has `field` among its optional fields
/// (`proc_pid_mountinfo(5)`), read into a buffer on the stack.
fn mountinfo_has(n: u32, point: &[u8], field: &[u8]) -> Result<bool, Failed> {
    let file = ok(
        n,
        rustix::fs::open(c"/proc/self/mountinfo", OFlags::RDONLY, Mode::empty()),
    )?;
    let mut buf = [0u8; 32768];
    let mut len = 0;
    loop {
        let Some(rest) = buf.get_mut(len..) else {
            return Err((n, 0));
        };
        match ok(n, rustix::io::read(&file, rest))? {
            0 => break,
            k => len += k,
        }
    }
    let text = &buf[..len];
    for line in text.split(|&b| b == b'\n') {
        let mut fields = line.split(|&b| b == b' ');
        if fields.nth(4) == Some(point) {
            // The optional fields come after the mount options, up to the "-".
            let mut optional = fields.skip(1).take_while(|f| *f != b"-");
            return Ok(optional.any(|f| f.starts_with(field)));
        }
    }
    Err((n, 0))
}

fn check_options() -> Result<(), Failed> {
    // Top-only attributes on a recursive bind: the bound mount has them, its submount not.
    let top = flags(1, c"/v/top")?;
    ensure(
        2,
        top.contains(
            StatVfsMountFlags::NOSUID
                | StatVfsMountFlags::NOEXEC
                | StatVfsMountFlags::NOATIME
                | StatVfsMountFlags::NODEV,
        ) && !top.contains(StatVfsMountFlags::RDONLY),
    )?;
    let sub = flags(3, c"/v/top/sub")?;
    ensure(
        4,
        !sub.intersects(StatVfsMountFlags::NOSUID | StatVfsMountFlags::NOEXEC)
            && sub.contains(StatVfsMountFlags::NODEV),
    )?;
    // Recursive ones reach the submount.
    let rsub = flags(5, c"/v/rec/sub")?;
    ensure(
        6,
        rsub.contains(StatVfsMountFlags::RDONLY | StatVfsMountFlags::NOEXEC),
    )?;
    // A non-recursive bind shows what the host mounted over: the marker under the submount.
    let under = ok(7, rustix::fs::stat(c"/v/flat/sub/under"))?;
    ensure(
        8,
        FileType::from_raw_mode(under.st_mode) == FileType::RegularFile,
    )?;
    // Propagation in the sandbox's namespace: one volume shared, one unbindable, the rest
    // private.
    ensure(9, mountinfo_has(9, b"/v/top", b"shared:")?)?;
    ensure(10, mountinfo_has(10, b"/v/rec", b"unbindable")?)?;
    ensure(11, !mountinfo_has(11, b"/v/flat", b"shared:")?)?;
    ensure(12, mountinfo_has(12, b"/", b"shared:")?)?;
    // The tmpfs: its owner, number of inodes, read-only and strictatime.
    let run = ok(13, rustix::fs::stat(c"/run/pal"))?;
    ensure(
        14,
        (run.st_uid, run.st_gid, run.st_mode & 0o7777) == (1234, 99, 0o750),
    )?;
    let vfs = ok(15, rustix::fs::statvfs(c"/run/pal"))?;
    ensure(16, vfs.f_files == 16)?;
    ensure(
        17,
        vfs.f_flag.contains(
            StatVfsMountFlags::RDONLY | StatVfsMountFlags::NOSUID | StatVfsMountFlags::NODEV,
        ),
    )?;
    Ok(())
}

#[test]
fn bind_and_tmpfs_options_and_propagation_are_applied() {
    require_root!();
    let root = TempDir::new("opts-root");
    for dir in ["v", "run"] {
        fs::create_dir(root.path().join(dir)).unwrap();
    }
    let source = TempDir::new("opts-source");
    fs::create_dir(source.path().join("sub")).unwrap();
    fs::write(source.path().join("sub/under"), b"").unwrap();
    *SUBMOUNT.lock().unwrap() =
        Some(CString::new(source.path().join("sub").to_str().unwrap()).unwrap());
    let mut top = Volume::new(source.path(), "/v/top", Access::ReadWrite);
    top.top = MountAttrChange {
        set: MountAttr::NOSUID | MountAttr::NOEXEC | MountAttr::NOATIME,
        clear: MountAttr::ATIME_MASK,
        propagation: Some(Propagation::Shared),
    };
    let mut rec = Volume::new(source.path(), "/v/rec", Access::ReadOnly);
    rec.tree = MountAttrChange {
        set: MountAttr::NOEXEC,
        clear: MountAttr::empty(),
        propagation: Some(Propagation::Unbindable),
    };
    let mut flat = Volume::new(source.path(), "/v/flat", Access::ReadWrite);
    flat.recursive = false;
    let tmpfs = Tmpfs {
        mode: 0o750,
        ..Tmpfs::new("/run/pal")
    };
    let options = TmpfsOptions {
        nr_inodes: Some(16),
        uid: Some(1234),
        gid: Some(99),
        attrs: MountAttrChange {
            set: MountAttr::RDONLY | MountAttr::STRICTATIME,
            clear: MountAttr::ATIME_MASK,
            propagation: None,
        },
    };
    let plan = Rootfs::dir(root.path())
        .volume_with(top)
        .volume_with(rec)
        .volume_with(flat)
        .tmpfs_with_options(tmpfs, options)
        .root_propagation(Propagation::Shared, false)
        .plan()
        .unwrap();
    assert_eq!(apply_in_child(&plan, mount_submount, check_options), Ok(()));
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!info.contains(root.path().to_str().unwrap()), "{info}");
    assert!(!info.contains(source.path().to_str().unwrap()), "{info}");
}

#[test]
fn attribute_changes_the_kernel_would_refuse_are_refused_at_plan() {
    let dir = std::env::temp_dir();
    let mut v = Volume::new(&dir, "/data", Access::ReadWrite);
    // An access-time mode without clearing the mask.
    v.top.set = MountAttr::NOATIME;
    let err = Rootfs::host().volume_with(v).plan().unwrap_err();
    assert!(
        matches!(err, Error::InvalidValue { what: "volume", .. }),
        "{err:?}"
    );
    let options = TmpfsOptions {
        nr_inodes: Some(0),
        ..TmpfsOptions::default()
    };
    let err = Rootfs::host()
        .tmpfs_with_options(Tmpfs::new("/x"), options)
        .plan()
        .unwrap_err();
    assert!(
        matches!(err, Error::InvalidValue { what: "tmpfs", .. }),
        "{err:?}"
    );
}

fn check_devices() -> Result<(), Failed> {
    // The made-up node: its numbers, mode and owner, and it opens (reads zeros, writes fail
    // with ENOSPC, as /dev/full does).
    let st = ok(1, rustix::fs::stat(c"/dev/palfull"))?;
    ensure(
        2,
        FileType::from_raw_mode(st.st_mode) == FileType::CharacterDevice
            && st.st_rdev == rustix::fs::makedev(1, 7)
            && st.st_mode & 0o7777 == 0o640
            && (st.st_uid, st.st_gid) == (1234, 5678),
    )?;
    let full = ok(
        3,
        rustix::fs::open(c"/dev/palfull", OFlags::RDWR, Mode::empty()),
    )?;
    let mut buf = [1u8; 4];
    ensure(
        4,
        ok(4, rustix::io::read(&full, &mut buf))? == 4 && buf == [0; 4],
    )?;
    ensure(5, rustix::io::write(&full, b"x") == Err(Errno::NOSPC))?;
    // A FIFO elsewhere, its parents made in the root.
    let fifo = ok(6, rustix::fs::stat(c"/run/pal/fifo"))?;
    ensure(
        7,
        FileType::from_raw_mode(fifo.st_mode) == FileType::Fifo && fifo.st_mode & 0o777 == 0o600,
    )?;
    // A node the sandbox makes itself on its nodev /dev does not open.
    ok(
        8,
        rustix::fs::mknodat(
            CWD,
            c"/dev/palmade",
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o666),
            rustix::fs::makedev(1, 7),
        ),
    )?;
    ensure(
        9,
        rustix::fs::open(c"/dev/palmade", OFlags::RDONLY, Mode::empty()).err()
            == Some(Errno::ACCESS),
    )?;
    Ok(())
}

#[test]
fn device_nodes_are_made_and_open() {
    require_root!();
    let root = TempDir::new("dev-root");
    let plan = Rootfs::dir(root.path())
        .device(Device {
            guest: "/dev/palfull".into(),
            kind: DeviceKind::Char,
            major: 1,
            minor: 7,
            mode: 0o640,
            uid: 1234,
            gid: 5678,
        })
        .device(Device {
            guest: "/run/pal/fifo".into(),
            kind: DeviceKind::Fifo,
            major: 0,
            minor: 0,
            mode: 0o600,
            uid: 0,
            gid: 0,
        })
        .plan()
        .unwrap();
    assert_eq!(apply_in_child(&plan, nothing, check_devices), Ok(()));
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!info.contains(root.path().to_str().unwrap()), "{info}");
}

fn node(guest: &str) -> Device {
    Device {
        guest: guest.into(),
        kind: DeviceKind::Char,
        major: 1,
        minor: 7,
        mode: 0o666,
        uid: 0,
        gid: 0,
    }
}

#[test]
fn a_device_path_through_a_link_stays_in_the_root() {
    require_root!();
    // The attack: links in the image that point at a directory of the host, absolute and by
    // climbing, and a device path through each. In the root the host's directory does not
    // exist (its /tmp is the sandbox's own): the lookup fails, nothing is made anywhere.
    let host = TempDir::new("dev-host");
    let root = TempDir::new("dev-link-root");
    fs::create_dir(root.path().join("data")).unwrap();
    let link = |name: &str, target: &str| {
        std::os::unix::fs::symlink(target, root.path().join(name)).unwrap()
    };
    let host_dir = host.path().to_str().unwrap();
    link("escape", host_dir);
    link("climb", &format!("../../../../../../..{host_dir}"));
    for path in ["/escape/palnode", "/climb/palnode"] {
        let plan = Rootfs::dir(root.path()).device(node(path)).plan().unwrap();
        let err = apply_in_child(&plan, nothing, nothing).unwrap_err();
        assert_eq!((err.0, err.2), (1, libc::ENOENT), "{path}: {err:?}");
        assert_eq!(fs::read_dir(host.path()).unwrap().count(), 0, "{path}");
    }
    // The positive control: the same links to a directory of the root resolve, inside it.
    link("inside", "/data");
    link("climb-inside", "../../../../../../../data");
    let plan = Rootfs::dir(root.path())
        .device(node("/inside/palnode"))
        .device(node("/climb-inside/palclimb"))
        .plan()
        .unwrap();
    assert_eq!(apply_in_child(&plan, nothing, nothing), Ok(()));
    assert!(root.path().join("data/palnode").is_file());
    assert!(root.path().join("data/palclimb").is_file());
    assert_eq!(fs::read_dir(host.path()).unwrap().count(), 0);
    // A path that climbs itself is refused at plan.
    let err = Rootfs::dir(root.path())
        .device(node("/dev/../etc/palnode"))
        .plan()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidValue { .. }), "{err:?}");
}

#[test]
fn a_user_namespace_binds_the_hosts_node() {
    if !Path::new("/dev/full").exists() {
        palisade_test_support::skip("the host has no /dev/full");
        return;
    }
    let plan = Rootfs::host()
        .device(node("/dev/full"))
        .plan_rootless()
        .unwrap();
    assert!(plan
        .ops
        .iter()
        .any(|o| matches!(o, Op::Mount { source, target, .. }
        if source.to_bytes() == b"/dev/full" && *target == At::Root(c"dev/full".into()))));
    assert!(!plan.ops.iter().any(|o| matches!(o, Op::Mknod { .. })));
    // Without a user namespace the node is made.
    let plan = Rootfs::host().device(node("/dev/full")).plan().unwrap();
    assert!(plan.ops.iter().any(|o| matches!(o, Op::Mknod { .. })));
    // A node the host does not have, or has with other numbers, cannot be bound.
    let err = Rootfs::host()
        .device(node("/dev/palisade-no-such-node"))
        .plan_rootless()
        .unwrap_err();
    assert!(matches!(err, Error::Io { .. }), "{err:?}");
    let mut other = node("/dev/full");
    other.minor = 3;
    let err = Rootfs::host().device(other).plan_rootless().unwrap_err();
    assert!(matches!(err, Error::InvalidValue { .. }), "{err:?}");
    // Modes beyond the permission bits are refused.
    let mut suid = node("/dev/palx");
    suid.mode = 0o4755;
    assert!(Rootfs::host().device(suid).plan().is_err());
}

fn check_id_mapped() -> Result<(), Failed> {
    // Stored as 1000: shown as root. Stored as root: unmapped, the overflow id.
    let mapped = ok(1, rustix::fs::stat(c"/data/mapped"))?;
    ensure(2, (mapped.st_uid, mapped.st_gid) == (0, 0))?;
    let unmapped = ok(3, rustix::fs::stat(c"/data/unmapped"))?;
    ensure(4, (unmapped.st_uid, unmapped.st_gid) == (65534, 65534))?;
    // A file root makes through the mount is stored as 1000.
    let made = ok(
        5,
        rustix::fs::open(
            c"/data/made",
            OFlags::CREATE | OFlags::WRONLY,
            Mode::from_raw_mode(0o644),
        ),
    )?;
    drop(made);
    Ok(())
}

#[test]
fn an_id_mapped_volume_shows_its_ids_mapped() {
    require_root!();
    let root = TempDir::new("idmap-root");
    let source = TempDir::new("idmap-source");
    for (name, owner) in [("mapped", 1000), ("unmapped", 0)] {
        let path = source.path().join(name);
        fs::write(&path, b"").unwrap();
        std::os::unix::fs::chown(&path, Some(owner), Some(owner)).unwrap();
    }
    std::os::unix::fs::chown(source.path(), Some(1000), Some(1000)).unwrap();
    let range = palisade_overlay::rootfs::IdRange {
        stored: 1000,
        shown: 0,
        count: 1,
    };
    let mut v = Volume::new(source.path(), "/data", Access::ReadWrite);
    v.id_map = Some(palisade_overlay::rootfs::MountIdMap {
        uid: vec![range],
        gid: vec![range],
        recursive: false,
    });
    let plan = Rootfs::dir(root.path()).volume_with(v).plan().unwrap();
    assert!(plan.needs_prepare());
    // Each spawn prepares its own detached mount (one can be attached only once).
    for _ in 0..2 {
        let prepared = plan.prepare(10).unwrap();
        assert!(prepared.fds().all(|fd| fd >= 10));
        assert_eq!(apply_in_child(&plan, nothing, check_id_mapped), Ok(()));
        drop(prepared);
        let made = fs::metadata(source.path().join("made")).unwrap();
        assert_eq!((made.uid(), made.gid()), (1000, 1000));
        fs::remove_file(source.path().join("made")).unwrap();
    }
    // Without a preparation the child has nothing to attach.
    let err = apply_in_child(&plan, nothing, nothing).unwrap_err();
    assert_eq!((err.0, err.2), (1, libc::EBADF));
    // Maps the kernel would refuse are refused at plan.
    let mut empty = Volume::new(source.path(), "/data", Access::ReadWrite);
    empty.id_map = Some(palisade_overlay::rootfs::MountIdMap {
        uid: vec![],
        gid: vec![range],
        recursive: false,
    });
    assert!(Rootfs::dir(root.path()).volume_with(empty).plan().is_err());
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!info.contains(source.path().to_str().unwrap()), "{info}");
}
