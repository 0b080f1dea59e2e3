//! Files handed to the guest beside its kernel (`--initrd`,
//! `nestmon.initrd`): Multiboot modules, as `qemu-system-i386 -kernel K
//! -initrd "a args,b"` passes them, or the one initrd of a Linux kernel.
//!
//! Multiboot layout ([`plan`]): the modules follow the kernel, from the
//! first 4 KiB boundary at or above both the end of its highest segment and
//! 1 MiB (so that none lands in the legacy hole below 1 MiB), each starting
//! on a 4 KiB boundary; then, on the next boundary, the module list (16
//! bytes a module: `mod_start`, `mod_end`, `string`, 0) and the modules'
//! strings, each NUL-terminated. A module's string is its path, and its
//! arguments after a space when some were given (QEMU's form).
//!
//! Invariants: every range of a [`ModulesPlan`] lies inside guest RAM
//! (checked in `u64` before any byte is written) and above every kernel
//! segment; the ranges are in ascending order and do not overlap.

use super::info::ModuleList;
use super::LoadError;
use crate::input::{read_regular_file, InputError};
use shadowmmu::{GuestPhys, GuestRam};
use std::ops::Range;
use std::path::Path;

/// Modules and their list start on this boundary.
pub const MODULE_ALIGN: u64 = 0x1000;
/// Modules are never placed below this address.
pub const MODULES_FLOOR: u64 = 1 << 20;
/// Bytes of one entry of the module list.
pub const MODULE_ENTRY_LEN: u64 = 16;
/// The largest file nestmon reads as an initrd or module (guest RAM is at
/// most 3 GiB, and an initrd must fit in it beside the kernel).
pub const MAX_BOOT_FILE_BYTES: u64 = 1 << 30;

/// A file given with `--initrd`: its name as given, the arguments written
/// after it (Multiboot modules only) and its bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BootFile {
    /// The path, as the configuration resolved it.
    pub path: String,
    /// The text after the first space of the `--initrd` item, if any.
    pub args: Option<String>,
    /// The file's contents.
    pub data: Vec<u8>,
}

