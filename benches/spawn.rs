//! Startup latency: spawn → `/bin/true` exited, for a plain fork+exec baseline, each namespace
//! kind alone, and all of them together; then, from a parent with 256 MiB resident, the baseline
//! and Palisade without namespaces; then with a cgroup per spawn (`CLONE_INTO_CGROUP` against
//! writing `cgroup.procs`, and a memory limit), with each kind of root file system, with each
//! network mode, and confined (the default) or not. Compare each figure with the baseline of the
//! same run. Last, `/bin/true` executed in a running sandbox (`Child::exec`) against a fresh
//! sandbox.
//!
//! ```text
//! cargo bench --bench spawn
//! ```
//!
//! Needs root for every kind but `user`; without root only the baseline and `user` run.

#![allow(missing_docs)] // criterion_group! generates an undocumented function.

use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use palisade::{Namespace, Sandbox};

fn is_root() -> bool {
    // SAFETY: geteuid cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// `/bin/true` in new namespaces of the given kinds.
fn with_namespaces(namespaces: Namespace) -> Sandbox {
    Sandbox::builder("/bin/true")
        .namespaces(namespaces)
        .build()
        .unwrap()
}

/// std's fork+exec (posix_spawn/vfork) of the same program: the baseline of every group.
fn baseline(group: &mut BenchmarkGroup<'_, WallTime>) {
    group.bench_function("baseline_std_command", |b| {
        b.iter(|| {
            let status = std::process::Command::new("/bin/true").status().unwrap();
            assert!(status.success());
        })
    });
}

/// Spawn → exited, for one prepared sandbox.
fn run(name: &str, sandbox: Sandbox, group: &mut BenchmarkGroup<'_, WallTime>) {
    group.bench_function(name, |b| {
        b.iter(|| assert!(sandbox.spawn().unwrap().wait().unwrap().success()))
    });
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn_true");
    group.sample_size(30);

    baseline(&mut group);

    run(
        "palisade_no_namespaces",
        with_namespaces(Namespace::empty()),
        &mut group,
    );
    for kind in Namespace::JOIN_ORDER {
        if kind != Namespace::USER && !is_root() {
            eprintln!("skipping {kind}: needs root");
            continue;
        }
        run(
            &format!("palisade_{kind}"),
            with_namespaces(kind),
            &mut group,
        );
    }
    if is_root() {
        run(
            "palisade_default_with_init",
            Sandbox::builder("/bin/true").build().unwrap(),
            &mut group,
        );
        run(
            "palisade_default_no_init",
            Sandbox::builder("/bin/true").init(false).build().unwrap(),
            &mut group,
        );
        run(
            "palisade_all_eight",
            with_namespaces(Namespace::all()),
            &mut group,
        );
    }
    group.finish();

    if is_root() {
        cgroups(c);
        rootfs(c);
        network(c);
        security(c);
        exec(c);
    }

    // The same spawns from a parent with 256 MiB resident. A fork-like clone would copy its page
    // tables on every spawn; the sandbox child shares the parent's memory (CLONE_VM), as std's
    // vfork does, so both should cost what they cost above.
    let ballast: Vec<u8> = vec![1u8; 256 << 20];
    let mut group = c.benchmark_group("spawn_true_from_256mib_parent");
    group.sample_size(20);
    baseline(&mut group);
    run(
        "palisade_no_namespaces",
        with_namespaces(Namespace::empty()),
        &mut group,
    );
    if is_root() {
        run(
            "palisade_default_with_init",
            Sandbox::builder("/bin/true").build().unwrap(),
            &mut group,
        );
    }
    group.finish();
    std::hint::black_box(&ballast);
}

/// A cgroup per spawn: created, the child born into it (`CLONE_INTO_CGROUP`) or moved into it
/// through `cgroup.procs`, then removed after the wait. On a hybrid host both variants also
/// write the v1 controllers' `cgroup.procs`; `CLONE_INTO_CGROUP` covers the unified hierarchy.
fn cgroups(c: &mut Criterion) {
    let mut group = c.benchmark_group("spawn_true_with_cgroup");
    group.sample_size(30);
    baseline(&mut group);
    run(
        "palisade_no_namespaces_no_cgroup",
        with_namespaces(Namespace::empty()),
        &mut group,
    );
    for (name, clone_into) in [("clone_into_cgroup", true), ("write_cgroup_procs", false)] {
        let sandbox = Sandbox::builder("/bin/true")
            .namespaces(Namespace::empty())
            .pids_max(64)
            .clone_into_cgroup(clone_into)
            .build()
            .unwrap();
        run(&format!("palisade_pids_max_{name}"), sandbox, &mut group);
    }
    run(
        "palisade_default",
        Sandbox::builder("/bin/true").build().unwrap(),
        &mut group,
    );
    // A memory limit makes the init a fork-like copy (see `SandboxBuilder::memory_max`).
    run(
        "palisade_default_memory_max",
        Sandbox::builder("/bin/true")
            .memory_max(palisade::cgroup::Bytes::mib(256))
            .build()
            .unwrap(),
        &mut group,
    );
    group.finish();
}

/// A root file system per spawn: the host's mount table (no root of its own), the host's `/`
/// under a throwaway layer (the default), a bound directory, and overlays of 1, 10 and 50
/// layers.
fn rootfs(c: &mut Criterion) {
    use palisade::overlay::rootfs::{Access, Rootfs};
    use std::path::Path;
    let mut group = c.benchmark_group("spawn_true_with_rootfs");
    group.sample_size(20);
    baseline(&mut group);
    let sandbox = |rootfs: Option<Rootfs>| {
        let mut b = Sandbox::builder("/bin/true");
        match rootfs {
            Some(r) => b.rootfs(r),
            None => b.host_mounts(),
        };
        b.build().unwrap()
    };
    run("palisade_default_host_mounts", sandbox(None), &mut group);
    run(
        "palisade_host_overlay_root",
        sandbox(Some(Rootfs::host())),
        &mut group,
    );
    // A directory root holding only the merged-/usr links, with the host's /usr bound in.
    let dir = std::env::temp_dir().join(format!("palisade-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for link in ["bin", "lib", "lib64", "sbin"] {
        let _ = std::os::unix::fs::symlink(format!("usr/{link}"), dir.join(link));
    }
    run(
        "palisade_bind_root",
        sandbox(Some(Rootfs::dir(&dir).volume(
            "/usr",
            "/usr",
            Access::ReadOnly,
        ))),
        &mut group,
    );
    // The layers live on /dev/shm (a tmpfs): overlayfs refuses layers nested in another layer,
    // and the host's `/` is the bottom one.
    let shm = Path::new("/dev/shm").join(format!("palisade-bench-{}", std::process::id()));
    for n in [1usize, 10, 50] {
        let layers: Vec<_> = (0..n)
            .map(|i| {
                let l = shm.join(format!("{n}-layer-{i}"));
                std::fs::create_dir_all(&l).unwrap();
                std::fs::write(l.join(format!("file-{i}")), b"x").unwrap();
                l
            })
            .collect();
        // The layers on top of the host's root, so that /bin/true is found.
        let mut lower = layers;
        lower.push("/".into());
        run(
            &format!("palisade_overlay_{n}_layers"),
            sandbox(Some(Rootfs::layers(lower))),
            &mut group,
        );
    }
    group.finish();
    let _ = std::fs::remove_dir_all(&dir);
    let _ = std::fs::remove_dir_all(&shm);
}

/// The network modes, with the default namespaces otherwise: the host's stack, a namespace of
/// its own with `lo` up (`none`), joining another sandbox's namespace, and a bridge (veth,
/// address and route per spawn) that another sandbox keeps up — the steady state of a service;
/// the first and last sandbox of a bridge also make and remove the bridge. Runs on this thread
/// after it has unshared a throwaway network namespace, so the bridge never touches the host's
/// network.
fn network(c: &mut Criterion) {
    use palisade::netns::{Bridge, Network};
    use std::os::fd::AsRawFd;
    let home = std::fs::File::open("/proc/thread-self/ns/net").unwrap();
    // SAFETY: unshare affects only this thread, which returns to `home` below.
    assert_eq!(unsafe { libc::unshare(libc::CLONE_NEWNET) }, 0);
    let state = std::env::temp_dir().join(format!("palisade-bench-{}", std::process::id()));
    let bridge = Bridge::new("pal-bench")
        .unwrap()
        .subnet("10.239.0.0/16".parse().unwrap())
        .state_dir(&state);
    let mut group = c.benchmark_group("spawn_true_network");
    group.sample_size(20);
    baseline(&mut group);
    let target = Sandbox::builder("sleep").arg("600").spawn().unwrap();
    let keeper = Sandbox::builder("sleep")
        .arg("600")
        .network(Network::bridge(bridge.clone()))
        .spawn()
        .unwrap();
    for (name, network) in [
        ("palisade_network_host", Network::host()),
        ("palisade_network_none", Network::none()),
        (
            "palisade_network_join",
            Network::join_pid(target.id() as i32),
        ),
        ("palisade_network_bridge", Network::bridge(bridge.clone())),
    ] {
        let sandbox = Sandbox::builder("/bin/true")
            .network(network)
            .build()
            .unwrap();
        run(name, sandbox, &mut group);
    }
    group.finish();
    for mut child in [target, keeper] {
        let _ = child.signal(palisade::Signal::SIGKILL);
        let _ = child.wait();
    }
    let _ = std::fs::remove_dir_all(&state);
    // SAFETY: returns this thread to the namespace it started in; `home` is open.
    let rc = unsafe { libc::setns(home.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0);
}

/// What the default confinement (Docker's capabilities, `no_new_privs`, the default seccomp
/// profile, all prepared before the clone) adds to a spawn, without namespaces and with the
/// default set: against no filter and every capability the caller holds.
fn security(c: &mut Criterion) {
    use palisade::seccomp::Profile;
    use palisade::Capabilities;
    let mut group = c.benchmark_group("spawn_true_security");
    group.sample_size(30);
    baseline(&mut group);
    for (name, namespaces) in [
        ("no_namespaces", Namespace::empty()),
        ("default_namespaces", Sandbox::DEFAULT_NAMESPACES),
    ] {
        let unconfined = Sandbox::builder("/bin/true")
            .namespaces(namespaces)
            .seccomp(Profile::unconfined())
            .no_new_privs(false)
            .capabilities(Capabilities::all())
            .build()
            .unwrap();
        run(
            &format!("palisade_{name}_unconfined"),
            unconfined,
            &mut group,
        );
        let confined = Sandbox::builder("/bin/true")
            .namespaces(namespaces)
            .build()
            .unwrap();
        run(&format!("palisade_{name}_confined"), confined, &mut group);
    }
    group.finish();
}

/// `/bin/true` in a running default sandbox (`docker exec`) against a fresh default sandbox,
/// in one group.
fn exec(c: &mut Criterion) {
    let mut group = c.benchmark_group("exec_true");
    group.sample_size(30);
    baseline(&mut group);
    run(
        "palisade_spawn_default",
        Sandbox::builder("/bin/true").build().unwrap(),
        &mut group,
    );
    let mut sandbox = Sandbox::builder("sleep").arg("1000").spawn().unwrap();
    group.bench_function("palisade_exec_default", |b| {
        b.iter(|| {
            let status = sandbox.exec("/bin/true").spawn().unwrap().wait().unwrap();
            assert!(status.success());
        })
    });
    group.finish();
    sandbox.signal(palisade::Signal::SIGKILL).unwrap();
    sandbox.wait().unwrap();
}

criterion_group! {
    name = benches;
    config = Criterion::default();
    targets = bench
}
criterion_main!(benches);
