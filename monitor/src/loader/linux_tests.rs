//! The Linux loader on synthetic bzImages loaded into real guest RAM.

use super::linux::*;
use super::testimage::BzImageBuilder;
use super::*;

const MIB: u64 = 1 << 20;

fn ram(mib: u64) -> GuestRam {
    GuestRam::new(mib).expect("guest RAM")
}

fn kernel_bytes() -> Vec<u8> {
    (0..0x1234u32).map(|i| (i * 7 + 1) as u8).collect()
}

fn bzimage() -> BzImageBuilder {
    BzImageBuilder::new(kernel_bytes())
}

fn initrd(data: &[u8]) -> BootFile {
    BootFile {
        path: "initrd.gz".to_string(),
        args: None,
        data: data.to_vec(),
    }
}

fn load_linux(
    ram: &GuestRam,
    image: &[u8],
    append: &str,
    files: &[BootFile],
) -> Result<LoadedLinux, LoadError> {
    match load_kernel(ram, image, "bzImage", append, files)? {
        LoadedGuest::Linux(loaded) => Ok(loaded),
        other => panic!("not loaded as Linux: {other:?}"),
    }
}

fn bytes_at(ram: &GuestRam, addr: u32, len: usize) -> Vec<u8> {
    let mut bytes = vec![0; len];
    ram.read(GuestPhys(addr), &mut bytes).unwrap();
    bytes
}

fn param_u8(ram: &GuestRam, offset: u32) -> u8 {
    bytes_at(ram, BOOT_PARAMS_ADDR + offset, 1)[0]
}

fn param_u16(ram: &GuestRam, offset: u32) -> u16 {
    let b = bytes_at(ram, BOOT_PARAMS_ADDR + offset, 2);
    u16::from_le_bytes([b[0], b[1]])
}

fn param_u32(ram: &GuestRam, offset: u32) -> u32 {
    ram.read_u32(GuestPhys(BOOT_PARAMS_ADDR + offset)).unwrap()
}

/// Asserts that `result` is an error and that guest RAM is still all zeros.
fn assert_refused_untouched(ram: &GuestRam, result: &Result<LoadedLinux, LoadError>) {
    assert!(result.is_err(), "loaded: {result:?}");
    let mut all = vec![0xffu8; ram.size()];
    ram.read(GuestPhys(0), &mut all).unwrap();
    assert!(all.iter().all(|&b| b == 0), "a refused load wrote RAM");
}

#[test]
fn bzimage_is_entered_at_code32_start_with_esi_at_boot_params() {
    let ram = ram(8);
    let loaded = load_linux(&ram, &bzimage().build(), "", &[]).unwrap();
    assert_eq!(
        loaded.entry,
        LinuxEntry {
            eip: 0x10_0000,
            esi: 0x7000,
            esp: ENTRY_ESP,
            gdt_base: 0x500,
            gdt_limit: 31,
            code_selector: 0x10,
            code_descriptor: CODE_DESCRIPTOR,
            data_selector: 0x18,
            data_descriptor: DATA_DESCRIPTOR,
        }
    );
    assert_eq!(loaded.protocol, 0x020f);
    assert_eq!(loaded.kernel, 0x10_0000..0x10_1234);
    assert_eq!(loaded.runtime, 0x20_0000..0x30_0000);
    assert_eq!(bytes_at(&ram, 0x10_0000, 0x1234), kernel_bytes());
}

#[test]
fn gdt_holds_flat_boot_cs_and_boot_ds() {
    let ram = ram(8);
    load_linux(&ram, &bzimage().build(), "", &[]).unwrap();
    let descriptor = |selector: u32| ram.read_u64(GuestPhys(GDT_ADDR + selector)).unwrap();
    assert_eq!(descriptor(0), 0);
    assert_eq!(descriptor(8), 0);
    let code = crate::cpu::Descriptor(descriptor(0x10));
    let data = crate::cpu::Descriptor(descriptor(0x18));
    for d in [code, data] {
        assert_eq!((d.base(), d.limit(), d.dpl()), (0, u32::MAX, 0));
        assert!(d.present() && d.big());
    }
    assert!(code.is_code() && code.readable());
    assert!(data.is_data() && data.writable());
}

