//! PCI configuration mechanism #1 at ports `0xcf8`-`0xcff`, with one
//! device on the bus: a host bridge at 00:00.0 with the identity of
//! Intel's 440FX (82441FX PMC, `8086:1237`, class `0x060000`, header
//! type 0, single function), the bridge QEMU's `pc` machine has.
//!
//! Invariants:
//! - `0xcf8` is CONFIG_ADDRESS only for 32-bit accesses: it keeps bit 31
//!   (enable), the bus, device, function and register bits (23-2); the
//!   reserved bits 30-24 and 1-0 read as 0, as the PCI specification and
//!   the 440FX have it. A byte or word access at `0xcf8`-`0xcfb` is not
//!   the host bridge's (on a 440FX/PIIX PC it goes to the ISA bus): it
//!   reads all ones and its write is dropped.
//! - `0xcfc`-`0xcff` is CONFIG_DATA for 1-, 2- and 4-byte accesses: the
//!   access at `0xcfc + k` reaches configuration bytes
//!   `register + k ..` (byte lanes), so a word at `0xcfe` is the upper
//!   half of the dword. Bytes past `0xcff` are not the bridge's either.
//! - With the enable bit clear, or for any function but 00:00.0 (other
//!   buses, devices, functions 1-7 of the single-function bridge), reads
//!   return all ones and writes are dropped, as for an absent function.
//! - The bridge's configuration space is read-only: its header
//!   identifies it; its chipset registers (PAM shadowing, SMRAM, DRAM
//!   rows) are not modelled and read 0. Nothing else lives on the bus: no
//!   ISA bridge, no IDE, no VGA.

use super::{IoOutcome, PortDevice};

/// The 440FX's vendor (Intel).
pub const HOST_BRIDGE_VENDOR: u16 = 0x8086;
/// The 440FX's device ID (82441FX PMC).
pub const HOST_BRIDGE_DEVICE: u16 = 0x1237;
/// Class code: bridge, host bridge, no programming interface.
pub const HOST_BRIDGE_CLASS: u32 = 0x06_00_00;
/// Revision (QEMU's 440FX has 2).
const HOST_BRIDGE_REVISION: u8 = 0x02;
/// PCICMD: memory access and bus master enabled (the 440FX's default).
const HOST_BRIDGE_COMMAND: u16 = 0x0006;
/// PCISTS: fast back-to-back capable, medium DEVSEL timing.
const HOST_BRIDGE_STATUS: u16 = 0x0280;

/// CONFIG_ADDRESS bits nestmon keeps: enable, bus, device, function,
/// register.
const ADDRESS_MASK: u32 = 0x80ff_fffc;
const ENABLE: u32 = 0x8000_0000;
/// Offset of CONFIG_DATA from CONFIG_ADDRESS.
const DATA: u16 = 4;
/// Ports the mechanism occupies from `0xcf8`.
pub const PORTS: u16 = 8;

/// Configuration mechanism #1 and the bus behind it.
#[derive(Clone, Debug)]
pub struct PciHost {
    /// CONFIG_ADDRESS, reserved bits clear.
    address: u32,
    /// 00:00.0's configuration space.
    bridge: [u8; 256],
}

impl Default for PciHost {
    fn default() -> Self {
        Self::new()
    }
}

impl PciHost {
    /// The mechanism with CONFIG_ADDRESS 0 and the host bridge.
    pub fn new() -> PciHost {
        let mut bridge = [0u8; 256];
        bridge[0x00..0x02].copy_from_slice(&HOST_BRIDGE_VENDOR.to_le_bytes());
        bridge[0x02..0x04].copy_from_slice(&HOST_BRIDGE_DEVICE.to_le_bytes());
        bridge[0x04..0x06].copy_from_slice(&HOST_BRIDGE_COMMAND.to_le_bytes());
        bridge[0x06..0x08].copy_from_slice(&HOST_BRIDGE_STATUS.to_le_bytes());
        bridge[0x08] = HOST_BRIDGE_REVISION;
        bridge[0x09..0x0c].copy_from_slice(&HOST_BRIDGE_CLASS.to_le_bytes()[..3]);
        // 0x0e, header type 0, single function: already 0.
        PciHost { address: 0, bridge }
    }

    /// CONFIG_ADDRESS as the guest reads it.
    pub fn address(&self) -> u32 {
        self.address
    }

    /// The configuration byte CONFIG_DATA's byte `lane` (0-3) reads now,
    /// if a function answers there.
    fn config_byte(&self, lane: u16) -> Option<u8> {
        let offset = self.selected_function()? + usize::from(lane);
        self.bridge.get(offset).copied()
    }

    /// The register offset in 00:00.0 that CONFIG_ADDRESS selects, if it
    /// is enabled and selects 00:00.0 (bus, device and function 0).
    fn selected_function(&self) -> Option<usize> {
        let enabled = self.address & ENABLE != 0;
        let function = (self.address >> 8) & 0xffff; // bus, device, function
        (enabled && function == 0).then_some((self.address & 0xfc) as usize)
    }

