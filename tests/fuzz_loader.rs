//! Fuzz target: the Multiboot loader (`monitor::loader`).
//!
//! Every corpus file in `tests/corpus/loader/` is replayed, then images are
//! generated for the time budget (`NESTMON_FUZZ_SECONDS`, see
//! docs/fuzzing.md): synthetic ELF32 and flat (flag bit 16) images, the real
//! guests and the corpus, mutated field by field towards boundary values.
//! Each image is loaded into guest RAM pre-filled with a pattern, for every
//! RAM size and command line of the machine, and must satisfy:
//!
//! - the loader returns, without panicking, within the watchdog's limit;
//! - on success: EAX is the Multiboot magic and EBX the information
//!   structure of the reported information area, every reported segment
//!   lies inside RAM, clear of that area and of the other segments, the
//!   entry point lies in one, the area has the length [`InfoLayout`] gives
//!   and lies between 0x1000 and 0x9fc00, the information structure and
//!   command line are in RAM, and no byte outside the segments and the
//!   information area changed;
//! - on failure: a typed [`LoadError`] with a one-line message, and not one
//!   byte of RAM changed;
//! - loading the same image again gives the same result and the same bytes;
//! - an unmutated synthetic image loads exactly as the documented rules
//!   (`fuzz_loader/model.rs`) say, byte for byte and with the information
//!   area where they put it, or is refused when they refuse it.

#[path = "support/fuzz.rs"]
mod fuzz;
#[path = "fuzz_loader/image.rs"]
mod image;
#[path = "fuzz_loader/model.rs"]
mod model;
#[path = "fuzz_loader/strategy.rs"]
mod strategy;

use fuzz::{Target, Watchdog};
use image::Context;
use model::{placement, Expectation, Plan};
use monitor::loader::info::{InfoLayout, INFO_ADDR, INFO_FLAGS, INFO_OFFSET, INFO_SIZE};
use monitor::loader::{load_multiboot_kernel, LoadError, LoadedKernel, BOOTLOADER_MAGIC};
use proptest::prelude::*;
use shadowmmu::{GuestPhys, GuestRam};
use std::ops::Range;
use std::sync::OnceLock;

const TARGET: Target = Target {
    name: "fuzz_loader",
    corpus: "loader",
    extension: "bin",
};

/// The RAM sizes every image is tried with (replay) or chosen from.
const RAM_SIZES_MIB: [u64; 3] = [1, 2, 4];
/// The kernel's file name: the start of the command line.
const IMAGE_NAME: &str = "fuzz.elf";

/// The `--append` texts: none, short, the longest that fits, one too long.
fn appends() -> Vec<String> {
    let longest = InfoLayout::max_cmdline_len() - IMAGE_NAME.len() - 1;
    vec![
        String::new(),
        "console=ttyS0 quiet".to_string(),
        "a".repeat(longest),
        "b".repeat(longest + 1),
    ]
}

/// One load to check.
struct Case {
    image: Vec<u8>,
    ram: usize,
    append: usize,
    expectation: Expectation,
}

/// Guest RAM filled with a known pattern, to see every byte the loader writes.
struct PatternedRam {
    ram: GuestRam,
    pattern: Vec<u8>,
    /// The RAM contents as last read.
    seen: Vec<u8>,
    /// RAM may differ from the pattern (a check stopped half-way).
    dirty: bool,
}

impl PatternedRam {
    fn new(mib: u64) -> PatternedRam {
        let ram = GuestRam::new(mib).expect("guest RAM for the fuzz target");
        // Never zero, so that zeroed bss shows as written.
        let pattern: Vec<u8> = (0..ram.size() as u32)
            .map(|i| (i.wrapping_mul(0x9e37_79b1) >> 24) as u8 | 1)
            .collect();
        ram.write(GuestPhys(0), &pattern).expect("fill RAM");
        let seen = pattern.clone();
        PatternedRam {
            ram,
            pattern,
            seen,
            dirty: false,
        }
    }

    /// Reads RAM into `seen`; returns the ranges that differ from the pattern.
    fn written(&mut self) -> Vec<Range<usize>> {
        self.ram
            .read(GuestPhys(0), &mut self.seen)
            .expect("read RAM");
        written_ranges(&self.pattern, &self.seen)
    }

    fn restore(&mut self, ranges: &[Range<usize>]) {
        for range in ranges {
            self.ram
                .write(GuestPhys(range.start as u32), &self.pattern[range.clone()])
                .expect("restore RAM");
        }
        self.dirty = false;
    }

    fn restore_all(&mut self) {
        self.ram
            .write(GuestPhys(0), &self.pattern)
            .expect("restore RAM");
        self.dirty = false;
    }
}

