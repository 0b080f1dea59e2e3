//! The VM configuration (`.vmx` keys and command-line equivalents).
//!
//! A configuration is assembled from, in increasing precedence: the `.vmx`
//! file, `--set KEY=VALUE` options in order, then the dedicated flags
//! (`--kernel`, `--append`, `--memsize`). Keys are case-insensitive.
//!
//! Invariants:
//! * Every key that ends up in a [`VmConfig`] was validated into a typed
//!   field; bad values are [`ConfigError`]s naming where they came from
//!   (`file:line` or the command-line flag), never panics.
//! * A key set twice in the same source keeps its last value and produces a
//!   warning; a command-line setting silently overrides the file.
//! * Unknown keys produce a warning naming them and are otherwise ignored.
//! * Relative paths written in a `.vmx` file are relative to that file's
//!   directory; relative paths on the command line are relative to the
//!   current directory.
//!
//! The keys, their values and defaults are documented in `docs/config.md`.

mod keys;
mod values;
pub mod vmx;

use crate::cpuid::{CpuidError, CpuidMask};
use crate::input::{read_regular_file, FileKind, InputError};
use crate::loader::modules::MAX_BOOT_FILE_BYTES;
use crate::loader::MAX_KERNEL_FILE_BYTES;
use crate::mode::ModeRequest;
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