impl BootFile {
    /// The module's string as a Multiboot kernel sees it: the path, then a
    /// space and the arguments when there are some (as QEMU passes it).
    pub fn multiboot_string(&self) -> String {
        match &self.args {
            Some(args) => format!("{} {args}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Reads the file of an `--initrd` item: a regular file of at most
/// [`MAX_BOOT_FILE_BYTES`], never blocking (see
/// [`crate::input::read_regular_file`]).
pub fn read_boot_file(path: &Path, args: Option<&str>) -> Result<BootFile, LoadError> {
    let data =
        read_regular_file(path, MAX_BOOT_FILE_BYTES).map_err(|error| LoadError::InitrdFile {
            path: path.to_path_buf(),
            reason: error,
        })?;
    Ok(BootFile {
        path: path.display().to_string(),
        args: args.map(str::to_string),
        data,
    })
}

/// Words for an [`InputError`] about an initrd, after its path.
pub(super) fn describe_input_error(error: &InputError) -> String {
    match error {
        InputError::Io(source) => format!("cannot be read: {source}"),
        InputError::NotRegular(kind) => format!("is {kind}, not a file to load"),
        InputError::TooLarge { limit } => format!(
            "is larger than {} MiB ({limit} bytes), the most nestmon reads as an initrd or \
             module",
            limit >> 20
        ),
    }
}

/// Where the modules, their list and their strings go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModulesPlan {
    /// Each module's range, in the order given.
    pub modules: Vec<Range<u32>>,
    /// The module list, then the strings.
    pub list: Range<u32>,
    /// Each module's string address.
    strings: Vec<u32>,
}

impl ModulesPlan {
    /// What the information structure says of the list.
    pub fn list(&self) -> ModuleList {
        ModuleList {
            count: self.modules.len() as u32,
            addr: self.list.start,
        }
    }
}

fn align_up(value: u64) -> u64 {
    value.div_ceil(MODULE_ALIGN) * MODULE_ALIGN
}

/// Lays out `files` above `kernel_end` (the end of the highest segment) in
/// `ram_size` bytes of RAM; `None` when there are no files.
pub fn plan(
    files: &[BootFile],
    kernel_end: u64,
    ram_size: u64,
) -> Result<Option<ModulesPlan>, LoadError> {
    if files.is_empty() {
        return Ok(None);
    }
    let strings: Vec<String> = files.iter().map(BootFile::multiboot_string).collect();
    if strings.iter().any(|s| s.contains('\0')) {
        return Err(LoadError::ModuleStringHasNul);
    }
    let mut next = align_up(kernel_end.max(MODULES_FLOOR));
    let mut modules = Vec::with_capacity(files.len());
    for file in files {
        let end = next + file.data.len() as u64;
        modules.push((next, end));
        next = align_up(end);
    }
    let list_start = next;
    let mut at = list_start + MODULE_ENTRY_LEN * files.len() as u64;
    let mut string_addrs = Vec::with_capacity(files.len());
    for string in &strings {
        string_addrs.push(at);
        at += string.len() as u64 + 1;
    }
    if at > ram_size {
        return Err(LoadError::ModulesDoNotFit {
            count: files.len(),
            start: align_up(kernel_end.max(MODULES_FLOOR)),
            end: at,
            ram_size,
        });
    }
    // Every address is below ram_size, which is below 4 GiB.
    let narrow = |v: u64| v as u32;
    Ok(Some(ModulesPlan {
        modules: modules
            .into_iter()
            .map(|(start, end)| narrow(start)..narrow(end))
            .collect(),
        list: narrow(list_start)..narrow(at),
        strings: string_addrs.into_iter().map(narrow).collect(),
    }))
}

/// Writes the modules, the list and the strings [`plan`] placed.
pub fn write(ram: &GuestRam, files: &[BootFile], plan: &ModulesPlan) -> Result<(), LoadError> {
    let mut list = Vec::with_capacity(files.len() * MODULE_ENTRY_LEN as usize);
    for ((file, range), string) in files.iter().zip(&plan.modules).zip(&plan.strings) {
        ram.write(GuestPhys(range.start), &file.data)?;
        for word in [range.start, range.end, *string, 0] {
            list.extend_from_slice(&word.to_le_bytes());
        }
        let mut text = file.multiboot_string().into_bytes();
        text.push(0);
        ram.write(GuestPhys(*string), &text)?;
    }
    ram.write(GuestPhys(plan.list.start), &list)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(path: &str, args: Option<&str>, len: usize) -> BootFile {
        BootFile {
            path: path.to_string(),
            args: args.map(str::to_string),
            data: vec![0x5a; len],
        }
    }

    #[test]
    fn module_string_is_the_path_then_the_arguments() {
        assert_eq!(file("a.bin", None, 1).multiboot_string(), "a.bin");
        assert_eq!(
            file("a.bin", Some("x=1 y"), 1).multiboot_string(),
            "a.bin x=1 y"
        );
    }

    #[test]
    fn modules_follow_the_kernel_page_aligned_then_the_list_and_strings() {
        let files = [file("a", Some("z"), 0x1001), file("bb", None, 3)];
        let plan = plan(&files, 0x10_2345, 4 << 20).unwrap().unwrap();
        assert_eq!(
            plan.modules,
            vec![0x10_3000..0x10_4001, 0x10_5000..0x10_5003]
        );
        assert_eq!(plan.list.start, 0x10_6000);
        assert_eq!(plan.strings, vec![0x10_6020, 0x10_6024]);
        assert_eq!(plan.list.end, 0x10_6027);
        assert_eq!(
            plan.list(),
            ModuleList {
                count: 2,
                addr: 0x10_6000
            }
        );
    }

    #[test]
    fn modules_of_a_kernel_in_low_memory_start_at_1_mib() {
        let plan = plan(&[file("a", None, 1)], 0xa000, 4 << 20)
            .unwrap()
            .unwrap();
        assert_eq!(plan.modules, vec![0x10_0000..0x10_0001]);
    }

    #[test]
    fn no_files_means_no_plan() {
        assert_eq!(plan(&[], 0x10_0000, 4 << 20).unwrap(), None);
    }

    #[test]
    fn modules_past_the_end_of_ram_are_refused() {
        let files = [file("big", None, 3 << 20)];
        match plan(&files, 0x10_1000, 4 << 20) {
            Err(LoadError::ModulesDoNotFit {
                count: 1,
                start: 0x10_1000,
                end,
                ram_size,
            }) => {
                assert_eq!(ram_size, 4 << 20);
                assert!(end > ram_size);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn module_string_with_nul_is_refused() {
        let files = [file("a\0b", None, 1)];
        assert!(matches!(
            plan(&files, 0x10_0000, 4 << 20),
            Err(LoadError::ModuleStringHasNul)
        ));
    }

    #[test]
    fn written_list_points_at_the_modules_and_their_strings() {
        let ram = GuestRam::new(4).unwrap();
        let files = [file("a", Some("x"), 2), file("b", None, 1)];
        let plan = plan(&files, 0x10_0000, 4 << 20).unwrap().unwrap();
        write(&ram, &files, &plan).unwrap();
        let word = |a: u32| ram.read_u32(GuestPhys(a)).unwrap();
        let list = plan.list.start;
        assert_eq!(word(list), 0x10_0000);
        assert_eq!(word(list + 4), 0x10_0002);
        assert_eq!(word(list + 16), 0x10_1000);
        assert_eq!(word(list + 20), 0x10_1001);
        let mut text = [0u8; 4];
        ram.read(GuestPhys(word(list + 8)), &mut text).unwrap();
        assert_eq!(&text, b"a x\0");
        ram.read(GuestPhys(word(list + 24)), &mut text[..2])
            .unwrap();
        assert_eq!(&text[..2], b"b\0");
        let mut data = [0u8; 2];
        ram.read(GuestPhys(0x10_0000), &mut data).unwrap();
        assert_eq!(data, [0x5a, 0x5a]);
    }
}