/// The ranges where `seen` differs from `pattern`, ascending and merged.
fn written_ranges(pattern: &[u8], seen: &[u8]) -> Vec<Range<usize>> {
    const CHUNK: usize = 4096;
    let mut ranges: Vec<Range<usize>> = Vec::new();
    for (chunk, (old, new)) in pattern.chunks(CHUNK).zip(seen.chunks(CHUNK)).enumerate() {
        if old == new {
            continue;
        }
        for (offset, _) in old.iter().zip(new).enumerate().filter(|(_, (a, b))| a != b) {
            let at = chunk * CHUNK + offset;
            match ranges.last_mut() {
                Some(last) if last.end == at => last.end += 1,
                _ => ranges.push(at..at + 1),
            }
        }
    }
    ranges
}

/// What one load did: its result and every byte it wrote.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    result: String,
    written: Vec<(Range<usize>, Vec<u8>)>,
}

/// The worker's state: RAM of each size and the command lines.
struct Machine {
    rams: Vec<PatternedRam>,
    appends: Vec<String>,
}

impl Machine {
    fn new() -> Machine {
        Machine {
            rams: RAM_SIZES_MIB
                .iter()
                .map(|&mib| PatternedRam::new(mib))
                .collect(),
            appends: appends(),
        }
    }

    /// Loads the case twice and checks both loads.
    fn check(&mut self, case: &Case) -> Result<(), String> {
        let first = self.load_and_verify(case)?;
        let second = self.load_and_verify(case)?;
        if first != second {
            return Err(format!(
                "two loads of the same image differ:\n{first:?}\n{second:?}"
            ));
        }
        Ok(())
    }

    fn load_and_verify(&mut self, case: &Case) -> Result<Outcome, String> {
        let append = &self.appends[case.append];
        let ram = &mut self.rams[case.ram];
        if ram.dirty {
            ram.restore_all();
        }
        ram.dirty = true;
        let result = load_multiboot_kernel(&ram.ram, &case.image, IMAGE_NAME, append);
        let written = ram.written();
        let cmdline = format!("{IMAGE_NAME} {append}");
        let verdict = verify(&result, &written, &ram.seen, &cmdline)
            .and_then(|()| expect(case, &result, &ram.seen, &cmdline));
        let outcome = Outcome {
            result: match &result {
                Ok(loaded) => format!("{loaded:?}"),
                Err(e) => format!("{e:?}: {e}"),
            },
            written: written
                .iter()
                .map(|r| (r.clone(), ram.seen[r.clone()].to_vec()))
                .collect(),
        };
        ram.restore(&written);
        verdict.map(|()| outcome)
    }
}

/// The properties every load must have.
fn verify(
    result: &Result<LoadedKernel, LoadError>,
    written: &[Range<usize>],
    ram: &[u8],
    cmdline: &str,
) -> Result<(), String> {
    match result {
        Ok(loaded) => verify_loaded(loaded, written, ram, cmdline),
        Err(error) => verify_refused(error, written),
    }
}

fn verify_refused(error: &LoadError, written: &[Range<usize>]) -> Result<(), String> {
    if let Some(range) = written.first() {
        return Err(format!(
            "refused ({error}) but wrote guest RAM at {:#x}..{:#x}",
            range.start, range.end
        ));
    }
    let message = error.to_string();
    if message.is_empty() || message.contains(|c: char| c.is_control()) {
        return Err(format!(
            "error message is not one line of text: {message:?}"
        ));
    }
    Ok(())
}

fn verify_loaded(
    loaded: &LoadedKernel,
    written: &[Range<usize>],
    ram: &[u8],
    cmdline: &str,
) -> Result<(), String> {
    let boot = &loaded.boot;
    let info = &loaded.info_area;
    if (boot.eax, boot.ebx) != (BOOTLOADER_MAGIC, info.start + INFO_OFFSET) {
        return Err(format!(
            "EAX/EBX are not the Multiboot values for the area {info:x?}: {boot:?}"
        ));
    }
    let len = InfoLayout::new(cmdline.len())
        .map_err(|e| format!("loaded although the layout is refused: {e}"))?
        .len();
    if info.len() != len as usize || info.start < 0x1000 || info.end > 0x9_fc00 {
        return Err(format!(
            "information area {info:x?} is not {len:#x} bytes between 0x1000 and 0x9fc00"
        ));
    }
    if !loaded.modules.is_empty() || loaded.module_list.is_some() {
        return Err(format!("modules appeared from nowhere: {loaded:x?}"));
    }
    verify_segments(loaded, ram.len() as u64)?;
    verify_writes(loaded, written)?;
    verify_information(ram, boot.ebx, cmdline)
}

