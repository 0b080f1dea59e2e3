//! The host facts the backdoor reports, and the wall clock it reads.
//!
//! Invariant: the backdoor never asks the real host for anything; every value
//! it reports comes from a [`HostFacts`] or a [`WallClock`] the embedder
//! chose, so tests can fix them.

use crate::abi;
use std::time::{SystemTime, UNIX_EPOCH};

/// Facts about the virtual machine the backdoor reports to the guest.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HostFacts {
    /// TSC frequency in Hz (GETHZ EAX:EBX, GETMHZ EAX / 10^6).
    pub tsc_hz: u64,
    /// APIC bus frequency in Hz (GETHZ ECX).
    pub bus_hz: u32,
    /// Guest memory in MiB (GETMEMSIZE EAX).
    pub mem_size_mib: u32,
    /// The VM's BIOS UUID (GETUUID EAX..EDX, little-endian words).
    pub uuid: [u8; 16],
    /// GETVERSION ECX: one of [`abi::product`].
    pub product_type: u32,
    /// GETHWVERSION EAX: virtual hardware version.
    pub hw_version: u32,
    /// GETBUILDNUM EAX.
    pub build_number: u32,
    /// GET_VCPU_INFO EAX (bit 31, "not supported", is always cleared).
    pub vcpu_info: u32,
    /// Max time lag in microseconds (GETTIME*/ECX).
    pub max_time_lag_us: u32,
    /// Interrupt lag in microseconds (GETTIMEFULL_WITH_LAG EDI).
    pub interrupt_lag_us: u32,
    /// Whether RECVSIZE/SENDSIZE advertise the high-bandwidth port.
    pub high_bandwidth: bool,
    /// Seed of the GuestRPC cookie generator.
    pub cookie_seed: u64,
}

impl Default for HostFacts {
    fn default() -> Self {
        HostFacts {
            tsc_hz: 2_000_000_000,
            bus_hz: 66_000_000,
            mem_size_mib: 128,
            uuid: [0; 16],
            product_type: abi::product::WORKSTATION,
            hw_version: 4,
            build_number: 0,
            vcpu_info: 0,
            max_time_lag_us: 1_000_000,
            interrupt_lag_us: 0,
            high_bandwidth: true,
            cookie_seed: 0x6E65_7374_6D6F_6E21,
        }
    }
}

/// A point of wall-clock time.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct HostTime {
    /// Seconds since the Unix epoch.
    pub secs: u64,
    /// Microseconds within the second (below 1 000 000).
    pub micros: u32,
}

/// Where GETTIME and friends read the host time.
pub trait WallClock {
    /// The current host time.
    fn now(&mut self) -> HostTime;
}

/// The host's real clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now(&mut self) -> HostTime {
        let since_epoch = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        HostTime {
            secs: since_epoch.as_secs(),
            micros: since_epoch.subsec_micros(),
        }
    }
}

/// A clock that always answers the same time.
#[derive(Clone, Copy, Debug, Default)]
pub struct FixedClock(pub HostTime);

impl WallClock for FixedClock {
    fn now(&mut self) -> HostTime {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn system_clock_is_after_2020() {
        let now = SystemClock.now();
        assert!(now.secs > 1_577_836_800);
        assert!(now.micros < 1_000_000);
    }

    #[test]
    fn fixed_clock_repeats_its_time() {
        let time = HostTime { secs: 7, micros: 8 };
        let mut clock = FixedClock(time);
        assert_eq!(clock.now(), time);
        assert_eq!(clock.now(), time);
    }
}
