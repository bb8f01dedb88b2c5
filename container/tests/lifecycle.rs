//! Named, detached and created sandboxes, against the real kernel: a sandbox made in one
//! process is opened, entered, started, killed and deleted from another; pid reuse, a dead
//! owner, concurrent creations and state files are checked.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::sh;
use palisade::{Error, Handle, Sandbox, Signal, Status, Stdio};
use palisade_test_support::{require_root, TempDir};

/// Runs the ignored test `creator` of this binary in a process of its own, which makes a
/// sandbox as `mode` says under `root` and exits (or, for `owner`, stays until killed).
fn start_creator(mode: &str, root: &Path, name: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "creator", "--ignored", "--nocapture"])
        .env("PAL_MODE", mode)
        .env("PAL_ROOT", root)
        .env("PAL_NAME", name)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Waits until the creator says it is done (a line on its stdout).
fn wait_for_line(child: &mut std::process::Child) -> String {
    use std::io::BufRead;
    let out = child.stdout.as_mut().unwrap();
    let mut reader = std::io::BufReader::new(out);
    loop {
        let mut line = String::new();
        assert_ne!(reader.read_line(&mut line).unwrap(), 0, "the creator ended");
        if let Some(rest) = line.strip_prefix("CREATED ") {
            return rest.trim().to_owned();
        }
    }
}

/// The creator's side: see [`start_creator`].
#[test]
#[ignore = "run by the other tests in a process of its own"]
fn creator() {
    let (Some(mode), Some(root), Some(name)) = (
        std::env::var_os("PAL_MODE"),
        std::env::var_os("PAL_ROOT"),
        std::env::var_os("PAL_NAME"),
    ) else {
        return;
    };
    let name = name.to_str().unwrap();
    let out = Path::new(&root).join(format!("{name}.out"));
    let mut b = sh("echo started; hostname; exec sleep 300");
    b.name(name)
        .state_root(&root)
        .hostname("pal-life")
        .memory_max(palisade::Bytes::mib(64))
        .annotation("test", "lifecycle")
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()));
    match mode.to_str().unwrap() {
        "detach" => {
            b.detach(true);
            let child = b.spawn().unwrap();
            println!("CREATED {}", child.id());
        }
        "create" => {
            b.detach(true);
            let child = b.build().unwrap().create().unwrap();
            println!("CREATED {}", child.command_id());
        }
        "owner" => {
            let child = b.spawn().unwrap();
            println!("CREATED {}", child.id());
            std::thread::sleep(Duration::from_secs(600));
            drop(child);
        }
        other => panic!("unknown mode {other}"),
    }
}

/// Removes the sandbox on drop, whatever the test did.
struct Cleanup<'a>(&'a Path, &'a str);

impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        if let Ok(h) = Sandbox::open_in(self.0, self.1) {
            let _ = h.force_delete();
        }
    }
}