pub use keys::{ACCEL_KEY, KNOWN_KEYS, KNOWN_KEY_PREFIXES};
pub use values::parse_bool;

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
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VmConfig {
    /// The kernel (a Linux bzImage or a Multiboot kernel) to boot; `None`
    /// boots the embedded default guest
    /// (`nestmon.kernel`, `--kernel`).
    pub kernel: Option<PathBuf>,
    /// The kernel command line (for a Multiboot kernel, after the kernel's
    /// file name) (`nestmon.append`, `--append`).
    pub append: String,
    /// A Linux kernel's initrd, or a Multiboot kernel's modules
    /// (`nestmon.initrd`, `--initrd`).
    pub initrd: Vec<InitrdItem>,
    /// Guest RAM in MiB (`memsize`, `--memsize`).
    pub memsize_mib: u64,
    /// COM1 output (`serial0.*`).
    pub serial0: SerialBackend,
    /// `guestinfo.*` initial values (keys without the `guestinfo.` prefix,
    /// spelled as written).
    pub guestinfo: BTreeMap<String, String>,
    /// `displayName`: the VM's name for humans.
    pub display_name: Option<String>,
    /// `guestOS`: VMware's guest OS identifier (informational).
    pub guest_os: String,
    /// `uuid.bios`: the VM's BIOS UUID (the backdoor's GETUUID).
    pub uuid_bios: Option<[u8; 16]>,
    /// `virtualHW.version`: the virtual hardware version (GETHWVERSION).
    pub hw_version: Option<u32>,
    /// `monitor.virtual_exec` (or the older `monitor_control.vt32` /
    /// `monitor_control.enable_svm`).
    pub virtual_exec: ModeRequest,
    /// `monitor.virtual_mmu`.
    pub virtual_mmu: ModeRequest,
    /// `nestmon.accel`: the vCPU backend forced by the configuration
    /// (`"kvm"` or `"bt"`, QEMU's spelling), as `--accel` forces it from
    /// the command line (which wins over this key).
    pub accel: Option<crate::mode::Accel>,
    /// `monitor_control.restrict_backdoor`: when true, backdoor accesses
    /// from CPL > 0 are ordinary port accesses (subject to IOPL and the
    /// TSS I/O bitmap); ring 0 still reaches the backdoor.
    pub restrict_backdoor: bool,
    /// `vhv.enable`: offer virtualized VT-x/AMD-V to the guest.
    pub vhv_enable: bool,
    /// `nestmon.mmu.outOfSync`: leaf page tables the guest keeps writing
    /// may go out of sync until its next TLB flush (default true).
    pub mmu_out_of_sync: bool,
    /// `nestmon.mmu.adaptive`: instructions that keep taking host faults
    /// reach memory through the software TLB (default true).
    pub mmu_adaptive: bool,
    /// `nestmon.mmu.adaptiveStrings`: `rep movs`/`rep stos`, `rep lods`,
    /// `rep scas` and `rep cmps` may become adaptive too (a user
    /// program's after more faults than the kernel's; default true).
    pub mmu_adaptive_strings: bool,
    /// `nestmon.bt.returnStack`: guest calls and returns are host ones on
    /// a return-prediction stack, which the host predicts (default true).
    pub bt_return_stack: bool,
    /// `nestmon.bt.foldDisplacements`: a guest `[reg + disp]` becomes one
    /// host address operand, without a `lea` first (default true).
    pub bt_fold_displacements: bool,
    /// `nestmon.bt.chainTables`: with guest paging, a direct branch to
    /// another page jumps through the current view's chain table instead
    /// of probing the indirect-branch table (default true).
    pub bt_chain_tables: bool,
    /// `nestmon.bt.jumpTables`: a jump through a table of targets
    /// (`jmp [idx*4 + disp32]`) jumps through a host table in the current
    /// view's chain table, indexed as the guest's (default true).
    pub bt_jump_tables: bool,
    /// `nestmon.bt.inlineCaches`: an indirect call or jump keeps an inline
    /// cache of the one target it was seen to take (default true).
    pub bt_inline_caches: bool,
    /// `nestmon.bt.inlineLeaves`: a call to a short leaf function in the
    /// caller's page runs the callee's translation in place, without a
    /// host call and return (default true).
    pub bt_inline_leaves: bool,
    /// `nestmon.bt.superblockBranches`: how many conditional branches a
    /// translation unit goes on past (0: units end at the first one).
    pub bt_superblock_branches: u32,
    /// `nestmon.bt.followedBranches`: how many direct branches (jumps in
    /// the unit's page, loops' back edges) a translation unit follows (0:
    /// units end at them).
    pub bt_followed_branches: u32,
    /// `nestmon.bt.layoutSeed`: where translations land in the code cache
    /// (0: packed one after the other; another seed leaves its own pattern
    /// of empty lines between them), for measuring placement effects.
    pub bt_layout_seed: u32,
    /// `nestmon.apic`: the machine has a local APIC (CPUID.1:EDX.APIC, the
    /// xAPIC at `0xFEE00000`) and an I/O APIC at `0xFEC00000`, which a Linux
    /// guest finds in the ACPI MADT (default true).
    pub apic: bool,
    /// `nestmon.mmu.maxMappings`: the most host mappings the process may
    /// hold before the shadow MMU drops cached address spaces (default:
    /// three quarters of the host's `vm.max_map_count`).
    pub mmu_max_mappings: Option<u32>,
    /// `vmx.allowNested`: power on even when an outer VMware backdoor
    /// cannot be shared safely (it has no nesting control).
    pub allow_nested: bool,
    /// `hypervisor.cpuid.v0`: the hypervisor CPUID bit and leaves.
    pub hypervisor_cpuid_v0: bool,
    /// `nestmon.noReboot` (`--no-reboot`): a guest reset ends the run
    /// (exit status 5) instead of restarting the guest.
    pub no_reboot: bool,
    /// `nestmon.softPowerOffTimeout`: how many seconds SIGTERM waits for
    /// the guest to power off after asking its Tools to shut it down (0:
    /// SIGTERM stops the guest at once).
    pub soft_power_off_seconds: u32,
    /// `cpuid.<leaf>.<reg>[.amd|.intel]` masks, one per distinct key.
    pub cpuid_masks: Vec<CpuidMask>,
}

/// The largest `.vmx` file nestmon reads (VMware's own files are a few KiB).
pub const MAX_VMX_FILE_BYTES: u64 = 1 << 20;

