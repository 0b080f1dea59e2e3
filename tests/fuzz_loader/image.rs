//! Kernel images for the loader fuzz target: synthetic ELF32 and flat
//! (flag bit 16) Multiboot images built from a spec, and structure-aware
//! mutations that set named header fields to boundary values.
//!
//! Invariant: a mutation whose field does not exist in the image (no
//! program header table, no Multiboot magic, a field past the end) leaves
//! the image unchanged; no mutation ever panics, whatever the image.

use super::model::{Expectation, Plan, Planned};
use monitor::loader::{HEADER_MAGIC, SEARCH_LIMIT};
use proptest::sample::Index;

/// ELF header length and offsets of the fields the mutations name.
const ELF_HEADER_LEN: usize = 52;
const PROGRAM_HEADER_LEN: usize = 32;
const PT_LOAD: u32 = 1;
const PF_X: u32 = 1;
/// Optional Multiboot flag: the header's address fields say where to load.
pub const FLAG_LOAD_ADDRESSES: u32 = 1 << 16;
/// Where the higher-half segments are linked.
const HIGHER_HALF: u32 = 0xc000_0000;

/// What the mutations and specs need to know about the machine.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    /// Guest RAM in bytes.
    pub ram_size: u32,
}

/// A named field of an ELF32 or Multiboot header.
#[derive(Clone, Copy, Debug)]
pub enum Field {
    /// `EI_CLASS`.
    Class,
    /// `EI_DATA`.
    Data,
    /// `e_type`.
    Type,
    /// `e_machine`.
    Machine,
    /// `e_entry`.
    Entry,
    /// `e_phoff`.
    Phoff,
    /// `e_phentsize`.
    Phentsize,
    /// `e_phnum`.
    Phnum,
    /// A field of program header `n` (modulo `e_phnum`).
    Program(u8, ProgramField),
    /// A field of the first Multiboot header (valid or not).
    Multiboot(MultibootField),
}

/// A field of an ELF32 program header, by its offset.
#[derive(Clone, Copy, Debug)]
pub enum ProgramField {
    /// `p_type`.
    Type = 0,
    /// `p_offset`.
    Offset = 4,
    /// `p_vaddr`.
    Vaddr = 8,
    /// `p_paddr`.
    Paddr = 12,
    /// `p_filesz`.
    Filesz = 16,
    /// `p_memsz`.
    Memsz = 20,
    /// `p_flags`.
    Flags = 24,
}

/// A field of the Multiboot header, by its offset from the magic.
#[derive(Clone, Copy, Debug)]
pub enum MultibootField {
    /// `flags` (setting it also makes the checksum match).
    Flags = 4,
    /// `checksum`.
    Checksum = 8,
    /// `header_addr`.
    HeaderAddr = 12,
    /// `load_addr`.
    LoadAddr = 16,
    /// `load_end_addr`.
    LoadEndAddr = 20,
    /// `bss_end_addr`.
    BssEndAddr = 24,
    /// `entry_addr`.
    EntryAddr = 28,
}

/// A value for a field, resolved against the machine and the image.
#[derive(Clone, Debug)]
pub enum Value {
    /// A fixed (usually boundary) value.
    Const(u32),
    /// The RAM size plus a delta.
    RamEnd(i32),
    /// The image length plus a delta.
    ImageLen(i32),
    /// The field's current value plus a delta.
    Add(i32),
    /// Another field's current value plus a delta (overlapping ranges).
    Field(Field, i32),
}

/// A change to an image.
#[derive(Clone, Debug)]
pub enum Mutation {
    /// Sets a header field.
    Set(Field, Value),
    /// Flips one bit of one byte.
    FlipBit(Index, u8),
    /// Cuts the image at a byte.
    Truncate(Index),
    /// Appends bytes.
    Append(Vec<u8>),
    /// Copies up to `len` bytes within the image (duplicating structures).
    Copy {
        /// Source.
        from: Index,
        /// Destination.
        to: Index,
        /// Byte count.
        len: u8,
    },
    /// Writes a Multiboot header with a correct checksum at an aligned
    /// offset in the searched area.
    AddHeader {
        /// Where (aligned down to 4 bytes).
        at: Index,
        /// Its flags.
        flags: u32,
        /// Its five address fields.
        addresses: Vec<Value>,
    },
}

