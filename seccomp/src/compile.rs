//! Compilation of a [`Filter`] to classic BPF.
//!
//! The program first checks `seccomp_data.arch` (and, on x86-64, the x32 bit), then finds the
//! syscall. The balanced layout merges runs of syscall numbers that share an unconditional action
//! into ranges and binary-searches them with `JGE`, so a profile of a few hundred syscalls costs
//! about ten comparisons per call instead of hundreds. Syscalls with argument conditions end in a
//! chain of 32-bit comparisons on the two halves of each 64-bit argument.
//!
//! Code is generated back to front: every jump goes forward, so when a jump is emitted its
//! targets already exist and their distance is known. Classic BPF jump offsets are 8 bits; a
//! target further than 255 instructions is reached through a trampoline placed right after the
//! jump, either a copy of the target when it is a `RET` or an unconditional `JA`, whose offset is
//! 32 bits.

use std::collections::{BTreeMap, HashMap};

use crate::arch::{Arch, X32_SYSCALL_BIT};
use crate::bpf::*;
use crate::error::Result;
use crate::rule::{Action, CmpOp, Cond, Filter, ResolvedRule};

/// How the syscall dispatch is laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// Binary search over sorted syscall ranges.
    Balanced,
    /// One `JEQ` per syscall, in rule order.
    Linear,
}

/// An instruction's index in the reversed program: 0 is the program's last instruction.
type Label = usize;

/// The largest forward distance a conditional jump can encode.
const MAX_JUMP: usize = u8::MAX as usize;
/// How far back an already emitted `RET` is reused instead of emitting another; beyond this the
/// jump would need a trampoline anyway, and a fresh `RET` costs the same and is faster.
const RET_REUSE: usize = 200;

/// What happens for one syscall number (or range of them).
#[derive(Debug, Clone, PartialEq, Eq)]
enum Leaf<'a> {
    /// One action regardless of arguments.
    Ret(Action),
    /// Conditional rules tried in order, then a fallback action.
    Chain(Vec<&'a ResolvedRule>, Action),
}

