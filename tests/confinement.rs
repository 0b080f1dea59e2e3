//! Confinement: a guest can never write host memory outside its RAM.
//!
//! A canary mapping is placed below 4 GiB in this (the monitor's) process,
//! where a guest register value could name it if the translator ever used a
//! guest register as a host address. Then every instruction form iced-x86
//! can decode in 32-bit mode runs as a one-instruction guest, with every
//! general register holding the canary's address (so an implicit or
//! register-held address such as MASKMOVQ's `DS:[EDI]`, CLZERO's `[EAX]` or
//! a string instruction's `[ESI]`/`[EDI]` names the canary), all MMX/XMM
//! bytes 0xFF (so byte masks select every byte), an explicit memory operand
//! pointing into guest RAM, and a guest CPU that offers every extension the
//! translator can offer. The canary must stay intact, and every guest must
//! stop (at its exit port, with an exception, or by the watchdog).

#[path = "support/forms.rs"]
mod forms;
#[path = "support/sandbox.rs"]
mod sandbox;

use forms::{every_instruction_form, unreachable_by_decoding};
use iced_x86::{Code, DecoderOptions, Mnemonic};
use monitor::vcpu::StopReason;
use sandbox::{run_one, Canary, Outcome};

#[test]
fn sweep_covers_every_form_iced_decodes_in_32bit_mode() {
    let forms = every_instruction_form();
    let found: std::collections::HashSet<Code> = forms.values().map(|(c, _)| *c).collect();
    let missing: Vec<Code> = Code::values()
        .filter(|c| {
            let op = c.op_code();
            op.is_instruction()
                && op.mode32()
                && op.decoder_option() == DecoderOptions::NONE
                && !unreachable_by_decoding(*c)
                && !found.contains(c)
        })
        .collect();
    assert!(missing.is_empty(), "forms the sweep misses: {missing:?}");
}

#[test]
fn no_instruction_form_reaches_host_memory_outside_guest_ram() {
    let canary = Canary::map();
    let forms = every_instruction_form();
    let mut broke = Vec::new();
    let mut watchdog = Vec::new();
    let mut refused = Vec::new();
    for (code, bytes) in forms.values() {
        let stop = run_one(bytes, canary.target());
        match &stop {
            Outcome::Watchdog => watchdog.push(*code),
            // The independent check refused what the translator emitted:
            // a translator bug even though nothing escaped.
            Outcome::Stopped(s) => {
                if let StopReason::Internal(why) = &s.reason {
                    if why.contains("breaks confinement") {
                        refused.push(format!("{code:?}: {why}"));
                    }
                }
            }
            Outcome::Exited => {}
        }
        if !canary.intact() {
            broke.push(format!("{code:?} {bytes:02x?}"));
            // Restore it so that later forms are judged on their own.
            canary.restore();
        }
    }
    assert!(
        broke.is_empty(),
        "{} forms wrote host memory outside guest RAM: {broke:#?}",
        broke.len()
    );
    assert!(
        refused.is_empty(),
        "the translator emitted code its own confinement check refused: {refused:#?}"
    );
    // A form may legitimately loop (a JMP through a register that names
    // its own address): the watchdog stopping it through an exit request
    // is the property, a hang would time the test out.
    if !watchdog.is_empty() {
        eprintln!("forms the watchdog stopped: {watchdog:?}");
    }
}

#[test]
fn every_software_tlb_candidate_translates_through_the_software_tlb_and_passes_the_check() {
    use translator::translate::{
        soft_access_candidate, soft_element_candidate, soft_jump_candidate, soft_stack_candidate,
        soft_string_candidate, translate, Mode, UnitRequest,
    };
    let isa = translator::GuestIsa::with(translator::GuestIsa::TRANSLATABLE).expect("offerable");
    let eip = 0x1000;
    let mut candidates = 0;
    let mut failed = Vec::new();
    for (code, form) in every_instruction_form().values() {
        let i = iced_x86::Decoder::with_ip(32, form, u64::from(eip), DecoderOptions::NONE).decode();
        // Stack and single-element forms reach guest memory only through
        // the software TLB (no window form is left beside it).
        let chunked = matches!(
            i.mnemonic(),
            Mnemonic::Movsb
                | Mnemonic::Movsw
                | Mnemonic::Movsd
                | Mnemonic::Stosb
                | Mnemonic::Stosw
                | Mnemonic::Stosd
        );
        let soft_only = soft_stack_candidate(&i)
            || soft_element_candidate(&i)
            || soft_jump_candidate(&i)
            || soft_string_candidate(&i) && !chunked;
        if !soft_access_candidate(&i) && !soft_string_candidate(&i) && !soft_only {
            continue;
        }
        candidates += 1;
        let mut bytes = form.clone();
        bytes.resize(64, 0x90);
        let req = UnitRequest {
            eip,
            code: &bytes,
            code_before: &[],
            followed_branches: 0,
            page_end: 0x2000,
            mode: Mode {
                flat: true,
                cpl0: true,
                ..Mode::default()
            },
            host_base: 0x7f00_0001_0000,
            stubs: sandbox::STUBS,
            max_insns: 1,
            count_indirect: None,
            count_entries: None,
            ibtc_tag: 0,
            shared_ibtc_tags: 0,
            isa,
            emulate_tokens_from: Some(0),
            cpuid: None,
            ignored_ports: None,
            transitions: None,
            event: None,
            divide_error: None,
            split_events: false,
            paged: None,
            self_check: false,
            soft_access: &[eip],
            return_stack: false,
            superblock_branches: 0,
            fold_displacements: true,
            unfolded: &[],
            chain_slots_from: None,
            segment_loads: &[],
            verw: &[],
            jump_predictions: &[],
            jump_tables: &[],
            branch_predictions: &[],
            learning_sites: &[],
            inline_leaves: true,
            pc_thunks: None,
        };
        match translate(&req) {
            Ok(unit) => {
                // Whatever the translator made of it, its guest memory
                // access is the software TLB's, not the window's.
                let host: Vec<iced_x86::Instruction> = iced_x86::Decoder::with_ip(
                    64,
                    &unit.code,
                    0x7f00_0001_0000,
                    DecoderOptions::NONE,
                )
                .into_iter()
                .collect();
                let soft = host.iter().any(|h| {
                    h.memory_base() == iced_x86::Register::R12
                        && h.memory_index() == iced_x86::Register::R11
                });
                let emulated = !unit.emulated.is_empty();
                if !soft && !emulated {
                    failed.push(format!("{code:?}: no software-TLB access"));
                }
                let window = host.iter().any(|h| {
                    (0..h.op_count()).any(|n| h.op_kind(n) == iced_x86::OpKind::Memory)
                        && h.memory_base() == iced_x86::Register::R15
                        && h.memory_index() != iced_x86::Register::R12
                        && !matches!(h.code(), Code::Jmp_rm64 | Code::Call_rm64)
                });
                if soft_only && window {
                    failed.push(format!("{code:?}: a window access beside the software TLB"));
                }
            }
            Err(translator::TranslateError::Unsupported(_)) => {}
            Err(e) => failed.push(format!("{code:?}: {e}")),
        }
    }
    assert!(candidates > 500, "only {candidates} candidates");
    assert!(failed.is_empty(), "{failed:#?}");
}
