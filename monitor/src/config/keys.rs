//! From settings to a [`VmConfig`]: which keys exist and what they set.
//!
//! Invariants: the last setting of a key (compared case-insensitively) is
//! the one applied; every known key is validated into its typed field;
//! unknown keys only produce a warning.

use super::values;
use super::{
    vmx::visible, ConfigError, Diagnostic, Entry, Loaded, Origin, SerialBackend, Severity, VmConfig,
};
use crate::cpuid::CpuidMask;
use crate::mode::ModeRequest;
use std::collections::BTreeMap;

/// The key naming the kernel (`--kernel`).
pub const KERNEL_KEY: &str = "nestmon.kernel";
/// The key holding the kernel command line (`--append`).
pub const APPEND_KEY: &str = "nestmon.append";
/// The key naming Linux's initrd or the Multiboot modules (`--initrd`).
pub const INITRD_KEY: &str = "nestmon.initrd";
/// The key forcing the vCPU backend (`--accel`).
pub const ACCEL_KEY: &str = "nestmon.accel";

/// Whether a guest reset ends the run instead of restarting the guest
/// (`--no-reboot`, QEMU's `-no-reboot`).
pub const NO_REBOOT_KEY: &str = "nestmon.noReboot";
/// How long SIGTERM waits for the guest to power off after asking its
/// Tools to shut it down (`OS_Halt`), in seconds.
pub const SOFT_POWER_OFF_TIMEOUT_KEY: &str = "nestmon.softPowerOffTimeout";

const VIRTUAL_EXEC_KEY: &str = "monitor.virtual_exec";
/// Whether the shadow MMU lets leaf page tables go out of sync (default
/// TRUE; FALSE sees every page-table write as it happens, for comparison).
pub const MMU_OUT_OF_SYNC_KEY: &str = "nestmon.mmu.outOfSync";
/// Whether instructions that keep taking host faults reach memory through
/// the software TLB (default TRUE; FALSE keeps every access in the
/// window, for comparison).
pub const MMU_ADAPTIVE_KEY: &str = "nestmon.mmu.adaptive";
/// Whether `rep movs`/`rep stos` may become adaptive too (default FALSE).
pub const MMU_ADAPTIVE_STRINGS_KEY: &str = "nestmon.mmu.adaptiveStrings";
/// Whether guest calls and returns are host ones on a return-prediction
/// stack (default TRUE).
pub const BT_RETURN_STACK_KEY: &str = "nestmon.bt.returnStack";
/// Guest displacements folded into host addressing (boolean).
pub const BT_FOLD_KEY: &str = "nestmon.bt.foldDisplacements";
/// Cross-page branches under paging through per-view chain tables (boolean).
pub const BT_CHAIN_TABLES_KEY: &str = "nestmon.bt.chainTables";
/// Jump tables through host tables in the views' chain tables (boolean).
pub const BT_JUMP_TABLES_KEY: &str = "nestmon.bt.jumpTables";
/// Inline caches of indirect calls and jumps (boolean).
pub const BT_INLINE_CACHES_KEY: &str = "nestmon.bt.inlineCaches";
/// Short leaf callees translated in place at their calls (boolean).
pub const BT_INLINE_LEAVES_KEY: &str = "nestmon.bt.inlineLeaves";
/// How many conditional branches a translation unit goes on past
/// (default [`values::DEFAULT_SUPERBLOCK_BRANCHES`]; 0: every unit ends at
/// its first conditional branch).
pub const BT_SUPERBLOCK_KEY: &str = "nestmon.bt.superblockBranches";
/// How many direct branches (jumps in the unit's page, loops' back edges)
/// a translation unit follows (default
/// [`values::DEFAULT_FOLLOWED_BRANCHES`]; 0: every unit ends at them).
pub const BT_FOLLOWED_KEY: &str = "nestmon.bt.followedBranches";
/// Where translations land in the code cache (default 0: packed; any
/// other seed spreads them in its own pattern), for measuring.
pub const BT_LAYOUT_SEED_KEY: &str = "nestmon.bt.layoutSeed";
/// Whether the machine has a local APIC and an I/O APIC (default TRUE;
/// FALSE: a PC with the 8259A pair only, as before APICs).
pub const APIC_KEY: &str = "nestmon.apic";
const GUESTINFO_PREFIX: &str = "guestinfo.";
const CPUID_PREFIX: &str = "cpuid.";