impl<'a> Leaf<'a> {
    /// The effective behaviour of the rules of one syscall. Rules after the first unconditional
    /// one can never match, so they are dropped.
    fn of(rules: &[&'a ResolvedRule], default: Action) -> Leaf<'a> {
        match rules.iter().position(|r| r.conds.is_empty()) {
            Some(0) => Leaf::Ret(rules[0].action),
            Some(i) => Leaf::Chain(rules[..i].to_vec(), rules[i].action),
            None if rules.is_empty() => Leaf::Ret(default),
            None => Leaf::Chain(rules.to_vec(), default),
        }
    }
}

struct Emitter {
    rev: Vec<SockFilter>,
    rets: HashMap<u32, Label>,
}

impl Emitter {
    fn push(&mut self, insn: SockFilter) -> Label {
        self.rev.push(insn);
        self.rev.len() - 1
    }

    /// The offset a jump emitted next would need to reach `target`.
    fn distance(&self, target: Label) -> usize {
        self.rev.len() - target - 1
    }

    fn ret(&mut self, action: Action) -> Label {
        let k = action.ret();
        if let Some(&label) = self.rets.get(&k) {
            if self.distance(label) <= RET_REUSE {
                return label;
            }
        }
        let label = self.push(SockFilter::stmt(BPF_RET | BPF_K, k));
        self.rets.insert(k, label);
        label
    }

    /// Emits an instruction that continues at `target`: a copy of it when it is a return, else
    /// a `JA`.
    fn trampoline(&mut self, target: Label) -> Label {
        let insn = self.rev[target];
        if insn.code == BPF_RET | BPF_K {
            self.push(insn)
        } else {
            let k = self.distance(target) as u32;
            self.push(SockFilter::stmt(BPF_JMP | BPF_JA | BPF_K, k))
        }
    }

    /// Emits a straight-line instruction whose successor is `next`.
    fn stmt(&mut self, code: u16, k: u32, next: Label) -> Label {
        if self.rev.len() != next + 1 {
            self.trampoline(next);
        }
        self.push(SockFilter::stmt(code, k))
    }

    /// Emits a conditional jump to `jt` or `jf`, with trampolines for distant targets.
    fn jump(&mut self, op: u16, k: u32, mut jt: Label, mut jf: Label) -> Label {
        loop {
            let (dt, df) = (self.distance(jt), self.distance(jf));
            if dt > MAX_JUMP && dt >= df {
                let same = jt == jf;
                jt = self.trampoline(jt);
                if same {
                    jf = jt;
                }
            } else if df > MAX_JUMP {
                jf = self.trampoline(jf);
            } else {
                return self.push(SockFilter::jump(
                    BPF_JMP | op | BPF_K,
                    k,
                    dt as u8,
                    df as u8,
                ));
            }
        }
    }

    /// Emits the test of one condition, continuing at `t` when it holds and `f` when not.
    ///
    /// The argument is 64 bits but BPF registers are 32: the high halves decide unless they are
    /// equal, then the low halves decide. All comparisons are unsigned, like the kernel's `u64`.
    fn cond(&mut self, c: &Cond, t: Label, f: Label) -> Label {
        let lo_off = SECCOMP_DATA_ARGS + 8 * u32::from(c.arg());
        let hi_off = lo_off + 4;
        let ld = BPF_LD | BPF_W | BPF_ABS;
        let v = c.value();
        let (vh, vl) = ((v >> 32) as u32, v as u32);
        match c.op() {
            CmpOp::Eq | CmpOp::Ne => {
                let (t, f) = if c.op() == CmpOp::Eq { (t, f) } else { (f, t) };
                let j = self.jump(BPF_JEQ, vl, t, f);
                let l = self.stmt(ld, lo_off, j);
                let j = self.jump(BPF_JEQ, vh, l, f);
                self.stmt(ld, hi_off, j)
            }
            CmpOp::MaskedEq(m) => {
                let (mh, ml) = ((m >> 32) as u32, m as u32);
                let low = self.masked_word(lo_off, ml, vl, t, f);
                if mh == 0 && vh == 0 {
                    // The high half of the masked argument is always 0, which matches.
                    low
                } else {
                    self.masked_word(hi_off, mh, vh, low, f)
                }
            }
            CmpOp::Gt | CmpOp::Ge | CmpOp::Lt | CmpOp::Le => {
                // Gt/Ge jump to `t` on a larger argument; Lt/Le are their negations.
                let (low_op, t, f) = match c.op() {
                    CmpOp::Gt => (BPF_JGT, t, f),
                    CmpOp::Ge => (BPF_JGE, t, f),
                    CmpOp::Lt => (BPF_JGE, f, t),
                    _ => (BPF_JGT, f, t),
                };
                let j = self.jump(low_op, vl, t, f);
                let l = self.stmt(ld, lo_off, j);
                let eq = self.jump(BPF_JEQ, vh, l, f);
                let gt = self.jump(BPF_JGT, vh, t, eq);
                self.stmt(ld, hi_off, gt)
            }
        }
    }

    /// `(word & mask) == value`, skipping the `AND` when the mask keeps every bit.
    fn masked_word(&mut self, off: u32, mask: u32, value: u32, t: Label, f: Label) -> Label {
        if value & !mask != 0 {
            // The masked word can never have a bit the mask clears.
            return f;
        }
        let j = self.jump(BPF_JEQ, value, t, f);
        let j = if mask == u32::MAX {
            j
        } else {
            self.stmt(BPF_ALU | BPF_AND | BPF_K, mask, j)
        };
        self.stmt(BPF_LD | BPF_W | BPF_ABS, off, j)
    }

    fn leaf(&mut self, leaf: &Leaf<'_>) -> Label {
        match leaf {
            Leaf::Ret(action) => self.ret(*action),
            Leaf::Chain(rules, fallback) => {
                let mut next = self.ret(*fallback);
                for rule in rules.iter().rev() {
                    let mut ok = self.ret(rule.action);
                    for c in rule.conds.iter().rev() {
                        ok = self.cond(c, ok, next);
                    }
                    next = ok;
                }
                next
            }
        }
    }

    /// Binary search over `segs`, which cover consecutive syscall number ranges, the first
    /// starting where the caller already knows `nr` is.
    fn tree(&mut self, segs: &[(u32, Leaf<'_>)]) -> Label {
        if let [(_, leaf)] = segs {
            return self.leaf(leaf);
        }
        let mid = segs.len() / 2;
        let upper = self.tree(&segs[mid..]);
        let lower = self.tree(&segs[..mid]);
        self.jump(BPF_JGE, segs[mid].0, upper, lower)
    }
}

/// Splits the number space into ranges with one behaviour each, merging neighbours that end in
/// the same unconditional action (including the gaps between ruled syscalls).
fn segments<'a>(
    groups: &BTreeMap<u32, Vec<&'a ResolvedRule>>,
    default: Action,
) -> Vec<(u32, Leaf<'a>)> {
    let mut segs: Vec<(u32, Leaf<'a>)> = Vec::new();
    let mut push = |lo: u32, leaf: Leaf<'a>| {
        if let Some((_, last)) = segs.last() {
            if matches!(last, Leaf::Ret(_)) && *last == leaf {
                return;
            }
        }
        segs.push((lo, leaf));
    };
    let mut next = Some(0u32);
    for (&nr, rules) in groups {
        if let Some(start) = next {
            if nr > start {
                push(start, Leaf::Ret(default));
            }
        }
        push(nr, Leaf::of(rules, default));
        next = nr.checked_add(1);
    }
    if let Some(start) = next {
        push(start, Leaf::Ret(default));
    }
    segs
}

impl Filter {
    /// Compiles to a BPF program that finds the syscall by a balanced binary search.
    pub fn compile(&self) -> Result<BpfProgram> {
        compile(self, Layout::Balanced)
    }

    /// Compiles to a BPF program that tests syscalls one after another, in rule order. Same
    /// results as [`compile`](Filter::compile), slower for large filters; meant for comparison.
    pub fn compile_linear(&self) -> Result<BpfProgram> {
        compile(self, Layout::Linear)
    }
}

fn compile(filter: &Filter, layout: Layout) -> Result<BpfProgram> {
    let default = filter.default_action();
    let foreign = filter.foreign_arch_action();
    let mut e = Emitter {
        rev: Vec::new(),
        rets: HashMap::new(),
    };
    let dispatch = match layout {
        Layout::Balanced => {
            let mut groups: BTreeMap<u32, Vec<&ResolvedRule>> = BTreeMap::new();
            for r in &filter.rules {
                groups.entry(r.nr).or_default().push(r);
            }
            e.tree(&segments(&groups, default))
        }
        Layout::Linear => {
            let mut order: Vec<(u32, Vec<&ResolvedRule>)> = Vec::new();
            for r in &filter.rules {
                match order.iter_mut().find(|(nr, _)| *nr == r.nr) {
                    Some((_, rules)) => rules.push(r),
                    None => order.push((r.nr, vec![r])),
                }
            }
            let mut next = e.ret(default);
            for (nr, rules) in order.iter().rev() {
                let body = e.leaf(&Leaf::of(rules, default));
                next = e.jump(BPF_JEQ, *nr, body, next);
            }
            next
        }
    };
    let checked = if filter.arch() == Arch::X86_64 {
        let bad = e.ret(foreign);
        e.jump(BPF_JSET, X32_SYSCALL_BIT, bad, dispatch)
    } else {
        dispatch
    };
    let load_nr = e.stmt(BPF_LD | BPF_W | BPF_ABS, SECCOMP_DATA_NR, checked);
    let bad = e.ret(foreign);
    let arch_ok = e.jump(BPF_JEQ, filter.arch().audit_arch(), load_nr, bad);
    e.stmt(BPF_LD | BPF_W | BPF_ABS, SECCOMP_DATA_ARCH, arch_ok);
    let mut insns = e.rev;
    insns.reverse();
    BpfProgram::new(insns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rule::Rule;

    const EPERM: Action = Action::Errno(1);

    fn data(arch: Arch, nr: u32, args: [u64; 6]) -> SeccompData {
        SeccompData::new(arch, nr, args)
    }

    fn check(filter: &Filter, samples: &[SeccompData]) {
        for prog in [filter.compile().unwrap(), filter.compile_linear().unwrap()] {
            for d in samples {
                assert_eq!(
                    prog.interpret(d).unwrap(),
                    filter.evaluate(d).ret(),
                    "{d:?}"
                );
            }
        }
    }

    #[test]
    fn arch_and_x32_checks() {
        let mut f = Filter::new(Arch::X86_64, EPERM);
        f.add(Rule::new("read", Action::Allow)).unwrap();
        let p = f.compile().unwrap();
        let run = |d: &SeccompData| Action::from_ret(p.interpret(d).unwrap());
        assert_eq!(run(&data(Arch::X86_64, 0, [0; 6])), Some(Action::Allow));
        assert_eq!(run(&data(Arch::X86_64, 1, [0; 6])), Some(EPERM));
        assert_eq!(
            run(&data(Arch::X86_64, X32_SYSCALL_BIT, [0; 6])),
            Some(Action::KillProcess)
        );
        assert_eq!(
            run(&data(Arch::Aarch64, 0, [0; 6])),
            Some(Action::KillProcess)
        );
        f.set_foreign_arch_action(Action::Errno(38));
        let p = f.compile().unwrap();
        assert_eq!(
            p.interpret(&data(Arch::Aarch64, 0, [0; 6])).unwrap(),
            Action::Errno(38).ret()
        );
    }

    #[test]
    fn balanced_is_logarithmic() {
        let mut f = Filter::new(Arch::X86_64, EPERM);
        for nr in (0..400).step_by(2) {
            f.add(Rule::with_nr(nr, Action::Allow)).unwrap();
        }
        let balanced = f.compile().unwrap();
        let linear = f.compile_linear().unwrap();
        assert!(balanced.len() < 600, "{}", balanced.len());
        assert!(linear.len() > 200);
        let samples: Vec<_> = (0..402).map(|nr| data(Arch::X86_64, nr, [0; 6])).collect();
        check(&f, &samples);
        let steps = |p: &BpfProgram, d| interpret_counting(p.instructions(), d).unwrap().1;
        let worst = |p: &BpfProgram| samples.iter().map(|d| steps(p, d)).max().unwrap_or(0);
        // 400 ranges: about log2(400) = 9 comparisons after the 4-instruction prologue.
        assert!(worst(&balanced) <= 15, "{}", worst(&balanced));
        assert!(worst(&linear) >= 200);
    }

    #[test]
    fn far_jumps_get_trampolines() {
        // Conditional rules on many syscalls make subtrees and chains longer than 255
        // instructions, which needs long jumps in both layouts.
        let mut f = Filter::new(Arch::Aarch64, Action::KillThread);
        let mut samples = Vec::new();
        for nr in 0..120u32 {
            let v = u64::from(nr) << 33 | 7;
            f.add(
                Rule::with_nr(nr, Action::Errno(nr as u16))
                    .when(Cond::new((nr % 6) as u8, CmpOp::Eq, v).unwrap())
                    .when(Cond::new(5, CmpOp::Le, u64::MAX - u64::from(nr)).unwrap()),
            )
            .unwrap();
            f.add(
                Rule::with_nr(nr, Action::Trace(nr as u16))
                    .when(Cond::new(1, CmpOp::Gt, 9).unwrap()),
            )
            .unwrap();
            let mut args = [0u64; 6];
            args[(nr % 6) as usize] = v;
            samples.push(data(Arch::Aarch64, nr, args));
            args[5] = u64::MAX;
            samples.push(data(Arch::Aarch64, nr, args));
            samples.push(data(Arch::Aarch64, nr, [0, 10, 0, 0, 0, 0]));
            samples.push(data(Arch::Aarch64, nr, [0; 6]));
        }
        let p = f.compile().unwrap();
        assert!(p.len() > 1000);
        assert!(p
            .instructions()
            .iter()
            .any(|i| i.code == BPF_JMP | BPF_JA | BPF_K && i.k > 255));
        check(&f, &samples);
    }

    #[test]
    fn too_long_is_a_typed_error() {
        let mut f = Filter::new(Arch::X86_64, EPERM);
        for nr in 0..2000u32 {
            f.add(Rule::with_nr(nr, Action::Allow).when(Cond::new(0, CmpOp::Eq, 1).unwrap()))
                .unwrap();
        }
        assert!(matches!(
            f.compile(),
            Err(crate::Error::ProgramTooLong { max: 4096, .. })
        ));
    }

    #[test]
    fn comparisons_on_64_bit_halves() {
        let mut f = Filter::new(Arch::X86_64, EPERM);
        let edges = [
            0u64,
            1,
            0xffff_ffff,
            0x1_0000_0000,
            0x1_0000_0001,
            u64::MAX - 1,
            u64::MAX,
        ];
        let ops = [
            CmpOp::Eq,
            CmpOp::Ne,
            CmpOp::Lt,
            CmpOp::Le,
            CmpOp::Gt,
            CmpOp::Ge,
        ];
        let mut nr = 0;
        for &v in &edges {
            for op in ops {
                f.add(Rule::with_nr(nr, Action::Allow).when(Cond::new(2, op, v).unwrap()))
                    .unwrap();
                nr += 1;
            }
            f.add(
                Rule::with_nr(nr, Action::Allow).when(
                    Cond::new(
                        3,
                        CmpOp::MaskedEq(0xf0f0_0000_ffff_0000),
                        v & 0xf0f0_0000_ffff_0000,
                    )
                    .unwrap(),
                ),
            )
            .unwrap();
            nr += 1;
        }
        let mut samples = Vec::new();
        for n in 0..nr {
            for &a in &edges {
                for d in [0u64, 1, 0x1_0000_0000] {
                    let x = a.wrapping_add(d);
                    samples.push(data(Arch::X86_64, n, [0, 0, x, x, 0, 0]));
                    let x = a.wrapping_sub(d);
                    samples.push(data(Arch::X86_64, n, [0, 0, x, x, 0, 0]));
                }
            }
        }
        check(&f, &samples);
    }
}
