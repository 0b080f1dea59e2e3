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
use iced_x86::{Code, DecoderOptions};
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
