//! The bounds a hostile guest cannot push the backdoor past.
//!
//! Invariant: every buffer the backdoor keeps is bounded by one of these
//! numbers, so [`Limits::max_buffered_bytes`] bounds the total memory the
//! guest can make the backdoor hold.

use crate::abi;

/// Capacity limits of the backdoor host side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// GuestRPC channels open at once (VMware: 8).
    pub max_channels: usize,
    /// Largest message in either direction, in bytes (VMware: 64 KiB in).
    pub max_message: u32,
    /// Keys the guest may create in the guestinfo store.
    pub max_guestinfo_keys: usize,
    /// Total bytes (keys + values) of the guestinfo store the guest may
    /// reach through `info-set`.
    pub max_guestinfo_bytes: usize,
    /// Events kept until the embedder drains them (oldest dropped first).
    pub max_events: usize,
    /// Longest text kept in one event, in bytes.
    pub max_event_text: usize,
    /// Host-to-guest TCLO commands waiting to be polled.
    pub max_tclo_queue: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_channels: abi::MAX_CHANNELS,
            max_message: abi::MAX_MESSAGE_SIZE,
            max_guestinfo_keys: 1024,
            max_guestinfo_bytes: 1024 * 1024,
            max_events: 256,
            max_event_text: 4096,
            max_tclo_queue: 64,
        }
    }
}

impl Limits {
    /// The largest reply the host builds: a status prefix ("1 ") and a value.
    pub fn max_reply(&self) -> usize {
        self.max_message as usize + 2
    }

    /// An upper bound of [`crate::Backdoor::buffered_bytes`] for guest-driven
    /// growth (the embedder's initial guestinfo values come on top).
    pub fn max_buffered_bytes(&self) -> usize {
        let per_channel = self.max_message as usize + self.max_reply() + self.max_message as usize;
        let events = self.max_events * 2 * self.max_event_text;
        let tclo = self.max_tclo_queue * self.max_message as usize;
        self.max_channels * per_channel + self.max_guestinfo_bytes + events + tclo
    }
}
