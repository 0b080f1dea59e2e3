//! The VM configuration (`.vmx` keys and command-line equivalents).

use std::collections::BTreeMap;
use std::path::PathBuf;

/// Where COM1's output goes.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum SerialBackend {
    /// The monitor's standard output.
    #[default]
    Stdio,
    /// Appended to a file.
    File(PathBuf),
    /// A Unix socket the monitor connects to.
    UnixSocket(PathBuf),
    /// Discarded.
    None,
}

/// A fully resolved VM description.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// The Multiboot kernel to boot; `None` boots the embedded default guest.
    pub kernel: Option<PathBuf>,
    /// The kernel command line (after the kernel's file name).
    pub append: String,
    /// Guest RAM in MiB.
    pub memsize_mib: u64,
    /// COM1 output.
    pub serial0: SerialBackend,
    /// `guestinfo.*` initial values (keys without the `guestinfo.` prefix).
    pub guestinfo: BTreeMap<String, String>,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            kernel: None,
            append: String::new(),
            memsize_mib: 128,
            serial0: SerialBackend::Stdio,
            guestinfo: BTreeMap::new(),
        }
    }
}
