//! QEMU's firmware configuration device (fw_cfg), traditional I/O port
//! interface, as QEMU's `docs/specs/fw_cfg.rst` describes it for x86: a
//! 16-bit selector at port `0x510` and an 8-bit data port at `0x511`.
//!
//! Items (all others read as absent):
//!
//! | key | item | contents |
//! |---|---|---|
//! | `0x00` | `FW_CFG_SIGNATURE` | `"QEMU"` |
//! | `0x01` | `FW_CFG_ID` | 1, little-endian 32-bit: the traditional interface only, no DMA |
//! | `0x03` | `FW_CFG_RAM_SIZE` | guest RAM in bytes, little-endian 64-bit |
//! | `0x05` | `FW_CFG_NB_CPUS` | processors at boot, little-endian 16-bit |
//! | `0x0f` | `FW_CFG_MAX_CPUS` | processors at most, little-endian 16-bit |
//! | `0x19` | `FW_CFG_FILE_DIR` | a big-endian 32-bit count of 0: no files |
//!
//! Invariants:
//! - A 16-bit write to either port selects an item (bit 14, the old write
//!   channel, is ignored; bit 15 selects the architecture's items, of
//!   which there are none) and rewinds the data offset to 0.
//! - Each byte read at either port (the two overlap, as in QEMU) returns
//!   the selected item's next byte and advances the offset; past the
//!   item's end, and for an absent item, it returns 0.
//! - Byte writes are data writes, which QEMU ignores since v2.4 and so
//!   does nestmon; 32-bit accesses and 16-bit reads are not part of the
//!   interface: reads return 0 (what QEMU gives), writes are ignored.
//! - There is no DMA interface (`FW_CFG_ID` bit 1 clear): port `0x514` is
//!   not claimed.

use super::{IoOutcome, PortDevice};

/// The selector port.
pub const SELECTOR_PORT: u16 = 0x510;
/// Ports the device claims from [`SELECTOR_PORT`] (selector and data).
pub const PORTS: u16 = 2;

/// `FW_CFG_SIGNATURE`.
pub const SIGNATURE: u16 = 0x00;
/// `FW_CFG_ID`, the revision / feature bitmap.
pub const ID: u16 = 0x01;
/// `FW_CFG_RAM_SIZE`.
pub const RAM_SIZE: u16 = 0x03;
/// `FW_CFG_NB_CPUS`.
pub const NB_CPUS: u16 = 0x05;
/// `FW_CFG_MAX_CPUS`.
pub const MAX_CPUS: u16 = 0x0f;
/// `FW_CFG_FILE_DIR`.
pub const FILE_DIR: u16 = 0x19;

/// `FW_CFG_ID` bit 0: the traditional (I/O port) interface.
pub const FEATURE_TRADITIONAL: u32 = 1 << 0;
/// `FW_CFG_ID` bit 1: the DMA interface (not offered).
pub const FEATURE_DMA: u32 = 1 << 1;

/// Selector bit 14: the old write channel, ignored.
const WRITE_CHANNEL: u16 = 0x4000;
/// Selector bit 15: architecture-specific items.
const ARCH_LOCAL: u16 = 0x8000;

/// The fw_cfg device.
#[derive(Clone, Debug)]
pub struct FwCfg {
    /// The generic items, by key.
    items: Vec<(u16, Vec<u8>)>,
    /// The selected item's index in `items`, if it exists.
    selected: Option<usize>,
    /// The next byte of the selected item to read.
    offset: usize,
}

impl FwCfg {
    /// The device describing a machine with `ram_bytes` of RAM and `cpus`
    /// processors (at boot and at most).
    pub fn new(ram_bytes: u64, cpus: u16) -> FwCfg {
        let items = vec![
            (SIGNATURE, b"QEMU".to_vec()),
            (ID, FEATURE_TRADITIONAL.to_le_bytes().to_vec()),
            (RAM_SIZE, ram_bytes.to_le_bytes().to_vec()),
            (NB_CPUS, cpus.to_le_bytes().to_vec()),
            (MAX_CPUS, cpus.to_le_bytes().to_vec()),
            (FILE_DIR, 0u32.to_be_bytes().to_vec()),
        ];
        let mut device = FwCfg {
            items,
            selected: None,
            offset: 0,
        };
        device.select(SIGNATURE);
        device
    }

