//! seccomp: how long the default profile takes to compile, and what a filter costs each system
//! call, with no filter, the default profile compiled as a balanced search, and the same profile
//! as a linear chain. Two calls: `getppid(2)`, which the kernel's per-filter action cache (Linux
//! 5.11) answers without running the program at all, since the profile allows it whatever its
//! arguments; and `personality(0xffffffff)` (a query), which the profile allows only for some
//! arguments, so the program runs on every call. Compare with the no-filter baseline of the
//! same run.
//!
//! ```text
//! cargo bench --bench seccomp
//! ```
//!
//! A filter applies to the thread that loads it (and what it starts), so each filtered case runs
//! its loop on a thread of its own that loads the filter first; the benchmark process itself is
//! never filtered. No root needed: the thread sets `no_new_privs`.

#![allow(missing_docs)] // The criterion macros generate undocumented functions.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use palisade::seccomp::{Arch, BpfProgram, LoadFlags, Profile};

/// A system call to time.
type Call = fn() -> libc::c_long;

/// A thread that loads `program` (if any), then times `n` calls of `call` per request.
fn worker(
    program: Option<BpfProgram>,
    call: Call,
) -> (mpsc::Sender<u64>, mpsc::Receiver<Duration>) {
    let (tx_n, rx_n) = mpsc::channel::<u64>();
    let (tx_t, rx_t) = mpsc::channel();
    std::thread::spawn(move || {
        if let Some(p) = program {
            palisade::seccomp::set_no_new_privs().unwrap();
            p.load(LoadFlags::empty()).unwrap();
        }
        for n in rx_n {
            let start = Instant::now();
            for _ in 0..n {
                std::hint::black_box(call());
            }
            if tx_t.send(start.elapsed()).is_err() {
                break;
            }
        }
    });
    (tx_n, rx_t)
}

fn getppid() -> libc::c_long {
    // SAFETY: getppid(2) has no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_getppid) }
}

fn personality_query() -> libc::c_long {
    // SAFETY: personality(0xffffffff) only reads the current persona.
    unsafe { libc::syscall(libc::SYS_personality, 0xffff_ffffu64) }
}

fn bench(c: &mut Criterion) {
    let arch = Arch::native();
    let profile = Profile::default_profile();
    c.bench_function("compile_default_profile", |b| {
        b.iter(|| profile.compile(arch).unwrap())
    });

    let filter = profile.filter(arch).unwrap().unwrap();
    let calls: [(&str, Call); 2] = [
        ("getppid", getppid),
        ("personality_query", personality_query),
    ];
    for (call_name, call) in calls {
        let mut group = c.benchmark_group(call_name);
        for (name, program) in [
            ("no_filter", None),
            ("default_profile_balanced", Some(filter.compile().unwrap())),
            (
                "default_profile_linear",
                Some(filter.compile_linear().unwrap()),
            ),
        ] {
            let (tx, rx) = worker(program, call);
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    tx.send(iters).unwrap();
                    rx.recv().unwrap()
                })
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
