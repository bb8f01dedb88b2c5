//! Classic BPF as seccomp uses it: instructions, the `seccomp_data` a program inspects, compiled
//! programs, and an interpreter for dry runs.
//!
//! The instruction set is the one described in the kernel's
//! `Documentation/networking/filter.rst`; seccomp restricts it (see `seccomp(2)`): packet loads
//! read 32-bit words of `struct seccomp_data`, and there are no packet-relative indirect loads.

use crate::arch::Arch;
use crate::error::{Error, Result};

/// Instruction class: load into A.
pub const BPF_LD: u16 = 0x00;
/// Instruction class: load into X.
pub const BPF_LDX: u16 = 0x01;
/// Instruction class: store A into scratch memory.
pub const BPF_ST: u16 = 0x02;
/// Instruction class: store X into scratch memory.
pub const BPF_STX: u16 = 0x03;
/// Instruction class: arithmetic on A.
pub const BPF_ALU: u16 = 0x04;
/// Instruction class: jumps.
pub const BPF_JMP: u16 = 0x05;
/// Instruction class: return.
pub const BPF_RET: u16 = 0x06;
/// Instruction class: register transfers.
pub const BPF_MISC: u16 = 0x07;

/// Load size: 32-bit word (the only size seccomp accepts).
pub const BPF_W: u16 = 0x00;
/// Load mode: immediate.
pub const BPF_IMM: u16 = 0x00;
/// Load mode: absolute offset into `seccomp_data`.
pub const BPF_ABS: u16 = 0x20;
/// Load mode: scratch memory slot.
pub const BPF_MEM: u16 = 0x60;
/// Load mode: length of `seccomp_data`.
pub const BPF_LEN: u16 = 0x80;

/// ALU operation: add.
pub const BPF_ADD: u16 = 0x00;
/// ALU operation: subtract.
pub const BPF_SUB: u16 = 0x10;
/// ALU operation: multiply.
pub const BPF_MUL: u16 = 0x20;
/// ALU operation: divide.
pub const BPF_DIV: u16 = 0x30;
/// ALU operation: or.
pub const BPF_OR: u16 = 0x40;
/// ALU operation: and.
pub const BPF_AND: u16 = 0x50;
/// ALU operation: shift left.
pub const BPF_LSH: u16 = 0x60;
/// ALU operation: shift right.
pub const BPF_RSH: u16 = 0x70;
/// ALU operation: negate.
pub const BPF_NEG: u16 = 0x80;
/// ALU operation: modulo.
pub const BPF_MOD: u16 = 0x90;
/// ALU operation: exclusive or.
pub const BPF_XOR: u16 = 0xa0;

/// Jump: always, by `k`.
pub const BPF_JA: u16 = 0x00;
/// Jump if `A == src`.
pub const BPF_JEQ: u16 = 0x10;
/// Jump if `A > src` (unsigned).
pub const BPF_JGT: u16 = 0x20;
/// Jump if `A >= src` (unsigned).
pub const BPF_JGE: u16 = 0x30;
/// Jump if `A & src != 0`.
pub const BPF_JSET: u16 = 0x40;

/// Operand source: the constant `k`.
pub const BPF_K: u16 = 0x00;
/// Operand source: register X.
pub const BPF_X: u16 = 0x08;
/// Return operand: register A.
pub const BPF_A: u16 = 0x10;

/// Misc operation: copy A to X.
pub const BPF_TAX: u16 = 0x00;
/// Misc operation: copy X to A.
pub const BPF_TXA: u16 = 0x80;

/// The most instructions the kernel accepts in one program (`BPF_MAXINSNS`).
pub const BPF_MAXINSNS: usize = 4096;
/// Number of scratch memory slots (`BPF_MEMWORDS`).
pub const BPF_MEMWORDS: usize = 16;