#[test]
fn setup_header_is_copied_into_boot_params_and_completed() {
    let ram = ram(8);
    let image = bzimage().build();
    let loaded = load_linux(&ram, &image, "console=ttyS0", &[]).unwrap();
    assert_eq!(&bytes_at(&ram, BOOT_PARAMS_ADDR + 0x202, 4), b"HdrS");
    assert_eq!(param_u16(&ram, 0x206), 0x020f);
    assert_eq!(param_u16(&ram, 0x1fe), 0xaa55);
    assert_eq!(param_u8(&ram, 0x210), 0xff, "type_of_loader");
    assert_eq!(
        param_u8(&ram, 0x211),
        LOADED_HIGH | CAN_USE_HEAP,
        "loadflags"
    );
    assert_eq!(param_u16(&ram, 0x224), 0xde00, "heap_end_ptr");
    assert_eq!(param_u32(&ram, 0x228), 0x2_0000, "cmd_line_ptr");
    assert_eq!(param_u32(&ram, 0x214), 0x10_0000, "code32_start");
    assert_eq!(param_u32(&ram, 0x238), 2047, "cmdline_size");
    assert_eq!((param_u32(&ram, 0x218), param_u32(&ram, 0x21c)), (0, 0));
    assert_eq!(param_u32(&ram, 0x1e0), 7 * 1024, "alt_mem_k");
    // Nothing outside the header and the fields above is set.
    assert!(bytes_at(&ram, BOOT_PARAMS_ADDR, 0x1e0)
        .iter()
        .all(|&b| b == 0));
    assert!(bytes_at(&ram, BOOT_PARAMS_ADDR + 0x26c, 0x2d0 - 0x26c)
        .iter()
        .all(|&b| b == 0));
    assert_eq!(loaded.cmdline, 0x2_0000..0x2_000d);
    assert_eq!(bytes_at(&ram, 0x2_0000, 14), b"console=ttyS0\0");
}

#[test]
fn header_fields_past_the_headers_own_end_are_not_copied() {
    let ram = ram(8);
    let mut builder = bzimage();
    // A 2.04 header ends at 0x22c: initrd_addr_max and later stay zero.
    builder.protocol = 0x0204;
    builder.jump = 0x2a;
    load_linux(&ram, &builder.build(), "", &[]).unwrap();
    assert_eq!(param_u32(&ram, 0x228), 0x2_0000, "cmd_line_ptr is written");
    assert_eq!(param_u32(&ram, 0x22c), 0, "initrd_addr_max not copied");
    assert_eq!(param_u32(&ram, 0x238), 0, "cmdline_size not copied");
}

#[test]
fn e820_map_is_low_ram_the_bios_hole_and_high_ram() {
    let ram = ram(16);
    load_linux(&ram, &bzimage().build(), "", &[]).unwrap();
    assert_eq!(param_u8(&ram, 0x1e8), 3, "e820_entries");
    let entry = |i: u32| {
        let at = BOOT_PARAMS_ADDR + 0x2d0 + 20 * i;
        (
            ram.read_u64(GuestPhys(at)).unwrap(),
            ram.read_u64(GuestPhys(at + 8)).unwrap(),
            ram.read_u32(GuestPhys(at + 16)).unwrap(),
        )
    };
    assert_eq!(entry(0), (0, 0x9_f000, E820_RAM));
    assert_eq!(entry(1), (0x9_f000, 0x6_1000, E820_RESERVED));
    assert_eq!(entry(2), (0x10_0000, 15 * MIB, E820_RAM));
    assert_eq!(entry(3), (0, 0, 0));
}

#[test]
fn setup_sects_zero_means_four() {
    let ram = ram(8);
    let mut builder = bzimage();
    builder.setup_sects = 0;
    let image = builder.build();
    assert_eq!(image.len(), 5 * 512 + 0x1234);
    load_linux(&ram, &image, "", &[]).unwrap();
    assert_eq!(bytes_at(&ram, 0x10_0000, 0x1234), kernel_bytes());
}

#[test]
fn initrd_goes_page_aligned_to_the_top_of_ram() {
    let ram = ram(8);
    let data: Vec<u8> = (0..0x2345u32).map(|i| (i % 251) as u8).collect();
    let loaded = load_linux(&ram, &bzimage().build(), "", &[initrd(&data)]).unwrap();
    let start = ((8 * MIB - 0x2345) & !0xfff) as u32;
    assert_eq!(loaded.initrd, Some(start..start + 0x2345));
    assert_eq!(param_u32(&ram, 0x218), start, "ramdisk_image");
    assert_eq!(param_u32(&ram, 0x21c), 0x2345, "ramdisk_size");
    assert_eq!(bytes_at(&ram, start, data.len()), data);
}