/// Where a synthetic segment is placed in guest-physical memory.
#[derive(Clone, Debug)]
pub enum Place {
    /// A fixed address.
    At(u32),
    /// The RAM size plus a delta.
    RamEnd(i32),
    /// The previous segment's end plus a delta (touching or overlapping).
    AfterPrevious(i32),
    /// Ending exactly at an address (one past the last byte).
    EndAt(u32),
    /// Ending at the RAM size plus a delta.
    EndAtRamEnd(i32),
}

/// One program header of a synthetic ELF image.
#[derive(Clone, Debug)]
pub struct SegmentSpec {
    /// `p_type`.
    pub kind: u32,
    /// `p_paddr`.
    pub place: Place,
    /// `p_vaddr` is `p_paddr + 0xc0000000` instead of `p_paddr`.
    pub higher_half: bool,
    /// The file bytes (`p_filesz` of them).
    pub data: Vec<u8>,
    /// `p_memsz - p_filesz` (wrapping).
    pub bss: u32,
    /// `p_flags`.
    pub flags: u32,
}

/// The entry point of a synthetic image.
#[derive(Clone, Debug)]
pub enum EntrySpec {
    /// At an offset into a segment's virtual range (reduced modulo its
    /// memory size + 1, so sometimes just past its end).
    InSegment(Index, u32),
    /// Anywhere.
    At(u32),
}

/// A synthetic ELF32 i386 executable with a Multiboot header.
#[derive(Clone, Debug)]
pub struct ElfSpec {
    /// The program headers, in order.
    pub segments: Vec<SegmentSpec>,
    /// `e_entry`.
    pub entry: EntrySpec,
    /// The Multiboot flags (bit 16 clear, only honoured requirements).
    pub flags: u32,
}

/// A synthetic flat image loaded by its Multiboot header's address fields.
#[derive(Clone, Debug)]
pub struct FlatSpec {
    /// Words before the header.
    pub pad_words: u8,
    /// `header_addr - load_addr`.
    pub header_to_load: u32,
    /// `load_addr`.
    pub load_addr: Place,
    /// Bytes after the header.
    pub body: Vec<u8>,
    /// `load_end_addr - load_addr`; `None` writes 0 (load to end of file).
    pub load_len: Option<u32>,
    /// `bss_end_addr - load_end`; `None` writes 0 (no bss).
    pub bss: Option<u32>,
    /// `entry_addr - load_addr`.
    pub entry_offset: u32,
    /// The required flag bits (bit 16 is added).
    pub flags: u32,
}

/// An image and, when its content follows from a spec, what must happen to it.
pub struct Built {
    /// The bytes.
    pub image: Vec<u8>,
    /// What the documented rules say.
    pub expectation: Expectation,
}

/// Little-endian field reads that never panic.
pub fn read(image: &[u8], offset: usize, width: usize) -> Option<u32> {
    let bytes = image.get(offset..offset.checked_add(width)?)?;
    Some(
        bytes
            .iter()
            .rev()
            .fold(0u32, |value, &b| value << 8 | u32::from(b)),
    )
}

fn write(image: &mut [u8], offset: usize, width: usize, value: u32) {
    if let Some(bytes) = offset
        .checked_add(width)
        .and_then(|end| image.get_mut(offset..end))
    {
        bytes.copy_from_slice(&value.to_le_bytes()[..width]);
    }
}

/// File offset of the first Multiboot magic at an aligned offset whose
/// mandatory words lie in the searched area, whatever its checksum.
pub fn multiboot_offset(image: &[u8]) -> Option<usize> {
    let searchable = &image[..image.len().min(SEARCH_LIMIT)];
    (0..searchable.len())
        .step_by(4)
        .find(|&at| read(searchable, at, 4) == Some(HEADER_MAGIC) && at + 12 <= searchable.len())
}

/// The checksum that makes `magic + flags + checksum` zero.
pub fn checksum(flags: u32) -> u32 {
    0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags)
}