/// Guest RAM when `memsize` is not given.
pub const DEFAULT_MEMSIZE_MIB: u64 = 128;
/// `nestmon.softPowerOffTimeout` when not given: how long SIGTERM waits
/// for a guest whose Tools were asked to shut it down.
pub const DEFAULT_SOFT_POWER_OFF_SECONDS: u32 = 30;
/// `guestOS` when not given.
pub const DEFAULT_GUEST_OS: &str = "other";

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            kernel: None,
            append: String::new(),
            initrd: Vec::new(),
            memsize_mib: DEFAULT_MEMSIZE_MIB,
            serial0: SerialBackend::Stdio,
            guestinfo: BTreeMap::new(),
            display_name: None,
            guest_os: DEFAULT_GUEST_OS.to_string(),
            uuid_bios: None,
            hw_version: None,
            virtual_exec: ModeRequest::Automatic,
            virtual_mmu: ModeRequest::Automatic,
            accel: None,
            restrict_backdoor: false,
            vhv_enable: false,
            mmu_out_of_sync: true,
            mmu_adaptive: true,
            mmu_adaptive_strings: true,
            bt_return_stack: true,
            bt_fold_displacements: true,
            bt_chain_tables: true,
            bt_jump_tables: true,
            bt_inline_caches: true,
            bt_inline_leaves: true,
            bt_superblock_branches: values::DEFAULT_SUPERBLOCK_BRANCHES,
            bt_followed_branches: values::DEFAULT_FOLLOWED_BRANCHES,
            bt_layout_seed: 0,
            apic: true,
            mmu_max_mappings: None,
            allow_nested: false,
            hypervisor_cpuid_v0: true,
            no_reboot: false,
            soft_power_off_seconds: DEFAULT_SOFT_POWER_OFF_SECONDS,
            cpuid_masks: Vec::new(),
        }
    }
}

/// Where a setting came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    /// A line of a `.vmx` file.
    File {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
    },
    /// A command-line option (`--set`, `--kernel`, …).
    CommandLine {
        /// The flag, e.g. `--set` or `--memsize`.
        flag: String,
    },
}

impl Origin {
    fn command_line(flag: &str) -> Origin {
        Origin::CommandLine {
            flag: flag.to_string(),
        }
    }

    /// True if both settings come from the same file or both from the
    /// command line (a repeat there is worth a warning).
    fn same_source(&self, other: &Origin) -> bool {
        match (self, other) {
            (Origin::File { path: a, .. }, Origin::File { path: b, .. }) => a == b,
            (Origin::CommandLine { .. }, Origin::CommandLine { .. }) => true,
            _ => false,
        }
    }

    /// The directory relative paths in this setting are relative to.
    fn base_directory(&self) -> Option<&Path> {
        match self {
            Origin::File { path, .. } => path.parent(),
            Origin::CommandLine { .. } => None,
        }
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
            Origin::CommandLine { flag } => write!(f, "command line ({flag})"),
        }
    }
}

/// One `key = value` setting and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The key as written.
    pub key: String,
    /// The value, unquoted and unescaped.
    pub value: String,
    /// Where it was written.
    pub origin: Origin,
}

/// How serious a [`Diagnostic`] is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// Something was probably not what the user meant.
    Warning,
    /// Information about how a setting was interpreted.
    Note,
    /// A VMware key nestmon has no use for (shown with `--verbose`).
    Info,
}

/// A message for the user produced while loading the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    /// Warning or note.
    pub severity: Severity,
    /// The message, starting with where the setting came from.
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let label = match self.severity {
            Severity::Warning => "warning",
            Severity::Note => "note",
            Severity::Info => "info",
        };
        write!(f, "{label}: {}", self.message)
    }
}

/// A configuration and the diagnostics produced while building it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Loaded {
    /// The configuration.
    pub config: VmConfig,
    /// Warnings and notes, in the order they arose.
    pub diagnostics: Vec<Diagnostic>,
    /// Where each applied setting came from, by lower-case key.
    pub origins: BTreeMap<String, Origin>,
}

impl Loaded {
    /// Where the setting `key` (any case) that is in effect was made.
    pub fn origin_of(&self, key: &str) -> Option<&Origin> {
        self.origins.get(&key.to_ascii_lowercase())
    }
}

/// What a file named in the configuration is for, in its messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FileRole {
    /// `nestmon.kernel`, `--kernel`.
    Kernel,
    /// An item of `nestmon.initrd`, `--initrd`.
    Initrd,
}

