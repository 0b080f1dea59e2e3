//! Newtypes for the three address spaces, so they never mix silently.

/// The size of a guest (and host) page.
pub const PAGE_SIZE: u32 = 4096;

/// A guest-physical address (32-bit, no PAE).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GuestPhys(pub u32);

/// A guest-linear address (after segmentation, before paging).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct GuestLinear(pub u32);

/// An address in the monitor's own (host) address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HostAddr(pub usize);

impl GuestPhys {
    /// The guest frame number of this address.
    pub fn frame(self) -> u32 {
        self.0 / PAGE_SIZE
    }
    /// This address plus `off`, or `None` on 32-bit overflow.
    pub fn checked_add(self, off: u32) -> Option<GuestPhys> {
        self.0.checked_add(off).map(GuestPhys)
    }
}

impl GuestLinear {
    /// The guest linear page number of this address.
    pub fn page(self) -> u32 {
        self.0 / PAGE_SIZE
    }
}

impl std::fmt::Display for GuestPhys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "phys {:#010x}", self.0)
    }
}

impl std::fmt::Display for GuestLinear {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "linear {:#010x}", self.0)
    }
}
