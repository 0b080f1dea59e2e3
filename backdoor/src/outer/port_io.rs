//! Real port I/O to the outer VMware backdoor from this host process.
//!
//! Invariants:
//! * A `PortIoTransport` exists only after CPUID named VMware and
//!   `ioperm(0x5658, 2, 1)` succeeded, so the `in` it executes cannot fault.
//! * `ioperm` grants are per thread on Linux, so the transport is neither
//!   `Send` nor `Sync`: it is used on the thread that opened it.

use super::detect::hypervisor_vendor;
use super::{OuterTransport, VMWARE_VENDOR};
use crate::abi::BDOOR_PORT;
use crate::Regs;
use std::marker::PhantomData;

/// Why the outer backdoor port cannot be used.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum PortAccessError {
    /// CPUID does not name VMware; the port must not be touched.
    #[error("the hypervisor is {0:?}, not VMware")]
    NotVmware(Option<String>),
    /// `ioperm` refused (usually: no CAP_SYS_RAWIO).
    #[error("ioperm(0x5658, 2, 1) failed: {0}")]
    Ioperm(String),
}

/// Port I/O to the outer backdoor (`in eax, dx` with all registers loaded).
#[derive(Debug)]
pub struct PortIoTransport {
    /// Keeps the transport on the thread whose I/O bitmap was widened.
    _same_thread: PhantomData<*const ()>,
}

impl PortIoTransport {
    /// Checks CPUID for VMware, then asks the kernel for ports 0x5658-0x5659.
    pub fn open() -> Result<Self, PortAccessError> {
        let vendor = hypervisor_vendor();
        if vendor.as_deref() != Some(VMWARE_VENDOR) {
            return Err(PortAccessError::NotVmware(vendor));
        }
        request_port_access()?;
        Ok(PortIoTransport {
            _same_thread: PhantomData,
        })
    }
}

impl OuterTransport for PortIoTransport {
    fn low_bandwidth(&mut self, regs: Regs) -> Regs {
        in_with_all_registers(regs)
    }
}

/// Reopens the outer backdoor (NESTING_CONTROL OPEN_BACKDOOR) from a signal
/// handler: no allocation, no locks, one `in` instruction.
///
/// Call it only on a thread on which [`PortIoTransport::open`] succeeded
/// (the port is granted per thread); the monitor arms its handler only
/// after the handshake restricted the outer backdoor on that thread.
pub fn reopen_outer_backdoor_signal_safe() {
    let cmd = u32::from(crate::abi::cmd::NESTING_CONTROL)
        | (u32::from(crate::abi::nesting::OPEN_BACKDOOR) << 16);
    let regs = Regs {
        eax: crate::abi::BDOOR_MAGIC,
        ebx: 0,
        ecx: cmd,
        edx: u32::from(BDOOR_PORT),
        esi: 0,
        edi: 0,
        ebp: 0,
    };
    in_with_all_registers(regs);
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn request_port_access() -> Result<(), PortAccessError> {
    // SAFETY: ioperm only changes this thread's I/O permission bitmap; it
    // takes plain integers and touches no memory of ours.
    let rc = unsafe { libc::ioperm(libc::c_ulong::from(BDOOR_PORT), 2, 1) };
    if rc == 0 {
        Ok(())
    } else {
        Err(PortAccessError::Ioperm(
            std::io::Error::last_os_error().to_string(),
        ))
    }
}

#[cfg(all(target_os = "linux", target_arch = "x86_64"))]
fn in_with_all_registers(regs: Regs) -> Regs {
    let mut out = regs;
    let mut rbx = u64::from(regs.ebx);
    // SAFETY: this function is reached only through a PortIoTransport, which
    // exists only after CPUID named VMware and ioperm granted the port to
    // this thread (the transport is !Send), so `in` neither faults nor
    // touches memory. RBX is reserved by the compiler, so it is swapped with
    // a scratch register around the `in` and restored before the block ends.
    unsafe {
        core::arch::asm!(
            "xchg {bx}, rbx",
            "in eax, dx",
            "xchg {bx}, rbx",
            bx = inout(reg) rbx,
            inout("eax") out.eax,
            inout("ecx") out.ecx,
            inout("edx") out.edx,
            inout("esi") out.esi,
            inout("edi") out.edi,
            options(nostack, preserves_flags),
        );
    }
    out.ebx = (rbx & 0xFFFF_FFFF) as u32;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_refuses_a_host_that_is_not_vmware() {
        if hypervisor_vendor().as_deref() != Some(VMWARE_VENDOR) {
            assert!(matches!(
                PortIoTransport::open(),
                Err(PortAccessError::NotVmware(_))
            ));
        }
    }
}