/// Every single key nestmon recognizes, spelled as docs/config.md spells
/// it (keys compare case-insensitively). Tools that generate `.vmx` files,
/// such as the fuzz target, take the key set from here.
pub const KNOWN_KEYS: &[&str] = &[
    KERNEL_KEY,
    APPEND_KEY,
    INITRD_KEY,
    ACCEL_KEY,
    NO_REBOOT_KEY,
    SOFT_POWER_OFF_TIMEOUT_KEY,
    "memsize",
    "displayName",
    "guestOS",
    VIRTUAL_EXEC_KEY,
    "monitor.virtual_mmu",
    "monitor_control.vt32",
    "monitor_control.enable_svm",
    "monitor_control.restrict_backdoor",
    MMU_OUT_OF_SYNC_KEY,
    MMU_ADAPTIVE_KEY,
    MMU_ADAPTIVE_STRINGS_KEY,
    BT_RETURN_STACK_KEY,
    BT_FOLD_KEY,
    BT_CHAIN_TABLES_KEY,
    BT_JUMP_TABLES_KEY,
    BT_INLINE_CACHES_KEY,
    BT_INLINE_LEAVES_KEY,
    BT_SUPERBLOCK_KEY,
    BT_FOLLOWED_KEY,
    BT_LAYOUT_SEED_KEY,
    APIC_KEY,
    "vhv.enable",
    "vmx.allowNested",
    "hypervisor.cpuid.v0",
    "serial0.present",
    "serial0.fileType",
    "serial0.fileName",
    ".encoding",
    "config.version",
    "virtualHW.version",
    "numvcpus",
    "cpuid.coresPerSocket",
    "uuid.bios",
];

/// The prefixes of the recognized key families (`guestinfo.<name>`,
/// `cpuid.<leaf>.<reg>[.amd|.intel]`).
pub const KNOWN_KEY_PREFIXES: &[&str] = &[GUESTINFO_PREFIX, CPUID_PREFIX];

/// Keys VMware writes into every `.vmx` file that have no effect here.
const ACCEPTED_WITHOUT_EFFECT: &[&str] = &["config.version"];

/// Key prefixes (lower case) of settings VMware products write for devices,
/// the user interface and bookkeeping that nestmon does not model: they are
/// accepted quietly (an `info` diagnostic, shown with `--verbose`), as VMware
/// itself ignores keys it does not use. `monitor_control.*` and other
/// settings that change how the monitor runs are not among them: an unknown
/// one of those is warned about.
///
/// Two entries start with `cpuid.` without being masks: VMware's processor
/// topology (`cpuid.numSMT`, threads per core, and the bookkeeping it keeps
/// beside `cpuid.coresPerSocket`: `.cookie`, `.auto`, `.mixedSize`), which
/// has no effect with one vCPU. They are looked up before a `cpuid.` key is
/// read as a mask ([`is_vmware_quiet`]).
const VMWARE_QUIET_PREFIXES: &[&str] = &[
    "annotation",
    "bios.",
    "checkpoint.",
    "cleanshutdown",
    "cpuid.corespersocket.",
    "cpuid.numsmt",
    "disk.enableuuid",
    "efi.",
    "ehci",
    "ethernet",
    "extendedconfigfile",
    "firmware",
    "floppy",
    "gui.",
    "hpet",
    "ide",
    "isolation.",
    "keyboard",
    "mem.hotadd",
    "migrate.",
    "mks.",
    "mouse",
    "msg.",
    "numa.",
    "nvme",
    "nvram",
    "parallel",
    "pcibridge",
    "policy.",
    "powertype.",
    "remotedisplay.",
    "replay.",
    "sata",
    "sched.",
    "scsi",
    "serial1",
    "serial2",
    "serial3",
    "sharedfolder",
    "softpoweroff",
    "sound.",
    "svga.",
    "tools.",
    "toolscripts.",
    "usb",
    "uuid.action",
    "uuid.location",
    "vc.uuid",
    "vcpu.hotadd",
    "virtualhw.productcompatibility",
    "vmci",
    "vmotion.",
    "vmxstats.",
    "xhci",
];

/// Whether `key` (lower case) is one VMware writes that nestmon accepts
/// quietly ([`VMWARE_QUIET_PREFIXES`]).
fn is_vmware_quiet(key: &str) -> bool {
    VMWARE_QUIET_PREFIXES.iter().any(|p| key.starts_with(p))
}

/// The recognized key closest to `key` (lower case) within two edits, to
/// suggest for a misspelling.
fn closest_known_key(key: &str) -> Option<&'static str> {
    KNOWN_KEYS
        .iter()
        .map(|known| (edit_distance(key, &known.to_ascii_lowercase()), *known))
        .filter(|(d, _)| *d <= 2)
        .min_by_key(|(d, _)| *d)
        .map(|(_, known)| known)
}