impl FileRole {
    /// The role with its indefinite article ("a kernel", "an initrd").
    pub fn with_article(self) -> &'static str {
        match self {
            FileRole::Kernel => "a kernel",
            FileRole::Initrd => "an initrd",
        }
    }

    /// The most nestmon reads of such a file.
    pub fn limit(self) -> u64 {
        match self {
            FileRole::Kernel => MAX_KERNEL_FILE_BYTES,
            FileRole::Initrd => MAX_BOOT_FILE_BYTES,
        }
    }
}

impl fmt::Display for FileRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FileRole::Kernel => "kernel",
            FileRole::Initrd => "initrd",
        })
    }
}

/// One item of `nestmon.initrd` (`--initrd`): a file, and the arguments
/// written after it (passed with a Multiboot module, as QEMU does).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InitrdItem {
    /// The file, relative to the `.vmx` file's directory if written there.
    pub path: PathBuf,
    /// The text after the first space of the item, if it has one.
    pub args: Option<String>,
}

/// Everything `nestmon run` was given that describes the VM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigSources {
    /// The `.vmx` file.
    pub vmx: Option<PathBuf>,
    /// `--set KEY=VALUE` arguments, in order.
    pub settings: Vec<String>,
    /// `--kernel`.
    pub kernel: Option<PathBuf>,
    /// `--append`.
    pub append: Option<String>,
    /// `--initrd`.
    pub initrd: Option<String>,
    /// `--memsize`.
    pub memsize_mib: Option<u64>,
    /// `--no-reboot`.
    pub no_reboot: bool,
}

/// Why a configuration cannot be used. Every variant means exit status 2.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The `.vmx` file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The `.vmx` path names a directory, FIFO, device or socket.
    #[error("{} is {kind}, not a .vmx file", path.display())]
    NotAVmxFile {
        /// The path given.
        path: PathBuf,
        /// What it names.
        kind: FileKind,
    },
    /// The `.vmx` file is larger than nestmon reads.
    #[error(
        "{} is larger than {} MiB ({limit} bytes), the most nestmon reads as a .vmx file",
        path.display(),
        limit >> 20
    )]
    VmxTooLarge {
        /// The file.
        path: PathBuf,
        /// The most that is read.
        limit: u64,
    },
    /// The `.vmx` file is not UTF-8.
    #[error("{}:{line}: the file is not valid UTF-8", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// The line holding the first invalid byte.
        line: usize,
    },
    /// A malformed line.
    #[error("{}:{line}: {}", path.display(), vmx::visible(reason))]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        reason: String,
    },
    /// A malformed `--set` argument.
    #[error("--set {argument:?}: {}", vmx::visible(reason))]
    BadSetting {
        /// The argument as given.
        argument: String,
        /// What is wrong.
        reason: String,
    },
    /// A value of the wrong form.
    #[error(
        "{origin}: invalid value \"{}\" for {key}: expected {expected}",
        vmx::visible(value)
    )]
    InvalidValue {
        /// Where it was set.
        origin: Origin,
        /// The key as written.
        key: String,
        /// The value.
        value: String,
        /// What would have been accepted.
        expected: String,
    },
    /// A setting that needs another one which is missing.
    #[error("{origin}: {key} = \"{}\" needs {needed}", vmx::visible(value))]
    MissingValue {
        /// Where the setting that needs it was made.
        origin: Origin,
        /// Its key.
        key: String,
        /// Its value.
        value: String,
        /// The missing key.
        needed: String,
    },
    /// The kernel or initrd file does not exist.
    #[error(
        "{origin}: {role} {} not found",
        vmx::visible(&path.display().to_string())
    )]
    FileNotFound {
        /// Where it was named.
        origin: Origin,
        /// What the file is for.
        role: FileRole,
        /// The resolved path.
        path: PathBuf,
    },
    /// The kernel or initrd path names a directory, FIFO, device or socket.
    #[error(
        "{origin}: {role} {} is {kind}, not {} file",
        vmx::visible(&path.display().to_string()),
        role.with_article()
    )]
    NotAFile {
        /// Where it was named.
        origin: Origin,
        /// What the file is for.
        role: FileRole,
        /// The resolved path.
        path: PathBuf,
        /// What it names.
        kind: FileKind,
    },
    /// The kernel or initrd file is larger than nestmon reads.
    #[error(
        "{origin}: {role} {} is larger than {} MiB ({limit} bytes), the most nestmon reads as \
         {}",
        vmx::visible(&path.display().to_string()),
        limit >> 20,
        role.with_article()
    )]
    FileTooLarge {
        /// Where it was named.
        origin: Origin,
        /// What the file is for.
        role: FileRole,
        /// The resolved path.
        path: PathBuf,
        /// The most that is read.
        limit: u64,
    },
    /// The kernel or initrd path exists but the host cannot look at it.
    #[error(
        "{origin}: cannot read {role} {}: {source}",
        vmx::visible(&path.display().to_string())
    )]
    FileUnreadable {
        /// Where it was named.
        origin: Origin,
        /// What the file is for.
        role: FileRole,
        /// The resolved path.
        path: PathBuf,
        /// The host's error.
        source: std::io::Error,
    },
    /// A bad `cpuid.*` key or mask.
    #[error("{origin}: {}", vmx::visible(&source.to_string()))]
    Cpuid {
        /// Where it was set.
        origin: Origin,
        /// What is wrong.
        source: CpuidError,
    },
}

