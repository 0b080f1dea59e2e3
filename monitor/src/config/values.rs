//! Typed readers for setting values.
//!
//! Invariant: each reader either returns a valid value or a
//! [`ConfigError::InvalidValue`] naming the setting's origin, key and the
//! accepted forms.

use super::{ConfigError, Entry, InitrdItem};
use crate::mode::{Accel, ModeRequest};
use std::path::PathBuf;

/// Smallest accepted `memsize`.
pub const MIN_MEMSIZE_MIB: u64 = 4;
/// Largest accepted `memsize`: RAM must fit below the 32-bit device hole.
pub const MAX_MEMSIZE_MIB: u64 = 3072;

/// Parses a boolean the way VMware writes them (and the usual variants),
/// case-insensitively.
pub fn parse_bool(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" | "y" | "on" | "1" => Some(true),
        "false" | "no" | "n" | "off" | "0" => Some(false),
        _ => None,
    }
}

fn invalid(entry: &Entry, expected: &str) -> ConfigError {
    ConfigError::InvalidValue {
        origin: entry.origin.clone(),
        key: entry.key.clone(),
        value: entry.value.clone(),
        expected: expected.to_string(),
    }
}

/// Reads a boolean setting.
pub fn boolean(entry: &Entry) -> Result<bool, ConfigError> {
    parse_bool(&entry.value).ok_or_else(|| invalid(entry, "TRUE or FALSE"))
}

/// Reads `memsize`: a whole number of MiB, a multiple of 4 in range.
pub fn memsize(entry: &Entry) -> Result<u64, ConfigError> {
    let expected = format!(
        "a whole number of MiB, a multiple of 4, from {MIN_MEMSIZE_MIB} to {MAX_MEMSIZE_MIB}"
    );
    let mib: u64 = entry
        .value
        .trim()
        .parse()
        .map_err(|_| invalid(entry, &expected))?;
    if !(MIN_MEMSIZE_MIB..=MAX_MEMSIZE_MIB).contains(&mib) || !mib.is_multiple_of(4) {
        return Err(invalid(entry, &expected));
    }
    Ok(mib)
}

/// Reads `uuid.bios` as VMware writes it: 16 bytes in hex, space
/// separated with a `-` after the eighth (`56 4d 12 … 9a-bc de …`); the
/// spaces and the dash are optional.
pub fn uuid(entry: &Entry) -> Result<[u8; 16], ConfigError> {
    let expected = "16 hex bytes, as \"56 4d 01 23 45 67 89 ab-cd ef 01 23 45 67 89 ab\"";
    let digits: Vec<u8> = entry
        .value
        .bytes()
        .filter(|b| *b != b' ' && *b != b'-')
        .collect();
    if digits.len() != 32 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return Err(invalid(entry, expected));
    }
    let mut uuid = [0u8; 16];
    for (byte, pair) in uuid.iter_mut().zip(digits.chunks(2)) {
        let text = std::str::from_utf8(pair).map_err(|_| invalid(entry, expected))?;
        *byte = u8::from_str_radix(text, 16).map_err(|_| invalid(entry, expected))?;
    }
    Ok(uuid)
}

/// Reads a count of at least 1 (`numvcpus`, `cpuid.coresPerSocket`).
pub fn positive_count(entry: &Entry) -> Result<u32, ConfigError> {
    match entry.value.trim().parse::<u32>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(invalid(entry, "a whole number, at least 1")),
    }
}

/// The fewest host mappings `nestmon.mmu.maxMappings` takes: below it the
/// process's own mappings (libraries, code cache, windows' reservations)
/// leave the shadow MMU too little to map a guest's working set.
pub const MIN_MAX_MAPPINGS: u32 = 1024;

/// Reads `nestmon.mmu.maxMappings`: a whole number of host mappings, at
/// least [`MIN_MAX_MAPPINGS`].
pub fn max_mappings(entry: &Entry) -> Result<u32, ConfigError> {
    match entry.value.trim().parse::<u32>() {
        Ok(n) if n >= MIN_MAX_MAPPINGS => Ok(n),
        _ => Err(invalid(
            entry,
            &format!("a whole number of host mappings, at least {MIN_MAX_MAPPINGS}"),
        )),
    }
}

/// The conditional branches a translation unit goes on past by default
/// (`nestmon.bt.superblockBranches`).
pub use translator::translate::DEFAULT_SUPERBLOCK_BRANCHES;

/// The most `nestmon.bt.superblockBranches` takes (a unit holds at most
/// `translator::translate::MAX_UNIT_INSNS` instructions anyway).
pub const MAX_SUPERBLOCK_BRANCHES: u32 = 32;

