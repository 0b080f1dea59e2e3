//! Fuzz target: the binary translator (`translator::translate`) and the
//! code it emits, in-process.
//!
//! Every corpus file in `tests/corpus/translator/` (raw 32-bit guest code)
//! is replayed, then instruction streams are generated for the time budget
//! (`NESTMON_FUZZ_SECONDS`, see docs/fuzzing.md): sequences of instructions
//! built from x86's encoding grammar (legacy prefixes, the one-, two- and
//! three-byte opcode maps, VEX, XOP and EVEX escapes, ModRM forms that name
//! registers, `[disp32]` in guest RAM or SIB bytes, then displacement and
//! immediate bytes), optionally followed by random bytes. Properties:
//!
//! - translation never panics, and never produces code that fails the
//!   independent confinement check (`translator::verify`): the only errors
//!   allowed are forms the translator documents as unsupported;
//! - a translation's pc map starts at the unit's EIP and ascends, and every
//!   chainable site lies inside the emitted code;
//! - run as a guest, with every general register naming a canary mapping
//!   below 4 GiB in this process (or with mixed register values), the code
//!   never changes the canary, and the vCPU always stops: at the exit port,
//!   with a guest exception or a report, or by the watchdog.

#[path = "support/fuzz.rs"]
mod fuzz;
#[path = "support/sandbox.rs"]
mod sandbox;

use fuzz::{Target, Watchdog};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use sandbox::{Canary, CODE, STUBS};
use std::sync::OnceLock;
use std::time::Duration;
use translator::{translate, GuestIsa, Mode, TranslateError, UnitRequest};

const TARGET: Target = Target {
    name: "fuzz_translator",
    corpus: "translator",
    extension: "bin",
};

/// How long a generated guest may run before the watchdog stops it.
const GUEST_LIMIT: Duration = Duration::from_millis(300);

// ----- the encoding grammar ----------------------------------------------

fn prefixes() -> impl Strategy<Value = Vec<u8>> {
    vec(
        select(
            &[
                0x66u8, 0x67, 0xf2, 0xf3, 0xf0, 0x26, 0x2e, 0x36, 0x3e, 0x64, 0x65, 0x9b,
            ][..],
        ),
        0..3,
    )
}

/// The opcode map escape: none, 0F, 0F 38, 0F 3A, VEX2, VEX3, XOP, EVEX.
fn escape() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => Just(vec![]),
        4 => Just(vec![0x0f]),
        1 => Just(vec![0x0f, 0x38]),
        1 => Just(vec![0x0f, 0x3a]),
        1 => any::<u8>().prop_map(|b| vec![0xc5, b | 0x80]),
        1 => (1u8..4, any::<u8>()).prop_map(|(m, b)| vec![0xc4, 0xe0 | m, b]),
        1 => (8u8..11, any::<u8>()).prop_map(|(m, b)| vec![0x8f, 0xe0 | m, b]),
        1 => (select(&[1u8, 2, 3, 5, 6][..]), any::<u8>(), any::<u8>())
            .prop_map(|(m, p1, p2)| vec![0x62, 0xf0 | m, p1 | 0x04, p2]),
    ]
}

/// A ModRM byte and what follows it: register forms, `[disp32]` naming
/// guest RAM, SIB forms, or anything.
fn modrm_and_tail() -> impl Strategy<Value = Vec<u8>> {
    let data = sandbox_data().to_le_bytes();
    prop_oneof![
        3 => (0u8..8, 0u8..8).prop_map(|(reg, rm)| vec![0xc0 | reg << 3 | rm]),
        3 => (0u8..8).prop_map(move |reg| {
            let mut v = vec![0x05 | reg << 3];
            v.extend_from_slice(&data);
            v
        }),
        1 => (0u8..8, any::<u8>()).prop_map(move |(reg, sib)| {
            let mut v = vec![0x04 | reg << 3, sib];
            v.extend_from_slice(&data);
            v
        }),
        2 => vec(any::<u8>(), 1..6),
    ]
}

/// A guest-RAM address for explicit memory operands.
fn sandbox_data() -> u32 {
    0x4000
}

/// One instruction: prefixes, escape, opcode, ModRM tail, immediate bytes.
fn instruction() -> impl Strategy<Value = Vec<u8>> {
    (
        prefixes(),
        escape(),
        any::<u8>(),
        modrm_and_tail(),
        vec(any::<u8>(), 0..5),
    )
        .prop_map(|(p, e, op, m, imm)| [p, e, vec![op], m, imm].concat())
}

/// A code stream: instructions, then maybe raw bytes.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    (vec(instruction(), 1..12), vec(any::<u8>(), 0..8))
        .prop_map(|(insns, tail)| [insns.concat(), tail].concat())
}

