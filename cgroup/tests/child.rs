//! A new process moving itself into its group's v1 hierarchies
//! (`palisade_cgroup::child::enter_v1`), as a sandbox's first process does before it runs
//! anything.

use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::process::Command;

use palisade_cgroup::{child, Cgroup, Controller, Hierarchy};
use palisade_test_support::require_root;

#[test]
fn a_new_process_moves_itself_into_each_v1_hierarchy_of_its_group() {
    require_root!();
    let hier = Hierarchy::detect().unwrap();
    let mut b = Cgroup::builder()
        .name(format!("palisade-test-child-{}", std::process::id()))
        .hierarchy(&hier);
    for c in [Controller::Pids, Controller::Memory] {
        if hier.served(c).is_some() {
            b = b.controller(c);
        }
    }
    let group = b.create().unwrap();
    let tasks = group.v1_task_files().unwrap();
    let mut cmd = Command::new("cat");
    cmd.arg("/proc/self/cgroup");
    let fds: Vec<_> = tasks.iter().map(|f| f.try_clone().unwrap()).collect();
    // SAFETY: between fork and exec the closure makes one write(2) per descriptor, with no
    // allocation or lock.
    unsafe {
        cmd.pre_exec(move || {
            for fd in &fds {
                child::enter_v1(fd.as_fd())?;
            }
            Ok(())
        });
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    // One line per v1 hierarchy the group has a directory in, each naming the group.
    let inside = text
        .lines()
        .filter(|l| !l.starts_with("0::") && l.contains(group.name()))
        .count();
    assert_eq!(inside, tasks.len(), "{text}");
    if hier.backend() != palisade_cgroup::Backend::V2 {
        assert!(
            !tasks.is_empty(),
            "a v1 or hybrid host has v1 groups: {text}"
        );
    }
    group.delete().unwrap();
}