    /// The byte the guest reads at `offset` (from `0xcf8`) in an access
    /// other than a dword at CONFIG_ADDRESS.
    fn read_byte(&self, offset: u16) -> u8 {
        match offset {
            DATA..PORTS => self.config_byte(offset - DATA).unwrap_or(0xff),
            _ => 0xff,
        }
    }
}

impl PortDevice for PciHost {
    fn name(&self) -> &'static str {
        "pci"
    }

    fn read(&mut self, offset: u16, size: u8) -> u32 {
        if offset == 0 && size == 4 {
            return self.address;
        }
        (0..u16::from(size)).fold(0, |value, i| {
            value | (u32::from(self.read_byte(offset + i)) << (8 * i))
        })
    }

    fn write(&mut self, offset: u16, size: u8, value: u32) -> IoOutcome {
        if offset == 0 && size == 4 {
            self.address = value & ADDRESS_MASK;
        }
        // CONFIG_DATA writes reach the bridge's read-only registers or no
        // function: either way nothing changes.
        IoOutcome::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn select(pci: &mut PciHost, bus: u32, device: u32, function: u32, register: u32) {
        pci.write(
            0,
            4,
            ENABLE | (bus << 16) | (device << 11) | (function << 8) | register,
        );
    }

    #[test]
    fn host_bridge_identifies_as_a_440fx() {
        let mut pci = PciHost::new();
        select(&mut pci, 0, 0, 0, 0x00);
        assert_eq!(pci.read(4, 4), 0x1237_8086);
        select(&mut pci, 0, 0, 0, 0x08);
        assert_eq!(pci.read(4, 4) >> 8, HOST_BRIDGE_CLASS);
        assert_eq!(pci.read(4, 1), 0x02, "revision");
        select(&mut pci, 0, 0, 0, 0x0c);
        assert_eq!(pci.read(6, 1), 0x00, "header type 0, single function");
    }

    #[test]
    fn byte_and_word_accesses_take_their_lane_of_the_dword() {
        let mut pci = PciHost::new();
        select(&mut pci, 0, 0, 0, 0x00);
        assert_eq!(pci.read(4, 1), 0x86);
        assert_eq!(pci.read(5, 1), 0x80);
        assert_eq!(pci.read(6, 1), 0x37);
        assert_eq!(pci.read(7, 1), 0x12);
        assert_eq!(pci.read(4, 2), 0x8086);
        assert_eq!(pci.read(6, 2), 0x1237);
        select(&mut pci, 0, 0, 0, 0x08);
        assert_eq!(pci.read(7, 1), 0x06, "class at 0x0b");
    }

    #[test]
    fn absent_functions_read_all_ones() {
        let mut pci = PciHost::new();
        for (bus, device, function) in [(0, 1, 0), (0, 0, 1), (0, 0, 7), (0, 31, 0), (1, 0, 0)] {
            select(&mut pci, bus, device, function, 0);
            assert_eq!(
                pci.read(4, 4),
                0xffff_ffff,
                "{bus:02x}:{device:02x}.{function}"
            );
            assert_eq!(pci.read(6, 2), 0xffff);
            assert_eq!(pci.read(5, 1), 0xff);
        }
    }

    #[test]
    fn with_the_enable_bit_clear_data_reads_all_ones() {
        let mut pci = PciHost::new();
        pci.write(0, 4, 0);
        assert_eq!(pci.read(4, 4), 0xffff_ffff);
    }

    #[test]
    fn config_address_keeps_its_defined_bits_only() {
        let mut pci = PciHost::new();
        pci.write(0, 4, 0x8000_0000);
        assert_eq!(pci.read(0, 4), 0x8000_0000);
        pci.write(0, 4, 0xffff_ffff);
        assert_eq!(pci.address(), 0x80ff_fffc);
        assert_eq!(pci.read(0, 4), 0x80ff_fffc);
    }

    #[test]
    fn narrow_accesses_to_config_address_are_not_the_bridges() {
        let mut pci = PciHost::new();
        select(&mut pci, 0, 0, 0, 0);
        pci.write(0, 1, 0x00);
        pci.write(2, 2, 0x0000);
        assert_eq!(pci.read(0, 4), 0x8000_0000, "unchanged");
        assert_eq!(pci.read(0, 1), 0xff);
        assert_eq!(pci.read(1, 1), 0xff);
        assert_eq!(pci.read(2, 2), 0xffff);
    }

    #[test]
    fn configuration_writes_change_nothing() {
        let mut pci = PciHost::new();
        select(&mut pci, 0, 0, 0, 0x04);
        let before = pci.read(4, 4);
        pci.write(4, 4, 0xffff_ffff);
        pci.write(4, 1, 0);
        assert_eq!(pci.read(4, 4), before);
        select(&mut pci, 0, 0, 0, 0x58);
        pci.write(5, 1, 0x30); // PAM1
        assert_eq!(pci.read(5, 1), 0);
    }

    #[test]
    fn bytes_past_config_data_are_not_the_bridges() {
        let mut pci = PciHost::new();
        select(&mut pci, 0, 0, 0, 0);
        assert_eq!(pci.read(6, 4), 0xffff_1237);
    }
}