/// Offset of `seccomp_data.nr`.
pub const SECCOMP_DATA_NR: u32 = 0;
/// Offset of `seccomp_data.arch`.
pub const SECCOMP_DATA_ARCH: u32 = 4;
/// Offset of `seccomp_data.instruction_pointer`.
pub const SECCOMP_DATA_IP: u32 = 8;
/// Offset of `seccomp_data.args[0]`; argument `i` starts at `16 + 8 * i`.
pub const SECCOMP_DATA_ARGS: u32 = 16;
/// Size of `struct seccomp_data`.
pub const SECCOMP_DATA_SIZE: u32 = 64;

/// One classic BPF instruction, laid out like the kernel's `struct sock_filter`.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SockFilter {
    /// Opcode: class, size/mode or operation, source.
    pub code: u16,
    /// Forward jump offset when the condition holds.
    pub jt: u8,
    /// Forward jump offset when it does not.
    pub jf: u8,
    /// Constant operand.
    pub k: u32,
}

impl SockFilter {
    /// A non-jump instruction (`BPF_STMT`).
    pub const fn stmt(code: u16, k: u32) -> SockFilter {
        SockFilter {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }

    /// A jump instruction (`BPF_JUMP`).
    pub const fn jump(code: u16, k: u32, jt: u8, jf: u8) -> SockFilter {
        SockFilter { code, jt, jf, k }
    }
}

// The kernel reads our instructions through `sock_fprog.filter`, so the layouts must agree.
const _: () =
    assert!(std::mem::size_of::<SockFilter>() == std::mem::size_of::<libc::sock_filter>());
const _: () =
    assert!(std::mem::align_of::<SockFilter>() == std::mem::align_of::<libc::sock_filter>());

/// What a seccomp filter sees of a syscall (`struct seccomp_data`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SeccompData {
    /// The syscall number, as the architecture numbers it.
    pub nr: i32,
    /// The `AUDIT_ARCH_*` value of the calling convention.
    pub arch: u32,
    /// Address of the syscall instruction.
    pub instruction_pointer: u64,
    /// The six syscall arguments, zero-extended to 64 bits.
    pub args: [u64; 6],
}

impl SeccompData {
    /// A call of syscall `nr` with `args` under `arch`'s calling convention.
    pub const fn new(arch: Arch, nr: u32, args: [u64; 6]) -> SeccompData {
        SeccompData {
            nr: nr as i32,
            arch: arch.audit_arch(),
            instruction_pointer: 0,
            args,
        }
    }

    /// The 32-bit word at byte `offset`, as a `BPF_LD|BPF_W|BPF_ABS` reads it. Supported
    /// architectures are little-endian, so an argument's low half comes first.
    pub fn word(&self, offset: u32) -> Option<u32> {
        if offset % 4 != 0 || offset >= SECCOMP_DATA_SIZE {
            return None;
        }
        let half = |v: u64, high: bool| if high { (v >> 32) as u32 } else { v as u32 };
        Some(match offset {
            SECCOMP_DATA_NR => self.nr as u32,
            SECCOMP_DATA_ARCH => self.arch,
            8 | 12 => half(self.instruction_pointer, offset == 12),
            _ => {
                let rel = offset - SECCOMP_DATA_ARGS;
                half(self.args[(rel / 8) as usize], rel % 8 == 4)
            }
        })
    }
}

/// A compiled, immutable seccomp program, ready to load.
///
/// The instructions never move once built, so the `sock_fprog` from
/// [`sock_fprog`](BpfProgram::sock_fprog) stays valid for as long as the program lives. That lets
/// a parent prepare everything before `clone`, and the child load it with one raw syscall and no
/// allocation (see [`load_raw`](BpfProgram::load_raw)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BpfProgram {
    insns: Box<[SockFilter]>,
}

impl BpfProgram {
    /// Wraps instructions, refusing more than [`BPF_MAXINSNS`] (or none).
    pub fn new(insns: Vec<SockFilter>) -> Result<BpfProgram> {
        if insns.is_empty() || insns.len() > BPF_MAXINSNS {
            return Err(Error::ProgramTooLong {
                len: insns.len(),
                max: BPF_MAXINSNS,
            });
        }
        Ok(BpfProgram {
            insns: insns.into_boxed_slice(),
        })
    }

