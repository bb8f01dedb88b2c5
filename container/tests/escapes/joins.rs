//! Joining another sandbox's namespaces by path (a pod's containers): the caller's own thread
//! is switched to a joined PID namespace for the clone, and must come back whatever happens.

use std::process::Command;

use palisade::{Error, Namespace, Sandbox};
use palisade_test_support::require_root;

/// The PID namespace the calling thread's children are born in.
fn for_children() -> std::path::PathBuf {
    std::fs::read_link("/proc/thread-self/ns/pid_for_children").unwrap()
}

/// The PID namespace of a child the calling thread starts now, as that child sees it.
fn child_pid_ns() -> String {
    let out = Command::new("readlink")
        .arg("/proc/self/ns/pid")
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

#[test]
fn a_failed_spawn_into_a_joined_pid_namespace_leaves_the_callers_children_outside() {
    require_root!();
    let mut pod = Sandbox::builder("sleep").arg("300").spawn().unwrap();
    let pod_ns = format!("/proc/{}/ns/pid", pod.command_id());
    let pod_link = std::fs::read_link(&pod_ns).unwrap().display().to_string();
    let own = for_children();
    let own_link = child_pid_ns();
    assert_ne!(own_link, pod_link);

    // The attack: a spawn that fails after the switch (no such program), then another that
    // fails in the child, then one that succeeds. After each, a plain child of this thread
    // must be born in the caller's namespace, not the pod's, where it would be the pod's to
    // see and signal.
    let err = Sandbox::builder("/pal-no-such-program")
        .join_namespace(&pod_ns)
        .spawn()
        .unwrap_err();
    assert!(matches!(err, Error::Child { .. }), "{err}");
    assert_eq!(for_children(), own);
    assert_eq!(child_pid_ns(), own_link);
    let out = Sandbox::builder("true")
        .join_namespace(&pod_ns)
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(child_pid_ns(), own_link);

    // The positive control: with this thread switched by hand, as a spawn switches it, its
    // child is born in the pod's namespace: the probe above would see the leak.
    let file = palisade::ns::NsFile::open_path(&pod_ns).unwrap();
    let back = palisade::ns::NsFile::open_path("/proc/thread-self/ns/pid_for_children").unwrap();
    file.setns().unwrap();
    let inside = child_pid_ns();
    back.setns().unwrap();
    assert_eq!(inside, pod_link);
    assert_eq!(child_pid_ns(), own_link);
    assert_eq!(file.kind(), Namespace::PID);

    pod.signal(palisade::Signal::SIGKILL).unwrap();
    pod.wait().unwrap();
}