fn stdout_of(h: &Handle, script: &str) -> String {
    let out = h.exec("sh").args(["-c", script]).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn wait_for_file(path: &Path, text: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !std::fs::read_to_string(path).is_ok_and(|s| s.contains(text)) {
        assert!(
            Instant::now() < deadline,
            "{} never held {text:?}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_detached_sandbox_is_opened_entered_and_killed_from_another_process() {
    require_root!();
    let root = TempDir::new("state");
    let name = "pal-detached";
    let _cleanup = Cleanup(root.path(), name);
    let mut maker = start_creator("detach", root.path(), name);
    let pid: u32 = wait_for_line(&mut maker).parse().unwrap();
    // The creating process is gone; the sandbox is not.
    assert!(maker.wait().unwrap().success());
    wait_for_file(&root.path().join(format!("{name}.out")), "pal-life");

    let mut h = Sandbox::open_in(root.path(), name).unwrap();
    assert_eq!(h.status(), Status::Running);
    assert_eq!(h.pid(), pid);
    let state = h.state().clone();
    assert_eq!(state.owner, None, "a detached sandbox has no owner");
    assert_eq!(
        state.annotations.get("test").map(String::as_str),
        Some("lifecycle")
    );
    assert!(!state.cgroup.is_empty(), "its cgroup is recorded");
    assert!(state.command_pid != 0 && state.command_pid != pid);
    let listed: Vec<String> = Sandbox::list_in(root.path())
        .unwrap()
        .iter()
        .map(|h| h.id().to_owned())
        .collect();
    assert_eq!(listed, [name]);

    // An exec from this process: the sandbox's hostname, PID namespace, files and cgroup.
    let out = stdout_of(
        &h,
        "hostname; cat /proc/1/comm; echo $$; cat /tmp/started 2>/dev/null; \
         cmp /proc/self/cgroup /proc/2/cgroup && echo same-cgroup",
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "pal-life");
    assert_eq!(lines[1], "palisade-init");
    assert!(
        lines[2].parse::<u32>().unwrap() < 10,
        "a small pid: {}",
        lines[2]
    );
    assert_eq!(lines.last(), Some(&"same-cgroup"), "{out}");
    // Its limits: those of the sandbox's group, which the exec is in.
    let memory = h.stats().unwrap().memory.unwrap();
    assert_eq!(memory.limit, Some(palisade::Bytes::mib(64)));

    // Not deletable while it runs; the name stays taken.
    let h2 = Sandbox::open_in(root.path(), name).unwrap();
    assert!(matches!(h2.delete(), Err(Error::StillRunning { .. })));
    let taken = sh("true").name(name).state_root(root.path()).spawn();
    assert!(matches!(taken, Err(Error::NameInUse { .. })), "{taken:?}");

    h.signal(Signal::SIGTERM).unwrap();
    let exit = h.wait().unwrap().expect("the init records the status");
    assert_eq!(exit.signal(), Some(libc::SIGTERM), "{exit}");
    assert_eq!(h.status(), Status::Stopped);
    assert!(matches!(
        h.exec("true").output(),
        Err(Error::NotRunning { .. })
    ));
    // Stopped, it keeps its status until deleted.
    let mut again = Sandbox::open_in(root.path(), name).unwrap();
    assert_eq!(again.status(), Status::Stopped);
    assert_eq!(
        again.state().exit.and_then(|e| e.signal()),
        Some(libc::SIGTERM)
    );
    let dirs = state.cgroup.clone();
    again.delete().unwrap();
    for dir in dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert!(matches!(
        Sandbox::open_in(root.path(), name),
        Err(Error::NotFound { .. })
    ));
}

#[test]
fn create_then_start_from_another_process() {
    require_root!();
    let root = TempDir::new("state");
    let name = "pal-created";
    let _cleanup = Cleanup(root.path(), name);
    let out = root.path().join(format!("{name}.out"));
    let mut maker = start_creator("create", root.path(), name);
    let command_pid: u32 = wait_for_line(&mut maker).parse().unwrap();
    assert!(maker.wait().unwrap().success());

    let mut h = Sandbox::open_in(root.path(), name).unwrap();
    assert_eq!(h.status(), Status::Created);
    // The command's pid is known, it exists, and it has run nothing of its own.
    assert_eq!(h.state().command_pid, command_pid);
    assert!(Path::new(&format!("/proc/{command_pid}")).exists());
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "");

    h.start().unwrap();
    wait_for_file(&out, "started");
    assert_eq!(h.status(), Status::Running);
    assert_eq!(
        Sandbox::open_in(root.path(), name).unwrap().status(),
        Status::Running
    );
    // Once only.
    assert!(matches!(h.start(), Err(Error::NotCreated { .. })));
    // Killed from here, a process that is not its parent: its init cannot report, and the
    // status is the kill's, as `docker kill` reports it.
    h.kill().unwrap();
    let exit = h.wait().unwrap().expect("a status");
    assert_eq!(exit.signal(), Some(libc::SIGKILL));
    assert_eq!(
        Sandbox::open_in(root.path(), name).unwrap().state().exit,
        Some(exit)
    );
    h.delete().unwrap();
}

#[test]
fn a_created_sandbox_killed_before_its_start_is_cleaned_up() {
    require_root!();
    let root = TempDir::new("state");
    let name = "pal-never-started";
    let _cleanup = Cleanup(root.path(), name);
    let out = root.path().join("out");
    let mut b = sh("echo ran");
    b.name(name)
        .state_root(root.path())
        .cgroup(true)
        .stdout(Stdio::from(std::fs::File::create(&out).unwrap()));
    let mut child = b.build().unwrap().create().unwrap();
    assert_ne!(child.command_id(), 0);
    let dirs = Sandbox::open_in(root.path(), name)
        .unwrap()
        .state()
        .cgroup
        .clone();
    assert!(!dirs.is_empty());
    child.signal(Signal::SIGKILL).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGKILL));
    drop(child);
    assert_eq!(
        std::fs::read_to_string(&out).unwrap(),
        "",
        "the command never ran"
    );
    let h = Sandbox::open_in(root.path(), name).unwrap();
    assert!(matches!(
        Sandbox::open_in(root.path(), name).unwrap().start(),
        Err(Error::NotCreated { .. })
    ));
    h.delete().unwrap();
    for dir in dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert_eq!(
        std::fs::read_dir(root.path()).unwrap().count(),
        1,
        "only `out` is left"
    );
}

