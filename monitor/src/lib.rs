//! nestmon's monitor: configuration, the guest CPU model, the machine
//! (RAM, devices, loader), the vCPU run loop over the binary translator, and
//! the probe of the host.

pub mod bench;
pub mod cli;
pub mod config;
pub mod console;
pub mod cpu;
pub mod cpuid;
pub mod devices;
pub mod exit_status;
pub mod input;
pub mod kvm;
pub mod loader;
pub mod machine;
pub mod mode;
pub mod probe;
pub mod vcpu;