    /// The instructions.
    pub fn instructions(&self) -> &[SockFilter] {
        &self.insns
    }

    /// Number of instructions.
    pub fn len(&self) -> usize {
        self.insns.len()
    }

    /// Always false: a program has at least one instruction.
    pub fn is_empty(&self) -> bool {
        self.insns.is_empty()
    }

    /// The `struct sock_fprog` to pass to `seccomp(SECCOMP_SET_MODE_FILTER, flags, &fprog)`. It
    /// points into `self`, so it must not outlive it; the kernel only reads through the pointer.
    pub fn sock_fprog(&self) -> libc::sock_fprog {
        libc::sock_fprog {
            // `new` bounds the length by BPF_MAXINSNS, which fits in u16.
            len: self.insns.len() as u16,
            filter: self.insns.as_ptr().cast::<libc::sock_filter>().cast_mut(),
        }
    }

    /// Runs the program on `data`, returning what the kernel would act on.
    pub fn interpret(&self, data: &SeccompData) -> Result<u32> {
        interpret(&self.insns, data)
    }
}

/// Runs a classic BPF program as the seccomp machine would, returning its `RET` value.
///
/// Accepts the subset the kernel's seccomp checker allows: word loads from `seccomp_data`, `LEN`,
/// immediates and scratch memory, all ALU operations, all jumps, `TAX`/`TXA` and returns. Errors
/// instead of guessing on anything else, on out-of-range offsets and jumps, on division by zero,
/// and on running past the end.
pub fn interpret(program: &[SockFilter], data: &SeccompData) -> Result<u32> {
    interpret_counting(program, data).map(|(ret, _)| ret)
}

