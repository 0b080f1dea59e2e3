//! What the PC platform devices (RTC/CMOS, i8042, PCI host bridge,
//! fw_cfg) tell the guest about its machine, and the clock they read.
//!
//! Invariant: the sizes here are the machine's real ones (the RAM the
//! guest has, the vCPUs that run), so CMOS, fw_cfg and the Multiboot
//! information agree.

use super::rtc::{Clock, HostClock};
use crate::config::VmConfig;

/// Processors a guest has: nestmon runs one vCPU whatever `numvcpus`
/// says (the configuration warns about more).
pub const GUEST_CPUS: u16 = 1;

/// The machine as the PC platform devices describe it.
pub struct PcPlatform {
    /// Guest RAM in bytes, all of it from address 0.
    pub ram_bytes: u64,
    /// Processors at boot and at most.
    pub cpus: u16,
    /// The wall clock the RTC reads.
    pub clock: Box<dyn Clock>,
}

impl std::fmt::Debug for PcPlatform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PcPlatform")
            .field("ram_bytes", &self.ram_bytes)
            .field("cpus", &self.cpus)
            .finish_non_exhaustive()
    }
}

impl PcPlatform {
    /// The platform of `vm`: its RAM, one processor, the host's clock.
    pub fn for_vm(vm: &VmConfig) -> PcPlatform {
        PcPlatform {
            ram_bytes: vm.memsize_mib << 20,
            cpus: GUEST_CPUS,
            clock: Box::new(HostClock),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn platform_takes_the_ram_size_from_the_configuration() {
        let vm = VmConfig {
            memsize_mib: 256,
            ..VmConfig::default()
        };
        let platform = PcPlatform::for_vm(&vm);
        assert_eq!(platform.ram_bytes, 256 << 20);
        assert_eq!(platform.cpus, 1);
    }
}
