//! The machine: guest RAM, devices, the loaded guest and the vCPU run loop.

use crate::config::VmConfig;
use std::path::PathBuf;

/// What `nestmon run` was asked to do beyond the VM description.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// The VM.
    pub vm: VmConfig,
    /// Print counters at exit.
    pub stats: bool,
    /// Write every translation (guest and host instructions) to this file.
    pub log_translations: Option<PathBuf>,
    /// Write the guestinfo namespace as JSON here at exit.
    pub guestinfo_out: Option<PathBuf>,
}

/// Why a run ended without a guest-chosen exit status.
#[derive(Debug, thiserror::Error)]
pub enum MachineError {
    /// The guest image or configuration cannot be used (exit status 2).
    #[error("{0}")]
    BadInput(String),
    /// The guest reached a state that cannot be continued (exit status 3).
    #[error("guest stopped: {0}")]
    GuestDied(String),
    /// The host failed us (exit status 1).
    #[error("host error: {0}")]
    Host(String),
}

impl MachineError {
    /// The process exit status for this error.
    pub fn exit_status(&self) -> i32 {
        match self {
            MachineError::BadInput(_) => 2,
            MachineError::GuestDied(_) => 3,
            MachineError::Host(_) => 1,
        }
    }
}

/// Builds the machine and runs the guest; returns the process exit status.
pub fn run(opts: &RunOptions) -> Result<i32, MachineError> {
    let _ = opts;
    Err(MachineError::Host("the run loop is being written".into()))
}