impl Field {
    /// Where the field is in `image` and how many bytes wide it is.
    fn locate(self, image: &[u8]) -> Option<(usize, usize)> {
        let (offset, width) = match self {
            Field::Class => (4, 1),
            Field::Data => (5, 1),
            Field::Type => (16, 2),
            Field::Machine => (18, 2),
            Field::Entry => (24, 4),
            Field::Phoff => (28, 4),
            Field::Phentsize => (42, 2),
            Field::Phnum => (44, 2),
            Field::Program(index, field) => (program_header(image, index)? + field as usize, 4),
            Field::Multiboot(field) => (multiboot_offset(image)? + field as usize, 4),
        };
        (offset + width <= image.len()).then_some((offset, width))
    }

    fn get(self, image: &[u8]) -> Option<u32> {
        let (offset, width) = self.locate(image)?;
        read(image, offset, width)
    }
}

/// File offset of program header `index % e_phnum`.
fn program_header(image: &[u8], index: u8) -> Option<usize> {
    let phoff = usize::try_from(read(image, 28, 4)?).ok()?;
    let entry_len = usize::try_from(read(image, 42, 2)?).ok()?;
    let count = usize::try_from(read(image, 44, 2)?).ok()?;
    if count == 0 {
        return None;
    }
    phoff.checked_add((usize::from(index) % count).checked_mul(entry_len)?)
}

impl Value {
    fn resolve(&self, image: &[u8], current: u32, context: Context) -> u32 {
        match *self {
            Value::Const(value) => value,
            Value::RamEnd(delta) => context.ram_size.wrapping_add_signed(delta),
            Value::ImageLen(delta) => (image.len() as u32).wrapping_add_signed(delta),
            Value::Add(delta) => current.wrapping_add_signed(delta),
            Value::Field(field, delta) => field
                .get(image)
                .unwrap_or(current)
                .wrapping_add_signed(delta),
        }
    }
}

impl Mutation {
    /// Applies the mutation; a mutation that does not fit changes nothing.
    pub fn apply(&self, image: &mut Vec<u8>, context: Context) {
        match self {
            Mutation::Set(field, value) => set_field(image, *field, value, context),
            Mutation::FlipBit(at, bit) => {
                if !image.is_empty() {
                    let at = at.index(image.len());
                    image[at] ^= 1 << (bit % 8);
                }
            }
            Mutation::Truncate(at) => {
                if !image.is_empty() {
                    image.truncate(at.index(image.len()));
                }
            }
            Mutation::Append(bytes) => image.extend_from_slice(bytes),
            Mutation::Copy { from, to, len } => copy_within(image, from, to, usize::from(*len)),
            Mutation::AddHeader {
                at,
                flags,
                addresses,
            } => add_header(image, at, *flags, addresses, context),
        }
    }
}

fn set_field(image: &mut [u8], field: Field, value: &Value, context: Context) {
    let Some((offset, width)) = field.locate(image) else {
        return;
    };
    let current = read(image, offset, width).unwrap_or(0);
    let resolved = value.resolve(image, current, context);
    write(image, offset, width, resolved);
    if let Field::Multiboot(MultibootField::Flags) = field {
        write(image, offset + 4, 4, checksum(resolved));
    }
}

fn copy_within(image: &mut [u8], from: &Index, to: &Index, len: usize) {
    if image.is_empty() {
        return;
    }
    let (from, to) = (from.index(image.len()), to.index(image.len()));
    let len = len.min(image.len() - from).min(image.len() - to);
    image.copy_within(from..from + len, to);
}

fn add_header(image: &mut Vec<u8>, at: &Index, flags: u32, addresses: &[Value], context: Context) {
    let offset = at.index(SEARCH_LIMIT - 32) & !3;
    if image.len() < offset + 32 {
        image.resize(offset + 32, 0);
    }
    let mut words = vec![HEADER_MAGIC, flags, checksum(flags)];
    words.extend(addresses.iter().map(|v| v.resolve(image, 0, context)));
    for (index, word) in words.iter().enumerate() {
        write(image, offset + 4 * index, 4, *word);
    }
}

