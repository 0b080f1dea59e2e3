//! Whole-loader tests: synthetic images loaded into real guest RAM.

use super::header::{FLAG_MEMORY_INFO, FLAG_VIDEO_MODE};
use super::info::*;
use super::testimage::{
    multiboot_header, multiboot_header_with_addresses, ElfBuilder, TestSegment,
};
use super::*;

const KERNEL_AT: u32 = 0x10_0000;

fn ram(mib: u64) -> GuestRam {
    GuestRam::new(mib).expect("guest RAM")
}

fn small_kernel() -> ElfBuilder {
    ElfBuilder::new(KERNEL_AT + 4).segment(TestSegment::code(KERNEL_AT, (1..=32).collect()))
}

fn load(ram: &GuestRam, image: &[u8]) -> Result<LoadedKernel, LoadError> {
    load_multiboot_kernel(ram, image, "kernel.elf", "console=ttyS0 quiet")
}

fn c_string_at(ram: &GuestRam, addr: u32) -> String {
    let mut bytes = Vec::new();
    for a in addr.. {
        let mut b = [0u8];
        ram.read(GuestPhys(a), &mut b).unwrap();
        if b[0] == 0 {
            break;
        }
        bytes.push(b[0]);
    }
    String::from_utf8(bytes).unwrap()
}

#[test]
fn elf_kernel_boots_at_its_entry_with_the_multiboot_registers() {
    let ram = ram(4);
    let boot = load_multiboot(&ram, &small_kernel().build(), "k", "").unwrap();
    assert_eq!(
        boot,
        BootState {
            eip: KERNEL_AT + 4,
            eax: 0x2BAD_B002,
            ebx: 0x9500
        }
    );
}

#[test]
fn elf_segments_are_copied_to_paddr_and_bss_is_zeroed() {
    let ram = ram(4);
    ram.write(GuestPhys(0x20_0000), &[0xaa; 0x100]).unwrap();
    let image = small_kernel()
        .segment(
            TestSegment::code(0x20_0000, vec![9, 8, 7])
                .mem_size(0x100)
                .vaddr(0xc020_0000),
        )
        .build();
    let loaded = load(&ram, &image).unwrap();
    let mut text = [0u8; 32];
    ram.read(GuestPhys(KERNEL_AT), &mut text).unwrap();
    assert_eq!(text.to_vec(), (1..=32).collect::<Vec<u8>>());
    let mut data = [0xffu8; 0x100];
    ram.read(GuestPhys(0x20_0000), &mut data).unwrap();
    assert_eq!(&data[..3], &[9, 8, 7]);
    assert!(data[3..].iter().all(|&b| b == 0));
    assert_eq!(
        loaded.segments,
        vec![KERNEL_AT..KERNEL_AT + 32, 0x20_0000..0x20_0100]
    );
}

#[test]
fn info_structure_is_written_field_by_field() {
    let ram = ram(32);
    let loaded = load(&ram, &small_kernel().build()).unwrap();
    let word = |offset: u32| ram.read_u32(GuestPhys(INFO_ADDR + offset)).unwrap();
    let cmdline_addr = STRINGS_ADDR;
    let cmdline = "kernel.elf console=ttyS0 quiet";
    let name_addr = cmdline_addr + cmdline.len() as u32 + 1;
    assert_eq!(word(0), INFO_FLAGS, "flags");
    assert_eq!(word(4), 640, "mem_lower");
    assert_eq!(word(8), 31 * 1024, "mem_upper");
    assert_eq!(word(12), 0x8000_ffff, "boot_device");
    assert_eq!(word(16), cmdline_addr, "cmdline");
    assert_eq!(word(20), 0, "mods_count");
    assert_eq!(word(44), 4 * 24, "mmap_length");
    assert_eq!(word(48), 0x9000, "mmap_addr");
    assert_eq!(word(64), name_addr, "boot_loader_name");
    assert_eq!(c_string_at(&ram, cmdline_addr), cmdline);
    assert_eq!(c_string_at(&ram, name_addr), "nestmon");
    assert_eq!(loaded.info_area, 0x9000..name_addr + 8);
}

