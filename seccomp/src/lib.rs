//! Syscall filters for Palisade sandboxes (`seccomp(2)`), compiled to classic BPF in pure Rust.
//!
//! A [`Filter`] holds [`Rule`]s for one [`Arch`]: a syscall, [`Cond`]itions on its 64-bit
//! arguments, and an [`Action`]. [`Filter::compile`] turns it into a [`BpfProgram`] that checks
//! the architecture (rejecting x32 on x86-64), then binary-searches the syscall number over
//! merged ranges, so large allow-lists stay cheap. [`bpf::interpret`] runs a program on a
//! [`SeccompData`] without the kernel, for dry runs and tests.
//!
//! [`Profile`] is the policy level: [`Profile::default_profile`] is an allow-list equivalent in
//! effect to Docker's default, [`Profile::from_json`] reads Docker/OCI seccomp JSON, and
//! [`Profile::unconfined`] means no filter.
//!
//! Loading ([`BpfProgram::load`], [`load::load_fprog`]) is one `seccomp(2)` call that needs
//! `no_new_privs` ([`set_no_new_privs`]) or `CAP_SYS_ADMIN`. It is issued directly, never
//! through libc, so it leaves `errno` alone and allocates nothing: a sandbox child may load a
//! filter between `clone` and `execve`, even sharing its parent's memory. There,
//! [`BpfProgram::load_raw`] ([`load::set_mode_filter`]) returns the kernel's error as a
//! `rustix::io::Errno`. [`notify`] supervises syscalls
//! that a filter hands to user space with [`Action::UserNotify`] (`seccomp_unotify(2)`).
//!
//! ```
//! use palisade_seccomp::{Arch, Profile, SeccompData, Action};
//!
//! let arch = Arch::native();
//! let program = Profile::default_profile().compile(arch)?.expect("the default profile filters");
//! let getpid = SeccompData::new(arch, arch.syscall_nr("getpid")?, [0; 6]);
//! let reboot = SeccompData::new(arch, arch.syscall_nr("reboot")?, [0; 6]);
//! assert_eq!(program.interpret(&getpid)?, Action::Allow.ret());
//! assert_eq!(program.interpret(&reboot)?, Action::Errno(libc::EPERM as u16).ret());
//! // In a sandbox child: palisade_seccomp::set_no_new_privs()?; program.load(LoadFlags::empty())?;
//! # Ok::<(), palisade_seccomp::Error>(())
//! ```

pub mod arch;
pub mod bpf;
mod compile;
mod error;
pub mod load;
pub mod notify;
pub mod profile;
pub mod rule;
mod table;

pub use arch::Arch;
pub use bpf::{BpfProgram, SeccompData, SockFilter};
pub use error::{Error, Result};
pub use load::{set_no_new_privs, LoadFlags};
pub use profile::{JsonOptions, Profile};

pub use rule::{Action, CmpOp, Cond, Filter, Rule, Syscall};