    /// Selects the item `key` and rewinds to its first byte.
    pub fn select(&mut self, key: u16) {
        let key = key & !WRITE_CHANNEL;
        self.selected = if key & ARCH_LOCAL != 0 {
            None
        } else {
            self.items.iter().position(|(k, _)| *k == key)
        };
        self.offset = 0;
    }

    /// The selected item's next byte (0 past its end or when absent).
    pub fn read_data(&mut self) -> u8 {
        let byte = self
            .selected
            .and_then(|i| self.items[i].1.get(self.offset).copied());
        if byte.is_some() {
            self.offset += 1;
        }
        byte.unwrap_or(0)
    }
}

impl PortDevice for FwCfg {
    fn name(&self) -> &'static str {
        "fw_cfg"
    }

    fn read(&mut self, _offset: u16, size: u8) -> u32 {
        match size {
            1 => u32::from(self.read_data()),
            _ => 0,
        }
    }

    fn write(&mut self, _offset: u16, size: u8, value: u32) -> IoOutcome {
        if size == 2 {
            self.select(value as u16);
        }
        IoOutcome::Continue
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(fw: &mut FwCfg, key: u16, len: usize) -> Vec<u8> {
        fw.write(0, 2, u32::from(key));
        (0..len).map(|_| fw.read(1, 1) as u8).collect()
    }

    fn device() -> FwCfg {
        FwCfg::new(128 << 20, 1)
    }

    #[test]
    fn signature_is_qemu() {
        assert_eq!(item(&mut device(), SIGNATURE, 4), b"QEMU");
    }

    #[test]
    fn id_offers_the_traditional_interface_without_dma() {
        let id = item(&mut device(), ID, 4);
        let id = u32::from_le_bytes(id.try_into().unwrap());
        assert_eq!(id, FEATURE_TRADITIONAL);
        assert_eq!(id & FEATURE_DMA, 0);
    }

    #[test]
    fn ram_size_is_64_bit_little_endian() {
        let ram = item(&mut FwCfg::new(3 << 30, 1), RAM_SIZE, 8);
        assert_eq!(u64::from_le_bytes(ram.try_into().unwrap()), 3 << 30);
    }

    #[test]
    fn cpu_counts_are_16_bit() {
        let mut fw = device();
        assert_eq!(item(&mut fw, NB_CPUS, 3), [1, 0, 0]);
        assert_eq!(item(&mut fw, MAX_CPUS, 3), [1, 0, 0]);
    }

    #[test]
    fn file_directory_is_empty() {
        assert_eq!(item(&mut device(), FILE_DIR, 8), [0; 8]);
    }

    #[test]
    fn reading_past_the_end_or_an_absent_item_gives_zero() {
        let mut fw = device();
        assert_eq!(item(&mut fw, SIGNATURE, 6), b"QEMU\0\0");
        assert_eq!(item(&mut fw, 0x02, 4), [0; 4], "no UUID");
        assert_eq!(item(&mut fw, 0x8000, 4), [0; 4], "no architecture items");
        assert_eq!(item(&mut fw, 0xffff, 2), [0; 2]);
    }

    #[test]
    fn selecting_rewinds_and_the_write_channel_bit_is_ignored() {
        let mut fw = device();
        assert_eq!(item(&mut fw, SIGNATURE, 2), b"QE");
        assert_eq!(item(&mut fw, SIGNATURE | 0x4000, 4), b"QEMU");
    }

    #[test]
    fn both_ports_read_data_and_byte_writes_are_ignored() {
        let mut fw = device();
        fw.write(0, 2, u32::from(SIGNATURE));
        assert_eq!(fw.read(0, 1), u32::from(b'Q'));
        fw.write(0, 1, 0x05);
        fw.write(1, 1, 0x00);
        assert_eq!(fw.read(1, 1), u32::from(b'E'));
    }

    #[test]
    fn wide_reads_return_zero_and_take_no_bytes() {
        let mut fw = device();
        assert_eq!(fw.read(1, 2), 0);
        assert_eq!(fw.read(0, 4), 0);
        fw.write(0, 4, u32::from(RAM_SIZE));
        assert_eq!(
            fw.read(1, 1),
            u32::from(b'Q'),
            "a dword write selects nothing"
        );
    }

    #[test]
    fn the_signature_is_selected_at_power_on() {
        let mut fw = device();
        assert_eq!(fw.read(1, 1), u32::from(b'Q'));
    }
}