/// Reads `nestmon.bt.superblockBranches`: a whole number from 0 to
/// [`MAX_SUPERBLOCK_BRANCHES`].
pub fn superblock_branches(entry: &Entry) -> Result<u32, ConfigError> {
    whole_number_to(entry, MAX_SUPERBLOCK_BRANCHES, "branches")
}

/// The direct branches a translation unit follows by default
/// (`nestmon.bt.followedBranches`).
pub use translator::translate::DEFAULT_FOLLOWED_BRANCHES;

/// The most `nestmon.bt.followedBranches` takes (a unit holds at most
/// `translator::translate::MAX_UNIT_INSNS` instructions anyway).
pub const MAX_FOLLOWED_BRANCHES: u32 = 32;

/// Reads `nestmon.bt.followedBranches`: a whole number from 0 to
/// [`MAX_FOLLOWED_BRANCHES`].
pub fn followed_branches(entry: &Entry) -> Result<u32, ConfigError> {
    whole_number_to(entry, MAX_FOLLOWED_BRANCHES, "branches")
}

/// The largest `nestmon.bt.layoutSeed`.
pub const MAX_LAYOUT_SEED: u32 = 65535;

/// Reads `nestmon.bt.layoutSeed`: a whole number from 0 (translations
/// packed) to [`MAX_LAYOUT_SEED`].
pub fn layout_seed(entry: &Entry) -> Result<u32, ConfigError> {
    whole_number_to(entry, MAX_LAYOUT_SEED, "")
}

/// The longest soft power-off wait `nestmon.softPowerOffTimeout` takes,
/// in seconds (an hour: longer is a typo, not a plan).
pub const MAX_SOFT_POWER_OFF_SECONDS: u32 = 3600;

/// Reads `nestmon.softPowerOffTimeout`: whole seconds from 0 (SIGTERM
/// stops the guest at once) to [`MAX_SOFT_POWER_OFF_SECONDS`].
pub fn soft_power_off_seconds(entry: &Entry) -> Result<u32, ConfigError> {
    whole_number_to(entry, MAX_SOFT_POWER_OFF_SECONDS, "seconds")
}

/// Reads a whole number of `what` from 0 to `most` (`what` empty: a
/// number that counts nothing, such as a seed).
fn whole_number_to(entry: &Entry, most: u32, what: &str) -> Result<u32, ConfigError> {
    let of_what = if what.is_empty() {
        String::new()
    } else {
        format!(" of {what}")
    };
    match entry.value.trim().parse::<u32>() {
        Ok(n) if n <= most => Ok(n),
        _ => Err(invalid(
            entry,
            &format!("a whole number{of_what} from 0 to {most}"),
        )),
    }
}

/// Reads `monitor.virtual_exec` / `monitor.virtual_mmu`.
pub fn mode(entry: &Entry) -> Result<ModeRequest, ConfigError> {
    ModeRequest::parse(entry.value.trim())
        .ok_or_else(|| invalid(entry, "\"automatic\", \"software\" or \"hardware\""))
}

/// Reads a backend in QEMU's spelling: `"kvm"` or `"bt"` (any case).
pub fn accel(entry: &Entry) -> Result<Accel, ConfigError> {
    match entry.value.trim().to_ascii_lowercase().as_str() {
        "kvm" => Ok(Accel::Kvm),
        "bt" => Ok(Accel::Bt),
        _ => Err(invalid(entry, "\"kvm\" or \"bt\"")),
    }
}

/// Reads a path, relative to the `.vmx` file's directory if written there.
pub fn path(entry: &Entry) -> Result<PathBuf, ConfigError> {
    if entry.value.is_empty() {
        return Err(invalid(entry, "a file name"));
    }
    Ok(resolve(entry, &entry.value))
}

/// `written`, relative to the `.vmx` file's directory if `entry` was
/// written there.
fn resolve(entry: &Entry, written: &str) -> PathBuf {
    let written = PathBuf::from(written);
    match entry.origin.base_directory() {
        Some(base) if written.is_relative() => base.join(written),
        _ => written,
    }
}