fn verify_segments(loaded: &LoadedKernel, ram_size: u64) -> Result<(), String> {
    let segments = &loaded.segments;
    let info = &loaded.info_area;
    if segments.is_empty() {
        return Err("loaded without a segment".to_string());
    }
    for segment in segments {
        if segment.start >= segment.end || u64::from(segment.end) > ram_size {
            return Err(format!("segment {segment:x?} is empty or outside RAM"));
        }
        if segment.start < info.end && info.start < segment.end {
            return Err(format!(
                "segment {segment:x?} overlaps the information area {info:x?}"
            ));
        }
    }
    if let Some(pair) = segments.windows(2).find(|p| p[1].start < p[0].end) {
        return Err(format!("segments out of order or overlapping: {pair:x?}"));
    }
    if !segments.iter().any(|s| s.contains(&loaded.boot.eip)) {
        return Err(format!("entry {:#x} is in no segment", loaded.boot.eip));
    }
    Ok(())
}

fn verify_writes(loaded: &LoadedKernel, written: &[Range<usize>]) -> Result<(), String> {
    let allowed: Vec<Range<usize>> = loaded
        .segments
        .iter()
        .chain([&loaded.info_area])
        .map(|r| r.start as usize..r.end as usize)
        .collect();
    for range in written {
        let stray = range
            .clone()
            .find(|at| !allowed.iter().any(|a| a.contains(at)));
        if let Some(at) = stray {
            return Err(format!(
                "wrote guest RAM at {at:#x}, outside the segments and the information area"
            ));
        }
    }
    Ok(())
}

fn verify_information(ram: &[u8], info_addr: u32, cmdline: &str) -> Result<(), String> {
    let word = |at: u32| image::read(ram, at as usize, 4);
    if word(info_addr) != Some(INFO_FLAGS) {
        return Err(format!("information flags are {:x?}", word(info_addr)));
    }
    if word(info_addr + 16) != Some(info_addr + INFO_SIZE) {
        return Err(format!(
            "cmdline points at {:x?}, not right after the structure",
            word(info_addr + 16)
        ));
    }
    let start = (info_addr + INFO_SIZE) as usize;
    let expected = [cmdline.as_bytes(), b"\0"].concat();
    if ram.get(start..start + expected.len()) != Some(&expected[..]) {
        return Err("the command line is not in guest RAM".to_string());
    }
    Ok(())
}

/// Checks an unmutated synthetic image against the documented rules.
fn expect(
    case: &Case,
    result: &Result<LoadedKernel, LoadError>,
    ram: &[u8],
    cmdline: &str,
) -> Result<(), String> {
    let plan = match &case.expectation {
        Expectation::Unknown => return Ok(()),
        Expectation::Refused => None,
        Expectation::Plan(plan) => Some(plan),
    };
    let placed = match (plan, InfoLayout::new(cmdline.len())) {
        (Some(plan), Ok(layout)) => {
            placement(plan, ram.len() as u64, layout.len()).map(|p| (plan, p))
        }
        _ => None,
    };
    match (placed, result) {
        (None, Err(_)) => Ok(()),
        (None, Ok(loaded)) => Err(format!(
            "loaded what the documented rules refuse: {:x?}",
            loaded.segments
        )),
        (Some(_), Err(e)) => Err(format!("refused what the documented rules accept: {e}")),
        (Some((plan, (ranges, info))), Ok(loaded)) => {
            if loaded.info_area != info {
                return Err(format!(
                    "information area at {:x?}; the documented rules say {info:x?}",
                    loaded.info_area
                ));
            }
            expect_layout(plan, &ranges, loaded, &case.image, ram)
        }
    }
}

fn expect_layout(
    plan: &Plan,
    ranges: &[Range<u32>],
    loaded: &LoadedKernel,
    image: &[u8],
    ram: &[u8],
) -> Result<(), String> {
    if loaded.segments != ranges || loaded.boot.eip != plan.entry {
        return Err(format!(
            "loaded {:x?} entered at {:#x}; the documented rules say {ranges:x?} at {:#x}",
            loaded.segments, loaded.boot.eip, plan.entry
        ));
    }
    for segment in &plan.segments {
        let start = segment.paddr as usize;
        let data = &image[segment.file.clone()];
        let bss = start + data.len()..start + segment.mem_size as usize;
        if &ram[start..start + data.len()] != data || ram[bss].iter().any(|&b| b != 0) {
            return Err(format!(
                "segment at {start:#x} does not hold its file bytes followed by zeros"
            ));
        }
    }
    Ok(())
}