impl Place {
    /// The first address of `size` bytes placed this way.
    fn resolve(&self, previous_end: u32, size: u32, context: Context) -> u32 {
        match *self {
            Place::At(address) => address,
            Place::RamEnd(delta) => context.ram_size.wrapping_add_signed(delta),
            Place::AfterPrevious(delta) => previous_end.wrapping_add_signed(delta),
            Place::EndAt(end) => end.wrapping_sub(size),
            Place::EndAtRamEnd(delta) => context
                .ram_size
                .wrapping_add_signed(delta)
                .wrapping_sub(size),
        }
    }
}

/// A resolved program header.
struct ProgramHeader {
    kind: u32,
    offset: u32,
    vaddr: u32,
    paddr: u32,
    file_size: u32,
    mem_size: u32,
    flags: u32,
}

impl ProgramHeader {
    fn bytes(&self) -> impl Iterator<Item = u8> {
        let words = [
            self.kind,
            self.offset,
            self.vaddr,
            self.paddr,
            self.file_size,
            self.mem_size,
            self.flags,
            0x1000,
        ];
        words.into_iter().flat_map(u32::to_le_bytes)
    }
}

impl ElfSpec {
    /// The image and what the documented ELF rules make of it.
    pub fn build(&self, context: Context) -> Built {
        let headers = self.program_headers(context);
        let entry = self.virtual_entry(&headers);
        let mut image = elf_header(entry, headers.len() as u16);
        image.extend(headers.iter().flat_map(ProgramHeader::bytes));
        for word in [HEADER_MAGIC, self.flags, checksum(self.flags)] {
            image.extend(word.to_le_bytes());
        }
        for segment in &self.segments {
            image.extend_from_slice(&segment.data);
        }
        Built {
            expectation: elf_expectation(&headers, entry),
            image,
        }
    }

    fn program_headers(&self, context: Context) -> Vec<ProgramHeader> {
        let mut offset = (ELF_HEADER_LEN + PROGRAM_HEADER_LEN * self.segments.len() + 12) as u32;
        let mut previous_end = 0u32;
        let mut headers = Vec::with_capacity(self.segments.len());
        for segment in &self.segments {
            let file_size = segment.data.len() as u32;
            let mem_size = file_size.wrapping_add(segment.bss);
            let paddr = segment.place.resolve(previous_end, mem_size, context);
            headers.push(ProgramHeader {
                kind: segment.kind,
                offset,
                vaddr: paddr.wrapping_add(if segment.higher_half { HIGHER_HALF } else { 0 }),
                paddr,
                file_size,
                mem_size,
                flags: segment.flags,
            });
            offset += file_size;
            previous_end = paddr.wrapping_add(mem_size);
        }
        headers
    }

    fn virtual_entry(&self, headers: &[ProgramHeader]) -> u32 {
        match &self.entry {
            EntrySpec::At(address) => *address,
            EntrySpec::InSegment(_, offset) if headers.is_empty() => *offset,
            EntrySpec::InSegment(which, offset) => {
                let header = &headers[which.index(headers.len())];
                let span = u64::from(header.mem_size) + 1;
                let offset = (u64::from(*offset) % span) as u32;
                header.vaddr.wrapping_add(offset)
            }
        }
    }
}

fn elf_header(entry: u32, count: u16) -> Vec<u8> {
    let mut header = vec![0x7f, b'E', b'L', b'F', 1, 1, 1];
    header.resize(16, 0);
    header.extend(2u16.to_le_bytes()); // e_type: executable
    header.extend(3u16.to_le_bytes()); // e_machine: i386
    header.extend(1u32.to_le_bytes()); // e_version
    header.extend(entry.to_le_bytes());
    header.extend((ELF_HEADER_LEN as u32).to_le_bytes()); // e_phoff
    header.extend([0u8; 8]); // e_shoff, e_flags
    header.extend((ELF_HEADER_LEN as u16).to_le_bytes());
    header.extend((PROGRAM_HEADER_LEN as u16).to_le_bytes());
    header.extend(count.to_le_bytes());
    header.extend([0u8; 6]);
    header
}

