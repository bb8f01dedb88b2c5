//! The cgroup v2 form of a [`DevicePolicy`]: an eBPF program of type
//! `BPF_PROG_TYPE_CGROUP_DEVICE`, generated here instruction by instruction, loaded with `bpf(2)`
//! and attached to the group's directory.
//!
//! cgroup v2 has no `devices` controller: the kernel runs the device programs attached to the
//! task's group and its ancestors on every `open(2)` of a device node and every `mknod(2)`, with
//! a `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }` whose `access_type`
//! is `(access << 16) | type`. A program returns 1 to allow and 0 to deny; with
//! `BPF_F_ALLOW_MULTI` every program on the path must allow, so a child group cannot widen what
//! its parent allows.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::path::Path;

use crate::devices::{DeviceKind, DevicePolicy};
use crate::error::{Error, Result};

// From include/uapi/linux/bpf.h.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;
const BPF_DEVCG_DEV_BLOCK: i32 = 1;
const BPF_DEVCG_DEV_CHAR: i32 = 2;

// Instruction classes, operations and sources (include/uapi/linux/bpf_common.h, bpf.h).
const LDX_MEM_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const ALU64_MOV_K: u8 = 0xb7;
const ALU64_MOV_X: u8 = 0xbf;
const ALU64_AND_K: u8 = 0x57;
const ALU64_AND_X: u8 = 0x5f;
const ALU64_OR_K: u8 = 0x47;
const ALU64_XOR_K: u8 = 0xa7;
const ALU64_RSH_K: u8 = 0x77;
const JMP_JEQ_K: u8 = 0x15;
const JMP32_JNE_K: u8 = 0x56; // BPF_JMP32 | BPF_JNE | BPF_K: compares the low 32 bits
const JMP_EXIT: u8 = 0x95;

/// One eBPF instruction (`struct bpf_insn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub code: u8,
    pub dst: u8,
    pub src: u8,
    pub off: i16,
    pub imm: i32,
}

impl Insn {
    const fn new(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst,
            src,
            off,
            imm,
        }
    }

    /// The kernel's 8-byte encoding; `dst_reg` is the low nibble of the second byte.
    fn encode(self) -> [u8; 8] {
        let off = self.off.to_ne_bytes();
        let imm = self.imm.to_ne_bytes();
        [
            self.code,
            (self.dst & 0xf) | (self.src << 4),
            off[0],
            off[1],
            imm[0],
            imm[1],
            imm[2],
            imm[3],
        ]
    }
}

// Registers: r1 is the context on entry; r0 the result.
const R0: u8 = 0;
const R1: u8 = 1;
const ACCESS: u8 = 2;
const TYPE: u8 = 3;
const MAJOR: u8 = 4;
const MINOR: u8 = 5;
const ALLOWED: u8 = 6;

/// The program for `policy`. It computes the allowed access bits for the device as
/// [`DevicePolicy::allows`] does — each matching rule, in order, sets (allow) or clears (deny)
/// its bits — and allows the request when no requested bit is left out.
pub(crate) fn program(policy: &DevicePolicy) -> Vec<Insn> {
    let mut p = vec![
        Insn::new(LDX_MEM_W, ACCESS, R1, 0, 0),
        Insn::new(ALU64_MOV_X, TYPE, ACCESS, 0, 0),
        Insn::new(ALU64_AND_K, TYPE, 0, 0, 0xffff),
        Insn::new(ALU64_RSH_K, ACCESS, 0, 0, 16),
        Insn::new(LDX_MEM_W, MAJOR, R1, 4, 0),
        Insn::new(LDX_MEM_W, MINOR, R1, 8, 0),
        Insn::new(ALU64_MOV_K, ALLOWED, 0, 0, 0),
    ];
    for rule in policy.rules() {
        if rule.access.is_empty() {
            continue;
        }
        let mut checks: Vec<(u8, i32)> = Vec::new();
        match rule.kind {
            DeviceKind::All => {}
            DeviceKind::Char => checks.push((TYPE, BPF_DEVCG_DEV_CHAR)),
            DeviceKind::Block => checks.push((TYPE, BPF_DEVCG_DEV_BLOCK)),
        }
        // Device numbers are at most 20 bits (checked by `validate`), so they fit an imm32.
        if let Some(m) = rule.major {
            checks.push((MAJOR, m as i32));
        }
        if let Some(m) = rule.minor {
            checks.push((MINOR, m as i32));
        }
        let n = checks.len();
        for (i, (reg, value)) in checks.into_iter().enumerate() {
            // Skip the rest of this rule: the remaining checks and the one update.
            p.push(Insn::new(JMP32_JNE_K, reg, 0, (n - i) as i16, value));
        }
        let bits = rule.access.bits() as i32;
        p.push(if rule.allow {
            Insn::new(ALU64_OR_K, ALLOWED, 0, 0, bits)
        } else {
            Insn::new(ALU64_AND_K, ALLOWED, 0, 0, !bits)
        });
    }
    p.extend([
        // ALLOWED = requested bits that are not allowed.
        Insn::new(ALU64_XOR_K, ALLOWED, 0, 0, -1),
        Insn::new(ALU64_AND_X, ALLOWED, ACCESS, 0, 0),
        Insn::new(ALU64_MOV_K, R0, 0, 0, 1),
        Insn::new(JMP_JEQ_K, ALLOWED, 0, 1, 0),
        Insn::new(ALU64_MOV_K, R0, 0, 0, 0),
        Insn::new(JMP_EXIT, 0, 0, 0, 0),
    ]);
    p
}

