//! Guest linear memory as the vCPU sees it at an exit: the guest's 32-bit
//! page tables (walked with `shadowmmu::walk`, which sets the accessed and
//! dirty bits as the hardware does) with the rights of the CPL, or
//! linear = physical with paging off. Used by the VMware backdoor's
//! high-bandwidth port and to read instruction bytes.
//!
//! Invariants:
//! - A write checks every page of its range before it writes the first
//!   byte, and writes nothing if any page faults or lies outside RAM (the
//!   contract of `backdoor::GuestMemory`).
//! - Reads of physical addresses outside RAM return all ones, as on a PC
//!   with nothing decoded there (and as the binary translator does).
//! - PAE paging is not walked: every access under it faults.

use backdoor::MemFault;
use shadowmmu::{walk, Access, GuestLinear, GuestPhys, GuestRam, PagingMode, PAGE_SIZE};

const CR0_PG: u64 = 1 << 31;
const CR0_WP: u64 = 1 << 16;
const CR4_PSE: u64 = 1 << 4;
const CR4_PAE: u64 = 1 << 5;

/// How linear addresses become physical ones.
#[derive(Clone, Copy, Debug)]
pub(super) enum Translation {
    /// Paging off: linear = physical.
    Identity,
    /// 32-bit paging.
    Paged(PagingMode),
    /// PAE paging, which this walker does not handle.
    Unsupported,
}

impl Translation {
    /// The translation the control registers `cr0`, `cr3`, `cr4` select.
    pub(super) fn from_control_registers(cr0: u64, cr3: u64, cr4: u64) -> Translation {
        if cr0 & CR0_PG == 0 {
            Translation::Identity
        } else if cr4 & CR4_PAE != 0 {
            Translation::Unsupported
        } else {
            Translation::Paged(PagingMode {
                cr3: cr3 as u32,
                pse: cr4 & CR4_PSE != 0,
                wp: cr0 & CR0_WP != 0,
            })
        }
    }
}

/// Guest linear memory with one translation and one privilege.
pub(super) struct LinearMemory<'a> {
    /// Guest RAM.
    pub ram: &'a GuestRam,
    /// How addresses translate.
    pub translation: Translation,
    /// Accesses are made with CPL 3's rights.
    pub user: bool,
}

impl LinearMemory<'_> {
    fn physical(&self, linear: u32, write: bool) -> Result<u32, MemFault> {
        match self.translation {
            Translation::Identity => Ok(linear),
            Translation::Unsupported => Err(MemFault { linear }),
            Translation::Paged(mode) => walk(
                self.ram,
                mode,
                GuestLinear(linear),
                Access {
                    write,
                    user: self.user,
                },
            )
            .map(|t| t.phys.0)
            .map_err(|_| MemFault { linear }),
        }
    }

    /// The physical pieces of `len` bytes at `linear`, page by page.
    fn pieces(&self, linear: u32, len: usize, write: bool) -> Result<Vec<(u32, usize)>, MemFault> {
        let mut out = Vec::with_capacity(2);
        let mut done = 0usize;
        while done < len {
            let at = linear.wrapping_add(done as u32);
            let chunk = (len - done).min((PAGE_SIZE - (at & (PAGE_SIZE - 1))) as usize);
            out.push((self.physical(at, write)?, chunk));
            done += chunk;
        }
        Ok(out)
    }

    fn inside_ram(&self, phys: u32, len: usize) -> bool {
        (phys as usize)
            .checked_add(len)
            .is_some_and(|end| end <= self.ram.size())
    }
}

