//! Per-architecture syscall tables: names to numbers and back, as methods of [`Arch`].
//!
//! They live apart from the [`Arch`] type because an unknown name is an [`Error`], and that
//! error names the architecture it was resolved for; kept in `arch.rs`, the two modules would
//! import each other.

use std::str::FromStr;

use crate::arch::Arch;
use crate::error::{Error, Result};

impl Arch {
    /// The syscall number of `name` on this architecture.
    pub fn syscall_nr(self, name: &str) -> Result<u32> {
        self.try_syscall_nr(name)
            .ok_or_else(|| Error::UnknownSyscall {
                name: name.to_owned(),
                arch: self,
            })
    }

    /// The syscall number of `name` on this architecture, `None` if the architecture lacks it.
    pub fn try_syscall_nr(self, name: &str) -> Option<u32> {
        // The tables are generated from the kernel's own syscall tables by the `syscalls` crate.
        let id = match self {
            Arch::X86_64 => syscalls::x86_64::Sysno::from_str(name).ok()?.id(),
            Arch::Aarch64 => syscalls::aarch64::Sysno::from_str(name).ok()?.id(),
        };
        u32::try_from(id).ok()
    }

    /// The name of syscall number `nr` on this architecture, if it has one.
    pub fn syscall_name(self, nr: u32) -> Option<&'static str> {
        let nr = usize::try_from(nr).ok()?;
        match self {
            Arch::X86_64 => syscalls::x86_64::Sysno::new(nr).map(|s| s.name()),
            Arch::Aarch64 => syscalls::aarch64::Sysno::new(nr).map(|s| s.name()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_per_arch() {
        assert_eq!(Arch::X86_64.syscall_nr("read").ok(), Some(0));
        assert_eq!(Arch::Aarch64.syscall_nr("read").ok(), Some(63));
        assert_eq!(Arch::X86_64.syscall_nr("getppid").ok(), Some(110));
        assert!(Arch::Aarch64.try_syscall_nr("open").is_none());
        match Arch::Aarch64.syscall_nr("open") {
            Err(Error::UnknownSyscall { name, arch }) => {
                assert_eq!(name, "open");
                assert_eq!(arch, Arch::Aarch64);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert_eq!(Arch::X86_64.syscall_name(59), Some("execve"));
    }
}