impl ConfigError {
    /// The process exit status for this error (bad input).
    pub fn exit_status(&self) -> i32 {
        2
    }
}

/// Reads the `.vmx` file (if any), applies the command-line settings and
/// checks that the kernel is a regular file nestmon will read.
pub fn load(sources: &ConfigSources) -> Result<Loaded, ConfigError> {
    let mut entries = match &sources.vmx {
        Some(path) => read_vmx(path)?,
        None => Vec::new(),
    };
    entries.extend(command_line_entries(sources)?);
    let (loaded, kernel_origin) = keys::build(entries)?;
    if let (Some(path), Some(origin)) = (&loaded.config.kernel, kernel_origin) {
        check_input_file(path, origin, FileRole::Kernel)?;
    }
    if let Some(origin) = loaded.origin_of(keys::INITRD_KEY) {
        for item in &loaded.config.initrd {
            check_input_file(&item.path, origin.clone(), FileRole::Initrd)?;
        }
    }
    Ok(loaded)
}

/// Checks, without opening it, that `path` is a regular file within the
/// limit of its `role`; "not found" only when nothing is there.
fn check_input_file(path: &Path, origin: Origin, role: FileRole) -> Result<(), ConfigError> {
    let path_buf = path.to_path_buf();
    let metadata = match std::fs::metadata(path) {
        Ok(metadata) => metadata,
        Err(source) if source.kind() == std::io::ErrorKind::NotFound => {
            return Err(ConfigError::FileNotFound {
                origin,
                role,
                path: path_buf,
            })
        }
        Err(source) => {
            return Err(ConfigError::FileUnreadable {
                origin,
                role,
                path: path_buf,
                source,
            })
        }
    };
    match FileKind::of(&metadata) {
        FileKind::Regular if metadata.len() > role.limit() => Err(ConfigError::FileTooLarge {
            origin,
            role,
            path: path_buf,
            limit: role.limit(),
        }),
        FileKind::Regular => Ok(()),
        kind => Err(ConfigError::NotAFile {
            origin,
            role,
            path: path_buf,
            kind,
        }),
    }
}

/// Builds a configuration from entries alone (no file system access).
pub fn from_entries(entries: Vec<Entry>) -> Result<Loaded, ConfigError> {
    keys::build(entries).map(|(loaded, _)| loaded)
}

/// Reads and parses a `.vmx` file: a regular file of at most
/// [`MAX_VMX_FILE_BYTES`], read without ever blocking (see
/// [`crate::input::read_regular_file`]).
pub fn read_vmx(path: &Path) -> Result<Vec<Entry>, ConfigError> {
    let path_buf = || path.to_path_buf();
    let bytes = read_regular_file(path, MAX_VMX_FILE_BYTES).map_err(|error| match error {
        InputError::Io(source) => ConfigError::Read {
            path: path_buf(),
            source,
        },
        InputError::NotRegular(kind) => ConfigError::NotAVmxFile {
            path: path_buf(),
            kind,
        },
        InputError::TooLarge { limit } => ConfigError::VmxTooLarge {
            path: path_buf(),
            limit,
        },
    })?;
    let text = String::from_utf8(bytes).map_err(|error| {
        let valid = &error.as_bytes()[..error.utf8_error().valid_up_to()];
        ConfigError::NotUtf8 {
            path: path.to_path_buf(),
            line: 1 + valid.iter().filter(|&&b| b == b'\n').count(),
        }
    })?;
    vmx::parse_vmx(path, &text)
}

