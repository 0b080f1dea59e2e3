//! The confinement rule: which guest instructions may be re-encoded as they
//! are (the "generic" path), decided from iced-x86's operand and
//! memory-access information.
//!
//! A re-encoded instruction runs on the host with the host's registers, so
//! every memory access it makes must go through the one explicit memory
//! operand that the translator rewrites to `[r15 + 32-bit address]`. An
//! instruction qualifies only if all of these hold:
//!
//! 1. every memory access iced-x86 reports for it is its explicit ModRM
//!    memory operand (no implicit `DS:[EDI]`, `ES:[EDI]`, `[ESI]` or stack
//!    access), whose base and index are 32- or 16-bit general registers
//!    (the translator computes the offset, wrapping at 64 KiB for 16-bit
//!    addressing; no vector index, no XLAT `[EBX+AL]`);
//! 2. it does not use the stack (`is_stack_instruction`);
//! 3. its control flow is `Next` (branches, calls, returns, interrupts and
//!    XBEGIN would jump relative to host code);
//! 4. it is neither privileged nor port I/O, and names no segment, control,
//!    debug or test register;
//! 5. its extensions are offered by the guest CPU ([`crate::isa`]); the
//!    offerable extensions are exactly those whose memory accesses iced-x86
//!    reports completely, which the confinement test checks for every
//!    instruction form iced-x86 knows.
//!
//! Everything else is translated by a dedicated routine that rebases each
//! access (stack, string, XLAT, control transfers), carried out by the
//! monitor, or raises #UD.

use iced_x86::{FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpKind, Register};

/// Why an instruction may not be re-encoded as it is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotConfined {
    /// It accesses memory other than through its explicit operand.
    ImplicitMemory,
    /// Its memory operand has a vector index (VSIB) or another register
    /// than a general register as base or index (XLAT's `[EBX+AL]`).
    AddressForm,
    /// It uses the stack.
    Stack,
    /// It transfers control.
    ControlFlow,
    /// It is privileged or port I/O.
    Privileged,
    /// It names a segment, control, debug or test register.
    SystemRegister,
}

/// Checks the rule above for `i`.
pub fn check_generic(
    i: &Instruction,
    info: &mut InstructionInfoFactory,
) -> Result<(), NotConfined> {
    if i.flow_control() != FlowControl::Next {
        return Err(NotConfined::ControlFlow);
    }
    if i.is_stack_instruction() {
        return Err(NotConfined::Stack);
    }
    if i.is_privileged() || is_port_io(i) {
        return Err(NotConfined::Privileged);
    }
    if (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Register && is_system(i.op_register(n))) {
        return Err(NotConfined::SystemRegister);
    }
    let explicit = (0..i.op_count()).any(|n| i.op_kind(n) == OpKind::Memory);
    if explicit && !(is_address_register(i.memory_base()) && is_address_register(i.memory_index()))
    {
        return Err(NotConfined::AddressForm);
    }
    let all_explicit = info
        .info(i)
        .used_memory()
        .iter()
        .all(|m| explicit && is_the_explicit_operand(i, m));
    if !all_explicit {
        return Err(NotConfined::ImplicitMemory);
    }
    Ok(())
}

fn is_address_register(r: Register) -> bool {
    r == Register::None || r.is_gpr32() || r.is_gpr16()
}

fn is_system(r: Register) -> bool {
    r.is_segment_register() || r.is_cr() || r.is_dr() || r.is_tr()
}

fn is_the_explicit_operand(i: &Instruction, m: &iced_x86::UsedMemory) -> bool {
    m.base() == i.memory_base()
        && m.index() == i.memory_index()
        && m.displacement() as u32 == i.memory_displacement32()
        && (m.segment() == i.memory_segment() || m.segment() == Register::None)
}

/// Whether `i` reads or writes an I/O port (IN, OUT, INS, OUTS): what
/// iced's `OpCodeInfo::is_input_output` says, without building its table
/// of every opcode's description (a millisecond of every start).
fn is_port_io(i: &Instruction) -> bool {
    matches!(
        i.mnemonic(),
        Mnemonic::In
            | Mnemonic::Out
            | Mnemonic::Insb
            | Mnemonic::Insw
            | Mnemonic::Insd
            | Mnemonic::Outsb
            | Mnemonic::Outsw
            | Mnemonic::Outsd
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Code, Decoder, DecoderOptions};

    #[test]
    fn port_io_is_what_iced_says_of_every_opcode() {
        for code in Code::values() {
            let mut i = Instruction::default();
            i.set_code(code);
            assert_eq!(is_port_io(&i), code.op_code().is_input_output(), "{code:?}");
        }
    }

    fn check(bytes: &[u8]) -> Result<(), NotConfined> {
        let i = Decoder::new(32, bytes, DecoderOptions::NONE).decode();
        check_generic(&i, &mut InstructionInfoFactory::new())
    }

    #[test]
    fn explicit_memory_operand_is_confined() {
        assert_eq!(check(&[0x8b, 0x44, 0x8b, 0xfc]), Ok(())); // mov eax,[ebx+ecx*4-4]
        assert_eq!(check(&[0x0f, 0xae, 0x03]), Ok(())); // fxsave [ebx]
        assert_eq!(check(&[0x64, 0xa1, 4, 0, 0, 0]), Ok(())); // mov eax,fs:[4]
    }

    #[test]
    fn register_held_store_address_is_not_confined() {
        // maskmovq mm0,mm1 / maskmovdqu xmm0,xmm1 store to DS:[EDI]
        assert_eq!(check(&[0x0f, 0xf7, 0xc1]), Err(NotConfined::ImplicitMemory));
        assert_eq!(
            check(&[0x66, 0x0f, 0xf7, 0xc1]),
            Err(NotConfined::ImplicitMemory)
        );
        // movdir64b eax,[ebx] stores to ES:[EAX]
        assert_eq!(
            check(&[0x66, 0x0f, 0x38, 0xf8, 0x03]),
            Err(NotConfined::ImplicitMemory)
        );
    }

    #[test]
    fn string_xlat_and_stack_forms_are_not_generic() {
        assert_eq!(check(&[0xa4]), Err(NotConfined::ImplicitMemory)); // movsb
        assert_eq!(check(&[0xd7]), Err(NotConfined::AddressForm)); // xlat
        assert_eq!(check(&[0xff, 0x33]), Err(NotConfined::Stack)); // push [ebx]
    }

    #[test]
    fn vector_index_is_not_confined() {
        // vpgatherdd xmm0,[eax+xmm2*4],xmm1
        assert_eq!(
            check(&[0xc4, 0xe2, 0x71, 0x90, 0x04, 0x90]),
            Err(NotConfined::AddressForm)
        );
    }

    #[test]
    fn control_transfers_and_privileged_forms_are_not_generic() {
        assert_eq!(
            check(&[0xc7, 0xf8, 0, 0, 0, 0]),
            Err(NotConfined::ControlFlow)
        ); // xbegin
        assert_eq!(check(&[0x0f, 0x01, 0xdf]), Err(NotConfined::Privileged)); // invlpga
        assert_eq!(check(&[0xe4, 0x60]), Err(NotConfined::Privileged)); // in al,0x60
        assert_eq!(check(&[0x8c, 0xd8]), Err(NotConfined::SystemRegister)); // mov eax,ds
    }
}