#[test]
fn memory_map_in_ram_describes_the_pc_layout() {
    let ram = ram(16);
    load(&ram, &small_kernel().build()).unwrap();
    let entry = |i: u32| {
        let at = MMAP_ADDR + i * 24;
        let size = ram.read_u32(GuestPhys(at)).unwrap();
        let base = ram.read_u64(GuestPhys(at + 4)).unwrap();
        let len = ram.read_u64(GuestPhys(at + 12)).unwrap();
        let kind = ram.read_u32(GuestPhys(at + 20)).unwrap();
        (size, base, len, kind)
    };
    assert_eq!(entry(0), (20, 0, 0x9_fc00, 1));
    assert_eq!(entry(1), (20, 0x9_fc00, 0x400, 2));
    assert_eq!(entry(2), (20, 0xf_0000, 0x1_0000, 2));
    assert_eq!(entry(3), (20, 0x10_0000, 15 << 20, 1));
}

#[test]
fn command_line_without_append_is_the_name_and_a_space_as_in_qemu() {
    let ram = ram(4);
    load_multiboot(&ram, &small_kernel().build(), "/boot/k.elf", "").unwrap();
    assert_eq!(c_string_at(&ram, STRINGS_ADDR), "/boot/k.elf ");
}

#[test]
fn text_file_is_refused_as_not_elf() {
    assert!(matches!(
        load(&ram(2), b"#!/bin/sh\necho hi\n"),
        Err(LoadError::NotElf)
    ));
}

#[test]
fn elf64_x86_64_kernel_loads_below_4_gib_and_is_entered_at_its_entry() {
    let image = small_kernel().elf64().build();
    let loaded = load(&ram(2), &image).unwrap();
    assert_eq!(loaded.boot.eip, KERNEL_AT + 4);
    assert_eq!(loaded.boot.eax, BOOTLOADER_MAGIC);
    assert_eq!(loaded.segments, vec![KERNEL_AT..KERNEL_AT + 32]);
}

#[test]
fn elf64_without_multiboot_header_or_for_another_machine_is_refused() {
    let image = small_kernel().elf64().multiboot(None).build();
    assert!(matches!(
        load(&ram(2), &image),
        Err(LoadError::ProgramNotKernel)
    ));
    let image = small_kernel().elf64().machine(3).build();
    assert!(matches!(
        load(&ram(2), &image),
        Err(LoadError::Elf64NotX86_64 { machine: 3 })
    ));
}

#[test]
fn elf32_without_multiboot_header_is_refused() {
    let image = small_kernel().multiboot(None).build();
    assert!(matches!(
        load(&ram(2), &image),
        Err(LoadError::ProgramNotKernel)
    ));
}