/// Turns `--set KEY=VALUE` into an entry. A value starting with `"` is read
/// like a quoted `.vmx` value; otherwise it is taken verbatim.
pub fn parse_setting(argument: &str) -> Result<Entry, ConfigError> {
    let bad = |reason: String| ConfigError::BadSetting {
        argument: argument.to_string(),
        reason,
    };
    let (raw_key, raw_value) = argument
        .split_once('=')
        .ok_or_else(|| bad("expected KEY=VALUE".to_string()))?;
    let key = vmx::parse_key(raw_key).map_err(bad)?;
    let value = if raw_value.trim_start().starts_with('"') {
        vmx::parse_value(raw_value.trim()).map_err(bad)?
    } else {
        raw_value.to_string()
    };
    vmx::refuse_nul(&key, &value).map_err(bad)?;
    Ok(Entry {
        key,
        value,
        origin: Origin::command_line("--set"),
    })
}

fn command_line_entries(sources: &ConfigSources) -> Result<Vec<Entry>, ConfigError> {
    let mut entries = sources
        .settings
        .iter()
        .map(|argument| parse_setting(argument))
        .collect::<Result<Vec<_>, _>>()?;
    let flag_entry = |key: &str, value: String, flag: &str| Entry {
        key: key.to_string(),
        value,
        origin: Origin::command_line(flag),
    };
    if let Some(kernel) = &sources.kernel {
        entries.push(flag_entry(
            keys::KERNEL_KEY,
            kernel.to_string_lossy().into_owned(),
            "--kernel",
        ));
    }
    if let Some(append) = &sources.append {
        entries.push(flag_entry(keys::APPEND_KEY, append.clone(), "--append"));
    }
    if let Some(initrd) = &sources.initrd {
        entries.push(flag_entry(keys::INITRD_KEY, initrd.clone(), "--initrd"));
    }
    if let Some(memsize) = sources.memsize_mib {
        entries.push(flag_entry("memsize", memsize.to_string(), "--memsize"));
    }
    if sources.no_reboot {
        entries.push(flag_entry(
            keys::NO_REBOOT_KEY,
            "TRUE".to_string(),
            "--no-reboot",
        ));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("nestmon-config-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn set_argument_needs_an_equals_sign() {
        let error = parse_setting("memsize").unwrap_err();
        assert!(matches!(error, ConfigError::BadSetting { .. }));
        assert!(error.to_string().contains("KEY=VALUE"));
    }

    #[test]
    fn set_argument_value_is_verbatim_unless_quoted() {
        assert_eq!(parse_setting("displayName=a # b").unwrap().value, "a # b");
        assert_eq!(parse_setting("displayName=\"q|22\"").unwrap().value, "q\"");
        assert_eq!(parse_setting("k=").unwrap().value, "");
    }

    #[test]
    fn set_quoting_is_as_docs_config_md_describes_it() {
        // Unquoted: verbatim, spaces, `#` and `|` included.
        assert_eq!(
            parse_setting("displayName= a |22 # b ").unwrap().value,
            " a |22 # b "
        );
        // Quoted after spaces: escapes decoded, a trailing comment allowed.
        assert_eq!(
            parse_setting("displayName= \"q|22\" # note").unwrap().value,
            "q\""
        );
        assert!(parse_setting("displayName=\"q\" junk").is_err());
        // The key is checked as in a file, spaces around it ignored.
        assert_eq!(parse_setting(" memsize =64").unwrap().key, "memsize");
        assert!(parse_setting("mem size=64").is_err());
    }

    #[test]
    fn set_value_with_an_escaped_nul_is_refused_and_shown_escaped() {
        let error = parse_setting("displayName=\"x|00y\"").unwrap_err();
        assert!(matches!(error, ConfigError::BadSetting { .. }));
        assert!(error.to_string().ends_with("\"x\\0y\""), "{error}");
    }

    #[test]
    fn invalid_value_shows_control_characters_escaped() {
        let error = from_entries(vec![Entry {
            key: "memsize".to_string(),
            value: "6\u{1b}4".to_string(),
            origin: Origin::command_line("--set"),
        }])
        .unwrap_err();
        assert!(error.to_string().contains("\"6\\u{1b}4\""), "{error}");
    }

    #[test]
    fn flags_override_set_which_overrides_file() {
        let dir = temp_dir("precedence");
        let vmx = dir.join("a.vmx");
        std::fs::write(&vmx, "memsize = \"64\"\nnestmon.append = \"file\"\n").unwrap();
        let sources = ConfigSources {
            vmx: Some(vmx),
            settings: vec!["memsize=96".into(), "nestmon.append=set".into()],
            memsize_mib: Some(32),
            ..ConfigSources::default()
        };
        let loaded = load(&sources).unwrap();
        assert_eq!(loaded.config.memsize_mib, 32);
        assert_eq!(loaded.config.append, "set");
    }

    #[test]
    fn kernel_relative_to_vmx_directory_must_exist() {
        let dir = temp_dir("kernel");
        std::fs::write(dir.join("guest.elf"), b"\x7fELF").unwrap();
        let vmx = dir.join("k.vmx");
        std::fs::write(&vmx, "nestmon.kernel = \"guest.elf\"\n").unwrap();
        let loaded = load(&ConfigSources {
            vmx: Some(vmx.clone()),
            ..ConfigSources::default()
        })
        .unwrap();
        assert_eq!(loaded.config.kernel, Some(dir.join("guest.elf")));

        std::fs::write(&vmx, "nestmon.kernel = \"missing.elf\"\n").unwrap();
        let error = load(&ConfigSources {
            vmx: Some(vmx),
            ..ConfigSources::default()
        })
        .unwrap_err();
        assert!(matches!(
            error,
            ConfigError::FileNotFound {
                role: FileRole::Kernel,
                ..
            }
        ));
        assert!(error.to_string().contains("k.vmx:1"), "{error}");
        assert_eq!(error.exit_status(), 2);
    }

    #[test]
    fn initrd_items_must_be_files_named_where_they_were_set() {
        let dir = temp_dir("initrd");
        std::fs::write(dir.join("rd.gz"), b"rd").unwrap();
        let vmx = dir.join("i.vmx");
        std::fs::write(&vmx, "nestmon.initrd = \"rd.gz x=1,rd.gz\"\n").unwrap();
        let loaded = load(&ConfigSources {
            vmx: Some(vmx.clone()),
            ..ConfigSources::default()
        })
        .unwrap();
        let item = |args: Option<&str>| InitrdItem {
            path: dir.join("rd.gz"),
            args: args.map(str::to_string),
        };
        assert_eq!(loaded.config.initrd, vec![item(Some("x=1")), item(None)]);

        std::fs::write(&vmx, "nestmon.initrd = \"rd.gz,gone.gz\"\n").unwrap();
        let error = load(&ConfigSources {
            vmx: Some(vmx),
            ..ConfigSources::default()
        })
        .unwrap_err();
        assert!(
            matches!(
                error,
                ConfigError::FileNotFound {
                    role: FileRole::Initrd,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("i.vmx:1: initrd "), "{error}");
        assert!(error.to_string().ends_with("gone.gz not found"), "{error}");

        let error = load(&ConfigSources {
            initrd: Some(dir.display().to_string()),
            ..ConfigSources::default()
        })
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "command line (--initrd): initrd {} is a directory, not an initrd file",
                dir.display()
            )
        );
    }

    #[test]
    fn kernel_flag_is_relative_to_current_directory() {
        let error = load(&ConfigSources {
            kernel: Some(PathBuf::from("no/such/kernel.elf")),
            ..ConfigSources::default()
        })
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            "command line (--kernel): kernel no/such/kernel.elf not found"
        );
    }

    #[test]
    fn kernel_that_is_a_directory_is_refused_with_its_kind_not_as_missing() {
        let dir = temp_dir("kernel-dir");
        let error = load(&ConfigSources {
            kernel: Some(dir.clone()),
            ..ConfigSources::default()
        })
        .unwrap_err();
        assert!(
            matches!(
                error,
                ConfigError::NotAFile {
                    role: FileRole::Kernel,
                    kind: FileKind::Directory,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!(
                "command line (--kernel): kernel {} is a directory, not a kernel file",
                dir.display()
            )
        );
    }

    #[test]
    fn kernel_past_the_size_limit_is_refused_when_checked() {
        let dir = temp_dir("kernel-large");
        let path = dir.join("huge.elf");
        std::fs::File::create(&path)
            .and_then(|file| file.set_len(MAX_KERNEL_FILE_BYTES + 1))
            .unwrap();
        let error = load(&ConfigSources {
            kernel: Some(path),
            ..ConfigSources::default()
        })
        .unwrap_err();
        assert!(
            matches!(error, ConfigError::FileTooLarge { .. }),
            "{error:?}"
        );
        std::fs::remove_file(dir.join("huge.elf")).unwrap();
    }

    #[test]
    fn vmx_that_is_a_character_device_is_refused_with_its_kind() {
        let error = read_vmx(Path::new("/dev/zero")).unwrap_err();
        assert!(
            matches!(
                error,
                ConfigError::NotAVmxFile {
                    kind: FileKind::CharacterDevice,
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "/dev/zero is a character device, not a .vmx file"
        );
    }

    #[test]
    fn vmx_past_the_size_limit_is_refused() {
        let dir = temp_dir("vmx-large");
        let path = dir.join("big.vmx");
        std::fs::File::create(&path)
            .and_then(|file| file.set_len(MAX_VMX_FILE_BYTES + 1))
            .unwrap();
        let error = read_vmx(&path).unwrap_err();
        assert!(
            matches!(
                error,
                ConfigError::VmxTooLarge {
                    limit: MAX_VMX_FILE_BYTES,
                    ..
                }
            ),
            "{error:?}"
        );
        assert!(error.to_string().contains("larger than 1 MiB"), "{error}");
    }

    #[test]
    fn unreadable_file_is_an_error_naming_it() {
        let error = load(&ConfigSources {
            vmx: Some(PathBuf::from("/nonexistent/x.vmx")),
            ..ConfigSources::default()
        })
        .unwrap_err();
        assert!(error
            .to_string()
            .starts_with("cannot read /nonexistent/x.vmx"));
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let dir = temp_dir("utf8");
        let vmx = dir.join("bad.vmx");
        std::fs::write(&vmx, b"a = \"1\"\nb = \"\xff\"\n").unwrap();
        let error = read_vmx(&vmx).unwrap_err();
        assert!(matches!(error, ConfigError::NotUtf8 { line: 2, .. }));
    }

    #[test]
    fn errors_quoting_a_file_show_its_control_characters_escaped() {
        let dir = temp_dir("controls");
        let cases: [(&[u8], &str); 5] = [
            (
                b"memsize = \"|1B[2J64\"\n",
                "invalid value \"\\u{1b}[2J64\"",
            ),
            (b"memsize = 1\rshown = 2\n", "\"1\\rshown = 2\""),
            (b"nestmon.kernel = \"k|07.elf\"\n", "k\\u{7}.elf not found"),
            (
                b"key\x07 = 1\n",
                "invalid character '\\u{7}' in key \"key\\u{7}\"",
            ),
            (
                b"cpuid.1.ecx = \"---------------\x1b----------------\"\n",
                "unknown mask character '\\u{1b}'",
            ),
        ];
        for (text, shown) in cases {
            let vmx = dir.join("c.vmx");
            std::fs::write(&vmx, text).unwrap();
            let message = load(&ConfigSources {
                vmx: Some(vmx),
                ..ConfigSources::default()
            })
            .unwrap_err()
            .to_string();
            assert!(message.contains(shown), "{message:?} lacks {shown:?}");
            assert!(!message.contains(char::is_control), "{message:?}");
        }
    }

    #[test]
    fn no_sources_gives_the_default_guest() {
        let loaded = load(&ConfigSources::default()).unwrap();
        assert_eq!(loaded.config, VmConfig::default());
        assert!(loaded.config.kernel.is_none());
        assert!(loaded.diagnostics.is_empty());
    }
}
