//! Control groups for Palisade sandboxes: how much a sandbox may use (`cgroups(7)`).
//!
//! **Placeholder.** This crate will wrap the cgroup v2 file interface under `/sys/fs/cgroup`:
//! creating and deleting groups beneath the caller's own (never writing into groups it did not
//! create), enabling controllers through `cgroup.subtree_control`, typed limits (`memory.max`,
//! `cpu.max`, `cpu.weight`, `cpuset.cpus`, `io.max`, `pids.max`, …), typed statistics
//! (`memory.current`, `cpu.stat`, `memory.events`, …), `cgroup.freeze` and `cgroup.kill`, and an
//! open directory descriptor for `clone3(2)`'s `CLONE_INTO_CGROUP`. On hybrid hosts, where the
//! controllers are mounted as cgroup v1 hierarchies, the same API will fall back to the v1
//! controller directories.
