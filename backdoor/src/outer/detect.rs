//! Detection of the outer hypervisor and of its backdoor.
//!
//! Invariant: [`detect_outer`] opens the backdoor port only after CPUID says
//! the hypervisor is VMware; [`probe_backdoor`] only sends GETVERSION and
//! NESTING_CONTROL QUERY, which change no state in the outer hypervisor.

use super::{OuterTransport, PortIoTransport, VMWARE_VENDOR};
use crate::abi::{self, cmd, nesting};
use crate::Regs;
use std::fmt;

/// What `detect_outer` found out about the hypervisor running nestmon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OuterDetection {
    /// The 12-character vendor of CPUID leaf 0x4000_0000, or `None` when
    /// CPUID.1:ECX bit 31 says no hypervisor is present.
    pub hypervisor_vendor: Option<String>,
    /// What the VMware backdoor answered (`NotVmware` for other vendors).
    pub backdoor: BackdoorProbe,
}

impl OuterDetection {
    /// True when the outer hypervisor is VMware.
    pub fn is_vmware(&self) -> bool {
        self.hypervisor_vendor.as_deref() == Some(VMWARE_VENDOR)
    }

    /// The outer NESTING_CONTROL version when the backdoor supports it.
    pub fn nesting_version(&self) -> Option<u32> {
        match self.backdoor {
            BackdoorProbe::Answered {
                nesting_version, ..
            } => nesting_version,
            _ => None,
        }
    }
}

impl fmt::Display for OuterDetection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.hypervisor_vendor {
            Some(vendor) => write!(f, "hypervisor {vendor:?}: {}", self.backdoor),
            None => write!(f, "no hypervisor: {}", self.backdoor),
        }
    }
}

/// The outcome of poking (or deliberately not poking) the outer backdoor.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BackdoorProbe {
    /// The hypervisor is not VMware; the port was not touched.
    NotVmware,
    /// VMware, but this process may not do port I/O (`ioperm` failed).
    PortAccessDenied(String),
    /// VMware, but GETVERSION did not return the magic in EBX.
    NoAnswer,
    /// The backdoor answered GETVERSION.
    Answered {
        /// EAX of GETVERSION (6 on current products).
        version: u32,
        /// ECX of GETVERSION: the `VMX_TYPE_*` product type.
        product_type: u32,
        /// EAX of NESTING_CONTROL QUERY when it is at least 2.
        nesting_version: Option<u32>,
    },
}

impl fmt::Display for BackdoorProbe {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BackdoorProbe::NotVmware => write!(f, "no VMware backdoor (not probed)"),
            BackdoorProbe::PortAccessDenied(why) => {
                write!(f, "VMware backdoor not reachable: {why}")
            }
            BackdoorProbe::NoAnswer => write!(f, "VMware backdoor did not answer"),
            BackdoorProbe::Answered {
                version,
                product_type,
                nesting_version,
            } => {
                write!(
                    f,
                    "VMware backdoor version {version}, product type {product_type}, "
                )?;
                match nesting_version {
                    Some(v) => write!(f, "nesting control version {v}"),
                    None => write!(f, "no nesting control"),
                }
            }
        }
    }
}

/// Finds the outer hypervisor and, only if it is VMware, probes its backdoor
/// through real port I/O on the calling thread.
pub fn detect_outer() -> OuterDetection {
    let hypervisor_vendor = hypervisor_vendor();
    let backdoor = if hypervisor_vendor.as_deref() != Some(VMWARE_VENDOR) {
        BackdoorProbe::NotVmware
    } else {
        match PortIoTransport::open() {
            Ok(mut transport) => probe_backdoor(&mut transport),
            Err(error) => BackdoorProbe::PortAccessDenied(error.to_string()),
        }
    };
    OuterDetection {
        hypervisor_vendor,
        backdoor,
    }
}

/// Sends GETVERSION and, if it answers, NESTING_CONTROL QUERY.
pub fn probe_backdoor(transport: &mut dyn OuterTransport) -> BackdoorProbe {
    let reply = transport.low_bandwidth(Regs::backdoor_call(cmd::GETVERSION, 0, !abi::BDOOR_MAGIC));
    if reply.ebx != abi::BDOOR_MAGIC || reply.eax == abi::ALL_ONES {
        return BackdoorProbe::NoAnswer;
    }
    BackdoorProbe::Answered {
        version: reply.eax,
        product_type: reply.ecx,
        nesting_version: query_nesting(transport),
    }
}

