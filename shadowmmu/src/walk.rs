//! Guest page-table walks (32-bit paging, 4 KiB and 4 MiB pages), with the
//! accessed and dirty bits set as the hardware sets them.
//!
//! Invariant: a walk reads and writes guest RAM only through [`GuestRam`],
//! and only the PDE/PTE it uses; A is set on every successful walk and D
//! only on a successful write walk.

use crate::{GuestLinear, GuestPhys, GuestRam};

const P: u32 = 1;
const RW: u32 = 2;
const US: u32 = 4;
const A: u32 = 0x20;
const D: u32 = 0x40;
const PS: u32 = 0x80;

/// Paging controls relevant to a walk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagingMode {
    /// CR3.
    pub cr3: u32,
    /// CR4.PSE: 4 MiB pages allowed.
    pub pse: bool,
    /// CR0.WP: supervisor writes honour R/W.
    pub wp: bool,
}

/// The kind of access being translated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access {
    /// A write.
    pub write: bool,
    /// From CPL 3.
    pub user: bool,
}

/// A successful translation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Translated {
    /// Physical address of the byte.
    pub phys: GuestPhys,
    /// Writes to the page are allowed now (R/W and, for later writes
    /// without a new walk, D already set).
    pub writable_and_dirty: bool,
    /// The mapping is a 4 MiB page (PDE.PS with CR4.PSE): INVLPG of any
    /// address in it invalidates all of it.
    pub large: bool,
    /// The page-directory entry used, as the walk left it.
    pub pde: EntryAt,
    /// The page-table entry used, as the walk left it (none for a 4 MiB
    /// page).
    pub pte: Option<EntryAt>,
}

/// A paging-structure entry: where it is and what it holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EntryAt {
    /// Its guest-physical address.
    pub addr: GuestPhys,
    /// Its value.
    pub value: u32,
}

impl EntryAt {
    /// The guest frame holding the entry (a page directory or table).
    pub fn table_frame(self) -> u32 {
        self.addr.frame()
    }

    /// The entry's index in its table.
    pub fn index(self) -> u32 {
        (self.addr.0 & 0xfff) / 4
    }
}

/// A page fault: the error code the hardware would push.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PageFault {
    /// The faulting linear address (CR2).
    pub addr: GuestLinear,
    /// Error code (P, W/R, U/S bits).
    pub error_code: u32,
}

fn fault(lin: GuestLinear, present: bool, acc: Access) -> PageFault {
    PageFault {
        addr: lin,
        error_code: u32::from(present) | (u32::from(acc.write) << 1) | (u32::from(acc.user) << 2),
    }
}

fn read_entry(ram: &GuestRam, addr: u32, lin: GuestLinear, acc: Access) -> Result<u32, PageFault> {
    ram.read_u32(GuestPhys(addr))
        .map_err(|_| fault(lin, false, acc))
}

/// Walks the guest page tables for `lin`.
pub fn walk(
    ram: &GuestRam,
    mode: PagingMode,
    lin: GuestLinear,
    acc: Access,
) -> Result<Translated, PageFault> {
    let pde_addr = (mode.cr3 & !0xfff) + ((lin.0 >> 22) << 2);
    let pde = read_entry(ram, pde_addr, lin, acc)?;
    if pde & P == 0 {
        return Err(fault(lin, false, acc));
    }
    if pde & PS != 0 && mode.pse {
        check_rights(pde, pde, mode, lin, acc)?;
        let new = pde | A | if acc.write { D } else { 0 };
        write_back(ram, pde_addr, pde, new);
        let phys = (pde & 0xffc0_0000) | (lin.0 & 0x003f_ffff);
        return Ok(Translated {
            phys: GuestPhys(phys),
            writable_and_dirty: writable(pde, pde, mode, acc) && new & D != 0,
            large: true,
            pde: EntryAt {
                addr: GuestPhys(pde_addr),
                value: new,
            },
            pte: None,
        });
    }
    let pte_addr = (pde & !0xfff) + (((lin.0 >> 12) & 0x3ff) << 2);
    let pte = read_entry(ram, pte_addr, lin, acc)?;
    if pte & P == 0 {
        return Err(fault(lin, false, acc));
    }
    check_rights(pde, pte, mode, lin, acc)?;
    write_back(ram, pde_addr, pde, pde | A);
    let new = pte | A | if acc.write { D } else { 0 };
    write_back(ram, pte_addr, pte, new);
    let phys = (pte & !0xfff) | (lin.0 & 0xfff);
    Ok(Translated {
        phys: GuestPhys(phys),
        writable_and_dirty: writable(pde, pte, mode, acc) && new & D != 0,
        large: false,
        pde: EntryAt {
            addr: GuestPhys(pde_addr),
            value: pde | A,
        },
        pte: Some(EntryAt {
            addr: GuestPhys(pte_addr),
            value: new,
        }),
    })
}