#[test]
fn linux_bzimage_is_not_taken_for_a_multiboot_kernel() {
    let mut image = vec![0u8; 0x400];
    image[0x202..0x206].copy_from_slice(b"HdrS");
    image[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
    // The Multiboot loader alone sees no ELF file and no header...
    assert!(matches!(load(&ram(2), &image), Err(LoadError::NotElf)));
    // ...while load_kernel hands it to the Linux loader.
    assert!(matches!(
        load_kernel(&ram(2), &image, "bz", "", &[]),
        Err(LoadError::LinuxNotBzImage { version: 0x020f })
    ));
}

#[test]
fn bad_checksum_is_refused() {
    let mut header = multiboot_header(FLAG_MEMORY_INFO);
    header[8] = header[8].wrapping_add(1);
    let image = small_kernel().multiboot(Some(header)).build();
    assert!(matches!(
        load(&ram(2), &image),
        Err(LoadError::BadChecksum { offset: 84, .. })
    ));
}

#[test]
fn video_mode_requirement_is_refused() {
    let image = small_kernel()
        .multiboot(Some(multiboot_header(FLAG_VIDEO_MODE)))
        .build();
    assert!(matches!(
        load(&ram(2), &image),
        Err(LoadError::UnsupportedFlags { unsupported: 4, .. })
    ));
}

#[test]
fn flat_image_cut_inside_its_address_fields_says_the_file_ends() {
    let image = &multiboot_header_with_addresses(FLAG_MEMORY_INFO, [KERNEL_AT; 5])[..20];
    match load(&ram(2), image) {
        Err(e @ LoadError::HeaderTruncated { offset: 0, .. }) => {
            assert!(
                e.to_string().ends_with("run past the end of the file"),
                "{e}"
            )
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn flat_image_requiring_a_video_mode_is_refused_for_it_not_as_not_elf() {
    let mut image =
        multiboot_header_with_addresses(FLAG_VIDEO_MODE, [KERNEL_AT, KERNEL_AT, 0, 0, KERNEL_AT]);
    image.extend_from_slice(&[0xf4; 8]);
    assert!(matches!(
        load(&ram(2), &image),
        Err(LoadError::UnsupportedFlags { unsupported: 4, .. })
    ));
}

#[test]
fn non_elf_file_whose_header_does_not_ask_for_flat_loading_is_not_elf() {
    let mut image = multiboot_header(FLAG_VIDEO_MODE);
    image.extend_from_slice(&[0xf4; 8]);
    assert!(matches!(load(&ram(2), &image), Err(LoadError::NotElf)));
}

#[test]
fn kernel_linked_beyond_ram_is_refused() {
    let image = ElfBuilder::new(0x100_0000)
        .segment(TestSegment::code(0x100_0000, vec![0x90; 8]))
        .build();
    match load(&ram(2), &image) {
        Err(LoadError::SegmentOutsideRam {
            start,
            end,
            ram_size,
        }) => {
            assert_eq!((start, end, ram_size), (0x100_0000, 0x100_0008, 2 << 20));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn bss_reaching_past_ram_is_refused() {
    let image = ElfBuilder::new(KERNEL_AT)
        .segment(TestSegment::code(KERNEL_AT, vec![0x90]).mem_size(2 << 20))
        .build();
    assert!(matches!(
        load(&ram(2), &image),
        Err(LoadError::SegmentOutsideRam { .. })
    ));
}

#[test]
fn segment_over_qemus_info_address_moves_the_info_area() {
    let ram = ram(2);
    let image = ElfBuilder::new(0x9400)
        .segment(TestSegment::code(0x9400, vec![0x90; 0x200]))
        .build();
    let loaded = load(&ram, &image).unwrap();
    assert_eq!(loaded.info_area.start, 0x1000);
    assert_eq!(loaded.boot.ebx, 0x1500);
    let word = |offset: u32| ram.read_u32(GuestPhys(0x1500 + offset)).unwrap();
    assert_eq!(word(0), INFO_FLAGS);
    assert_eq!(word(48), 0x1000, "mmap_addr");
    assert_eq!(
        c_string_at(&ram, word(16)),
        "kernel.elf console=ttyS0 quiet"
    );
    assert_eq!(c_string_at(&ram, word(64)), "nestmon");
}

#[test]
fn kernel_loaded_at_0x8000_across_0x9000_boots_as_under_qemu() {
    let ram = ram(4);
    let image = ElfBuilder::new(0x8000)
        .segment(TestSegment::code(0x8000, vec![0x90; 0x1800]).mem_size(0x3000))
        .build();
    let loaded = load(&ram, &image).unwrap();
    assert_eq!(loaded.segments, vec![0x8000..0xb000]);
    assert_eq!(loaded.info_area.start, 0x1000);
    assert_eq!(loaded.boot.ebx, 0x1500);
}

#[test]
fn segments_everywhere_in_low_memory_leave_no_room_for_the_info_area() {
    let image = ElfBuilder::new(0x1000)
        .segment(TestSegment::code(0x1000, vec![0x90; 16]).mem_size(0x9_ec00))
        .build();
    let error = load(&ram(2), &image).unwrap_err();
    assert!(
        matches!(error, LoadError::NoRoomForInfo { .. }),
        "{error:?}"
    );
    assert!(
        error.to_string().contains("no room below 0x9fc00"),
        "{error}"
    );
}

fn module(path: &str, args: Option<&str>, data: &[u8]) -> BootFile {
    BootFile {
        path: path.to_string(),
        args: args.map(str::to_string),
        data: data.to_vec(),
    }
}

#[test]
fn modules_are_listed_above_the_kernel_with_their_strings() {
    let ram = ram(4);
    let files = [
        module("/m/a.bin", Some("arg=1 two"), b"first module"),
        module("b.bin", None, &[7; 0x1800]),
    ];
    let loaded = load_kernel(&ram, &small_kernel().build(), "k.elf", "x", &files).unwrap();
    let LoadedGuest::Multiboot(loaded) = loaded else {
        panic!("not Multiboot")
    };
    assert_eq!(
        loaded.modules,
        vec![0x10_1000..0x10_100c, 0x10_2000..0x10_3800]
    );
    let info = |offset: u32| ram.read_u32(GuestPhys(loaded.boot.ebx + offset)).unwrap();
    assert_eq!(info(0) & INFO_MODULES, INFO_MODULES);
    assert_eq!(info(20), 2, "mods_count");
    let list = info(24);
    assert_eq!(list, 0x10_4000, "mods_addr");
    assert_eq!(loaded.module_list.as_ref().map(|r| r.start), Some(list));
    let entry = |i: u32, field: u32| ram.read_u32(GuestPhys(list + 16 * i + 4 * field)).unwrap();
    assert_eq!((entry(0, 0), entry(0, 1)), (0x10_1000, 0x10_100c));
    assert_eq!((entry(1, 0), entry(1, 1)), (0x10_2000, 0x10_3800));
    assert_eq!(c_string_at(&ram, entry(0, 2)), "/m/a.bin arg=1 two");
    assert_eq!(c_string_at(&ram, entry(1, 2)), "b.bin");
    assert_eq!((entry(0, 3), entry(1, 3)), (0, 0));
    let mut bytes = [0u8; 12];
    ram.read(GuestPhys(0x10_1000), &mut bytes).unwrap();
    assert_eq!(&bytes, b"first module");
}

#[test]
fn modules_past_the_end_of_ram_are_refused_before_anything_is_written() {
    let ram = ram(2);
    let files = [module("big", None, &vec![1; 1 << 20])];
    let result = load_kernel(&ram, &small_kernel().build(), "k", "", &files);
    assert!(
        matches!(result, Err(LoadError::ModulesDoNotFit { count: 1, .. })),
        "{result:?}"
    );
    let mut text = [0u8; 32];
    ram.read(GuestPhys(KERNEL_AT), &mut text).unwrap();
    assert_eq!(text, [0; 32]);
}

#[test]
fn segment_in_low_memory_clear_of_the_info_area_loads() {
    let image = ElfBuilder::new(0x1_0000)
        .segment(TestSegment::code(0x1_0000, vec![0x90; 0x100]))
        .build();
    assert_eq!(load(&ram(2), &image).unwrap().boot.eip, 0x1_0000);
}

#[test]
fn overlapping_segments_are_refused() {
    let image = small_kernel()
        .segment(TestSegment::code(KERNEL_AT + 16, vec![1; 4]))
        .build();
    assert!(matches!(
        load(&ram(2), &image),
        Err(LoadError::SegmentsOverlap { .. })
    ));
}

#[test]
fn entry_outside_every_segment_is_refused() {
    let image = ElfBuilder::new(KERNEL_AT + 0x1000)
        .segment(TestSegment::code(KERNEL_AT, vec![0x90; 8]))
        .build();
    assert!(matches!(
        load(&ram(2), &image),
        Err(LoadError::EntryOutsideImage { entry: 0x10_1000 })
    ));
}

#[test]
fn entry_in_bss_counts_as_inside_the_segment() {
    let image = ElfBuilder::new(KERNEL_AT + 0x20)
        .segment(TestSegment::code(KERNEL_AT, vec![0x90; 8]).mem_size(0x40))
        .build();
    assert!(load(&ram(2), &image).is_ok());
}

#[test]
fn truncated_kernel_is_refused() {
    let image = small_kernel().build();
    assert!(matches!(
        load(&ram(2), &image[..image.len() - 1]),
        Err(LoadError::Truncated { .. })
    ));
}

#[test]
fn command_line_with_nul_is_refused() {
    let result = load_multiboot(&ram(2), &small_kernel().build(), "k", "a\0b");
    assert!(matches!(result, Err(LoadError::CommandLineHasNul)));
}

#[test]
fn command_line_too_long_for_low_memory_is_refused() {
    let append = "x".repeat(InfoLayout::max_cmdline_len());
    let result = load_multiboot(&ram(2), &small_kernel().build(), "k", &append);
    assert!(matches!(result, Err(LoadError::CommandLineTooLong { .. })));
}

#[test]
fn flat_image_loads_by_the_header_addresses() {
    let ram = ram(4);
    // header_addr = load_addr: the file is loaded from the header onwards.
    let mut image = multiboot_header_with_addresses(
        FLAG_MEMORY_INFO,
        [KERNEL_AT, KERNEL_AT, 0, KERNEL_AT + 0x1000, KERNEL_AT + 32],
    );
    image.extend_from_slice(&[0xf4; 8]);
    ram.write(GuestPhys(KERNEL_AT + 40), &[0xaa; 16]).unwrap();
    let loaded = load(&ram, &image).unwrap();
    assert_eq!(loaded.boot.eip, KERNEL_AT + 32);
    assert_eq!(loaded.segments, vec![KERNEL_AT..KERNEL_AT + 0x1000]);
    let mut bytes = [0u8; 56];
    ram.read(GuestPhys(KERNEL_AT), &mut bytes).unwrap();
    assert_eq!(&bytes[..40], &image[..]);
    assert!(bytes[40..].iter().all(|&b| b == 0));
}

#[test]
fn header_addresses_win_over_elf_program_headers() {
    let addresses = [0x30_0000 + 84, 0x30_0000, 0, 0, 0x30_0000];
    let header = multiboot_header_with_addresses(FLAG_MEMORY_INFO, addresses);
    let image = small_kernel().multiboot(Some(header)).build();
    let loaded = load(&ram(4), &image).unwrap();
    assert_eq!(loaded.boot.eip, 0x30_0000);
    assert_eq!(loaded.segments[0].start, 0x30_0000);
}

#[test]
fn refused_image_leaves_ram_untouched() {
    let ram = ram(2);
    let image = small_kernel()
        .segment(TestSegment::code(0x40_0000, vec![1]))
        .build();
    assert!(load(&ram, &image).is_err());
    assert_eq!(ram.read_u32(GuestPhys(KERNEL_AT)).unwrap(), 0);
    assert_eq!(ram.read_u32(GuestPhys(INFO_ADDR)).unwrap(), 0);
}

#[test]
fn corrupted_images_are_refused_without_panicking() {
    let ram = ram(2);
    let original = small_kernel()
        .segment(TestSegment::code(0x18_0000, vec![5; 64]).mem_size(0x2000))
        .build();
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut refused = 0;
    for _ in 0..3000 {
        let mut image = original.clone();
        for _ in 0..1 + next() % 4 {
            let at = (next() % image.len() as u64) as usize;
            image[at] = next() as u8;
        }
        let cut = image.len() - (next() % 8) as usize;
        refused += usize::from(load(&ram, &image[..cut]).is_err());
    }
    assert!(refused > 0);
}

/// A scratch directory for the read_kernel tests, removed at the end.
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn new(test: &str) -> ScratchDir {
        let dir =
            std::env::temp_dir().join(format!("nestmon-loader-{}-{test}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        ScratchDir(dir)
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[test]
fn kernel_that_is_a_directory_is_refused_with_its_kind() {
    let dir = ScratchDir::new("dir");
    let error = read_kernel(&dir.0).unwrap_err();
    assert!(
        matches!(
            error,
            LoadError::NotAKernelFile {
                kind: crate::input::FileKind::Directory,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(
        error
            .to_string()
            .ends_with("is a directory, not a kernel file"),
        "{error}"
    );
}

#[test]
fn kernel_that_is_dev_zero_is_refused_without_reading() {
    let error = read_kernel(Path::new("/dev/zero")).unwrap_err();
    assert_eq!(
        error.to_string(),
        "/dev/zero is a character device, not a kernel file"
    );
}

#[test]
fn kernel_file_past_the_limit_is_refused_with_the_limit() {
    let dir = ScratchDir::new("large");
    let path = dir.0.join("huge.elf");
    std::fs::File::create(&path)
        .and_then(|file| file.set_len(MAX_KERNEL_FILE_BYTES + 1))
        .unwrap();
    let error = read_kernel(&path).unwrap_err();
    assert!(
        matches!(
            error,
            LoadError::KernelFileTooLarge {
                limit: MAX_KERNEL_FILE_BYTES,
                ..
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains("larger than 256 MiB"), "{error}");
}

#[test]
fn missing_kernel_file_is_unreadable_with_the_hosts_reason() {
    let error = read_kernel(Path::new("/nonexistent/kernel.elf")).unwrap_err();
    assert!(matches!(error, LoadError::Unreadable { .. }), "{error:?}");
    assert!(error.to_string().contains("No such file"), "{error}");
}

#[test]
fn initrd_file_is_read_with_its_arguments() {
    let dir = ScratchDir::new("initrd");
    let path = dir.0.join("mod.bin");
    std::fs::write(&path, b"module bytes").unwrap();
    let file = read_boot_file(&path, Some("a=1")).unwrap();
    assert_eq!(file.data, b"module bytes");
    assert_eq!(file.path, path.display().to_string());
    assert_eq!(file.multiboot_string(), format!("{} a=1", path.display()));
}

#[test]
fn initrd_that_is_a_directory_is_refused_by_name() {
    let dir = ScratchDir::new("initrd-dir");
    let error = read_boot_file(&dir.0, None).unwrap_err();
    assert!(matches!(error, LoadError::InitrdFile { .. }), "{error:?}");
    assert!(
        error
            .to_string()
            .ends_with("is a directory, not a file to load"),
        "{error}"
    );
}

#[test]
fn missing_initrd_names_the_hosts_reason() {
    let error = read_boot_file(Path::new("/nonexistent/initrd.gz"), None).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("the initrd /nonexistent/initrd.gz cannot be read: "),
        "{error}"
    );
}
