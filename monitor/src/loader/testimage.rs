//! Builders of synthetic kernel images for the loader's tests.
//!
//! Invariant: [`ElfBuilder::build`] lays the image out as ELF header,
//! program headers, Multiboot header (if any, 4-byte aligned), then each
//! segment's file bytes in order; field overrides change only their field.

use super::header::{FLAG_MEMORY_INFO, FLAG_PAGE_ALIGN_MODULES, HEADER_MAGIC};

/// A 12-byte Multiboot header with a correct checksum.
pub fn multiboot_header(flags: u32) -> Vec<u8> {
    let checksum = 0u32.wrapping_sub(HEADER_MAGIC).wrapping_sub(flags);
    [HEADER_MAGIC, flags, checksum]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
}

/// A Multiboot header with the five address fields of flag bit 16 appended.
pub fn multiboot_header_with_addresses(flags: u32, addresses: [u32; 5]) -> Vec<u8> {
    let mut bytes = multiboot_header(flags | (1 << 16));
    bytes.extend(addresses.iter().flat_map(|w| w.to_le_bytes()));
    bytes
}

/// One program header and its file bytes.
#[derive(Clone)]
pub struct TestSegment {
    kind: u32,
    paddr: u32,
    vaddr: u32,
    data: Vec<u8>,
    mem_size: u32,
    flags: u32,
}

impl TestSegment {
    /// A loadable, executable segment at `paddr` (= vaddr) holding `data`.
    pub fn code(paddr: u32, data: Vec<u8>) -> TestSegment {
        let mem_size = data.len() as u32;
        TestSegment {
            kind: 1,
            paddr,
            vaddr: paddr,
            data,
            mem_size,
            flags: 5,
        }
    }
    /// Overrides `p_memsz`.
    pub fn mem_size(mut self, mem_size: u32) -> Self {
        self.mem_size = mem_size;
        self
    }
    /// Overrides `p_vaddr`.
    pub fn vaddr(mut self, vaddr: u32) -> Self {
        self.vaddr = vaddr;
        self
    }
    /// Overrides `p_flags`.
    pub fn flags(mut self, flags: u32) -> Self {
        self.flags = flags;
        self
    }
    /// Overrides `p_type`.
    pub fn kind(mut self, kind: u32) -> Self {
        self.kind = kind;
        self
    }
}

/// Builds an ELF32 i386 executable with a Multiboot header (with
/// [`ElfBuilder::elf64`], an ELF64 x86-64 one laid out as ELF64).
#[derive(Clone)]
pub struct ElfBuilder {
    entry: u32,
    class: u8,
    byte_order: u8,
    machine: u16,
    elf_type: u16,
    multiboot: Option<Vec<u8>>,
    segments: Vec<TestSegment>,
    /// ELF64 layout (64-byte header, 56-byte program headers).
    wide: bool,
}

impl ElfBuilder {
    /// An executable entered at `entry`, with no segments yet.
    pub fn new(entry: u32) -> ElfBuilder {
        ElfBuilder {
            entry,
            class: 1,
            byte_order: 1,
            machine: 3,
            elf_type: 2,
            multiboot: Some(multiboot_header(FLAG_PAGE_ALIGN_MODULES | FLAG_MEMORY_INFO)),
            segments: Vec::new(),
            wide: false,
        }
    }
    /// An ELF64 x86-64 executable (class 2, machine 62, ELF64 layout).
    pub fn elf64(mut self) -> Self {
        self.class = 2;
        self.machine = 62;
        self.wide = true;
        self
    }
    /// Adds a program header.
    pub fn segment(mut self, segment: TestSegment) -> Self {
        self.segments.push(segment);
        self
    }
    /// Overrides `EI_CLASS`.
    pub fn class(mut self, class: u8) -> Self {
        self.class = class;
        self
    }
    /// Overrides `EI_DATA`.
    pub fn byte_order(mut self, byte_order: u8) -> Self {
        self.byte_order = byte_order;
        self
    }
    /// Overrides `e_machine`.
    pub fn machine(mut self, machine: u16) -> Self {
        self.machine = machine;
        self
    }
    /// Overrides `e_type`.
    pub fn elf_type(mut self, elf_type: u16) -> Self {
        self.elf_type = elf_type;
        self
    }
    /// Replaces the Multiboot header (`None`: no header).
    pub fn multiboot(mut self, header: Option<Vec<u8>>) -> Self {
        self.multiboot = header;
        self
    }

    /// The image bytes.
    pub fn build(&self) -> Vec<u8> {
        if self.wide {
            return self.build64();
        }
        let phdrs_end = 52 + 32 * self.segments.len();
        let header_len = self.multiboot.as_ref().map_or(0, Vec::len);
        let mut data_offset = phdrs_end + header_len;
        let mut image = self.elf_header();
        for segment in &self.segments {
            image.extend(program_header(segment, data_offset as u32));
            data_offset += segment.data.len();
        }
        if let Some(header) = &self.multiboot {
            image.extend_from_slice(header);
        }
        for segment in &self.segments {
            image.extend_from_slice(&segment.data);
        }
        image
    }