/// Like [`interpret`], also returning how many instructions ran: the cost of the call, which
/// is what the balanced layout keeps logarithmic in the number of rules.
pub fn interpret_counting(program: &[SockFilter], data: &SeccompData) -> Result<(u32, usize)> {
    let mut steps = 0usize;
    let mut a: u32 = 0;
    let mut x: u32 = 0;
    let mut mem = [0u32; BPF_MEMWORDS];
    let mut pc = 0usize;
    let bad = |pc: usize, reason: &'static str| Error::InvalidBpf { pc, reason };
    // Every jump goes forward, so a program of n instructions executes at most n of them.
    loop {
        let insn = *program.get(pc).ok_or(bad(pc, "ran past the end"))?;
        steps += 1;
        let k = insn.k;
        let slot = |k: u32| {
            let i = k as usize;
            if i < BPF_MEMWORDS {
                Ok(i)
            } else {
                Err(bad(pc, "scratch slot out of range"))
            }
        };
        let next = pc + 1;
        match insn.code & 0x07 {
            BPF_LD | BPF_LDX => {
                let v = match (insn.code & 0xe0, insn.code & 0x18) {
                    (BPF_ABS, BPF_W) if insn.code & 0x07 == BPF_LD => {
                        data.word(k).ok_or(bad(pc, "load outside seccomp_data"))?
                    }
                    (BPF_IMM, BPF_W) => k,
                    (BPF_MEM, BPF_W) => mem[slot(k)?],
                    (BPF_LEN, BPF_W) => SECCOMP_DATA_SIZE,
                    _ => return Err(bad(pc, "unsupported load")),
                };
                if insn.code & 0x07 == BPF_LD {
                    a = v;
                } else {
                    x = v;
                }
                pc = next;
            }
            BPF_ST => {
                mem[slot(k)?] = a;
                pc = next;
            }
            BPF_STX => {
                mem[slot(k)?] = x;
                pc = next;
            }
            BPF_ALU => {
                let src = if insn.code & BPF_X != 0 { x } else { k };
                a = match insn.code & 0xf0 {
                    BPF_ADD => a.wrapping_add(src),
                    BPF_SUB => a.wrapping_sub(src),
                    BPF_MUL => a.wrapping_mul(src),
                    BPF_DIV => a.checked_div(src).ok_or(bad(pc, "division by zero"))?,
                    BPF_MOD => a.checked_rem(src).ok_or(bad(pc, "division by zero"))?,
                    BPF_OR => a | src,
                    BPF_AND => a & src,
                    BPF_XOR => a ^ src,
                    BPF_LSH => a.checked_shl(src).unwrap_or(0),
                    BPF_RSH => a.checked_shr(src).unwrap_or(0),
                    BPF_NEG => a.wrapping_neg(),
                    _ => return Err(bad(pc, "unknown ALU operation")),
                };
                pc = next;
            }
            BPF_JMP => {
                let src = if insn.code & BPF_X != 0 { x } else { k };
                let op = insn.code & 0xf0;
                let target = if op == BPF_JA {
                    next.checked_add(k as usize)
                } else {
                    let taken = match op {
                        BPF_JEQ => a == src,
                        BPF_JGT => a > src,
                        BPF_JGE => a >= src,
                        BPF_JSET => a & src != 0,
                        _ => return Err(bad(pc, "unknown jump")),
                    };
                    Some(next + usize::from(if taken { insn.jt } else { insn.jf }))
                };
                pc = match target {
                    Some(t) if t < program.len() => t,
                    _ => return Err(bad(pc, "jump out of the program")),
                };
            }
            BPF_RET => {
                return match insn.code & 0x18 {
                    BPF_K => Ok((k, steps)),
                    BPF_A => Ok((a, steps)),
                    _ => Err(bad(pc, "unsupported return")),
                };
            }
            _ => {
                match insn.code & 0xf8 {
                    BPF_TAX => x = a,
                    BPF_TXA => a = x,
                    _ => return Err(bad(pc, "unknown misc operation")),
                }
                pc = next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_are_little_endian_halves() {
        let d = SeccompData {
            nr: -1,
            arch: 7,
            instruction_pointer: 0x1111_2222_3333_4444,
            args: [0xaaaa_bbbb_cccc_dddd, 0, 0, 0, 0, 0x0102_0304_0506_0708],
        };
        assert_eq!(d.word(0), Some(u32::MAX));
        assert_eq!(d.word(4), Some(7));
        assert_eq!(d.word(8), Some(0x3333_4444));
        assert_eq!(d.word(12), Some(0x1111_2222));
        assert_eq!(d.word(16), Some(0xcccc_dddd));
        assert_eq!(d.word(20), Some(0xaaaa_bbbb));
        assert_eq!(d.word(60), Some(0x0102_0304));
        assert_eq!(d.word(64), None);
        assert_eq!(d.word(2), None);
    }

    #[test]
    fn interpreter_basics() {
        let prog = [
            SockFilter::stmt(BPF_LD | BPF_W | BPF_ABS, SECCOMP_DATA_NR),
            SockFilter::jump(BPF_JMP | BPF_JEQ | BPF_K, 5, 0, 3),
            SockFilter::stmt(BPF_ST, 3),
            SockFilter::stmt(BPF_LDX | BPF_W | BPF_MEM, 3),
            SockFilter::stmt(BPF_MISC | BPF_TXA, 0),
            SockFilter::stmt(BPF_ALU | BPF_ADD | BPF_K, 1),
            SockFilter::stmt(BPF_RET | BPF_A, 0),
        ];
        let d = SeccompData {
            nr: 5,
            ..Default::default()
        };
        // nr 5 goes through scratch memory and X back into A, then adds one.
        assert_eq!(interpret(&prog, &d).ok(), Some(6));
        let d = SeccompData {
            nr: 9,
            ..Default::default()
        };
        assert_eq!(interpret(&prog, &d).ok(), Some(10));
        let bad = [SockFilter::jump(BPF_JMP | BPF_JA, 5, 0, 0)];
        assert!(matches!(
            interpret(&bad, &d),
            Err(Error::InvalidBpf { pc: 0, .. })
        ));
        assert!(interpret(&[], &d).is_err());
    }
}
