//! The range of device numbers, shared by device rules and the errors that refuse them.

/// The largest major number: the kernel's `dev_t` has 12 bits of major (`MINORBITS` is 20).
pub const MAX_MAJOR: u32 = (1 << 12) - 1;
/// The largest minor number (`MINORMASK`).
pub const MAX_MINOR: u32 = (1 << 20) - 1;