fn writable(pde: u32, pte: u32, mode: PagingMode, acc: Access) -> bool {
    let rw = pde & pte & RW != 0;
    rw || (!acc.user && !mode.wp)
}

fn check_rights(
    pde: u32,
    pte: u32,
    mode: PagingMode,
    lin: GuestLinear,
    acc: Access,
) -> Result<(), PageFault> {
    if acc.user && pde & pte & US == 0 {
        return Err(fault(lin, true, acc));
    }
    if acc.write && !writable(pde, pte, mode, acc) {
        return Err(fault(lin, true, acc));
    }
    Ok(())
}

fn write_back(ram: &GuestRam, addr: u32, old: u32, new: u32) {
    if old != new {
        let _ = ram.write_u32(GuestPhys(addr), new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (GuestRam, PagingMode) {
        let ram = GuestRam::new(4).unwrap();
        // PD at 0x1000, PT at 0x2000; linear 0x0040_3000 -> 0x5000.
        ram.write_u32(GuestPhys(0x1000 + 4), 0x2000 | P | RW)
            .unwrap();
        ram.write_u32(GuestPhys(0x2000 + 3 * 4), 0x5000 | P | RW)
            .unwrap();
        (
            ram,
            PagingMode {
                cr3: 0x1000,
                pse: true,
                wp: true,
            },
        )
    }

    #[test]
    fn read_walk_sets_accessed_not_dirty() {
        let (ram, mode) = setup();
        let t = walk(
            &ram,
            mode,
            GuestLinear(0x0040_3123),
            Access {
                write: false,
                user: false,
            },
        )
        .unwrap();
        assert_eq!(t.phys, GuestPhys(0x5123));
        assert!(!t.writable_and_dirty);
        let pte = ram.read_u32(GuestPhys(0x200c)).unwrap();
        assert_eq!(pte & (A | D), A);
    }

    #[test]
    fn write_walk_sets_dirty() {
        let (ram, mode) = setup();
        let t = walk(
            &ram,
            mode,
            GuestLinear(0x0040_3000),
            Access {
                write: true,
                user: false,
            },
        )
        .unwrap();
        assert!(t.writable_and_dirty);
        assert_eq!(ram.read_u32(GuestPhys(0x200c)).unwrap() & D, D);
    }

    #[test]
    fn not_present_pte_faults_with_error_code() {
        let (ram, mode) = setup();
        let f = walk(
            &ram,
            mode,
            GuestLinear(0x0040_4000),
            Access {
                write: true,
                user: false,
            },
        )
        .unwrap_err();
        assert_eq!(f.error_code, 2);
        assert_eq!(f.addr, GuestLinear(0x0040_4000));
    }

    #[test]
    fn read_only_page_faults_supervisor_write_only_with_wp() {
        let (ram, mut mode) = setup();
        ram.write_u32(GuestPhys(0x200c), 0x5000 | P).unwrap();
        let acc = Access {
            write: true,
            user: false,
        };
        assert_eq!(
            walk(&ram, mode, GuestLinear(0x0040_3000), acc)
                .unwrap_err()
                .error_code,
            3
        );
        mode.wp = false;
        assert!(walk(&ram, mode, GuestLinear(0x0040_3000), acc).is_ok());
    }

    #[test]
    fn large_page_maps_4mib() {
        let (ram, mode) = setup();
        ram.write_u32(GuestPhys(0x1000 + 8), 0x0040_0000 | P | RW | PS)
            .unwrap();
        let t = walk(
            &ram,
            mode,
            GuestLinear(0x0081_2345),
            Access {
                write: false,
                user: false,
            },
        )
        .unwrap();
        assert_eq!(t.phys, GuestPhys(0x0041_2345));
    }
}