#[test]
fn create_and_start_in_one_process_reports_the_exec() {
    require_root!();
    // Unnamed: the gate is a pipe.
    let sandbox = sh("echo $$").stdout(Stdio::piped()).build().unwrap();
    let mut child = sandbox.create().unwrap();
    assert_ne!(child.command_id(), child.id());
    child.start().unwrap();
    assert!(matches!(child.start(), Err(Error::NotCreated { .. })));
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.stdout, b"2\n");
    // A missing program fails at the start, with the step that failed.
    let mut missing = Sandbox::builder("/no/such/program")
        .build()
        .unwrap()
        .create()
        .unwrap();
    let err = missing.start().unwrap_err();
    assert!(
        matches!(
            err,
            Error::Child {
                step: palisade::ChildStep::Exec,
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn a_sandbox_whose_owner_was_killed_is_stopped_and_deleted_cleanly() {
    require_root!();
    let root = TempDir::new("state");
    let name = "pal-orphan";
    let _cleanup = Cleanup(root.path(), name);
    let mut owner = start_creator("owner", root.path(), name);
    wait_for_line(&mut owner);
    let mut h = Sandbox::open_in(root.path(), name).unwrap();
    assert_eq!(h.status(), Status::Running);
    assert_eq!(h.state().owner.map(|o| o.pid), Some(owner.id()));
    let dirs = h.state().cgroup.clone();
    assert!(!dirs.is_empty());
    owner.kill().unwrap();
    owner.wait().unwrap();
    // It dies with its owner; its status went with the owner's handle.
    assert_eq!(h.wait().unwrap(), None);
    assert_eq!(h.status(), Status::Stopped);
    let listed = Sandbox::list_in(root.path()).unwrap();
    assert_eq!(listed.len(), 1);
    listed.into_iter().next().unwrap().delete().unwrap();
    for dir in dirs {
        assert!(!dir.exists(), "{} left behind", dir.display());
    }
    assert!(!root.path().join(name).exists());
}

#[test]
fn of_concurrent_creations_with_one_name_exactly_one_wins() {
    require_root!();
    let root = TempDir::new("state");
    let name = "pal-contested";
    let _cleanup = Cleanup(root.path(), name);
    let sandbox = sh("exec sleep 300")
        .name(name)
        .state_root(root.path())
        .build()
        .unwrap();
    let results: Vec<_> = std::thread::scope(|s| {
        let threads: Vec<_> = (0..6).map(|_| s.spawn(|| sandbox.spawn())).collect();
        threads.into_iter().map(|t| t.join().unwrap()).collect()
    });
    let won = results.iter().filter(|r| r.is_ok()).count();
    let lost = results
        .iter()
        .filter(|r| matches!(r, Err(Error::NameInUse { .. })))
        .count();
    assert_eq!((won, lost), (1, 5), "{results:?}");
    // The losers made nothing: one directory, the winner's.
    let entries: Vec<_> = std::fs::read_dir(root.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(entries, [name]);
}

#[test]
fn state_files_are_never_seen_half_written() {
    require_root!();
    let root = TempDir::new("state");
    let stop = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        let reader = s.spawn(|| {
            let mut seen = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for name in ["pal-churn-0", "pal-churn-1"] {
                    match Sandbox::open_in(root.path(), name) {
                        Ok(_) => seen += 1,
                        Err(Error::NotFound { .. }) => {}
                        Err(e) => panic!("a reader saw a broken state: {e}"),
                    }
                }
            }
            seen
        });
        for round in 0..10 {
            let name = format!("pal-churn-{}", round % 2);
            let mut child = sh("true")
                .name(&name)
                .state_root(root.path())
                .build()
                .unwrap()
                .create()
                .unwrap();
            child.start().unwrap();
            child.wait().unwrap();
            Sandbox::open_in(root.path(), &name)
                .unwrap()
                .delete()
                .unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(reader.join().unwrap() > 0, "the reader saw the sandboxes");
    });
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

#[test]
fn an_exec_from_a_handle_cannot_exceed_the_sandboxs_capabilities() {
    require_root!();
    let root = TempDir::new("state");
    let name = "pal-caps";
    let _cleanup = Cleanup(root.path(), name);
    let privileges = "grep -E '^(Uid|CapEff|CapBnd|CapPrm|NoNewPrivs|Seccomp):' /proc/self/status";
    let mut child = sh(&format!("{privileges} > /tmp/p; exec sleep 300"))
        .name(name)
        .state_root(root.path())
        .user(1000, 1000)
        .spawn()
        .unwrap();
    let h = Sandbox::open_in(root.path(), name).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let command = loop {
        let out = h.exec("cat").arg("/tmp/p").output().unwrap();
        if out.status.success() && !out.stdout.is_empty() {
            break String::from_utf8(out.stdout).unwrap();
        }
        assert!(Instant::now() < deadline);
        std::thread::sleep(Duration::from_millis(20));
    };
    let exec = stdout_of(&h, privileges);
    assert_eq!(exec, command, "the exec is confined as the command");
    assert!(exec.contains("CapEff:\t0000000000000000"), "{exec}");
    assert!(exec.contains("Seccomp:\t2"), "{exec}");
    child.signal(Signal::SIGKILL).unwrap();
    child.wait().unwrap();
}

#[test]
fn a_detached_sandboxs_network_outlives_its_handle_and_goes_with_delete() {
    use palisade::netns::link::Netlink;
    use palisade::netns::nft::Nftables;
    use palisade::netns::{Bridge, Network, Proto};
    require_root!();
    let root = TempDir::new("state");
    let net_state = TempDir::new("net");
    // A throwaway host: a network namespace of this test's own.
    palisade_test_support::in_new_netns(|| {
        Netlink::open().unwrap().set_up("lo").unwrap();
        let name = "pal-detached-net";
        let _cleanup = Cleanup(root.path(), name);
        let bridge = Bridge::new("pal-life0")
            .unwrap()
            .subnet("10.251.0.0/24".parse().unwrap())
            .state_dir(net_state.path());
        let mut b = sh("exec sleep 300");
        b.name(name)
            .state_root(root.path())
            .detach(true)
            .network(Network::bridge(bridge))
            .publish(0, 80, Proto::Tcp);
        let child = b.spawn().unwrap();
        let ip = child.address().unwrap();
        // The creator's handle goes; the sandbox, its port guard and its NAT table stay, owned
        // by no socket of the creator's.
        drop(child);
        let mut nft = Nftables::open().unwrap();
        let mut tables = nft.table_list().unwrap();
        tables.extend(nft.bridge_table_list().unwrap());
        // The network's own table aside: the sandbox's NAT table and its port guard.
        tables.retain(|t| !t.name.starts_with("palisade-net-"));
        assert_eq!(tables.len(), 2, "{tables:?}");
        assert!(tables.iter().all(|t| !t.is_socket_owned()), "{tables:?}");

        let h = Sandbox::open_in(root.path(), name).unwrap();
        assert_eq!(h.state().network.as_ref().map(|n| n.1), Some(ip));
        assert_eq!(h.state().ports.len(), 1);
        assert_ne!(h.state().ports[0].host_port, 0);
        h.force_delete().unwrap();
        common::assert_no_network_leftovers();
    });
}

#[test]
fn a_detached_sandbox_refuses_what_would_die_with_its_creator() {
    require_root!();
    let root = TempDir::new("state");
    // Without a name it could never be found again.
    let err = sh("true").detach(true).build().unwrap_err();
    assert!(
        matches!(err, Error::InvalidValue { what: "detach", .. }),
        "{err}"
    );
    // Ports through the none network's forwarder, a thread of the creator's.
    let err = sh("true")
        .name("pal-fwd")
        .state_root(root.path())
        .detach(true)
        .publish(0, 80, palisade::Proto::Tcp)
        .build()
        .unwrap_err();
    assert!(matches!(err, Error::InvalidValue { .. }), "{err}");
    // Names that are not one plain path component.
    for bad in ["", "../x", "a/b", ".hidden", "-x", &"x".repeat(129)] {
        let err = sh("true").name(bad).build().unwrap_err();
        assert!(
            matches!(
                err,
                Error::InvalidValue {
                    what: "sandbox name",
                    ..
                }
            ),
            "{bad:?}: {err}"
        );
    }
    assert_eq!(std::fs::read_dir(root.path()).unwrap().count(), 0);
}

#[test]
fn what_else_is_in_the_state_root_is_not_a_sandbox() {
    let root = TempDir::new("state");
    // As palisade-netns keeps its leases in `/run/palisade/netns` beside the sandboxes.
    std::fs::create_dir(root.path().join("netns")).unwrap();
    std::fs::write(root.path().join("netns").join("lease"), "x").unwrap();
    assert_eq!(Sandbox::list_in(root.path()).unwrap().len(), 0);
    assert!(matches!(
        Sandbox::open_in(root.path(), "netns"),
        Err(Error::NotFound { .. })
    ));
    assert!(root.path().join("netns").join("lease").exists());
    // Half-made by a maker that is gone: collected. Being made by a live one: left alone.
    let dead = root.path().join(".new-pal-x.999999999.1");
    let live = root
        .path()
        .join(format!(".new-pal-y.{}.1", std::process::id()));
    std::fs::create_dir(&dead).unwrap();
    std::fs::create_dir(&live).unwrap();
    assert_eq!(Sandbox::list_in(root.path()).unwrap().len(), 0);
    assert!(!dead.exists());
    assert!(live.exists());
}

#[test]
fn a_handle_updates_the_limits_of_a_running_sandbox() {
    use palisade::cgroup::{Max, Resource};
    require_root!();
    let root = TempDir::new("state");
    let name = "pal-update";
    let _cleanup = Cleanup(root.path(), name);
    let mut child = sh("exec sleep 300")
        .name(name)
        .state_root(root.path())
        .pids_max(100)
        .spawn()
        .unwrap();
    let h = Sandbox::open_in(root.path(), name).unwrap();
    let pids_max = || {
        let dirs = h.state().cgroup.clone();
        dirs.iter()
            .map(|d| d.join("pids.max"))
            .find(|f| f.exists())
            .map(|f| std::fs::read_to_string(f).unwrap().trim().to_owned())
    };
    assert_eq!(pids_max().as_deref(), Some("100"));
    h.update(&[Resource::PidsMax(Max::Limit(7))]).unwrap();
    assert_eq!(pids_max().as_deref(), Some("7"));
    // A value the kernel cannot take is an error, and the limit stays.
    assert!(h
        .update(&[Resource::MemoryMax(Max::Limit(palisade::Bytes::kib(4)))])
        .is_err());
    assert_eq!(pids_max().as_deref(), Some("7"));
    assert!(h.cgroup().is_some());
    child.signal(Signal::SIGKILL).unwrap();
    child.wait().unwrap();
}