impl backdoor::GuestMemory for LinearMemory<'_> {
    fn read(&mut self, linear: u32, buf: &mut [u8]) -> Result<(), MemFault> {
        let pieces = self.pieces(linear, buf.len(), false)?;
        self.ram.read_pieces_or_ones(&pieces, buf);
        Ok(())
    }

    fn write(&mut self, linear: u32, data: &[u8]) -> Result<(), MemFault> {
        let pieces = self.pieces(linear, data.len(), true)?;
        if !pieces.iter().all(|&(phys, n)| self.inside_ram(phys, n)) {
            return Err(MemFault { linear });
        }
        let mut at = 0;
        for (phys, n) in pieces {
            // Inside RAM (checked above): cannot fail.
            let _ = self.ram.write(GuestPhys(phys), &data[at..at + n]);
            at += n;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use backdoor::GuestMemory;

    const P: u32 = 1;
    const RW: u32 = 2;
    const US: u32 = 4;

    /// 4 MiB of RAM, page directory at 0x1000, page table at 0x2000:
    /// linear 0x40_0000 -> 0x5000 (supervisor, read-only), 0x40_1000 ->
    /// 0x6000 (user, writable).
    fn paged() -> (GuestRam, Translation) {
        let ram = GuestRam::new(4).unwrap();
        ram.write_u32(GuestPhys(0x1000 + 4), 0x2000 | P | RW | US)
            .unwrap();
        ram.write_u32(GuestPhys(0x2000), 0x5000 | P).unwrap();
        ram.write_u32(GuestPhys(0x2004), 0x6000 | P | RW | US)
            .unwrap();
        let translation = Translation::from_control_registers(0x8001_0011, 0x1000, 0);
        (ram, translation)
    }

    #[test]
    fn control_registers_select_the_translation() {
        assert!(matches!(
            Translation::from_control_registers(0x11, 0x1000, 0),
            Translation::Identity
        ));
        assert!(matches!(
            Translation::from_control_registers(0x8000_0011, 0x1000, CR4_PAE),
            Translation::Unsupported
        ));
        assert!(matches!(
            Translation::from_control_registers(0x8000_0011, 0x1000, CR4_PSE),
            Translation::Paged(PagingMode {
                pse: true,
                wp: false,
                cr3: 0x1000
            })
        ));
    }

    #[test]
    fn paged_reads_and_writes_cross_pages_through_the_page_tables() {
        let (ram, translation) = paged();
        ram.write(GuestPhys(0x5ffe), b"ab").unwrap();
        let mut mem = LinearMemory {
            ram: &ram,
            translation,
            user: false,
        };
        mem.write(0x40_1000, b"cd").unwrap();
        let mut buf = [0u8; 4];
        mem.read(0x40_0ffe, &mut buf).unwrap();
        assert_eq!(&buf, b"abcd");
    }

    #[test]
    fn a_write_that_faults_on_its_second_page_writes_nothing() {
        let (ram, translation) = paged();
        let mut mem = LinearMemory {
            ram: &ram,
            translation,
            user: true,
        };
        // 0x40_1ffe is user-writable, 0x40_2000 is not mapped.
        assert_eq!(
            mem.write(0x40_1ffe, b"xyzw"),
            Err(MemFault { linear: 0x40_2000 })
        );
        let mut buf = [0u8; 2];
        ram.read(GuestPhys(0x6ffe), &mut buf).unwrap();
        assert_eq!(buf, [0, 0]);
    }

    #[test]
    fn user_accesses_to_supervisor_pages_fault() {
        let (ram, translation) = paged();
        let mut mem = LinearMemory {
            ram: &ram,
            translation,
            user: true,
        };
        let mut buf = [0u8; 1];
        assert!(mem.read(0x40_0000, &mut buf).is_err());
    }

    #[test]
    fn reads_outside_ram_are_all_ones_and_writes_there_fault() {
        let ram = GuestRam::new(1).unwrap();
        let mut mem = LinearMemory {
            ram: &ram,
            translation: Translation::Identity,
            user: false,
        };
        let mut buf = [0u8; 2];
        mem.read(0x20_0000, &mut buf).unwrap();
        assert_eq!(buf, [0xff, 0xff]);
        assert!(mem.write(0xf_ffff, b"ab").is_err());
    }

    #[test]
    fn pae_paging_faults() {
        let ram = GuestRam::new(1).unwrap();
        let mut mem = LinearMemory {
            ram: &ram,
            translation: Translation::Unsupported,
            user: false,
        };
        assert!(mem.read(0, &mut [0u8; 1]).is_err());
    }
}