/// Register values for a guest run: all naming the canary, or a mix of the
/// canary, guest RAM, boundaries and random values.
#[derive(Clone, Copy, Debug)]
enum Registers {
    AllCanary,
    Mixed([u32; 8]),
}

fn registers() -> impl Strategy<Value = Registers> {
    let value = prop_oneof![
        Just(0u32),
        Just(0x4000),
        Just(0xffff_fffc),
        Just(u32::MAX),
        any::<u32>(),
    ];
    prop_oneof![
        1 => Just(Registers::AllCanary),
        1 => proptest::array::uniform8(value).prop_map(Registers::Mixed),
    ]
}

// ----- properties ----------------------------------------------------------

/// Inline data segment loads offered to flat units: a flat data segment
/// (the unit's own mode) and a null selector (another mode), for ES, DS,
/// FS and GS.
const SEGMENT_LOADS: [(u8, translator::translate::InlineSegmentLoad); 8] = {
    use translator::translate::InlineSegmentLoad;
    const FLAT: InlineSegmentLoad = InlineSegmentLoad {
        selector: 0x7b,
        descriptor: Some((0xc1c0_1078, 0x00cf_f300_0000_ffff)),
        base: 0,
        ranges: [0, 0xffff_ffff, 0, 0xffff_ffff],
        mode: 3,
        tag: 0,
        any_base: true,
        blocks_iret: false,
    };
    const NULL: InlineSegmentLoad = InlineSegmentLoad {
        selector: 0,
        descriptor: None,
        base: 0,
        ranges: [1, 0, 1, 0],
        mode: 3 | 1 << 13,
        tag: 1,
        any_base: false,
        blocks_iret: false,
    };
    [
        (0, FLAT),
        (0, NULL),
        (3, FLAT),
        (3, NULL),
        (4, FLAT),
        (4, NULL),
        (5, FLAT),
        (5, NULL),
    ]
};

/// Inline privilege changes as a monitor would offer them.
const TRANSITIONS: translator::translate::Transitions = {
    let to = translator::translate::InlineTransition {
        eip: 0xc010_0000,
        esp: 0xc000_8000,
        selectors: [0x10, 0x18],
        ranges: [[0, 0xffff_ffff, 1, 0], [0, 0xffff_ffff, 0, 0xffff_ffff]],
        mode: 3,
        tag: 7,
        view: 1,
    };
    translator::translate::Transitions {
        sysenter: Some(to),
        sysexit: Some(to),
    }
};

