//! Memory-mapped devices: the physical addresses outside guest RAM that a
//! device decodes (the local APIC at `0xFEE00000`, the I/O APIC at
//! `0xFEC00000`), and the bus that routes a vCPU's access there to it.
//!
//! The vCPU backends reach the bus synchronously, from inside the
//! instruction that touches device memory (binary translation carries the
//! instruction out in the monitor, KVM hands back an MMIO exit), because
//! the local APIC is part of the CPU and an MMIO access completes within
//! its instruction on hardware too.
//!
//! Invariants:
//! - Regions never overlap (the local APIC's base moves only within the
//!   rules of [`MmioBus::claims`]: a region of another device wins and the
//!   APIC's is then unreachable, as on a PC where the chipset decodes first).
//! - An access nothing claims reads all ones and writes nothing, as on a PC
//!   with nothing decoded there.
//! - Devices are behind their own locks; the bus holds none while it calls
//!   them, and devices call their listeners (waking the vCPU) after they
//!   released their lock.

use std::sync::Arc;

/// A device on the MMIO bus. `offset` is from the start of its region;
/// accesses are 1, 2, 4 or 8 bytes and never cross the region's end.
pub trait MmioDevice: Send + Sync {
    /// Fills `data` from the device's registers at `offset`.
    fn mmio_read(&self, offset: u64, data: &mut [u8]);
    /// Writes `data` to the device's registers at `offset`.
    fn mmio_write(&self, offset: u64, data: &[u8]);
}

/// A device region whose base the guest can move (the local APIC's, through
/// the `IA32_APIC_BASE` MSR).
pub trait MovableMmio: MmioDevice {
    /// The base and length of the region, or `None` while the device does
    /// not decode any address (a local APIC disabled in `IA32_APIC_BASE`).
    fn region(&self) -> Option<(u64, u64)>;
}

/// One fixed region.
#[derive(Clone)]
struct Region {
    base: u64,
    len: u64,
    device: Arc<dyn MmioDevice>,
}

/// The memory-mapped devices of a machine; clones share them.
#[derive(Clone, Default)]
pub struct MmioBus {
    fixed: Vec<Region>,
    movable: Option<Arc<dyn MovableMmio>>,
}

impl std::fmt::Debug for MmioBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let regions: Vec<_> = self.fixed.iter().map(|r| (r.base, r.len)).collect();
        f.debug_struct("MmioBus")
            .field("fixed", &regions)
            .field("movable", &self.movable.as_ref().and_then(|m| m.region()))
            .finish()
    }
}

/// Why a region was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MmioError {
    /// The region overlaps one already on the bus, is empty, or wraps.
    #[error("MMIO region {base:#x}+{len:#x} overlaps another or is not a valid range")]
    Overlap {
        /// Its base.
        base: u64,
        /// Its length.
        len: u64,
    },
}

impl MmioBus {
    /// An empty bus.
    pub fn new() -> MmioBus {
        MmioBus::default()
    }

    /// Adds `device` at `base..base + len`.
    pub fn register(
        &mut self,
        base: u64,
        len: u64,
        device: Arc<dyn MmioDevice>,
    ) -> Result<(), MmioError> {
        let end = base.checked_add(len).filter(|_| len > 0);
        let Some(end) = end else {
            return Err(MmioError::Overlap { base, len });
        };
        if self
            .fixed
            .iter()
            .any(|r| base < r.base + r.len && r.base < end)
        {
            return Err(MmioError::Overlap { base, len });
        }
        self.fixed.push(Region { base, len, device });
        Ok(())
    }

    /// Adds the device whose region moves (one per bus: the local APIC).
    pub fn set_movable(&mut self, device: Arc<dyn MovableMmio>) {
        self.movable = Some(device);
    }

    /// The device decoding physical address `phys`, and the offset there.
    fn find(&self, phys: u64) -> Option<(&dyn MmioDevice, u64, u64)> {
        if let Some(r) = self
            .fixed
            .iter()
            .find(|r| phys >= r.base && phys - r.base < r.len)
        {
            return Some((r.device.as_ref(), phys - r.base, r.len - (phys - r.base)));
        }
        let movable = self.movable.as_ref()?;
        let (base, len) = movable.region()?;
        (phys >= base && phys - base < len).then(|| {
            let device: &dyn MmioDevice = movable.as_ref();
            (device, phys - base, len - (phys - base))
        })
    }

    /// Whether a device decodes `phys`.
    pub fn claims(&self, phys: u64) -> bool {
        self.find(phys).is_some()
    }

