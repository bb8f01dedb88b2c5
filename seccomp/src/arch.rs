//! Architectures a filter can be compiled for, and per-architecture syscall tables.
//!
//! The kernel hands a filter `seccomp_data.arch`, an `AUDIT_ARCH_*` value, because the same
//! syscall number means different calls on different ABIs (see `seccomp(2)`, "Caveats"). Every
//! compiled program therefore checks the architecture before it looks at the syscall number.

use std::fmt;

/// `__AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE | EM_X86_64`.
pub const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
/// `__AUDIT_ARCH_64BIT | __AUDIT_ARCH_LE | EM_AARCH64`.
pub const AUDIT_ARCH_AARCH64: u32 = 0xc000_00b7;
/// Set in the syscall number by the x32 ABI, which shares `AUDIT_ARCH_X86_64` with the native
/// 64-bit ABI; an x86-64 filter must tell the two apart by this bit alone.
pub const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// An architecture (ABI) whose syscalls a filter can describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Arch {
    /// x86-64, the 64-bit ABI only (x32 calls are rejected by compiled filters).
    X86_64,
    /// AArch64 (arm64).
    Aarch64,
}

impl Arch {
    /// Every architecture this crate supports.
    pub const ALL: [Arch; 2] = [Arch::X86_64, Arch::Aarch64];

    /// The architecture this crate was compiled for.
    #[cfg(target_arch = "x86_64")]
    pub const fn native() -> Arch {
        Arch::X86_64
    }

    /// The architecture this crate was compiled for.
    #[cfg(target_arch = "aarch64")]
    pub const fn native() -> Arch {
        Arch::Aarch64
    }

    /// The `AUDIT_ARCH_*` value the kernel reports in `seccomp_data.arch`.
    pub const fn audit_arch(self) -> u32 {
        match self {
            Arch::X86_64 => AUDIT_ARCH_X86_64,
            Arch::Aarch64 => AUDIT_ARCH_AARCH64,
        }
    }

    /// The architecture with this `AUDIT_ARCH_*` value, if supported.
    pub const fn from_audit_arch(value: u32) -> Option<Arch> {
        match value {
            AUDIT_ARCH_X86_64 => Some(Arch::X86_64),
            AUDIT_ARCH_AARCH64 => Some(Arch::Aarch64),
            _ => None,
        }
    }

    /// The canonical (kernel / `uname -m`) name.
    pub const fn name(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How a profile names an architecture: one this crate compiles for, or another one that is known
/// (so the profile is valid) but for which no filter is ever built here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ArchName {
    Supported(Arch),
    Other,
}

impl ArchName {
    /// Parses the spellings found in OCI/Docker profiles: `SCMP_ARCH_*` constants (libseccomp),
    /// Go `GOARCH` names (`amd64`, `arm64`) and kernel names (`x86_64`, `aarch64`).
    pub(crate) fn parse(name: &str) -> Option<ArchName> {
        let lower = name.to_ascii_lowercase();
        let bare = lower.strip_prefix("scmp_arch_").unwrap_or(&lower);
        Some(match bare {
            "x86_64" | "amd64" => ArchName::Supported(Arch::X86_64),
            "aarch64" | "arm64" => ArchName::Supported(Arch::Aarch64),
            "x86" | "386" | "i386" | "i686" | "x32" | "arm" | "armv7" | "mips" | "mipsel"
            | "mips64" | "mips64n32" | "mipsel64" | "mipsel64n32" | "mips64le" | "mipsle"
            | "ppc" | "ppc64" | "ppc64le" | "s390" | "s390x" | "parisc" | "parisc64"
            | "riscv64" | "loong64" | "loongarch64" | "sh" | "sheb" | "m68k" => ArchName::Other,
            _ => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names() {
        assert_eq!(
            ArchName::parse("SCMP_ARCH_X86_64"),
            Some(ArchName::Supported(Arch::X86_64))
        );
        assert_eq!(
            ArchName::parse("arm64"),
            Some(ArchName::Supported(Arch::Aarch64))
        );
        assert_eq!(ArchName::parse("SCMP_ARCH_X32"), Some(ArchName::Other));
        assert_eq!(ArchName::parse("vax"), None);
        assert_eq!(
            Arch::from_audit_arch(Arch::native().audit_arch()),
            Some(Arch::native())
        );
    }
}
