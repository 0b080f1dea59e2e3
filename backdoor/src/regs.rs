//! The guest register file a backdoor access reads and writes.
//!
//! Invariant: only the seven general registers the backdoor protocol uses
//! are here; EFLAGS and ESP are never touched by the backdoor.

/// The 32-bit general registers of the guest at the moment of the access.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Regs {
    /// EAX: the magic on entry, usually the main result on exit.
    pub eax: u32,
    /// EBX: command argument / result.
    pub ebx: u32,
    /// ECX: command (low half) and subcommand (high half); byte count for
    /// the high-bandwidth port.
    pub ecx: u32,
    /// EDX: port (low half), channel id (high half).
    pub edx: u32,
    /// ESI: cookie / source address.
    pub esi: u32,
    /// EDI: cookie / destination address.
    pub edi: u32,
    /// EBP: cookie on the high-bandwidth port.
    pub ebp: u32,
}

impl Regs {
    /// A register file prepared the way Tools prepare a low-bandwidth call:
    /// magic in EAX, `command | subcommand << 16` in ECX, the port in DX.
    pub fn backdoor_call(command: u16, subcommand: u16, ebx: u32) -> Self {
        Regs {
            eax: crate::abi::BDOOR_MAGIC,
            ebx,
            ecx: join_halves(command, subcommand),
            edx: u32::from(crate::abi::BDOOR_PORT),
            ..Regs::default()
        }
    }

    /// ECX bits 0..16: the command number.
    pub fn command(&self) -> u16 {
        low_half(self.ecx)
    }

    /// ECX bits 16..32: the subcommand (message type for MESSAGE).
    pub fn subcommand(&self) -> u16 {
        high_half(self.ecx)
    }

    /// DX: the port the access names.
    pub fn port(&self) -> u16 {
        low_half(self.edx)
    }

    /// EDX bits 16..32: the GuestRPC channel id.
    pub fn channel(&self) -> u16 {
        high_half(self.edx)
    }
}

/// Bits 0..16 of a register.
pub fn low_half(value: u32) -> u16 {
    (value & 0xFFFF) as u16
}

/// Bits 16..32 of a register.
pub fn high_half(value: u32) -> u16 {
    (value >> 16) as u16
}

/// `low | high << 16`.
pub fn join_halves(low: u16, high: u16) -> u32 {
    u32::from(low) | (u32::from(high) << 16)
}

/// `value` with bits 16..32 replaced by `high`.
pub fn with_high_half(value: u32, high: u16) -> u32 {
    join_halves(low_half(value), high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backdoor_call_puts_command_and_subcommand_in_ecx_halves() {
        let regs = Regs::backdoor_call(30, 4, 7);
        assert_eq!(regs.ecx, 0x0004_001E);
        assert_eq!(regs.command(), 30);
        assert_eq!(regs.subcommand(), 4);
        assert_eq!(regs.port(), 0x5658);
        assert_eq!(regs.eax, 0x564D_5868);
        assert_eq!(regs.ebx, 7);
    }

    #[test]
    fn with_high_half_keeps_the_low_half() {
        assert_eq!(with_high_half(0x1234_5658, 0xBEEF), 0xBEEF_5658);
        assert_eq!(high_half(0xBEEF_5658), 0xBEEF);
        assert_eq!(low_half(0xBEEF_5658), 0x5658);
    }
}
