//! How much the guest used the backdoor, for the embedder's statistics.
//!
//! Invariant: counters only grow (wrapping is out of reach of a guest:
//! each step is one guest port access).

/// Counts of backdoor traffic since the [`crate::Backdoor`] was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Low-bandwidth accesses (port 0x5658) with the magic in EAX, every
    /// command included.
    pub low_bandwidth_calls: u64,
    /// High-bandwidth transfers (`rep insb`/`rep outsb` on port 0x5659)
    /// with the magic, failed ones included.
    pub high_bandwidth_transfers: u64,
    /// RPCI requests answered (`info-get`, `info-set`, `log`, ...).
    pub rpci_requests: u64,
    /// TCLO channels opened.
    pub tclo_channels_opened: u64,
    /// Messages received on TCLO channels: the guest's polls, each also the
    /// reply to the command before it (if any).
    pub tclo_polls: u64,
    /// TCLO commands handed to the guest.
    pub tclo_commands_sent: u64,
}

impl Counters {
    /// Every counter with a short name, in a fixed order.
    pub fn named(&self) -> [(&'static str, u64); 6] {
        [
            ("low-bandwidth calls", self.low_bandwidth_calls),
            ("high-bandwidth transfers", self.high_bandwidth_transfers),
            ("RPCI requests", self.rpci_requests),
            ("TCLO channels opened", self.tclo_channels_opened),
            ("TCLO polls", self.tclo_polls),
            ("TCLO commands sent", self.tclo_commands_sent),
        ]
    }
}
