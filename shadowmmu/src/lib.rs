//! The shadow MMU of nestmon: guest RAM, the linear windows through which
//! translated code reaches guest memory, and (with paging) the shadow
//! structures kept coherent with the guest's page tables.
//!
//! Invariants:
//! - Guest RAM is one memfd; every host view of guest memory is a mapping of
//!   that memfd, so the monitor's view and the guest's view never diverge.
//! - A [`LinearWindow`] is a 4 GiB-aligned host reservation of
//!   [`WINDOW_GUARD`] + 4 GiB + [`WINDOW_GUARD_AFTER`] bytes. Guest linear address
//!   `lin` lives at `base + lin`; nothing outside the window's reservation is
//!   ever reachable through it, and everything that is not guest RAM mapped
//!   on purpose is `PROT_NONE`.

mod addr;
mod frameset;
mod ram;
mod soft;
mod walk;
mod watch;
mod window;

pub use addr::{GuestLinear, GuestPhys, HostAddr, PAGE_SIZE};
pub use frameset::FrameSet;
pub use ram::{GuestRam, RamError, MAX_GUEST_RAM, RAM_GUARD};
pub use soft::{
    tag_of, SoftTlb, SOFT_ENTRIES, SOFT_READ_FRAMES, SOFT_READ_TAGS, SOFT_TABLE_BYTES,
    SOFT_TLB_BYTES, SOFT_TLB_OFFSET, SOFT_WRITE_FRAMES, SOFT_WRITE_TAGS,
};
pub use walk::{walk, Access, EntryAt, PageFault, PagingMode, Translated};
pub use watch::{
    entry_change_matters, Consequences, FrameWatcher, Invalidation, SpaceId, TableUse, WatchStats,
    FLOOD_WRITES, UNSYNC_AFTER_WRITES,
};
pub use window::{
    LinearWindow, PageProt, WindowError, CHAIN_SLOTS, CHAIN_TABLE_OFFSET, WINDOW_GUARD,
    WINDOW_GUARD_AFTER,
};