/// Levenshtein distance of two short ASCII strings.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb))
                .min(row[j] + 1)
                .min(above + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// Settings keyed by lower-case key, last one wins.
type Settings = BTreeMap<String, Entry>;

/// The pieces of `serial0.*`, combined once all are known.
#[derive(Default)]
struct SerialSettings {
    present: Option<bool>,
    file_type: Option<Entry>,
    file_name: Option<Entry>,
}

/// The configuration being assembled.
struct Builder {
    config: VmConfig,
    diagnostics: Vec<Diagnostic>,
    serial: SerialSettings,
    older_exec_spellings: Vec<(Entry, bool)>,
    kernel_origin: Option<Origin>,
}

impl Builder {
    fn warn(&mut self, message: String) {
        self.diagnostics
            .push(diagnostic(Severity::Warning, &message));
    }

    fn note(&mut self, message: String) {
        self.diagnostics.push(diagnostic(Severity::Note, &message));
    }

    fn info(&mut self, message: String) {
        self.diagnostics.push(diagnostic(Severity::Info, &message));
    }
}

/// A diagnostic; values quoted from the file have their control characters escaped.
fn diagnostic(severity: Severity, message: &str) -> Diagnostic {
    Diagnostic {
        severity,
        message: visible(message),
    }
}

/// Builds the configuration; also returns where the kernel was named.
pub(super) fn build(entries: Vec<Entry>) -> Result<(Loaded, Option<Origin>), ConfigError> {
    let mut builder = Builder {
        config: VmConfig::default(),
        diagnostics: Vec::new(),
        serial: SerialSettings::default(),
        older_exec_spellings: Vec::new(),
        kernel_origin: None,
    };
    // Where each key was last set, to apply the settings in the order they
    // were written: diagnostics then follow the file (and --set after it).
    let position: BTreeMap<String, usize> = entries
        .iter()
        .enumerate()
        .map(|(i, entry)| (entry.key.to_ascii_lowercase(), i))
        .collect();
    let settings = last_setting_wins(entries, &mut builder);
    let mut in_order: Vec<(&String, &Entry)> = settings.iter().collect();
    in_order.sort_by_key(|(key, _)| position.get(*key).copied().unwrap_or(usize::MAX));
    for (key, entry) in in_order {
        apply(key, entry, &mut builder)?;
    }
    map_older_exec_spellings(&settings, &mut builder);
    builder.config.serial0 = serial_backend(&builder.serial, &mut builder.diagnostics)?;
    let loaded = Loaded {
        config: builder.config,
        diagnostics: builder.diagnostics,
        origins: settings
            .iter()
            .map(|(key, entry)| (key.clone(), entry.origin.clone()))
            .collect(),
    };
    Ok((loaded, builder.kernel_origin))
}

fn last_setting_wins(entries: Vec<Entry>, builder: &mut Builder) -> Settings {
    let mut settings = Settings::new();
    for entry in entries {
        let key = entry.key.to_ascii_lowercase();
        if let Some(previous) = settings.get(&key) {
            if previous.origin.same_source(&entry.origin) {
                builder.warn(format!(
                    "{}: {} is set again (first at {}); the last value \"{}\" wins",
                    entry.origin, entry.key, previous.origin, entry.value
                ));
            }
        }
        settings.insert(key, entry);
    }
    settings
}

fn apply(key: &str, entry: &Entry, builder: &mut Builder) -> Result<(), ConfigError> {
    let config = &mut builder.config;
    match key {
        "memsize" => config.memsize_mib = values::memsize(entry)?,
        "displayname" => config.display_name = Some(entry.value.clone()),
        "guestos" => apply_guest_os(entry, builder),
        "monitor.virtual_exec" => config.virtual_exec = values::mode(entry)?,
        "monitor.virtual_mmu" => config.virtual_mmu = values::mode(entry)?,
        "monitor_control.vt32" | "monitor_control.enable_svm" => {
            let enabled = values::boolean(entry)?;
            builder.older_exec_spellings.push((entry.clone(), enabled));
        }
        "monitor_control.restrict_backdoor" => config.restrict_backdoor = values::boolean(entry)?,
        "vhv.enable" => config.vhv_enable = values::boolean(entry)?,
        "nestmon.mmu.outofsync" => config.mmu_out_of_sync = values::boolean(entry)?,
        "nestmon.mmu.adaptive" => config.mmu_adaptive = values::boolean(entry)?,
        "nestmon.mmu.adaptivestrings" => config.mmu_adaptive_strings = values::boolean(entry)?,
        "nestmon.bt.returnstack" => config.bt_return_stack = values::boolean(entry)?,
        "nestmon.bt.folddisplacements" => config.bt_fold_displacements = values::boolean(entry)?,
        "nestmon.bt.chaintables" => config.bt_chain_tables = values::boolean(entry)?,
        "nestmon.bt.jumptables" => config.bt_jump_tables = values::boolean(entry)?,
        "nestmon.bt.inlinecaches" => config.bt_inline_caches = values::boolean(entry)?,
        "nestmon.bt.inlineleaves" => config.bt_inline_leaves = values::boolean(entry)?,
        "nestmon.bt.superblockbranches" => {
            config.bt_superblock_branches = values::superblock_branches(entry)?
        }
        "nestmon.bt.followedbranches" => {
            config.bt_followed_branches = values::followed_branches(entry)?
        }
        "nestmon.bt.layoutseed" => config.bt_layout_seed = values::layout_seed(entry)?,
        "nestmon.mmu.maxmappings" => config.mmu_max_mappings = Some(values::max_mappings(entry)?),
        "vmx.allownested" => config.allow_nested = values::boolean(entry)?,
        "nestmon.noreboot" => config.no_reboot = values::boolean(entry)?,
        "nestmon.apic" => config.apic = values::boolean(entry)?,
        "nestmon.softpowerofftimeout" => {
            config.soft_power_off_seconds = values::soft_power_off_seconds(entry)?
        }
        "hypervisor.cpuid.v0" => config.hypervisor_cpuid_v0 = values::boolean(entry)?,
        KERNEL_KEY => {
            config.kernel = Some(values::path(entry)?);
            builder.kernel_origin = Some(entry.origin.clone());
        }
        APPEND_KEY => config.append = entry.value.clone(),
        INITRD_KEY => config.initrd = values::initrd_list(entry)?,
        ACCEL_KEY => config.accel = Some(values::accel(entry)?),
        "serial0.present" => builder.serial.present = Some(values::boolean(entry)?),
        "serial0.filetype" => builder.serial.file_type = Some(entry.clone()),
        "serial0.filename" => builder.serial.file_name = Some(entry.clone()),
        ".encoding" => check_encoding(entry, builder),
        "numvcpus" => apply_numvcpus(entry, builder)?,
        "uuid.bios" => config.uuid_bios = Some(values::uuid(entry)?),
        "virtualhw.version" => config.hw_version = Some(values::positive_count(entry)?),
        // Cores per socket: with one vCPU there is one core.
        "cpuid.corespersocket" => {
            values::positive_count(entry)?;
        }
        _ if ACCEPTED_WITHOUT_EFFECT.contains(&key) => {}
        // Before the mask arm: VMware's `cpuid.numSMT` is not a mask.
        _ if is_vmware_quiet(key) => builder.info(format!(
            "{}: VMware key \"{}\" has no effect in nestmon",
            entry.origin, entry.key
        )),
        _ if key.starts_with(CPUID_PREFIX) => apply_cpuid_mask(entry, config)?,
        _ if key.starts_with(GUESTINFO_PREFIX) && key.len() > GUESTINFO_PREFIX.len() => {
            let name = entry.key[GUESTINFO_PREFIX.len()..].to_string();
            config.guestinfo.insert(name, entry.value.clone());
        }
        _ => {
            let hint = closest_known_key(key)
                .map(|known| format!("; did you mean \"{known}\"?"))
                .unwrap_or_default();
            builder.warn(format!(
                "{}: unknown key \"{}\" ignored{hint}",
                entry.origin, entry.key
            ))
        }
    }
    Ok(())
}

fn apply_numvcpus(entry: &Entry, builder: &mut Builder) -> Result<(), ConfigError> {
    let count = values::positive_count(entry)?;
    if count > 1 {
        builder.warn(format!(
            "{}: numvcpus = \"{count}\": nestmon runs one vCPU; the guest sees a \
             single processor",
            entry.origin
        ));
    }
    Ok(())
}

fn apply_guest_os(entry: &Entry, builder: &mut Builder) {
    builder.config.guest_os = entry.value.clone();
    if entry.value.to_ascii_lowercase().ends_with("-64") {
        builder.warn(format!(
            "{}: guestOS \"{}\" names a 64-bit guest; nestmon runs 32-bit guests only",
            entry.origin, entry.value
        ));
    }
}

fn check_encoding(entry: &Entry, builder: &mut Builder) {
    let normalized = entry.value.to_ascii_lowercase().replace('-', "");
    if normalized != "utf8" {
        builder.warn(format!(
            "{}: .encoding \"{}\" is not supported; the file is read as UTF-8",
            entry.origin, entry.value
        ));
    }
}

fn apply_cpuid_mask(entry: &Entry, config: &mut VmConfig) -> Result<(), ConfigError> {
    let mask =
        CpuidMask::parse(&entry.key, entry.value.trim()).map_err(|source| ConfigError::Cpuid {
            origin: entry.origin.clone(),
            source,
        })?;
    config.cpuid_masks.push(mask);
    Ok(())
}

/// `monitor_control.vt32` and `monitor_control.enable_svm` are the older
/// spellings of `monitor.virtual_exec`; the new key wins when both are set.
fn map_older_exec_spellings(settings: &Settings, builder: &mut Builder) {
    let spellings = std::mem::take(&mut builder.older_exec_spellings);
    for (entry, enabled) in spellings {
        let mapped = if enabled {
            ModeRequest::Hardware
        } else {
            ModeRequest::Software
        };
        if let Some(newer) = settings.get(VIRTUAL_EXEC_KEY) {
            builder.note(format!(
                "{}: {} is an older spelling of {VIRTUAL_EXEC_KEY}; ignored because \
                 {VIRTUAL_EXEC_KEY} is set at {}",
                entry.origin, entry.key, newer.origin
            ));
        } else {
            builder.config.virtual_exec = mapped;
            builder.note(format!(
                "{}: {} = \"{}\" is the older spelling of {VIRTUAL_EXEC_KEY} = \"{mapped}\"; \
                 using that",
                entry.origin, entry.key, entry.value
            ));
        }
    }
}

fn serial_backend(
    serial: &SerialSettings,
    diagnostics: &mut Vec<Diagnostic>,
) -> Result<SerialBackend, ConfigError> {
    if serial.present == Some(false) {
        return Ok(SerialBackend::None);
    }
    let Some(file_type) = &serial.file_type else {
        warn_unused_file_name(serial, "no serial0.fileType is set", diagnostics);
        return Ok(SerialBackend::Stdio);
    };
    let needs_file_name = || -> Result<std::path::PathBuf, ConfigError> {
        let name = serial
            .file_name
            .as_ref()
            .ok_or_else(|| ConfigError::MissingValue {
                origin: file_type.origin.clone(),
                key: file_type.key.clone(),
                value: file_type.value.clone(),
                needed: "serial0.fileName".to_string(),
            })?;
        values::path(name)
    };
    match file_type.value.trim().to_ascii_lowercase().as_str() {
        "stdio" => {
            warn_unused_file_name(serial, "serial0.fileType is \"stdio\"", diagnostics);
            Ok(SerialBackend::Stdio)
        }
        "file" => Ok(SerialBackend::File(needs_file_name()?)),
        "pipe" => Ok(SerialBackend::UnixSocket(needs_file_name()?)),
        _ => Err(ConfigError::InvalidValue {
            origin: file_type.origin.clone(),
            key: file_type.key.clone(),
            value: file_type.value.clone(),
            expected: "\"file\", \"pipe\" (a Unix socket) or \"stdio\"".to_string(),
        }),
    }
}

fn warn_unused_file_name(serial: &SerialSettings, why: &str, diagnostics: &mut Vec<Diagnostic>) {
    if let Some(name) = &serial.file_name {
        let message = format!("{}: {} is ignored because {why}", name.origin, name.key);
        diagnostics.push(diagnostic(Severity::Warning, &message));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{from_entries, vmx::parse_vmx, InitrdItem};
    use crate::cpuid::{MaskVendor, Register};
    use std::path::{Path, PathBuf};

    fn load(text: &str) -> Result<Loaded, ConfigError> {
        from_entries(parse_vmx(Path::new("/vm/t.vmx"), text)?)
    }

    fn config(text: &str) -> VmConfig {
        load(text).unwrap().config
    }

    /// Asserts that each of `values` for `key` is refused as invalid.
    fn assert_values_refused(key: &str, values: &[&str]) {
        for bad in values {
            assert!(
                matches!(
                    load(&format!("{key} = \"{bad}\"\n")),
                    Err(ConfigError::InvalidValue { .. })
                ),
                "{key} = {bad}"
            );
        }
    }

    #[test]
    fn the_mapping_budget_is_the_hosts_unless_set_and_refused_below_its_minimum() {
        assert_eq!(config("").mmu_max_mappings, None);
        assert_eq!(
            config("nestmon.mmu.maxMappings = \"4096\"\n").mmu_max_mappings,
            Some(4096)
        );
        assert_values_refused("nestmon.mmu.maxMappings", &["1023", "0", "-5", "many"]);
    }

    #[test]
    fn branch_counts_take_a_count_up_to_their_maximum() {
        let superblock = |c: &VmConfig| c.bt_superblock_branches;
        let followed = |c: &VmConfig| c.bt_followed_branches;
        for (key, count) in [
            (
                "nestmon.bt.superblockBranches",
                superblock as fn(&VmConfig) -> u32,
            ),
            ("nestmon.bt.followedBranches", followed),
        ] {
            assert_eq!(count(&config(&format!("{key} = \"32\"\n"))), 32, "{key}");
            assert_values_refused(key, &["33", "-1", "four", ""]);
        }
    }

    #[test]
    fn the_layout_seed_is_0_by_default_and_takes_a_seed_up_to_65535() {
        assert_eq!(config("").bt_layout_seed, 0);
        assert_eq!(config("nestmon.bt.layoutSeed = \"7\"\n").bt_layout_seed, 7);
        assert_eq!(
            config("nestmon.bt.layoutSeed = \"65535\"\n").bt_layout_seed,
            65535
        );
        assert_values_refused("nestmon.bt.layoutSeed", &["65536", "-1", "seven", ""]);
    }

    #[test]
    fn no_reboot_is_off_by_default_and_set_by_its_key() {
        assert!(!config("").no_reboot);
        assert!(config("nestmon.noReboot = \"TRUE\"\n").no_reboot);
        assert!(config("").apic);
        assert!(!config("nestmon.apic = \"FALSE\"\n").apic);
        assert!(!config("nestmon.noreboot = \"FALSE\"\n").no_reboot);
        assert!(matches!(
            load("nestmon.noReboot = \"maybe\"\n"),
            Err(ConfigError::InvalidValue { .. })
        ));
    }

    #[test]
    fn soft_power_off_timeout_defaults_to_30_seconds_and_takes_0_to_an_hour() {
        assert_eq!(config("").soft_power_off_seconds, 30);
        let set = |v: &str| load(&format!("nestmon.softPowerOffTimeout = \"{v}\"\n"));
        assert_eq!(set("0").unwrap().config.soft_power_off_seconds, 0);
        assert_eq!(set(" 5 ").unwrap().config.soft_power_off_seconds, 5);
        assert_eq!(set("3600").unwrap().config.soft_power_off_seconds, 3600);
        for bad in ["3601", "-1", "1.5", "30s", ""] {
            let error = set(bad).unwrap_err();
            assert!(
                error.to_string().contains("from 0 to 3600"),
                "{bad:?}: {error}"
            );
        }
    }

    fn warnings(text: &str) -> Vec<String> {
        load(text)
            .unwrap()
            .diagnostics
            .into_iter()
            .filter(|d| d.severity == Severity::Warning)
            .map(|d| d.message)
            .collect()
    }

    fn notes(text: &str) -> Vec<String> {
        load(text)
            .unwrap()
            .diagnostics
            .into_iter()
            .filter(|d| d.severity == Severity::Note)
            .map(|d| d.message)
            .collect()
    }

    #[test]
    fn every_listed_key_is_recognized() {
        for key in KNOWN_KEYS {
            let diagnostics = match load(&format!("{key} = \"x\"\n")) {
                Ok(loaded) => loaded.diagnostics,
                Err(ConfigError::InvalidValue { .. } | ConfigError::MissingValue { .. }) => {
                    continue
                }
                Err(other) => panic!("{key}: {other}"),
            };
            assert!(
                diagnostics
                    .iter()
                    .all(|d| !d.message.contains("unknown key")),
                "{key}: {diagnostics:?}"
            );
        }
    }

    #[test]
    fn unlisted_key_is_unknown() {
        assert!(warnings("memsizes = \"4\"\n")[0].contains("unknown key"));
    }

    #[test]
    fn duplicate_key_wins_last_with_warning() {
        let text = "memsize = \"64\"\nMEMSIZE = \"96\"\n";
        assert_eq!(config(text).memsize_mib, 96);
        assert_eq!(
            warnings(text),
            vec!["/vm/t.vmx:2: MEMSIZE is set again (first at /vm/t.vmx:1); the last value \"96\" wins"]
        );
    }

    #[test]
    fn warnings_quoting_a_value_show_its_control_characters_escaped() {
        let text = "displayName = \"a\"\ndisplayName = \"|1B[0m\"\nguestOS = \"\x1b-64\"\n";
        let warnings = warnings(text);
        assert!(warnings[0].contains("\"\\u{1b}[0m\" wins"), "{warnings:?}");
        assert!(warnings[1].contains("\"\\u{1b}-64\""), "{warnings:?}");
        assert!(warnings.iter().all(|w| !w.contains(char::is_control)));
    }

    #[test]
    fn origins_record_where_the_winning_setting_was_made() {
        let loaded = load("memsize = \"64\"\n\nMemSize = \"32\"\n").unwrap();
        assert_eq!(
            loaded.origin_of("MEMSIZE"),
            Some(&Origin::File {
                path: "/vm/t.vmx".into(),
                line: 3
            })
        );
        assert_eq!(loaded.origin_of("displayName"), None);
    }

    #[test]
    fn command_line_overrides_file_without_warning() {
        let mut entries = parse_vmx(Path::new("t.vmx"), "memsize = \"64\"\n").unwrap();
        entries.push(crate::config::parse_setting("memsize=32").unwrap());
        let loaded = from_entries(entries).unwrap();
        assert_eq!(loaded.config.memsize_mib, 32);
        assert!(loaded.diagnostics.is_empty());
    }

    #[test]
    fn keys_are_case_insensitive() {
        let config = config("MemSize = \"8\"\nMONITOR.Virtual_Exec = \"software\"\n");
        assert_eq!(config.memsize_mib, 8);
        assert_eq!(config.virtual_exec, ModeRequest::Software);
    }

    #[test]
    fn unknown_key_is_warned_about_by_name() {
        assert_eq!(
            warnings("frobnicate = \"TRUE\"\n"),
            vec!["/vm/t.vmx:1: unknown key \"frobnicate\" ignored"]
        );
    }

    #[test]
    fn vmware_device_keys_are_quiet_and_misspellings_get_a_suggestion() {
        let text = "ethernet0.present = \"TRUE\"\nmemsze = \"64\"\nsound.present = \"TRUE\"\n";
        assert_eq!(
            warnings(text),
            vec!["/vm/t.vmx:2: unknown key \"memsze\" ignored; did you mean \"memsize\"?"]
        );
    }

    #[test]
    fn vmware_topology_keys_under_cpuid_are_quiet_not_masks() {
        let text = "cpuid.numSMT = \"2\"\ncpuid.coresPerSocket = \"2\"\n\
                    cpuid.coresPerSocket.cookie = \"2\"\n";
        let loaded = load(text).unwrap();
        assert!(loaded.config.cpuid_masks.is_empty());
        let infos: Vec<&str> = loaded
            .diagnostics
            .iter()
            .map(|d| {
                assert_eq!(d.severity, Severity::Info, "{d}");
                d.message.as_str()
            })
            .collect();
        assert_eq!(
            infos,
            [
                "/vm/t.vmx:1: VMware key \"cpuid.numSMT\" has no effect in nestmon",
                "/vm/t.vmx:3: VMware key \"cpuid.coresPerSocket.cookie\" has no effect in nestmon"
            ]
        );
    }

    #[test]
    fn malformed_cpuid_keys_are_still_errors() {
        for key in ["cpuid.1.zzz", "cpuid.numCores.eax", "cpuid.zz.eax"] {
            let loaded = load(&format!("{key} = \"--------------------------------\"\n"));
            match loaded {
                Err(ConfigError::Cpuid { .. }) => {}
                other => panic!("{key}: {other:?}"),
            }
        }
    }

    #[test]
    fn diagnostics_follow_the_order_of_the_file() {
        let text = "zzz.unknown = \"1\"\naaa.unknown = \"2\"\n";
        let got = warnings(text);
        assert!(
            got[0].contains("zzz.unknown") && got[1].contains("aaa.unknown"),
            "{got:?}"
        );
    }

    #[test]
    fn vmware_bookkeeping_keys_are_accepted_silently() {
        let text = ".encoding = \"UTF-8\"\nconfig.version = \"8\"\nvirtualHW.version = \"4\"\n";
        assert!(load(text).unwrap().diagnostics.is_empty());
    }

    #[test]
    fn non_utf8_encoding_is_warned_about() {
        assert!(warnings(".encoding = \"windows-1252\"\n")[0].contains(".encoding"));
    }

    #[test]
    fn defaults_when_nothing_is_set() {
        let config = config("");
        assert_eq!(config, VmConfig::default());
        assert_eq!(config.memsize_mib, 128);
        assert_eq!(config.guest_os, "other");
        assert!(!config.allow_nested && config.hypervisor_cpuid_v0);
        assert!(!config.vhv_enable && !config.restrict_backdoor);
        assert_eq!(config.serial0, SerialBackend::Stdio);
    }

    #[test]
    fn display_name_and_guest_os_are_kept() {
        let config = config("displayName = \"My VM\"\nguestOS = \"otherlinux\"\n");
        assert_eq!(config.display_name.as_deref(), Some("My VM"));
        assert_eq!(config.guest_os, "otherlinux");
    }

    #[test]
    fn sixty_four_bit_guest_os_is_warned_about() {
        assert!(warnings("guestOS = \"ubuntu-64\"\n")[0].contains("64-bit"));
    }

    #[test]
    fn exec_and_mmu_modes_are_read() {
        let config =
            config("monitor.virtual_exec = \"hardware\"\nmonitor.virtual_mmu = \"software\"\n");
        assert_eq!(config.virtual_exec, ModeRequest::Hardware);
        assert_eq!(config.virtual_mmu, ModeRequest::Software);
    }

    #[test]
    fn bad_mode_is_an_error_naming_line() {
        let error = load("\nmonitor.virtual_mmu = \"fast\"\n").unwrap_err();
        assert!(error
            .to_string()
            .starts_with("/vm/t.vmx:2: invalid value \"fast\" for monitor.virtual_mmu"));
    }

    #[test]
    fn vt32_maps_to_hardware_exec_with_note() {
        let text = "monitor_control.vt32 = \"TRUE\"\n";
        assert_eq!(config(text).virtual_exec, ModeRequest::Hardware);
        assert!(notes(text)[0].contains("older spelling of monitor.virtual_exec = \"hardware\""));
    }

    #[test]
    fn enable_svm_false_maps_to_software_exec_with_note() {
        let text = "monitor_control.enable_svm = \"FALSE\"\n";
        assert_eq!(config(text).virtual_exec, ModeRequest::Software);
        assert!(notes(text)[0].contains("monitor_control.enable_svm"));
    }

    #[test]
    fn new_exec_spelling_wins_over_older_one() {
        let text = "monitor.virtual_exec = \"software\"\nmonitor_control.vt32 = \"TRUE\"\n";
        assert_eq!(config(text).virtual_exec, ModeRequest::Software);
        assert!(
            notes(text)[0].contains("ignored because monitor.virtual_exec is set at /vm/t.vmx:1")
        );
    }

    #[test]
    fn boolean_switches_are_read() {
        let config = config(
            "monitor_control.restrict_backdoor = \"TRUE\"\nvhv.enable = \"yes\"\n\
             vmx.allowNested = \"FALSE\"\nhypervisor.cpuid.v0 = \"0\"\n",
        );
        assert!(config.restrict_backdoor);
        assert!(config.vhv_enable);
        assert!(config.mmu_out_of_sync, "on unless turned off");
        assert!(!self::config("nestmon.mmu.outOfSync = \"FALSE\"\n").mmu_out_of_sync);
        assert!(
            config.mmu_adaptive,
            "adaptive memory access on unless turned off"
        );
        assert!(!self::config("nestmon.mmu.adaptive = \"FALSE\"\n").mmu_adaptive);
        assert!(config.mmu_adaptive_strings, "on unless turned off");
        assert!(!self::config("nestmon.mmu.adaptiveStrings = \"FALSE\"\n").mmu_adaptive_strings);
        assert!(
            config.bt_return_stack,
            "return prediction on unless turned off"
        );
        assert!(!self::config("nestmon.bt.returnStack = \"FALSE\"\n").bt_return_stack);
        assert!(config.bt_fold_displacements, "folding on unless turned off");
        assert!(config.bt_chain_tables, "chain tables on unless turned off");
        assert!(!self::config("nestmon.bt.chainTables = \"FALSE\"\n").bt_chain_tables);
        assert!(config.bt_jump_tables, "jump tables on unless turned off");
        assert!(!self::config("nestmon.bt.jumpTables = \"FALSE\"\n").bt_jump_tables);
        assert!(
            config.bt_inline_caches,
            "inline caches on unless turned off"
        );
        assert!(!self::config("nestmon.bt.inlineCaches = \"FALSE\"\n").bt_inline_caches);
        assert!(config.bt_inline_leaves, "leaves in place unless turned off");
        assert!(!self::config("nestmon.bt.inlineLeaves = \"FALSE\"\n").bt_inline_leaves);
        assert!(!self::config("nestmon.bt.foldDisplacements = \"FALSE\"\n").bt_fold_displacements);
        assert_eq!(
            config.bt_superblock_branches,
            super::values::DEFAULT_SUPERBLOCK_BRANCHES
        );
        assert_eq!(
            self::config("nestmon.bt.superblockBranches = \"0\"\n").bt_superblock_branches,
            0
        );
        assert_eq!(
            config.bt_followed_branches,
            super::values::DEFAULT_FOLLOWED_BRANCHES
        );
        assert_eq!(
            self::config("nestmon.bt.followedBranches = \"0\"\n").bt_followed_branches,
            0
        );
        assert!(!config.allow_nested);
        assert!(!config.hypervisor_cpuid_v0);
    }

    #[test]
    fn bad_boolean_is_an_error() {
        assert!(matches!(
            load("vhv.enable = \"sometimes\"\n"),
            Err(ConfigError::InvalidValue { .. })
        ));
    }

    #[test]
    fn guestinfo_keys_lose_their_prefix() {
        let config = config("guestinfo.Foo = \"bar\"\nguestinfo.a.b = \"c\"\n");
        assert_eq!(config.guestinfo.get("Foo").map(String::as_str), Some("bar"));
        assert_eq!(config.guestinfo.get("a.b").map(String::as_str), Some("c"));
    }

    #[test]
    fn empty_guestinfo_name_is_unknown() {
        assert!(warnings("guestinfo. = \"x\"\n")[0].contains("unknown key"));
    }

    #[test]
    fn cpuid_masks_are_collected_typed() {
        let config = config("cpuid.1.ecx.amd = \"----:----:----:----:----:----:----:---0\"\n");
        let mask = &config.cpuid_masks[0];
        assert_eq!(
            (mask.leaf, mask.register, mask.vendor),
            (1, Register::Ecx, MaskVendor::Amd)
        );
    }

    #[test]
    fn bad_cpuid_mask_names_line_and_key() {
        let error = load("cpuid.1.ecx = \"----\"\n").unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("/vm/t.vmx:1: cpuid.1.ecx: a mask is 32 characters"),
            "{error}"
        );
        let error = load("cpuid.1.zzz = \"----\"\n").unwrap_err();
        assert!(error.to_string().contains("cpuid.1.zzz"), "{error}");
    }

    #[test]
    fn initrd_key_lists_files_relative_to_the_vmx_with_their_arguments() {
        let config = config("nestmon.initrd = \"a.gz,/m/b arg=1 x,c,,d\"\n");
        let item = |path: &str, args: Option<&str>| InitrdItem {
            path: PathBuf::from(path),
            args: args.map(str::to_string),
        };
        assert_eq!(
            config.initrd,
            vec![
                item("/vm/a.gz", None),
                item("/m/b", Some("arg=1 x")),
                item("/vm/c,d", None),
            ]
        );
        assert!(self::config("nestmon.initrd = \"\"\n").initrd.is_empty());
    }

    #[test]
    fn initrd_item_without_a_file_name_is_refused() {
        for value in ["a,", ",a", " args", "a,,,"] {
            let text = format!("nestmon.initrd = \"{value}\"\n");
            let error = load(&text).unwrap_err();
            assert!(
                matches!(error, ConfigError::InvalidValue { .. }),
                "{value:?}: {error:?}"
            );
        }
    }

    #[test]
    fn kernel_and_append_keys() {
        let config = config("nestmon.kernel = \"k/guest.elf\"\nnestmon.append = \"quiet\"\n");
        assert_eq!(config.kernel, Some(PathBuf::from("/vm/k/guest.elf")));
        assert_eq!(config.append, "quiet");
    }

    #[test]
    fn serial_file_and_pipe_map_to_backends() {
        let file = config("serial0.fileType = \"file\"\nserial0.fileName = \"com1.log\"\n");
        assert_eq!(file.serial0, SerialBackend::File("/vm/com1.log".into()));
        let pipe = config("serial0.fileType = \"pipe\"\nserial0.fileName = \"/tmp/com1\"\n");
        assert_eq!(pipe.serial0, SerialBackend::UnixSocket("/tmp/com1".into()));
        let stdio = config("serial0.fileType = \"STDIO\"\n");
        assert_eq!(stdio.serial0, SerialBackend::Stdio);
    }

    #[test]
    fn serial_not_present_discards_output() {
        let config = config("serial0.present = \"FALSE\"\nserial0.fileType = \"file\"\n");
        assert_eq!(config.serial0, SerialBackend::None);
    }

    #[test]
    fn serial_file_without_name_is_an_error() {
        let error = load("serial0.fileType = \"file\"\n").unwrap_err();
        assert_eq!(
            error.to_string(),
            "/vm/t.vmx:1: serial0.fileType = \"file\" needs serial0.fileName"
        );
    }

    #[test]
    fn serial_unsupported_file_type_is_an_error() {
        let error = load("serial0.fileType = \"device\"\n").unwrap_err();
        assert!(error
            .to_string()
            .contains("\"file\", \"pipe\" (a Unix socket) or \"stdio\""));
    }

    #[test]
    fn serial_file_name_without_file_type_is_warned_about() {
        let text = "serial0.fileName = \"x.log\"\n";
        assert_eq!(config(text).serial0, SerialBackend::Stdio);
        assert!(warnings(text)[0].contains("serial0.fileName is ignored"));
    }
}