/// NESTING_CONTROL QUERY: the version when it is at least 2 (the rule of
/// open-vm-tools' `Hostinfo_NestingSupported`).
pub(super) fn query_nesting(transport: &mut dyn OuterTransport) -> Option<u32> {
    let reply =
        transport.low_bandwidth(Regs::backdoor_call(cmd::NESTING_CONTROL, nesting::QUERY, 0));
    let version = reply.eax;
    (version >= u32::from(nesting::QUERY) && version != abi::ALL_ONES).then_some(version)
}

/// The vendor string of CPUID leaf 0x4000_0000, if CPUID.1:ECX bit 31 (the
/// hypervisor-present bit) is set.
pub fn hypervisor_vendor() -> Option<String> {
    let leaf1 = cpuid(1);
    if leaf1.ecx & (1 << 31) == 0 {
        return None;
    }
    let leaf = cpuid(0x4000_0000);
    Some(vendor_from_registers(leaf.ebx, leaf.ecx, leaf.edx))
}

/// The 12-byte vendor string CPUID spreads over EBX, ECX, EDX, with NULs
/// and non-printable bytes dropped.
fn vendor_from_registers(ebx: u32, ecx: u32, edx: u32) -> String {
    [ebx, ecx, edx]
        .iter()
        .flat_map(|reg| reg.to_le_bytes())
        .filter(|byte| byte.is_ascii_graphic() || *byte == b' ')
        .map(char::from)
        .collect()
}

#[cfg(target_arch = "x86_64")]
fn cpuid(leaf: u32) -> core::arch::x86_64::CpuidResult {
    core::arch::x86_64::__cpuid(leaf)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Silent;
    impl OuterTransport for Silent {
        fn low_bandwidth(&mut self, mut regs: Regs) -> Regs {
            regs.eax = abi::ALL_ONES;
            regs
        }
    }

    struct OldVmware;
    impl OuterTransport for OldVmware {
        fn low_bandwidth(&mut self, mut regs: Regs) -> Regs {
            if regs.command() == cmd::GETVERSION {
                regs.eax = 6;
                regs.ebx = abi::BDOOR_MAGIC;
                regs.ecx = abi::product::WORKSTATION;
            } else {
                regs.eax = abi::ALL_ONES;
            }
            regs
        }
    }

    #[test]
    fn vendor_string_is_read_from_ebx_ecx_edx_in_order() {
        let ebx = u32::from_le_bytes(*b"VMwa");
        let ecx = u32::from_le_bytes(*b"reVM");
        let edx = u32::from_le_bytes(*b"ware");
        assert_eq!(vendor_from_registers(ebx, ecx, edx), "VMwareVMware");
    }

    #[test]
    fn vendor_string_drops_nul_padding() {
        let ebx = u32::from_le_bytes(*b"KVMK");
        let ecx = u32::from_le_bytes(*b"VMKV");
        let edx = u32::from_le_bytes([b'M', 0, 0, 0]);
        assert_eq!(vendor_from_registers(ebx, ecx, edx), "KVMKVMKVM");
    }

    #[test]
    fn silent_backdoor_is_reported_as_no_answer() {
        assert_eq!(probe_backdoor(&mut Silent), BackdoorProbe::NoAnswer);
    }

    #[test]
    fn backdoor_without_nesting_control_reports_no_nesting_version() {
        assert_eq!(
            probe_backdoor(&mut OldVmware),
            BackdoorProbe::Answered {
                version: 6,
                product_type: abi::product::WORKSTATION,
                nesting_version: None
            }
        );
    }

    #[test]
    fn detect_outer_never_probes_a_non_vmware_host() {
        let detection = detect_outer();
        if !detection.is_vmware() {
            assert_eq!(detection.backdoor, BackdoorProbe::NotVmware);
        }
    }

    #[test]
    fn detection_display_names_vendor_and_nesting() {
        let detection = OuterDetection {
            hypervisor_vendor: Some(VMWARE_VENDOR.into()),
            backdoor: BackdoorProbe::Answered {
                version: 6,
                product_type: 4,
                nesting_version: Some(2),
            },
        };
        let text = detection.to_string();
        assert!(text.contains("VMwareVMware"), "{text}");
        assert!(text.contains("nesting control version 2"), "{text}");
        assert_eq!(detection.nesting_version(), Some(2));
    }
}
