//! Overlay mounts on the real kernel (`palisade_overlay::mount`).
//!
//! Every mount happens in a private mount namespace owned by one dedicated thread
//! ([`in_private_mount_ns`]): the namespace, and every mount in it, goes away when the thread
//! exits, and the host's mount table is checked afterwards ([`assert_host_clean`]). Validation
//! tests need no root and mount nothing.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use palisade_overlay::mount::{self, sys, Overlay, RedirectDir};
use palisade_overlay::Error;
use palisade_test_support::{is_root, require_root, TempDir};

/// Runs `f` on a new thread that first moves into a private mount namespace of its own
/// (`unshare(CLONE_NEWNS | CLONE_FS)` — `CLONE_FS` because the process has other threads —
/// then makes every mount private so nothing propagates back to the host), and returns its
/// result, re-raising its panic. The namespace dies with the thread, unmounting everything the
/// closure mounted; the thread has been joined when this returns.
fn in_private_mount_ns<T, F>(f: F) -> T
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    std::thread::scope(|s| {
        let handle = s.spawn(|| {
            // SAFETY: unshare only changes this thread's namespace and fs attributes.
            let r = unsafe { libc::unshare(libc::CLONE_NEWNS | libc::CLONE_FS) };
            assert_eq!(r, 0, "unshare: {}", io::Error::last_os_error());
            // SAFETY: null source, type and data are allowed for a propagation change; the
            // target is a NUL-terminated string.
            let r = unsafe {
                libc::mount(
                    std::ptr::null(),
                    c"/".as_ptr(),
                    std::ptr::null(),
                    libc::MS_REC | libc::MS_PRIVATE,
                    std::ptr::null(),
                )
            };
            assert_eq!(r, 0, "make / private: {}", io::Error::last_os_error());
            f()
        });
        match handle.join() {
            Ok(v) => v,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The host's mount table (the main thread's: `/proc/self` is the thread-group leader) has no
/// overlay mount of ours and nothing under `dir`.
fn assert_host_clean(dir: &Path) {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let dir = dir.to_str().unwrap();
    for line in info.lines() {
        assert!(!line.contains(dir), "left behind on the host: {line}");
        assert!(
            !(line.contains(" - overlay ") && line.contains("palisade-test-ovl")),
            "overlay left behind on the host: {line}"
        );
    }
}

/// Runs `f` in a private mount namespace when root, else directly (for tests of refusals that
/// must happen before any system call, which also run unprivileged: should one mount anyway,
/// it would not reach the host).
fn guarded<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    if is_root() {
        in_private_mount_ns(f)
    } else {
        f()
    }
}

/// Runs `f` in a private mount namespace, then checks the host and removes `tmp` (after the
/// thread, and so its mounts, are gone).
fn with_ns<T: Send>(tmp: TempDir, f: impl FnOnce(&Path) -> T + Send) -> T {
    let out = in_private_mount_ns(|| f(tmp.path()));
    assert_host_clean(tmp.path());
    drop(tmp);
    out
}

/// The mount table of the calling thread's namespace.
fn thread_mountinfo() -> String {
    fs::read_to_string("/proc/thread-self/mountinfo").unwrap()
}

/// The `(mount options, file system type, super options)` of the top mount at `target` in the
/// calling thread's namespace.
fn mount_at(target: &Path) -> Option<(String, String, String)> {
    let target = target.to_str().unwrap();
    thread_mountinfo().lines().rev().find_map(|line| {
        let (left, right) = line.split_once(" - ")?;
        let left: Vec<&str> = left.split(' ').collect();
        if left.get(4) != Some(&target) {
            return None;
        }
        let right: Vec<&str> = right.splitn(3, ' ').collect();
        Some((
            left.get(5)?.to_string(),
            right.first()?.to_string(),
            right.get(2)?.to_string(),
        ))
    })
}

fn dir(base: &Path, name: &str) -> PathBuf {
    let p = base.join(name);
    fs::create_dir_all(&p).unwrap();
    p
}

fn write(path: &Path, text: &str) {
    fs::write(path, text).unwrap();
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// Both ways of mounting: new API (`fsmount` + `move_mount`) and legacy `mount(2)`.
fn mount_both(o: &Overlay, target: &Path, legacy: bool) {
    let res = if legacy {
        o.mount_legacy_at(target)
    } else {
        o.mount_at(target)
    };
    res.unwrap_or_else(|e| panic!("mount (legacy: {legacy}) at {}: {e}", target.display()));
    let (_, fstype, _) = mount_at(target).expect("mounted");
    assert_eq!(fstype, "overlay");
}

#[test]
fn writes_land_in_upper_never_in_lower() {
    require_root!();
    with_ns(TempDir::new("ovl-write"), |t| {
        for legacy in [false, true] {
            let base = dir(t, if legacy { "legacy" } else { "new" });
            let (lower, upper, work, m) = (
                dir(&base, "lower"),
                dir(&base, "upper"),
                dir(&base, "work"),
                dir(&base, "m"),
            );
            write(&lower.join("a.txt"), "lower");
            dir(&lower, "sub");
            mount_both(
                &Overlay::new().lower(&lower).upper(&upper, &work),
                &m,
                legacy,
            );

            write(&m.join("new.txt"), "new");
            fs::OpenOptions::new()
                .append(true)
                .open(m.join("a.txt"))
                .unwrap()
                .write_all(b"+more")
                .unwrap();
            dir(&m, "sub/child");

            assert_eq!(read(&m.join("a.txt")), "lower+more");
            assert_eq!(read(&upper.join("new.txt")), "new");
            assert_eq!(read(&upper.join("a.txt")), "lower+more");
            assert!(upper.join("sub/child").is_dir());
            assert_eq!(read(&lower.join("a.txt")), "lower");
            assert!(!lower.join("new.txt").exists());
            assert!(!lower.join("sub/child").exists());
        }
    });
}

#[test]
fn deleting_a_lower_file_leaves_a_whiteout_in_upper() {
    require_root!();
    with_ns(TempDir::new("ovl-whiteout"), |t| {
        let (lower, upper, work, m) = (
            dir(t, "lower"),
            dir(t, "upper"),
            dir(t, "work"),
            dir(t, "m"),
        );
        write(&lower.join("gone.txt"), "x");
        Overlay::new()
            .lower(&lower)
            .upper(&upper, &work)
            .mount_at(&m)
            .unwrap();
        fs::remove_file(m.join("gone.txt")).unwrap();

        assert!(!m.join("gone.txt").exists());
        let meta = fs::symlink_metadata(upper.join("gone.txt")).unwrap();
        assert!(meta.file_type().is_char_device(), "{meta:?}");
        assert_eq!(meta.rdev(), 0, "whiteout is device 0:0");
        assert_eq!(read(&lower.join("gone.txt")), "x");
    });
}

#[test]
fn first_lower_is_top_most_with_three_layers() {
    require_root!();
    with_ns(TempDir::new("ovl-order"), |t| {
        let lowers: Vec<PathBuf> = (0..3).map(|i| dir(t, &format!("l{i}"))).collect();
        for (i, l) in lowers.iter().enumerate() {
            write(&l.join("f"), &i.to_string());
            if i >= 1 {
                write(&l.join("g"), &i.to_string());
            }
            if i == 2 {
                write(&l.join("h"), "2");
            }
        }
        let o = Overlay::new().lowers(&lowers).read_only();
        for legacy in [false, true] {
            let m = dir(t, if legacy { "m-legacy" } else { "m-new" });
            mount_both(&o, &m, legacy);
            assert_eq!(read(&m.join("f")), "0");
            assert_eq!(read(&m.join("g")), "1");
            assert_eq!(read(&m.join("h")), "2");
        }
    });
}

#[test]
fn read_only_overlay_refuses_writes() {
    require_root!();
    with_ns(TempDir::new("ovl-ro"), |t| {
        let (a, b) = (dir(t, "a"), dir(t, "b"));
        write(&b.join("file"), "b");
        let o = Overlay::new().lower(&a).lower(&b).read_only();
        for legacy in [false, true] {
            let m = dir(t, if legacy { "m-legacy" } else { "m-new" });
            mount_both(&o, &m, legacy);
            let (opts, _, _) = mount_at(&m).unwrap();
            assert!(opts.starts_with("ro"), "{opts}");
            assert_eq!(read(&m.join("file")), "b");
            let err = fs::write(m.join("new"), "x").unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
            let err = fs::remove_file(m.join("file")).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
        }
    });
}

/// Without an upper layer, overlayfs wants two lower layers ("at least 2 lowerdir are needed
/// while upperdir nonexistent", still so on 6.18); the builder refuses one before any call.
#[test]
fn single_lower_without_upper() {
    let tmp = TempDir::new("ovl-single");
    let a = dir(tmp.path(), "a");
    let err = Overlay::new().lower(&a).read_only().validate().unwrap_err();
    assert!(
        matches!(err, Error::InvalidValue { reason, .. } if reason.contains("at least 2")),
        "{err}"
    );
    let err = guarded(|| Overlay::new().lower(&a).fsmount().unwrap_err());
    assert!(matches!(err, Error::InvalidValue { .. }), "{err}");

    if !is_root() {
        return;
    }
    // What the kernel itself says, through the raw wrappers.
    in_private_mount_ns(|| {
        let fs = sys::fsopen(c"overlay", sys::FsopenFlags::CLOEXEC).unwrap();
        use std::os::fd::AsFd;
        sys::fsconfig_set_string(fs.as_fd(), "lowerdir+", &a).unwrap();
        let err = sys::fsconfig_create(fs.as_fd()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
    });
    assert_host_clean(tmp.path());
}

#[test]
fn many_lowers_mount_through_lowerdir_plus() {
    require_root!();
    const N: usize = 150;
    with_ns(TempDir::new("ovl-many"), |t| {
        let lowers: Vec<PathBuf> = (0..N)
            .map(|i| {
                let l = dir(t, &format!("layer-number-{i:03}"));
                write(&l.join(format!("f-{i:03}")), "");
                write(&l.join("top"), &format!("{i:03}"));
                l
            })
            .collect();
        let (upper, work, m) = (dir(t, "upper"), dir(t, "work"), dir(t, "m"));
        let o = Overlay::new().lowers(&lowers).upper(&upper, &work);

        // The legacy option string would not fit in a page.
        let m_legacy = dir(t, "m-legacy");
        match o.mount_legacy_at(&m_legacy) {
            Err(Error::TooManyLayers {
                interface,
                layers,
                needed,
                limit,
            }) => {
                assert_eq!(layers, N);
                assert!(needed > limit && limit >= 4096, "{needed} {limit}");
                assert!(interface.contains("mount(2)"), "{interface}");
            }
            other => panic!("legacy mount of {N} layers: {other:?}"),
        }
        assert!(mount_at(&m_legacy).is_none());

        o.mount_at(&m).unwrap();
        assert_eq!(read(&m.join("top")), "000");
        for i in 0..N {
            assert!(m.join(format!("f-{i:03}")).exists(), "layer {i}");
        }
        write(&m.join("w"), "w");
        assert_eq!(read(&upper.join("w")), "w");
        let (_, _, sopts) = mount_at(&m).unwrap();
        assert_eq!(sopts.matches("lowerdir+=").count(), N, "{sopts}");

        // A small set mounts fine the legacy way.
        let o = Overlay::new().lowers(&lowers[..3]).read_only();
        o.mount_legacy_at(&m_legacy).unwrap();
        assert_eq!(read(&m_legacy.join("top")), "000");
        assert!(!m_legacy.join("f-003").exists());
    });
}

#[test]
fn more_than_500_lowers_are_refused() {
    let o = Overlay::new().lowers((0..501).map(|i| format!("/nonexistent/{i}")));
    let err = o.validate().unwrap_err();
    assert!(matches!(err, Error::InvalidValue { .. }), "{err}");
}

#[test]
fn layer_paths_over_255_bytes_are_passed_as_fds() {
    require_root!();
    with_ns(TempDir::new("ovl-long"), |t| {
        let long = t.join(["d".repeat(100), "e".repeat(100), "f".repeat(100)].join("/"));
        assert!(long.as_os_str().len() > 255);
        let (lower2, upper_parent, m) = (dir(t, "l2"), dir(&long, "x"), dir(t, "m"));
        let lower = dir(&long, "lower");
        write(&lower.join("deep"), "deep");
        write(&lower2.join("shallow"), "shallow");
        let (upper, work) = (dir(&upper_parent, "upper"), dir(&upper_parent, "work"));
        Overlay::new()
            .lower(&lower)
            .lower(&lower2)
            .upper(&upper, &work)
            .mount_at(&m)
            .unwrap();
        assert_eq!(read(&m.join("deep")), "deep");
        assert_eq!(read(&m.join("shallow")), "shallow");
        write(&m.join("new"), "n");
        assert_eq!(read(&upper.join("new")), "n");
    });
}

#[test]
fn missing_or_non_directory_layers_are_named() {
    let tmp = TempDir::new("ovl-badlayer");
    let t = tmp.path();
    let (l0, l1, upper, work) = (dir(t, "l0"), dir(t, "l1"), dir(t, "u"), dir(t, "w"));
    let file = t.join("file");
    write(&file, "not a dir");
    let missing = t.join("missing");

    let check = |o: Overlay, role: &str, index: usize, path: &Path, errno: i32| {
        let errs = guarded(|| {
            [
                o.validate().unwrap_err(),
                o.fsmount().unwrap_err(),
                o.mount_legacy_at(t).unwrap_err(),
            ]
        });
        for err in errs {
            match &err {
                Error::Layer {
                    role: r,
                    index: i,
                    path: p,
                    source,
                } => {
                    assert_eq!((*r, *i, p.as_path()), (role, index, path), "{err}");
                    assert_eq!(source.raw_os_error(), Some(errno), "{err}");
                    let msg = err.to_string();
                    assert!(msg.contains(&path.display().to_string()), "{msg}");
                }
                other => panic!("expected a layer error, got {other:?}"),
            }
        }
    };
    let ok = || Overlay::new().lower(&l0);
    check(
        ok().lower(&missing).lower(&l1).read_only(),
        "lower",
        1,
        &missing,
        libc::ENOENT,
    );
    check(
        ok().lower(&l1).lower(&file).read_only(),
        "lower",
        2,
        &file,
        libc::ENOTDIR,
    );
    check(
        ok().upper(&missing, &work),
        "upper",
        0,
        &missing,
        libc::ENOENT,
    );
    check(ok().upper(&upper, &file), "work", 0, &file, libc::ENOTDIR);
    assert_host_clean(t);
}

#[test]
fn inconsistent_builders_are_refused_before_any_call() {
    let tmp = TempDir::new("ovl-invalid");
    let t = tmp.path();
    let (a, b, u, w) = (dir(t, "a"), dir(t, "b"), dir(t, "u"), dir(t, "w"));
    let cases = [
        (Overlay::new(), "at least one lower"),
        (Overlay::new().lower(&a).upper_dir(&u), "needs a work"),
        (
            Overlay::new().lower(&a).lower(&b).work_dir(&w),
            "needs an upper",
        ),
        (
            Overlay::new().lower(&a).upper(&u, &w).read_only(),
            "read-only",
        ),
        (
            Overlay::new().lower(&a).lower(&b).volatile(true),
            "volatile",
        ),
    ];
    for (o, want) in cases {
        let errs = guarded(|| {
            [
                o.validate().unwrap_err(),
                o.fsmount().unwrap_err(),
                o.mount_at(t).unwrap_err(),
                o.mount_legacy_at(t).unwrap_err(),
            ]
        });
        for err in errs {
            match &err {
                Error::InvalidValue { reason, .. } => assert!(reason.contains(want), "{err}"),
                other => panic!("{o:?}: expected a validation error, got {other:?}"),
            }
        }
    }
    assert_host_clean(t);
}

#[test]
fn overlay_options_are_accepted() {
    require_root!();
    with_ns(TempDir::new("ovl-opts"), |t| {
        let (a, b) = (dir(t, "a"), dir(t, "b"));
        type Case = (
            &'static str,
            fn(Overlay) -> Overlay,
            &'static [&'static str],
        );
        let cases: [Case; 5] = [
            (
                "index",
                |o| o.index(true).redirect_dir(RedirectDir::On).metacopy(true),
                &["index=on", "redirect_dir=on", "metacopy=on"],
            ),
            (
                "nofollow",
                |o| o.index(false).redirect_dir(RedirectDir::NoFollow),
                &["redirect_dir=nofollow"],
            ),
            ("userxattr", |o| o.userxattr(true), &["userxattr"]),
            // Linux 6.18 shows `volatile` as `fsync=volatile`.
            (
                "volatile",
                |o| o.volatile(true),
                &["volatile|fsync=volatile"],
            ),
            (
                "nosuid",
                |o| o.attributes(mount::MountAttr::NOSUID | mount::MountAttr::NODEV),
                &[],
            ),
        ];
        for (name, set, want) in cases {
            for legacy in [false, true] {
                let base = dir(t, &format!("{name}-{legacy}"));
                let (u, w, m) = (dir(&base, "u"), dir(&base, "w"), dir(&base, "m"));
                let o = set(Overlay::new().lower(&a).lower(&b).upper(&u, &w));
                mount_both(&o, &m, legacy);
                let (mopts, _, sopts) = mount_at(&m).unwrap();
                for opt in want {
                    assert!(
                        sopts.split(',').any(|o| opt.split('|').any(|alt| o == alt)),
                        "{name} legacy={legacy}: {opt} not in {sopts}"
                    );
                }
                if name == "nosuid" {
                    assert!(
                        mopts.contains("nosuid") && mopts.contains("nodev"),
                        "{mopts}"
                    );
                }
                write(&m.join("x"), "x");
                assert_eq!(read(&u.join("x")), "x");
            }
        }
    });
}

#[test]
fn kernel_refusals_carry_the_context_log_and_leave_nothing() {
    require_root!();
    with_ns(TempDir::new("ovl-refused"), |t| {
        let (a, u, w, m) = (dir(t, "a"), dir(t, "u"), dir(t, "w"), dir(t, "m"));
        // Conflicting options, refused when the superblock is created. overlayfs reports this
        // one to the kernel log (dmesg), not to the context's log, which stays empty: the
        // context log itself is checked by `tmpfs_tree_reports_bad_options`.
        let o = Overlay::new()
            .lower(&a)
            .upper(&u, &w)
            .metacopy(true)
            .redirect_dir(RedirectDir::Off);
        let err = o.mount_at(&m).unwrap_err();
        match &err {
            Error::FsContext {
                call, source, log, ..
            } => {
                assert!(call.contains("CREATE"), "{err}");
                assert_eq!(source.raw_os_error(), Some(libc::EINVAL), "{err}");
                assert!(
                    log.iter().all(|l| l.starts_with(['e', 'w', 'i'])),
                    "{log:?}"
                );
            }
            other => panic!("expected a fs-context error, got {other:?}"),
        }
        assert!(mount_at(&m).is_none());

        // A target that does not exist: the detached overlay is dropped.
        let missing = t.join("no-such-target");
        let err = Overlay::new()
            .lower(&a)
            .upper(&u, &w)
            .mount_at(&missing)
            .unwrap_err();
        assert!(
            matches!(&err, Error::Mount { call: "move_mount", source, .. }
                if source.raw_os_error() == Some(libc::ENOENT)),
            "{err}"
        );
        assert!(
            !thread_mountinfo().contains(" - overlay "),
            "{}",
            thread_mountinfo()
        );
    });
}

#[test]
fn awkward_layer_names_are_escaped() {
    require_root!();
    with_ns(TempDir::new("ovl-escape"), |t| {
        for legacy in [false, true] {
            let base = dir(t, if legacy { "legacy" } else { "new" });
            let l0 = dir(&base, "a:b");
            let l1 = dir(&base, "c,d");
            let l2 = dir(&base, "e\\f");
            let u = dir(&base, "u,\\:x");
            let w = dir(&base, "w:\\,y");
            let m = dir(&base, "m");
            write(&l0.join("0"), "0");
            write(&l1.join("1"), "1");
            write(&l2.join("2"), "2");
            let o = Overlay::new().lowers([&l0, &l1, &l2]).upper(&u, &w);
            mount_both(&o, &m, legacy);
            for i in ["0", "1", "2"] {
                assert_eq!(read(&m.join(i)), i, "legacy={legacy}");
            }
            write(&m.join("new"), "n");
            assert_eq!(read(&u.join("new")), "n");
        }
    });
}

#[test]
fn fsmount_gives_a_detached_tree() {
    require_root!();
    with_ns(TempDir::new("ovl-detached"), |t| {
        let (a, b, m) = (dir(t, "a"), dir(t, "b"), dir(t, "m"));
        write(&a.join("f"), "a");
        let o = Overlay::new().lower(&a).lower(&b).read_only();
        let fd = o.fsmount().unwrap();
        assert!(!thread_mountinfo().contains(" - overlay "));
        drop(fd);
        let fd = o.fsmount().unwrap();
        mount::attach(&fd, &m).unwrap();
        assert_eq!(read(&m.join("f")), "a");
        // The descriptor still references the mount: it cannot be unmounted (EBUSY) until it
        // is closed.
        let err = mount::unmount(&m, false).unwrap_err();
        assert_eq!(err.errno(), Some(libc::EBUSY), "{err}");
        drop(fd);
        mount::unmount(&m, false).unwrap();
        assert!(mount_at(&m).is_none());
    });
}

#[test]
fn bind_tree_read_only_and_attach() {
    require_root!();
    with_ns(TempDir::new("ovl-bind"), |t| {
        let (src, rec, flat) = (dir(t, "src"), dir(t, "rec"), dir(t, "flat"));
        let sub = dir(&src, "sub");
        write(&src.join("f"), "f");
        // A submount in the source, only copied by a recursive clone.
        let tmpfs = mount::tmpfs_tree("mode=0700,size=1m").unwrap();
        mount::attach(tmpfs, &sub).unwrap();
        assert_eq!(
            fs::metadata(&sub).unwrap().permissions().mode() & 0o777,
            0o700
        );
        write(&sub.join("in-tmpfs"), "t");

        let tree = mount::bind_tree(&src, true).unwrap();
        mount::set_read_only(&tree, true).unwrap();
        mount::attach(tree, &rec).unwrap();
        assert_eq!(read(&rec.join("f")), "f");
        assert_eq!(read(&rec.join("sub/in-tmpfs")), "t");
        for p in [rec.join("new"), rec.join("sub/new")] {
            let err = fs::write(&p, "x").unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{}", p.display());
        }
        let (opts, _, _) = mount_at(&rec).unwrap();
        assert!(opts.starts_with("ro"), "{opts}");
        // The source stays writable.
        write(&src.join("new"), "x");
        write(&sub.join("new"), "x");

        let tree = mount::bind_tree(&src, false).unwrap();
        mount::set_propagation(&tree, mount::Propagation::Private, false).unwrap();
        mount::attach(tree, &flat).unwrap();
        assert!(flat.join("sub").is_dir());
        assert!(!flat.join("sub/in-tmpfs").exists());
        write(&flat.join("flat-write"), "ok");

        let err = mount::bind_tree(t.join("missing"), false).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Mount {
                    call: "open_tree",
                    ..
                }
            ),
            "{err}"
        );

        mount::unmount(rec.join("sub"), false).unwrap();
        mount::unmount(&rec, true).unwrap();
        mount::unmount(&flat, false).unwrap();
        assert!(mount_at(&rec).is_none() && mount_at(&flat).is_none());
        let err = mount::unmount(&flat, false).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Mount {
                    call: "umount2",
                    ..
                }
            ),
            "{err}"
        );
    });
}

#[test]
fn tmpfs_tree_reports_bad_options() {
    require_root!();
    let err = in_private_mount_ns(|| mount::tmpfs_tree("mode=0755,bogus-option=1").unwrap_err());
    match &err {
        Error::FsContext { fstype, log, .. } => {
            assert_eq!(*fstype, "tmpfs");
            assert!(log.iter().any(|l| l.contains("bogus-option")), "{log:?}");
        }
        other => panic!("expected a fs-context error, got {other:?}"),
    }
}