/// The real guests and the corpus: the starting points of mutation.
fn seeds() -> &'static [Vec<u8>] {
    static SEEDS: OnceLock<Vec<Vec<u8>>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let guests = std::path::Path::new(env!("NESTMON_GUEST_DIR"));
        let mut paths: Vec<_> = std::fs::read_dir(guests)
            .expect("the guests are built")
            .map(|entry| entry.expect("guest directory entry").path())
            .filter(|path| path.extension().is_some_and(|e| e == "elf"))
            .collect();
        paths.sort();
        let mut seeds: Vec<Vec<u8>> = paths
            .iter()
            .map(|path| std::fs::read(path).expect("read a guest"))
            .collect();
        seeds.extend(TARGET.corpus_files().into_iter().map(|(_, bytes)| bytes));
        seeds
    })
}

fn machine() -> Watchdog<Case> {
    let mut machine = Machine::new();
    Watchdog::spawn(move |case: Case| machine.check(&case))
}

#[test]
fn corpus_images_load_inside_ram_or_are_refused_without_writing_it() {
    let machine = machine();
    let appends = appends().len();
    TARGET.replay(|bytes| {
        for (ram, mib) in RAM_SIZES_MIB.iter().enumerate() {
            for append in 0..appends {
                let case = Case {
                    image: bytes.to_vec(),
                    ram,
                    append,
                    expectation: Expectation::Unknown,
                };
                machine
                    .check(case)
                    .map_err(|why| format!("with {mib} MiB, append #{append}: {why}"))?;
            }
        }
        Ok(())
    });
}

#[test]
fn generated_images_load_inside_ram_or_are_refused_without_writing_it() {
    let machine = machine();
    let context = |case: &strategy::LoaderCase| Context {
        ram_size: (RAM_SIZES_MIB[case.ram] << 20) as u32,
    };
    TARGET.run(
        strategy::loader_case(RAM_SIZES_MIB.len(), appends().len()),
        |case| case.build(seeds(), context(case)).image,
        |case| {
            let built = case.build(seeds(), context(&case));
            let verdict = machine.check(Case {
                image: built.image,
                ram: case.ram,
                append: case.append,
                expectation: built.expectation,
            });
            verdict.map_err(TestCaseError::fail)
        },
    );
}

/// The checks above must be able to fail: each is shown a faulty outcome.
mod checks_can_fail {
    use super::*;

    const KERNEL: Range<u32> = 0x10_0000..0x10_0010;

    fn loaded() -> LoadedKernel {
        LoadedKernel {
            boot: monitor::loader::BootState {
                eip: 0x10_0000,
                eax: BOOTLOADER_MAGIC,
                ebx: INFO_ADDR,
            },
            segments: vec![KERNEL],
            info_area: InfoLayout::new(4).unwrap().range(),
            modules: Vec::new(),
            module_list: None,
        }
    }

    #[test]
    fn a_write_outside_the_reported_ranges_is_caught() {
        let (exact, one_more) = (0x10_0000..0x10_0010, 0x10_0000..0x10_0011);
        assert!(verify_writes(&loaded(), &[one_more]).is_err());
        assert!(verify_writes(&loaded(), &[exact]).is_ok());
    }

    #[test]
    fn a_refusal_that_wrote_ram_is_caught() {
        let error = LoadError::NoMultibootHeader;
        let one_byte = 0x9000..0x9001;
        assert!(verify_refused(&error, &[one_byte]).is_err());
        assert!(verify_refused(&error, &[]).is_ok());
    }

    #[test]
    fn a_segment_over_the_information_area_is_caught() {
        let mut kernel = loaded();
        let over_info = 0x8000..0x9001;
        kernel.segments = vec![over_info];
        kernel.boot.eip = 0x8000;
        assert!(verify_segments(&kernel, 1 << 20).is_err());
    }

    #[test]
    fn an_information_area_of_the_wrong_length_or_place_is_caught() {
        let ram = vec![0u8; 1 << 20];
        let mut kernel = loaded();
        let cmdline = "1234";
        kernel.info_area.end += 1;
        assert!(verify_loaded(&kernel, &[], &ram, cmdline).is_err());
        let mut kernel = loaded();
        kernel.boot.ebx += 4;
        assert!(verify_loaded(&kernel, &[], &ram, cmdline).is_err());
    }

    #[test]
    fn written_ranges_are_merged_runs_of_changed_bytes() {
        let pattern = vec![1u8; 10_000];
        let mut seen = pattern.clone();
        seen[5..8].fill(0);
        seen[4095..4097].fill(0);
        assert_eq!(written_ranges(&pattern, &seen), vec![5..8, 4095..4097]);
    }
}