/// Reads `nestmon.initrd` as QEMU reads `-initrd`: items separated by
/// commas (`,,` stands for a comma in an item), each a file name and,
/// after the first space, its arguments. An empty value lists nothing.
pub fn initrd_list(entry: &Entry) -> Result<Vec<InitrdItem>, ConfigError> {
    let expected = "file names separated by commas (\",,\" for a comma in a name), each \
                    optionally followed by a space and arguments (for Multiboot modules)";
    if entry.value.trim().is_empty() {
        return Ok(Vec::new());
    }
    split_list(&entry.value)
        .into_iter()
        .map(|item| {
            let (file, args) = match item.split_once(' ') {
                Some((file, args)) => (file, Some(args.to_string())),
                None => (item.as_str(), None),
            };
            if file.is_empty() {
                return Err(invalid(entry, expected));
            }
            Ok(InitrdItem {
                path: resolve(entry, file),
                args,
            })
        })
        .collect()
}

/// Splits at each comma not doubled; a doubled comma is one comma.
fn split_list(text: &str) -> Vec<String> {
    let mut items = vec![String::new()];
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        let current = items.last_mut().expect("never empty");
        match c {
            ',' if chars.peek() == Some(&',') => {
                chars.next();
                current.push(',');
            }
            ',' => items.push(String::new()),
            _ => current.push(c),
        }
    }
    items
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Origin;

    fn entry(key: &str, value: &str) -> Entry {
        Entry {
            key: key.into(),
            value: value.into(),
            origin: Origin::File {
                path: "/vms/a/x.vmx".into(),
                line: 7,
            },
        }
    }

    #[test]
    fn booleans_accept_vmware_spellings() {
        for yes in ["TRUE", "true", "True", "yes", "1", "on", "Y"] {
            assert_eq!(parse_bool(yes), Some(true), "{yes}");
        }
        for no in ["FALSE", "false", "no", "0", "off", "N"] {
            assert_eq!(parse_bool(no), Some(false), "{no}");
        }
        assert_eq!(parse_bool("maybe"), None);
        assert_eq!(parse_bool(""), None);
    }

    #[test]
    fn bad_boolean_names_origin_and_key() {
        let error = boolean(&entry("vhv.enable", "maybe")).unwrap_err();
        assert_eq!(
            error.to_string(),
            "/vms/a/x.vmx:7: invalid value \"maybe\" for vhv.enable: expected TRUE or FALSE"
        );
    }

    #[test]
    fn memsize_must_be_a_multiple_of_four_in_range() {
        assert_eq!(memsize(&entry("memsize", "256")).unwrap(), 256);
        assert_eq!(memsize(&entry("memsize", " 4 ")).unwrap(), 4);
        for bad in ["0", "2", "6", "3076", "-4", "lots", "1e3", ""] {
            assert!(memsize(&entry("memsize", bad)).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn uuid_ignores_spaces_and_dashes_anywhere() {
        let want = [
            0x56, 0x4d, 0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0x01, 0x23, 0x45, 0x67,
            0x89, 0xab,
        ];
        for written in [
            "56 4d 01 23 45 67 89 ab-cd ef 01 23 45 67 89 ab",
            "564d0123-4567-89ab-cdef-0123456789ab",
            "564d0123456789abcdef0123456789ab",
            "-5-6 4d0123456789abcdef0123456789a b-",
        ] {
            assert_eq!(
                uuid(&entry("uuid.bios", written)).unwrap(),
                want,
                "{written}"
            );
        }
        for bad in [
            "56 4d",
            "564d0123456789abcdef0123456789ag",
            "56:4d:01:23:45:67:89:ab:cd:ef:01:23:45:67:89:ab",
        ] {
            assert!(uuid(&entry("uuid.bios", bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn modes_parse_or_name_the_choices() {
        assert_eq!(
            mode(&entry("monitor.virtual_exec", "Hardware")).unwrap(),
            ModeRequest::Hardware
        );
        let error = mode(&entry("monitor.virtual_exec", "fast")).unwrap_err();
        assert!(error
            .to_string()
            .contains("\"automatic\", \"software\" or \"hardware\""));
    }

    #[test]
    fn relative_path_in_file_is_relative_to_its_directory() {
        assert_eq!(
            path(&entry("k", "g.elf")).unwrap(),
            PathBuf::from("/vms/a/g.elf")
        );
        assert_eq!(
            path(&entry("k", "/abs/g.elf")).unwrap(),
            PathBuf::from("/abs/g.elf")
        );
        assert!(path(&entry("k", "")).is_err());
    }

    #[test]
    fn relative_path_on_command_line_stays_relative() {
        let mut from_flag = entry("k", "g.elf");
        from_flag.origin = Origin::CommandLine {
            flag: "--kernel".into(),
        };
        assert_eq!(path(&from_flag).unwrap(), PathBuf::from("g.elf"));
    }
}