    fn build64(&self) -> Vec<u8> {
        let phdrs_end = 64 + 56 * self.segments.len();
        let header_len = self.multiboot.as_ref().map_or(0, Vec::len);
        let mut data_offset = phdrs_end + header_len;
        let mut image = vec![0x7f, b'E', b'L', b'F', self.class, self.byte_order, 1];
        image.resize(16, 0);
        image.extend(self.elf_type.to_le_bytes());
        image.extend(self.machine.to_le_bytes());
        image.extend(1u32.to_le_bytes()); // e_version
        image.extend(u64::from(self.entry).to_le_bytes());
        image.extend(64u64.to_le_bytes()); // e_phoff
        image.extend(0u64.to_le_bytes()); // e_shoff
        image.extend(0u32.to_le_bytes()); // e_flags
        image.extend(64u16.to_le_bytes()); // e_ehsize
        image.extend(56u16.to_le_bytes()); // e_phentsize
        image.extend((self.segments.len() as u16).to_le_bytes());
        image.extend([0u8; 6]);
        for segment in &self.segments {
            image.extend(segment.kind.to_le_bytes());
            image.extend(segment.flags.to_le_bytes());
            for field in [
                data_offset as u64,
                u64::from(segment.vaddr),
                u64::from(segment.paddr),
                segment.data.len() as u64,
                u64::from(segment.mem_size),
                0x1000,
            ] {
                image.extend(field.to_le_bytes());
            }
            data_offset += segment.data.len();
        }
        if let Some(header) = &self.multiboot {
            image.extend_from_slice(header);
        }
        for segment in &self.segments {
            image.extend_from_slice(&segment.data);
        }
        image
    }

    fn elf_header(&self) -> Vec<u8> {
        let mut h = vec![0x7f, b'E', b'L', b'F', self.class, self.byte_order, 1];
        h.resize(16, 0);
        h.extend(self.elf_type.to_le_bytes());
        h.extend(self.machine.to_le_bytes());
        h.extend(1u32.to_le_bytes()); // e_version
        h.extend(self.entry.to_le_bytes());
        h.extend(52u32.to_le_bytes()); // e_phoff
        h.extend(0u32.to_le_bytes()); // e_shoff
        h.extend(0u32.to_le_bytes()); // e_flags
        h.extend(52u16.to_le_bytes()); // e_ehsize
        h.extend(32u16.to_le_bytes()); // e_phentsize
        h.extend((self.segments.len() as u16).to_le_bytes());
        h.extend([0u8; 6]); // e_shentsize, e_shnum, e_shstrndx
        h
    }
}

fn program_header(segment: &TestSegment, offset: u32) -> Vec<u8> {
    let words = [
        segment.kind,
        offset,
        segment.vaddr,
        segment.paddr,
        segment.data.len() as u32,
        segment.mem_size,
        segment.flags,
        0x1000,
    ];
    words.iter().flat_map(|w| w.to_le_bytes()).collect()
}

/// Builds a Linux bzImage: a real-mode part of `setup_sects + 1` sectors
/// whose setup header holds the chosen fields, then the protected-mode
/// kernel. Unset fields are what a current x86-32 kernel has.
#[derive(Clone)]
pub struct BzImageBuilder {
    /// `version`.
    pub protocol: u16,
    /// `setup_sects` as written (0 means 4).
    pub setup_sects: u8,
    /// The byte at 0x201: the header ends at 0x202 plus this.
    pub jump: u8,
    /// `loadflags`.
    pub loadflags: u8,
    /// `code32_start`.
    pub code32_start: u32,
    /// `initrd_addr_max`.
    pub initrd_addr_max: u32,
    /// `kernel_alignment`.
    pub kernel_alignment: u32,
    /// `relocatable_kernel`.
    pub relocatable: u8,
    /// `cmdline_size`.
    pub cmdline_size: u32,
    /// `pref_address`.
    pub pref_address: u64,
    /// `init_size`.
    pub init_size: u32,
    /// `syssize` in paragraphs; `None`: computed from the kernel.
    pub syssize: Option<u32>,
    /// The protected-mode kernel.
    pub kernel: Vec<u8>,
}

impl BzImageBuilder {
    /// A protocol 2.15 relocatable bzImage holding `kernel`, loaded at 1 MiB
    /// and needing 1 MiB from there.
    pub fn new(kernel: Vec<u8>) -> BzImageBuilder {
        BzImageBuilder {
            protocol: 0x020f,
            setup_sects: 4,
            jump: 0x6a,
            loadflags: 0x01,
            code32_start: 0x10_0000,
            initrd_addr_max: 0x7fff_ffff,
            kernel_alignment: 0x20_0000,
            relocatable: 1,
            cmdline_size: 2047,
            pref_address: 0x10_0000,
            init_size: 0x10_0000,
            syssize: None,
            kernel,
        }
    }

    /// The image bytes.
    pub fn build(&self) -> Vec<u8> {
        let sects = if self.setup_sects == 0 {
            4
        } else {
            usize::from(self.setup_sects)
        };
        let mut image = vec![0u8; (sects + 1) * 512];
        let syssize = self
            .syssize
            .unwrap_or(self.kernel.len().div_ceil(16) as u32);
        image[0x1f1] = self.setup_sects;
        image[0x1f4..0x1f8].copy_from_slice(&syssize.to_le_bytes());
        image[0x1fa..0x1fc].copy_from_slice(&0xffffu16.to_le_bytes());
        image[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        image[0x200] = 0xeb;
        image[0x201] = self.jump;
        image[0x202..0x206].copy_from_slice(b"HdrS");
        image[0x206..0x208].copy_from_slice(&self.protocol.to_le_bytes());
        image[0x211] = self.loadflags;
        image[0x214..0x218].copy_from_slice(&self.code32_start.to_le_bytes());
        image[0x22c..0x230].copy_from_slice(&self.initrd_addr_max.to_le_bytes());
        image[0x230..0x234].copy_from_slice(&self.kernel_alignment.to_le_bytes());
        image[0x234] = self.relocatable;
        image[0x238..0x23c].copy_from_slice(&self.cmdline_size.to_le_bytes());
        image[0x258..0x260].copy_from_slice(&self.pref_address.to_le_bytes());
        image[0x260..0x264].copy_from_slice(&self.init_size.to_le_bytes());
        image.extend_from_slice(&self.kernel);
        image
    }
}
