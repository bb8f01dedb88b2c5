//! Root filesystems for Palisade sandboxes: what files a sandbox has.
//!
//! **Placeholder.** This crate will wrap overlayfs mounts (many lower layers, an upper and a work
//! directory, read-only mode; through `fsopen(2)`/`fsconfig(2)`/`fsmount(2)`/`move_mount(2)` with a
//! `mount(2)` fallback), a content-addressed store of OCI image layers with whiteout conversion and
//! path-traversal checks, and the sandbox's mount plan: a private propagation, `pivot_root(2)`,
//! `/proc`, a minimal `/dev`, read-only `/sys`, masked paths and volumes, computed before the clone
//! and executed by the child.
