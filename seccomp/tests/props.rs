//! Property: for arbitrary rule sets and calls, both compiled layouts return exactly what the
//! rules define, as computed directly by `Filter::evaluate`.

use palisade_seccomp::{Action, Arch, CmpOp, Cond, Error, Filter, Rule, SeccompData};
use proptest::prelude::*;

/// Values around the 32-bit boundaries, where a wrong high/low split would show.
const EDGES: [u64; 12] = [
    0,
    1,
    2,
    42,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    0x1_0000_0000,
    0x1_0000_0001,
    0x8000_0000_0000_0000,
    u64::MAX - 1,
    u64::MAX,
];

fn value() -> impl Strategy<Value = u64> {
    prop_oneof![
        3 => proptest::sample::select(&EDGES[..]),
        1 => any::<u64>(),
    ]
}

fn nr() -> impl Strategy<Value = u32> {
    prop_oneof![
        6 => 0u32..24,
        1 => 0u32..600,
        1 => proptest::sample::select(&[0x3fff_ffffu32, 0x4000_0001, 0x8000_0000, u32::MAX][..]),
    ]
}

fn arch() -> impl Strategy<Value = Arch> {
    proptest::sample::select(&Arch::ALL[..])
}

fn action() -> impl Strategy<Value = Action> {
    prop_oneof![
        3 => Just(Action::Allow),
        2 => (0u16..4096).prop_map(Action::Errno),
        1 => Just(Action::KillProcess),
        1 => Just(Action::KillThread),
        1 => Just(Action::Trap),
        1 => Just(Action::Log),
        1 => any::<u16>().prop_map(Action::Trace),
        1 => Just(Action::UserNotify),
    ]
}

fn op() -> impl Strategy<Value = CmpOp> {
    prop_oneof![
        Just(CmpOp::Eq),
        Just(CmpOp::Ne),
        Just(CmpOp::Lt),
        Just(CmpOp::Le),
        Just(CmpOp::Gt),
        Just(CmpOp::Ge),
        value().prop_map(CmpOp::MaskedEq),
    ]
}

fn cond() -> impl Strategy<Value = Cond> {
    (0u8..6, op(), value()).prop_map(|(arg, op, v)| {
        // Keep masked values reachable most of the time.
        let v = match op {
            CmpOp::MaskedEq(m) if v % 4 != 0 => v & m,
            _ => v,
        };
        Cond::new(arg, op, v).expect("index in range")
    })
}

fn rule(max_conds: usize) -> impl Strategy<Value = Rule> {
    (
        nr(),
        proptest::collection::vec(cond(), 0..=max_conds),
        action(),
    )
        .prop_map(|(nr, conds, action)| {
            conds
                .into_iter()
                .fold(Rule::with_nr(nr, action), |r, c| r.when(c))
        })
}

fn call() -> impl Strategy<Value = (u8, u32, [u64; 6])> {
    (0u8..8, nr(), proptest::array::uniform6(value()))
}

fn filter(rules: impl Strategy<Value = Vec<Rule>>) -> impl Strategy<Value = Filter> {
    (arch(), action(), action(), rules).prop_map(|(arch, default, foreign, rules)| {
        let mut f = Filter::new(arch, default);
        f.set_foreign_arch_action(foreign);
        for r in rules {
            f.add(r).expect("numbered rules always resolve");
        }
        f
    })
}

fn check(f: &Filter, calls: &[(u8, u32, [u64; 6])]) -> Result<(), TestCaseError> {
    let programs = match (f.compile(), f.compile_linear()) {
        (Ok(b), Ok(l)) => [b, l],
        (Err(Error::ProgramTooLong { .. }), _) | (_, Err(Error::ProgramTooLong { .. })) => {
            return Err(TestCaseError::reject("program over BPF_MAXINSNS"))
        }
        (Err(e), _) | (_, Err(e)) => return Err(TestCaseError::fail(e.to_string())),
    };
    let other = match f.arch() {
        Arch::X86_64 => Arch::Aarch64,
        _ => Arch::X86_64,
    };
    for &(which, nr, args) in calls {
        let mut data = SeccompData::new(f.arch(), nr, args);
        // Mostly the filter's own architecture, sometimes a foreign or unknown one.
        match which {
            6 => data.arch = other.audit_arch(),
            7 => data.arch = 0x4000_0003,
            _ => {}
        }
        let want = f.evaluate(&data).ret();
        for p in &programs {
            let got = p
                .interpret(&data)
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
            prop_assert_eq!(got, want, "{:?}", data);
        }
    }
    Ok(())
}

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // Failures are printed with the minimal input; do not write files into the tree.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(384))]

    #[test]
    fn compiled_matches_rules(
        f in filter(proptest::collection::vec(rule(3), 0..40)),
        calls in proptest::collection::vec(call(), 24),
    ) {
        check(&f, &calls)?;
    }
}

proptest! {
    #![proptest_config(config(48))]

    /// Big filters, whose programs need long jumps.
    #[test]
    fn large_filters_match_rules(
        f in filter(proptest::collection::vec(rule(2), 120..260)),
        calls in proptest::collection::vec(call(), 64),
    ) {
        check(&f, &calls)?;
    }
}
