//! Exhaustion. A sandbox's throwaway root layer and its `/tmp` live in memory (tmpfs), and a
//! tmpfs left at the kernel's default may take half of the host's memory each: one sandbox
//! writing a file could take the host's memory. The scratch space is bounded, and charged to
//! the sandbox's memory cgroup.

use palisade_test_support::require_root;

use crate::common::{sh, stdout_of};
use palisade::cgroup::Bytes;

/// Writes `mib` MiB to `path` in the sandbox and prints whether it worked.
fn write_script(path: &str, mib: u32) -> String {
    format!(
        "if head -c {} /dev/zero > {path} 2>/dev/null; then echo wrote; else echo refused; fi",
        mib << 20
    )
}

#[test]
fn the_scratch_space_is_bounded() {
    require_root!();
    for path in ["/tmp/big", "/big"] {
        let mut b = sh(&write_script(path, 48));
        b.scratch_size(Bytes::mib(32));
        assert_eq!(stdout_of(&mut b), "refused\n", "{path}");
        // Control: within the bound it works.
        let mut b = sh(&write_script(path, 16));
        b.scratch_size(Bytes::mib(32));
        assert_eq!(stdout_of(&mut b), "wrote\n", "{path}");
    }
    // The throwaway layer and /tmp share one budget.
    let mut b = sh(&format!(
        "{}; {}",
        write_script("/tmp/a", 20),
        write_script("/b", 20)
    ));
    b.scratch_size(Bytes::mib(32));
    assert_eq!(stdout_of(&mut b), "wrote\nrefused\n");
    // The default bound is 1 GiB, not half of the host's memory.
    let out = stdout_of(&mut sh("df -k /tmp | tail -1"));
    let size_kib: u64 = out.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert_eq!(size_kib, 1 << 20, "{out}");
}

#[test]
fn scratch_space_is_charged_to_the_sandboxs_memory_limit() {
    require_root!();
    // 96 MiB into /tmp, within the scratch bound, with a 32 MiB memory limit: the pages are
    // the sandbox's, so the limit stops the writer (the kernel cannot reclaim tmpfs pages
    // without swap, and OOM-kills it).
    let mut b = sh(&write_script("/tmp/big", 96));
    b.memory_max(Bytes::mib(32));
    let out = b.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout != "wrote\n" || out.status.oom_killed(),
        "96 MiB were written past a 32 MiB limit: {stdout} {}",
        out.status
    );
    // Control: with room in the limit the same write goes through.
    let mut b = sh(&write_script("/tmp/big", 16));
    b.memory_max(Bytes::mib(64));
    assert_eq!(stdout_of(&mut b), "wrote\n");
}
