//! Human-readable listings of translations (guest and host instructions),
//! in the spirit of QEMU's `-d in_asm,out_asm`.

use iced_x86::{Decoder, DecoderOptions, Formatter, Instruction, IntelFormatter};
use std::fmt::Write;

/// Formats guest instructions and the host code of one unit.
pub fn format_unit(guest: &[Instruction], host: &[u8], host_base: u64) -> String {
    let mut f = IntelFormatter::new();
    let mut out = String::new();
    let mut text = String::new();
    let _ = writeln!(out, "IN: {} guest instructions", guest.len());
    for i in guest {
        text.clear();
        f.format(i, &mut text);
        let _ = writeln!(out, "  {:08x}  {}", i.ip32(), text);
    }
    let _ = writeln!(out, "OUT: {} host bytes at {:#x}", host.len(), host_base);
    let mut dec = Decoder::with_ip(64, host, host_base, DecoderOptions::NONE);
    for i in &mut dec {
        text.clear();
        f.format(&i, &mut text);
        let _ = writeln!(out, "  {:016x}  {}", i.ip(), text);
    }
    out
}