    /// Splits the `len` bytes at `phys` where decoding changes: calls
    /// `each` with the device and offset of each piece (or `None` for one
    /// byte no device decodes) and the piece's range within the access.
    fn pieces<'a>(
        &'a self,
        phys: u64,
        len: usize,
        mut each: impl FnMut(Option<(&'a dyn MmioDevice, u64)>, std::ops::Range<usize>),
    ) {
        let mut done = 0;
        while done < len {
            let at = phys.wrapping_add(done as u64);
            let (device, n) = match self.find(at) {
                Some((device, offset, room)) => {
                    (Some((device, offset)), (len - done).min(room as usize))
                }
                None => (None, 1),
            };
            each(device, done..done + n);
            done += n;
        }
    }

    /// Reads `data.len()` bytes at `phys`: from the device that decodes it,
    /// all ones where none does. An access that runs past a region's end
    /// is split there.
    pub fn read(&self, phys: u64, data: &mut [u8]) {
        self.pieces(phys, data.len(), |device, range| match device {
            Some((device, offset)) => device.mmio_read(offset, &mut data[range]),
            None => data[range].fill(0xff),
        });
    }

    /// Writes `data` at `phys` to the device that decodes it; bytes no
    /// device decodes are dropped.
    pub fn write(&self, phys: u64, data: &[u8]) {
        self.pieces(phys, data.len(), |device, range| {
            if let Some((device, offset)) = device {
                device.mmio_write(offset, &data[range]);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[derive(Default)]
    struct Recorder(Mutex<Vec<(u64, Vec<u8>)>>);

    impl MmioDevice for Recorder {
        fn mmio_read(&self, offset: u64, data: &mut [u8]) {
            for (i, b) in data.iter_mut().enumerate() {
                *b = (offset as u8).wrapping_add(i as u8);
            }
        }
        fn mmio_write(&self, offset: u64, data: &[u8]) {
            self.0.lock().unwrap().push((offset, data.to_vec()));
        }
    }

    struct Movable(Recorder, Mutex<Option<(u64, u64)>>);

    impl MmioDevice for Movable {
        fn mmio_read(&self, offset: u64, data: &mut [u8]) {
            self.0.mmio_read(offset, data);
        }
        fn mmio_write(&self, offset: u64, data: &[u8]) {
            self.0.mmio_write(offset, data);
        }
    }

    impl MovableMmio for Movable {
        fn region(&self) -> Option<(u64, u64)> {
            *self.1.lock().unwrap()
        }
    }

    #[test]
    fn accesses_nothing_decodes_read_all_ones_and_write_nothing() {
        let bus = MmioBus::new();
        let mut data = [0u8; 4];
        bus.read(0xfee0_0000, &mut data);
        assert_eq!(data, [0xff; 4]);
        bus.write(0xfee0_0000, &data);
        assert!(!bus.claims(0xfee0_0000));
    }

    #[test]
    fn a_device_sees_offsets_from_its_base() {
        let dev = Arc::new(Recorder::default());
        let mut bus = MmioBus::new();
        bus.register(0xfec0_0000, 0x1000, dev.clone()).unwrap();
        let mut data = [0u8; 4];
        bus.read(0xfec0_0010, &mut data);
        assert_eq!(data, [0x10, 0x11, 0x12, 0x13]);
        bus.write(0xfec0_0004, &[1, 2]);
        assert_eq!(*dev.0.lock().unwrap(), vec![(4, vec![1, 2])]);
    }

    #[test]
    fn an_access_across_a_region_end_is_split_there() {
        let dev = Arc::new(Recorder::default());
        let mut bus = MmioBus::new();
        bus.register(0x1000, 0x10, dev.clone()).unwrap();
        let mut data = [0u8; 4];
        bus.read(0x100e, &mut data);
        assert_eq!(data, [0x0e, 0x0f, 0xff, 0xff]);
        bus.write(0xffe, &[1, 2, 3, 4]);
        assert_eq!(*dev.0.lock().unwrap(), vec![(0, vec![3, 4])]);
    }

    #[test]
    fn overlapping_or_empty_regions_are_refused() {
        let mut bus = MmioBus::new();
        bus.register(0x1000, 0x1000, Arc::new(Recorder::default()))
            .unwrap();
        for (base, len) in [
            (0x1800, 0x1000),
            (0x800, 0x1000),
            (0x3000, 0),
            (u64::MAX, 2),
        ] {
            assert_eq!(
                bus.register(base, len, Arc::new(Recorder::default())),
                Err(MmioError::Overlap { base, len })
            );
        }
    }

    #[test]
    fn the_movable_region_follows_its_device_and_fixed_regions_win() {
        let dev = Arc::new(Movable(
            Recorder::default(),
            Mutex::new(Some((0x5000, 0x1000))),
        ));
        let mut bus = MmioBus::new();
        bus.register(0x6000, 0x1000, Arc::new(Recorder::default()))
            .unwrap();
        bus.set_movable(dev.clone());
        assert!(bus.claims(0x5000));
        *dev.1.lock().unwrap() = Some((0x6000, 0x1000));
        bus.write(0x6000, &[9]);
        assert!(dev.0 .0.lock().unwrap().is_empty());
        *dev.1.lock().unwrap() = None;
        assert!(!bus.claims(0x5000));
    }
}