/// The documented ELF rules: PT_LOAD segments with a non-zero memory size,
/// each with `p_filesz <= p_memsz`, entered at `e_entry` moved to the
/// physical copy of the executable segment linked elsewhere that holds it.
fn elf_expectation(headers: &[ProgramHeader], virtual_entry: u32) -> Expectation {
    let loadable: Vec<&ProgramHeader> = headers
        .iter()
        .filter(|h| h.kind == PT_LOAD && h.mem_size != 0)
        .collect();
    if loadable.is_empty() || loadable.iter().any(|h| h.file_size > h.mem_size) {
        return Expectation::Refused;
    }
    let entry = headers
        .iter()
        .find(|h| {
            h.kind == PT_LOAD
                && h.flags & PF_X != 0
                && h.vaddr != h.paddr
                && virtual_entry >= h.vaddr
                && virtual_entry - h.vaddr < h.file_size
        })
        .map_or(virtual_entry, |h| {
            h.paddr.wrapping_add(virtual_entry - h.vaddr)
        });
    let segments = loadable
        .iter()
        .map(|h| Planned {
            paddr: h.paddr,
            file: h.offset as usize..(h.offset + h.file_size) as usize,
            mem_size: h.mem_size,
        })
        .collect();
    Expectation::Plan(Plan { segments, entry })
}

impl FlatSpec {
    /// The image and what the documented flag-bit-16 rules make of it.
    pub fn build(&self, context: Context) -> Built {
        let header_offset = 4 * usize::from(self.pad_words);
        let file_len = header_offset + 32 + self.body.len();
        let start = header_offset as u64 - u64::from(self.header_to_load.min(header_offset as u32));
        let loaded = self
            .load_len
            .unwrap_or((file_len as u64).saturating_sub(start) as u32);
        let size = loaded.wrapping_add(self.bss.unwrap_or(0));
        let load_addr = self.load_addr.resolve(0, size, context);
        let load_end = load_addr.wrapping_add(loaded);
        let flags = self.flags | FLAG_LOAD_ADDRESSES;
        let fields = [
            HEADER_MAGIC,
            flags,
            checksum(flags),
            load_addr.wrapping_add(self.header_to_load),
            load_addr,
            self.load_len.map_or(0, |_| load_end),
            self.bss.map_or(0, |bss| load_end.wrapping_add(bss)),
            load_addr.wrapping_add(self.entry_offset),
        ];
        let mut image: Vec<u8> = (0..header_offset).map(|i| (i * 37 + 11) as u8).collect();
        image.extend(fields.iter().flat_map(|w| w.to_le_bytes()));
        image.extend_from_slice(&self.body);
        Built {
            expectation: flat_expectation(&image, header_offset),
            image,
        }
    }
}

/// The documented flag-bit-16 rules, read back from the header's fields.
pub fn flat_expectation(image: &[u8], header_offset: usize) -> Expectation {
    let field = |index: usize| read(image, header_offset + 12 + 4 * index, 4).unwrap_or(0);
    let (header_addr, load_addr, load_end, bss_end, entry) =
        (field(0), field(1), field(2), field(3), field(4));
    let Some(back) = header_addr.checked_sub(load_addr) else {
        return Expectation::Refused;
    };
    let Some(start) = (header_offset as u64).checked_sub(u64::from(back)) else {
        return Expectation::Refused;
    };
    let length = if load_end == 0 {
        (image.len() as u64).saturating_sub(start)
    } else if load_end < load_addr {
        return Expectation::Refused;
    } else {
        u64::from(load_end - load_addr)
    };
    if start + length > image.len() as u64 {
        return Expectation::Refused;
    }
    let mem_size = if bss_end == 0 {
        length
    } else if u64::from(bss_end) < u64::from(load_addr) + length {
        return Expectation::Refused;
    } else {
        u64::from(bss_end - load_addr)
    };
    if mem_size == 0 || u64::from(load_addr) + mem_size > 1 << 32 {
        return Expectation::Refused;
    }
    Expectation::Plan(Plan {
        segments: vec![Planned {
            paddr: load_addr,
            file: start as usize..(start + length) as usize,
            mem_size: mem_size as u32,
        }],
        entry,
    })
}
