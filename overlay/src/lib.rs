//! Root filesystems for Palisade sandboxes: what files a sandbox has.
//!
//! - [`mount`]: overlayfs mounts with many lower layers, through `fsopen(2)`/`fsconfig(2)`/
//!   `fsmount(2)`/`move_mount(2)` with a `mount(2)` fallback.
//! - [`rootfs`]: the sandbox's root and mount table, planned before the clone and carried out by
//!   the child.

mod error;
pub mod mount;
pub mod rootfs;

pub use error::{Error, Result};