/// Translates `code` placed at `eip` for every mode and instruction set,
/// checking the translation properties.
fn check_translation(code: &[u8], eip: u32) -> Result<(), String> {
    let in_page = 0x1000 - (eip & 0xfff) as usize;
    let mut bytes = code.to_vec();
    bytes.resize(in_page.max(bytes.len()) + 15, 0x90);
    let widest = GuestIsa::with(GuestIsa::TRANSLATABLE).expect("offerable");
    // The page's bytes before `eip`: the stream again, backwards (a
    // followed branch may go back there).
    let before: Vec<u8> = code
        .iter()
        .rev()
        .copied()
        .cycle()
        .take((eip & 0xfff) as usize)
        .collect();
    // Every instruction of the stream, as adaptive instructions.
    let every_eip: Vec<u32> =
        iced_x86::Decoder::with_ip(32, &bytes, u64::from(eip), iced_x86::DecoderOptions::NONE)
            .into_iter()
            .map(|i| i.ip32())
            .collect();
    // Every jump through a table of targets, as jump tables of three
    // targets (in the second mode, whose branches may use chain slots).
    let tables: Vec<translator::translate::JumpTable> =
        iced_x86::Decoder::with_ip(32, &bytes, u64::from(eip), iced_x86::DecoderOptions::NONE)
            .into_iter()
            .filter(translator::translate::jump_table_candidate)
            .map(|i| translator::translate::JumpTable {
                eip: i.ip32(),
                targets: vec![eip, i.ip32(), i.next_ip32()],
                // Every other one through a host table made before.
                slots: (i.ip32() % 2 == 1).then_some(4096),
            })
            .collect();
    // Every indirect call and jump, with an inline cache of as many
    // targets as one holds: the stream's start, its own next instruction
    // and two in other pages (in the same mode).
    let predictions: Vec<(u32, u32)> =
        iced_x86::Decoder::with_ip(32, &bytes, u64::from(eip), iced_x86::DecoderOptions::NONE)
            .into_iter()
            .filter(|i| {
                matches!(
                    i.code(),
                    iced_x86::Code::Call_rm32 | iced_x86::Code::Jmp_rm32
                )
            })
            .flat_map(|i| {
                [eip, i.next_ip32(), eip + 0x1000, eip + 0x2000].map(|target| (i.ip32(), target))
            })
            .collect();
    // The limited mode checks every segment's limit inline (a guest with
    // non-flat segments); the last sends every instruction the translator
    // can through the software TLB.
    for (flat, isa, limited, soft) in [
        (true, GuestIsa::baseline(), 0, false),
        (true, widest, 0, false),
        (false, widest, 0, false),
        (false, widest, 0x3f, false),
        (true, widest, 0, true),
    ] {
        let req = UnitRequest {
            eip,
            code: &bytes,
            code_before: &before,
            // Units following branches in the modes with superblocks.
            followed_branches: if flat && !soft { 4 } else { 0 },
            page_end: (eip | 0xfff).wrapping_add(1),
            mode: Mode {
                flat,
                cpl0: true,
                limited,
                ..Mode::default()
            },
            host_base: 0x7f00_0001_0000,
            stubs: STUBS,
            max_insns: translator::translate::MAX_UNIT_INSNS,
            count_indirect: None,
            count_entries: None,
            ibtc_tag: if limited != 0 {
                translator::ibtc::TAGS - 1
            } else {
                0
            },
            // Non-flat modes probe the shared table set.
            shared_ibtc_tags: if flat { 0 } else { u32::MAX },
            isa,
            emulate_tokens_from: Some(0),
            cpuid: None,
            ignored_ports: None,
            // The limited mode also offers inline SYSENTER/SYSEXIT.
            transitions: (limited != 0).then_some(TRANSITIONS),
            event: None,
            divide_error: None,
            split_events: limited != 0,
            paged: None,
            self_check: false,
            soft_access: if soft { &every_eip } else { &[] },
            // Predicted calls and returns in two of the modes.
            return_stack: limited != 0 || soft,
            // Units going on past conditional branches in two others.
            superblock_branches: if flat && !soft { 8 } else { 0 },
            fold_displacements: flat,
            unfolded: &[],
            chain_slots_from: (flat && isa == widest && limited == 0 && !soft).then_some(0),
            // Flat modes carry out loads of every data segment inline.
            segment_loads: if flat { &SEGMENT_LOADS } else { &[] },
            verw: &[],
            jump_predictions: &[],
            jump_tables: &tables,
            branch_predictions: &predictions,
            learning_sites: &[],
            inline_leaves: true,
            pc_thunks: None,
        };
        let unit = match translate(&req) {
            Ok(unit) => unit,
            Err(TranslateError::Unsupported(_)) => continue,
            Err(e) => return Err(format!("at EIP {eip:#x} (flat {flat}): {e}")),
        };
        if unit.pc_map.first().map(|p| p.1) != Some(eip) {
            return Err(format!(
                "pc map does not start at {eip:#x}: {:?}",
                unit.pc_map
            ));
        }
        if unit.pc_map.windows(2).any(|w| w[0].0 > w[1].0) {
            return Err(format!("pc map is not ascending: {:?}", unit.pc_map));
        }
        if unit
            .sites
            .iter()
            .any(|&(rel32, stub)| rel32 + 4 > unit.code.len() || stub >= unit.code.len())
        {
            return Err(format!(
                "a branch site lies outside the code: {:?}",
                unit.sites
            ));
        }
    }
    Ok(())
}

/// The canary, mapped once per process.
fn canary() -> &'static Canary {
    static CANARY: OnceLock<Canary> = OnceLock::new();
    CANARY.get_or_init(Canary::map)
}

/// Runs `code` as a guest and checks that it left the canary alone.
fn check_guest(code: &[u8], registers: Registers) -> Result<(), String> {
    let canary = canary();
    let target = canary.target();
    let gprs = match registers {
        Registers::AllCanary => [target; 8],
        Registers::Mixed(values) => values,
    };
    let _stop = sandbox::run_guest(code, gprs, GUEST_LIMIT);
    if canary.intact() {
        Ok(())
    } else {
        canary.restore();
        Err(format!(
            "guest code {code:02x?} with registers {gprs:x?} wrote the canary at {:#x}",
            canary.addr
        ))
    }
}

fn check_all(code: &[u8], registers: Registers) -> Result<(), String> {
    check_translation(code, CODE)?;
    check_translation(code, 0x1ff8)?;
    check_guest(code, registers)
}

#[test]
fn corpus_translates_confined_and_runs_without_escaping() {
    TARGET.replay(|code| {
        check_all(code, Registers::AllCanary)?;
        check_all(
            code,
            Registers::Mixed([0, 0x4000, u32::MAX, 0x8000, 0x8000, 0, 1, 2]),
        )
    });
}

#[test]
fn generated_streams_translate_confined_and_run_without_escaping() {
    let watchdog =
        Watchdog::spawn(|(code, registers): (Vec<u8>, Registers)| check_all(&code, registers));
    TARGET.run(
        (stream(), registers()),
        |(code, _)| code.clone(),
        |(code, registers)| {
            watchdog
                .check((code, registers))
                .map_err(TestCaseError::fail)
        },
    );
}