#[test]
fn initrd_stays_below_initrd_addr_max() {
    let ram = ram(16);
    let mut builder = bzimage();
    builder.initrd_addr_max = 0x7f_ffff;
    let loaded = load_linux(&ram, &builder.build(), "", &[initrd(&[1; 0x1800])]).unwrap();
    assert_eq!(loaded.initrd, Some(0x7f_e000..0x7f_f800));
}

#[test]
fn initrd_larger_than_the_room_above_the_kernel_is_refused() {
    let ram = ram(4);
    let result = load_linux(&ram, &bzimage().build(), "", &[initrd(&vec![1; 2 << 20])]);
    match &result {
        Err(
            e @ LoadError::InitrdTooLarge {
                size,
                lowest,
                limit,
                addr_max,
            },
        ) => {
            assert_eq!(
                (*size, *lowest, *limit, *addr_max),
                (2 << 20, 0x30_0000, 4 * MIB, 0x7fff_ffff)
            );
            assert!(e.to_string().contains("only 1048576 bytes fit"), "{e}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_refused_untouched(&ram, &result);
}

#[test]
fn linux_takes_one_initrd_without_arguments() {
    let ram = ram(8);
    let image = bzimage().build();
    let two = [initrd(b"a"), initrd(b"b")];
    assert!(matches!(
        load_linux(&ram, &image, "", &two),
        Err(LoadError::LinuxInitrdNotOneFile {
            count: 2,
            has_args: false
        })
    ));
    let mut with_args = initrd(b"a");
    with_args.args = Some("x".into());
    assert!(matches!(
        load_linux(&ram, &image, "", &[with_args]),
        Err(LoadError::LinuxInitrdNotOneFile {
            count: 1,
            has_args: true
        })
    ));
}

#[test]
fn command_line_longer_than_cmdline_size_is_refused() {
    let ram = ram(8);
    let mut builder = bzimage();
    builder.cmdline_size = 8;
    assert!(load_linux(&ram, &builder.build(), "12345678", &[]).is_ok());
    let ram = self::ram(8);
    let result = load_linux(&ram, &builder.build(), "123456789", &[]);
    assert!(matches!(
        result,
        Err(LoadError::LinuxCommandLineTooLong { len: 9, max: 8 })
    ));
    assert_refused_untouched(&ram, &result);
}

#[test]
fn protocols_before_2_06_take_255_bytes_of_command_line() {
    let mut builder = bzimage();
    builder.protocol = 0x0205;
    builder.cmdline_size = 4096;
    let result = load_linux(&ram(8), &builder.build(), &"x".repeat(256), &[]);
    assert!(matches!(
        result,
        Err(LoadError::LinuxCommandLineTooLong { len: 256, max: 255 })
    ));
}

#[test]
fn command_line_with_nul_is_refused() {
    assert!(matches!(
        load_linux(&ram(8), &bzimage().build(), "a\0b", &[]),
        Err(LoadError::CommandLineHasNul)
    ));
}

#[test]
fn protocol_older_than_2_04_is_refused_with_its_version() {
    let ram = ram(8);
    let mut builder = bzimage();
    builder.protocol = 0x0203;
    let result = load_linux(&ram, &builder.build(), "", &[]);
    match &result {
        Err(e @ LoadError::LinuxProtocolTooOld { version: 0x0203 }) => {
            assert!(e.to_string().contains("boot protocol 2.03"), "{e}");
            assert!(e.to_string().contains("2.04 or later"), "{e}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_refused_untouched(&ram, &result);
}

#[test]
fn zimage_is_refused() {
    let mut builder = bzimage();
    builder.loadflags = 0;
    let error = load_linux(&ram(8), &builder.build(), "", &[]).unwrap_err();
    assert!(matches!(
        error,
        LoadError::LinuxNotBzImage { version: 0x020f }
    ));
    assert!(error.to_string().contains("zImage"), "{error}");
}

#[test]
fn setup_past_the_end_of_the_file_is_refused() {
    let ram = ram(8);
    let mut builder = bzimage();
    builder.kernel.clear();
    let mut image = builder.build();
    image.truncate(3 * 512);
    let result = load_linux(&ram, &image, "", &[]);
    match &result {
        Err(
            e @ LoadError::LinuxSetupTruncated {
                setup_sects: 4,
                setup_len: 0xa00,
                file_len: 0x600,
            },
        ) => assert!(e.to_string().contains("truncated"), "{e}"),
        other => panic!("unexpected {other:?}"),
    }
    assert_refused_untouched(&ram, &result);
}

#[test]
fn file_cut_inside_the_header_is_truncated() {
    let image = bzimage().build();
    assert!(matches!(
        load_linux(&ram(8), &image[..0x210], "", &[]),
        Err(LoadError::Truncated { .. })
    ));
    assert!(matches!(
        load_linux(&ram(8), &image[..0x240], "", &[]),
        Err(LoadError::Truncated { needed: 0x26c, .. })
    ));
}

#[test]
fn kernel_shorter_than_syssize_is_refused() {
    let ram = ram(8);
    let mut image = bzimage().build();
    image.truncate(image.len() - 0x20);
    let result = load_linux(&ram, &image, "", &[]);
    assert!(
        matches!(
            result,
            Err(LoadError::LinuxKernelTruncated {
                syssize: 0x1240,
                present: 0x1214
            })
        ),
        "{result:?}"
    );
    assert_refused_untouched(&ram, &result);
}

#[test]
fn signed_kernel_with_bytes_past_syssize_loads_them_too() {
    let ram = ram(8);
    let mut image = bzimage().build();
    image.extend_from_slice(&[0xee; 0x600]);
    let loaded = load_linux(&ram, &image, "", &[]).unwrap();
    assert_eq!(loaded.kernel, 0x10_0000..0x10_1834);
}

#[test]
fn non_relocatable_kernel_beyond_ram_is_refused() {
    let ram = ram(4);
    let mut builder = bzimage();
    builder.relocatable = 0;
    builder.code32_start = 0x40_0000;
    let result = load_linux(&ram, &builder.build(), "", &[]);
    match &result {
        Err(
            e @ LoadError::LinuxKernelOutsideRam {
                start: 0x40_0000,
                len: 0x1234,
                ram_size,
            },
        ) => {
            assert_eq!(*ram_size, 4 * MIB);
            assert!(e.to_string().contains("does not fit in guest RAM"), "{e}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_refused_untouched(&ram, &result);
}

#[test]
fn relocatable_kernel_that_does_not_fit_at_code32_start_is_loaded_at_1_mib() {
    let ram = ram(8);
    let mut builder = bzimage();
    builder.code32_start = 0x100_0000;
    let loaded = load_linux(&ram, &builder.build(), "", &[]).unwrap();
    assert_eq!(loaded.entry.eip, 0x10_0000);
    assert_eq!(param_u32(&ram, 0x214), 0x10_0000, "code32_start");
}

#[test]
fn kernel_whose_init_size_needs_more_ram_is_refused_with_the_sizes() {
    let ram = ram(16);
    let mut builder = bzimage();
    builder.pref_address = 0x100_0000;
    builder.kernel_alignment = 0x100_0000;
    builder.init_size = 0x100_c000;
    let result = load_linux(&ram, &builder.build(), "", &[]);
    match &result {
        Err(
            e @ LoadError::LinuxNeedsMoreRam {
                start: 0x100_0000,
                init_size: 0x100_c000,
                ram_size,
            },
        ) => {
            assert_eq!(*ram_size, 16 * MIB);
            let text = e.to_string();
            assert!(text.contains("init_size 0x100c000"), "{text}");
            assert!(text.contains("at least 36 MiB (--memsize 36)"), "{text}");
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_refused_untouched(&ram, &result);
    let ram = self::ram(36);
    let loaded = load_linux(&ram, &builder.build(), "", &[initrd(b"rd")]).unwrap();
    assert_eq!(loaded.runtime, 0x100_0000..0x200_c000);
    assert!(loaded.initrd.unwrap().start >= 0x200_c000);
}

#[test]
fn non_relocatable_kernel_runs_at_pref_address() {
    let mut builder = bzimage();
    builder.relocatable = 0;
    builder.pref_address = 0x40_0000;
    let loaded = load_linux(&ram(8), &builder.build(), "", &[]).unwrap();
    assert_eq!(loaded.runtime, 0x40_0000..0x50_0000);
}

#[test]
fn huge_pref_address_is_refused_not_a_panic() {
    let mut builder = bzimage();
    builder.pref_address = u64::MAX - 5;
    assert!(matches!(
        load_linux(&ram(8), &builder.build(), "", &[]),
        Err(LoadError::LinuxNeedsMoreRam { .. })
    ));
}

#[test]
fn multiboot_kernels_still_load_through_load_kernel() {
    let image = super::testimage::ElfBuilder::new(0x10_0000)
        .segment(super::testimage::TestSegment::code(
            0x10_0000,
            vec![0x90; 4],
        ))
        .build();
    let loaded = load_kernel(&ram(4), &image, "k", "", &[]).unwrap();
    assert!(matches!(loaded, LoadedGuest::Multiboot(_)));
}

#[test]
fn e820_map_of_a_small_machine_has_no_empty_entries() {
    assert_eq!(
        e820_map(1 << 20),
        vec![(0, 0x9_f000, E820_RAM), (0x9_f000, 0x6_1000, E820_RESERVED)]
    );
}

mod mutated {
    use super::*;
    use proptest::prelude::*;

    fn overlaps(a: &Range<u32>, b: &Range<u32>) -> bool {
        a.start < b.end && b.start < a.end
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

        /// Any header bytes, any length: a refusal writes nothing; a load
        /// writes only its reported ranges, which lie in RAM apart.
        #[test]
        fn mutated_bzimages_load_inside_their_ranges_or_leave_ram_untouched(
            edits in prop::collection::vec((0x1f1usize..0x270, any::<u8>()), 0..6),
            cut in prop::option::of(0usize..0x1c00),
            initrd_len in prop::option::of(0usize..0x3000),
        ) {
            let mut image = bzimage().build();
            for (offset, byte) in edits {
                image[offset] = byte;
            }
            if let Some(cut) = cut {
                image.truncate(cut);
            }
            let ram = ram(4);
            let files: Vec<BootFile> =
                initrd_len.map(|n| initrd(&vec![0x77; n])).into_iter().collect();
            let result = load_kernel(&ram, &image, "bz", "console=ttyS0", &files);
            let mut all = vec![0u8; ram.size()];
            ram.read(GuestPhys(0), &mut all).unwrap();
            match result {
                Err(e) => {
                    prop_assert!(all.iter().all(|&b| b == 0), "refused ({e}) but wrote RAM");
                    prop_assert!(!e.to_string().contains('\n'));
                }
                Ok(LoadedGuest::Multiboot(k)) => prop_assert!(false, "loaded as Multiboot: {k:?}"),
                Ok(LoadedGuest::Linux(l)) => {
                    let mut ranges = vec![
                        GDT_ADDR..GDT_ADDR + 32,
                        BOOT_PARAMS_ADDR..BOOT_PARAMS_ADDR + 4096,
                        l.cmdline.start..l.cmdline.end + 1,
                        l.kernel.clone(),
                    ];
                    ranges.extend(l.initrd.clone());
                    for (i, a) in ranges.iter().enumerate() {
                        prop_assert!(u64::from(a.end) <= ram.size() as u64, "{a:x?} past RAM");
                        for b in &ranges[i + 1..] {
                            prop_assert!(!overlaps(a, b), "{a:x?} overlaps {b:x?}");
                        }
                    }
                    prop_assert!(l.kernel.start >= KERNEL_ADDR && l.runtime.start >= KERNEL_ADDR);
                    prop_assert!(u64::from(l.runtime.end) <= ram.size() as u64);
                    if let Some(rd) = &l.initrd {
                        prop_assert!(rd.start >= l.runtime.end.max(l.kernel.end));
                        prop_assert_eq!(rd.start % 0x1000, 0);
                    }
                    let stray = all
                        .iter()
                        .enumerate()
                        .find(|&(at, &b)| b != 0 && !ranges.iter().any(|r| r.contains(&(at as u32))));
                    prop_assert!(stray.is_none(), "wrote {:x?} outside {ranges:x?}", stray);
                }
            }
        }
    }
}
