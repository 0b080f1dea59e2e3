//! I/O permission of IN, OUT, INS and OUTS (Intel SDM vol. 3, 16.5
//! "Protected-Mode I/O", 16.5.2 "I/O Permission Bit Map").
//!
//! An access is allowed when CPL <= IOPL (outside virtual-8086 mode);
//! otherwise the I/O permission bitmap of the current 32-bit TSS decides:
//! its base is the word at offset 66H, and every bit of the bytes accessed
//! must be 0. The processor reads two bitmap bytes, so both must lie
//! within the TSS limit; a bitmap read beyond the limit, a 16-bit TSS or a
//! TSS shorter than 68H bytes denies the access (#GP(0)).

use crate::cpu::context::{read_u16, CpuContext, Privilege};
use crate::cpu::exception::Exception;
use crate::cpu::flags::Eflags;

/// Offset of the I/O map base in a 32-bit TSS.
const IO_MAP_BASE: u32 = 0x66;
/// The smallest limit of a 32-bit TSS (104 bytes).
const TSS32_MIN_LIMIT: u32 = 0x67;

/// Whether `size` bytes (1, 2 or 4) at I/O port `port` may be accessed;
/// #GP(0) if not. Page faults on the TSS are raised as they are.
pub fn io_allowed(
    ctx: &mut (impl CpuContext + ?Sized),
    port: u16,
    size: u32,
) -> Result<(), Exception> {
    let flags = ctx.eflags();
    if !flags.contains(Eflags::VM) && ctx.sys().cpl <= flags.iopl() {
        return Ok(());
    }
    if bitmap_allows(ctx, port, size)? {
        Ok(())
    } else {
        Err(Exception::GeneralProtection(0))
    }
}

/// The I/O permission bitmap's answer for `size` bytes at `port`.
fn bitmap_allows(
    ctx: &mut (impl CpuContext + ?Sized),
    port: u16,
    size: u32,
) -> Result<bool, Exception> {
    let tr = ctx.sys().tr;
    // A present 32-bit TSS, available or busy (type 9 or 11, S = 0).
    let tss32 = tr.usable() && tr.attr & 0x1d == 0x09;
    if !tss32 || tr.limit < TSS32_MIN_LIMIT {
        return Ok(false);
    }
    let base = read_u16(
        ctx,
        tr.base.wrapping_add(IO_MAP_BASE),
        Privilege::Supervisor,
    )?;
    let byte = u32::from(base) + u32::from(port) / 8;
    if byte + 1 > tr.limit {
        return Ok(false);
    }
    let bits = read_u16(ctx, tr.base.wrapping_add(byte), Privilege::Supervisor)?;
    let mask = ((1u32 << size) - 1) << (port % 8);
    Ok(u32::from(bits) & mask == 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::descriptor::Selector;
    use crate::cpu::state::SegmentRegister;
    use crate::cpu::testing::{segment_descriptor, TestCpu};

    const TSS: u32 = 0x3000;
    const GP0: Exception = Exception::GeneralProtection(0);

    /// Ring 3 with IOPL 0 and a 32-bit TSS at 0x3000 whose bitmap starts at
    /// 0x68 and covers ports 0-0x3ff (limit 0xe8: 128 bytes and the
    /// trailing 0xff byte), all allowed.
    fn cpu() -> TestCpu {
        let mut cpu = TestCpu::new();
        cpu.sys.tr =
            SegmentRegister::loaded(Selector(0x28), segment_descriptor(TSS, 0xe8, 0x8b, 0));
        cpu.poke(TSS + 0x66, &0x68u16.to_le_bytes());
        cpu.poke(TSS + 0xe8, &[0xff]);
        cpu.sys.cpl = 3;
        cpu
    }

    fn deny(cpu: &mut TestCpu, port: u16) {
        let at = TSS + 0x68 + u32::from(port / 8);
        let byte = cpu.peek(at, 1)[0] | 1 << (port % 8);
        cpu.poke(at, &[byte]);
    }

    #[test]
    fn io_at_a_cpl_not_above_iopl_needs_no_bitmap() {
        let mut cpu = cpu();
        cpu.sys.tr = SegmentRegister::default();
        cpu.eflags = cpu.eflags.with_iopl(3);
        assert_eq!(io_allowed(&mut cpu, 0x3f8, 1), Ok(()));
        cpu.eflags = cpu.eflags.with_iopl(0);
        cpu.sys.cpl = 0;
        assert_eq!(io_allowed(&mut cpu, 0x3f8, 4), Ok(()));
    }

    #[test]
    fn io_bitmap_allows_a_port_whose_bits_are_clear() {
        let mut cpu = cpu();
        deny(&mut cpu, 0x3f9);
        assert_eq!(io_allowed(&mut cpu, 0x3f8, 1), Ok(()));
        assert_eq!(io_allowed(&mut cpu, 0x3fa, 4), Ok(()));
    }

    #[test]
    fn io_bitmap_denies_a_port_whose_bit_is_set() {
        let mut cpu = cpu();
        deny(&mut cpu, 0x3f9);
        assert_eq!(io_allowed(&mut cpu, 0x3f9, 1), Err(GP0));
    }

    #[test]
    fn io_bitmap_checks_the_bit_of_every_byte_accessed_across_bitmap_bytes() {
        let mut cpu = cpu();
        deny(&mut cpu, 0x40);
        assert_eq!(io_allowed(&mut cpu, 0x3e, 2), Ok(()));
        assert_eq!(io_allowed(&mut cpu, 0x3e, 4), Err(GP0));
        assert_eq!(io_allowed(&mut cpu, 0x3f, 2), Err(GP0));
    }

    #[test]
    fn io_bitmap_read_beyond_the_tss_limit_denies() {
        let mut cpu = cpu();
        assert_eq!(io_allowed(&mut cpu, 0x3ff, 1), Ok(()), "last mapped byte");
        assert_eq!(io_allowed(&mut cpu, 0x400, 1), Err(GP0), "past the map");
        cpu.poke(TSS + 0x66, &0xffffu16.to_le_bytes());
        assert_eq!(io_allowed(&mut cpu, 0, 1), Err(GP0), "no bitmap at all");
    }

    #[test]
    fn io_with_a_16bit_tss_or_a_short_32bit_tss_is_gp() {
        let mut cpu = cpu();
        cpu.sys.tr.attr = (cpu.sys.tr.attr & !0xf) | 0x3;
        assert_eq!(io_allowed(&mut cpu, 0x3f8, 1), Err(GP0));
        let mut cpu = self::cpu();
        cpu.sys.tr.limit = 0x65;
        assert_eq!(io_allowed(&mut cpu, 0x3f8, 1), Err(GP0));
    }

    #[test]
    fn io_in_virtual_8086_mode_always_consults_the_bitmap() {
        let mut cpu = cpu();
        cpu.eflags = (cpu.eflags | Eflags::VM).with_iopl(3);
        deny(&mut cpu, 0x60);
        assert_eq!(io_allowed(&mut cpu, 0x60, 1), Err(GP0));
        assert_eq!(io_allowed(&mut cpu, 0x64, 1), Ok(()));
    }

    #[test]
    fn io_bitmap_page_fault_is_raised() {
        let mut cpu = cpu();
        cpu.unmapped.push(TSS..TSS + 0x1000);
        assert!(matches!(
            io_allowed(&mut cpu, 0x60, 1),
            Err(Exception::PageFault { .. })
        ));
    }
}