/// The `bpf_attr` of `BPF_PROG_LOAD`, up to `expected_attach_type`; the kernel takes a shorter
/// `bpf_attr` and treats the rest as zero (`bpf(2)`).
#[repr(C)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// The `bpf_attr` of `BPF_PROG_ATTACH` and `BPF_PROG_DETACH`.
#[repr(C)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

/// `bpf(2)`.
///
/// # Safety
///
/// `attr` must be the attribute struct that `cmd` expects, and every pointer in it valid for the
/// duration of the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: per this function's contract.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Loads the device program for `policy`. When the verifier refuses it, the load is repeated
/// with a log, which the error carries.
pub(crate) fn load(policy: &DevicePolicy) -> Result<OwnedFd> {
    let insns: Vec<[u8; 8]> = program(policy).into_iter().map(Insn::encode).collect();
    // Device programs call no GPL-only helper, so any license string will do.
    let license = c"MIT OR Apache-2.0";
    let mut log = vec![0u8; 0];
    let attempt = |log: &mut Vec<u8>| {
        let mut name = [0u8; 16];
        name[..12].copy_from_slice(b"palisade_dev");
        let mut attr = ProgLoadAttr {
            prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
            insn_cnt: insns.len() as u32,
            insns: insns.as_ptr() as u64,
            license: license.as_ptr() as u64,
            log_level: u32::from(!log.is_empty()),
            log_size: log.len() as u32,
            log_buf: if log.is_empty() {
                0
            } else {
                log.as_mut_ptr() as u64
            },
            kern_version: 0,
            prog_flags: 0,
            prog_name: name,
            prog_ifindex: 0,
            expected_attach_type: BPF_CGROUP_DEVICE,
        };
        // SAFETY: `attr` is a BPF_PROG_LOAD attribute whose pointers (the instructions, the
        // NUL-terminated license, the log buffer of `log_size` bytes) outlive the call.
        let fd = unsafe { bpf(BPF_PROG_LOAD, &mut attr) }?;
        // SAFETY: BPF_PROG_LOAD returned a new descriptor that nothing else owns.
        Ok::<_, io::Error>(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
    };
    match attempt(&mut log) {
        Ok(fd) => Ok(fd),
        Err(source) => {
            let mut verifier = String::new();
            if matches!(source.raw_os_error(), Some(libc::EINVAL | libc::EACCES)) {
                log = vec![0u8; 64 * 1024];
                if attempt(&mut log).is_err() {
                    let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
                    verifier = String::from_utf8_lossy(&log[..end]).trim().to_owned();
                }
            }
            Err(Error::Bpf {
                op: "load the device program",
                path: None,
                source,
                log: verifier,
            })
        }
    }
}

fn attach_attr(group: BorrowedFd<'_>, prog: BorrowedFd<'_>, flags: u32) -> AttachAttr {
    AttachAttr {
        target_fd: group.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: flags,
        replace_bpf_fd: 0,
    }
}

/// Attaches `prog` to the group open at `group` (a cgroup v2 directory), beside any program
/// already there (`BPF_F_ALLOW_MULTI`).
pub(crate) fn attach(group: BorrowedFd<'_>, dir: &Path, prog: BorrowedFd<'_>) -> Result<()> {
    let mut attr = attach_attr(group, prog, BPF_F_ALLOW_MULTI);
    // SAFETY: a BPF_PROG_ATTACH attribute holding descriptors that are open for the call.
    unsafe { bpf(BPF_PROG_ATTACH, &mut attr) }
        .map(drop)
        .map_err(|source| Error::Bpf {
            op: "attach the device program to",
            path: Some(dir.to_owned()),
            source,
            log: String::new(),
        })
}

/// Detaches `prog`, attached earlier by [`attach`], from the group open at `group`.
pub(crate) fn detach(group: BorrowedFd<'_>, dir: &Path, prog: BorrowedFd<'_>) -> Result<()> {
    let mut attr = attach_attr(group, prog, 0);
    // SAFETY: a BPF_PROG_DETACH attribute holding descriptors that are open for the call.
    unsafe { bpf(BPF_PROG_DETACH, &mut attr) }
        .map(drop)
        .map_err(|source| Error::Bpf {
            op: "detach the device program from",
            path: Some(dir.to_owned()),
            source,
            log: String::new(),
        })
}

/// Runs a program of the subset [`program`] emits on one device context, as the kernel would:
/// `Ok(r0)`, or why the program is not one this interpreter (and so [`program`]) should make.
#[cfg(test)]
pub(crate) fn run(prog: &[Insn], access_type: u32, major: u32, minor: u32) -> Result<u64, String> {
    let mut r = [0u64; 11];
    let mut init = [false; 11];
    init[1] = true;
    let ctx = [access_type, major, minor];
    let mut pc = 0usize;
    let mut steps = 0;
    loop {
        let i = *prog.get(pc).ok_or(format!("pc {pc} runs off the end"))?;
        steps += 1;
        if steps > prog.len() {
            return Err("a backward jump".into());
        }
        let (d, s) = (usize::from(i.dst), usize::from(i.src));
        if d > 10 || s > 10 {
            return Err(format!("bad register in {i:?}"));
        }
        let imm = i64::from(i.imm) as u64; // ALU64 and JMP sign-extend imm32
        let need = |reg: usize| {
            if init[reg] {
                Ok(r[reg])
            } else {
                Err(format!("r{reg} read before it is set at {pc}"))
            }
        };
        let mut next = pc + 1;
        match i.code {
            LDX_MEM_W => {
                if s != 1 || i.off < 0 || i.off % 4 != 0 || i.off > 8 {
                    return Err(format!("bad context load {i:?}"));
                }
                r[d] = u64::from(ctx[i.off as usize / 4]);
            }
            ALU64_MOV_K => r[d] = imm,
            ALU64_MOV_X => r[d] = need(s)?,
            ALU64_AND_K => r[d] = need(d)? & imm,
            ALU64_AND_X => r[d] = need(d)? & need(s)?,
            ALU64_OR_K => r[d] = need(d)? | imm,
            ALU64_XOR_K => r[d] = need(d)? ^ imm,
            ALU64_RSH_K => r[d] = need(d)? >> (i.imm & 63),
            JMP_JEQ_K | JMP32_JNE_K => {
                let taken = if i.code == JMP_JEQ_K {
                    need(d)? == imm
                } else {
                    need(d)? as u32 != i.imm as u32
                };
                if i.off < 0 {
                    return Err("a backward jump".into());
                }
                if taken {
                    next = pc + 1 + i.off as usize;
                }
            }
            JMP_EXIT => return need(0),
            other => return Err(format!("opcode {other:#x} is not in the subset")),
        }
        init[d] = true;
        pc = next;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::tests::policy;
    use crate::devices::{DeviceAccess, DeviceRule};
    use proptest::prelude::*;

    fn ask(prog: &[Insn], kind: DeviceKind, major: u32, minor: u32, access: DeviceAccess) -> bool {
        let t = match kind {
            DeviceKind::Block => BPF_DEVCG_DEV_BLOCK,
            _ => BPF_DEVCG_DEV_CHAR,
        } as u32;
        match run(prog, (access.bits() << 16) | t, major, minor) {
            Ok(1) => true,
            Ok(0) => false,
            other => panic!("program returned {other:?}"),
        }
    }

    #[test]
    fn docker_default_program() {
        let p = program(&DevicePolicy::docker_default());
        let rw = DeviceAccess::READ | DeviceAccess::WRITE;
        assert!(ask(&p, DeviceKind::Char, 1, 3, rw));
        assert!(ask(&p, DeviceKind::Char, 136, 7, rw));
        assert!(ask(&p, DeviceKind::Block, 8, 0, DeviceAccess::MKNOD));
        assert!(!ask(&p, DeviceKind::Block, 8, 0, DeviceAccess::READ));
        assert!(!ask(&p, DeviceKind::Char, 1, 1, DeviceAccess::READ));
        assert!(!ask(&p, DeviceKind::Char, 5, 1, rw));
        // Preamble, 10 rules of 2 or 3 checks plus an update, and the ending.
        assert_eq!(p.len(), 7 + (2 + 2 + 7 * 4 + 3) + 6);
        let deny_all = program(&DevicePolicy::deny_all());
        assert!(!ask(&deny_all, DeviceKind::Char, 1, 3, DeviceAccess::READ));
        let all = program(&DevicePolicy::deny_all().allow("a".parse::<DeviceRule>().unwrap()));
        assert!(ask(&all, DeviceKind::Block, 7, 9, DeviceAccess::RWM));
    }

    #[test]
    fn encoding() {
        let i = Insn::new(LDX_MEM_W, 2, 1, 4, 0).encode();
        assert_eq!(i, [0x61, 0x12, 4, 0, 0, 0, 0, 0]);
        let j = Insn::new(JMP32_JNE_K, 4, 0, 3, 136).encode();
        assert_eq!(j, [0x56, 0x04, 3, 0, 136, 0, 0, 0]);
    }

    proptest! {
        #[test]
        fn program_means_the_policy(
            p in policy(),
            block in any::<bool>(),
            major in 0u32..4,
            minor in 0u32..4,
            access in 1u32..8,
        ) {
            let kind = if block { DeviceKind::Block } else { DeviceKind::Char };
            let access = DeviceAccess::from_bits_truncate(access);
            prop_assert_eq!(
                ask(&program(&p), kind, major, minor, access),
                p.allows(kind, major, minor, access)
            );
        }
    }
}
