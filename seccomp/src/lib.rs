//! Syscall filters for Palisade sandboxes (`seccomp(2)`), compiled to classic BPF in Rust.
//!
//! **Placeholder.** This crate will compile rules — per-syscall actions (allow, errno, kill, trap,
//! log, trace, user notification), argument comparisons on 64-bit arguments, and an architecture
//! check — into a balanced BPF search over syscall numbers, load it with `seccomp(2)`, provide a
//! default profile equivalent in effect to Docker's, read Docker/OCI seccomp JSON profiles, and
//! supervise `SECCOMP_RET_USER_NOTIF` listeners.
